//! `Watch` streams: a snapshot when the watch starts, then every committed change of the
//! workflow, until it ends. A watcher that does not keep up is dropped (bounded buffer).

use std::collections::HashMap;

use super::WatchSender;
use super::actor::view;
use crate::error::ControlError;
use crate::model::WorkflowId;
use crate::scheduler::{Change, Record, Scheduler, Workflow};
use crate::views::{EventBody, WorkflowEvent};

pub(super) struct Watchers {
    by_workflow: HashMap<WorkflowId, Vec<WatchSender>>,
    per_workflow_max: usize,
}

impl Watchers {
    pub(super) fn new(per_workflow_max: usize) -> Self {
        Self {
            by_workflow: HashMap::new(),
            per_workflow_max,
        }
    }

    pub(super) fn watch(
        &mut self,
        core: &Scheduler,
        id: WorkflowId,
        sender: WatchSender,
        sequence: u64,
    ) -> Result<(), ControlError> {
        let workflow = core
            .workflow(id)
            .ok_or_else(|| ControlError::NotFound(format!("workflow {id} not found")))?;
        let snapshot = WorkflowEvent {
            workflow: id,
            sequence,
            at: super::now_ms(),
            body: EventBody::Snapshot(Box::new(view(core, workflow))),
        };
        let terminal = workflow.status.is_terminal();
        sender
            .try_send(snapshot)
            .map_err(|_| ControlError::Exhausted("watch stream closed".into()))?;
        if terminal {
            return Ok(()); // the snapshot is the whole story; dropping the sender ends the stream
        }
        let watchers = self.by_workflow.entry(id).or_default();
        watchers.retain(|w| !w.is_closed());
        if watchers.len() >= self.per_workflow_max {
            return Err(ControlError::Exhausted(format!(
                "workflow {id} has {} watchers, the limit",
                watchers.len()
            )));
        }
        watchers.push(sender);
        Ok(())
    }

    /// Sends a committed change to the workflow's watchers.
    pub(super) fn notify(&mut self, core: &Scheduler, sequence: u64, record: &Record) {
        let Some(watchers) = self.by_workflow.get_mut(&record.workflow) else {
            return;
        };
        let Some(workflow) = core.workflow(record.workflow) else {
            return;
        };
        if let Some(event) = event(record, workflow, sequence) {
            watchers.retain(|w| w.try_send(event.clone()).is_ok());
        }
        let done = matches!(record.change, Change::Workflow { status, .. } if status.is_terminal());
        if done || watchers.is_empty() {
            self.by_workflow.remove(&record.workflow);
        }
    }
}

/// A recorded change as a watcher sees it; `None` for records a watcher does not see.
fn event(record: &Record, workflow: &Workflow, sequence: u64) -> Option<WorkflowEvent> {
    let body = match &record.change {
        // A retry or re-drive reopens an ended workflow, which nobody watches any more
        // (a watch ends with its workflow); a new watch starts from its snapshot.
        Change::Created | Change::CancelRequested { .. } | Change::Reopened(_) => return None,
        // Shown as the workflow's state with the operation in the detail.
        Change::Paused { reason } => EventBody::Workflow {
            status: workflow.status,
            detail: Some(format!("paused: {reason}")),
        },
        Change::Resumed => EventBody::Workflow {
            status: workflow.status,
            detail: Some("resumed".into()),
        },
        Change::Workflow { status, detail } => EventBody::Workflow {
            status: *status,
            detail: detail.clone(),
        },
        Change::Task {
            task,
            compensation,
            status,
            attempt,
            agent,
            detail,
            ..
        } => EventBody::Task {
            task_id: workflow.task_id(*task).to_owned(),
            status: *status,
            attempt: *attempt,
            agent: agent.clone(),
            detail: detail.clone(),
            compensation: *compensation,
        },
    };
    Some(WorkflowEvent {
        workflow: record.workflow,
        sequence,
        at: record.at,
        body,
    })
}
