//! The actor's release: what a batch produced leaves only once the batch is durable,
//! with the embedded store syncing batches on its own threads while the actor goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use super::*;
use crate::model::Priority;
use crate::scheduler::restore::Snapshot;
use crate::spec::{SpecLimits, compile};
use crate::store::sqlite::SqliteStore;
use crate::store::{Batch, CommitHere, ListQuery, Pruned, Recovered, RecoveryPage, StoreError};

const SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: held\nversion: 1\ntasks:\n  - id: a\n    skill: nobody-offers-this\n";

/// The embedded store's committer with its durability held back from the actor: while
/// `held` is set, the actor sees no batch after it as durable, although the log syncs
/// every one as usual.
struct Held {
    inner: Arc<dyn CommitHere>,
    held: Mutex<Option<u64>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl CommitHere for Held {
    fn write_here(&self, batch: Batch, sync: bool) -> Result<u64, StoreError> {
        self.inner.write_here(batch, sync)
    }
    fn durable(&self) -> Result<u64, StoreError> {
        let durable = self.inner.durable()?;
        Ok(match *self.held.lock().unwrap() {
            Some(held) => durable.min(held),
            None => durable,
        })
    }
    fn durable_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    fn wait_here(&self, written: u64) -> Result<(), StoreError> {
        self.inner.wait_here(written)
    }
}

/// The embedded store, committing through [`Held`].
struct HeldStore {
    inner: SqliteStore,
    held: Arc<Held>,
}

#[async_trait::async_trait]
impl Store for HeldStore {
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.commit(batch).await
    }
    fn committer(&self) -> Option<Arc<dyn CommitHere>> {
        Some(self.held.clone())
    }
    async fn recover(&self, terminal_max: usize) -> Result<Recovered, StoreError> {
        self.inner.recover(terminal_max).await
    }
    async fn recover_pages(
        &self,
        terminal_max: usize,
        page: usize,
        pages: mpsc::Sender<Result<RecoveryPage, StoreError>>,
    ) -> Result<Recovered, StoreError> {
        self.inner.recover_pages(terminal_max, page, pages).await
    }
    async fn load(&self, id: WorkflowId) -> Result<Option<(Snapshot, String)>, StoreError> {
        self.inner.load(id).await
    }
    async fn spec(&self, name: &str, version: u32) -> Result<Option<(String, String)>, StoreError> {
        self.inner.spec(name, version).await
    }
    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        self.inner.prune(before_ms).await
    }
    async fn list(&self, query: ListQuery) -> Result<Vec<Snapshot>, StoreError> {
        self.inner.list(query).await
    }
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(name).await
    }
    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_setting(name, value).await
    }
    async fn audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        self.inner.audit(query).await
    }
}

fn submission(id: WorkflowId) -> Box<Submission> {
    let spec = Arc::new(compile(SPEC, &SpecLimits::default()).unwrap());
    Box::new(Submission {
        new: NewWorkflow {
            id,
            spec,
            input: serde_json::json!({}),
            priority: Priority::Normal,
            labels: Default::default(),
            idempotency_key: None,
            traceparent: String::new(),
            trace_parent_span: String::new(),
            tracestate: String::new(),
        },
        fingerprint: 0,
    })
}

/// An actor on the embedded store whose durability the test holds back.
struct Rig {
    dir: std::path::PathBuf,
    held: Arc<Held>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    handle: Handle,
    actor: tokio::task::JoinHandle<Result<(), ControlError>>,
}

impl Rig {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "paygrid-release-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let sqlite = SqliteStore::open(&dir.join("control.sqlite3")).unwrap();
        let held = Arc::new(Held {
            inner: sqlite.committer().unwrap(),
            held: Mutex::new(None),
            changes: tokio::sync::watch::Sender::new(0),
        });
        // The actor hears of the log's syncs through the holder.
        let mut synced = held.inner.durable_changes();
        let forward = held.clone();
        tokio::spawn(async move {
            while synced.changed().await.is_ok() {
                forward.changes.send_modify(|_| ());
            }
        });
        let store: Arc<dyn Store> = Arc::new(HeldStore {
            inner: sqlite,
            held: held.clone(),
        });
        let catalog = Arc::new(Catalog::new(SpecLimits::default(), Some(store.clone())));
        let shutdown = CancellationToken::new();
        let (handle, actor) = start(
            RuntimeConfig::default(),
            Some(store.clone()),
            catalog,
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            dir,
            held,
            store,
            shutdown,
            handle,
            actor,
        }
    }

    /// Makes nothing written from now on durable to the actor.
    fn hold(&self) -> u64 {
        let before = self.held.inner.durable().unwrap();
        *self.held.held.lock().unwrap() = Some(before);
        before
    }

    fn let_go(&self) {
        *self.held.held.lock().unwrap() = None;
        self.held.changes.send_modify(|_| ());
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.actor.await.unwrap().unwrap();
        drop(self.handle);
        drop(self.store);
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// A submission's answer waits for its batch to be durable, while the actor goes on
/// answering reads (it does not block in the sync); once the batch is durable the
/// answer goes out.
#[tokio::test]
async fn an_answer_leaves_once_its_batch_is_durable() {
    let rig = Rig::start().await;
    let before = rig.hold();
    let mut log = rig.held.inner.durable_changes();
    let id = WorkflowId(7);
    let (reply, mut answer) = oneshot::channel();
    rig.handle
        .send(Input::Submit {
            submission: submission(id),
            reply,
        })
        .await
        .unwrap();
    // The log has the submission's batch, durable: the actor wrote it and went on.
    while rig.held.inner.durable().unwrap() <= before {
        log.changed().await.unwrap();
    }
    // A read sent after that is answered by a later batch than the submission's.
    let view = rig
        .handle
        .ask(|reply| Input::Get { id, reply })
        .await
        .unwrap();
    assert!(view.is_some(), "the actor holds the workflow");
    assert!(
        matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "the answer left before its batch was durable"
    );

    rig.let_go();
    let submitted = answer.await.unwrap().unwrap();
    assert!(submitted.created);
    assert_eq!(submitted.id, id);
    rig.stop().await;
}

/// While [`release::UNRELEASED_MAX`] batches wait to be durable the actor takes no more
/// inputs (they wait in the bounded channel); once the batches are durable it goes on,
/// and every held answer leaves.
#[tokio::test]
async fn the_actor_stops_taking_inputs_while_too_many_batches_wait() {
    let rig = Rig::start().await;
    rig.hold();
    let mut log = rig.held.inner.durable_changes();
    let mut answers = Vec::new();
    for n in 0..release::UNRELEASED_MAX as u128 {
        let before = rig.held.inner.durable().unwrap();
        let (reply, answer) = oneshot::channel();
        rig.handle
            .send(Input::Submit {
                submission: submission(WorkflowId(100 + n)),
                reply,
            })
            .await
            .unwrap();
        answers.push(answer);
        // Its batch is in the log: the next submission goes in a later batch.
        while rig.held.inner.durable().unwrap() <= before {
            log.changed().await.unwrap();
        }
    }
    let (reply, mut read) = oneshot::channel();
    rig.handle
        .send(Input::Get {
            id: WorkflowId(100),
            reply,
        })
        .await
        .unwrap();
    // Taken at once if the actor still took inputs; it must not be.
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut read).await;
    assert!(
        waited.is_err(),
        "the actor took an input with {} batches waiting",
        release::UNRELEASED_MAX
    );

    rig.let_go();
    assert!(read.await.unwrap().is_some());
    for answer in answers {
        assert!(answer.await.unwrap().unwrap().created);
    }
    rig.stop().await;
}
