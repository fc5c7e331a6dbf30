//! An append-only journal in one SQLite file (WAL, `synchronous=FULL`): the agents that
//! hold money state (the ledger, the gateway simulator) write every applied request here
//! before they answer, and rebuild their state by replaying it at start.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    pub path: String,
    #[source]
    pub source: rusqlite::Error,
}

pub struct Journal {
    path: String,
    connection: Mutex<Connection>,
    /// Cancelled at the first failed append: the owner's memory is then ahead of its
    /// disk, and the process must stop (the host watches this and exits with code 70);
    /// every later append fails too.
    broken: tokio_util::sync::CancellationToken,
}

impl Journal {
    /// Opens (or creates) the journal and returns every entry in order.
    pub fn open(path: &Path) -> Result<(Self, Vec<String>), JournalError> {
        let name = path.display().to_string();
        let wrap = |source| JournalError {
            path: name.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let connection = Connection::open(path).map_err(wrap)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS journal (sequence INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL);",
            )
            .map_err(wrap)?;
        let entries = connection
            .prepare("SELECT entry FROM journal ORDER BY sequence")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(wrap)?;
        Ok((
            Self {
                path: name,
                connection: Mutex::new(connection),
                broken: tokio_util::sync::CancellationToken::new(),
            },
            entries,
        ))
    }

    /// Appends one entry; durable when this returns. Blocking: call it from a blocking
    /// context (`block_in_place` or the blocking pool).
    pub fn append(&self, entry: &str) -> Result<(), JournalError> {
        let error = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        if self.broken.is_cancelled() {
            return Err(error(rusqlite::Error::InvalidQuery));
        }
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let appended = connection
            .execute("INSERT INTO journal (entry) VALUES (?1)", params![entry])
            .map(|_| ())
            .map_err(error);
        if appended.is_err() {
            self.broken.cancel();
        }
        appended
    }

    /// Fires once an append failed: stop the process, replay at the next start.
    pub fn broken(&self) -> tokio_util::sync::CancellationToken {
        self.broken.clone()
    }
}
