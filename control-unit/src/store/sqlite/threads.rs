//! The embedded store's two threads: the store's own thread, which owns the writing
//! connection and runs every read and commit in arrival order, and the checkpointer,
//! which copies the WAL into the database file beside it.

use std::path::Path;

use rusqlite::Connection;

use crate::store::StoreError;

/// Work for the store's thread: runs on its connection, answers through its own channel.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Jobs waiting for the store's thread (the actor's commits, operator reads, recovery).
pub(super) const JOBS_QUEUED_MAX: usize = 64;

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
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| StoreError::Sqlite {
            path: path.display().to_string(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })
}

/// The store's thread: runs jobs in arrival order until the store is dropped. A job that
/// panics is rolled back with its transaction and its caller gets an error; the thread
/// goes on.
pub(super) fn serve_jobs(mut connection: Connection, mut queued: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(job) = queued.blocking_recv() {
        let run = std::panic::AssertUnwindSafe(|| job(&mut connection));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a store job panicked; its transaction was rolled back");
        }
    }
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
