//! Read models: what the actor and the catalog answer with, in domain terms. The gRPC
//! edge renders them (`service::convert`); other front doors (MCP, A2A, the console) can
//! render the same ones.

use std::collections::BTreeMap;

use crate::model::{
    AgentCard, AgentId, HealthReport, Priority, TaskStatus, WorkflowId, WorkflowStatus,
};
use crate::scheduler::breaker::{BreakerState, Transition, WindowCounts};
use crate::scheduler::restore::Snapshot;
use crate::scheduler::{Assignment, Millis, Slot, Workflow};

/// One workflow with everything `Get` shows: its state, and why each ready task waits.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub workflow: Workflow,
    /// Per task (spec order): why a ready task waits; empty otherwise.
    pub waiting: Vec<String>,
    /// The approvals waiting for a decision, by task index.
    pub approvals: Vec<(u32, crate::scheduler::approvals::PendingApproval)>,
}

/// One line of a workflow list.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSummary {
    pub id: WorkflowId,
    pub name: String,
    pub version: u32,
    pub status: WorkflowStatus,
    pub priority: Priority,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub labels: BTreeMap<String, String>,
    pub tasks_total: u32,
    pub tasks_done: u32,
    pub paused: bool,
}

impl WorkflowSummary {
    pub fn of(workflow: &Workflow) -> Self {
        Self {
            id: workflow.id,
            name: workflow.spec.name.clone(),
            version: workflow.spec.version,
            status: workflow.status,
            priority: workflow.priority,
            created_at: workflow.created_at,
            updated_at: workflow.updated_at,
            labels: workflow.labels.clone(),
            tasks_total: workflow.tasks.len() as u32,
            tasks_done: workflow
                .tasks
                .iter()
                .filter(|t| t.run.status.is_terminal())
                .count() as u32,
            paused: workflow.paused.is_some(),
        }
    }

    /// From a stored snapshot; `None` when its id is not one.
    pub fn of_snapshot(snapshot: &Snapshot) -> Option<Self> {
        Some(Self {
            id: snapshot.id.parse().ok()?,
            name: snapshot.name.clone(),
            version: snapshot.version,
            status: snapshot.status,
            priority: snapshot.priority,
            created_at: snapshot.created_at,
            updated_at: snapshot.updated_at,
            labels: snapshot.labels.clone(),
            tasks_total: snapshot.tasks.len() as u32,
            tasks_done: snapshot
                .tasks
                .iter()
                .filter(|t| t.run.status.is_terminal())
                .count() as u32,
            paused: snapshot.paused.is_some(),
        })
    }
}

/// A page of workflows in id order; `next` is the last id when more may follow.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub workflows: Vec<WorkflowSummary>,
    pub next: Option<WorkflowId>,
}

/// Filters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<WorkflowStatus>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub page_size: usize,
    pub after: Option<WorkflowId>,
}

impl ListQuery {
    pub fn matches(&self, summary: &WorkflowSummary) -> bool {
        self.status.is_none_or(|s| s == summary.status)
            && self.name.as_ref().is_none_or(|n| *n == summary.name)
            && self
                .labels
                .iter()
                .all(|(k, v)| summary.labels.get(k) == Some(v))
    }
}

/// What a watcher sees, in commit order.
#[derive(Debug, Clone)]
pub struct WorkflowEvent {
    pub workflow: WorkflowId,
    pub sequence: u64,
    pub at: Millis,
    pub body: EventBody,
}

#[derive(Debug, Clone)]
pub enum EventBody {
    /// The workflow as it is when the watch starts.
    Snapshot(Box<WorkflowView>),
    Workflow {
        status: WorkflowStatus,
        detail: Option<String>,
    },
    Task {
        task_id: String,
        status: TaskStatus,
        attempt: u32,
        agent: Option<AgentId>,
        detail: Option<String>,
        compensation: bool,
    },
}

/// What a registration answers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub agent: AgentId,
    pub session_token: String,
    pub heartbeat_interval_ms: u32,
    pub lease_ttl_ms: u32,
}

/// One frame to an agent: new assignments and cancellations of attempts it runs.
#[derive(Debug, Default)]
pub struct Frame {
    pub assignments: Vec<Assignment>,
    /// (task, attempt)
    pub cancellations: Vec<(Slot, u32)>,
    /// The agent's drain is seen: nothing more will be assigned to it.
    pub drain_acknowledged: bool,
}

/// The latest health report of one subject, from one reporting execution unit.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEntry {
    pub report: HealthReport,
    pub error_rate: f64,
    /// The execution unit whose telemetry agent reported it.
    pub reported_by: String,
    pub updated_at: Millis,
}

/// A registered agent as `ListAgents` shows it.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub id: AgentId,
    pub card: AgentCard,
    pub execution_unit: String,
    pub connected: bool,
    pub inflight: u32,
    pub credits: u32,
    pub draining: bool,
    pub registered_at: Millis,
    pub tasks_completed: u64,
    pub health: Option<HealthEntry>,
}

/// A gateway's circuit breaker, for `paygrid health`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerView {
    pub gateway: String,
    pub state: BreakerState,
    pub window: WindowCounts,
    pub open_until: Millis,
    pub trials_in_flight: u32,
    pub transitions: Vec<Transition>,
}

/// The live health view: telemetry entries and breakers.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    pub entries: Vec<HealthEntry>,
    pub breakers: Vec<BreakerView>,
    pub adaptive: Vec<AdaptiveView>,
    pub holds: crate::scheduler::operations::Holds,
}

/// An adaptive concurrency limit on a gateway, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveView {
    pub gateway: String,
    pub limit: f64,
    pub running: u32,
    pub min: u32,
    pub max: u32,
    pub latency_target_ms: u64,
}
