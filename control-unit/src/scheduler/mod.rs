//! The scheduler core: a pure, synchronous state machine.
//!
//! Events go in ([`Scheduler::submit`], [`Scheduler::handle`], [`Scheduler::cancel`],
//! [`Scheduler::tick`]); commands come out ([`Command`]): dispatch a task to an agent,
//! cancel a task on an agent, record a state change. No I/O and no clock reads: time is
//! an argument, so property tests and seeded simulations drive it exactly.
//!
//! - [`state`]: workflows, tasks, agents, ready queues, timers.
//! - `change`: what it records ([`Change`], [`Record`]).
//! - `flow`: task and workflow transitions (readiness, retries, compensation).
//! - `dispatch`: priority with aging, agent choice by route and load.

pub mod approvals;
pub mod breaker;
mod change;
mod compensation;
mod dispatch;
mod flow;
mod gateways;
pub mod limits;
pub mod operations;
pub mod restore;
pub mod state;
mod waits;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::model::{AgentId, Priority, TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::CompiledSpec;
pub(crate) use change::is_zero;
pub use change::{Change, Record};
pub use state::{
    AgentSlot, AttemptOutcome, AttemptRecord, Execution, Millis, ReadyEntry, SkillQueue, Slot,
    TaskState, Timer, TimerKind, Workflow,
};

/// Scheduler tuning. Every queue the core keeps has a limit here.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A dispatched task whose agent sends no heartbeat for this long is re-dispatched.
    pub lease_ttl: Duration,
    /// Added to a ready task's wait per priority class (critical, high, normal, low):
    /// the task with the earliest `ready_at + aging` goes first, so a low task waits at
    /// most `aging[low]` behind a stream of critical work and is never starved.
    pub priority_aging: [Duration; 4],
    /// Workflows not yet terminal; `submit` refuses more.
    pub workflows_active_max: usize,
    /// Terminal workflows kept for `Get` and `List` (oldest evicted first).
    pub workflows_retained_max: usize,
    /// Ready entries set aside in one dispatch pass because no eligible agent had a slot.
    pub parked_scan_max: usize,
    /// Consecutive retryable failures after which an agent is skipped by
    /// `cheapest-healthy` routes for `unhealthy_cooldown`.
    pub unhealthy_failures: u32,
    pub unhealthy_cooldown: Duration,
    /// Circuit breakers per gateway (see `breaker`).
    pub breaker: breaker::BreakerConfig,
    /// Settlement lookups after the attempts ran out with an outcome that may have taken
    /// effect; past this the task fails as `outcome unknown` (escalated, never silent).
    pub settle_lookups_max: u32,
    /// The delay before the first lookup, doubled per lookup up to `settle_backoff_max`.
    pub settle_backoff_initial: Duration,
    pub settle_backoff_max: Duration,
    /// Concurrency and rate limits per skill, gateway and key.
    pub limits: limits::LimitRules,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(10),
            priority_aging: [
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(8),
            ],
            workflows_active_max: 200_000,
            workflows_retained_max: 100_000,
            parked_scan_max: 256,
            unhealthy_failures: 3,
            unhealthy_cooldown: Duration::from_secs(5),
            breaker: breaker::BreakerConfig::default(),
            settle_lookups_max: 10,
            settle_backoff_initial: Duration::from_secs(1),
            settle_backoff_max: Duration::from_secs(30),
            limits: limits::LimitRules::default(),
        }
    }
}

/// A workflow to start.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub id: WorkflowId,
    pub spec: Arc<CompiledSpec>,
    /// Already checked against the spec's inputs, defaults filled.
    pub input: Value,
    pub priority: Priority,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    /// The workflow's root span: `00-<trace>-<root span>-<flags>`.
    pub traceparent: String,
    /// The caller's span the root span is a child of (hex), empty for a new trace.
    pub trace_parent_span: String,
    pub tracestate: String,
}

/// What an agent reported for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        output: Arc<str>,
    },
    Retryable {
        error: String,
    },
    Permanent {
        error: String,
    },
    /// The effect may or may not have been taken (retried; settled when attempts run out).
    Unknown {
        error: String,
    },
    Cancelled,
    /// The agent did not start the task: not an attempt, it is queued again.
    Refused,
}

/// Events from agents and their sessions.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    Joined {
        agent: AgentId,
        skills: Vec<Arc<str>>,
        labels: BTreeMap<String, String>,
        max_concurrency: u32,
    },
    Left {
        agent: AgentId,
    },
    Credits {
        agent: AgentId,
        credits: u32,
    },
    Draining {
        agent: AgentId,
    },
    Result {
        agent: AgentId,
        slot: Slot,
        attempt: u32,
        outcome: Outcome,
    },
    Heartbeat {
        agent: AgentId,
        running: Vec<(Slot, u32)>,
    },
}

/// A task handed to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub slot: Slot,
    pub attempt: u32,
    pub task_id: String,
    pub skill: Arc<str>,
    pub input_json: Vec<u8>,
    pub deadline: Millis,
    pub idempotency_key: String,
    /// The attempt's span as parent (see `traces::attempt_context`).
    pub traceparent: String,
    pub tracestate: String,
    pub workflow_name: String,
    /// A settlement lookup by `idempotency_key`, not an attempt at the effect.
    pub settle: bool,
}

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Dispatch {
        agent: AgentId,
        assignment: Box<Assignment>,
    },
    Cancel {
        agent: AgentId,
        slot: Slot,
        attempt: u32,
    },
    Record(Record),
    /// A gateway's circuit breaker changed state (metrics, a span event, the log).
    Breaker(breaker::Transition),
    /// The agent said it drains: nothing is assigned to it after this (sent after every
    /// assignment before it, so the agent knows when none can still be on the way).
    DrainAcknowledged {
        agent: AgentId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("workflow {0} exists already")]
    Duplicate(WorkflowId),
    #[error("{active} workflows are running, the limit is {limit}: retry later")]
    Overloaded { active: usize, limit: usize },
    #[error(
        "{active} workflows of key `{key}` are running, its limit is {limit}: retry later (other keys are admitted)"
    )]
    KeyOverloaded {
        key: String,
        active: u32,
        limit: u32,
    },
}

impl SubmitError {
    /// How long a refused caller should wait before retrying, for the errors that are
    /// about load.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Overloaded { .. } | Self::KeyOverloaded { .. } => Some(RETRY_AFTER_MS),
            Self::Duplicate(_) => None,
        }
    }
}

/// The retry hint given with a refusal for load: long enough for running work to end.
pub const RETRY_AFTER_MS: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("workflow {0} not found")]
    NotFound(WorkflowId),
}

/// The scheduler core.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    workflows: BTreeMap<WorkflowId, Workflow>,
    active: usize,
    retained: std::collections::VecDeque<WorkflowId>,
    agents: HashMap<AgentId, AgentSlot>,
    skills: HashMap<Arc<str>, SkillQueue>,
    dirty_skills: Vec<Arc<str>>,
    breakers: breaker::Breakers,
    waits: waits::Waits,
    approvals: approvals::Approvals,
    /// Concurrency and rate limits (see `limits`).
    limits: limits::Limits,
    /// Skills and gateways an operator paused dispatch of (see `operations`).
    holds: operations::Holds,
    timers: BinaryHeap<Reverse<Timer>>,
    now: Millis,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let breakers = breaker::Breakers::new(config.breaker);
        let limits = limits::Limits::new(config.limits.clone());
        Self {
            config,
            workflows: BTreeMap::new(),
            active: 0,
            retained: std::collections::VecDeque::new(),
            agents: HashMap::new(),
            skills: HashMap::new(),
            dirty_skills: Vec::new(),
            breakers,
            waits: waits::Waits::default(),
            approvals: approvals::Approvals::default(),
            limits,
            holds: operations::Holds::default(),
            timers: BinaryHeap::new(),
            now: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn workflow(&self, id: WorkflowId) -> Option<&Workflow> {
        self.workflows.get(&id)
    }

    /// Every workflow kept (active and retained terminal ones), oldest id first.
    pub fn workflows(&self) -> impl DoubleEndedIterator<Item = &Workflow> {
        self.workflows.values()
    }

    /// Workflows after `after` in id order.
    pub fn workflows_after(&self, after: Option<WorkflowId>) -> impl Iterator<Item = &Workflow> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.workflows
            .range((start, Bound::Unbounded))
            .map(|(_, w)| w)
    }

    pub fn active_workflows(&self) -> usize {
        self.active
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentSlot> {
        self.agents.values()
    }

    pub fn agent(&self, id: &AgentId) -> Option<&AgentSlot> {
        self.agents.get(id)
    }

    /// Ready tasks per priority class, over every skill.
    pub fn ready_depth(&self) -> [usize; 4] {
        let mut depth = [0; 4];
        for queue in self.skills.values() {
            for (class, entries) in queue.ready.iter().enumerate() {
                depth[class] += entries.len();
            }
        }
        depth
    }

    /// Every gateway's circuit breaker.
    pub fn breakers(&self) -> &breaker::Breakers {
        &self.breakers
    }

    /// The earliest timer or breaker cool-down, so the driver knows when to call
    /// [`Scheduler::tick`].
    pub fn next_deadline(&self) -> Option<Millis> {
        let timer = self.timers.peek().map(|Reverse(timer)| timer.at);
        [timer, self.breakers.next_change(), self.limits.next_wake()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts a workflow: its root tasks become ready.
    pub fn submit(
        &mut self,
        now: Millis,
        new: NewWorkflow,
        out: &mut Vec<Command>,
    ) -> Result<(), SubmitError> {
        self.advance(now);
        if self.workflows.contains_key(&new.id) {
            return Err(SubmitError::Duplicate(new.id));
        }
        if self.active >= self.config.workflows_active_max {
            return Err(SubmitError::Overloaded {
                active: self.active,
                limit: self.config.workflows_active_max,
            });
        }
        let tasks = new
            .spec
            .tasks
            .iter()
            .map(|task| TaskState {
                run: Execution::new(TaskStatus::Blocked),
                pending_needs: task.needs.len() as u32,
                compensation: None,
            })
            .collect();
        let id = new.id;
        let workflow = Workflow {
            id,
            tasks_remaining: new.spec.tasks.len() as u32,
            spec: new.spec,
            input: Arc::new(new.input),
            priority: new.priority,
            labels: new.labels,
            idempotency_key: new.idempotency_key,
            traceparent: new.traceparent,
            trace_parent_span: new.trace_parent_span,
            tracestate: new.tracestate,
            status: WorkflowStatus::Running,
            tasks,
            error: None,
            created_at: now,
            updated_at: now,
            compensation_stack: Vec::new(),
            compensating: None,
            compensation_failures: 0,
            cancel_requested: false,
            paused: None,
        };
        self.limits
            .admit(&dispatch::WorkflowScope(&workflow))
            .map_err(|(key, active, limit)| SubmitError::KeyOverloaded { key, active, limit })?;
        let roots: Vec<u32> = workflow
            .spec
            .tasks
            .iter()
            .filter(|t| t.needs.is_empty())
            .map(|t| t.index)
            .collect();
        self.workflows.insert(id, workflow);
        self.active += 1;
        record(out, id, now, Change::Created);
        record(
            out,
            id,
            now,
            Change::Workflow {
                status: WorkflowStatus::Running,
                detail: None,
            },
        );
        for task in roots {
            self.task_unblocked(id, task, out);
        }
        Ok(())
    }

    /// Cancels a workflow: in-flight tasks are cancelled on their agents and completed
    /// tasks are compensated. Returns the status after the request.
    pub fn cancel(
        &mut self,
        now: Millis,
        id: WorkflowId,
        reason: &str,
        out: &mut Vec<Command>,
    ) -> Result<WorkflowStatus, CancelError> {
        self.advance(now);
        let workflow = self
            .workflows
            .get_mut(&id)
            .ok_or(CancelError::NotFound(id))?;
        if workflow.status.is_terminal() || workflow.cancel_requested {
            return Ok(workflow.status);
        }
        workflow.cancel_requested = true;
        record(
            out,
            id,
            self.now,
            Change::CancelRequested {
                reason: reason.to_owned(),
            },
        );
        self.stop_workflow(id, format!("cancelled: {reason}"), out);
        Ok(self
            .workflows
            .get(&id)
            .map_or(WorkflowStatus::Cancelled, |w| w.status))
    }

    /// Applies one agent event.
    pub fn handle(&mut self, now: Millis, event: AgentEvent, out: &mut Vec<Command>) {
        self.advance(now);
        match event {
            AgentEvent::Joined {
                agent,
                skills,
                labels,
                max_concurrency,
            } => {
                self.agent_joined(agent, skills, labels, max_concurrency);
            }
            AgentEvent::Left { agent } => self.agent_left(&agent, out),
            AgentEvent::Credits { agent, credits } => {
                if let Some(slot) = self.agents.get_mut(&agent) {
                    slot.credits = slot
                        .credits
                        .saturating_add(credits)
                        .min(slot.max_concurrency);
                    let skills = slot.skills.clone();
                    for skill in skills {
                        self.mark_dirty(&skill);
                    }
                }
            }
            AgentEvent::Draining { agent } => {
                if let Some(slot) = self.agents.get_mut(&agent) {
                    slot.draining = true;
                    out.push(Command::DrainAcknowledged { agent });
                }
            }
            AgentEvent::Result {
                agent,
                slot,
                attempt,
                outcome,
            } => {
                self.result(&agent, slot, attempt, outcome, out);
            }
            AgentEvent::Heartbeat { agent, running } => self.heartbeat(&agent, &running, out),
        }
    }

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Command>) {
        self.advance(now);
        for transition in self.breakers.advance(self.now) {
            self.breaker_changed(transition, out);
        }
        for skill in self.limits.tick(self.now) {
            self.mark_dirty(&skill);
        }
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at > self.now {
                break;
            }
            self.timers.pop();
            self.fire(timer, out);
        }
    }

    /// New limits (`paygrid limits set`): counted again from the attempts running now,
    /// and every queue looked at again (a limit may have loosened).
    pub fn set_limits(&mut self, now: Millis, rules: limits::LimitRules) {
        self.advance(now);
        let mut running = Vec::new();
        for agent in self.agents.values() {
            let gateway = agent.labels.get("gateway").map(String::as_str);
            for (&slot, &attempt) in &agent.assigned {
                let Some(workflow) = self.workflows.get(&slot.workflow) else {
                    continue;
                };
                let compiled = &workflow.spec.tasks[slot.task as usize];
                let skill = match (&compiled.compensate, slot.compensation) {
                    (Some(compensation), true) => compensation.skill.as_str(),
                    _ => compiled.skill().unwrap_or_default(),
                };
                running.push((
                    slot,
                    attempt,
                    skill,
                    gateway,
                    dispatch::WorkflowScope(workflow),
                ));
            }
        }
        let mut limits = limits::Limits::default();
        limits.replace(
            rules,
            running
                .iter()
                .map(|(slot, attempt, skill, gateway, scope)| {
                    (
                        *slot,
                        *attempt,
                        *skill,
                        *gateway,
                        scope as &dyn crate::spec::Scope,
                    )
                }),
        );
        for workflow in self.workflows.values() {
            if !workflow.status.is_terminal() {
                limits.readmit(&dispatch::WorkflowScope(workflow));
            }
        }
        self.limits = limits;
        // Ready tasks take their turns under the new fairness key (or none).
        for queue in self.skills.values_mut() {
            for class in &mut queue.ready {
                for entry in class.drain() {
                    let key = self.workflows.get(&entry.slot.workflow).and_then(|w| {
                        self.limits
                            .rules()
                            .fairness_key(&dispatch::WorkflowScope(w))
                    });
                    class.push_back(entry, key);
                }
            }
        }
        let skills: Vec<Arc<str>> = self.skills.keys().cloned().collect();
        for skill in &skills {
            self.mark_dirty(skill);
        }
    }

    /// The limits in force and what they count now.
    pub fn limits(&self) -> &limits::Limits {
        &self.limits
    }

    /// Hands ready tasks to agents with free slots; call after a batch of events.
    pub fn dispatch(&mut self, now: Millis, out: &mut Vec<Command>) {
        self.advance(now);
        for skill in std::mem::take(&mut self.dirty_skills) {
            if let Some(queue) = self.skills.get_mut(&skill) {
                queue.dirty = false;
            }
            self.dispatch_skill(&skill, out);
        }
    }

    /// Time only moves forward, whatever the caller's clock does.
    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    fn agent_joined(
        &mut self,
        agent: AgentId,
        skills: Vec<Arc<str>>,
        labels: BTreeMap<String, String>,
        max_concurrency: u32,
    ) {
        let cost_bps = labels
            .get("cost_bps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        for skill in &skills {
            let queue = self.skills.entry(skill.clone()).or_default();
            if !queue.agents.contains(&agent) {
                queue.agents.push(agent.clone());
                queue.agents.sort();
            }
        }
        self.agents.insert(
            agent.clone(),
            AgentSlot {
                id: agent,
                skills,
                labels,
                cost_bps,
                max_concurrency,
                credits: 0,
                draining: false,
                assigned: HashMap::new(),
                consecutive_failures: 0,
                unhealthy_until: 0,
                completed: 0,
            },
        );
    }

    /// Every task on the agent goes back to the ready queue at once; a late result for
    /// the same attempt (the agent reconnected) is still accepted until re-dispatch.
    fn agent_left(&mut self, agent: &AgentId, out: &mut Vec<Command>) {
        let Some(slot) = self.agents.remove(agent) else {
            return;
        };
        for skill in &slot.skills {
            if let Some(queue) = self.skills.get_mut(skill) {
                queue.agents.retain(|a| a != agent);
            }
        }
        let mut lost: Vec<(Slot, u32)> = slot.assigned.into_iter().collect();
        lost.sort();
        for &(task_slot, attempt) in &lost {
            self.limits_release(task_slot, attempt);
        }
        if let Some(gateway) = slot.labels.get("gateway") {
            // No verdict on the gateway, but its trials on this agent free their places.
            for &attempt in &lost {
                if let Some(transition) = self.breakers.record(gateway, self.now, attempt, None, 0)
                {
                    self.breaker_changed(transition, out);
                }
            }
            self.mark_gateway_dirty(gateway);
        }
        for (task_slot, attempt) in lost {
            self.requeue_lost(
                task_slot,
                attempt,
                AttemptOutcome::AgentLost,
                "agent disconnected",
                out,
            );
        }
    }

    fn heartbeat(&mut self, agent: &AgentId, running: &[(Slot, u32)], out: &mut Vec<Command>) {
        let lease_until = self.now + self.config.lease_ttl.as_millis() as u64;
        for &(slot, attempt) in running {
            let now = self.now;
            let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
                continue;
            };
            let Some(execution) = workflow.execution_mut(slot) else {
                continue;
            };
            // An attempt given up for a lost agent that turns out to be still running
            // (the agent reconnected, or the control unit restarted): take it back
            // instead of running the task a second time in parallel under its key.
            let reclaimed = execution.is_lost_attempt(attempt);
            if reclaimed {
                execution.history.pop();
                execution.attempt_open = true;
                execution.status = TaskStatus::Dispatched;
                self.timers.push(Reverse(Timer {
                    at: execution.deadline.min(lease_until),
                    slot,
                    attempt,
                    kind: TimerKind::Attempt,
                }));
            }
            if execution.attempt != attempt || !execution.attempt_open || !execution.is_in_flight()
            {
                continue;
            }
            execution.lease_until = lease_until;
            // After a restart the agent reports what it still runs: adopt it, so that
            // losing the agent re-dispatches it at once.
            if let Some(agent_slot) = self.agents.get_mut(agent)
                && agent_slot.assigned.get(&slot) != Some(&attempt)
            {
                agent_slot.assigned.insert(slot, attempt);
                execution.agent = Some(agent.clone());
            }
            if execution.status == TaskStatus::Dispatched {
                execution.status = TaskStatus::Running;
                workflow.updated_at = now;
                let detail = reclaimed.then(|| "still running on its agent: reclaimed".into());
                record(
                    out,
                    slot.workflow,
                    now,
                    Change::task(
                        slot.task,
                        slot.compensation,
                        TaskStatus::Running,
                        attempt,
                        Some(agent.clone()),
                        detail,
                    ),
                );
            }
        }
    }

    fn fire(&mut self, timer: Timer, out: &mut Vec<Command>) {
        let Some(workflow) = self.workflows.get(&timer.slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution(timer.slot) else {
            return;
        };
        if execution.attempt != timer.attempt {
            return;
        }
        if timer.kind == TimerKind::Approval {
            let waiting = execution.status == TaskStatus::Running;
            self.approval_timer(timer.slot, waiting, out);
            return;
        }
        match timer.kind {
            TimerKind::Backoff if execution.status == TaskStatus::Backoff => {
                self.make_ready(timer.slot, out);
            }
            TimerKind::Wait if execution.status == TaskStatus::Running => {
                self.wait_timed_out(timer.slot, out);
            }
            TimerKind::Attempt if execution.is_in_flight() && execution.attempt_open => {
                let (deadline, lease_until) = (execution.deadline, execution.lease_until);
                if deadline <= self.now {
                    let error = format!("attempt {} timed out", timer.attempt);
                    self.abandon_attempt(timer.slot, AttemptOutcome::Timeout, error, out);
                } else if lease_until <= self.now {
                    let error = format!("lease of attempt {} expired: no heartbeat", timer.attempt);
                    self.abandon_attempt(timer.slot, AttemptOutcome::LeaseExpired, error, out);
                } else {
                    // Heartbeats moved the lease: wait for whichever comes first now.
                    let at = deadline.min(lease_until);
                    self.timers.push(Reverse(Timer { at, ..timer }));
                }
            }
            _ => {}
        }
    }

    fn mark_dirty(&mut self, skill: &Arc<str>) {
        let queue = self.skills.entry(skill.clone()).or_default();
        if !queue.dirty {
            queue.dirty = true;
            self.dirty_skills.push(skill.clone());
        }
    }
}

fn record(out: &mut Vec<Command>, workflow: WorkflowId, at: Millis, change: Change) {
    out.push(Command::Record(Record {
        workflow,
        at,
        change,
    }));
}
