//! Task transitions: readiness and `when`, results, retries with backoff, abandoned
//! attempts, settlement, failure. Stopping a workflow and compensating it: `compensation`.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::{Map, Value};

use super::{
    AttemptOutcome, AttemptRecord, Change, Command, Outcome, ReadyEntry, Scheduler, Slot, Timer,
    TimerKind, record,
};
use crate::model::{AgentId, TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::{RetryPolicy, TaskKind};

/// The error of an attempt its agent stopped on a cancellation.
pub(super) const CANCELLED_BY_AGENT: &str = "cancelled by the agent";

impl Scheduler {
    /// All needs of a task finished: skip it, pass it (checkpoint) or make it ready.
    pub(super) fn task_unblocked(&mut self, id: WorkflowId, task: u32, out: &mut Vec<Command>) {
        let now = self.now;
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        if workflow.status != WorkflowStatus::Running {
            return;
        }
        let spec = workflow.spec.clone();
        let compiled = &spec.tasks[task as usize];
        let upstream_skipped = compiled
            .needs
            .iter()
            .any(|n| workflow.tasks[*n as usize].run.status == TaskStatus::Skipped);
        if upstream_skipped {
            self.finish_task(
                id,
                task,
                TaskStatus::Skipped,
                None,
                Some("an upstream task was skipped".into()),
                out,
            );
            return;
        }
        if let Some(condition) = &compiled.when {
            let (inputs, tasks, meta) = condition_context(workflow);
            match condition.evaluate(&inputs, &tasks, &meta) {
                Ok(true) => {}
                Ok(false) => {
                    let detail = format!("when `{}` is false", condition.source());
                    self.finish_task(id, task, TaskStatus::Skipped, None, Some(detail), out);
                    return;
                }
                Err(error) => {
                    self.fail_task(
                        Slot {
                            workflow: id,
                            task,
                            compensation: false,
                        },
                        error,
                        out,
                    );
                    return;
                }
            }
        }
        if matches!(compiled.kind, TaskKind::Checkpoint { verify: None }) {
            self.finish_task(
                id,
                task,
                TaskStatus::Succeeded,
                None,
                Some("checkpoint passed".into()),
                out,
            );
            return;
        }
        if matches!(compiled.kind, TaskKind::Wait(_)) {
            self.start_wait(id, task, false, out);
            return;
        }
        if matches!(compiled.kind, TaskKind::Approval(_)) {
            self.start_approval(id, task, false, out);
            return;
        }
        if let Some(workflow) = self.workflows.get_mut(&id) {
            workflow.tasks[task as usize].run.started_at = now;
        }
        self.make_ready(
            Slot {
                workflow: id,
                task,
                compensation: false,
            },
            out,
        );
    }

    /// A task that waits for something no agent does (a `waitFor`, an approval) starts
    /// waiting: running, with the detail `describe` gives (from when it started) recorded
    /// unless it resumes after a restart. Returns when it started: its timeout counts
    /// from then, across restarts.
    pub(super) fn begin_waiting(
        &mut self,
        id: WorkflowId,
        task: u32,
        resumed: bool,
        describe: impl FnOnce(u64) -> String,
        out: &mut Vec<Command>,
    ) -> Option<u64> {
        let now = self.now;
        let workflow = self.workflows.get_mut(&id)?;
        let execution = &mut workflow.tasks[task as usize].run;
        execution.status = TaskStatus::Running;
        if execution.started_at == 0 {
            execution.started_at = now;
        }
        let started_at = execution.started_at;
        if !resumed {
            workflow.updated_at = now;
            let detail = describe(started_at);
            record(
                out,
                id,
                now,
                Change::task(task, false, TaskStatus::Running, 0, None, Some(detail)),
            );
        }
        Some(started_at)
    }

    /// Puts a slot in its skill's ready queue.
    pub(super) fn make_ready(&mut self, slot: Slot, out: &mut Vec<Command>) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        execution.status = TaskStatus::Ready;
        execution.ready_at = now;
        let (attempt, lookups, settling) =
            (execution.attempt, execution.lookups, execution.settling);
        workflow.updated_at = now;
        record(
            out,
            slot.workflow,
            now,
            Change::task(
                slot.task,
                slot.compensation,
                TaskStatus::Ready,
                attempt,
                None,
                None,
            )
            .with_attempt_facts(None, None, lookups, settling),
        );
        self.enqueue(slot, attempt, now);
    }

    /// Queues a ready slot for its skill's agents.
    pub(super) fn enqueue(&mut self, slot: Slot, attempt: u32, ready_at: super::Millis) {
        let Some(workflow) = self.workflows.get(&slot.workflow) else {
            return;
        };
        let priority = workflow.priority;
        let compiled = &workflow.spec.tasks[slot.task as usize];
        let skill: Arc<str> = if slot.compensation {
            compiled
                .compensate
                .as_ref()
                .map_or("", |c| c.skill.as_str())
                .into()
        } else {
            compiled.skill().unwrap_or_default().into()
        };
        // Only with a fairness key does a ready task's queue depend on its workflow.
        let key = match self.limits.rules().fairness_key {
            None => None,
            Some(_) => self
                .limits
                .rules()
                .fairness_key(&super::dispatch::WorkflowScope(workflow)),
        };
        self.mark_dirty(&skill);
        if let Some(queue) = self.skills.get_mut(&skill) {
            queue.ready[priority.index()].push_back(
                ReadyEntry {
                    slot,
                    attempt,
                    ready_at,
                },
                key,
            );
        }
    }

    /// A result from an agent.
    pub(super) fn result(
        &mut self,
        agent: &AgentId,
        slot: Slot,
        attempt: u32,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        self.agent_answered(agent, slot, &outcome);
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        let latency_ms = now.saturating_sub(execution.attempt_started_at);
        // A late answer to a replaced attempt has no say; it only ends that attempt.
        let failed = match &outcome {
            _ if execution.attempt != attempt => None,
            Outcome::Retryable { .. } | Outcome::Unknown { .. } => Some(true),
            Outcome::Succeeded { .. } | Outcome::Permanent { .. } => Some(false),
            Outcome::Cancelled | Outcome::Refused => None,
        };
        self.breaker_record(agent, (slot, attempt), failed, latency_ms, out);
        self.limits_release(slot, attempt);
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        if execution.is_lost_attempt(attempt) {
            // The late answer of an attempt given up for a lost agent: it counts.
            execution.history.pop();
            execution.attempt_open = true;
        }
        if execution.attempt != attempt || !execution.attempt_open {
            return; // stale: that attempt was abandoned or already answered
        }
        if outcome == Outcome::Refused {
            // Never started: undo the dispatch, so it costs no attempt, and queue it again.
            execution.attempt -= 1;
            if execution.settling {
                execution.lookups = execution.lookups.saturating_sub(1);
            }
            execution.attempt_open = false;
            self.make_ready(slot, out);
            return;
        }
        execution.attempt_open = false;
        let (class, error) = match &outcome {
            Outcome::Succeeded { .. } => (AttemptOutcome::Succeeded, None),
            Outcome::Retryable { error } => (AttemptOutcome::Retryable, Some(error.clone())),
            Outcome::Unknown { error } => (AttemptOutcome::Unknown, Some(error.clone())),
            Outcome::Permanent { error } => (AttemptOutcome::Permanent, Some(error.clone())),
            Outcome::Cancelled | Outcome::Refused => (
                AttemptOutcome::Cancelled,
                Some(CANCELLED_BY_AGENT.to_owned()),
            ),
        };
        execution.history.push(AttemptRecord {
            attempt,
            agent: Some(agent.clone()),
            started_at: execution.attempt_started_at,
            finished_at: now,
            outcome: class,
            error,
            lookup: execution.settling,
        });
        if matches!(
            outcome,
            Outcome::Succeeded { .. } | Outcome::Permanent { .. }
        ) {
            // A definite answer: the effect's outcome is known.
            execution.settling = false;
        }
        if matches!(outcome, Outcome::Succeeded { .. }) {
            execution.agent = Some(agent.clone());
        }
        match outcome {
            Outcome::Succeeded { output } if slot.compensation => {
                let compensated = TaskStatus::Compensated;
                self.compensation_finished(slot, compensated, None, Some(output), out);
            }
            Outcome::Succeeded { output } => {
                let (id, task) = (slot.workflow, slot.task);
                let succeeded = TaskStatus::Succeeded;
                self.finish_task(id, task, succeeded, Some(output), None, out);
            }
            Outcome::Permanent { error } => self.fail_task(slot, error, out),
            Outcome::Retryable { error } | Outcome::Unknown { error } => {
                self.retry_or_fail(slot, error, out);
            }
            Outcome::Cancelled | Outcome::Refused => {
                self.retry_or_fail(slot, CANCELLED_BY_AGENT.into(), out);
            }
        }
    }

    /// What an answer says about its agent: a free slot, and its health (retryable and
    /// unknown answers in a row mark it unhealthy for a cool-down; a refusal or a
    /// cancellation says nothing).
    fn agent_answered(&mut self, agent: &AgentId, slot: Slot, outcome: &Outcome) {
        let now = self.now;
        let Some(agent_slot) = self.agents.get_mut(agent) else {
            return;
        };
        agent_slot.assigned.remove(&slot);
        match outcome {
            Outcome::Retryable { .. } | Outcome::Unknown { .. } => {
                agent_slot.consecutive_failures += 1;
                if agent_slot.consecutive_failures >= self.config.unhealthy_failures {
                    agent_slot.unhealthy_until =
                        now + self.config.unhealthy_cooldown.as_millis() as u64;
                }
            }
            Outcome::Succeeded { .. } | Outcome::Permanent { .. } => {
                agent_slot.consecutive_failures = 0;
                agent_slot.completed += 1;
            }
            Outcome::Cancelled | Outcome::Refused => {}
        }
    }

    /// Gives up on an in-flight attempt (timeout, lease expiry): cancel it on its agent,
    /// ignore its result from now on, and retry or fail.
    pub(super) fn abandon_attempt(
        &mut self,
        slot: Slot,
        outcome: AttemptOutcome,
        error: String,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        execution.attempt_open = false;
        let attempt = execution.attempt;
        let agent = execution.agent.clone();
        let latency_ms = now.saturating_sub(execution.attempt_started_at);
        execution.history.push(AttemptRecord {
            attempt,
            agent: agent.clone(),
            started_at: execution.attempt_started_at,
            finished_at: now,
            outcome,
            error: Some(error.clone()),
            lookup: execution.settling,
        });
        if let Some(agent) = &agent
            && let Some(agent_slot) = self.agents.get_mut(agent)
            && agent_slot.assigned.get(&slot) == Some(&attempt)
        {
            out.push(Command::Cancel {
                agent: agent.clone(),
                slot,
                attempt,
            });
        }
        if let Some(agent) = &agent {
            // A gateway that hangs trips its breaker like one that fails; an expired lease
            // (the agent went silent) says nothing about the gateway.
            let failed = (outcome == AttemptOutcome::Timeout).then_some(true);
            self.breaker_record(agent, (slot, attempt), failed, latency_ms, out);
        }
        self.limits_release(slot, attempt);
        self.retry_or_fail(slot, error, out);
    }

    /// The agent holding an attempt went away. The attempt counts (a task whose input
    /// crashes its execution unit must not loop forever) and is retried after its
    /// backoff; until then the agent may come back and report it, and it is taken back
    /// (see `Execution::is_lost_attempt`).
    pub(super) fn requeue_lost(
        &mut self,
        slot: Slot,
        attempt: u32,
        outcome: AttemptOutcome,
        error: &str,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        if execution.attempt != attempt || !execution.attempt_open || !execution.is_in_flight() {
            return;
        }
        execution.history.push(AttemptRecord {
            attempt,
            agent: execution.agent.clone(),
            started_at: execution.attempt_started_at,
            finished_at: now,
            outcome,
            error: Some(error.to_owned()),
            lookup: execution.settling,
        });
        // Closed until the agent reports it again; also in a failing workflow, whose
        // outcome must be settled (see `stop_workflow`).
        execution.attempt_open = false;
        self.retry_or_fail(slot, error.to_owned(), out);
    }

    /// An attempt (or lookup) ended without a definite answer: retry after a backoff,
    /// settle, or fail. `max_attempts` bounds the attempts at the effect; when they run
    /// out and any of them may have taken effect, the task is settled by lookups (same
    /// key) before it may fail, so a failed workflow never leaves an effect dangling.
    fn retry_or_fail(&mut self, slot: Slot, error: String, out: &mut Vec<Command>) {
        let settle_lookups_max = self.config.settle_lookups_max;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let spec = workflow.spec.clone();
        let compiled = &spec.tasks[slot.task as usize];
        let policy = match (&compiled.compensate, slot.compensation) {
            (Some(compensation), true) => compensation.retry,
            _ => compiled.retry,
        };
        let settled_by_cancel =
            !slot.compensation && workflow.cancel_requested && error == CANCELLED_BY_AGENT;
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        if settled_by_cancel {
            // The operator cancelled and the agent stopped the task: settled.
            execution.status = TaskStatus::Cancelled;
            execution.attempt_open = false;
            self.continue_compensation(slot.workflow, out);
            return;
        }
        // In a failing workflow the task is retried too: its outcome must be known before
        // the workflow ends, so that a success is compensated.
        let attempts = execution.effect_attempts();
        if execution.settling && execution.lookups >= settle_lookups_max {
            let error = format!(
                "outcome unknown after {attempts} attempts and {} lookups: {error}; \
                 reconcile the effect by its idempotency key",
                execution.lookups
            );
            self.fail_task(slot, error, out);
            return;
        }
        if !execution.settling && attempts >= policy.max_attempts {
            let maybe_taken = execution
                .history
                .iter()
                .any(|h| !h.lookup && h.outcome.is_unknown());
            if !maybe_taken {
                let error = format!("{error} (after {attempts} attempts)");
                self.fail_task(slot, error, out);
                return;
            }
            execution.settling = true;
        }
        self.schedule_retry(slot, policy, error, out);
    }

    /// Puts a task in backoff: the next attempt after the policy's delay, or, while
    /// settling, the next lookup after the settlement backoff.
    fn schedule_retry(
        &mut self,
        slot: Slot,
        policy: RetryPolicy,
        error: String,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let settle_lookups_max = self.config.settle_lookups_max;
        let settle_policy = RetryPolicy {
            max_attempts: settle_lookups_max,
            initial: self.config.settle_backoff_initial,
            max: self.config.settle_backoff_max,
            multiplier: 2.0,
        };
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.execution_mut(slot) else {
            return;
        };
        let outcome = execution.current_outcome();
        let attempts = execution.effect_attempts();
        let seed =
            (slot.workflow.0 as u64) ^ (u64::from(slot.task) << 32) ^ u64::from(execution.attempt);
        let (delay, detail) = if execution.settling {
            let lookup = execution.lookups + 1;
            let delay = backoff_delay(&settle_policy, lookup, seed);
            let detail = format!(
                "settling: lookup {lookup} of {settle_lookups_max} in {}ms, the outcome of \
                 {attempts} attempts is unknown: {error}",
                delay.as_millis()
            );
            (delay, detail)
        } else {
            let delay = backoff_delay(&policy, attempts, seed);
            (delay, format!("retry in {}ms: {error}", delay.as_millis()))
        };
        let at = now + delay.as_millis() as u64;
        execution.status = TaskStatus::Backoff;
        execution.retry_at = at;
        execution.error = Some(error.clone());
        let (attempt, lookups, settling) =
            (execution.attempt, execution.lookups, execution.settling);
        workflow.updated_at = now;
        record(
            out,
            slot.workflow,
            now,
            Change::Task {
                task: slot.task,
                compensation: slot.compensation,
                status: TaskStatus::Backoff,
                attempt,
                agent: None,
                detail: Some(detail),
                output: None,
                retry_at: Some(at),
                deadline: None,
                outcome,
                lookups,
                settling,
            },
        );
        self.timers.push(Reverse(Timer {
            at,
            slot,
            attempt,
            kind: TimerKind::Backoff,
        }));
    }

    /// A task failed for good: the workflow fails (or a compensation failed).
    pub(super) fn fail_task(&mut self, slot: Slot, error: String, out: &mut Vec<Command>) {
        self.fail_task_with_output(slot, error, None, out);
    }

    /// As [`Scheduler::fail_task`], keeping an output with the failure (a rejected
    /// approval's decision).
    pub(super) fn fail_task_with_output(
        &mut self,
        slot: Slot,
        error: String,
        output: Option<Arc<str>>,
        out: &mut Vec<Command>,
    ) {
        if slot.compensation {
            self.compensation_finished(slot, TaskStatus::Failed, Some(error), None, out);
            return;
        }
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let task_id = workflow.task_id(slot.task).to_owned();
        let task = &mut workflow.tasks[slot.task as usize];
        let was_terminal = task.run.status.is_terminal();
        task.run.status = TaskStatus::Failed;
        task.run.error = Some(error.clone());
        if output.is_some() {
            task.run.output.clone_from(&output);
        }
        task.run.finished_at = now;
        task.run.settling = false;
        let attempt = task.run.attempt;
        let outcome = task.run.current_outcome();
        if !was_terminal {
            workflow.tasks_remaining -= 1;
        }
        record(
            out,
            slot.workflow,
            now,
            Change::task(
                slot.task,
                false,
                TaskStatus::Failed,
                attempt,
                None,
                Some(error.clone()),
            )
            .with_output(output)
            .with_attempt_facts(None, outcome, 0, false),
        );
        if workflow.status == WorkflowStatus::Running {
            self.stop_workflow(
                slot.workflow,
                format!("task `{task_id}` failed: {error}"),
                out,
            );
        } else {
            self.continue_compensation(slot.workflow, out);
        }
    }

    /// Marks a task terminal and releases its dependents.
    pub(super) fn finish_task(
        &mut self,
        id: WorkflowId,
        task: u32,
        status: TaskStatus,
        output: Option<Arc<str>>,
        detail: Option<String>,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        let spec = workflow.spec.clone();
        let compiled = &spec.tasks[task as usize];
        let state = &mut workflow.tasks[task as usize];
        state.run.status = status;
        state.run.finished_at = now;
        if state.run.started_at == 0 {
            state.run.started_at = now;
        }
        let recorded_output = output.clone();
        state.run.output = output;
        let attempt = state.run.attempt;
        let agent = state.run.agent.clone();
        let outcome = state.run.current_outcome();
        workflow.tasks_remaining -= 1;
        workflow.updated_at = now;
        if status == TaskStatus::Succeeded && compiled.compensate.is_some() {
            workflow.compensation_stack.push(task);
        }
        record(
            out,
            id,
            now,
            Change::Task {
                task,
                compensation: false,
                status,
                attempt,
                agent,
                detail,
                output: recorded_output,
                retry_at: None,
                deadline: None,
                outcome,
                lookups: 0,
                settling: false,
            },
        );
        if status == TaskStatus::Succeeded && compiled.is_checkpoint() {
            // Workflows waiting on this one's checkpoint count it.
            self.workflow_progressed(id, out);
        }
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        if workflow.status != WorkflowStatus::Running {
            // A late answer after the workflow began failing: a success is compensated.
            self.continue_compensation(id, out);
            return;
        }
        if workflow.tasks_remaining == 0 {
            self.finish_workflow(id, WorkflowStatus::Succeeded, None, out);
            return;
        }
        for &dependent in &compiled.dependents {
            let Some(workflow) = self.workflows.get_mut(&id) else {
                return;
            };
            let state = &mut workflow.tasks[dependent as usize];
            state.pending_needs -= 1;
            if state.pending_needs == 0 {
                self.task_unblocked(id, dependent, out);
            }
        }
    }
}

/// The `inputs`, `tasks` and `workflow` variables a `when` expression sees.
pub(super) fn condition_context(workflow: &super::Workflow) -> (Value, Value, Value) {
    let mut tasks = Map::new();
    for (index, task) in workflow.tasks.iter().enumerate() {
        let mut entry = Map::new();
        entry.insert(
            "status".into(),
            Value::String(task.run.status.as_str().into()),
        );
        if let Some(output) = &task.run.output {
            entry.insert(
                "output".into(),
                serde_json::from_str(output).unwrap_or(Value::Null),
            );
        }
        tasks.insert(
            workflow.task_id(index as u32).to_owned(),
            Value::Object(entry),
        );
    }
    let meta = serde_json::json!({"id": workflow.id.to_string(), "name": workflow.spec.name});
    ((*workflow.input).clone(), Value::Object(tasks), meta)
}

/// The delay before retry number `attempt` (1-based): exponential with jitter, by backon,
/// seeded so the core stays deterministic.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, seed: u64) -> Duration {
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(policy.initial)
        .with_max_delay(policy.max)
        .with_factor(policy.multiplier)
        .with_jitter()
        .with_jitter_seed(seed)
        .with_max_times(attempt.max(1) as usize)
        .build();
    delays
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(policy.max)
}
