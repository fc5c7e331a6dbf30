//! How a task's result leaves the execution unit: the task sends it on the open
//! session itself ([`Outbox`]), and tells the session loop ([`Finished`]) for the books
//! and, when the session was gone or full, to send it on the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use paygrid_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::runtime::TaskKey;

/// A task that ended, told to the session loop: its key and outcome for the books, its
/// result, and the session it sent the result on itself, if it could. The loop sends
/// the result again when that session has ended since: whether its last frames reached
/// the control unit is unknown, and the control unit ignores a result it already has.
pub(crate) struct Finished {
    pub key: TaskKey,
    pub outcome: pb::Outcome,
    pub result: pb::TaskResult,
    pub sent_on: Option<u64>,
}

/// The open session's frames, as a task sees them: a task that ends sends its result
/// there itself, with the credit its slot frees (none while draining), so that the
/// result does not wait for the session loop to pass it on.
#[derive(Clone)]
pub(crate) struct Outbox {
    pub session: u64,
    pub frames: mpsc::Sender<pb::AgentMessage>,
    pub state: Arc<OutboxState>,
}

/// What the session loop tells the tasks about the session.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// No credits with results any more.
    pub draining: AtomicBool,
    /// The session ended: its channel may linger unread, so nothing more goes there.
    pub closed: AtomicBool,
}

impl Outbox {
    /// Sends a copy of `result` now if the session is open and has room; returns the
    /// session's number if it did.
    pub fn try_deliver(&self, result: &pb::TaskResult) -> Option<u64> {
        if self.state.closed.load(Ordering::Acquire) {
            return None;
        }
        let draining = self.state.draining.load(Ordering::Acquire);
        let frame = pb::AgentMessage {
            credits: u32::from(!draining),
            results: vec![result.clone()],
            draining,
            ..Default::default()
        };
        self.frames.try_send(frame).ok().map(|()| self.session)
    }

    /// The session ended: nothing more goes on its channel.
    pub fn close(&self) {
        self.state.closed.store(true, Ordering::Release);
    }
}
