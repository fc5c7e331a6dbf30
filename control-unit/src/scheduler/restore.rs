//! Durability support: a workflow's snapshot, and rebuilding a workflow from its last
//! snapshot plus the changes recorded after it.
//!
//! Resuming never trusts what was in flight at the crash: a task whose outcome was not
//! recorded is made ready again (same idempotency key, next attempt; a late result of the
//! old attempt is still accepted), backoffs resume from their persisted deadline, and an
//! interrupted compensation starts again.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AttemptOutcome, AttemptRecord, Change, Command, Execution, Scheduler, Slot, TaskState, Timer,
    TimerKind, Workflow,
};
use crate::model::{Priority, TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::CompiledSpec;

/// A workflow as a store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub spec_hash: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: u32,
    pub input: Value,
    pub priority: Priority,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent_span: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
    pub status: WorkflowStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub cancel_requested: bool,
    /// Paused by an operator: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    pub compensation_failures: u32,
    pub compensation_stack: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensating: Option<u32>,
    pub tasks: Vec<TaskState>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot id `{0}` is not a workflow id")]
    BadId(String),
    #[error("workflow {id}: snapshot has {snapshot} tasks, spec {spec_hash} has {spec}")]
    Shape {
        id: WorkflowId,
        snapshot: usize,
        spec: usize,
        spec_hash: String,
    },
    #[error("workflow {id}: change for task {task}, which the spec does not have")]
    UnknownTask { id: WorkflowId, task: u32 },
}

impl Workflow {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.to_string(),
            spec_hash: self.spec.hash.clone(),
            name: self.spec.name.clone(),
            version: self.spec.version,
            input: (*self.input).clone(),
            priority: self.priority,
            labels: self.labels.clone(),
            idempotency_key: self.idempotency_key.clone(),
            traceparent: self.traceparent.clone(),
            trace_parent_span: self.trace_parent_span.clone(),
            tracestate: self.tracestate.clone(),
            status: self.status,
            error: self.error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            cancel_requested: self.cancel_requested,
            paused: self.paused.clone(),
            compensation_failures: self.compensation_failures,
            compensation_stack: self.compensation_stack.clone(),
            compensating: self.compensating,
            tasks: self.tasks.clone(),
        }
    }
}

/// Applies one recorded change to a workflow being rebuilt.
fn apply(workflow: &mut Workflow, at: u64, change: &Change) -> Result<(), RestoreError> {
    workflow.updated_at = workflow.updated_at.max(at);
    match change {
        Change::Created => {}
        Change::CancelRequested { .. } => workflow.cancel_requested = true,
        Change::Paused { reason } => workflow.paused = Some(reason.clone()),
        Change::Resumed => workflow.paused = None,
        Change::Reopened(reset) => super::operations::apply_reset(workflow, reset),
        Change::Workflow { status, detail } => {
            workflow.status = *status;
            if detail.is_some() {
                workflow.error.clone_from(detail);
            }
        }
        Change::Task { .. } => apply_task(workflow, at, change)?,
    }
    Ok(())
}

/// A task's (or its compensation's) change, replayed.
fn apply_task(workflow: &mut Workflow, at: u64, change: &Change) -> Result<(), RestoreError> {
    let Change::Task {
        task,
        compensation,
        status,
        attempt,
        agent,
        detail,
        output,
        retry_at,
        deadline,
        outcome,
        lookups,
        settling,
    } = change
    else {
        return Ok(());
    };
    let has_compensation = workflow
        .spec
        .tasks
        .get(*task as usize)
        .ok_or(RestoreError::UnknownTask {
            id: workflow.id,
            task: *task,
        })?
        .compensate
        .is_some();
    let state = &mut workflow.tasks[*task as usize];
    let execution = if *compensation {
        state
            .compensation
            .get_or_insert_with(|| Box::new(Execution::new(TaskStatus::Blocked)))
    } else {
        &mut state.run
    };
    if agent.is_some() {
        execution.agent.clone_from(agent);
    }
    track_attempt(
        execution,
        at,
        *status,
        *attempt,
        *outcome,
        detail.as_deref(),
    );
    execution.status = *status;
    execution.attempt = *attempt;
    if matches!(
        status,
        TaskStatus::Dispatched | TaskStatus::Ready | TaskStatus::Backoff
    ) {
        execution.lookups = *lookups;
        execution.settling = *settling;
    }
    if let Some(deadline) = deadline {
        execution.deadline = *deadline;
    }
    if output.is_some() {
        execution.output.clone_from(output);
    }
    if let Some(retry_at) = retry_at {
        execution.retry_at = *retry_at;
    }
    if execution.started_at == 0 && !matches!(status, TaskStatus::Blocked) {
        execution.started_at = at;
    }
    if status.is_terminal() {
        execution.finished_at = at;
    }
    if matches!(status, TaskStatus::Failed)
        || detail.is_some() && matches!(status, TaskStatus::Backoff)
    {
        execution.error.clone_from(detail);
    }
    track_compensations(workflow, *task, *compensation, *status, has_compensation);
    Ok(())
}

/// The compensation stack as a change moves it: a succeeded task with a compensation
/// joins it; a compensation that starts, ends or is not sent leaves it.
fn track_compensations(
    workflow: &mut Workflow,
    task: u32,
    compensation: bool,
    status: TaskStatus,
    has_compensation: bool,
) {
    if compensation {
        match status {
            TaskStatus::Ready => {
                workflow.compensation_stack.retain(|t| *t != task);
                workflow.compensating = Some(task);
            }
            TaskStatus::Compensated => {
                workflow.tasks[task as usize].run.status = TaskStatus::Compensated;
                workflow.compensating = None;
            }
            TaskStatus::Skipped => {
                workflow.compensation_stack.retain(|t| *t != task);
                workflow.compensating = None;
            }
            TaskStatus::Failed => {
                workflow.compensation_stack.retain(|t| *t != task);
                workflow.compensation_failures += 1;
                workflow.compensating = None;
            }
            _ => {}
        }
    } else if status == TaskStatus::Succeeded
        && has_compensation
        && !workflow.compensation_stack.contains(&task)
    {
        workflow.compensation_stack.push(task);
    }
}

/// Keeps an execution's attempt state and history while changes are replayed: a
/// dispatch opens an attempt; the change that ends it (backoff, success, failure) adds it
/// to the history, as the running scheduler did. The change names the outcome; logs
/// written before it did hold the outcome's class only in the detail text.
fn track_attempt(
    execution: &mut Execution,
    at: u64,
    status: TaskStatus,
    attempt: u32,
    recorded: Option<AttemptOutcome>,
    detail: Option<&str>,
) {
    let outcome = match status {
        TaskStatus::Dispatched => {
            execution.attempt_started_at = at;
            execution.attempt_open = true;
            return;
        }
        TaskStatus::Running => {
            // A lost attempt its agent reported again (see `Scheduler::heartbeat`).
            if !execution.attempt_open
                && execution
                    .history
                    .last()
                    .is_some_and(|h| h.attempt == attempt && h.outcome.is_unknown())
            {
                execution.history.pop();
                execution.attempt_open = true;
            }
            return;
        }
        TaskStatus::Ready => {
            // A refused dispatch was undone: the attempt it opened never ran.
            if attempt < execution.attempt {
                execution.attempt_open = false;
            }
            return;
        }
        _ if recorded.is_some() => recorded.unwrap_or(AttemptOutcome::Retryable),
        TaskStatus::Succeeded | TaskStatus::Compensated => AttemptOutcome::Succeeded,
        TaskStatus::Backoff => match detail.unwrap_or("") {
            d if d.contains("timed out") => AttemptOutcome::Timeout,
            d if d.contains("lease of attempt") => AttemptOutcome::LeaseExpired,
            _ => AttemptOutcome::Retryable,
        },
        TaskStatus::Failed if detail.is_some_and(|d| d.contains(" attempts)")) => {
            AttemptOutcome::Retryable
        }
        TaskStatus::Failed => AttemptOutcome::Permanent,
        TaskStatus::Cancelled => AttemptOutcome::Cancelled,
        _ => return,
    };
    let recorded = execution
        .history
        .last()
        .is_some_and(|h| h.attempt == attempt);
    if execution.attempt_open && attempt > 0 && !recorded {
        execution.history.push(AttemptRecord {
            attempt,
            agent: execution.agent.clone(),
            started_at: execution.attempt_started_at,
            finished_at: at,
            outcome,
            error: (outcome != AttemptOutcome::Succeeded)
                .then(|| detail.unwrap_or_default().to_owned()),
            lookup: execution.settling,
        });
    }
    execution.attempt_open = false;
}

impl Scheduler {
    /// Rebuilds a workflow from its snapshot and the changes after it (in order), and
    /// resumes it.
    pub fn restore(
        &mut self,
        now: u64,
        snapshot: Snapshot,
        spec: Arc<CompiledSpec>,
        changes: &[(u64, Change)],
        out: &mut Vec<Command>,
    ) -> Result<WorkflowId, RestoreError> {
        self.advance(now);
        let mut workflow = workflow_from_snapshot(snapshot, spec)?;
        let id = workflow.id;
        for (at, change) in changes {
            apply(&mut workflow, *at, change)?;
        }
        // Derived state.
        workflow.tasks_remaining = workflow
            .tasks
            .iter()
            .filter(|t| !t.run.status.is_terminal())
            .count() as u32;
        let needs: Vec<Vec<u32>> = workflow
            .spec
            .tasks
            .iter()
            .map(|t| t.needs.clone())
            .collect();
        for (index, task_needs) in needs.iter().enumerate() {
            let pending = task_needs
                .iter()
                .filter(|n| {
                    !matches!(
                        workflow.tasks[**n as usize].run.status,
                        TaskStatus::Succeeded | TaskStatus::Skipped
                    )
                })
                .count();
            workflow.tasks[index].pending_needs = pending as u32;
        }
        let status = workflow.status;
        let order = workflow.spec.topological_order.clone();
        self.workflows.insert(id, workflow);
        if status.is_terminal() {
            self.retained.push_back(id);
            return Ok(id);
        }
        self.active += 1;
        if let Some(workflow) = self.workflows.get(&id) {
            self.limits
                .readmit(&super::dispatch::WorkflowScope(workflow));
        }
        match status {
            WorkflowStatus::Compensating => self.resume_compensation(id, out),
            _ => self.resume_running(id, &order, out),
        }
        Ok(id)
    }

    fn resume_running(&mut self, id: WorkflowId, order: &[u32], out: &mut Vec<Command>) {
        if let Some(workflow) = self.workflows.get_mut(&id) {
            workflow.status = WorkflowStatus::Running;
        }
        for &task in order {
            let Some(workflow) = self.workflows.get_mut(&id) else {
                return;
            };
            if workflow.status != WorkflowStatus::Running {
                return; // a `when` error failed it while resuming
            }
            let state = &mut workflow.tasks[task as usize];
            let slot = Slot {
                workflow: id,
                task,
                compensation: false,
            };
            let kind = &workflow.spec.tasks[task as usize].kind;
            let waits = matches!(kind, crate::spec::TaskKind::Wait(_));
            let approval = matches!(kind, crate::spec::TaskKind::Approval(_));
            match state.run.status {
                TaskStatus::Running if waits => self.start_wait(id, task, true, out),
                TaskStatus::Running if approval => self.start_approval(id, task, true, out),
                TaskStatus::Ready | TaskStatus::Dispatched | TaskStatus::Running => {
                    self.resume_in_flight(slot, out);
                }
                TaskStatus::Backoff => {
                    let (at, attempt) = (state.run.retry_at, state.run.attempt);
                    self.timers.push(Reverse(Timer {
                        at,
                        slot,
                        attempt,
                        kind: TimerKind::Backoff,
                    }));
                }
                TaskStatus::Blocked if state.pending_needs == 0 => {
                    self.task_unblocked(id, task, out)
                }
                _ => {}
            }
        }
        let done = self
            .workflows
            .get(&id)
            .is_some_and(|w| w.status == WorkflowStatus::Running && w.tasks_remaining == 0);
        if done {
            self.finish_workflow(id, WorkflowStatus::Succeeded, None, out);
        }
    }

    /// A task whose outcome the store does not hold. One that was dispatched may still
    /// run on its agent: it gets one lease to be reported (an agent's opening frame lists
    /// what it runs, and adopts it) or answered; after that it runs again, with the same
    /// idempotency key. One that was only ready is queued again.
    fn resume_in_flight(&mut self, slot: Slot, out: &mut Vec<Command>) {
        let lease_until = self.now + self.config.lease_ttl.as_millis() as u64;
        let Some(execution) = self
            .workflows
            .get_mut(&slot.workflow)
            .and_then(|w| w.execution_mut(slot))
        else {
            return;
        };
        execution.attempt_open = execution.attempt > 0;
        if execution.attempt > 0 && execution.is_in_flight() {
            execution.lease_until = lease_until;
            let attempt = execution.attempt;
            self.timers.push(Reverse(Timer {
                at: execution.deadline.min(lease_until),
                slot,
                attempt,
                kind: TimerKind::Attempt,
            }));
            // Still running somewhere: it counts against the limits that do not depend
            // on its agent's gateway (unknown until the agent is back).
            if !self.limits.is_empty() {
                let workflow = &self.workflows[&slot.workflow];
                let compiled = &workflow.spec.tasks[slot.task as usize];
                let skill = match (&compiled.compensate, slot.compensation) {
                    (Some(compensation), true) => compensation.skill.as_str(),
                    _ => compiled.skill().unwrap_or_default(),
                };
                let scope = super::dispatch::WorkflowScope(workflow);
                self.limits
                    .acquire(self.now, slot, attempt, skill, None, &scope);
            }
        } else {
            self.make_ready(slot, out);
        }
    }

    fn resume_compensation(&mut self, id: WorkflowId, out: &mut Vec<Command>) {
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        let mut settle = Vec::new();
        let mut backoffs = Vec::new();
        for (index, state) in workflow.tasks.iter_mut().enumerate() {
            let task = index as u32;
            match state.run.status {
                // Outcome unknown: run it again (same key) to settle it.
                TaskStatus::Ready | TaskStatus::Dispatched | TaskStatus::Running
                    if state.run.attempt > 0 =>
                {
                    state.run.attempt_open = true;
                    settle.push(task);
                }
                TaskStatus::Backoff => backoffs.push((task, state.run.retry_at, state.run.attempt)),
                status if !status.is_terminal() => state.run.status = TaskStatus::Cancelled,
                _ => {}
            }
        }
        if let Some(task) = workflow.compensating.take() {
            let interrupted = workflow.tasks[task as usize]
                .compensation
                .as_ref()
                .is_some_and(|c| !c.status.is_terminal());
            if interrupted {
                workflow.compensation_stack.push(task);
            }
        }
        for task in settle {
            self.resume_in_flight(
                Slot {
                    workflow: id,
                    task,
                    compensation: false,
                },
                out,
            );
        }
        for (task, at, attempt) in backoffs {
            let slot = Slot {
                workflow: id,
                task,
                compensation: false,
            };
            self.timers.push(Reverse(Timer {
                at,
                slot,
                attempt,
                kind: TimerKind::Backoff,
            }));
        }
        self.continue_compensation(id, out);
    }
}

/// A workflow as its snapshot holds it, without the changes after it: how a stored
/// workflow that left memory is shown (see `catalog`).
pub fn workflow_from_snapshot(
    snapshot: Snapshot,
    spec: Arc<CompiledSpec>,
) -> Result<Workflow, RestoreError> {
    let id: WorkflowId = snapshot
        .id
        .parse()
        .map_err(|_| RestoreError::BadId(snapshot.id.clone()))?;
    if snapshot.tasks.len() != spec.tasks.len() {
        return Err(RestoreError::Shape {
            id,
            snapshot: snapshot.tasks.len(),
            spec: spec.tasks.len(),
            spec_hash: spec.hash.clone(),
        });
    }
    Ok(Workflow {
        id,
        spec,
        input: Arc::new(snapshot.input),
        priority: snapshot.priority,
        labels: snapshot.labels,
        idempotency_key: snapshot.idempotency_key,
        traceparent: snapshot.traceparent,
        trace_parent_span: snapshot.trace_parent_span,
        tracestate: snapshot.tracestate,
        status: snapshot.status,
        tasks: snapshot.tasks,
        error: snapshot.error,
        created_at: snapshot.created_at,
        updated_at: snapshot.updated_at,
        tasks_remaining: 0,
        compensation_stack: snapshot.compensation_stack,
        compensating: snapshot.compensating,
        compensation_failures: snapshot.compensation_failures,
        cancel_requested: snapshot.cancel_requested,
        paused: snapshot.paused.clone(),
    })
}
