//! Human decisions (`approval` tasks): a task that waits until an operator approves or
//! rejects it (CLI, gRPC, MCP, or an A2A message to the INPUT_REQUIRED task), or until
//! its timeout applies the default decision.
//!
//! Durable through the task itself: the wait is recorded as the task running, and the
//! decision as its end, with who decided, when, through what and why in its output (an
//! approval) or its error and output (a rejection, which fails the task and so
//! compensates the workflow). After a restart a running approval task waits again, its
//! timeout counted from when it started.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::dispatch::WorkflowScope;
use super::flow::condition_context;
use super::{Command, Millis, Scheduler, Slot, Timer, TimerKind};
use crate::model::{Decision, TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::TaskKind;

/// An approval waiting for its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// What the approver is asked, rendered.
    pub prompt: String,
    /// When the default decision applies.
    pub timeout_at: Millis,
    pub default: Decision,
}

/// Every approval waiting for a decision.
#[derive(Debug, Default)]
pub struct Approvals {
    by_slot: HashMap<Slot, PendingApproval>,
}

/// Who decided, through what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionBy {
    pub decision: Decision,
    /// The person or client, as the caller names it (authenticated once issue 15 lands).
    pub by: String,
    /// `cli`, `grpc`, `mcp`, `a2a`, or `timeout`.
    pub via: String,
    pub note: String,
}

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("workflow {0} not found")]
    WorkflowNotFound(WorkflowId),
    #[error("workflow {workflow} has no task `{task}`; its approval tasks: {approvals}")]
    NoSuchTask {
        workflow: WorkflowId,
        task: String,
        approvals: String,
    },
    #[error("task `{0}` is not an approval task")]
    NotAnApproval(String),
    #[error("approval `{task}` is not waiting for a decision: {state}")]
    NotPending { task: String, state: String },
    #[error("workflow {0} has no approval waiting for a decision")]
    NonePending(WorkflowId),
    #[error("workflow {workflow} has several approvals waiting ({tasks}): name the task to decide")]
    Ambiguous { workflow: WorkflowId, tasks: String },
}

impl Scheduler {
    /// An approval task's needs are met: it passes at once when not required, or waits
    /// for a decision (recorded unless it resumes after a restart).
    pub(super) fn start_approval(
        &mut self,
        id: WorkflowId,
        task: u32,
        resumed: bool,
        out: &mut Vec<Command>,
    ) {
        let slot = Slot {
            workflow: id,
            task,
            compensation: false,
        };
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        let spec = workflow.spec.clone();
        let TaskKind::Approval(approval) = &spec.tasks[task as usize].kind else {
            return;
        };
        if let Some(condition) = &approval.required_when {
            let (inputs, tasks, meta) = condition_context(workflow);
            match condition.evaluate(&inputs, &tasks, &meta) {
                Ok(true) => {}
                Ok(false) => {
                    let output = json!({"decision": "approve", "required": false});
                    let detail =
                        format!("approval not required: `{}` is false", condition.source());
                    let output: Arc<str> = output.to_string().into();
                    self.finish_task(
                        id,
                        task,
                        TaskStatus::Succeeded,
                        Some(output),
                        Some(detail),
                        out,
                    );
                    return;
                }
                Err(error) => {
                    self.fail_task(slot, format!("approval requiredWhen: {error}"), out);
                    return;
                }
            }
        }
        let prompt = match &approval.prompt {
            None => format!("approve task `{}`?", spec.tasks[task as usize].id),
            Some(template) => match template.resolve(&WorkflowScope(workflow)) {
                Ok(Value::String(text)) => text,
                Ok(other) => other.to_string(),
                Err(error) => {
                    self.fail_task(slot, format!("approval prompt: {error}"), out);
                    return;
                }
            },
        };
        let pending_at = |started_at: u64| PendingApproval {
            prompt: prompt.clone(),
            timeout_at: started_at + approval.timeout.as_millis() as u64,
            default: approval.default,
        };
        let Some(started_at) =
            self.begin_waiting(id, task, resumed, |at| describe(&pending_at(at)), out)
        else {
            return;
        };
        let pending = pending_at(started_at);
        self.timers.push(Reverse(Timer {
            at: pending.timeout_at,
            slot,
            attempt: 0,
            kind: TimerKind::Approval,
        }));
        self.approvals.by_slot.insert(slot, pending);
    }

    /// An operator's decision on the approval `task` of workflow `id` (`None`: the one
    /// approval it waits for).
    pub fn decide(
        &mut self,
        now: Millis,
        id: WorkflowId,
        task: Option<&str>,
        decision: DecisionBy,
        out: &mut Vec<Command>,
    ) -> Result<String, ApprovalError> {
        self.advance(now);
        let workflow = self
            .workflows
            .get(&id)
            .ok_or(ApprovalError::WorkflowNotFound(id))?;
        let approval_tasks = || -> Vec<&str> {
            workflow
                .spec
                .tasks
                .iter()
                .filter(|t| t.approval().is_some())
                .map(|t| t.id.as_str())
                .collect()
        };
        let index = match task {
            Some(name) => {
                let index = workflow.spec.task_index(name).ok_or_else(|| {
                    let approvals = approval_tasks();
                    ApprovalError::NoSuchTask {
                        workflow: id,
                        task: name.to_owned(),
                        approvals: if approvals.is_empty() {
                            "none".to_owned()
                        } else {
                            approvals.join(", ")
                        },
                    }
                })?;
                if workflow.spec.tasks[index as usize].approval().is_none() {
                    return Err(ApprovalError::NotAnApproval(name.to_owned()));
                }
                index
            }
            None => {
                let pending = self.pending_approvals(id);
                match pending.as_slice() {
                    [] => return Err(ApprovalError::NonePending(id)),
                    [(index, _)] => *index,
                    several => {
                        let tasks: Vec<&str> =
                            several.iter().map(|(i, _)| workflow.task_id(*i)).collect();
                        return Err(ApprovalError::Ambiguous {
                            workflow: id,
                            tasks: tasks.join(", "),
                        });
                    }
                }
            }
        };
        let task_id = workflow.task_id(index).to_owned();
        let slot = Slot {
            workflow: id,
            task: index,
            compensation: false,
        };
        let state = &workflow.tasks[index as usize].run;
        if workflow.status != WorkflowStatus::Running
            || state.status != TaskStatus::Running
            || !self.approvals.by_slot.contains_key(&slot)
        {
            let state = match (&state.output, &state.error) {
                (Some(output), _) => format!("{}, {output}", state.status.as_str()),
                (None, Some(error)) => format!("{}, {error}", state.status.as_str()),
                (None, None) => format!(
                    "task {}, workflow {}",
                    state.status.as_str(),
                    workflow.status.as_str()
                ),
            };
            return Err(ApprovalError::NotPending {
                task: task_id,
                state,
            });
        }
        let pending = self.approvals.by_slot.remove(&slot);
        let prompt = pending.map(|p| p.prompt).unwrap_or_default();
        self.apply_decision(slot, &prompt, &decision, false, out);
        Ok(task_id)
    }

    /// The approvals of workflow `id` waiting for a decision, by task index.
    pub fn pending_approvals(&self, id: WorkflowId) -> Vec<(u32, &PendingApproval)> {
        let Some(workflow) = self.workflows.get(&id) else {
            return Vec::new();
        };
        if self.approvals.by_slot.is_empty() {
            return Vec::new();
        }
        (0..workflow.tasks.len() as u32)
            .filter_map(|task| {
                let slot = Slot {
                    workflow: id,
                    task,
                    compensation: false,
                };
                let pending = self.approvals.by_slot.get(&slot)?;
                (workflow.tasks[task as usize].run.status == TaskStatus::Running)
                    .then_some((task, pending))
            })
            .collect()
    }

    /// An approval's timer: the default decision applies if it still waits; a task no
    /// longer waiting (its workflow stopped) is forgotten.
    pub(super) fn approval_timer(&mut self, slot: Slot, waiting: bool, out: &mut Vec<Command>) {
        let Some(pending) = self.approvals.by_slot.remove(&slot) else {
            return;
        };
        if !waiting {
            return;
        }
        if pending.timeout_at > self.now {
            // A stale timer of an earlier wait: keep waiting.
            self.approvals.by_slot.insert(slot, pending);
            return;
        }
        let decision = DecisionBy {
            decision: pending.default,
            by: "paygrid".into(),
            via: "timeout".into(),
            note: "no decision before the approval's timeout: its default applies".into(),
        };
        self.apply_decision(slot, &pending.prompt, &decision, true, out);
    }

    /// Ends the approval: approve succeeds the task, reject fails it (and so stops and
    /// compensates the workflow). The decision, who took it, when and through what are
    /// the task's output either way.
    fn apply_decision(
        &mut self,
        slot: Slot,
        prompt: &str,
        decision: &DecisionBy,
        default_applied: bool,
        out: &mut Vec<Command>,
    ) {
        let output = json!({
            "decision": decision.decision.as_str(),
            "required": true,
            "prompt": prompt,
            "decided_by": decision.by,
            "via": decision.via,
            "decided_at_ms": self.now,
            "note": decision.note,
            "default_applied": default_applied,
        });
        let output: Arc<str> = output.to_string().into();
        let note = if decision.note.is_empty() {
            String::new()
        } else {
            format!(": {}", decision.note)
        };
        match decision.decision {
            Decision::Approve => {
                let detail = format!("approved by {} via {}{note}", decision.by, decision.via);
                self.finish_task(
                    slot.workflow,
                    slot.task,
                    TaskStatus::Succeeded,
                    Some(output),
                    Some(detail),
                    out,
                );
            }
            Decision::Reject => {
                let error = format!("rejected by {} via {}{note}", decision.by, decision.via);
                self.fail_task_with_output(slot, error, Some(output), out);
            }
        }
    }

    /// Why an approval task waits, for `status`.
    pub(super) fn approval_reason(&self, slot: Slot) -> Option<String> {
        self.approvals.by_slot.get(&slot).map(describe)
    }

    /// A stopped workflow's approvals no longer wait.
    pub(super) fn forget_approvals(&mut self, id: WorkflowId, tasks: u32) {
        if self.approvals.by_slot.is_empty() {
            return;
        }
        for task in 0..tasks {
            self.approvals.by_slot.remove(&Slot {
                workflow: id,
                task,
                compensation: false,
            });
        }
    }
}

/// How a waiting approval's detail begins (in `status` and the Watch stream).
pub const AWAITING: &str = "awaiting approval: ";

fn describe(pending: &PendingApproval) -> String {
    format!(
        "{AWAITING}{} (default {} at {} ms)",
        pending.prompt,
        pending.default.as_str(),
        pending.timeout_at
    )
}
