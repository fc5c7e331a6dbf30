//! The operator-facing `Workflows` service.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_server::Workflows;
use paygrid_telemetry::context::TraceParent;
use paygrid_telemetry::redact::redact_text;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::model::WorkflowId;
use crate::runtime::{Handle, Input, ListQuery, Submission, SubmitRejection, now_ms};
use crate::scheduler::{NewWorkflow, SubmitError};
use crate::spec::{CompiledSpec, SkillCatalog, SpecErrors, SpecLimits, compile};

/// Compiled specs by content hash and by `name@version`, and the output fields of every
/// registered skill. Bounded: the cache is cleared when it passes `specs_max`.
pub struct SpecRegistry {
    by_hash: Mutex<HashMap<String, Arc<CompiledSpec>>>,
    by_name: Mutex<HashMap<String, Arc<CompiledSpec>>>,
    outputs: RwLock<HashMap<String, Vec<String>>>,
    specs_max: usize,
    pub limits: SpecLimits,
}

impl SpecRegistry {
    pub fn new(limits: SpecLimits) -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            by_name: Mutex::new(HashMap::new()),
            outputs: RwLock::new(HashMap::new()),
            specs_max: 4_096,
            limits,
        }
    }

    /// Compiles (or finds) a spec and remembers it under `name@version`.
    pub fn compile(&self, text: &str) -> Result<Arc<CompiledSpec>, SpecErrors> {
        let hash = crate::spec::content_hash(text);
        if let Some(spec) = lock(&self.by_hash).get(&hash).filter(|s| &*s.text == text) {
            return Ok(spec.clone());
        }
        let spec = Arc::new(compile(text, &self.limits)?);
        let mut by_hash = lock(&self.by_hash);
        if by_hash.len() >= self.specs_max {
            by_hash.clear();
        }
        by_hash.insert(hash, spec.clone());
        drop(by_hash);
        let mut by_name = lock(&self.by_name);
        if by_name.len() >= self.specs_max {
            by_name.clear();
        }
        by_name.insert(format!("{}@{}", spec.name, spec.version), spec.clone());
        Ok(spec)
    }

    pub fn by_ref(&self, reference: &str) -> Option<Arc<CompiledSpec>> {
        lock(&self.by_name).get(reference).cloned()
    }

    /// Records the output fields of a registered agent's skills.
    pub fn learn_skill(&self, skill: &str, output_schema_json: &str) {
        let Ok(schema) = serde_json::from_str::<serde_json::Value>(output_schema_json) else {
            return;
        };
        let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        let fields = properties.keys().cloned().collect();
        if let Ok(mut outputs) = self.outputs.write() {
            outputs.insert(skill.to_owned(), fields);
        }
    }
}

impl SkillCatalog for SpecRegistry {
    fn output_fields(&self, skill: &str) -> Option<Vec<String>> {
        self.outputs.read().ok()?.get(skill).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct WorkflowsService {
    handle: Handle,
    registry: Arc<SpecRegistry>,
    store: Option<Arc<dyn crate::store::Store>>,
}

impl WorkflowsService {
    pub fn new(
        handle: Handle,
        registry: Arc<SpecRegistry>,
        store: Option<Arc<dyn crate::store::Store>>,
    ) -> Self {
        Self {
            handle,
            registry,
            store,
        }
    }

    /// A terminal workflow no longer kept in memory, read from the store.
    async fn stored(&self, id: WorkflowId) -> Result<Option<pb::Workflow>, Status> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some((snapshot, text)) = store
            .load(id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        else {
            return Ok(None);
        };
        let spec = self
            .registry
            .compile(&text)
            .map_err(|e| Status::internal(format!("stored spec: {e}")))?;
        let mut scratch =
            crate::scheduler::Scheduler::new(crate::scheduler::SchedulerConfig::default());
        let mut out = Vec::new();
        let id = scratch
            .restore(now_ms(), snapshot, spec, &[], &mut out)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(scratch
            .workflow(id)
            .map(|w| convert::workflow_to_pb(w, &scratch)))
    }
}

fn invalid(errors: &SpecErrors) -> Status {
    Status::invalid_argument(format!("invalid workflow spec:\n{errors}"))
}

/// What makes two submissions "the same" for an idempotency key: SHA-256 over a
/// canonical form of spec hash, input (JSON with sorted keys), priority and labels,
/// truncated to 64 bits. Fixed by its definition, so a key stored by one release is
/// recognised by the next (`std`'s `DefaultHasher` may change between releases).
pub fn fingerprint(
    spec_hash: &str,
    input: &serde_json::Value,
    priority: crate::model::Priority,
    labels: &BTreeMap<String, String>,
) -> u64 {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(spec_hash.as_bytes());
    // serde_json's maps are sorted by key: `to_string` is canonical.
    field(input.to_string().as_bytes());
    field(priority.as_str().as_bytes());
    for (key, value) in labels {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn parse_id(text: &str) -> Result<WorkflowId, Status> {
    text.parse().map_err(Status::invalid_argument)
}

fn parse_input(text: &str, limits: &SpecLimits) -> Result<serde_json::Value, Status> {
    if text.len() > limits.input_bytes_max {
        return Err(Status::invalid_argument(format!(
            "input is {} bytes; the limit is {}",
            text.len(),
            limits.input_bytes_max
        )));
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("input is not valid JSON: {e}")))
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
        let (traceparent, trace_parent_span, tracestate) = workflow_trace(request.metadata());
        let request = request.into_inner();
        let spec = match request.spec {
            Some(pb::submit_request::Spec::SpecText(text)) => {
                self.registry.compile(&text).map_err(|e| invalid(&e))?
            }
            Some(pb::submit_request::Spec::SpecRef(reference)) => {
                self.registry.by_ref(&reference).ok_or_else(|| {
                    Status::not_found(format!(
                        "no spec `{reference}` was submitted to this control unit; send spec_text"
                    ))
                })?
            }
            None => {
                return Err(Status::invalid_argument(
                    "spec_text or spec_ref is required",
                ));
            }
        };
        let output_errors = spec.check_outputs(self.registry.as_ref());
        if !output_errors.is_empty() {
            return Err(invalid(&SpecErrors(output_errors)));
        }
        let mut input = parse_input(&request.input_json, &self.registry.limits)?;
        // Inputs carry tokens, not card data: anything that looks like a card number is
        // masked and CVVs replaced before the workflow is stored, dispatched or shown.
        if paygrid_telemetry::redact::redact_json(&mut input) {
            tracing::warn!("workflow input held card data; it was masked before storing");
        }
        let input = spec
            .check_input(&input, &self.registry.limits)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "input does not match spec {}@{}:\n{e}",
                    spec.name, spec.version
                ))
            })?;
        let priority = convert::priority_from_pb(request.priority)
            .map_err(Status::invalid_argument)?
            .unwrap_or(spec.priority);
        // Labels are shown and stored like inputs: no card data in them either.
        let labels: BTreeMap<String, String> = request
            .labels
            .into_iter()
            .map(|(key, value)| (redact_text(&key), redact_text(&value)))
            .collect();
        let key = Some(request.idempotency_key).filter(|k| !k.is_empty());
        let submission = Submission {
            fingerprint: fingerprint(&spec.hash, &input, priority, &labels),
            new: NewWorkflow {
                id: WorkflowId::generate(now_ms()),
                spec,
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
            .ask(|reply| Input::Submit {
                submission: Box::new(submission),
                reply,
            })
            .await?
            .map_err(|rejection| match rejection {
                SubmitRejection::Scheduler(SubmitError::Overloaded { .. }) => {
                    Status::resource_exhausted(rejection.to_string())
                }
                SubmitRejection::Scheduler(SubmitError::Duplicate(_)) => {
                    Status::already_exists(rejection.to_string())
                }
                SubmitRejection::KeyReused { .. } => Status::already_exists(rejection.to_string()),
            })?;
        let status = match submitted.status {
            Some(status) => convert::workflow_status_to_pb(status),
            // The workflow left memory: its real status is in the store.
            None => self
                .stored(submitted.id)
                .await?
                .and_then(|w| pb::WorkflowStatus::try_from(w.status).ok())
                .ok_or_else(|| {
                    Status::internal(format!(
                        "workflow {} of this idempotency key is neither in memory nor in the store",
                        submitted.id
                    ))
                })?,
        };
        Ok(Response::new(pb::SubmitResponse {
            workflow_id: submitted.id.to_string(),
            created: submitted.created,
            status: status.into(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let id = parse_id(&request.into_inner().workflow_id)?;
        let workflow = match self.handle.ask(|reply| Input::Get { id, reply }).await? {
            Some(workflow) => Some(workflow),
            None => self.stored(id).await?,
        };
        workflow
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("workflow {id} not found")))
    }

    async fn list(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let request = request.into_inner();
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
        let (page_size, status, name, labels) = (
            query.page_size,
            query.status,
            query.name.clone(),
            query.labels.clone(),
        );
        let memory = self
            .handle
            .ask(|reply| Input::List { query, reply })
            .await?;
        let Some(store) = &self.store else {
            return Ok(Response::new(memory));
        };
        // Terminal workflows no longer in memory are still listable until retention
        // prunes them: merge the store's page with memory's (memory wins), up to the
        // first point where either source may have more.
        let stored = store
            .list(crate::store::ListQuery {
                after,
                status,
                name,
                limit: page_size,
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut boundary: Option<String> = None;
        if stored.len() == page_size {
            boundary = stored.last().map(|s| s.id.clone());
        }
        if !memory.next_page_token.is_empty() {
            let last = memory.workflows.last().map(|w| w.workflow_id.clone());
            boundary = match (boundary, last) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let within = |id: &str| boundary.as_deref().is_none_or(|b| id <= b);
        let mut merged: BTreeMap<String, pb::WorkflowSummary> = BTreeMap::new();
        for snapshot in stored.iter().filter(|s| within(&s.id)) {
            if labels
                .iter()
                .all(|(k, v)| snapshot.labels.get(k) == Some(v))
            {
                merged.insert(
                    snapshot.id.clone(),
                    convert::summary_from_snapshot(snapshot),
                );
            }
        }
        for summary in memory
            .workflows
            .into_iter()
            .filter(|w| within(&w.workflow_id))
        {
            merged.insert(summary.workflow_id.clone(), summary);
        }
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: merged.into_values().collect(),
            next_page_token: boundary.unwrap_or_default(),
        }))
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
        let status = self
            .handle
            .ask(|reply| Input::Cancel { id, reason, reply })
            .await?
            .map_err(|e| Status::not_found(e.to_string()))?;
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
        let (sender, receiver) = tokio::sync::mpsc::channel(1_024);
        self.handle
            .ask(|reply| Input::Watch { id, sender, reply })
            .await??;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let request = request.into_inner();
        let compiled = compile(&request.spec_text, &self.registry.limits);
        let mut response = pb::ValidateResponse::default();
        let mut errors = Vec::new();
        match compiled {
            Ok(spec) => {
                response.name = spec.name.clone();
                response.version = spec.version;
                response.task_count = spec.tasks.len() as u32;
                errors.extend(spec.check_outputs(self.registry.as_ref()));
                if !request.input_json.is_empty() {
                    let input = parse_input(&request.input_json, &self.registry.limits)?;
                    if let Err(input_errors) = spec.check_input(&input, &self.registry.limits) {
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
