//! `/api/...`: the console's JSON, each handler one or two gRPC calls made with the
//! browser's own token. A refusal keeps its meaning: the gRPC status becomes the HTTP
//! status, and its message the `error` the page shows.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::{AuthChannel, Bearer, ClientSecurity};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ConsoleOptions;
use crate::json as to_json;

#[derive(Clone)]
pub struct Api {
    channel: Channel,
    security: ClientSecurity,
    options: ConsoleOptions,
}

/// An answer to the page: JSON, or an error with its HTTP status.
pub struct Answer(Result<Value, (StatusCode, String)>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(value) => Json(value).into_response(),
            Err((status, message)) => (status, Json(json!({ "error": message }))).into_response(),
        }
    }
}

impl From<Result<Value, (StatusCode, String)>> for Answer {
    fn from(result: Result<Value, (StatusCode, String)>) -> Self {
        Self(result)
    }
}

type Refusal = (StatusCode, String);

fn refused(status: tonic::Status) -> Refusal {
    use tonic::Code;
    let http = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (http, status.message().to_owned())
}

fn bad_request(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

impl Api {
    pub fn new(
        endpoint: &str,
        security: ClientSecurity,
        options: ConsoleOptions,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            channel: security.channel_lazy(security.endpoint(endpoint)?),
            security,
            options,
        })
    }

    /// The caller's clients: its `authorization` header goes with every call.
    fn clients(
        &self,
        headers: &HeaderMap,
    ) -> Result<(WorkflowsClient<AuthChannel>, AgentHubClient<AuthChannel>), Refusal> {
        let header = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if header.is_none() && self.options.require_token {
            return Err((
                StatusCode::UNAUTHORIZED,
                "sign in: paste a token (paygrid token --key KEY --role operator --subject YOU)"
                    .into(),
            ));
        }
        let bearer = Bearer::new(header).map_err(bad_request)?;
        let security = self.security.with_bearer(bearer);
        Ok((
            WorkflowsClient::new(security.authorize(self.channel.clone())),
            AgentHubClient::new(security.authorize(self.channel.clone())),
        ))
    }
}

/// The query string's pairs, percent-decoded; `label` may repeat.
fn query(uri: &Uri) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn status_from(name: &str) -> Result<i32, Refusal> {
    if name.is_empty() {
        return Ok(0);
    }
    pb::WorkflowStatus::from_str_name(&format!("WORKFLOW_STATUS_{}", name.to_ascii_uppercase()))
        .map(i32::from)
        .ok_or_else(|| bad_request(format!("status `{name}` is not a workflow status")))
}

fn labels_from(pairs: &[(String, String)]) -> Result<HashMap<String, String>, Refusal> {
    pairs
        .iter()
        .filter(|(key, value)| key == "label" && !value.is_empty())
        .map(|(_, label)| {
            label
                .split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| bad_request(format!("label `{label}`: use KEY=VALUE")))
        })
        .collect()
}

pub async fn config(State(api): State<Api>) -> Answer {
    Answer(Ok(json!({
        "jaeger_url": api.options.jaeger_url,
        "token_required": api.options.require_token,
    })))
}

/// `GET /api/workflows?status=&name=&label=K=V&since_ms=&until_ms=&page_token=&q=`: a
/// page of workflows; `q` finds one by id or idempotency key.
pub async fn list(State(api): State<Api>, headers: HeaderMap, uri: Uri) -> Answer {
    async {
        let (mut workflows, _) = api.clients(&headers)?;
        let pairs = query(&uri);
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let search = field("q");
        if !search.is_empty() {
            // An id, else an idempotency key.
            let by_id = workflows
                .get(pb::GetWorkflowRequest {
                    workflow_id: search.clone(),
                    ..Default::default()
                })
                .await;
            let found = match by_id {
                Ok(found) => Ok(found),
                Err(_) => {
                    workflows
                        .get(pb::GetWorkflowRequest {
                            workflow_id: String::new(),
                            idempotency_key: search.clone(),
                        })
                        .await
                }
            };
            return match found {
                Ok(found) => Ok(json!({
                    "workflows": [to_json::summary_of(&found.into_inner())],
                    "next_page_token": "",
                })),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(json!({
                    "workflows": [],
                    "next_page_token": "",
                    "note": format!("no workflow has the id or idempotency key `{search}`"),
                })),
                Err(status) => Err(refused(status)),
            };
        }
        let since: i64 = field("since_ms").parse().unwrap_or(0);
        let until: i64 = field("until_ms").parse().unwrap_or(i64::MAX);
        let page = workflows
            .list(pb::ListWorkflowsRequest {
                status: status_from(&field("status"))?,
                name: field("name"),
                labels: labels_from(&pairs)?,
                page_size: field("page_size").parse().unwrap_or(50).clamp(1, 200),
                page_token: field("page_token"),
            })
            .await
            .map_err(refused)?
            .into_inner();
        let items: Vec<Value> = page
            .workflows
            .iter()
            .filter(|w| w.created_at_ms >= since && w.created_at_ms <= until)
            .map(to_json::summary)
            .collect();
        Ok(json!({"workflows": items, "next_page_token": page.next_page_token}))
    }
    .await
    .into()
}

pub async fn workflow(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    async {
        let (mut workflows, _) = api.clients(&headers)?;
        let workflow = workflows
            .get(pb::GetWorkflowRequest {
                workflow_id: id,
                ..Default::default()
            })
            .await
            .map_err(refused)?
            .into_inner();
        Ok(to_json::workflow(&workflow))
    }
    .await
    .into()
}

/// `POST /api/workflows/{id}/{pause|resume|retry|redrive|cancel}` with
/// `{"reason": ..., "task_id": ...}`.
pub async fn operate(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((id, operation)): Path<(String, String)>,
    body: String,
) -> Answer {
    async {
        let (mut workflows, _) = api.clients(&headers)?;
        let body: Value = if body.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&body).map_err(|e| bad_request(format!("body: {e}")))?
        };
        let text = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        let request = pb::OperateRequest {
            workflow_id: id.clone(),
            task_id: text("task_id"),
            reason: text("reason"),
        };
        let answer = match operation.as_str() {
            "pause" => workflows.pause(request).await,
            "resume" => workflows.resume(request).await,
            "retry" => workflows.retry_task(request).await,
            "redrive" => workflows.redrive(request).await,
            "cancel" => {
                let cancelled = workflows
                    .cancel(pb::CancelWorkflowRequest {
                        workflow_id: id.clone(),
                        reason: request.reason,
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                return Ok(json!({
                    "workflow_id": id,
                    "status": to_json::workflow_status(cancelled.status),
                }));
            }
            other => {
                return Err(bad_request(format!(
                    "unknown operation `{other}`: pause, resume, retry, redrive or cancel"
                )));
            }
        }
        .map_err(refused)?
        .into_inner();
        Ok(json!({
            "workflow_id": id,
            "status": to_json::workflow_status(answer.status),
            "paused": answer.paused,
            "tasks": answer.tasks,
        }))
    }
    .await
    .into()
}

/// `POST /api/bulk` with the operation, the filter and `dry_run`.
pub async fn bulk(State(api): State<Api>, headers: HeaderMap, body: String) -> Answer {
    async {
        let (mut workflows, _) = api.clients(&headers)?;
        let body: Value =
            serde_json::from_str(&body).map_err(|e| bad_request(format!("body: {e}")))?;
        let text = |name: &str| body[name].as_str().unwrap_or_default().trim().to_owned();
        let name = text("operation");
        let operation = pb::Operation::from_name(&name)
            .ok_or_else(|| bad_request(format!("operation `{name}`: {}", pb::Operation::NAMES)))?;
        let labels = labels_from(
            &text("label")
                .split(',')
                .filter(|l| !l.trim().is_empty())
                .map(|l| ("label".to_owned(), l.trim().to_owned()))
                .collect::<Vec<_>>(),
        )?;
        let answer = workflows
            .bulk_operate(pb::BulkOperateRequest {
                operation: operation.into(),
                status: status_from(&text("status"))?,
                name: text("name"),
                labels,
                skill: text("skill"),
                gateway: text("gateway"),
                dry_run: body["dry_run"].as_bool().unwrap_or(true),
                reason: text("reason"),
                task_id: text("task_id"),
                limit: 0,
            })
            .await
            .map_err(refused)?
            .into_inner();
        Ok(json!({
            "dry_run": answer.dry_run,
            "matched": answer.matched,
            "workflow_ids": answer.workflow_ids,
            "applied": answer.applied,
            "refused": answer.refused,
        }))
    }
    .await
    .into()
}

pub async fn agents(State(api): State<Api>, headers: HeaderMap) -> Answer {
    async {
        let (_, mut hub) = api.clients(&headers)?;
        let agents = hub
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .map_err(refused)?
            .into_inner();
        let members = hub
            .list_members(pb::ListMembersRequest::default())
            .await
            .map(|m| m.into_inner())
            .unwrap_or_default();
        Ok(json!({
            "agents": agents.agents.iter().map(to_json::agent).collect::<Vec<_>>(),
            "cluster": {
                "answered_by": members.answered_by,
                "members": members.members.iter().map(|m| json!({"name": m.name, "url": m.url, "partitions": m.partitions})).collect::<Vec<_>>(),
            },
        }))
    }
    .await
    .into()
}

pub async fn health(State(api): State<Api>, headers: HeaderMap) -> Answer {
    async {
        let (_, mut hub) = api.clients(&headers)?;
        let health = hub
            .health(pb::HealthRequest::default())
            .await
            .map_err(refused)?
            .into_inner();
        Ok(to_json::health(&health))
    }
    .await
    .into()
}

pub async fn limits(State(api): State<Api>, headers: HeaderMap) -> Answer {
    async {
        let (_, mut hub) = api.clients(&headers)?;
        let limits = hub
            .get_limits(pb::GetLimitsRequest::default())
            .await
            .map_err(refused)?
            .into_inner();
        Ok(to_json::limits(&limits))
    }
    .await
    .into()
}

/// `POST /api/dispatch/{pause|resume}` with `{"skill"|"gateway": ..., "reason": ...}`.
pub async fn dispatch(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(operation): Path<String>,
    body: String,
) -> Answer {
    async {
        let (_, mut hub) = api.clients(&headers)?;
        let body: Value =
            serde_json::from_str(&body).map_err(|e| bad_request(format!("body: {e}")))?;
        let text = |name: &str| body[name].as_str().unwrap_or_default().trim().to_owned();
        let request = pb::DispatchHoldRequest {
            skill: text("skill"),
            gateway: text("gateway"),
            reason: text("reason"),
        };
        let holds = match operation.as_str() {
            "pause" => hub.pause_dispatch(request).await,
            "resume" => hub.resume_dispatch(request).await,
            other => {
                return Err(bad_request(format!(
                    "unknown operation `{other}`: pause or resume"
                )));
            }
        }
        .map_err(refused)?
        .into_inner();
        Ok(json!({"skills": holds.skills, "gateways": holds.gateways}))
    }
    .await
    .into()
}
