//! What the scheduler records: [`Change`], one state change of a workflow as streamed by
//! `Watch` and appended by a durable store (its stored form is versioned:
//! `store::records`), and [`Record`], a change with its workflow and time.

use std::sync::Arc;

use super::{AgentId, AttemptOutcome, Millis, TaskStatus, WorkflowId, WorkflowStatus, operations};

/// A state change, in the order it happened: streamed by `Watch`, and what a durable
/// store appends.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub workflow: WorkflowId,
    pub at: Millis,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Created,
    Workflow {
        status: WorkflowStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Task {
        task: u32,
        compensation: bool,
        status: TaskStatus,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// The output, on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Arc<str>>,
        /// When the next attempt becomes ready, on backoff.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<Millis>,
        /// The attempt's deadline, on dispatch: a restore resumes it with its real
        /// timeout, not the last snapshot's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Millis>,
        /// How the attempt ended, on the change that ends it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<AttemptOutcome>,
        /// Settlement lookups so far, on dispatch, ready and backoff changes.
        #[serde(default, skip_serializing_if = "is_zero")]
        lookups: u32,
        /// The next dispatch is a settlement lookup, on dispatch, ready and backoff.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        settling: bool,
    },
    /// An operator asked to cancel; compensation follows.
    CancelRequested {
        reason: String,
    },
    /// An operator paused the workflow's dispatches.
    Paused {
        reason: String,
    },
    Resumed,
    /// An operator's retry or re-drive: these tasks run again.
    Reopened(operations::Reset),
}

impl Change {
    /// A task's (or its compensation's) change, without output or retry deadline.
    pub fn task(
        task: u32,
        compensation: bool,
        status: TaskStatus,
        attempt: u32,
        agent: Option<AgentId>,
        detail: Option<String>,
    ) -> Self {
        Self::Task {
            task,
            compensation,
            status,
            attempt,
            agent,
            detail,
            output: None,
            retry_at: None,
            deadline: None,
            outcome: None,
            lookups: 0,
            settling: false,
        }
    }
}

impl Change {
    /// Sets a task change's output (no-op on others).
    pub(super) fn with_output(mut self, value: Option<Arc<str>>) -> Self {
        if let Self::Task { output, .. } = &mut self {
            *output = value;
        }
        self
    }

    /// Sets the fields a task change carries besides the common ones (no-op on others).
    pub(super) fn with_attempt_facts(
        mut self,
        attempt_deadline: Option<Millis>,
        attempt_outcome: Option<AttemptOutcome>,
        attempt_lookups: u32,
        attempt_settling: bool,
    ) -> Self {
        if let Self::Task {
            deadline,
            outcome,
            lookups,
            settling,
            ..
        } = &mut self
        {
            *deadline = attempt_deadline;
            *outcome = attempt_outcome;
            *lookups = attempt_lookups;
            *settling = attempt_settling;
        }
        self
    }
}

pub(crate) fn is_zero(value: &u32) -> bool {
    *value == 0
}
