//! The embedded store's threads: the log's thread, which makes commits durable in the
//! commit log (`journal`, through [`Log`], which a caller with a thread of its own, the
//! actor, also writes through) and passes everything on in arrival order; the SQLite
//! thread, which owns the writing connection, applies the logged batches and runs every
//! read; and the checkpointer, which copies the WAL into the database file beside it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rusqlite::Connection;

use super::journal::{self, Segment};
use super::{CHECKPOINT_EVERY, TRUNCATE_EVERY, truncate_log, write_batch};
use crate::store::{Batch, StoreError};

/// Work for the SQLite thread: runs on its connection, answers through its own channel.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the store's callers send the log's thread.
pub(super) enum Work {
    Commit(Batch, tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    /// A read (or a write outside the log: settings, prunes), run after every commit
    /// sent before it is applied.
    Run(Job),
}

/// What the log's thread sends the SQLite thread, in log order.
pub(super) enum Apply {
    /// Logged batches, the last one's sequence.
    Batches(Vec<Batch>, u64),
    Run(Job),
    /// A full segment: recycled once its entries are durable in the database.
    Retire(Segment),
}

/// Work waiting for the log's thread (the actor's commits, operator reads, recovery).
pub(super) const JOBS_QUEUED_MAX: usize = 64;

/// Groups waiting for the SQLite thread; when it falls this far behind, the log's thread
/// waits (and so do commits).
pub(super) const APPLIES_QUEUED_MAX: usize = 256;

/// Logged batches applied in one transaction at most.
const APPLY_BATCHES_MAX: usize = 1_024;

/// How long the SQLite thread gathers logged batches before it applies them, unless a
/// read (or a retired segment) comes first or `APPLY_BATCHES_MAX` are waiting. The
/// commits are durable in the log already; one transaction over several writes each hot
/// page of the database once for all of them, which takes CPU and disk writes off the
/// cores the commits share (docs/benchmarks.md, "Issue 17, seventh step": 10 ms made
/// transactions long enough to hurt the tail at full load; 2 ms did not).
const APPLY_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Why the store stopped taking work, once a write failed: later commits fail with it,
/// and the next open applies the log again.
pub(super) type Failed = Arc<OnceLock<String>>;

/// What the checkpointer's last checkpoint reported: WAL frames then, and how many of
/// them are in the database file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpointed {
    pub runs: u64,
    pub wal_frames: i64,
    pub copied_frames: i64,
}

/// Starts a named thread; a failure to start names the store's file.
pub(super) fn start(
    name: &str,
    path: &Path,
    body: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// `fdatasync`s of the commit log in flight at once at most, a thread each: the device
/// overlaps them, so a group written while another syncs starts its own sync at once
/// instead of waiting for that one to end (docs/benchmarks.md, "Issue 17, eleventh
/// step").
pub(super) const SYNCERS: usize = 2;

/// The commit log's writing end and the way to the SQLite thread, shared by the log's
/// thread, a caller that commits on its own thread ([`Log::write`], the actor) and the
/// syncers ([`serve_syncs`]): one lock, so that the batches reach the SQLite thread in
/// the log's order, each once it is durable.
pub(super) struct Log {
    state: std::sync::Mutex<Option<LogState>>,
    /// Signalled when an entry is written that no sync covers yet, and on close.
    written: std::sync::Condvar,
    /// Signalled when `durable` moves, when a sync fails and on close.
    synced: std::sync::Condvar,
    /// The last entry durable in the log: what a caller that does not block (the actor)
    /// waits on.
    durable: tokio::sync::watch::Sender<u64>,
    failed: Failed,
    /// The log's directory, for errors.
    path: String,
}

struct LogState {
    writer: journal::Writer,
    applies: std::sync::mpsc::SyncSender<Apply>,
    /// What goes to the SQLite thread once the entry it follows is durable, in log
    /// order: logged batches, and the jobs and retired segments that come after them.
    pending: std::collections::VecDeque<(u64, Apply)>,
    /// The last entry a sync started so far covers.
    covered: u64,
    /// A write or a sync failed: what reached the disk is unknown, so nothing more is
    /// written, and nothing after the last durable entry ever will be.
    broken: bool,
}

impl Log {
    pub(super) fn new(
        writer: journal::Writer,
        applies: std::sync::mpsc::SyncSender<Apply>,
        failed: Failed,
        path: String,
    ) -> Self {
        let last = writer.last();
        Self {
            state: std::sync::Mutex::new(Some(LogState {
                writer,
                applies,
                pending: std::collections::VecDeque::new(),
                covered: last,
                broken: false,
            })),
            written: std::sync::Condvar::new(),
            synced: std::sync::Condvar::new(),
            durable: tokio::sync::watch::Sender::new(last),
            failed,
            path,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<LogState>>, StoreError> {
        // A writer that panicked holding the lock left the log in an unknown state.
        self.state
            .lock()
            .map_err(|_| StoreError::Join("a commit panicked while writing the log".into()))
    }

    /// Writes `batches` to the log (one write, not synced) and returns the last one's
    /// sequence: durable, and on its way to the SQLite thread, once [`Log::durable`]
    /// reaches it (a syncer starts its `fdatasync` at once, or as soon as one of the
    /// syncs in flight ends). Nothing written returns the last sequence written. After
    /// a failed write nothing more is written: what reached the disk is unknown, so the
    /// next open reads it again.
    pub(super) fn write(&self, batches: Vec<Batch>, hand_off: bool) -> Result<u64, StoreError> {
        let mut guard = self.lock()?;
        if let Some(reason) = self.failed.get() {
            // Stopped already (a write or an apply failed, and said so once).
            return Err(stopped(reason));
        }
        let Some(state) = guard.as_mut() else {
            return Err(StoreError::Join("the store is closed".into()));
        };
        if batches.is_empty() {
            return Ok(state.writer.last());
        }
        let count = batches.len() as u64;
        match state.writer.write(&batches) {
            Ok(appended) => {
                let last = appended.last;
                if let Some(segment) = appended.retired {
                    // The full segment was synced before the group went to the next one:
                    // everything before the group is durable, and the segment retires
                    // after its entries are applied.
                    let before = last - count;
                    state.pending.push_back((before, Apply::Retire(segment)));
                    state.covered = state.covered.max(before);
                    self.release(&mut guard, before);
                }
                if let Some(state) = guard.as_mut() {
                    state
                        .pending
                        .push_back((last, Apply::Batches(batches, last)));
                }
                if hand_off {
                    self.written.notify_one();
                }
                Ok(last)
            }
            Err(error) => {
                self.fail(state, "writing", &error);
                Err(self.io_error(&error))
            }
        }
    }

    /// A write or a sync failed: nothing after the last durable entry will be durable,
    /// nothing more is written (the next open reads again whatever reached the disk),
    /// and the jobs that waited for the lost batches run now.
    fn fail(&self, state: &mut LogState, doing: &str, error: &std::io::Error) {
        state.broken = true;
        for (_, apply) in std::mem::take(&mut state.pending) {
            if let Apply::Run(job) = apply {
                let _ = state.applies.send(Apply::Run(job));
            }
        }
        let path = &self.path;
        let _ = self.failed.set(format!("commit log {path}: {error}"));
        tracing::error!(%path, %error, "{doing} the commit log failed; the store takes no more commits");
        self.synced.notify_all();
        self.durable.send_modify(|_| ());
    }

    /// Waits until the entry `last` is durable (or never will be).
    pub(super) fn wait(&self, last: u64) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        loop {
            if *self.durable.borrow() >= last {
                return Ok(());
            }
            match guard.as_ref() {
                None => return Err(StoreError::Join("the store is closed".into())),
                Some(state) if state.broken => return Err(self.broken()),
                Some(_) => {}
            }
            guard = self
                .synced
                .wait(guard)
                .map_err(|_| StoreError::Join("a commit panicked while writing the log".into()))?;
        }
    }

    /// Writes `batches` and syncs them on the calling thread (blocks it).
    pub(super) fn commit(&self, batches: Vec<Batch>) -> Result<(), StoreError> {
        self.write(batches, false)?;
        self.sync().map(|_| ())
    }

    /// Syncs what is written on the calling thread (unless a sync in flight covers it
    /// already: then waits for that one) and releases it; returns the last entry
    /// written, durable now.
    pub(super) fn sync(&self) -> Result<u64, StoreError> {
        let (last, file) = {
            let mut guard = self.lock()?;
            let Some(state) = guard.as_mut() else {
                return Err(StoreError::Join("the store is closed".into()));
            };
            let last = state.writer.last();
            if state.broken {
                return Err(self.broken());
            }
            if last <= state.covered {
                drop(guard);
                self.wait(last)?;
                return Ok(last);
            }
            state.covered = last;
            (last, state.writer.file())
        };
        let synced = file.sync_data();
        drop(file);
        let mut guard = self.lock()?;
        match synced {
            Ok(()) => {
                self.release(&mut guard, last);
                Ok(last)
            }
            Err(error) => {
                if let Some(state) = guard.as_mut() {
                    self.fail(state, "syncing", &error);
                }
                Err(self.io_error(&error))
            }
        }
    }

    /// Entries up to `through` are durable: says so, and passes what waited for them to
    /// the SQLite thread. If that thread stopped (it said why), nothing more is written;
    /// what is durable in the log is applied again on the next open.
    fn release(&self, guard: &mut Option<LogState>, through: u64) {
        let Some(state) = guard.as_mut() else {
            return;
        };
        self.durable.send_if_modified(|durable| {
            let moved = through > *durable;
            *durable = (*durable).max(through);
            moved
        });
        let mut gone = false;
        while state
            .pending
            .front()
            .is_some_and(|(after, _)| *after <= through)
        {
            let Some((_, apply)) = state.pending.pop_front() else {
                break;
            };
            if state.applies.send(apply).is_err() {
                gone = true;
                break;
            }
        }
        if gone {
            *guard = None;
        }
        self.synced.notify_all();
    }

    /// Passes `job` to the SQLite thread, after every batch logged before it.
    fn run(&self, job: Job) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = guard.as_mut() else {
            return false;
        };
        if state.pending.is_empty() {
            return state.applies.send(Apply::Run(job)).is_ok();
        }
        let after = state.writer.last();
        state.pending.push_back((after, Apply::Run(job)));
        true
    }

    /// Lets the SQLite thread and the syncers go: nothing more is written. Returns the
    /// log's last entry if every entry written is durable and handed to the SQLite
    /// thread (nothing failed): a clean stop, once that thread has applied them.
    pub(super) fn close(&self) -> Option<u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        let last = state
            .as_ref()
            .filter(|state| !state.broken)
            .map(|state| state.writer.last())
            .filter(|last| *self.durable.borrow() >= *last);
        drop(state);
        self.written.notify_all();
        self.synced.notify_all();
        self.durable.send_modify(|_| ());
        last
    }

    fn io_error(&self, error: &std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(error.kind(), error.to_string()),
        }
    }

    fn broken(&self) -> StoreError {
        match self.failed.get() {
            Some(reason) => stopped(reason),
            None => StoreError::Join(format!("the commit log {} failed", self.path)),
        }
    }

    /// The error to answer a commit with after `error` (each caller gets its own).
    fn copy_error(&self, error: &StoreError) -> StoreError {
        match error {
            StoreError::Io { source, .. } => self.io_error(source),
            other => match self.failed.get() {
                Some(reason) => stopped(reason),
                None => StoreError::Join(other.to_string()),
            },
        }
    }
}

impl crate::store::CommitHere for Log {
    fn write_here(&self, batch: Batch, sync: bool) -> Result<u64, StoreError> {
        let batches = if batch.is_empty() {
            Vec::new()
        } else {
            vec![batch]
        };
        if sync {
            self.write(batches, false)?;
            return self.sync();
        }
        self.write(batches, true)
    }

    fn durable(&self) -> Result<u64, StoreError> {
        let guard = self.lock()?;
        match guard.as_ref() {
            None => Err(StoreError::Join("the store is closed".into())),
            Some(state) if state.broken => Err(self.broken()),
            Some(_) => Ok(*self.durable.borrow()),
        }
    }

    fn durable_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    fn wait_here(&self, written: u64) -> Result<(), StoreError> {
        self.wait(written)
    }
}

/// A syncer: `fdatasync`s the log whenever something is written that no sync in flight
/// covers, then releases what it covered ([`Log::release`]). [`SYNCERS`] of them run, so
/// that a group written while one syncs is synced at once by another. Ends when the log
/// is closed.
pub(super) fn serve_syncs(log: Arc<Log>) {
    loop {
        let (target, file) = {
            let Ok(mut guard) = log.state.lock() else {
                return;
            };
            loop {
                let Some(state) = guard.as_mut() else {
                    return;
                };
                let last = state.writer.last();
                if !state.broken && last > state.covered {
                    state.covered = last;
                    break (last, state.writer.file());
                }
                let Ok(next) = log.written.wait(guard) else {
                    return;
                };
                guard = next;
            }
        };
        let synced = file.sync_data();
        drop(file);
        let Ok(mut guard) = log.state.lock() else {
            return;
        };
        match synced {
            Ok(()) => log.release(&mut guard, target),
            Err(error) => {
                if let Some(state) = guard.as_mut() {
                    log.fail(state, "syncing", &error);
                }
            }
        }
    }
}

/// The log's thread: writes each group of waiting commits to the log ([`Log::commit`])
/// and answers them, and passes every other job to the SQLite thread in the order they
/// came. Ends when the store is dropped.
pub(super) fn serve_commits(log: Arc<Log>, mut queued: tokio::sync::mpsc::Receiver<Work>) {
    let mut batches = Vec::new();
    let mut replies = Vec::new();
    let mut next = queued.blocking_recv();
    while let Some(first) = next.take() {
        let mut run = None;
        let mut work = Some(first);
        while let Some(item) = work.take() {
            match item {
                Work::Commit(batch, reply) => {
                    batches.push(batch);
                    replies.push(reply);
                }
                Work::Run(job) => {
                    run = Some(job);
                    break;
                }
            }
            work = queued.try_recv().ok();
        }
        if !batches.is_empty() {
            match log.commit(std::mem::take(&mut batches)) {
                Ok(()) => {
                    for reply in replies.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(error) => {
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(log.copy_error(&error)));
                    }
                }
            }
        }
        if let Some(job) = run
            && !log.run(job)
        {
            break;
        }
        next = queued.blocking_recv();
    }
}

/// The SQLite thread: applies logged batches (those that arrive within `APPLY_GATHER` of
/// the first, in one transaction that also records the last one's sequence), runs jobs,
/// and recycles retired segments once the database holds their entries durably. A job
/// that panics is rolled back with its transaction and its caller gets an error; the
/// thread goes on. After a failed apply it applies and runs nothing more (their callers
/// get an error): the next open applies the log again.
pub(super) fn serve_applies(
    connection: &mut Connection,
    queued: std::sync::mpsc::Receiver<Apply>,
    spares: std::sync::mpsc::SyncSender<Segment>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
    failed: Failed,
) {
    // The cadences count log entries, not transactions (how many entries one takes
    // depends on the backlog): a transaction cuts the change log when its entries pass a
    // multiple of TRUNCATE_EVERY, and asks for a checkpoint past one of CHECKPOINT_EVERY.
    let mut applied: Option<u64> = None;
    let mut next = None;
    loop {
        let Some(item) = next.take().or_else(|| queued.recv().ok()) else {
            break;
        };
        if failed.get().is_some() {
            continue;
        }
        match item {
            Apply::Batches(mut batches, mut last) => {
                let until = std::time::Instant::now() + APPLY_GATHER;
                while batches.len() < APPLY_BATCHES_MAX {
                    let wait = until.saturating_duration_since(std::time::Instant::now());
                    match queued.recv_timeout(wait) {
                        Ok(Apply::Batches(more, more_last)) => {
                            batches.extend(more);
                            last = more_last;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let before = applied.unwrap_or(last - batches.len() as u64);
                let passes = |every: u64| last / every != before / every;
                if let Err(error) = apply(connection, &batches, last, passes(TRUNCATE_EVERY)) {
                    tracing::error!(%error, last, "applying the commit log failed; the store takes no more commits");
                    let _ =
                        failed.set(format!("applying commit log entries up to {last}: {error}"));
                    continue;
                }
                applied = Some(last);
                if passes(CHECKPOINT_EVERY) {
                    let _ = checkpoint.try_send(());
                }
            }
            Apply::Run(job) => {
                let run = std::panic::AssertUnwindSafe(|| job(connection));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("a store job panicked; its transaction was rolled back");
                }
            }
            Apply::Retire(segment) => match durable(connection) {
                Ok(()) => {
                    // More spares than kept, or the log's thread is gone: its entries
                    // are durable in the database, so the file goes.
                    if let Err(
                        std::sync::mpsc::TrySendError::Full(segment)
                        | std::sync::mpsc::TrySendError::Disconnected(segment),
                    ) = spares.try_send(segment)
                        && let Err(error) = std::fs::remove_file(&segment.path)
                    {
                        tracing::warn!(path = %segment.path.display(), %error, "removing a retired log segment failed");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "making the applied log durable failed; the store takes no more commits");
                    let _ = failed.set(format!("making the applied log durable: {error}"));
                }
            },
        }
    }
}

/// Applies logged batches in one transaction that records the last one's sequence.
pub(super) fn apply(
    connection: &mut Connection,
    batches: &[Batch],
    last: u64,
    truncate: bool,
) -> Result<(), rusqlite::Error> {
    let transaction = connection.transaction()?;
    for batch in batches {
        write_batch(&transaction, batch)?;
    }
    if truncate {
        truncate_log(&transaction)?;
    }
    transaction
        .prepare_cached("UPDATE commit_log SET applied = ?1")?
        .execute([last as i64])?;
    transaction.commit()
}

/// Makes every transaction applied so far durable: one commit with `synchronous=FULL`
/// fsyncs the WAL, and with it the commits before it.
pub(super) fn durable(connection: &mut Connection) -> Result<(), rusqlite::Error> {
    fully_synced(connection, |connection| {
        connection
            .prepare_cached("UPDATE commit_log SET retired = retired + 1")?
            .execute([])
            .map(drop)
    })
}

/// Runs `write` (its own commits) with `synchronous=FULL`, durable when it returns, then
/// goes back to `NORMAL`: for the writes that do not go through the log.
pub(super) fn fully_synced<T>(
    connection: &mut Connection,
    write: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    connection.pragma_update(None, "synchronous", "FULL")?;
    let written = write(connection);
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    written
}

/// The error of work sent after the store stopped for `reason`.
pub(super) fn stopped(reason: &str) -> StoreError {
    StoreError::Join(format!("the store stopped: {reason}"))
}

/// The checkpointer: copies the WAL's pages into the database file and fsyncs it on its
/// own thread and connection, so the writer's commits do not pay for it. Ends when the
/// store is dropped.
pub(super) fn checkpoints(
    connection: Connection,
    asked: std::sync::mpsc::Receiver<()>,
    reports: tokio::sync::watch::Sender<Checkpointed>,
    path: String,
) {
    while asked.recv().is_ok() {
        let checkpoint = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match checkpoint {
            Ok((wal_frames, copied_frames)) => reports.send_modify(|last| {
                *last = Checkpointed {
                    runs: last.runs + 1,
                    wal_frames,
                    copied_frames,
                }
            }),
            Err(error) => {
                tracing::warn!(%path, %error, "checkpoint failed; the writer's own checkpoints remain")
            }
        }
    }
}
