//! The actor that owns the scheduler core. The services talk to it over one bounded
//! channel, in domain types ([`Input`]); it drains inputs in batches, runs the core,
//! commits what changed (group commit), and only then answers, notifies watchers and
//! sends one frame per agent. Nothing here holds a lock across an await, and nothing
//! here knows protobuf or gRPC.
//!
//! One job per file:
//! - `actor`: the loop, inputs, submissions and lists;
//! - `agents`: registrations and sessions, frames to agents;
//! - `watchers`: `Watch` and `Follow` streams;
//! - `persist`: the batch a commit writes, and recovery at start;
//! - `health`: the live health view from telemetry agents;
//! - `observe`: metrics derived from committed changes.

mod actor;
mod agents;
mod health;
mod observe;
mod persist;
mod release;
#[cfg(test)]
mod tests;
mod watchers;

pub use watchers::{Followed, Follower};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::error::ControlError;
use crate::model::{AgentCard, AgentId, HealthReport, WorkflowId, WorkflowStatus};
use crate::scheduler::{AgentEvent, NewWorkflow, SchedulerConfig};
use crate::store::Store;
use crate::views::{
    AgentView, Frame, HealthSnapshot, ListQuery, Page, Registration, WorkflowEvent, WorkflowView,
};

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
    /// Remediation rules (`--remediation-rules`, or the shipped ones).
    pub remediation: crate::remediation::Rules,
    /// In a cluster (docs/cluster.md): the partitions this control unit owns. The actor
    /// holds only their workflows, fences every commit by their epochs, and starts again
    /// from the store when they change.
    pub ownership: Option<Arc<crate::cluster::membership::Ownership>>,
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
            remediation: crate::remediation::Rules::defaults(),
            ownership: None,
        }
    }
}

/// Frames to one agent's session; an error ends the session with it.
pub type SessionSender = mpsc::Sender<Result<Frame, ControlError>>;
/// Events to one watcher.
pub type WatchSender = mpsc::Sender<WorkflowEvent>;

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

/// The limits in force: their document, rule counts, and (rule, key, running, max) for
/// every concurrency count above zero.
#[derive(Debug, Clone, Default)]
pub struct LimitsView {
    pub source: String,
    pub concurrency_rules: usize,
    pub rate_rules: usize,
    pub running: Vec<(String, String, u32, u32)>,
}

/// An operation on accepted work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Pause {
        reason: String,
    },
    Resume,
    /// `task`: the failed task (`None`: whichever failed).
    Retry {
        task: Option<String>,
    },
    Redrive {
        checkpoint: String,
    },
    Cancel {
        reason: String,
    },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pause { .. } => "pause",
            Self::Resume => "resume",
            Self::Retry { .. } => "retry",
            Self::Redrive { .. } => "redrive",
            Self::Cancel { .. } => "cancel",
        }
    }
}

/// A workflow after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operated {
    pub status: WorkflowStatus,
    /// The tasks that run again (retry, re-drive).
    pub tasks: Vec<String>,
    pub paused: bool,
}

/// What a bulk operation matched and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub matched: Vec<WorkflowId>,
    pub applied: usize,
    /// `ID: why`, for each workflow the operation refused.
    pub refused: Vec<String>,
    pub dry_run: bool,
}

pub enum Input {
    /// An action with its audit record: both go into the same group commit, and the
    /// action's reply waits for it.
    Audited {
        record: Box<crate::audit::AuditRecord>,
        input: Box<Input>,
    },
    /// The audit log kept in memory (a control unit without a store).
    ListAudit {
        query: crate::audit::AuditQuery,
        reply: oneshot::Sender<Vec<crate::audit::AuditRecord>>,
    },
    Submit {
        submission: Box<Submission>,
        reply: oneshot::Sender<Result<Submitted, ControlError>>,
    },
    Cancel {
        id: WorkflowId,
        reason: String,
        reply: oneshot::Sender<Result<WorkflowStatus, ControlError>>,
    },
    /// A decision on an approval task (`None`: the one the workflow waits for).
    Approve {
        id: WorkflowId,
        task: Option<String>,
        decision: crate::scheduler::approvals::DecisionBy,
        reply: oneshot::Sender<Result<(String, WorkflowStatus), ControlError>>,
    },
    Get {
        id: WorkflowId,
        reply: oneshot::Sender<Option<WorkflowView>>,
    },
    /// The workflow submitted with an idempotency key, if this control unit knows it.
    FindKey {
        key: String,
        reply: oneshot::Sender<Option<WorkflowId>>,
    },
    /// An operator's operation on one workflow (docs/operations.md).
    Operate {
        id: WorkflowId,
        operation: Operation,
        reply: oneshot::Sender<Result<Operated, ControlError>>,
    },
    /// One operation over every workflow in memory a filter matches (up to `limit`);
    /// `dry_run` only counts them.
    Bulk {
        filter: crate::scheduler::operations::Filter,
        operation: Operation,
        dry_run: bool,
        limit: usize,
        reply: oneshot::Sender<BulkOutcome>,
    },
    /// New limits, already checked (and stored, when there is a store).
    SetLimits {
        rules: crate::scheduler::limits::LimitRules,
        reply: oneshot::Sender<LimitsView>,
    },
    GetLimits {
        reply: oneshot::Sender<LimitsView>,
    },
    /// Workflows in memory; the catalog merges the store's.
    List {
        query: ListQuery,
        reply: oneshot::Sender<Page>,
    },
    Watch {
        id: WorkflowId,
        sender: WatchSender,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Follows workflows to their ends on one stream: each id is answered once on the
    /// follower's channel.
    Follow {
        ids: Vec<WorkflowId>,
        follower: Follower,
    },
    Register {
        card: AgentCard,
        execution_unit: String,
        reply: oneshot::Sender<Registration>,
    },
    OpenSession {
        agent: AgentId,
        token: String,
        sender: SessionSender,
        /// The session's number and the agent's card.
        reply: oneshot::Sender<Result<(u64, crate::model::AgentCard), ControlError>>,
    },
    CloseSession {
        agent: AgentId,
        session: u64,
    },
    Agent(Vec<AgentEvent>),
    /// Health reports relayed by a telemetry (support) agent.
    HealthReports {
        agent: AgentId,
        reports: Vec<HealthReport>,
    },
    /// The live health view: telemetry entries and circuit breakers.
    HealthView {
        reply: oneshot::Sender<HealthSnapshot>,
    },
    /// Drains a gateway (its breaker held open) for `for_ms`, or with 0 ends the drain.
    DrainGateway {
        gateway: String,
        for_ms: u64,
        reason: String,
        /// `None` when the gateway has no breaker (never drained, never answered).
        reply: oneshot::Sender<Option<crate::views::BreakerView>>,
    },
    /// Pauses (`reason` given) or resumes dispatch of a skill or to a gateway; answers
    /// the holds after, which the caller stores.
    Hold {
        on: crate::scheduler::operations::HoldOn,
        reason: Option<String>,
        reply: oneshot::Sender<crate::scheduler::operations::Holds>,
    },
    /// Idempotency keys of workflows pruned from the store.
    ForgetKeys(Vec<String>),
    /// Refresh the gauges computed on demand, before a scrape.
    Metrics {
        reply: oneshot::Sender<()>,
    },
    ListAgents {
        skill: Option<String>,
        reply: oneshot::Sender<Vec<AgentView>>,
    },
}

/// A cheap handle to the actor.
#[derive(Clone)]
pub struct Handle {
    inputs: mpsc::Sender<Input>,
    /// Counts the times the scheduler started again from the store (a rebalance in a
    /// cluster): what its watchers and followers held is gone then.
    restarts: tokio::sync::watch::Receiver<u64>,
}

impl Handle {
    /// Changes each time the scheduler starts again from the store.
    pub fn restarts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.restarts.clone()
    }

    /// Sends an input; `ShuttingDown` once the actor has stopped.
    pub async fn send(&self, input: Input) -> Result<(), ControlError> {
        self.inputs
            .send(input)
            .await
            .map_err(|_| ControlError::ShuttingDown)
    }

    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Input,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| ControlError::ShuttingDown)
    }
}

/// Starts the actor after recovering every stored workflow. It stops when every
/// [`Handle`] is dropped or `shutdown` fires, and returns an error (after cancelling
/// `shutdown`, so the servers stop too) when a commit fails: memory would be ahead of
/// disk, and the next start recovers from the last good commit.
///
/// The actor runs on a thread of its own (`paygrid-actor`, with a single-threaded
/// runtime for its channels and timers), never on a worker of the caller's runtime: it
/// decides for every workflow, so it should not queue behind the sessions' streams, and
/// with the embedded store it writes and syncs the commit log itself
/// ([`crate::store::CommitHere`]), which would stall a worker. The returned task ends
/// with it.
pub async fn start(
    config: RuntimeConfig,
    store: Option<Arc<dyn Store>>,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) -> Result<(Handle, tokio::task::JoinHandle<Result<(), ControlError>>), ControlError> {
    let (inputs, receiver) = mpsc::channel(config.inputs_max);
    let (restarted, restarts) = tokio::sync::watch::channel(0u64);
    let mut actor = actor::Actor::new(config.clone(), store.clone(), catalog.clone());
    actor.recover().await?;
    let serve = async move {
        let mut receiver = receiver;
        let mut actor = actor;
        loop {
            actor.persistence.commit_here();
            let (stopped, back) = actor.run(receiver, shutdown.clone()).await;
            receiver = back;
            match stopped? {
                actor::Stopped::Shutdown => return Ok(()),
                // The partitions changed (or a commit was fenced): start again from the
                // store, as after a crash; inputs wait in the channel meanwhile.
                actor::Stopped::Rebalance => {
                    actor = actor::Actor::new(config.clone(), store.clone(), catalog.clone());
                    restarted.send_modify(|n| *n += 1);
                    actor.recover().await?;
                }
            }
        }
    };
    // With I/O, so that nothing the actor awaits needs a runtime it lacks (a PostgreSQL
    // store's new connection is made on the store's own runtime).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ControlError::Internal(format!("starting the actor's runtime: {e}")))?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("paygrid-actor".into())
        .spawn(move || {
            let _ = done.send(runtime.block_on(serve));
        })
        .map_err(|e| ControlError::Internal(format!("starting the actor's thread: {e}")))?;
    let task = tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(ControlError::Internal("the actor's thread panicked".into())))
    });
    Ok((Handle { inputs, restarts }, task))
}

/// Workflow ids with their idempotency fingerprint, by key.
type IdempotencyIndex = std::collections::HashMap<String, (WorkflowId, u64)>;

/// What makes two submissions "the same" for an idempotency key: SHA-256 over a
/// canonical form of spec hash, input (JSON with sorted keys), priority and labels,
/// truncated to 64 bits. Fixed by its definition, so a key stored by one release is
/// recognised by the next (`std`'s `DefaultHasher` may change between releases).
pub fn fingerprint(
    spec_hash: &str,
    input: &serde_json::Value,
    priority: crate::model::Priority,
    labels: &std::collections::BTreeMap<String, String>,
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
