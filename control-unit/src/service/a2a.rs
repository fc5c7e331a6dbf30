//! A2A v1.0 for peers outside Paygrid: the gRPC binding (`lf.a2a.v1.A2AService`, from the
//! A2A project's vendored `a2a.proto`) served on the control unit's gRPC port, and the
//! agent card served at `/.well-known/agent-card.json` on its HTTP listener.
//!
//! An A2A task is a Paygrid workflow (its id is the workflow id):
//! - `SendMessage` with a data part `{"spec_ref": "card-payment@3", "input": {...}}` (or
//!   `"spec_text"`) starts a workflow; `{"skill": "risk.score", "input": {...}}` one tool
//!   call (a one-task workflow). The message id is the idempotency key, so a retried
//!   message starts nothing new. Anything else is `INVALID_ARGUMENT` naming what is
//!   accepted.
//! - States: pending → SUBMITTED, running / compensating → WORKING, running with an
//!   approval waiting → INPUT_REQUIRED (its message asks the question), succeeded →
//!   COMPLETED (task outputs as one data artifact), failed / compensated → FAILED,
//!   cancelled → CANCELED.
//! - A follow-up message to an INPUT_REQUIRED task (`task_id` set) decides its approval:
//!   a data part `{"decision": "approve" | "reject", "note": "..."}` or a text part
//!   starting with approve or reject.
//! - `GetTask`, `ListTasks` (paged like `List`), `CancelTask`, `SendStreamingMessage` and
//!   `SubscribeToTask` (a status update per workflow change, the artifact, the final
//!   status). Push notifications are not offered (`UNIMPLEMENTED`, and the card says so).

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use paygrid_proto::a2a;
use paygrid_proto::v1 as pb;
use serde_json::{Value, json};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::tools::ToolsService;
use super::workflows::WorkflowsService;
use crate::error::ControlError;
use crate::model::{Decision, WorkflowId};
use crate::scheduler::approvals::DecisionBy;

/// Longest message or context id (they become an idempotency key and a label value).
const A2A_ID_BYTES_MAX: usize = 200;

/// Label keeping a task's A2A context id on its workflow.
pub const LABEL_CONTEXT: &str = "a2a.context_id";

/// How long a blocking `SendMessage` waits for the task to end before answering WORKING.
const BLOCKING_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct A2aService {
    workflows: WorkflowsService,
    tools: ToolsService,
}

impl A2aService {
    pub fn new(workflows: WorkflowsService, tools: ToolsService) -> Self {
        Self { workflows, tools }
    }

    /// Starts what a message asks for; the workflow's id.
    async fn start(
        &self,
        metadata: tonic::metadata::MetadataMap,
        message: &a2a::Message,
    ) -> Result<WorkflowId, ControlError> {
        if !message.task_id.is_empty() {
            return self.answer(message).await;
        }
        let accepted = "send one data part: {\"spec_ref\": \"NAME@VERSION\", \"input\": {...}} or {\"spec_text\": \"...\", \"input\": {...}} to start a workflow, or {\"skill\": \"SKILL\", \"input\": {...}} for one tool call";
        let data = message
            .parts
            .iter()
            .find_map(|part| match &part.content {
                Some(a2a::part::Content::Data(value)) => Some(from_proto_value(value)),
                _ => None,
            })
            .ok_or_else(|| ControlError::invalid(format!("no data part: {accepted}")))?;
        let input = match data.get("input") {
            None | Some(Value::Null) => json!({}),
            Some(input @ Value::Object(_)) => input.clone(),
            Some(_) => return Err(ControlError::invalid("`input` must be an object")),
        };
        for (field, value) in [
            ("message_id", &message.message_id),
            ("context_id", &message.context_id),
        ] {
            if value.len() > A2A_ID_BYTES_MAX {
                return Err(ControlError::invalid(format!(
                    "{field} is {} bytes; the limit is {A2A_ID_BYTES_MAX}",
                    value.len()
                )));
            }
        }
        let key = if message.message_id.is_empty() {
            String::new()
        } else {
            format!("a2a:{}", message.message_id)
        };
        let context = if message.context_id.is_empty() {
            None
        } else {
            Some(message.context_id.clone())
        };
        let spec = match (
            data.get("spec_ref").and_then(Value::as_str),
            data.get("spec_text").and_then(Value::as_str),
            data.get("skill").and_then(Value::as_str),
        ) {
            (Some(reference), None, None) => {
                pb::submit_request::Spec::SpecRef(reference.to_owned())
            }
            (None, Some(text), None) => pb::submit_request::Spec::SpecText(text.to_owned()),
            (None, None, Some(skill)) => {
                return self
                    .tools
                    .start(metadata, skill, input, &key, &HashMap::new())
                    .await;
            }
            _ => return Err(ControlError::invalid(accepted.to_owned())),
        };
        let mut submit = Request::new(pb::SubmitRequest {
            spec: Some(spec),
            input_json: input.to_string(),
            labels: context
                .map(|c| [(LABEL_CONTEXT.to_owned(), c)].into())
                .unwrap_or_default(),
            idempotency_key: key,
            ..Default::default()
        });
        *submit.metadata_mut() = metadata;
        let submitted = self.workflows.submit_request(submit).await?;
        submitted
            .workflow_id
            .parse()
            .map_err(ControlError::Internal)
    }

    /// A follow-up message to a task in INPUT_REQUIRED: the decision on the approval it
    /// waits for, as a data part `{"decision": "approve" | "reject", "note": "...",
    /// "task": "review", "decided_by": "..."}` or a text part starting with approve or
    /// reject.
    async fn answer(&self, message: &a2a::Message) -> Result<WorkflowId, ControlError> {
        let id = parse_id(&message.task_id)?;
        let expected = "answer an INPUT_REQUIRED task with a data part {\"decision\": \"approve\" or \"reject\", \"note\": \"...\"} or a text part starting with approve or reject";
        let data = message.parts.iter().find_map(|part| match &part.content {
            Some(a2a::part::Content::Data(value)) => Some(from_proto_value(value)),
            _ => None,
        });
        let text = message.parts.iter().find_map(|part| match &part.content {
            Some(a2a::part::Content::Text(text)) => Some(text.clone()),
            _ => None,
        });
        let field = |name: &str| {
            data.as_ref()
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (decision, note) = match (field("decision"), &text) {
            (Some(decision), _) => (decision, field("note").unwrap_or_default()),
            (None, Some(text)) => {
                let mut words = text.trim().splitn(2, char::is_whitespace);
                let first = words.next().unwrap_or_default();
                let first = first.trim_end_matches(|c: char| !c.is_alphanumeric());
                (
                    first.to_owned(),
                    words.next().unwrap_or_default().trim().to_owned(),
                )
            }
            (None, None) => return Err(ControlError::invalid(expected.to_owned())),
        };
        let decision = Decision::parse(&decision)
            .ok_or_else(|| ControlError::invalid(format!("decision `{decision}`: {expected}")))?;
        // An authenticated caller decides as itself, whatever the message says.
        let by = crate::audit::authenticated_name()
            .or_else(|| field("decided_by"))
            .or_else(|| {
                let metadata = message.metadata.as_ref()?;
                match &metadata.fields.get("decided_by")?.kind {
                    Some(prost_types::value::Kind::StringValue(by)) => Some(by.clone()),
                    _ => None,
                }
            })
            .unwrap_or_else(|| {
                if message.context_id.is_empty() {
                    "a2a client".to_owned()
                } else {
                    format!("a2a context {}", message.context_id)
                }
            });
        let decision = DecisionBy {
            decision,
            by,
            via: "a2a".into(),
            note,
        };
        self.workflows
            .approve_workflow(id, field("task"), decision)
            .await?;
        Ok(id)
    }

    async fn task(&self, id: WorkflowId) -> Result<a2a::Task, ControlError> {
        Ok(task_of(&self.workflows.get_pb(id).await?))
    }

    /// The stream of a task from now on: the task, a status update per change, the
    /// artifact and the final status update; ends with the workflow.
    async fn follow(
        &self,
        id: WorkflowId,
    ) -> Result<<Self as a2a::a2a_service_server::A2aService>::SubscribeToTaskStream, ControlError>
    {
        let mut events = self.workflows.events(id).await?;
        let workflows = self.workflows.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut last = None;
            let mut first = true;
            loop {
                let more = events.next().await.is_some();
                let Ok(workflow) = workflows.get_pb(id).await else {
                    return;
                };
                let task = task_of(&workflow);
                let state = task.status.as_ref().map(|s| s.state);
                let terminal = is_terminal(workflow.status);
                if first {
                    first = false;
                    last = state;
                    if sender
                        .send(Ok(stream(Payload::Task(task.clone()))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                } else if state != last || terminal || !more {
                    last = state;
                    for artifact in &task.artifacts {
                        let update = a2a::TaskArtifactUpdateEvent {
                            task_id: task.id.clone(),
                            context_id: task.context_id.clone(),
                            artifact: Some(artifact.clone()),
                            append: false,
                            last_chunk: true,
                            metadata: None,
                        };
                        if terminal
                            && sender
                                .send(Ok(stream(Payload::ArtifactUpdate(update))))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                    let update = a2a::TaskStatusUpdateEvent {
                        task_id: task.id.clone(),
                        context_id: task.context_id.clone(),
                        status: task.status.clone(),
                        metadata: None,
                    };
                    if sender
                        .send(Ok(stream(Payload::StatusUpdate(update))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if terminal || !more {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

type Payload = a2a::stream_response::Payload;

fn stream(payload: Payload) -> a2a::StreamResponse {
    a2a::StreamResponse {
        payload: Some(payload),
    }
}

fn is_terminal(status: i32) -> bool {
    matches!(
        pb::WorkflowStatus::try_from(status),
        Ok(pb::WorkflowStatus::Succeeded
            | pb::WorkflowStatus::Failed
            | pb::WorkflowStatus::Compensated
            | pb::WorkflowStatus::Cancelled)
    )
}

fn state_of(status: i32) -> a2a::TaskState {
    match pb::WorkflowStatus::try_from(status) {
        Ok(pb::WorkflowStatus::Pending) => a2a::TaskState::Submitted,
        Ok(pb::WorkflowStatus::Running | pb::WorkflowStatus::Compensating) => {
            a2a::TaskState::Working
        }
        Ok(pb::WorkflowStatus::Succeeded) => a2a::TaskState::Completed,
        Ok(pb::WorkflowStatus::Failed | pb::WorkflowStatus::Compensated) => a2a::TaskState::Failed,
        Ok(pb::WorkflowStatus::Cancelled) => a2a::TaskState::Canceled,
        _ => a2a::TaskState::Unspecified,
    }
}

/// The A2A states a workflow status filter can express.
fn status_filter(state: i32) -> Result<pb::WorkflowStatus, ControlError> {
    Ok(match a2a::TaskState::try_from(state) {
        Ok(a2a::TaskState::Unspecified) | Err(_) => pb::WorkflowStatus::Unspecified,
        Ok(a2a::TaskState::Submitted) => pb::WorkflowStatus::Pending,
        Ok(a2a::TaskState::Working | a2a::TaskState::InputRequired) => pb::WorkflowStatus::Running,
        Ok(a2a::TaskState::Completed) => pb::WorkflowStatus::Succeeded,
        Ok(a2a::TaskState::Failed) => pb::WorkflowStatus::Failed,
        Ok(a2a::TaskState::Canceled) => pb::WorkflowStatus::Cancelled,
        Ok(other) => {
            return Err(ControlError::invalid(format!(
                "status {}: no Paygrid task is in it",
                other.as_str_name()
            )));
        }
    })
}

fn text_message(task: &str, context: &str, text: String) -> a2a::Message {
    a2a::Message {
        message_id: format!("{task}-status"),
        context_id: context.to_owned(),
        task_id: task.to_owned(),
        role: a2a::Role::Agent.into(),
        parts: vec![a2a::Part {
            content: Some(a2a::part::Content::Text(text)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A workflow as an A2A task.
fn task_of(workflow: &pb::Workflow) -> a2a::Task {
    let awaiting = workflow
        .tasks
        .iter()
        .find(|t| t.approval.as_ref().is_some_and(|a| a.pending));
    let state = match awaiting {
        Some(_) if workflow.status == pb::WorkflowStatus::Running as i32 => {
            a2a::TaskState::InputRequired
        }
        _ => state_of(workflow.status),
    };
    let context = workflow
        .labels
        .get(LABEL_CONTEXT)
        .cloned()
        .unwrap_or_else(|| workflow.workflow_id.clone());
    let failure = workflow
        .tasks
        .iter()
        .find(|t| !t.error.is_empty())
        .map(|t| format!("{}: {}", t.task_id, t.error))
        .or_else(|| Some(workflow.error.clone()).filter(|e| !e.is_empty()));
    let message = match state {
        a2a::TaskState::Failed | a2a::TaskState::Canceled => failure,
        a2a::TaskState::InputRequired => awaiting.map(|t| {
            let approval = t.approval.clone().unwrap_or_default();
            format!(
                "task `{}` awaits approval: {} (default {} at the timeout). Reply to this task with a data part {{\"decision\": \"approve\" or \"reject\", \"note\": \"...\"}}.",
                t.task_id, approval.prompt, approval.default_decision
            )
        }),
        a2a::TaskState::Working => workflow
            .tasks
            .iter()
            .find(|t| !t.waiting_reason.is_empty())
            .map(|t| format!("{} waits: {}", t.task_id, t.waiting_reason)),
        _ => None,
    }
    .map(|text| text_message(&workflow.workflow_id, &context, text));
    let artifacts = if state == a2a::TaskState::Completed {
        let outputs: serde_json::Map<String, Value> = workflow
            .tasks
            .iter()
            .filter(|t| !t.output_json.is_empty())
            .filter_map(|t| {
                Some((
                    t.task_id.clone(),
                    serde_json::from_str(&t.output_json).ok()?,
                ))
            })
            .collect();
        vec![a2a::Artifact {
            artifact_id: format!("{}-outputs", workflow.workflow_id),
            name: "outputs".into(),
            description: "Each task's output, by task id".into(),
            parts: vec![a2a::Part {
                content: Some(a2a::part::Content::Data(to_proto_value(&Value::Object(
                    outputs,
                )))),
                media_type: "application/json".into(),
                ..Default::default()
            }],
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    let seconds = workflow.updated_at_ms.div_euclid(1000);
    let nanos = i32::try_from(workflow.updated_at_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    a2a::Task {
        id: workflow.workflow_id.clone(),
        context_id: context,
        status: Some(a2a::TaskStatus {
            state: state.into(),
            message,
            timestamp: Some(prost_types::Timestamp { seconds, nanos }),
        }),
        artifacts,
        history: Vec::new(),
        metadata: Some(prost_types::Struct {
            fields: [(
                "paygrid.spec".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(format!(
                        "{}@{}",
                        workflow.name, workflow.version
                    ))),
                },
            )]
            .into(),
        }),
    }
}

pub fn from_proto_value(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Integers travel as doubles: give them back as integers (money is integral).
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                json!(*n as i64)
            } else {
                json!(n)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(object)) => Value::Object(
            object
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto_value(v)))
                .collect(),
        ),
    }
}

pub fn to_proto_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn parse_id(text: &str) -> Result<WorkflowId, ControlError> {
    text.parse()
        .map_err(|_| ControlError::NotFound(format!("task `{text}` not found")))
}

type StreamOf = Pin<Box<dyn Stream<Item = Result<a2a::StreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl a2a::a2a_service_server::A2aService for A2aService {
    async fn send_message(
        &self,
        request: Request<a2a::SendMessageRequest>,
    ) -> Result<Response<a2a::SendMessageResponse>, Status> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let message = request
            .message
            .ok_or_else(|| ControlError::invalid("`message` is required"))?;
        let id = self.start(metadata, &message).await?;
        let blocking = !request
            .configuration
            .as_ref()
            .is_some_and(|c| c.return_immediately);
        if blocking {
            // Past the wait the task is answered as it is (WORKING), and goes on.
            // It also answers when the task needs input (INPUT_REQUIRED), as A2A's
            // interrupted states do.
            let _ =
                tokio::time::timeout(BLOCKING_WAIT, self.workflows.wait_ended_or_input(id)).await;
        }
        let task = self.task(id).await?;
        Ok(Response::new(a2a::SendMessageResponse {
            payload: Some(a2a::send_message_response::Payload::Task(task)),
        }))
    }

    type SendStreamingMessageStream = StreamOf;

    async fn send_streaming_message(
        &self,
        request: Request<a2a::SendMessageRequest>,
    ) -> Result<Response<Self::SendStreamingMessageStream>, Status> {
        let metadata = request.metadata().clone();
        let message = request
            .into_inner()
            .message
            .ok_or_else(|| ControlError::invalid("`message` is required"))?;
        let id = self.start(metadata, &message).await?;
        Ok(Response::new(self.follow(id).await?))
    }

    async fn get_task(
        &self,
        request: Request<a2a::GetTaskRequest>,
    ) -> Result<Response<a2a::Task>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        Ok(Response::new(self.task(id).await?))
    }

    async fn list_tasks(
        &self,
        request: Request<a2a::ListTasksRequest>,
    ) -> Result<Response<a2a::ListTasksResponse>, Status> {
        let request = request.into_inner();
        let page_size = request.page_size.unwrap_or(50).clamp(1, 100);
        let labels = if request.context_id.is_empty() {
            HashMap::new()
        } else {
            [(LABEL_CONTEXT.to_owned(), request.context_id.clone())].into()
        };
        let page = self
            .workflows
            .list_pb(pb::ListWorkflowsRequest {
                status: status_filter(request.status)?.into(),
                labels,
                page_size: page_size as u32,
                page_token: request.page_token,
                ..Default::default()
            })
            .await?;
        let mut tasks = Vec::with_capacity(page.workflows.len());
        for summary in &page.workflows {
            let mut task = self.task(parse_id(&summary.workflow_id)?).await?;
            // WORKING and INPUT_REQUIRED are both running workflows: keep the one asked.
            let state = task.status.as_ref().map_or(0, |s| s.state);
            if request.status != 0 && state != request.status {
                continue;
            }
            if !request.include_artifacts.unwrap_or(false) {
                task.artifacts.clear();
            }
            tasks.push(task);
        }
        Ok(Response::new(a2a::ListTasksResponse {
            total_size: i32::try_from(tasks.len()).unwrap_or(i32::MAX),
            tasks,
            next_page_token: page.next_page_token,
            page_size,
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<a2a::CancelTaskRequest>,
    ) -> Result<Response<a2a::Task>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        self.workflows
            .cancel_workflow(id, "cancelled by an A2A client".into())
            .await?;
        Ok(Response::new(self.task(id).await?))
    }

    type SubscribeToTaskStream = StreamOf;

    async fn subscribe_to_task(
        &self,
        request: Request<a2a::SubscribeToTaskRequest>,
    ) -> Result<Response<Self::SubscribeToTaskStream>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        let workflow = self.workflows.get_pb(id).await?;
        if is_terminal(workflow.status) {
            return Err(Status::unimplemented(format!(
                "task {id} is {}: a terminal task has no updates to subscribe to (GetTask)",
                pb::WorkflowStatus::try_from(workflow.status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("ended")
            )));
        }
        Ok(Response::new(self.follow(id).await?))
    }

    async fn create_task_push_notification_config(
        &self,
        _request: Request<a2a::TaskPushNotificationConfig>,
    ) -> Result<Response<a2a::TaskPushNotificationConfig>, Status> {
        Err(push_unsupported())
    }

    async fn get_task_push_notification_config(
        &self,
        _request: Request<a2a::GetTaskPushNotificationConfigRequest>,
    ) -> Result<Response<a2a::TaskPushNotificationConfig>, Status> {
        Err(push_unsupported())
    }

    async fn list_task_push_notification_configs(
        &self,
        _request: Request<a2a::ListTaskPushNotificationConfigsRequest>,
    ) -> Result<Response<a2a::ListTaskPushNotificationConfigsResponse>, Status> {
        Err(push_unsupported())
    }

    async fn get_extended_agent_card(
        &self,
        _request: Request<a2a::GetExtendedAgentCardRequest>,
    ) -> Result<Response<a2a::AgentCard>, Status> {
        Err(Status::unimplemented(
            "no extended agent card: the public one (/.well-known/agent-card.json) is complete",
        ))
    }

    async fn delete_task_push_notification_config(
        &self,
        _request: Request<a2a::DeleteTaskPushNotificationConfigRequest>,
    ) -> Result<Response<()>, Status> {
        Err(push_unsupported())
    }
}

fn push_unsupported() -> Status {
    Status::unimplemented("push notifications are not supported: use SubscribeToTask")
}

/// The agent card (A2A JSON, camelCase): Paygrid as one agent, its gRPC interface, one
/// skill per known workflow spec and per agent skill.
pub fn agent_card(
    grpc_url: &str,
    specs: &[(String, Option<String>)],
    tools: &[crate::tools::Tool],
) -> Value {
    let mut skills: Vec<Value> = specs
        .iter()
        .filter(|(name, _)| !name.starts_with("tool."))
        .map(|(name, description)| {
            json!({
                "id": name,
                "name": name,
                "description": description.clone().unwrap_or_else(|| format!("Run the workflow {name}")),
                "tags": ["workflow"],
                "examples": [format!("{{\"spec_ref\": \"{name}\", \"input\": {{...}}}}")],
                "inputModes": ["application/json"],
                "outputModes": ["application/json"],
            })
        })
        .collect();
    skills.extend(tools.iter().map(|tool| {
        json!({
            "id": tool.skill.name,
            "name": tool.skill.name,
            "description": tool.skill.description,
            "tags": ["tool", match tool.skill.effect {
                crate::model::SkillEffect::ReadOnly => "read-only",
                crate::model::SkillEffect::State => "changes-state",
                crate::model::SkillEffect::MovesMoney => "moves-money",
            }],
            "examples": [format!("{{\"skill\": \"{}\", \"input\": {{...}}}}", tool.skill.name)],
            "inputModes": ["application/json"],
            "outputModes": ["application/json"],
        })
    }));
    json!({
        "name": "Paygrid",
        "description": "Durable payment workflows run by agents: send a data part {\"spec_ref\": \"NAME@VERSION\", \"input\": {...}} to start a workflow (the task), or {\"skill\": \"SKILL\", \"input\": {...}} for one tool call.",
        "supportedInterfaces": [{
            "url": grpc_url,
            "protocolBinding": "GRPC",
            "protocolVersion": "1.0",
        }],
        "provider": {"organization": "Paygrid", "url": "https://github.com/paygrid"},
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "skills": skills,
    })
}
