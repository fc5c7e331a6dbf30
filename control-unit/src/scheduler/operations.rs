//! Operators' hands on work already accepted (docs/operations.md): pause and resume a
//! workflow, retry a failed workflow from its failed task, re-drive one from a checkpoint.
//! Each is a recorded change, so a restart keeps it, and each refuses with the reason
//! where it makes no sense.
//!
//! Idempotency keys across a retry or a re-drive: a task that is run again keeps its key
//! (`WORKFLOW:TASK`) when an effect may have been taken under it — it succeeded, or an
//! attempt's outcome is unknown — so the gateway answers the stored result instead of
//! taking the effect twice; a task whose every attempt failed definitely (no effect was
//! taken) gets a new key generation (`WORKFLOW:TASK:rN`), so a declined payment can be
//! tried again as a new attempt, as Hyperswitch makes a new payment attempt.

use std::collections::BTreeSet;

use super::state::Execution;
use super::{Change, Command, Scheduler, Slot, Workflow, record};
use crate::model::{TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::TaskKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error(
        "workflow {0} is not in this control unit's memory: it never existed, or it ended long ago and only its record is kept"
    )]
    NotFound(WorkflowId),
    /// The operation makes no sense in the workflow's state: why.
    #[error("{0}")]
    Refused(String),
    /// A task or checkpoint the workflow's spec does not have, or of the wrong kind.
    #[error("{0}")]
    Invalid(String),
}

/// What a retry or a re-drive reset, for the recorded change and its replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reset {
    /// Tasks run again.
    pub tasks: Vec<u32>,
    /// Of those, the ones that get a new idempotency key generation.
    pub new_keys: Vec<u32>,
}

impl Scheduler {
    /// Holds the workflow's dispatches: nothing new goes to an agent until it is resumed;
    /// what runs finishes. Returns its status.
    pub fn pause(
        &mut self,
        now: u64,
        id: WorkflowId,
        reason: &str,
        out: &mut Vec<Command>,
    ) -> Result<WorkflowStatus, OperationError> {
        let workflow = self.operated(now, id)?;
        if workflow.status.is_terminal() {
            return Err(OperationError::Refused(format!(
                "workflow {id} is {}: only a running workflow can be paused",
                workflow.status.as_str()
            )));
        }
        if let Some(paused) = &workflow.paused {
            return Err(OperationError::Refused(format!(
                "workflow {id} is paused already ({paused})"
            )));
        }
        workflow.paused = Some(reason.to_owned());
        workflow.updated_at = now;
        record(
            out,
            id,
            now,
            Change::Paused {
                reason: reason.to_owned(),
            },
        );
        Ok(workflow.status)
    }

    /// Lets a paused workflow's tasks go to agents again.
    pub fn resume(
        &mut self,
        now: u64,
        id: WorkflowId,
        out: &mut Vec<Command>,
    ) -> Result<WorkflowStatus, OperationError> {
        let workflow = self.operated(now, id)?;
        if workflow.paused.is_none() {
            return Err(OperationError::Refused(format!(
                "workflow {id} is not paused (it is {})",
                workflow.status.as_str()
            )));
        }
        workflow.paused = None;
        workflow.updated_at = now;
        let status = workflow.status;
        record(out, id, now, Change::Resumed);
        self.requeue_ready(id);
        Ok(status)
    }

    /// The workflow an operation is on, at `now`.
    fn operated(&mut self, now: u64, id: WorkflowId) -> Result<&mut Workflow, OperationError> {
        self.advance(now);
        self.workflows
            .get_mut(&id)
            .ok_or(OperationError::NotFound(id))
    }

    /// Puts a workflow's ready tasks back in their queues (their entries were dropped
    /// while it was paused). A duplicate entry is harmless: the first dispatch makes the
    /// other stale.
    fn requeue_ready(&mut self, id: WorkflowId) {
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        let mut ready = Vec::new();
        for (index, task) in workflow.tasks.iter().enumerate() {
            for (execution, compensation) in [
                (Some(&task.run), false),
                (task.compensation.as_deref(), true),
            ] {
                if let Some(execution) = execution.filter(|e| e.status == TaskStatus::Ready) {
                    ready.push((
                        Slot {
                            workflow: id,
                            task: index as u32,
                            compensation,
                        },
                        execution.attempt,
                        execution.ready_at,
                    ));
                }
            }
        }
        for (slot, attempt, ready_at) in ready {
            self.enqueue(slot, attempt, ready_at);
        }
    }

    /// Runs a failed workflow again from its failed task (`task`: that task's id; `None`:
    /// whichever failed). Refused when the workflow did not fail, or when anything was
    /// undone (a compensation was sent): resuming on undone effects is not safe, submit
    /// it again instead. Returns the tasks run again.
    pub fn retry(
        &mut self,
        now: u64,
        id: WorkflowId,
        task: Option<&str>,
        out: &mut Vec<Command>,
    ) -> Result<Vec<String>, OperationError> {
        let workflow = &*self.operated(now, id)?;
        if workflow.status != WorkflowStatus::Failed {
            return Err(OperationError::Refused(format!(
                "workflow {id} is {}: only a failed workflow can be retried",
                workflow.status.as_str()
            )));
        }
        let failed: Vec<u32> = (0..workflow.tasks.len() as u32)
            .filter(|t| workflow.tasks[*t as usize].run.status == TaskStatus::Failed)
            .collect();
        if let Some(name) = task {
            let index = task_index(workflow, name)?;
            if !failed.contains(&index) {
                return Err(OperationError::Refused(format!(
                    "task `{name}` of workflow {id} is {}: only a failed task can be retried",
                    workflow.tasks[index as usize].run.status.as_str()
                )));
            }
        }
        undone_nothing(workflow)?;
        let reset = plan_reset(workflow, &BTreeSet::new());
        self.reopen(id, reset, out)
    }

    /// Runs a workflow again from a checkpoint it passed: the checkpoint and every task
    /// after it, and whatever did not succeed. For a failed workflow (nothing undone) or
    /// a succeeded one; tasks that took effects keep their keys, so nothing is taken
    /// twice. Returns the tasks run again.
    pub fn redrive(
        &mut self,
        now: u64,
        id: WorkflowId,
        checkpoint: &str,
        out: &mut Vec<Command>,
    ) -> Result<Vec<String>, OperationError> {
        let workflow = &*self.operated(now, id)?;
        let index = task_index(workflow, checkpoint)?;
        if !matches!(
            workflow.spec.tasks[index as usize].kind,
            TaskKind::Checkpoint { .. }
        ) {
            return Err(OperationError::Invalid(format!(
                "task `{checkpoint}` of {} is not a checkpoint: a workflow is re-driven from a checkpoint",
                workflow.spec.name
            )));
        }
        if !matches!(
            workflow.status,
            WorkflowStatus::Failed | WorkflowStatus::Succeeded
        ) {
            return Err(OperationError::Refused(format!(
                "workflow {id} is {}: only a failed or succeeded workflow can be re-driven (pause a running one, or cancel it)",
                workflow.status.as_str()
            )));
        }
        if workflow.tasks[index as usize].run.status != TaskStatus::Succeeded {
            return Err(OperationError::Refused(format!(
                "checkpoint `{checkpoint}` of workflow {id} never passed ({}): retry the workflow instead",
                workflow.tasks[index as usize].run.status.as_str()
            )));
        }
        undone_nothing(workflow)?;
        let mut from = BTreeSet::from([index]);
        // Every task after the checkpoint, transitively.
        loop {
            let more: Vec<u32> = workflow
                .spec
                .tasks
                .iter()
                .filter(|t| !from.contains(&t.index) && t.needs.iter().any(|n| from.contains(n)))
                .map(|t| t.index)
                .collect();
            if more.is_empty() {
                break;
            }
            from.extend(more);
        }
        let reset = plan_reset(workflow, &from);
        self.reopen(id, reset, out)
    }

    /// Applies a reset to a workflow in memory: records it, counts the workflow active
    /// again, and starts the tasks whose needs are met.
    fn reopen(
        &mut self,
        id: WorkflowId,
        reset: Reset,
        out: &mut Vec<Command>,
    ) -> Result<Vec<String>, OperationError> {
        let now = self.now;
        if self.active >= self.config.workflows_active_max {
            return Err(OperationError::Refused(format!(
                "{} workflows are running, the limit is {}: retry later",
                self.active, self.config.workflows_active_max
            )));
        }
        let workflow = self
            .workflows
            .get(&id)
            .ok_or(OperationError::NotFound(id))?;
        if let Err((key, active, limit)) =
            self.limits.admit(&super::dispatch::WorkflowScope(workflow))
        {
            return Err(OperationError::Refused(format!(
                "{active} workflows of key `{key}` are running, its limit is {limit}: retry later"
            )));
        }
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return Err(OperationError::NotFound(id));
        };
        apply_reset(workflow, &reset);
        workflow.status = WorkflowStatus::Running;
        workflow.updated_at = now;
        let names = reset
            .tasks
            .iter()
            .map(|t| workflow.task_id(*t).to_owned())
            .collect();
        record(out, id, now, Change::Reopened(reset.clone()));
        record(
            out,
            id,
            now,
            Change::Workflow {
                status: WorkflowStatus::Running,
                detail: None,
            },
        );
        self.active += 1;
        if let Some(position) = self.retained.iter().position(|w| *w == id) {
            self.retained.remove(position);
        }
        let ready: Vec<u32> = self
            .workflows
            .get(&id)
            .map(|w| {
                reset
                    .tasks
                    .iter()
                    .copied()
                    .filter(|t| w.tasks[*t as usize].pending_needs == 0)
                    .collect()
            })
            .unwrap_or_default();
        for task in ready {
            self.task_unblocked(id, task, out);
        }
        Ok(names)
    }
}

fn task_index(workflow: &Workflow, name: &str) -> Result<u32, OperationError> {
    workflow
        .spec
        .tasks
        .iter()
        .find(|t| t.id == name)
        .map(|t| t.index)
        .ok_or_else(|| {
            OperationError::Invalid(format!(
                "workflow {} ({}) has no task `{name}`",
                workflow.id, workflow.spec.name
            ))
        })
}

/// Refuses when a compensation was sent: an effect may have been undone.
fn undone_nothing(workflow: &Workflow) -> Result<(), OperationError> {
    let undone = workflow.tasks.iter().enumerate().find(|(_, t)| {
        t.compensation
            .as_ref()
            .is_some_and(|c| c.attempt > 0 || c.status == TaskStatus::Compensated)
    });
    match undone {
        Some((index, _)) => Err(OperationError::Refused(format!(
            "workflow {} was compensated (task `{}` was undone): running it again would build on undone effects; submit it again instead",
            workflow.id,
            workflow.task_id(index as u32)
        ))),
        None => Ok(()),
    }
}

/// The tasks to run again: `from`, and every task that did not succeed (or was not
/// skipped); which of them get a new key generation.
fn plan_reset(workflow: &Workflow, from: &BTreeSet<u32>) -> Reset {
    let mut tasks = Vec::new();
    let mut new_keys = Vec::new();
    for (index, task) in workflow.tasks.iter().enumerate() {
        let index = index as u32;
        let finished_well = matches!(task.run.status, TaskStatus::Succeeded | TaskStatus::Skipped);
        if finished_well && !from.contains(&index) {
            continue;
        }
        tasks.push(index);
        if definitely_untaken(&task.run) {
            new_keys.push(index);
        }
    }
    Reset { tasks, new_keys }
}

/// The task's last run failed, it had attempts, and every one of them failed
/// definitely: no effect was taken under its key.
fn definitely_untaken(run: &Execution) -> bool {
    run.status == TaskStatus::Failed
        && run.attempt > run.attempts_before
        && !run
            .history
            .iter()
            .filter(|h| h.attempt > run.attempts_before)
            .any(|h| !h.lookup && h.outcome.is_unknown())
}

/// Resets the tasks of `reset` to wait for their needs again (and a new key generation
/// where it says), and the workflow's compensation bookkeeping to match: the same for a
/// live reset and for its replay after a restart.
pub(super) fn apply_reset(workflow: &mut Workflow, reset: &Reset) {
    for &task in &reset.tasks {
        let state = &mut workflow.tasks[task as usize];
        let run = &mut state.run;
        let mut fresh = Execution::new(TaskStatus::Blocked);
        fresh.attempt = run.attempt;
        fresh.attempts_before = run.attempt;
        fresh.generation = run.generation + u32::from(reset.new_keys.contains(&task));
        fresh.history = std::mem::take(&mut run.history);
        *run = fresh;
        state.compensation = None;
    }
    // Compensations not sent (skipped) are forgotten: the tasks that keep their success
    // are compensated again, in completion order, should the workflow fail now.
    for task in &mut workflow.tasks {
        if task.run.status == TaskStatus::Succeeded {
            task.compensation = None;
        }
    }
    let spec = workflow.spec.clone();
    let mut stack: Vec<(u64, u32)> = workflow
        .tasks
        .iter()
        .enumerate()
        .filter(|(index, t)| {
            t.run.status == TaskStatus::Succeeded && spec.tasks[*index].compensate.is_some()
        })
        .map(|(index, t)| (t.run.finished_at, index as u32))
        .collect();
    stack.sort_unstable();
    workflow.compensation_stack = stack.into_iter().map(|(_, t)| t).collect();
    workflow.compensating = None;
    workflow.compensation_failures = 0;
    workflow.error = None;
    let done = |status: TaskStatus| matches!(status, TaskStatus::Succeeded | TaskStatus::Skipped);
    let statuses: Vec<TaskStatus> = workflow.tasks.iter().map(|t| t.run.status).collect();
    for (index, compiled) in spec.tasks.iter().enumerate() {
        workflow.tasks[index].pending_needs = compiled
            .needs
            .iter()
            .filter(|n| !done(statuses[**n as usize]))
            .count() as u32;
    }
    workflow.tasks_remaining = statuses.iter().filter(|s| !s.is_terminal()).count() as u32;
}

/// Which workflows a bulk operation acts on: every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<WorkflowStatus>,
    pub name: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// An unfinished task of this skill.
    pub skill: Option<String>,
    /// An unfinished task whose current or last attempt went to an agent of this gateway,
    /// or that waits for it.
    pub gateway: Option<String>,
}

impl Scheduler {
    /// Whether `workflow` matches `filter`.
    pub fn matches(&self, workflow: &Workflow, filter: &Filter) -> bool {
        if filter.status.is_some_and(|s| s != workflow.status)
            || filter
                .name
                .as_ref()
                .is_some_and(|n| *n != workflow.spec.name)
            || filter
                .labels
                .iter()
                .any(|(k, v)| workflow.labels.get(k) != Some(v))
        {
            return false;
        }
        let unfinished = || {
            workflow
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.run.status.is_terminal())
        };
        if let Some(skill) = &filter.skill
            && !unfinished().any(|(index, _)| workflow.spec.tasks[index].skill() == Some(skill))
        {
            return false;
        }
        if let Some(gateway) = &filter.gateway {
            let of_gateway = |agent: &crate::model::AgentId| {
                self.agents
                    .get(agent)
                    .and_then(|a| a.labels.get("gateway"))
                    .is_some_and(|g| g == gateway)
            };
            let waits_for = |index: usize| {
                let reason = self.waiting_reason(Slot {
                    workflow: workflow.id,
                    task: index as u32,
                    compensation: false,
                });
                reason.contains(&format!("gateway {gateway}"))
                    || reason.contains(&format!("gateway `{gateway}`"))
            };
            let on_gateway = unfinished().any(|(index, task)| {
                let last = task
                    .run
                    .agent
                    .as_ref()
                    .or_else(|| task.run.history.last().and_then(|h| h.agent.as_ref()));
                last.is_some_and(of_gateway)
                    || (task.run.status == TaskStatus::Ready && waits_for(index))
            });
            if !on_gateway {
                return false;
            }
        }
        true
    }
}

/// Dispatch held for maintenance: skills and gateways nothing is sent to until released,
/// each with why. Kept in the store (setting [`HOLDS_SETTING`]) across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holds {
    #[serde(default)]
    pub skills: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: std::collections::BTreeMap<String, String>,
}

/// The store setting holding [`Holds`] (JSON).
pub const HOLDS_SETTING: &str = "dispatch_holds";

/// What a hold is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOn {
    Skill(String),
    Gateway(String),
}

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.skills.is_empty() && self.gateways.is_empty()
    }

    /// Holds `on` for `reason`, or releases it (`None`); the holds after.
    pub fn set(&mut self, on: &HoldOn, reason: Option<&str>) {
        let (map, name) = match on {
            HoldOn::Skill(name) => (&mut self.skills, name),
            HoldOn::Gateway(name) => (&mut self.gateways, name),
        };
        match reason {
            Some(reason) => {
                map.insert(name.clone(), reason.to_owned());
            }
            None => {
                map.remove(name);
            }
        }
    }
}

impl Scheduler {
    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// Replaces the dispatch holds (already stored): held skills and gateways get
    /// nothing new; released ones are looked at again.
    pub fn set_holds(&mut self, now: u64, holds: Holds) {
        self.advance(now);
        let released_skills: Vec<String> = self
            .holds
            .skills
            .keys()
            .filter(|s| !holds.skills.contains_key(*s))
            .cloned()
            .collect();
        let released_gateways: Vec<String> = self
            .holds
            .gateways
            .keys()
            .filter(|g| !holds.gateways.contains_key(*g))
            .cloned()
            .collect();
        self.holds = holds;
        for skill in released_skills {
            self.mark_dirty(&std::sync::Arc::from(skill.as_str()));
        }
        for gateway in released_gateways {
            self.mark_gateway_dirty(&gateway);
        }
    }

    /// Why dispatch of `skill` (to agents of `gateways`) is held, if it is.
    pub(super) fn held_reason<'a>(
        &self,
        skill: &str,
        mut gateways: impl Iterator<Item = Option<&'a String>>,
    ) -> Option<String> {
        if let Some(reason) = self.holds.skills.get(skill) {
            return Some(format!(
                "waiting: dispatch of skill {skill} is paused: {reason}"
            ));
        }
        if self.holds.gateways.is_empty() {
            return None;
        }
        let mut held = Vec::new();
        let all_held = gateways.all(|gateway| match gateway {
            Some(gateway) => match self.holds.gateways.get(gateway) {
                Some(reason) => {
                    held.push(format!("{gateway} ({reason})"));
                    true
                }
                None => false,
            },
            None => false,
        });
        (all_held && !held.is_empty()).then(|| {
            held.sort();
            held.dedup();
            format!("waiting: dispatch to gateway {} is paused", held.join(", "))
        })
    }
}
