//! `Watch` streams: a snapshot after the commit that follows the watch's start (so a
//! watcher only sees durable state), then every committed change of the workflow, until
//! it ends. A watcher that does not keep up is dropped (bounded buffer). Events are held
//! with the batch that made them and sent once it is durable ([`Watchers::deliver`]).
//!
//! `Follow` streams (completion streams): one stream, many workflows, one event per
//! workflow at its end, sent once the end is durable.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::WatchSender;
use super::actor::view;
use crate::error::ControlError;
use crate::model::WorkflowId;
use crate::scheduler::{Change, Record, Scheduler, Workflow};
use crate::views::{EventBody, WorkflowEvent};

/// What the actor answers a `Follow` stream: one item per id it was given.
pub enum Followed {
    Ended(WorkflowEvent),
    /// Not in memory: the stream looks for it in the store (ended workflows leave memory).
    NotInMemory {
        id: WorkflowId,
        snapshot: bool,
    },
    Refused(WorkflowId, ControlError),
}

/// One `Follow` stream as the actor holds it (a clone per followed workflow). Its
/// channel has room for every id the stream may have open, so an answer always fits
/// (the stream refuses ids beyond that before they reach the actor).
#[derive(Clone)]
pub struct Follower {
    pub sender: mpsc::Sender<Followed>,
    /// Send each end as a snapshot of the whole workflow, not its status and detail.
    pub snapshot: bool,
}

impl Follower {
    fn answer(&self, answer: Followed) {
        // The channel has room for every open id: this fails only once the stream is gone.
        let sent = self.sender.try_send(answer);
        debug_assert!(!matches!(sent, Err(mpsc::error::TrySendError::Full(_))));
    }

    /// The workflow's end as this follower sees it; `detail` and `at`: the ending
    /// change's.
    fn end(
        &self,
        core: &Scheduler,
        workflow: &Workflow,
        sequence: u64,
        detail: Option<String>,
        at: u64,
    ) -> Followed {
        let body = if self.snapshot {
            EventBody::Snapshot(Box::new(view(core, workflow)))
        } else {
            EventBody::Workflow {
                status: workflow.status,
                detail,
            }
        };
        Followed::Ended(WorkflowEvent {
            workflow: workflow.id,
            sequence,
            at,
            body,
        })
    }
}

/// An event held until the batch it tells of is durable ([`Watchers::deliver`]).
pub(super) enum Outgoing {
    Watch(WorkflowId, WatchSender, WorkflowEvent),
    Follow(Follower, Followed),
}

pub(super) struct Watchers {
    by_workflow: HashMap<WorkflowId, Vec<WatchSender>>,
    per_workflow_max: usize,
    /// `Follow` streams waiting for each workflow's end.
    followers: HashMap<WorkflowId, Vec<Follower>>,
    /// Follows of workflows that had already ended when asked: answered after the next
    /// commit, so an end is only ever told once it is durable.
    ended: Vec<(WorkflowId, Follower)>,
    /// Watches asked for since the last commit: their snapshots go out after it.
    starting: Vec<(WorkflowId, WatchSender)>,
    /// Events of the batch being committed, sent once it is durable.
    outbox: Vec<Outgoing>,
}

impl Watchers {
    pub(super) fn new(per_workflow_max: usize) -> Self {
        Self {
            by_workflow: HashMap::new(),
            per_workflow_max,
            followers: HashMap::new(),
            ended: Vec::new(),
            starting: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Follows `ids` to their ends: each is answered once on the follower's channel,
    /// with its end or why not.
    pub(super) fn follow(&mut self, core: &Scheduler, ids: Vec<WorkflowId>, follower: &Follower) {
        for id in ids {
            let Some(workflow) = core.workflow(id) else {
                follower.answer(Followed::NotInMemory {
                    id,
                    snapshot: follower.snapshot,
                });
                continue;
            };
            if workflow.status.is_terminal() {
                self.ended.push((id, follower.clone()));
                continue;
            }
            let followers = self.followers.entry(id).or_default();
            if followers.len() >= self.per_workflow_max {
                let error = ControlError::Exhausted(format!(
                    "workflow {id} has {} followers, the limit",
                    followers.len()
                ));
                follower.answer(Followed::Refused(id, error));
                continue;
            }
            followers.push(follower.clone());
        }
    }

    /// After a batch: the snapshots of watches started since the last one, and the ends
    /// of followed workflows that had already ended, held with the batch's events.
    pub(super) fn after_commit(&mut self, core: &Scheduler, sequence: u64) {
        for (id, sender) in std::mem::take(&mut self.starting) {
            // Gone from memory meanwhile: dropping the sender ends the stream.
            let Some(workflow) = core.workflow(id) else {
                continue;
            };
            let snapshot = WorkflowEvent {
                workflow: id,
                sequence,
                at: super::now_ms(),
                body: EventBody::Snapshot(Box::new(view(core, workflow))),
            };
            // An ended workflow's snapshot is the whole story. Later batches' events
            // follow the snapshot (a watcher whose snapshot does not fit is dropped
            // when it is sent).
            if !workflow.status.is_terminal() {
                let watchers = self.by_workflow.entry(id).or_default();
                watchers.retain(|w| !w.is_closed());
                watchers.push(sender.clone());
            }
            self.outbox.push(Outgoing::Watch(id, sender, snapshot));
        }
        for (id, follower) in self.ended.drain(..) {
            if let Some(workflow) = core.workflow(id) {
                let detail = workflow.error.clone();
                let end = follower.end(core, workflow, sequence, detail, workflow.updated_at);
                self.outbox.push(Outgoing::Follow(follower, end));
            }
        }
    }

    /// The events held since the last call: the caller sends them ([`Watchers::deliver`])
    /// once the batch they tell of is durable.
    pub(super) fn take_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// Sends a durable batch's events; a watcher that does not keep up is dropped.
    pub(super) fn deliver(&mut self, events: Vec<Outgoing>) {
        for event in events {
            match event {
                Outgoing::Watch(id, sender, event) => {
                    if sender.try_send(event).is_err()
                        && let Some(watchers) = self.by_workflow.get_mut(&id)
                    {
                        watchers.retain(|w| !w.same_channel(&sender));
                        if watchers.is_empty() {
                            self.by_workflow.remove(&id);
                        }
                    }
                }
                Outgoing::Follow(follower, answer) => follower.answer(answer),
            }
        }
    }

    /// Starts a watch: its snapshot goes out after the next commit, so a watcher only
    /// ever sees durable state; then every committed change until the workflow ends.
    pub(super) fn watch(
        &mut self,
        core: &Scheduler,
        id: WorkflowId,
        sender: WatchSender,
    ) -> Result<(), ControlError> {
        if core.workflow(id).is_none() {
            return Err(ControlError::NotFound(format!("workflow {id} not found")));
        }
        let watching = self.by_workflow.get(&id).map_or(0, Vec::len)
            + self.starting.iter().filter(|(w, _)| *w == id).count();
        if watching >= self.per_workflow_max {
            return Err(ControlError::Exhausted(format!(
                "workflow {id} has {watching} watchers, the limit"
            )));
        }
        self.starting.push((id, sender));
        Ok(())
    }

    /// Holds a change for the workflow's watchers, and its end for its followers, to be
    /// sent once the change is durable.
    pub(super) fn notify(&mut self, core: &Scheduler, sequence: u64, record: &Record) {
        let ended = match &record.change {
            Change::Workflow { status, detail } if status.is_terminal() => Some(detail),
            _ => None,
        };
        let done = ended.is_some();
        if let Some(detail) = ended
            && let Some(followers) = self.followers.remove(&record.workflow)
            && let Some(workflow) = core.workflow(record.workflow)
        {
            for follower in followers {
                let end = follower.end(core, workflow, sequence, detail.clone(), record.at);
                self.outbox.push(Outgoing::Follow(follower, end));
            }
        }
        let Some(watchers) = self.by_workflow.get_mut(&record.workflow) else {
            return;
        };
        let Some(workflow) = core.workflow(record.workflow) else {
            return;
        };
        if let Some(event) = event(record, workflow, sequence) {
            watchers.retain(|w| !w.is_closed());
            for watcher in watchers.iter() {
                let event = event.clone();
                self.outbox
                    .push(Outgoing::Watch(record.workflow, watcher.clone(), event));
            }
        }
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
