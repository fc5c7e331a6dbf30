//! The embedded store: one SQLite file in WAL mode, written through a commit log. A
//! commit is durable when its entry is in the log (`journal`: one write and one
//! fdatasync per group of commits); the SQLite thread then applies the logged batches to
//! the database with `synchronous=NORMAL`, as many as are waiting in one transaction, and
//! runs every read after the commits sent before it, so reads see every commit that
//! returned. A checkpointer thread copies the WAL into the database file beside it
//! (`threads`). On open, the log's entries the database has not applied are applied
//! first.
//!
//! The layout (since migration 5) is shaped by what a WAL commit costs: every page a
//! commit touches is written whole to the WAL. The change log and the
//! snapshots are append-only tables keyed by position (a commit adds to their last
//! pages), and the workflow rows are small (about 150 bytes, no snapshot inline), so one
//! commit writes a few pages per table instead of one page per workflow it touches
//! (docs/benchmarks.md, "the store's layout"). Changes no workflow needs any more (every
//! one before the oldest active workflow's snapshot) are cut from the log's head every
//! [`TRUNCATE_EVERY`] commits.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

mod identity;
mod journal;
mod migrations;
mod threads;
use migrations::migrate;
pub use threads::Checkpointed;
use threads::{APPLIES_QUEUED_MAX, Failed, JOBS_QUEUED_MAX, Job, Log, Work};

use super::{
    Batch, ListQuery, Pruned, Recovered, RecoveredWorkflow, RecoveryPage, Store, StoreError,
    StoreOptions, decode_change, decode_snapshot, parse_id, status_name,
};
use crate::model::WorkflowId;
use crate::scheduler::restore::Snapshot;

/// Every this many commits (log entries), the transaction applying them also cuts the
/// change log's head: the changes every workflow's latest snapshot already includes.
const TRUNCATE_EVERY: u64 = 32;

/// Every this many commits (log entries), the checkpointer is asked to copy the WAL into
/// the database.
const CHECKPOINT_EVERY: u64 = 32;

/// Logged entries applied again per transaction on open.
const REPLAY_CHUNK: usize = 256;

/// WAL pages past which the writer checkpoints by itself. Under steady load the
/// checkpointer's checkpoints rarely catch the WAL's end (commits append meanwhile), so
/// the WAL is reset by these, which find most of it copied already: it grows to about
/// 40 MB and is then rewritten in place.
const WAL_BACKSTOP_PAGES: u32 = 10_000;

pub struct SqliteStore {
    path: PathBuf,
    /// To the log's thread: commits, and every read and other write in order after them
    /// (closed when the store is dropped).
    jobs: Option<tokio::sync::mpsc::Sender<Work>>,
    /// Why the store stopped taking work, once a write failed.
    failed: Failed,
    checkpointed: tokio::sync::watch::Receiver<Checkpointed>,
    /// The log's writing end: the log's thread's, and a committer's on its own thread.
    log: std::sync::Arc<Log>,
    /// The log's thread and the SQLite thread, joined on drop: the log's lock and every
    /// applied batch are released before the store is gone.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The lock beside the database file, released last (after a clean stop is recorded).
    _database_lock: std::fs::File,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_options(path, &StoreOptions::default())
    }

    /// [`SqliteStore::open`] with `options` (the commit log thread's priority).
    pub fn open_with_options(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        Self::open_with(path, journal::SEGMENT_BYTES, options)
    }

    /// [`SqliteStore::open_with_options`] with the commit log's segments of `segment_bytes`.
    fn open_with(
        path: &Path,
        segment_bytes: u64,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let database_lock = identity::lock_database(path)?;
        let mut connection = Connection::open(path).map_err(wrap)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
            )
            .map_err(wrap)?;
        migrate(&mut connection).map_err(wrap)?;
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            .map_err(wrap)?;
        // The log the database names (refused if the directory holds none or another),
        // then its entries the database has not applied (a stop before the SQLite
        // thread caught up), applied now with `synchronous=FULL`, before any read.
        let beside = journal::directory(path);
        let dir = options.commit_log_dir.clone().unwrap_or(beside.clone());
        let log_lock = identity::claim(&connection, &dir, dir == beside)?;
        let applied: i64 = connection
            .query_row("SELECT applied FROM commit_log", [], |r| r.get(0))
            .map_err(wrap)?;
        let found = journal::read_locked(&dir, applied as u64, log_lock)?;
        let mut applied = applied as u64;
        for chunk in found.entries.chunks(REPLAY_CHUNK) {
            let batches = chunk
                .iter()
                .map(|(sequence, payload)| journal::decode(*sequence, payload))
                .collect::<Result<Vec<_>, _>>()?;
            applied = chunk.last().map_or(applied, |(sequence, _)| *sequence);
            threads::apply(&mut connection, &batches, applied, false).map_err(wrap)?;
        }
        if !found.entries.is_empty() {
            tracing::info!(
                entries = found.entries.len(),
                applied,
                "applied the commit log's last entries"
            );
        }
        // What the database holds may not be on disk yet even with nothing to apply
        // again (the last process applied it with synchronous=NORMAL and was killed; the
        // WAL is in the page cache): made durable before the segments holding it are
        // written over. This also leaves the connection at synchronous=NORMAL.
        threads::durable(&mut connection).map_err(wrap)?;
        let (log, spares) = found.writer(&dir, applied, segment_bytes)?;
        let checkpointer = Connection::open(path).map_err(wrap)?;
        checkpointer
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(wrap)?;
        let (checkpoint, asked) = std::sync::mpsc::sync_channel(1);
        let (reports, checkpointed) = tokio::sync::watch::channel(Checkpointed::default());
        let shown = path.display().to_string();
        let checkpointing = threads::start("paygrid-checkpoint", path, move || {
            threads::checkpoints(checkpointer, asked, reports, shown)
        })?;
        let failed = Failed::default();
        let (applies, to_apply) = std::sync::mpsc::sync_channel(APPLIES_QUEUED_MAX);
        let sqlite = threads::start("paygrid-store", path, {
            let failed = failed.clone();
            move || {
                threads::serve_applies(&mut connection, to_apply, spares, checkpoint, failed);
                // The checkpointer's connection closes first, then this one: SQLite's
                // unix VFS can deadlock when two connections to one file close at
                // once on two threads (seen: `paygrid dev --exit` hung on exit).
                let _ = checkpointing.join();
                drop(connection);
            }
        })?;
        let (jobs, queued) = tokio::sync::mpsc::channel(JOBS_QUEUED_MAX);
        let shown = dir.display().to_string();
        let nice = options.commit_log_nice;
        let log = std::sync::Arc::new(Log::new(log, applies, failed.clone(), shown));
        let logger = threads::start("paygrid-log", path, {
            let log = log.clone();
            move || {
                // Every read waits for its wake-up, and so do commits not written on
                // the caller's thread.
                if nice != 0 {
                    crate::priority::ask_for_thread_nice("paygrid-log", nice);
                }
                threads::serve_commits(log, queued)
            }
        })?;
        let mut threads = vec![logger, sqlite];
        for n in 0..threads::SYNCERS {
            let log = log.clone();
            threads.push(threads::start(
                &format!("paygrid-sync-{n}"),
                path,
                move || {
                    // What every commit waits for: woken as soon as the sync it waits on ends.
                    if nice != 0 {
                        crate::priority::ask_for_thread_nice("paygrid-sync", nice);
                    }
                    threads::serve_syncs(log)
                },
            )?);
        }
        Ok(Self {
            path: path.to_owned(),
            jobs: Some(jobs),
            failed,
            checkpointed,
            log,
            threads,
            _database_lock: database_lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpointer's latest report; wait on the watch for the next.
    pub fn checkpointed(&self) -> tokio::sync::watch::Receiver<Checkpointed> {
        self.checkpointed.clone()
    }

    async fn send(&self, work: Work) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.send(work).await.map_err(|_| self.stopped()),
            None => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> StoreError {
        match self.failed.get() {
            Some(reason) => threads::stopped(reason),
            None => StoreError::Join("the store's thread has stopped".into()),
        }
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(work(connection));
        });
        self.send(Work::Run(job)).await?;
        // The path is printed only for an error, not for every job.
        answer
            .await
            .map_err(|_| self.stopped())?
            .map_err(|source| StoreError::Sqlite {
                path: self.path.display().to_string(),
                source,
            })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.jobs = None;
        let last = self.log.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(last) = last.filter(|_| self.failed.get().is_none()) {
            identity::mark_clean(&self.path, last);
        }
    }
}

/// Writes one batch in an open transaction (shared with the benchmark).
pub fn write_batch(
    transaction: &rusqlite::Transaction<'_>,
    batch: &Batch,
) -> Result<(), rusqlite::Error> {
    {
        let mut insert_spec = transaction
            .prepare_cached("INSERT OR IGNORE INTO specs (hash, text) VALUES (?1, ?2)")?;
        let mut insert_ref = transaction.prepare_cached(
            "INSERT OR IGNORE INTO spec_refs (name, version, hash) VALUES (?1, ?2, ?3)",
        )?;
        for spec in &batch.specs {
            insert_spec.execute(params![spec.hash, &*spec.text])?;
            insert_ref.execute(params![spec.name, spec.version, spec.hash])?;
        }
    }
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO workflows (id, name, spec_hash, status, terminal, idempotency_key, fingerprint, created_at, updated_at, snapshot_position, snapshot_sequence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, COALESCE(?11, 0))
             ON CONFLICT (id) DO UPDATE SET
                 status = excluded.status,
                 terminal = excluded.terminal,
                 updated_at = excluded.updated_at,
                 superseded = CASE WHEN excluded.snapshot_position IS NOT NULL AND workflows.snapshot_position IS NOT NULL
                     THEN workflows.superseded || ' ' || workflows.snapshot_position ELSE workflows.superseded END,
                 snapshot_position = COALESCE(excluded.snapshot_position, workflows.snapshot_position),
                 snapshot_sequence = CASE WHEN excluded.snapshot_position IS NULL THEN workflows.snapshot_sequence ELSE excluded.snapshot_sequence END",
        )?;
        // A workflow's earlier snapshots stay until it is pruned: deleting one a moment
        // after it was written rewrites its pages again and frees no page (the table
        // only grows at its end).
        let mut append_snapshot = transaction.prepare_cached(
            "INSERT INTO snapshots (workflow_id, sequence, body) VALUES (?1, ?2, ?3)",
        )?;
        for w in &batch.workflows {
            let id = w.id.to_hyphenated();
            let id = id_text(&id);
            let (position, sequence) = match &w.snapshot {
                Some((record, sequence)) => {
                    append_snapshot.execute(params![id, *sequence as i64, record])?;
                    (
                        Some(transaction.last_insert_rowid()),
                        Some(*sequence as i64),
                    )
                }
                None => (None, None),
            };
            upsert.execute(params![
                id,
                w.name,
                w.spec_hash,
                status_name(w.status),
                w.status.is_terminal(),
                w.idempotency_key,
                w.fingerprint as i64,
                w.created_at as i64,
                w.updated_at as i64,
                position,
                sequence,
            ])?;
        }
    }
    let mut insert_event = transaction.prepare_cached(
        "INSERT OR IGNORE INTO changes (sequence, workflow_id, at, change) VALUES (?2, ?1, ?3, ?4)",
    )?;
    for event in &batch.events {
        let id = event.workflow.to_hyphenated();
        insert_event.execute(params![
            id_text(&id),
            event.sequence as i64,
            event.at as i64,
            event.change
        ])?;
    }
    if !batch.audit.is_empty() {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO audit (at, actor, proof, role, origin, action, target, detail, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in &batch.audit {
            insert.execute(params![
                r.at_ms as i64,
                r.actor,
                r.proof,
                r.role,
                r.origin,
                r.action,
                r.target,
                r.detail,
                r.outcome
            ])?;
        }
    }
    Ok(())
}

/// A workflow id as the text the tables key it by, from its stack buffer.
fn id_text(hyphenated: &[u8; 36]) -> &str {
    std::str::from_utf8(hyphenated).expect("hex digits and hyphens are ASCII")
}

/// Cuts the change log's head: every change at or before the oldest snapshot of an
/// active workflow is in the latest snapshot of its workflow (a workflow's snapshot
/// includes every change committed with or before it, and ended workflows have their
/// final snapshot). With no active workflow, everything logged so far.
fn truncate_log(transaction: &rusqlite::Transaction<'_>) -> Result<usize, rusqlite::Error> {
    transaction
        .prepare_cached(
            "DELETE FROM changes WHERE sequence <= COALESCE(
                 (SELECT MIN(snapshot_sequence) FROM workflows WHERE terminal = 0),
                 (SELECT sequence FROM snapshots ORDER BY position DESC LIMIT 1),
                 0)",
        )?
        .execute([])
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Work::Commit(batch, reply)).await?;
        answer.await.map_err(|_| self.stopped())?
    }

    fn committer(&self) -> Option<std::sync::Arc<dyn super::CommitHere>> {
        Some(self.log.clone())
    }

    async fn recover(&self, terminal_max: usize) -> Result<Recovered, StoreError> {
        let (sender, mut pages) = tokio::sync::mpsc::channel(2);
        let collect = async {
            let mut specs = Vec::new();
            let mut workflows = Vec::new();
            while let Some(page) = pages.recv().await {
                match page? {
                    RecoveryPage::Specs(read) => specs = read,
                    RecoveryPage::Workflows(mut read) => workflows.append(&mut read),
                }
            }
            Ok::<_, StoreError>((specs, workflows))
        };
        let (rest, collected) = tokio::join!(
            self.recover_pages(terminal_max, super::RECOVERY_PAGE, sender),
            collect
        );
        let (specs, workflows) = collected?;
        Ok(Recovered {
            specs,
            workflows,
            ..rest?
        })
    }

    /// Reads active workflows (and the most recent terminal ones) and decodes them a page
    /// at a time on the store's thread, waiting while the channel is full, so a start
    /// never holds every stored row and every decoded snapshot at once.
    async fn recover_pages(
        &self,
        terminal_max: usize,
        page: usize,
        pages: tokio::sync::mpsc::Sender<Result<RecoveryPage, StoreError>>,
    ) -> Result<Recovered, StoreError> {
        let page = page.max(1);
        let rest = self
            .with(move |connection| {
                let specs = connection
                    .prepare("SELECT hash, text FROM specs")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                if pages.blocking_send(Ok(RecoveryPage::Specs(specs))).is_err() {
                    return Ok(None);
                }
                // The changes after each active workflow's snapshot: few, since the log's
                // head is cut. In log order: each workflow's come out in its own order.
                let mut changes: std::collections::HashMap<String, Vec<(i64, Vec<u8>)>> =
                    std::collections::HashMap::new();
                let mut statement = connection.prepare(
                    "SELECT c.workflow_id, c.at, c.change FROM changes c JOIN workflows w ON w.id = c.workflow_id
                     WHERE w.terminal = 0 AND c.sequence > w.snapshot_sequence ORDER BY c.sequence",
                )?;
                let mut query = statement.query([])?;
                while let Some(row) = query.next()? {
                    changes
                        .entry(row.get::<_, String>(0)?)
                        .or_default()
                        .push((row.get::<_, i64>(1)?, row.get::<_, Vec<u8>>(2)?));
                }
                drop(query);
                let mut statement = connection.prepare(
                    "SELECT w.id, s.body, w.fingerprint FROM workflows w JOIN snapshots s ON s.position = w.snapshot_position WHERE w.terminal = 0
                     UNION ALL
                     SELECT * FROM (SELECT w.id, s.body, w.fingerprint FROM workflows w JOIN snapshots s ON s.position = w.snapshot_position WHERE w.terminal = 1 ORDER BY w.updated_at DESC LIMIT ?1)",
                )?;
                let mut query = statement.query(params![terminal_max as i64])?;
                let mut workflows = Vec::with_capacity(page);
                while let Some(row) = query.next()? {
                    let id = row.get_ref(0)?.as_str()?.to_owned();
                    let fingerprint = row.get::<_, i64>(2)? as u64;
                    let decoded = decode_snapshot(row.get_ref(1)?.as_blob()?).and_then(|snapshot| {
                        let changes = changes
                            .remove(&id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(at, change)| Ok((at as u64, decode_change(&change)?)))
                            .collect::<Result<Vec<_>, StoreError>>()?;
                        Ok(RecoveredWorkflow {
                            snapshot,
                            fingerprint,
                            changes,
                        })
                    });
                    let workflow = match decoded {
                        Ok(workflow) => workflow,
                        Err(error) => {
                            let _ = pages.blocking_send(Err(error));
                            return Ok(None);
                        }
                    };
                    workflows.push(workflow);
                    if workflows.len() == page {
                        let full = std::mem::replace(&mut workflows, Vec::with_capacity(page));
                        if pages.blocking_send(Ok(RecoveryPage::Workflows(full))).is_err() {
                            return Ok(None);
                        }
                    }
                }
                drop(query);
                if !workflows.is_empty()
                    && pages.blocking_send(Ok(RecoveryPage::Workflows(workflows))).is_err()
                {
                    return Ok(None);
                }
                let idempotency = connection
                    .prepare("SELECT idempotency_key, id, fingerprint FROM workflows WHERE idempotency_key IS NOT NULL")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                // Snapshots are appended in commit order, so the last one has the highest
                // sequence of them; the log may be cut up to it.
                let last: i64 = connection.query_row("SELECT COALESCE(MAX(sequence), 0) FROM changes", [], |r| r.get(0))?;
                let snapshot_last: i64 = connection.query_row("SELECT COALESCE((SELECT sequence FROM snapshots ORDER BY position DESC LIMIT 1), 0)", [], |r| r.get(0))?;
                Ok(Some((idempotency, last.max(snapshot_last))))
            })
            .await?;
        let Some((idempotency, last)) = rest else {
            return Ok(Recovered::default());
        };
        let idempotency = idempotency
            .into_iter()
            .map(|(key, id, fingerprint)| Ok((key, parse_id(&id)?, fingerprint as u64)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Recovered {
            idempotency,
            last_sequence: last as u64,
            ..Recovered::default()
        })
    }

    async fn load(&self, id: WorkflowId) -> Result<Option<(Snapshot, String)>, StoreError> {
        let row = self
            .with(move |connection| {
                connection
                    .query_row(
                        "SELECT n.body, s.text FROM workflows w JOIN snapshots n ON n.position = w.snapshot_position JOIN specs s ON s.hash = w.spec_hash WHERE w.id = ?1",
                        params![id.to_string()],
                        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
                    )
                    .optional()
            })
            .await?;
        row.map(|(snapshot, text)| Ok((decode_snapshot(&snapshot)?, text)))
            .transpose()
    }

    async fn spec(&self, name: &str, version: u32) -> Result<Option<(String, String)>, StoreError> {
        let name = name.to_owned();
        self.with(move |connection| {
            connection
                .query_row(
                    "SELECT s.hash, s.text FROM spec_refs r JOIN specs s ON s.hash = r.hash WHERE r.name = ?1 AND r.version = ?2",
                    params![name, version],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
        })
        .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.with(move |connection| {
            connection
                .query_row(
                    "SELECT value FROM settings WHERE name = ?1",
                    params![name],
                    |r| r.get::<_, String>(0),
                )
                .optional()
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        // Outside the log: durable by a commit with `synchronous=FULL`.
        self.with(move |connection| {
            threads::fully_synced(connection, |connection| {
                connection
                    .execute(
                        "INSERT INTO settings (name, value, updated_at) VALUES (?1, ?2, strftime('%s','now'))
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        params![name, value],
                    )
                    .map(drop)
            })
        })
        .await
    }

    async fn audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        self.with(move |connection| {
            connection
                .prepare_cached(
                    "SELECT sequence, at, actor, proof, role, origin, action, target, detail, outcome FROM audit
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
                       AND (?3 IS NULL OR target = ?3) AND (?4 IS NULL OR sequence < ?4)
                     ORDER BY sequence DESC LIMIT ?5",
                )?
                .query_map(
                    params![
                        query.actor,
                        query.action,
                        query.target,
                        query.before.map(|b| b as i64),
                        query.limit as i64
                    ],
                    |r| {
                        Ok(crate::audit::AuditRecord {
                            sequence: r.get::<_, i64>(0)? as u64,
                            at_ms: r.get::<_, i64>(1)? as u64,
                            actor: r.get(2)?,
                            proof: r.get(3)?,
                            role: r.get(4)?,
                            origin: r.get(5)?,
                            action: r.get(6)?,
                            target: r.get(7)?,
                            detail: r.get(8)?,
                            outcome: r.get(9)?,
                        })
                    },
                )?
                .collect()
        })
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<Snapshot>, StoreError> {
        let rows = self
            .with(move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT s.body FROM workflows w JOIN snapshots s ON s.position = w.snapshot_position WHERE w.id > ?1
                     AND (?2 IS NULL OR w.status = ?2) AND (?3 IS NULL OR w.name = ?3) ORDER BY w.id LIMIT ?4",
                )?;
                let after = query.after.map(|id| id.to_string()).unwrap_or_default();
                let status = query.status.map(status_name);
                let rows = statement
                    .query_map(params![after, status, query.name, query.limit as i64], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        rows.iter().map(|bytes| decode_snapshot(bytes)).collect()
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        self.with(move |connection| {
            let transaction = connection.transaction()?;
            let keys = transaction
                .prepare("SELECT idempotency_key FROM workflows WHERE terminal = 1 AND updated_at < ?1 AND idempotency_key IS NOT NULL")?
                .query_map(params![before_ms as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            // Their changes went with the log's head (ended workflows need none); their
            // snapshots go by position: the latest, and those it superseded.
            let mut positions: Vec<i64> = Vec::new();
            {
                let mut statement = transaction.prepare(
                    "SELECT snapshot_position, superseded FROM workflows WHERE terminal = 1 AND updated_at < ?1",
                )?;
                let mut rows = statement.query(params![before_ms as i64])?;
                while let Some(row) = rows.next()? {
                    positions.extend(row.get::<_, Option<i64>>(0)?);
                    positions.extend(
                        row.get_ref(1)?
                            .as_str()?
                            .split_ascii_whitespace()
                            .filter_map(|position| position.parse::<i64>().ok()),
                    );
                }
            }
            let mut delete = transaction.prepare_cached("DELETE FROM snapshots WHERE position = ?1")?;
            for position in positions {
                delete.execute(params![position])?;
            }
            drop(delete);
            let pruned = transaction.execute("DELETE FROM workflows WHERE terminal = 1 AND updated_at < ?1", params![before_ms as i64])?;
            transaction.commit()?;
            Ok(Pruned { workflows: pruned as u64, keys })
        })
        .await
    }
}

type Rows = (
    Vec<(String, String)>,
    Vec<(String, Vec<u8>, i64, bool)>,
    Vec<(String, i64, Vec<u8>)>,
    Vec<(String, String, i64)>,
    i64,
);

/// Turns rows (from either backend) into what the actor restores.
pub(super) fn assemble(
    (specs, workflows, events, idempotency, last): Rows,
) -> Result<Recovered, StoreError> {
    let mut by_id: std::collections::HashMap<String, Vec<(u64, crate::scheduler::Change)>> =
        std::collections::HashMap::new();
    for (id, at, change) in events {
        by_id
            .entry(id)
            .or_default()
            .push((at as u64, decode_change(&change)?));
    }
    let mut recovered = Vec::with_capacity(workflows.len());
    for (id, snapshot, fingerprint, _terminal) in workflows {
        recovered.push(RecoveredWorkflow {
            snapshot: decode_snapshot(&snapshot)?,
            fingerprint: fingerprint as u64,
            changes: by_id.remove(&id).unwrap_or_default(),
        });
    }
    let idempotency = idempotency
        .into_iter()
        .map(|(key, id, fingerprint)| Ok((key, parse_id(&id)?, fingerprint as u64)))
        .collect::<Result<_, StoreError>>()?;
    Ok(Recovered {
        specs,
        workflows: recovered,
        idempotency,
        last_sequence: last as u64,
    })
}

#[cfg(test)]
mod tests;
