//! Stopping a workflow (failure or cancellation), and compensation in reverse order:
//! every dispatched task settles first, then the latest completed task is undone first.

use std::sync::Arc;

use super::flow::condition_context;
use super::{Change, Command, Execution, Scheduler, Slot, record};
use crate::model::{TaskStatus, WorkflowId, WorkflowStatus};

impl Scheduler {
    /// Failure or cancellation: stop everything not finished, then compensate.
    pub(super) fn stop_workflow(&mut self, id: WorkflowId, reason: String, out: &mut Vec<Command>) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        workflow.error = Some(reason.clone());
        workflow.status = WorkflowStatus::Compensating;
        workflow.updated_at = now;
        // Recorded, so a restart resumes the failure instead of the run.
        record(
            out,
            id,
            now,
            Change::Workflow {
                status: WorkflowStatus::Compensating,
                detail: Some(reason.clone()),
            },
        );
        let mut cancels = Vec::new();
        let cancel_requested = workflow.cancel_requested;
        for (index, task) in workflow.tasks.iter_mut().enumerate() {
            if task.run.status.is_terminal() {
                continue;
            }
            if task.run.attempt > 0 && !task.run.is_in_flight() {
                // Dispatched before (now in backoff or queued again): its effect may
                // have happened, so it is settled (retried, same key) and compensated.
                continue;
            }
            if task.run.is_in_flight() && task.run.attempt_open {
                // Stays in flight until it settles; a success is compensated like any
                // other. Only an operator's cancel reaches the agent.
                if let (Some(agent), true) = (&task.run.agent, cancel_requested) {
                    let slot = Slot {
                        workflow: id,
                        task: index as u32,
                        compensation: false,
                    };
                    cancels.push((agent.clone(), slot, task.run.attempt));
                }
                continue;
            }
            task.run.status = TaskStatus::Cancelled;
            task.run.attempt_open = false;
        }
        let tasks = workflow.tasks.len() as u32;
        self.forget_approvals(id, tasks);
        for (agent, slot, attempt) in cancels {
            out.push(Command::Cancel {
                agent,
                slot,
                attempt,
            });
        }
        self.continue_compensation(id, out);
    }

    /// Starts the next compensation (latest completed task first), or ends the workflow.
    pub(super) fn continue_compensation(&mut self, id: WorkflowId, out: &mut Vec<Command>) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        if workflow.status.is_terminal() || workflow.compensating.is_some() {
            return;
        }
        // Every dispatched task settles first (succeeded or failed for good), so that
        // compensations run in true reverse order of completion.
        let unsettled = workflow.tasks.iter().any(|t| {
            matches!(
                t.run.status,
                TaskStatus::Ready
                    | TaskStatus::Backoff
                    | TaskStatus::Dispatched
                    | TaskStatus::Running
            )
        });
        if unsettled {
            return;
        }
        let Some(task) = workflow.compensation_stack.pop() else {
            let status = final_status(workflow);
            let error = workflow.error.clone();
            self.finish_workflow(id, status, error, out);
            return;
        };
        workflow.status = WorkflowStatus::Compensating;
        let spec = workflow.spec.clone();
        let condition = spec.tasks[task as usize]
            .compensate
            .as_ref()
            .and_then(|c| c.when.as_ref());
        if let Some(condition) = condition {
            let (inputs, tasks, meta) = condition_context(workflow);
            let verdict = condition.evaluate(&inputs, &tasks, &meta);
            if verdict != Ok(true) {
                // Not needed: record why and move on. Not decidable: a compensation that
                // may be needed was not sent, which is a compensation failure (the
                // workflow ends `failed` with the reason), never a silent skip.
                let (status, detail) = match verdict {
                    Ok(_) => (
                        TaskStatus::Skipped,
                        format!("compensation when `{}` is false", condition.source()),
                    ),
                    Err(error) => (
                        TaskStatus::Failed,
                        format!(
                            "compensation when `{}` cannot be evaluated: {error}",
                            condition.source()
                        ),
                    ),
                };
                self.compensation_not_sent(id, task, status, detail, out);
                self.continue_compensation(id, out);
                return;
            }
        }
        workflow.compensating = Some(task);
        let mut execution = Execution::new(TaskStatus::Blocked);
        execution.started_at = now;
        workflow.tasks[task as usize].compensation = Some(Box::new(execution));
        record(
            out,
            id,
            now,
            Change::Workflow {
                status: WorkflowStatus::Compensating,
                detail: workflow.error.clone(),
            },
        );
        self.make_ready(
            Slot {
                workflow: id,
                task,
                compensation: true,
            },
            out,
        );
    }

    /// A compensation whose `when` is false (skipped) or cannot be evaluated (failed:
    /// it may have been needed, so the workflow ends `failed` naming it).
    fn compensation_not_sent(
        &mut self,
        id: WorkflowId,
        task: u32,
        status: TaskStatus,
        detail: String,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        let mut execution = Execution::new(status);
        execution.started_at = now;
        execution.finished_at = now;
        execution.error = Some(detail.clone());
        workflow.tasks[task as usize].compensation = Some(Box::new(execution));
        if status == TaskStatus::Failed {
            workflow.compensation_failures += 1;
            let task_id = workflow.task_id(task).to_owned();
            let reason = workflow.error.get_or_insert_with(String::new);
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&format!("compensation of `{task_id}`: {detail}"));
        }
        record(
            out,
            id,
            now,
            Change::task(task, true, status, 0, None, Some(detail)),
        );
    }

    pub(super) fn compensation_finished(
        &mut self,
        slot: Slot,
        status: TaskStatus,
        error: Option<String>,
        output: Option<Arc<str>>,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&slot.workflow) else {
            return;
        };
        let Some(execution) = workflow.tasks[slot.task as usize].compensation.as_mut() else {
            return;
        };
        execution.status = status;
        execution.finished_at = now;
        execution.error = error.clone();
        let recorded_output = output.clone();
        execution.output = output;
        let attempt = execution.attempt;
        let agent = execution.agent.clone();
        let outcome = execution.current_outcome();
        execution.settling = false;
        if status == TaskStatus::Compensated {
            workflow.tasks[slot.task as usize].run.status = TaskStatus::Compensated;
        } else {
            workflow.compensation_failures += 1;
        }
        workflow.compensating = None;
        workflow.updated_at = now;
        record(
            out,
            slot.workflow,
            now,
            Change::Task {
                task: slot.task,
                compensation: true,
                status,
                attempt,
                agent,
                detail: error,
                output: recorded_output,
                retry_at: None,
                deadline: None,
                outcome,
                lookups: 0,
                settling: false,
            },
        );
        self.continue_compensation(slot.workflow, out);
    }

    pub(super) fn finish_workflow(
        &mut self,
        id: WorkflowId,
        status: WorkflowStatus,
        detail: Option<String>,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        if workflow.status.is_terminal() {
            return;
        }
        workflow.status = status;
        workflow.updated_at = now;
        if status == WorkflowStatus::Compensated || status == WorkflowStatus::Cancelled {
            workflow.error = detail.clone().or(workflow.error.take());
        }
        record(out, id, now, Change::Workflow { status, detail });
        if let Some(workflow) = self.workflows.get(&id) {
            self.limits
                .finished(&super::dispatch::WorkflowScope(workflow));
        }
        // Workflows waiting on this one's end count it (before it may leave memory).
        self.workflow_progressed(id, out);
        self.active -= 1;
        self.retained.push_back(id);
        while self.retained.len() > self.config.workflows_retained_max {
            if let Some(old) = self.retained.pop_front() {
                self.workflows.remove(&old);
            }
        }
    }
}

/// How a workflow with nothing left to compensate ends.
fn final_status(workflow: &super::Workflow) -> WorkflowStatus {
    let compensated_any = workflow.tasks.iter().any(|t| {
        t.compensation
            .as_ref()
            .is_some_and(|c| c.status == TaskStatus::Compensated)
    });
    if workflow.cancel_requested {
        WorkflowStatus::Cancelled
    } else if workflow.compensation_failures > 0 || !compensated_any {
        WorkflowStatus::Failed
    } else {
        WorkflowStatus::Compensated
    }
}
