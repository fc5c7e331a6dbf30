//! Paygrid's MCP server, built on the official Rust SDK (`rmcp`), for MCP clients
//! (assistants, IDEs): the operator's calls and every agent skill as tools, workflows
//! as resources.
//!
//! It is a client of the control unit's public gRPC API, so one implementation serves
//! both transports: stateless streamable HTTP at `/mcp` on the control unit's HTTP
//! listener ([`router`]), and stdio for desktop clients that spawn `paygrid mcp`
//! ([`serve_stdio`]).
//!
//! - Operator tools: `submit_workflow`, `get_workflow`, `list_workflows`,
//!   `cancel_workflow`, `pause_workflow`, `resume_workflow`, `retry_workflow`,
//!   `redrive_workflow`, `bulk_operation`, `approve_task`, `validate_spec`,
//!   `list_agents`, `health`.
//! - Agent tools: every skill a connected agent offers (`AgentHub.ListTools`), called
//!   through `AgentHub.CallTool` (a durable one-task workflow). A skill that moves money
//!   is annotated destructive and takes a required `idempotency_key` argument.
//! - Resources: `paygrid://workflows/{id}` (the workflow as JSON), listed page by page.
//!
//! Bad arguments are tool errors naming the field (`isError: true`), never protocol
//! failures: the model reading them can fix its call.

pub mod convert;
mod tools;
use tools::{OPERATOR_TOOLS, agent_tool, operator_tools};

use std::borrow::Cow;
use std::sync::Arc;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::{AuthChannel, Bearer, ClientSecurity};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;

/// The URI scheme of workflow resources.
const WORKFLOW_URI: &str = "paygrid://workflows/";
/// The URI scheme of spec resources (`paygrid://specs/NAME@VERSION`).
const SPEC_URI: &str = "paygrid://specs/";

/// The MCP server: a client of one control unit.
#[derive(Clone)]
pub struct PaygridMcp {
    channel: Channel,
    security: ClientSecurity,
    workflows: WorkflowsClient<AuthChannel>,
    hub: AgentHubClient<AuthChannel>,
}

impl PaygridMcp {
    /// A server talking to the control unit at `endpoint` (connected lazily, so a
    /// control unit that starts later is found), through `security`'s connector and with
    /// its token.
    pub fn new(endpoint: &str, security: ClientSecurity) -> anyhow::Result<Self> {
        let channel = security.channel_lazy(security.endpoint(endpoint)?);
        Ok(Self {
            workflows: WorkflowsClient::new(security.authorize(channel.clone())),
            hub: AgentHubClient::new(security.authorize(channel.clone())),
            channel,
            security,
        })
    }

    /// The clients for one MCP request: over HTTP, the caller's own `authorization`
    /// header goes to the control unit, which decides what the caller may do; over stdio,
    /// the token this server was started with.
    fn for_request(&self, context: &RequestContext<RoleServer>) -> Self {
        let forwarded = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(http::header::AUTHORIZATION))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| Bearer::new(Some(value)).ok());
        match forwarded {
            None => self.clone(),
            Some(bearer) => {
                let security = self.security.with_bearer(bearer);
                Self {
                    workflows: WorkflowsClient::new(security.authorize(self.channel.clone())),
                    hub: AgentHubClient::new(security.authorize(self.channel.clone())),
                    channel: self.channel.clone(),
                    security,
                }
            }
        }
    }
}

/// `/mcp` as an axum router: stateless streamable HTTP (protocol 2026-07-28 and the
/// earlier revisions clients negotiate), JSON answers where a stream is not needed.
///
/// Callers authenticate with `authorization: Bearer TOKEN` when `require_token` (the
/// control unit checks the token and the role of every call); without one they get 401
/// with `WWW-Authenticate: Bearer`.
pub fn router(
    endpoint: &str,
    security: ClientSecurity,
    require_token: bool,
) -> anyhow::Result<axum::Router> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let server = PaygridMcp::new(endpoint, security)?;
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    if !require_token {
        return Ok(router);
    }
    Ok(router.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.headers().contains_key(http::header::AUTHORIZATION) {
                return next.run(request).await;
            }
            let mut response = axum::response::IntoResponse::into_response((
                http::StatusCode::UNAUTHORIZED,
                "MCP needs `authorization: Bearer TOKEN` (paygrid token --role operator ...)",
            ));
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"paygrid\""),
            );
            response
        },
    )))
}

/// Serves MCP over stdin/stdout until the client closes it.
pub async fn serve_stdio(endpoint: &str, security: ClientSecurity) -> anyhow::Result<()> {
    let server = PaygridMcp::new(endpoint, security)?;
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

fn tool_error(message: impl Into<String>) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(message.into())]).into()
}

/// A failed call's message: what the tool error says.
fn failure(message: impl Into<String>) -> String {
    message.into()
}

fn status_error(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn structured(value: Value) -> CallToolResponse {
    CallToolResult::structured(value).into()
}

/// A string argument, or the tool error naming it.
fn string_arg<'a>(
    args: &'a Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        Some(Value::String(text)) => Ok(Some(text)),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(failure(format!("`{name}` is required"))),
        Some(_) => Err(failure(format!("`{name}` must be a string"))),
    }
}

fn string_map(
    args: &Map<String, Value>,
    name: &str,
) -> Result<std::collections::HashMap<String, String>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => Ok((k.clone(), v.clone())),
                _ => Err(failure(format!("`{name}.{k}` must be a string"))),
            })
            .collect(),
        Some(_) => Err(failure(format!("`{name}` must be an object of strings"))),
    }
}

impl PaygridMcp {
    async fn operator_call(
        &self,
        name: &str,
        args: &Map<String, Value>,
    ) -> Result<CallToolResponse, String> {
        let mut workflows = self.workflows.clone();
        let mut hub = self.hub.clone();
        match name {
            "submit_workflow" => {
                let spec = match (
                    string_arg(args, "spec_text", false)?,
                    string_arg(args, "spec_ref", false)?,
                ) {
                    (Some(text), None) => pb::submit_request::Spec::SpecText(text.to_owned()),
                    (None, Some(reference)) => {
                        pb::submit_request::Spec::SpecRef(reference.to_owned())
                    }
                    _ => return Err(failure("give exactly one of `spec_text` and `spec_ref`")),
                };
                let input = match args.get("input") {
                    None | Some(Value::Null) => json!({}),
                    Some(Value::Object(input)) => Value::Object(input.clone()),
                    Some(_) => return Err(failure("`input` must be an object")),
                };
                let priority = match string_arg(args, "priority", false)? {
                    None => pb::Priority::Unspecified,
                    Some(text) => {
                        pb::Priority::from_str_name(&format!("PRIORITY_{}", text.to_uppercase()))
                            .ok_or_else(|| {
                                failure(format!(
                                    "`priority` `{text}` is not critical, high, normal or low"
                                ))
                            })?
                    }
                };
                let answer = workflows
                    .submit(pb::SubmitRequest {
                        spec: Some(spec),
                        input_json: input.to_string(),
                        priority: priority.into(),
                        labels: string_map(args, "labels")?,
                        idempotency_key: string_arg(args, "idempotency_key", false)?
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(json!({
                    "workflow_id": answer.workflow_id,
                    "created": answer.created,
                    "status": convert::workflow_status(answer.status),
                    "resource": format!("{WORKFLOW_URI}{}", answer.workflow_id),
                })))
            }
            "get_workflow" => {
                let id = string_arg(args, "workflow_id", true)?.unwrap_or_default();
                let workflow = workflows
                    .get(pb::GetWorkflowRequest {
                        workflow_id: id.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(convert::workflow(&workflow)))
            }
            "list_workflows" => {
                let status = match string_arg(args, "status", false)? {
                    None => pb::WorkflowStatus::Unspecified,
                    Some(text) => pb::WorkflowStatus::from_str_name(&format!(
                        "WORKFLOW_STATUS_{}",
                        text.to_uppercase()
                    ))
                    .ok_or_else(|| {
                        failure(format!("`status` `{text}` is not a workflow status"))
                    })?,
                };
                let page_size = match args.get("page_size") {
                    None | Some(Value::Null) => 100,
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| failure("`page_size` must be an integer from 1 to 1000"))?
                        as u32,
                };
                let page = workflows
                    .list(pb::ListWorkflowsRequest {
                        status: status.into(),
                        name: string_arg(args, "name", false)?
                            .unwrap_or_default()
                            .to_owned(),
                        labels: string_map(args, "labels")?,
                        page_size,
                        page_token: string_arg(args, "page_token", false)?
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                let items: Vec<Value> = page.workflows.iter().map(convert::summary).collect();
                Ok(structured(
                    json!({"workflows": items, "next_page_token": page.next_page_token}),
                ))
            }
            "cancel_workflow" => {
                let id = string_arg(args, "workflow_id", true)?.unwrap_or_default();
                let answer = workflows
                    .cancel(pb::CancelWorkflowRequest {
                        workflow_id: id.to_owned(),
                        reason: string_arg(args, "reason", false)?
                            .unwrap_or("cancelled from MCP")
                            .to_owned(),
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(
                    json!({"workflow_id": id, "status": convert::workflow_status(answer.status)}),
                ))
            }
            "pause_workflow" | "resume_workflow" | "retry_workflow" | "redrive_workflow" => {
                let id = string_arg(args, "workflow_id", true)?.unwrap_or_default();
                let task = match name {
                    "redrive_workflow" => string_arg(args, "checkpoint", true)?,
                    _ => string_arg(args, "task_id", false)?,
                };
                let request = pb::OperateRequest {
                    workflow_id: id.to_owned(),
                    task_id: task.unwrap_or_default().to_owned(),
                    reason: string_arg(args, "reason", false)?
                        .unwrap_or("from MCP")
                        .to_owned(),
                };
                let answer = match name {
                    "pause_workflow" => workflows.pause(request).await,
                    "resume_workflow" => workflows.resume(request).await,
                    "retry_workflow" => workflows.retry_task(request).await,
                    _ => workflows.redrive(request).await,
                }
                .map_err(|s| status_error(&s))?
                .into_inner();
                Ok(structured(json!({
                    "workflow_id": id,
                    "status": convert::workflow_status(answer.status),
                    "paused": answer.paused,
                    "tasks_run_again": answer.tasks,
                })))
            }
            "pause_dispatch" | "resume_dispatch" => {
                let request = pb::DispatchHoldRequest {
                    skill: string_arg(args, "skill", false)?
                        .unwrap_or_default()
                        .to_owned(),
                    gateway: string_arg(args, "gateway", false)?
                        .unwrap_or_default()
                        .to_owned(),
                    reason: string_arg(args, "reason", false)?
                        .unwrap_or("from MCP")
                        .to_owned(),
                };
                let holds = if name == "pause_dispatch" {
                    hub.pause_dispatch(request).await
                } else {
                    hub.resume_dispatch(request).await
                }
                .map_err(|s| status_error(&s))?
                .into_inner();
                Ok(structured(
                    json!({"paused_skills": holds.skills, "paused_gateways": holds.gateways}),
                ))
            }
            "bulk_operation" => {
                let name = string_arg(args, "operation", true)?.unwrap_or_default();
                let operation = pb::Operation::from_name(name).ok_or_else(|| {
                    failure(format!(
                        "`operation` must be {}, not `{name}`",
                        pb::Operation::NAMES
                    ))
                })?;
                let status = match string_arg(args, "status", false)? {
                    None => pb::WorkflowStatus::Unspecified,
                    Some(text) => pb::WorkflowStatus::from_str_name(&format!(
                        "WORKFLOW_STATUS_{}",
                        text.to_ascii_uppercase()
                    ))
                    .ok_or_else(|| failure(format!("`status` {text} is not a workflow status")))?,
                };
                let labels = args
                    .get("labels")
                    .and_then(Value::as_object)
                    .map(|labels| {
                        labels
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                let text = |field: &str| -> Result<String, String> {
                    Ok(string_arg(args, field, false)?
                        .unwrap_or_default()
                        .to_owned())
                };
                let answer = workflows
                    .bulk_operate(pb::BulkOperateRequest {
                        operation: operation.into(),
                        status: status.into(),
                        name: text("name")?,
                        labels,
                        skill: text("skill")?,
                        gateway: text("gateway")?,
                        dry_run: args.get("dry_run").and_then(Value::as_bool).unwrap_or(true),
                        reason: text("reason")?,
                        task_id: text("task_id")?,
                        limit: 0,
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(json!({
                    "dry_run": answer.dry_run,
                    "matched": answer.matched,
                    "workflow_ids": answer.workflow_ids,
                    "applied": answer.applied,
                    "refused": answer.refused,
                })))
            }
            "approve_task" => {
                let id = string_arg(args, "workflow_id", true)?.unwrap_or_default();
                let decision = match string_arg(args, "decision", true)?.unwrap_or_default() {
                    "approve" => pb::Decision::Approve,
                    "reject" => pb::Decision::Reject,
                    other => {
                        return Err(failure(format!(
                            "`decision` must be approve or reject, not `{other}`"
                        )));
                    }
                };
                let mut request = tonic::Request::new(pb::ApproveRequest {
                    workflow_id: id.to_owned(),
                    task_id: string_arg(args, "task_id", false)?
                        .unwrap_or_default()
                        .to_owned(),
                    decision: decision.into(),
                    note: string_arg(args, "note", false)?
                        .unwrap_or_default()
                        .to_owned(),
                    decided_by: string_arg(args, "decided_by", true)?
                        .unwrap_or_default()
                        .to_owned(),
                });
                request.metadata_mut().insert(
                    "paygrid-client",
                    tonic::metadata::MetadataValue::from_static("mcp"),
                );
                let answer = workflows
                    .approve(request)
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(json!({
                    "workflow_id": id,
                    "task_id": answer.task_id,
                    "decision": if decision == pb::Decision::Approve { "approve" } else { "reject" },
                    "status": convert::workflow_status(answer.status),
                })))
            }
            "validate_spec" => {
                let text = string_arg(args, "spec_text", true)?.unwrap_or_default();
                let input = match args.get("input") {
                    None | Some(Value::Null) => String::new(),
                    Some(value @ Value::Object(_)) => value.to_string(),
                    Some(_) => return Err(failure("`input` must be an object")),
                };
                let answer = workflows
                    .validate(pb::ValidateRequest {
                        spec_text: text.to_owned(),
                        input_json: input,
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                let errors: Vec<Value> = answer
                    .errors
                    .iter()
                    .map(|e| json!({"message": e.message, "task": e.task_id, "line": e.line, "column": e.column}))
                    .collect();
                Ok(structured(
                    json!({"valid": answer.valid, "name": answer.name, "version": answer.version, "tasks": answer.task_count, "errors": errors}),
                ))
            }
            "list_agents" => {
                let agents = hub
                    .list_agents(pb::ListAgentsRequest {
                        skill: string_arg(args, "skill", false)?
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                let items: Vec<Value> = agents.agents.iter().map(convert::agent).collect();
                Ok(structured(json!({"agents": items})))
            }
            "health" => {
                let health = hub
                    .health(pb::HealthRequest::default())
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                Ok(structured(convert::health(&health)))
            }
            other => Err(failure(format!("unknown tool `{other}`"))),
        }
    }

    async fn agent_call(
        &self,
        name: &str,
        mut args: Map<String, Value>,
    ) -> Result<CallToolResponse, String> {
        let key = match args.remove("idempotency_key") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(key)) => key,
            Some(_) => return Err(failure("`idempotency_key` must be a string")),
        };
        let answer = self
            .hub
            .clone()
            .call_tool(pb::CallToolRequest {
                tool: name.to_owned(),
                arguments_json: Value::Object(args).to_string(),
                idempotency_key: key,
                timeout_ms: 60_000,
                route_labels: Default::default(),
            })
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        if !answer.succeeded {
            return Err(failure(format!(
                "call {} failed: {}",
                answer.call_id, answer.error
            )));
        }
        let output: Value = serde_json::from_str(&answer.output_json).unwrap_or(Value::Null);
        // Structured content must be an object.
        let output = match output {
            Value::Object(_) => output,
            other => json!({"value": other}),
        };
        Ok(structured(output))
    }
}

impl ServerHandler for PaygridMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("paygrid", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Paygrid runs durable payment workflows on agents. Submit a workflow (submit_workflow with spec_ref such as card-payment@3 and its input), follow it with get_workflow or read paygrid://workflows/{id}; call an agent skill directly as a tool. Money-moving tools need an idempotency_key.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let this = self.for_request(&context);
        let mut tools = operator_tools();
        let agent_tools = this
            .hub
            .clone()
            .list_tools(pb::ListToolsRequest {})
            .await
            .map_err(|s| ErrorData::internal_error(format!("control unit: {}", s.message()), None))?
            .into_inner()
            .tools;
        tools.extend(
            agent_tools
                .iter()
                .filter(|t| !OPERATOR_TOOLS.contains(&t.name.as_str()))
                .map(agent_tool),
        );
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let this = self.for_request(&context);
        let args = request.arguments.clone().unwrap_or_default();
        let name: &str = &request.name;
        let answer = if OPERATOR_TOOLS.contains(&name) {
            this.operator_call(name, &args).await
        } else {
            this.agent_call(name, args).await
        };
        Ok(answer.unwrap_or_else(tool_error))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let this = self.for_request(&context);
        let cursor = request.and_then(|r| r.cursor).unwrap_or_default();
        // The specs come first, on the first page; the workflows page after them.
        let mut resources: Vec<Resource> = Vec::new();
        if cursor.is_empty() {
            let specs = this
                .workflows
                .clone()
                .list_specs(pb::ListSpecsRequest {})
                .await
                .map_err(|s| {
                    ErrorData::internal_error(format!("control unit: {}", s.message()), None)
                })?
                .into_inner()
                .specs;
            resources.extend(specs.iter().map(|spec| {
                let reference = format!("{}@{}", spec.name, spec.version);
                let description = if spec.description.is_empty() {
                    "workflow spec".to_owned()
                } else {
                    spec.description.clone()
                };
                Resource::new(format!("{SPEC_URI}{reference}"), reference)
                    .with_description(description)
                    .with_mime_type("application/yaml")
            }));
        }
        let page = this
            .workflows
            .clone()
            .list(pb::ListWorkflowsRequest {
                page_size: 100,
                page_token: cursor,
                ..Default::default()
            })
            .await
            .map_err(|s| ErrorData::internal_error(format!("control unit: {}", s.message()), None))?
            .into_inner();
        resources.extend(page.workflows.iter().map(|w| {
            Resource::new(
                format!("{WORKFLOW_URI}{}", w.workflow_id),
                format!("{}@{} {}", w.name, w.version, w.workflow_id),
            )
            .with_description(format!("workflow {}", convert::workflow_status(w.status)))
            .with_mime_type("application/json")
        }));
        let mut result = ListResourcesResult::with_all_items(resources);
        if !page.next_page_token.is_empty() {
            result.next_cursor = Some(page.next_page_token);
        }
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{WORKFLOW_URI}{{id}}"), "workflow")
                .with_description("A workflow: status, tasks, outputs, errors (card data masked)")
                .with_mime_type("application/json"),
            ResourceTemplate::new(format!("{SPEC_URI}{{name}}@{{version}}"), "spec")
                .with_description("A workflow spec submitted before, as its YAML text")
                .with_mime_type("application/yaml"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let this = self.for_request(&context);
        let not_found = |s: tonic::Status| match s.code() {
            tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                ErrorData::resource_not_found(s.message().to_owned(), None)
            }
            _ => ErrorData::internal_error(format!("control unit: {}", s.message()), None),
        };
        if let Some(reference) = request.uri.strip_prefix(SPEC_URI) {
            let spec = this
                .workflows
                .clone()
                .get_spec(pb::GetSpecRequest {
                    spec_ref: reference.to_owned(),
                })
                .await
                .map_err(not_found)?
                .into_inner();
            return Ok(
                ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                    uri: request.uri.clone(),
                    mime_type: Some("application/yaml".into()),
                    text: spec.text,
                    meta: None,
                }])
                .into(),
            );
        }
        let Some(id) = request.uri.strip_prefix(WORKFLOW_URI) else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "`{}` is not a Paygrid resource (paygrid://workflows/ID or paygrid://specs/NAME@VERSION)",
                    request.uri
                ),
                None,
            ));
        };
        let workflow = this
            .workflows
            .clone()
            .get(pb::GetWorkflowRequest {
                workflow_id: id.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(not_found)?
            .into_inner();
        let text = serde_json::to_string_pretty(&convert::workflow(&workflow)).unwrap_or_default();
        Ok(
            ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                uri: request.uri.clone(),
                mime_type: Some("application/json".into()),
                text,
                meta: None,
            }])
            .into(),
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [rmcp::model::ProtocolVersion]> {
        Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
    }
}
