//! The operator-facing `Workflows` service: protobuf in, domain calls to the actor and
//! the catalog, protobuf out. Errors are `ControlError`s, turned into status codes by
//! `service::status`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_server::Workflows;
use paygrid_telemetry::context::TraceParent;
use paygrid_telemetry::redact::redact_text;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert;
use crate::catalog::Catalog;
use crate::cluster::forward::{EventStream, Forwarder, Owner};
use crate::error::ControlError;
use crate::model::{Decision, WorkflowId, WorkflowStatus};
use crate::runtime::{Handle, Input, Submission, now_ms};
use crate::scheduler::NewWorkflow;
use crate::scheduler::approvals::{ApprovalError, DecisionBy};
use crate::spec::{SpecErrors, SpecLimits, compile};
use crate::views::ListQuery;

#[derive(Clone)]
pub struct WorkflowsService {
    pub(super) handle: Handle,
    pub(super) catalog: Arc<Catalog>,
    /// Events buffered per watcher.
    pub(super) watch_buffer: usize,
    /// In a cluster: new workflows get ids in partitions this control unit owns, and
    /// calls about other members' workflows go to their owners.
    cluster: Option<Arc<Forwarder>>,
}

impl WorkflowsService {
    pub fn new(handle: Handle, catalog: Arc<Catalog>, watch_buffer: usize) -> Self {
        Self {
            handle,
            catalog,
            watch_buffer,
            cluster: None,
        }
    }

    /// In a cluster: the owner of workflow `id`, when it is another member.
    pub(super) fn owner_of(&self, id: WorkflowId) -> Result<Option<Owner>, ControlError> {
        match &self.cluster {
            None => Ok(None),
            Some(cluster) => cluster.route(&id),
        }
    }

    pub fn with_cluster(mut self, cluster: Option<Arc<Forwarder>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// `Submit`, for callers inside the control unit (tool calls).
    pub async fn submit_request(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<pb::SubmitResponse, ControlError> {
        WorkflowsService::submit(self, request).await
    }

    /// Returns when the workflow has ended (or has left memory, which only ended ones do).
    pub async fn wait_ended(&self, id: WorkflowId) {
        if let Ok(mut events) = self.events(id).await {
            // The stream ends at the workflow's terminal event.
            while events.next().await.is_some() {}
        }
    }

    /// Returns when the workflow has ended or waits for a person (an approval): the
    /// states where a blocking A2A `SendMessage` answers.
    pub async fn wait_ended_or_input(&self, id: WorkflowId) {
        use pb::workflow_event::Body;
        let Ok(mut events) = self.events(id).await else {
            return;
        };
        while let Some(Ok(event)) = events.next().await {
            let waits_for_input = match &event.body {
                Some(Body::Snapshot(workflow)) => workflow
                    .tasks
                    .iter()
                    .any(|task| task.approval.as_ref().is_some_and(|a| a.pending)),
                Some(Body::Task(task)) => {
                    task.status == pb::TaskStatus::Running as i32
                        && task
                            .detail
                            .starts_with(crate::scheduler::approvals::AWAITING)
                }
                _ => false,
            };
            if waits_for_input {
                return;
            }
        }
    }

    /// The workflow's events from now on (a snapshot first), as `Watch` streams them,
    /// from its owner wherever it runs in the cluster; the stream ends after its terminal
    /// event.
    pub async fn events(&self, id: WorkflowId) -> Result<EventStream, ControlError> {
        if let Some(owner) = self.owner_of(id)? {
            return owner.watch(id).await;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(self.watch_buffer);
        self.handle
            .ask(|reply| Input::Watch { id, sender, reply })
            .await??;
        Ok(Box::pin(
            ReceiverStream::new(receiver).map(|event| Ok(convert::event_to_pb(&event))),
        ))
    }

    /// `Cancel`, for the gRPC method and callers inside the control unit: the workflow's
    /// status after it.
    pub async fn cancel_workflow(
        &self,
        id: WorkflowId,
        reason: String,
    ) -> Result<WorkflowStatus, ControlError> {
        if let Some(owner) = self.owner_of(id)? {
            let answer = owner
                .cancel(pb::CancelWorkflowRequest {
                    workflow_id: id.to_string(),
                    reason,
                })
                .await?;
            return convert::workflow_status_from_pb(answer.status).ok_or_else(|| {
                ControlError::Internal(format!("the owner of {id} answered no status"))
            });
        }
        let record = crate::audit::record("cancel", id.to_string(), reason.clone());
        self.handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Cancel { id, reason, reply }),
            })
            .await?
    }

    /// A decision on an approval task (`task` `None`: the one the workflow waits for),
    /// for the gRPC method and callers inside the control unit (A2A). A workflow no
    /// longer in memory has ended: FAILED_PRECONDITION, not NOT_FOUND.
    pub async fn approve_workflow(
        &self,
        id: WorkflowId,
        task: Option<String>,
        decision: DecisionBy,
    ) -> Result<(String, WorkflowStatus), ControlError> {
        if decision.by.trim().is_empty() {
            return Err(ControlError::invalid(
                "decided_by is required: who takes the decision",
            ));
        }
        if decision.by.chars().count() > DECIDED_BY_MAX {
            return Err(ControlError::invalid(format!(
                "decided_by is longer than {DECIDED_BY_MAX} characters"
            )));
        }
        if decision.note.chars().count() > NOTE_MAX {
            return Err(ControlError::invalid(format!(
                "note is longer than {NOTE_MAX} characters"
            )));
        }
        if let Some(owner) = self.owner_of(id)? {
            let via = decision.via.clone();
            let answer = owner
                .approve(
                    pb::ApproveRequest {
                        workflow_id: id.to_string(),
                        task_id: task.unwrap_or_default(),
                        decision: match decision.decision {
                            Decision::Approve => pb::Decision::Approve,
                            Decision::Reject => pb::Decision::Reject,
                        }
                        .into(),
                        note: decision.note,
                        decided_by: decision.by,
                    },
                    &via,
                )
                .await?;
            let status = convert::workflow_status_from_pb(answer.status).ok_or_else(|| {
                ControlError::Internal(format!("the owner of {id} answered no status"))
            })?;
            return Ok((answer.task_id, status));
        }
        let record = crate::audit::record(
            "approve",
            id.to_string(),
            format!(
                "{} {} by {} via {}",
                decision.decision.as_str(),
                task.as_deref().unwrap_or("the waiting approval"),
                decision.by,
                decision.via
            ),
        );
        let result = self
            .handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Approve {
                    id,
                    task,
                    decision,
                    reply,
                }),
            })
            .await?;
        match result {
            Err(ControlError::Approval(ApprovalError::WorkflowNotFound(_)))
                if self.catalog.stored_workflow(id).await?.is_some() =>
            {
                Err(ControlError::Approval(ApprovalError::NotPending {
                    task: "(any)".into(),
                    state: format!("workflow {id} has ended"),
                }))
            }
            other => other,
        }
    }

    /// The workflow of an idempotency key (in a cluster, the key's partition owner knows
    /// it).
    async fn find_key(&self, key: &str) -> Result<WorkflowId, ControlError> {
        if let Some(cluster) = &self.cluster
            && let Some(owner) = cluster.route_key(key)?
        {
            return owner.find_key(key).await;
        }
        let key = key.to_owned();
        let found = self
            .handle
            .ask(|reply| Input::FindKey {
                key: key.clone(),
                reply,
            })
            .await?;
        found.ok_or_else(|| {
            ControlError::NotFound(format!(
                "no workflow was submitted with idempotency key `{key}`"
            ))
        })
    }

    /// `List`, as protobuf, for callers inside the control unit.
    pub async fn list_pb(
        &self,
        request: pb::ListWorkflowsRequest,
    ) -> Result<pb::ListWorkflowsResponse, ControlError> {
        WorkflowsService::list(self, request).await
    }

    /// `Get`, as protobuf, for callers inside the control unit.
    pub async fn get_pb(&self, id: WorkflowId) -> Result<pb::Workflow, ControlError> {
        let view = match self.handle.ask(|reply| Input::Get { id, reply }).await? {
            Some(view) => Some(view),
            None => self.catalog.stored_workflow(id).await?,
        };
        let view =
            view.ok_or_else(|| ControlError::NotFound(format!("workflow {id} not found")))?;
        Ok(convert::workflow_to_pb(&view))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<pb::SubmitResponse, ControlError> {
        // One member checks each idempotency key: its partition's owner takes the call.
        if let Some(cluster) = &self.cluster
            && !request.get_ref().idempotency_key.is_empty()
            && let Some(owner) = cluster.route_key(&request.get_ref().idempotency_key)?
        {
            let (metadata, _, message) = request.into_parts();
            return owner.submit(message, &metadata).await;
        }
        let (traceparent, trace_parent_span, tracestate) = workflow_trace(request.metadata());
        let request = request.into_inner();
        let spec = match request.spec {
            Some(pb::submit_request::Spec::SpecText(text)) => self.catalog.compile(&text).await?,
            Some(pb::submit_request::Spec::SpecRef(reference)) => {
                self.catalog.by_ref(&reference).await?
            }
            None => return Err(ControlError::invalid("spec_text or spec_ref is required")),
        };
        let output_errors = spec.check_outputs(self.catalog.as_ref());
        if !output_errors.is_empty() {
            return Err(ControlError::InvalidSpec(SpecErrors(output_errors)));
        }
        let mut input = parse_input(&request.input_json, &self.catalog.limits)?;
        // Inputs carry tokens, not card data: anything that looks like a card number is
        // masked and CVVs replaced before the workflow is stored, dispatched or shown.
        if paygrid_telemetry::redact::redact_json(&mut input) {
            tracing::warn!("workflow input held card data; it was masked before storing");
        }
        let input = spec
            .check_input(&input, &self.catalog.limits)
            .map_err(|e| {
                ControlError::invalid(format!(
                    "input does not match spec {}@{}:\n{e}",
                    spec.name, spec.version
                ))
            })?;
        let priority = convert::priority_from_pb(request.priority)
            .map_err(ControlError::InvalidArgument)?
            .unwrap_or(spec.priority);
        // Labels are shown and stored like inputs: no card data in them either.
        let labels: BTreeMap<String, String> = request
            .labels
            .into_iter()
            .map(|(key, value)| (redact_text(&key), redact_text(&value)))
            .collect();
        let key = Some(request.idempotency_key).filter(|k| !k.is_empty());
        let record = crate::audit::record(
            "submit",
            "",
            format!(
                "{}@{} priority {}{}",
                spec.name,
                spec.version,
                priority.as_str(),
                key.as_deref()
                    .map(|k| format!(" idempotency key {k}"))
                    .unwrap_or_default()
            ),
        );
        let submission = Submission {
            fingerprint: crate::runtime::fingerprint(&spec.hash, &input, priority, &labels),
            new: NewWorkflow {
                id: match &self.cluster {
                    None => WorkflowId::generate(now_ms()),
                    Some(cluster) => cluster
                        .ownership
                        .new_id(now_ms(), key.as_deref())
                        .map_err(ControlError::NotOwner)?,
                },
                spec: spec.clone(),
                input,
                priority,
                labels,
                idempotency_key: key,
                traceparent,
                trace_parent_span,
                tracestate,
            },
        };
        let submitted = self
            .handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Submit {
                    submission: Box::new(submission),
                    reply,
                }),
            })
            .await??;
        self.catalog.accepted(&spec);
        let status = match submitted.status {
            Some(status) => status,
            // The workflow left memory: its real status is in the store.
            None => self
                .catalog
                .stored_workflow(submitted.id)
                .await?
                .map(|view| view.workflow.status)
                .ok_or_else(|| {
                    ControlError::Internal(format!(
                        "workflow {} of this idempotency key is neither in memory nor in the store",
                        submitted.id
                    ))
                })?,
        };
        Ok(pb::SubmitResponse {
            workflow_id: submitted.id.to_string(),
            created: submitted.created,
            status: convert::workflow_status_to_pb(status).into(),
        })
    }

    async fn list(
        &self,
        request: pb::ListWorkflowsRequest,
    ) -> Result<pb::ListWorkflowsResponse, ControlError> {
        let after = Some(request.page_token)
            .filter(|t| !t.is_empty())
            .map(|t| parse_id(&t))
            .transpose()?;
        let query = ListQuery {
            status: convert::workflow_status_from_pb(request.status),
            name: Some(request.name).filter(|n| !n.is_empty()),
            labels: request.labels.into_iter().collect(),
            page_size: match request.page_size {
                0 => 100,
                n => n.min(1_000) as usize,
            },
            after,
        };
        let memory_query = query.clone();
        let memory = self
            .handle
            .ask(|reply| Input::List {
                query: memory_query,
                reply,
            })
            .await?;
        let page = self.catalog.list(&query, memory).await?;
        Ok(convert::page_to_pb(&page))
    }
}

pub(super) fn parse_id(text: &str) -> Result<WorkflowId, ControlError> {
    text.parse().map_err(ControlError::InvalidArgument)
}

fn parse_input(text: &str, limits: &SpecLimits) -> Result<serde_json::Value, ControlError> {
    if text.len() > limits.input_bytes_max {
        return Err(ControlError::invalid(format!(
            "input is {} bytes; the limit is {}",
            text.len(),
            limits.input_bytes_max
        )));
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(text)
        .map_err(|e| ControlError::invalid(format!("input is not valid JSON: {e}")))
}

/// The trace a new workflow's root span joins: the caller's, when the request carries a
/// W3C `traceparent` in its metadata (the root is then a child of the caller's span), or
/// a new one. Returns the root's traceparent, the caller's span id and the tracestate.
fn workflow_trace(metadata: &tonic::metadata::MetadataMap) -> (String, String, String) {
    let header = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let root = TraceParent::new_root();
    match TraceParent::parse(header("traceparent")) {
        Some(caller) => (
            caller.with_span(root.span_id).to_string(),
            caller.span_id.to_string(),
            header("tracestate").to_owned(),
        ),
        None => (root.to_string(), String::new(), String::new()),
    }
}

#[tonic::async_trait]
impl Workflows for WorkflowsService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        // The cheap checks first: nothing is compiled or parsed for an oversize request.
        // (Internal callers, tools and A2A, check what their callers gave at their edge.)
        let message = request.get_ref();
        check_labels_and_key(
            &message.labels,
            &message.idempotency_key,
            &self.catalog.limits,
        )?;
        Ok(Response::new(
            WorkflowsService::submit(self, request).await?,
        ))
    }

    async fn get(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let request = request.into_inner();
        let id = if request.workflow_id.is_empty() && !request.idempotency_key.is_empty() {
            self.find_key(&request.idempotency_key).await?
        } else {
            parse_id(&request.workflow_id)?
        };
        Ok(Response::new(self.get_pb(id).await?))
    }

    async fn list(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        Ok(Response::new(
            WorkflowsService::list(self, request.into_inner()).await?,
        ))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let request = request.into_inner();
        let id = parse_id(&request.workflow_id)?;
        let reason = if request.reason.is_empty() {
            "requested by operator".to_owned()
        } else {
            request.reason
        };
        let status = self.cancel_workflow(id, reason).await?;
        Ok(Response::new(pb::CancelWorkflowResponse {
            status: convert::workflow_status_to_pb(status).into(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WorkflowEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = parse_id(&request.into_inner().workflow_id)?;
        Ok(Response::new(self.events(id).await?))
    }

    type FollowStream = super::follow::FollowStream;

    async fn follow(
        &self,
        request: Request<tonic::Streaming<pb::FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        Ok(Response::new(self.follow_stream(request.into_inner())))
    }

    async fn get_spec(
        &self,
        request: Request<pb::GetSpecRequest>,
    ) -> Result<Response<pb::SpecInfo>, Status> {
        let reference = request.into_inner().spec_ref;
        let spec = self.catalog.by_ref(&reference).await?;
        Ok(Response::new(pb::SpecInfo {
            name: spec.name.clone(),
            version: spec.version,
            hash: spec.hash.clone(),
            description: spec.description.clone().unwrap_or_default(),
            text: redact_text(&spec.text),
        }))
    }

    async fn list_specs(
        &self,
        _request: Request<pb::ListSpecsRequest>,
    ) -> Result<Response<pb::ListSpecsResponse>, Status> {
        let specs = self
            .catalog
            .known_specs()
            .into_iter()
            .filter_map(|(reference, description)| {
                let (name, version) = reference.rsplit_once('@')?;
                Some(pb::SpecInfo {
                    name: name.to_owned(),
                    version: version.parse().ok()?,
                    description: description.unwrap_or_default(),
                    hash: self
                        .catalog
                        .cached(&reference)
                        .map(|s| s.hash.clone())
                        .unwrap_or_default(),
                    text: String::new(),
                })
            })
            .collect();
        Ok(Response::new(pb::ListSpecsResponse { specs }))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let via = client_name(request.metadata());
        // An authenticated caller decides as itself, whatever decided_by says.
        let proven = crate::audit::authenticated_name();
        let request = request.into_inner();
        let id = parse_id(&request.workflow_id)?;
        let decision = match pb::Decision::try_from(request.decision) {
            Ok(pb::Decision::Approve) => Decision::Approve,
            Ok(pb::Decision::Reject) => Decision::Reject,
            _ => {
                return Err(ControlError::invalid(
                    "decision is required: DECISION_APPROVE or DECISION_REJECT",
                )
                .into());
            }
        };
        let task = (!request.task_id.is_empty()).then_some(request.task_id);
        let decided_by = proven.unwrap_or(request.decided_by);
        let decision = DecisionBy {
            decision,
            by: decided_by.clone(),
            via,
            note: request.note,
        };
        let (task_id, status) = self.approve_workflow(id, task, decision).await?;
        Ok(Response::new(pb::ApproveResponse {
            task_id,
            status: convert::workflow_status_to_pb(status).into(),
            decided_by,
        }))
    }

    async fn pause(
        &self,
        request: Request<pb::OperateRequest>,
    ) -> Result<Response<pb::OperateResponse>, Status> {
        Ok(Response::new(
            self.operate_pb("pause", request.into_inner()).await?,
        ))
    }

    async fn resume(
        &self,
        request: Request<pb::OperateRequest>,
    ) -> Result<Response<pb::OperateResponse>, Status> {
        Ok(Response::new(
            self.operate_pb("resume", request.into_inner()).await?,
        ))
    }

    async fn retry_task(
        &self,
        request: Request<pb::OperateRequest>,
    ) -> Result<Response<pb::OperateResponse>, Status> {
        Ok(Response::new(
            self.operate_pb("retry", request.into_inner()).await?,
        ))
    }

    async fn redrive(
        &self,
        request: Request<pb::OperateRequest>,
    ) -> Result<Response<pb::OperateResponse>, Status> {
        Ok(Response::new(
            self.operate_pb("redrive", request.into_inner()).await?,
        ))
    }

    async fn bulk_operate(
        &self,
        request: Request<pb::BulkOperateRequest>,
    ) -> Result<Response<pb::BulkOperateResponse>, Status> {
        Ok(Response::new(self.bulk_pb(request.into_inner()).await?))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let request = request.into_inner();
        let filter = |text: String| Some(text).filter(|t| !t.is_empty());
        let query = crate::audit::AuditQuery {
            actor: filter(request.actor),
            action: filter(request.action),
            target: filter(request.target),
            before: Some(request.before_sequence).filter(|b| *b > 0),
            limit: match request.limit {
                0 => 100,
                n => n.min(1_000) as usize,
            },
        };
        let records = match self.catalog.store() {
            Some(store) => store.audit(query).await.map_err(ControlError::from)?,
            None => {
                self.handle
                    .ask(|reply| Input::ListAudit { query, reply })
                    .await?
            }
        };
        Ok(Response::new(pb::ListAuditResponse {
            entries: records
                .into_iter()
                .map(|r| pb::AuditEntry {
                    sequence: r.sequence,
                    at_unix_ms: r.at_ms as i64,
                    actor: r.actor,
                    proof: r.proof,
                    role: r.role,
                    origin: r.origin,
                    action: r.action,
                    target: r.target,
                    detail: r.detail,
                    outcome: r.outcome,
                })
                .collect(),
        }))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let request = request.into_inner();
        let compiled = compile(&request.spec_text, &self.catalog.limits);
        let mut response = pb::ValidateResponse::default();
        let mut errors = Vec::new();
        match compiled {
            Ok(spec) => {
                response.name = spec.name.clone();
                response.version = spec.version;
                response.task_count = spec.tasks.len() as u32;
                errors.extend(spec.check_outputs(self.catalog.as_ref()));
                if !request.input_json.is_empty() {
                    let input = parse_input(&request.input_json, &self.catalog.limits)
                        .map_err(Status::from)?;
                    if let Err(input_errors) = spec.check_input(&input, &self.catalog.limits) {
                        errors.extend(input_errors.0);
                    }
                }
            }
            Err(spec_errors) => errors.extend(spec_errors.0),
        }
        response.valid = errors.is_empty();
        response.errors = errors
            .into_iter()
            .map(|e| pb::ValidationError {
                message: e.message,
                task_id: e.task.unwrap_or_default(),
                line: e.position.map_or(0, |p| p.line),
                column: e.position.map_or(0, |p| p.column),
            })
            .collect();
        Ok(Response::new(response))
    }
}

/// Longest `decided_by` accepted.
const DECIDED_BY_MAX: usize = 128;
/// Longest approval note accepted.
pub(super) const NOTE_MAX: usize = 2_000;

/// The client a call came through, from its `paygrid-client` metadata (`cli`, `mcp`),
/// else `grpc`: recorded with a decision.
fn client_name(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("paygrid-client")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 16
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map_or_else(|| "grpc".to_owned(), str::to_ascii_lowercase)
}

/// Labels and idempotency key within their limits, or `INVALID_ARGUMENT` naming the limit.
pub(crate) fn check_labels_and_key(
    labels: &std::collections::HashMap<String, String>,
    key: &str,
    limits: &SpecLimits,
) -> Result<(), ControlError> {
    if key.len() > limits.idempotency_key_bytes_max {
        return Err(ControlError::invalid(format!(
            "idempotency_key is {} bytes; the limit is {}",
            key.len(),
            limits.idempotency_key_bytes_max
        )));
    }
    if labels.len() > limits.labels_max {
        return Err(ControlError::invalid(format!(
            "{} labels; the limit is {}",
            labels.len(),
            limits.labels_max
        )));
    }
    for (name, value) in labels {
        if name.is_empty() || name.len() > limits.label_key_bytes_max {
            let shown: String = name.chars().take(40).collect();
            return Err(ControlError::invalid(format!(
                "label key `{shown}` is {} bytes; keys are 1 to {} bytes",
                name.len(),
                limits.label_key_bytes_max
            )));
        }
        if value.len() > limits.label_value_bytes_max {
            return Err(ControlError::invalid(format!(
                "label `{name}` has a value of {} bytes; the limit is {}",
                value.len(),
                limits.label_value_bytes_max
            )));
        }
    }
    Ok(())
}
