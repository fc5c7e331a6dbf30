//! What a batch sends once it is durable (answers, assignments and cancellations,
//! watchers' events), held while the embedded store syncs it on a syncer's thread and
//! the actor goes on deciding; sent in the order the batches were written, each once it
//! and every batch before it are durable (docs/durability.md).

use std::collections::HashMap;

use super::actor::{Actor, Reply};
use super::now_ms;
use crate::model::AgentId;
use crate::scheduler::AgentEvent;
use crate::views::Frame;

/// Batches written and not yet durable at most before the actor takes no more inputs:
/// a device that stops syncing holds the inputs back in the bounded channel (the
/// callers wait), instead of piling up decided work and held answers in memory.
pub(super) const UNRELEASED_MAX: usize = 16;

/// What a batch sends once it is durable: assignments and cancellations, answers, and
/// watchers' events.
pub(super) struct Release {
    pub(super) frames: HashMap<AgentId, Frame>,
    pub(super) replies: Vec<Reply>,
    pub(super) events: Vec<super::watchers::Outgoing>,
}

impl Release {
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.replies.is_empty() && self.events.is_empty()
    }
}

impl Actor {
    /// Waits for every batch written to be durable and sends what they hold (on the way
    /// out: nothing more is decided).
    pub(super) fn settle(&mut self) -> Result<(), crate::store::StoreError> {
        if let Some((last, _)) = self.unreleased.back() {
            self.persistence.wait(*last)?;
        }
        self.release_durable()
    }

    /// Sends what every durable batch holds, in the order they were written.
    pub(super) fn release_durable(&mut self) -> Result<(), crate::store::StoreError> {
        if self.unreleased.is_empty() {
            return Ok(());
        }
        let durable = self.persistence.durable()?;
        while self
            .unreleased
            .front()
            .is_some_and(|(written, _)| *written <= durable)
        {
            if let Some((_, release)) = self.unreleased.pop_front() {
                self.release(release);
            }
        }
        Ok(())
    }

    /// Sends what a durable batch holds. Agents whose session is full or gone leave:
    /// their tasks go back to the queue, to be dispatched (after the next commit)
    /// elsewhere.
    pub(super) fn release(&mut self, release: Release) {
        for reply in release.replies {
            reply.send();
        }
        self.watchers.deliver(release.events);
        let broken = self.agents.send_frames(release.frames);
        let mut out = std::mem::take(&mut self.out);
        for agent in broken {
            self.core
                .handle(now_ms(), AgentEvent::Left { agent }, &mut out);
        }
        self.out = out;
    }
}

/// Resolves when batches become durable, while some wait for it (never without a store
/// that syncs on its own threads).
pub(super) async fn durable_changed(
    changes: &mut Option<tokio::sync::watch::Receiver<u64>>,
    waiting: bool,
) {
    match changes {
        Some(changes) if waiting => {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending().await,
    }
}
