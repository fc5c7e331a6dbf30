//! `AgentHub.ListTools` and `AgentHub.CallTool`: the tools module's calls at the gRPC
//! edge. A call is submitted through the `Workflows` service's own path (one-task
//! workflow of a generated spec), then followed until it ends or its deadline.

use std::time::Duration;

use paygrid_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Request;

use super::convert;
use super::workflows::WorkflowsService;
use crate::error::ControlError;
use crate::model::{SkillEffect, WorkflowId};
use crate::runtime::{Handle, Input};
use crate::tools::{self, LABEL_TOOL};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct ToolsService {
    handle: Handle,
    workflows: WorkflowsService,
}

impl ToolsService {
    pub fn new(handle: Handle, workflows: WorkflowsService) -> Self {
        Self { handle, workflows }
    }

    pub async fn list(&self) -> Result<pb::ListToolsResponse, ControlError> {
        let agents = self
            .handle
            .ask(|reply| Input::ListAgents { skill: None, reply })
            .await?;
        Ok(pb::ListToolsResponse {
            tools: tools::tools(&agents)
                .into_iter()
                .map(|tool| pb::Tool {
                    name: tool.skill.name,
                    description: tool.skill.description,
                    input_schema_json: tool.skill.input_schema,
                    output_schema_json: tool.skill.output_schema,
                    effect: convert::skill_effect_to_pb(tool.skill.effect).into(),
                    agent_ids: tool.agents.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        })
    }

    /// Starts one call of `tool` (checked first); its workflow id.
    pub async fn start(
        &self,
        metadata: tonic::metadata::MetadataMap,
        tool_name: &str,
        arguments: Value,
        key: &str,
        route_labels: &std::collections::HashMap<String, String>,
    ) -> Result<WorkflowId, ControlError> {
        let agents = self
            .handle
            .ask(|reply| Input::ListAgents {
                skill: Some(tool_name.to_owned()),
                reply,
            })
            .await?;
        let Some(tool) = tools::tools(&agents)
            .into_iter()
            .find(|t| t.skill.name == tool_name)
        else {
            return Err(ControlError::NotFound(format!(
                "no connected agent offers the tool `{tool_name}` (ListTools lists them)"
            )));
        };
        if !arguments.is_object() {
            return Err(ControlError::invalid(
                "the arguments must be a JSON object".to_owned(),
            ));
        }
        let schema: Value = serde_json::from_str(&tool.skill.input_schema).unwrap_or(Value::Null);
        tools::schema::validate(&schema, &arguments, "arguments")
            .map_err(|e| ControlError::invalid(format!("tool `{tool_name}`: {e}")))?;
        if key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(ControlError::invalid(format!(
                "idempotency_key is {} bytes; the limit is {IDEMPOTENCY_KEY_BYTES_MAX}",
                key.len()
            )));
        }
        if tool.skill.effect == SkillEffect::MovesMoney && key.is_empty() {
            return Err(ControlError::invalid(format!(
                "idempotency_key is required: the tool `{tool_name}` moves money"
            )));
        }
        let mut route_keys: Vec<&str> = route_labels.keys().map(String::as_str).collect();
        route_keys.sort_unstable();
        if let Some(bad) = route_keys.iter().find(|k| !tools::valid_route_key(k)) {
            return Err(ControlError::invalid(format!(
                "route label `{bad}`: keys are lowercase letters, digits and `_`"
            )));
        }
        let (text, _) = tools::spec_text(tool_name, tool.skill.effect, &route_keys);
        let mut input = json!({ "arguments": arguments });
        for (label, value) in route_labels {
            input[format!("route_{label}")] = json!(value);
        }
        let mut submit = Request::new(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(text)),
            input_json: input.to_string(),
            labels: [(LABEL_TOOL.to_owned(), tool_name.to_owned())].into(),
            idempotency_key: if key.is_empty() {
                String::new()
            } else {
                format!("tool:{tool_name}:{key}")
            },
            ..Default::default()
        });
        *submit.metadata_mut() = metadata;
        let submitted = self.workflows.submit_request(submit).await?;
        submitted
            .workflow_id
            .parse()
            .map_err(ControlError::Internal)
    }

    pub async fn call(
        &self,
        request: Request<pb::CallToolRequest>,
    ) -> Result<pb::CallToolResponse, ControlError> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let arguments: Value = if request.arguments_json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&request.arguments_json).map_err(|e| {
                ControlError::invalid(format!("arguments_json is not valid JSON: {e}"))
            })?
        };
        let id = self
            .start(
                metadata,
                &request.tool,
                arguments,
                &request.idempotency_key,
                &request.route_labels,
            )
            .await?;
        let timeout = match request.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
        };
        if tokio::time::timeout(timeout, self.workflows.wait_ended(id))
            .await
            .is_err()
        {
            return Err(ControlError::DeadlineExceeded(format!(
                "tool call {id} did not end within {} ms; it goes on: `paygrid status {id}`, or call again with the same idempotency key",
                timeout.as_millis()
            )));
        }
        let workflow = self.workflows.get_pb(id).await?;
        let task = workflow.tasks.first();
        let succeeded = workflow.status == pb::WorkflowStatus::Succeeded as i32;
        let error = if succeeded {
            String::new()
        } else {
            task.map(|t| t.error.clone())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "the call ended {}",
                        pb::WorkflowStatus::try_from(workflow.status)
                            .map(|s| s.as_str_name())
                            .unwrap_or("UNKNOWN")
                    )
                })
        };
        Ok(pb::CallToolResponse {
            call_id: id.to_string(),
            succeeded,
            output_json: task.map(|t| t.output_json.clone()).unwrap_or_default(),
            error,
            attempts: task.map_or(0, |t| t.attempts),
        })
    }
}

/// Longest idempotency key a caller gives (Stripe's limit), before the call's prefix.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
