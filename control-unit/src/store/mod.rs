//! Durable state behind one trait, two backends: [`sqlite`] (embedded, the default: one
//! file under the data dir) and [`postgres`] (shared by several control units).
//!
//! What is stored: each spec text once, by hash, and the `name@version` naming it; one row per workflow (status,
//! idempotency key and fingerprint, and its latest snapshot); and an append-only log of
//! state changes. A snapshot is written when a workflow is created, when it passes a
//! checkpoint and when it ends, so recovery reads a snapshot and the few changes after it.
//! The actor commits everything one batch of inputs produced in one transaction (group
//! commit) before it answers or dispatches anything from that batch.

pub mod postgres;
pub mod records;
pub mod sqlite;

use std::sync::Arc;

use crate::model::{WorkflowId, WorkflowStatus};
use crate::scheduler::Change;
use crate::scheduler::restore::Snapshot;
use records::{decode_change, decode_snapshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// The embedded store's commit log (or another file of it) could not be read or
    /// written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("postgres: {0}")]
    Postgres(String),
    /// A cluster member's commit wrote partitions whose lease another member holds now:
    /// nothing of the batch was written.
    #[error("fenced: partitions {0:?} belong to another control unit now")]
    Fenced(Vec<u32>),
    /// The database ended the connection in the middle of a commit (a stalled
    /// transaction, a restart) and a new one is open: nothing of the batch was written.
    #[error("commit interrupted, nothing written: {0}")]
    Interrupted(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Join(String),
    #[error("unsupported store `{0}`: use a directory path (embedded SQLite) or postgres://...")]
    Unsupported(String),
    /// The embedded store's commit log is not where the start looked, or the directory
    /// holds another database's (`sqlite/identity.rs`): nothing was opened.
    #[error("commit log: {0}")]
    Misplaced(String),
}

/// A workflow row to insert or update.
#[derive(Debug, Clone)]
pub struct WorkflowWrite {
    pub id: WorkflowId,
    pub name: String,
    pub spec_hash: String,
    pub status: WorkflowStatus,
    pub idempotency_key: Option<String>,
    pub fingerprint: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// The snapshot (a record, `records`) and the last change sequence it includes, when
    /// one is taken.
    pub snapshot: Option<(Vec<u8>, u64)>,
}

/// One state change in the log.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub workflow: WorkflowId,
    pub sequence: u64,
    pub at: u64,
    /// The `Change` as a record (`records`).
    pub change: Vec<u8>,
}

/// A spec to keep: its text once by content hash, and its `name@version`, which names
/// that content for good (specs are immutable once submitted).
#[derive(Debug, Clone)]
pub struct SpecWrite {
    pub hash: String,
    pub name: String,
    pub version: u32,
    pub text: Arc<str>,
}

/// Everything one group commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    pub specs: Vec<SpecWrite>,
    pub workflows: Vec<WorkflowWrite>,
    pub events: Vec<EventWrite>,
    /// Audit records of the actions this batch makes durable (their `sequence` is
    /// assigned by the store).
    pub audit: Vec<crate::audit::AuditRecord>,
    /// In a cluster: the member and the (partition, epoch) of every workflow written;
    /// the commit writes nothing unless the member still holds each epoch.
    pub fence: Option<(String, Vec<(u32, u64)>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
            && self.workflows.is_empty()
            && self.events.is_empty()
            && self.audit.is_empty()
    }
}

/// A workflow read back at start.
#[derive(Debug)]
pub struct RecoveredWorkflow {
    pub snapshot: Snapshot,
    pub fingerprint: u64,
    /// Changes after the snapshot, in order, with their time.
    pub changes: Vec<(u64, Change)>,
}

/// What a control unit reads at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Spec texts by hash.
    pub specs: Vec<(String, String)>,
    /// Non-terminal workflows, then the most recent terminal ones.
    pub workflows: Vec<RecoveredWorkflow>,
    /// Idempotency keys of every stored workflow: key, workflow id, fingerprint.
    pub idempotency: Vec<(String, WorkflowId, u64)>,
    /// The highest change sequence stored.
    pub last_sequence: u64,
}

/// What a paged recovery sends, in this order: the specs once, then the workflows a page
/// at a time (a failed read or decode ends the pages).
#[derive(Debug)]
pub enum RecoveryPage {
    Specs(Vec<(String, String)>),
    Workflows(Vec<RecoveredWorkflow>),
}

/// Workflows per page of a paged recovery: a start holds one page of decoded snapshots
/// (and one more in the channel) besides what it has restored, never every stored row.
pub const RECOVERY_PAGE: usize = 4_096;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a batch in one transaction, durable when this returns.
    async fn commit(&self, batch: Batch) -> Result<(), StoreError>;
    /// A way to commit on the calling thread, where the store has one (the embedded
    /// store: the caller writes and syncs the commit log itself); `None` by default
    /// (PostgreSQL). For a caller with a thread of its own, the actor's: it saves the
    /// hand-off to the store's thread and the wake-up back on every commit.
    fn committer(&self) -> Option<Arc<dyn CommitHere>> {
        None
    }
    /// Active workflows and up to `terminal_max` recent terminal ones.
    async fn recover(&self, terminal_max: usize) -> Result<Recovered, StoreError>;
    /// What [`Store::recover`] reads, sent through `pages` (specs first, then the
    /// workflows at most `page` at a time) as it is read, so the caller restores each page
    /// while the next is read; returns the rest (`specs` and `workflows` empty). Stops
    /// early, without error, if the receiver is dropped. By default everything is read
    /// first and sent as one page (PostgreSQL).
    async fn recover_pages(
        &self,
        terminal_max: usize,
        page: usize,
        pages: tokio::sync::mpsc::Sender<Result<RecoveryPage, StoreError>>,
    ) -> Result<Recovered, StoreError> {
        let _ = page;
        let mut recovered = self.recover(terminal_max).await?;
        let specs = std::mem::take(&mut recovered.specs);
        let workflows = std::mem::take(&mut recovered.workflows);
        if pages.send(Ok(RecoveryPage::Specs(specs))).await.is_ok() {
            let _ = pages.send(Ok(RecoveryPage::Workflows(workflows))).await;
        }
        Ok(recovered)
    }
    /// A stored workflow's latest snapshot and its spec text.
    async fn load(&self, id: WorkflowId) -> Result<Option<(Snapshot, String)>, StoreError>;
    /// The spec stored as `name@version`: its content hash and text.
    async fn spec(&self, name: &str, version: u32) -> Result<Option<(String, String)>, StoreError>;
    /// Deletes terminal workflows last updated before `before_ms`; returns how many.
    /// Returns how many, and the idempotency keys they held.
    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError>;
    /// Stored workflows after `after` in id order, with their latest snapshot.
    async fn list(&self, query: ListQuery) -> Result<Vec<Snapshot>, StoreError>;
    /// A setting changed at run time (e.g. `limits`), if one was stored.
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Stores a setting, durable when this returns.
    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Audit records, newest first, as `query` filters them.
    async fn audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError>;
}

/// Commits on the calling thread (what [`Store::commit`] does, without a hand-off): the
/// batch is written there, and synced there or by the store's own threads. Only for a
/// thread that nothing else waits on while it blocks, never a runtime's worker.
pub trait CommitHere: Send + Sync {
    /// Writes `batch` and returns its number: it is durable once
    /// [`CommitHere::durable`] reaches that number, and batches become durable in the
    /// order they were written. With `sync`, syncs on the calling thread before it
    /// returns (durable then, with every batch before it); without, leaves the sync to
    /// the store's own threads and returns at once. An empty batch writes nothing and
    /// returns the number of the last one written (what an answer that changed nothing
    /// waits for).
    fn write_here(&self, batch: Batch, sync: bool) -> Result<u64, StoreError>;
    /// Through which number every written batch is durable; an error once the ones after
    /// it never will be (the store failed or closed).
    fn durable(&self) -> Result<u64, StoreError>;
    /// Changes when [`CommitHere::durable`] does (or fails).
    fn durable_changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Blocks until the batch numbered `written` is durable (or never will be).
    fn wait_here(&self, written: u64) -> Result<(), StoreError>;
}

/// What a prune deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub workflows: u64,
    /// Idempotency keys of the deleted workflows: the control unit forgets them too.
    pub keys: Vec<String>,
}

/// A page of stored workflows.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub after: Option<WorkflowId>,
    pub status: Option<WorkflowStatus>,
    pub name: Option<String>,
    pub limit: usize,
}

/// How the embedded store runs its threads (PostgreSQL ignores these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The commit log thread's nice value (`crate::priority::COMMIT_LOG_NICE` unless
    /// set; 0 leaves it as the process started it). Without the privilege to lower it
    /// the store runs all the same, and says so once at `info`.
    pub commit_log_nice: i32,
    /// Where the commit log lives (`--commit-log-dir`): a device of its own takes the
    /// log's `fdatasync` off the database's writes. `None`: beside the database file.
    pub commit_log_dir: Option<std::path::PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            commit_log_nice: crate::priority::COMMIT_LOG_NICE,
            commit_log_dir: None,
        }
    }
}

/// Opens the store a `--store` value names: `postgres://...` or a data directory.
pub async fn open(location: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(location, &StoreOptions::default()).await
}

/// [`open`] with `options` for the embedded store.
pub async fn open_with(
    location: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        if let Some(dir) = &options.commit_log_dir {
            return Err(StoreError::Misplaced(format!(
                "--commit-log-dir {} is for the embedded store; PostgreSQL keeps its own WAL",
                dir.display()
            )));
        }
        Ok(Arc::new(postgres::PostgresStore::connect(location).await?))
    } else if location.contains("://") {
        Err(StoreError::Unsupported(location.to_owned()))
    } else {
        let path = std::path::Path::new(location).join("control.sqlite3");
        Ok(Arc::new(sqlite::SqliteStore::open_with_options(
            &path, options,
        )?))
    }
}

fn parse_id(text: &str) -> Result<WorkflowId, StoreError> {
    text.parse().map_err(|e: String| StoreError::Corrupt(e))
}

fn status_name(status: WorkflowStatus) -> &'static str {
    status.as_str()
}
