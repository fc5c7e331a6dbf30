//! The actor that owns the scheduler core. gRPC handlers talk to it over one bounded
//! channel; it drains inputs in batches, runs the core, then flushes one frame per agent
//! and the state changes to watchers. Nothing here holds a lock across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paygrid_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::model::{AgentId, WorkflowId, WorkflowStatus};
use crate::scheduler::{
    AgentEvent, CancelError, Change, Command, NewWorkflow, Record, Scheduler, SchedulerConfig,
    SubmitError,
};
use crate::service::convert;
use crate::spec::{CompiledSpec, SpecLimits};
use crate::store::{Batch, EventWrite, Store, StoreError, WorkflowWrite};

/// How long a registration may wait for its session.
const REGISTRATION_TTL_MS: u64 = 60_000;

/// Wall-clock unix milliseconds: the only clock the control unit reads.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runtime limits.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub scheduler: SchedulerConfig,
    /// Capacity of the actor's input channel.
    pub inputs_max: usize,
    /// Inputs drained per wake-up.
    pub batch_max: usize,
    /// Events buffered per watcher before it is dropped as too slow.
    pub watch_buffer: usize,
    /// Watchers per workflow.
    pub watchers_per_workflow_max: usize,
    /// Frames buffered per agent session beyond its concurrency.
    pub session_buffer: usize,
    pub heartbeat_interval: Duration,
    /// Extra time the actor waits for more inputs before a group commit when the batch is
    /// not full (zero: commit as soon as the previous commit is done).
    pub flush_interval: Duration,
    /// Where the control unit's metrics go (served by `--metrics-addr`).
    pub metrics: Arc<paygrid_telemetry::metrics::Registry>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            inputs_max: 16_384,
            batch_max: 1_024,
            watch_buffer: 1_024,
            watchers_per_workflow_max: 64,
            session_buffer: 256,
            heartbeat_interval: Duration::from_secs(2),
            flush_interval: Duration::ZERO,
            metrics: paygrid_telemetry::metrics::Registry::new(),
        }
    }
}

pub type SessionSender = mpsc::Sender<Result<pb::ControlMessage, Status>>;
pub type WatchSender = mpsc::Sender<Result<pb::WorkflowEvent, Status>>;

/// A submission after validation.
pub struct Submission {
    pub new: NewWorkflow,
    /// Fingerprint of spec + input + priority + labels, for idempotency-key reuse
    /// checks (see `service::workflows::fingerprint`).
    pub fingerprint: u64,
}

/// What a successful submit returns.
pub struct Submitted {
    pub id: WorkflowId,
    pub created: bool,
    /// `None` for an existing workflow no longer kept in memory: read it from the store.
    pub status: Option<WorkflowStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitRejection {
    #[error(transparent)]
    Scheduler(#[from] SubmitError),
    #[error(
        "idempotency key `{key}` was used for workflow {existing} with a different spec or input"
    )]
    KeyReused { key: String, existing: WorkflowId },
}

/// Filters of a `List` call.
pub struct ListQuery {
    pub status: Option<WorkflowStatus>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub page_size: usize,
    pub after: Option<WorkflowId>,
}

pub enum Input {
    Submit {
        submission: Box<Submission>,
        reply: oneshot::Sender<Result<Submitted, SubmitRejection>>,
    },
    Cancel {
        id: WorkflowId,
        reason: String,
        reply: oneshot::Sender<Result<WorkflowStatus, CancelError>>,
    },
    Get {
        id: WorkflowId,
        reply: oneshot::Sender<Option<pb::Workflow>>,
    },
    List {
        query: ListQuery,
        reply: oneshot::Sender<pb::ListWorkflowsResponse>,
    },
    Watch {
        id: WorkflowId,
        sender: WatchSender,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Register {
        card: pb::AgentCard,
        execution_unit: String,
        reply: oneshot::Sender<pb::RegisterResponse>,
    },
    OpenSession {
        agent: AgentId,
        token: String,
        sender: SessionSender,
        reply: oneshot::Sender<Result<u64, Status>>,
    },
    CloseSession {
        agent: AgentId,
        session: u64,
    },
    Agent(Vec<AgentEvent>),
    /// Health reports relayed by a telemetry (support) agent.
    HealthReports {
        agent: AgentId,
        reports: Vec<pb::HealthReport>,
    },
    /// The live health view.
    HealthView {
        reply: oneshot::Sender<Vec<pb::HealthEntry>>,
    },
    /// Idempotency keys of workflows pruned from the store.
    ForgetKeys(Vec<String>),
    /// Refresh the gauges computed on demand, before a scrape.
    Metrics {
        reply: oneshot::Sender<()>,
    },
    ListAgents {
        skill: Option<String>,
        reply: oneshot::Sender<Vec<pb::AgentInfo>>,
    },
}

/// A cheap handle to the actor.
#[derive(Clone)]
pub struct Handle {
    inputs: mpsc::Sender<Input>,
}

impl Handle {
    /// Sends an input; `UNAVAILABLE` once the control unit is shutting down.
    pub async fn send(&self, input: Input) -> Result<(), Status> {
        self.inputs
            .send(input)
            .await
            .map_err(|_| Status::unavailable("control unit is shutting down"))
    }

    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Input,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer
            .await
            .map_err(|_| Status::unavailable("control unit is shutting down"))
    }
}

struct AgentRecord {
    card: pb::AgentCard,
    execution_unit: String,
    token: String,
    registered_at: u64,
    session: Option<(u64, SessionSender)>,
}

struct Actor {
    core: Scheduler,
    config: RuntimeConfig,
    agents: HashMap<AgentId, AgentRecord>,
    agent_counter: u64,
    session_counter: u64,
    watchers: HashMap<WorkflowId, Vec<WatchSender>>,
    idempotency: HashMap<String, (WorkflowId, u64)>,
    sequence: u64,
    out: Vec<Command>,
    store: Option<Arc<dyn Store>>,
    /// Answers held until the batch that produced them is durable.
    replies: Vec<Reply>,
    /// Spec hashes already in the store.
    stored_specs: std::collections::HashSet<String>,
    /// The live health view, per (kind, subject), as telemetry agents report it.
    /// Keyed by (kind, subject, reporting unit): units sharing a gateway or a skill each
    /// keep their own view.
    health: BTreeMap<(String, String, String), pb::HealthEntry>,
    /// Workflow, task and attempt spans, exported as the history ends them.
    spans: crate::traces::SpanRecorder,
}

/// An answer held until the group commit.
enum Reply {
    Submit(
        oneshot::Sender<Result<Submitted, SubmitRejection>>,
        Result<Submitted, SubmitRejection>,
    ),
    Cancel(
        oneshot::Sender<Result<WorkflowStatus, CancelError>>,
        Result<WorkflowStatus, CancelError>,
    ),
}

impl Reply {
    fn send(self) {
        match self {
            Self::Submit(reply, result) => {
                let _ = reply.send(result);
            }
            Self::Cancel(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// Starts the actor after recovering every stored workflow; it stops when every
/// [`Handle`] is dropped or `shutdown` fires.
pub async fn start(
    config: RuntimeConfig,
    store: Option<Arc<dyn Store>>,
    shutdown: CancellationToken,
) -> Result<(Handle, tokio::task::JoinHandle<()>), StoreError> {
    let (inputs, receiver) = mpsc::channel(config.inputs_max);
    let mut actor = Actor {
        core: Scheduler::new(config.scheduler.clone()),
        config,
        agents: HashMap::new(),
        agent_counter: 0,
        session_counter: 0,
        watchers: HashMap::new(),
        idempotency: HashMap::new(),
        sequence: 0,
        out: Vec::with_capacity(1024),
        store,
        replies: Vec::new(),
        stored_specs: std::collections::HashSet::new(),
        spans: crate::traces::SpanRecorder::default(),
        health: BTreeMap::new(),
    };
    actor.recover().await?;
    let task = tokio::spawn(actor.run(receiver, shutdown));
    Ok((Handle { inputs }, task))
}

impl Actor {
    async fn run(mut self, mut receiver: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.config.batch_max);
        loop {
            let deadline = self
                .core
                .next_deadline()
                .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                received = receiver.recv_many(&mut batch, self.config.batch_max) => {
                    if received == 0 {
                        break;
                    }
                    if !self.config.flush_interval.is_zero() && batch.len() < self.config.batch_max {
                        let wait = tokio::time::sleep(self.config.flush_interval);
                        tokio::pin!(wait);
                        while batch.len() < self.config.batch_max {
                            let room = self.config.batch_max - batch.len();
                            tokio::select! {
                                more = receiver.recv_many(&mut batch, room) => if more == 0 { break },
                                () = &mut wait => break,
                            }
                        }
                    }
                    for input in batch.drain(..) {
                        self.input(input);
                    }
                }
                () = sleep_until(deadline) => {
                    let mut out = std::mem::take(&mut self.out);
                    self.core.tick(now_ms(), &mut out);
                    self.out = out;
                }
                () = shutdown.cancelled() => break,
            }
            if let Err(error) = self.flush().await {
                // Nothing from this batch was acknowledged or sent. Crash-only: stop, and
                // let the next start recover from the last durable commit.
                tracing::error!(%error, "group commit failed; stopping the control unit");
                std::process::exit(70);
            }
        }
        tracing::info!("scheduler stopped");
    }

    fn input(&mut self, input: Input) {
        let now = now_ms();
        let mut out = std::mem::take(&mut self.out);
        match input {
            Input::Submit { submission, reply } => {
                let result = self.submit(now, *submission, &mut out);
                self.replies.push(Reply::Submit(reply, result));
            }
            Input::Cancel { id, reason, reply } => {
                let result = self.core.cancel(now, id, &reason, &mut out);
                self.replies.push(Reply::Cancel(reply, result));
            }
            Input::Get { id, reply } => {
                let _ = reply.send(
                    self.core
                        .workflow(id)
                        .map(|w| convert::workflow_to_pb(w, &self.core)),
                );
            }
            Input::List { query, reply } => {
                let _ = reply.send(self.list(&query));
            }
            Input::Watch { id, sender, reply } => {
                let _ = reply.send(self.watch(id, sender));
            }
            Input::Register {
                card,
                execution_unit,
                reply,
            } => {
                let _ = reply.send(self.register(now, card, execution_unit));
            }
            Input::OpenSession {
                agent,
                token,
                sender,
                reply,
            } => {
                let _ = reply.send(self.open_session(now, agent, &token, sender, &mut out));
            }
            Input::CloseSession { agent, session } => {
                let current = self
                    .agents
                    .get(&agent)
                    .and_then(|a| a.session.as_ref())
                    .map(|(s, _)| *s);
                if current == Some(session) {
                    self.agents.remove(&agent);
                    self.core.handle(
                        now,
                        AgentEvent::Left {
                            agent: agent.clone(),
                        },
                        &mut out,
                    );
                    tracing::info!(agent = %agent, "agent session closed");
                }
            }
            Input::Agent(events) => {
                for event in events {
                    self.core.handle(now, event, &mut out);
                }
            }
            Input::HealthReports { agent, reports } => self.health_reports(now, &agent, reports),
            Input::HealthView { reply } => {
                let _ = reply.send(self.health.values().cloned().collect());
            }
            Input::ForgetKeys(keys) => {
                for key in keys {
                    self.idempotency.remove(&key);
                }
            }
            Input::Metrics { reply } => {
                self.refresh_gauges();
                let _ = reply.send(());
            }
            Input::ListAgents { skill, reply } => {
                let _ = reply.send(self.list_agents(skill.as_deref()));
            }
        }
        self.out = out;
    }

    fn submit(
        &mut self,
        now: u64,
        submission: Submission,
        out: &mut Vec<crate::scheduler::Command>,
    ) -> Result<Submitted, SubmitRejection> {
        let key = submission.new.idempotency_key.clone();
        if let Some(key) = &key
            && let Some((existing, fingerprint)) = self.idempotency.get(key)
        {
            if *fingerprint != submission.fingerprint {
                return Err(SubmitRejection::KeyReused {
                    key: key.clone(),
                    existing: *existing,
                });
            }
            let status = self.core.workflow(*existing).map(|w| w.status);
            return Ok(Submitted {
                id: *existing,
                created: false,
                status,
            });
        }
        let id = submission.new.id;
        self.core.submit(now, submission.new, out)?;
        if let Some(key) = key {
            self.idempotency.insert(key, (id, submission.fingerprint));
        }
        tracing::debug!(workflow = %id, "workflow submitted");
        Ok(Submitted {
            id,
            created: true,
            status: Some(WorkflowStatus::Running),
        })
    }

    fn list(&self, query: &ListQuery) -> pb::ListWorkflowsResponse {
        let mut workflows = Vec::new();
        let mut last = None;
        for workflow in self.core.workflows_after(query.after) {
            if query.status.is_some_and(|s| s != workflow.status)
                || query
                    .name
                    .as_ref()
                    .is_some_and(|n| *n != workflow.spec.name)
                || !query
                    .labels
                    .iter()
                    .all(|(k, v)| workflow.labels.get(k) == Some(v))
            {
                continue;
            }
            if workflows.len() == query.page_size {
                break;
            }
            workflows.push(convert::summary_to_pb(workflow));
            last = Some(workflow.id);
        }
        let next_page_token = if workflows.len() == query.page_size {
            last.map(|id| id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        pb::ListWorkflowsResponse {
            workflows,
            next_page_token,
        }
    }

    fn watch(&mut self, id: WorkflowId, sender: WatchSender) -> Result<(), Status> {
        let workflow = self
            .core
            .workflow(id)
            .ok_or_else(|| Status::not_found(format!("workflow {id} not found")))?;
        let snapshot = pb::WorkflowEvent {
            workflow_id: id.to_string(),
            sequence: self.sequence,
            at_ms: now_ms() as i64,
            body: Some(pb::workflow_event::Body::Snapshot(convert::workflow_to_pb(
                workflow, &self.core,
            ))),
        };
        let terminal = workflow.status.is_terminal();
        sender
            .try_send(Ok(snapshot))
            .map_err(|_| Status::resource_exhausted("watch stream closed"))?;
        if terminal {
            return Ok(()); // the snapshot is the whole story; dropping the sender ends the stream
        }
        let watchers = self.watchers.entry(id).or_default();
        watchers.retain(|w| !w.is_closed());
        if watchers.len() >= self.config.watchers_per_workflow_max {
            return Err(Status::resource_exhausted(format!(
                "workflow {id} has {} watchers, the limit",
                watchers.len()
            )));
        }
        watchers.push(sender);
        Ok(())
    }

    fn register(
        &mut self,
        now: u64,
        card: pb::AgentCard,
        execution_unit: String,
    ) -> pb::RegisterResponse {
        // A registration whose session never opened (the agent retried, or died first)
        // expires, so repeated reconnects cannot grow the agent map without bound.
        self.agents.retain(|_, record| {
            record.session.is_some()
                || now.saturating_sub(record.registered_at) < REGISTRATION_TTL_MS
        });
        self.agent_counter += 1;
        let agent = AgentId(format!("{}-{}", card.name, self.agent_counter).into());
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        tracing::info!(agent = %agent, execution_unit, skills = card.skills.len(), "agent registered");
        self.agents.insert(
            agent.clone(),
            AgentRecord {
                card,
                execution_unit,
                token: token.clone(),
                registered_at: now,
                session: None,
            },
        );
        pb::RegisterResponse {
            agent_id: agent.to_string(),
            session_token: token,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: self.config.scheduler.lease_ttl.as_millis() as u32,
        }
    }

    fn open_session(
        &mut self,
        now: u64,
        agent: AgentId,
        token: &str,
        sender: SessionSender,
        out: &mut Vec<Command>,
    ) -> Result<u64, Status> {
        let record = self.agents.get_mut(&agent).ok_or_else(|| {
            Status::not_found(format!(
                "agent {agent} is not registered: call Register first"
            ))
        })?;
        if record.token != token {
            return Err(Status::unauthenticated(format!(
                "wrong session token for agent {agent}"
            )));
        }
        if record.session.is_some() {
            return Err(Status::already_exists(format!(
                "agent {agent} already has a session"
            )));
        }
        self.session_counter += 1;
        let session = self.session_counter;
        record.session = Some((session, sender));
        let card = &record.card;
        self.core.handle(
            now,
            AgentEvent::Joined {
                agent: agent.clone(),
                skills: card
                    .skills
                    .iter()
                    .map(|s| Arc::from(s.name.as_str()))
                    .collect(),
                labels: card
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                max_concurrency: card.max_concurrency.max(1),
            },
            out,
        );
        self.config.metrics.count(
            "paygrid_agent_sessions_opened_total",
            "Agent sessions opened.",
            &[],
            1,
        );
        tracing::info!(agent = %agent, "agent session opened");
        Ok(session)
    }

    fn list_agents(&self, skill: Option<&str>) -> Vec<pb::AgentInfo> {
        let mut agents: Vec<pb::AgentInfo> = self
            .agents
            .iter()
            .filter(|(_, r)| skill.is_none_or(|s| r.card.skills.iter().any(|k| k.name == s)))
            .map(|(id, record)| {
                let slot = self.core.agent(id);
                pb::AgentInfo {
                    agent_id: id.to_string(),
                    card: Some(record.card.clone()),
                    execution_unit: record.execution_unit.clone(),
                    connected: record.session.is_some(),
                    inflight: slot.map_or(0, |s| s.assigned.len() as u32),
                    credits: slot.map_or(0, |s| s.credits),
                    draining: slot.is_some_and(|s| s.draining),
                    registered_at_ms: record.registered_at as i64,
                    tasks_completed: slot.map_or(0, |s| s.completed),
                    health: self
                        .health
                        .get(&(
                            "agent".to_owned(),
                            record.card.name.clone(),
                            record.execution_unit.clone(),
                        ))
                        .cloned(),
                }
            })
            .collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        agents
    }

    /// Commits what the batch changed (group commit), then sends what the core asked
    /// for: one frame per agent, events to watchers, the held answers.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut out = std::mem::take(&mut self.out);
        self.core.dispatch(now_ms(), &mut out);
        let mut records = Vec::new();
        let mut frames: HashMap<AgentId, pb::ControlMessage> = HashMap::new();
        for command in out.drain(..) {
            match command {
                Command::Dispatch { agent, assignment } => {
                    frames
                        .entry(agent)
                        .or_default()
                        .assignments
                        .push(pb::Assignment {
                            task: Some(pb::TaskRef {
                                workflow_id: assignment.slot.workflow.to_string(),
                                task_index: assignment.slot.wire_index(),
                                attempt: assignment.attempt,
                            }),
                            task_id: assignment.task_id,
                            skill: assignment.skill.to_string(),
                            input_json: assignment.input_json.into(),
                            deadline_unix_ms: assignment.deadline as i64,
                            idempotency_key: assignment.idempotency_key,
                            traceparent: assignment.traceparent,
                            tracestate: assignment.tracestate,
                            workflow_name: assignment.workflow_name,
                            settle: assignment.settle,
                        });
                }
                Command::Cancel {
                    agent,
                    slot,
                    attempt,
                } => {
                    frames
                        .entry(agent)
                        .or_default()
                        .cancellations
                        .push(pb::TaskRef {
                            workflow_id: slot.workflow.to_string(),
                            task_index: slot.wire_index(),
                            attempt,
                        });
                }
                Command::Record(record) => {
                    self.sequence += 1;
                    records.push((self.sequence, record));
                }
            }
        }
        self.out = out;
        if let Some(store) = self.store.clone() {
            let batch = self.batch(&records);
            store.commit(batch).await?;
        }
        let exporting = paygrid_telemetry::otel::exporting();
        for (sequence, record) in &records {
            self.observe(record);
            if exporting && let Some(workflow) = self.core.workflow(record.workflow) {
                self.spans.record(record, workflow);
            }
            self.notify(*sequence, record);
        }
        for reply in self.replies.drain(..) {
            reply.send();
        }
        self.send_frames(frames);
        Ok(())
    }

    /// What the store must hold for these records: every change, each workflow's row,
    /// and snapshots at creation, at checkpoints and at the end.
    fn batch(&mut self, records: &[(u64, Record)]) -> Batch {
        let mut batch = Batch::default();
        let mut rows: Vec<(WorkflowId, bool)> = Vec::new();
        for (sequence, record) in records {
            let change = serde_json::to_vec(&record.change).unwrap_or_default();
            batch.events.push(EventWrite {
                workflow: record.workflow,
                sequence: *sequence,
                at: record.at,
                change,
            });
            let snapshot = match &record.change {
                Change::Created => true,
                Change::Workflow { status, .. } => status.is_terminal(),
                Change::Task {
                    task,
                    compensation: false,
                    status: crate::model::TaskStatus::Succeeded,
                    ..
                } => self
                    .core
                    .workflow(record.workflow)
                    .is_some_and(|w| w.spec.tasks[*task as usize].is_checkpoint()),
                _ => false,
            };
            let is_row_change = snapshot || matches!(record.change, Change::Workflow { .. });
            if is_row_change {
                match rows.iter_mut().find(|(id, _)| *id == record.workflow) {
                    Some((_, wants)) => *wants |= snapshot,
                    None => rows.push((record.workflow, snapshot)),
                }
            }
        }
        for (id, snapshot) in rows {
            let Some(workflow) = self.core.workflow(id) else {
                continue;
            };
            if self.stored_specs.insert(workflow.spec.hash.clone()) {
                batch
                    .specs
                    .push((workflow.spec.hash.clone(), workflow.spec.text.clone()));
            }
            batch.workflows.push(WorkflowWrite {
                id,
                name: workflow.spec.name.clone(),
                spec_hash: workflow.spec.hash.clone(),
                status: workflow.status,
                idempotency_key: workflow.idempotency_key.clone(),
                // Only keyed submissions have a fingerprint to keep.
                fingerprint: workflow
                    .idempotency_key
                    .as_ref()
                    .and_then(|key| self.idempotency.get(key))
                    .map_or(0, |(_, fingerprint)| *fingerprint),
                created_at: workflow.created_at,
                updated_at: workflow.updated_at,
                snapshot: snapshot.then(|| {
                    (
                        serde_json::to_vec(&workflow.snapshot()).unwrap_or_default(),
                        self.sequence,
                    )
                }),
            });
        }
        batch
    }

    fn send_frames(&mut self, frames: HashMap<AgentId, pb::ControlMessage>) {
        let mut broken = Vec::new();
        for (agent, frame) in frames {
            let sender = self
                .agents
                .get(&agent)
                .and_then(|r| r.session.as_ref())
                .map(|(_, s)| s);
            let delivered = sender.is_some_and(|s| s.try_send(Ok(frame)).is_ok());
            if !delivered {
                broken.push(agent);
            }
        }
        // Agents whose session is full or gone: their tasks go back to the queue, to be
        // dispatched (after the next commit) elsewhere.
        let mut out = std::mem::take(&mut self.out);
        for agent in broken {
            tracing::warn!(agent = %agent, "agent session full or gone; its tasks go to other agents");
            if let Some(record) = self.agents.get_mut(&agent)
                && let Some((_, sender)) = record.session.take()
            {
                let _ = sender.try_send(Err(Status::resource_exhausted("session buffer full")));
            }
            self.agents.remove(&agent);
            self.core
                .handle(now_ms(), AgentEvent::Left { agent }, &mut out);
        }
        self.out = out;
    }

    /// Rebuilds the scheduler from the store.
    async fn recover(&mut self) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let recovered = store
            .recover(self.config.scheduler.workflows_retained_max)
            .await?;
        let limits = SpecLimits {
            spec_bytes_max: usize::MAX,
            tasks_max: usize::MAX,
            ..SpecLimits::default()
        };
        let mut specs: HashMap<String, Arc<CompiledSpec>> = HashMap::new();
        for (hash, text) in &recovered.specs {
            match crate::spec::compile(text, &limits) {
                Ok(spec) => {
                    specs.insert(hash.clone(), Arc::new(spec));
                }
                Err(errors) => {
                    tracing::error!(spec = %hash, %errors, "stored spec no longer compiles")
                }
            }
            self.stored_specs.insert(hash.clone());
        }
        let now = now_ms();
        let (mut active, mut failed) = (0, 0);
        let mut out = std::mem::take(&mut self.out);
        for workflow in recovered.workflows {
            let id = workflow.snapshot.id.clone();
            let Some(spec) = specs.get(&workflow.snapshot.spec_hash).cloned() else {
                tracing::error!(workflow = %id, "spec of stored workflow is missing");
                failed += 1;
                continue;
            };
            let terminal = workflow.snapshot.status.is_terminal() && workflow.changes.is_empty();
            let restored =
                self.core
                    .restore(now, workflow.snapshot, spec, &workflow.changes, &mut out);
            match restored {
                Ok(id) if !terminal => {
                    active += 1;
                    if let Some(workflow) = self.core.workflow(id) {
                        self.spans.restored(workflow);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(workflow = %id, %error, "cannot restore workflow");
                    failed += 1;
                }
            }
        }
        self.out = out;
        for (key, id, fingerprint) in recovered.idempotency {
            self.idempotency.insert(key, (id, fingerprint));
        }
        self.sequence = recovered.last_sequence;
        tracing::info!(
            active,
            failed,
            sequence = self.sequence,
            "recovered workflows from the store"
        );
        Ok(())
    }

    /// Metrics from one committed change.
    fn observe(&self, record: &Record) {
        let metrics = &self.config.metrics;
        let Some(workflow) = self.core.workflow(record.workflow) else {
            return;
        };
        match &record.change {
            Change::Workflow { status, .. } if status.is_terminal() => {
                let labels = [
                    ("name", workflow.spec.name.as_str()),
                    ("status", status.as_str()),
                ];
                metrics.count(
                    "paygrid_workflows_finished_total",
                    "Workflows that ended, by spec name and final status.",
                    &labels,
                    1,
                );
            }
            Change::Task {
                task,
                compensation,
                status,
                detail,
                ..
            } => {
                let compiled = &workflow.spec.tasks[*task as usize];
                let skill = if *compensation {
                    compiled
                        .compensate
                        .as_ref()
                        .map_or("", |c| c.skill.as_str())
                } else {
                    compiled.skill().unwrap_or("")
                };
                let slot = crate::scheduler::Slot {
                    workflow: record.workflow,
                    task: *task,
                    compensation: *compensation,
                };
                let Some(execution) = workflow.execution(slot) else {
                    return;
                };
                let seconds = |from: u64| record.at.saturating_sub(from) as f64 / 1000.0;
                match status {
                    crate::model::TaskStatus::Dispatched => metrics.observe(
                        "paygrid_dispatch_latency_seconds",
                        "From a task being ready to its assignment to an agent.",
                        &[("skill", skill)],
                        seconds(execution.ready_at),
                    ),
                    crate::model::TaskStatus::Succeeded
                    | crate::model::TaskStatus::Failed
                    | crate::model::TaskStatus::Compensated => {
                        metrics.observe(
                            "paygrid_task_duration_seconds",
                            "From assignment to the final answer of a task's last attempt, by skill and outcome.",
                            &[("skill", skill), ("status", status.as_str())],
                            seconds(execution.attempt_started_at),
                        );
                    }
                    crate::model::TaskStatus::Backoff => {
                        metrics.count(
                            "paygrid_task_retries_total",
                            "Attempts that will be retried, by skill.",
                            &[("skill", skill)],
                            1,
                        );
                        let detail = detail.as_deref().unwrap_or("");
                        if detail.contains("timed out") {
                            metrics.count(
                                "paygrid_task_timeouts_total",
                                "Attempts that timed out, by skill.",
                                &[("skill", skill)],
                                1,
                            );
                        } else if detail.contains("lease") {
                            metrics.count(
                                "paygrid_task_lease_expirations_total",
                                "Attempts whose agent stopped heartbeating, by skill.",
                                &[("skill", skill)],
                                1,
                            );
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Keeps the latest report per subject; a gateway failing at least half of at least
    /// five recent requests is marked unhealthy for `cheapest-healthy` routes.
    fn health_reports(&mut self, now: u64, agent: &AgentId, reports: Vec<pb::HealthReport>) {
        let reported_by = self
            .agents
            .get(agent)
            .map(|a| a.execution_unit.clone())
            .unwrap_or_else(|| agent.to_string());
        for report in reports {
            let error_rate = if report.requests == 0 {
                0.0
            } else {
                report.errors as f64 / report.requests as f64
            };
            if report.kind == "gateway" && report.requests >= 5 && error_rate >= 0.5 {
                self.core.gateway_unhealthy(now, &report.subject);
            }
            let key = (
                report.kind.clone(),
                report.subject.clone(),
                reported_by.clone(),
            );
            self.health.insert(
                key,
                pb::HealthEntry {
                    report: Some(report),
                    error_rate,
                    reported_by: reported_by.clone(),
                    updated_at_ms: now as i64,
                },
            );
        }
    }

    /// Gauges computed on demand: workflows by status, ready tasks by priority, agents.
    fn refresh_gauges(&self) {
        let metrics = &self.config.metrics;
        let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
        for status in [
            "running",
            "compensating",
            "succeeded",
            "failed",
            "compensated",
            "cancelled",
        ] {
            by_status.insert(status, 0);
        }
        for workflow in self.core.workflows() {
            *by_status.entry(workflow.status.as_str()).or_default() += 1;
        }
        for (status, count) in by_status {
            metrics.gauge(
                "paygrid_workflows",
                "Workflows held by the control unit, by status.",
                &[("status", status)],
                count as f64,
            );
        }
        for (priority, depth) in crate::model::Priority::ALL
            .iter()
            .zip(self.core.ready_depth())
        {
            metrics.gauge(
                "paygrid_ready_queue_depth",
                "Ready tasks waiting for an agent, by priority.",
                &[("priority", priority.as_str())],
                depth as f64,
            );
        }
        let connected = self.agents.values().filter(|a| a.session.is_some()).count();
        metrics.gauge(
            "paygrid_agent_sessions",
            "Agents with an open session.",
            &[],
            connected as f64,
        );
    }

    fn notify(&mut self, sequence: u64, record: &Record) {
        let Some(watchers) = self.watchers.get_mut(&record.workflow) else {
            return;
        };
        let Some(workflow) = self.core.workflow(record.workflow) else {
            return;
        };
        if let Some(event) = convert::record_to_event(record, workflow, sequence) {
            watchers.retain(|w| w.try_send(Ok(event.clone())).is_ok());
        }
        let done = matches!(record.change, Change::Workflow { status, .. } if status.is_terminal());
        if done || watchers.is_empty() {
            self.watchers.remove(&record.workflow);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
