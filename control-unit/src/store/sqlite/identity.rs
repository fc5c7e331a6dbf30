//! Which commit log belongs to which database. The log may live apart from the database
//! (`--commit-log-dir`, on a device of its own), so a start can name the wrong
//! directory: an empty one, while the log holding commits that were acknowledged and not
//! yet applied sits elsewhere, or another database's. Either would lose or mix commits
//! silently, so the log carries an id (the file [`ID`] in its directory), the database
//! records it with the directory it was last in and whether the store stopped cleanly
//! (migration 9), and an open goes on only with the log the database names:
//!
//! - the directory holds the database's log: opened;
//! - it holds another log (another id): refused;
//! - it holds no log (missing, empty) while the directory the database recorded still
//!   holds its log: refused, naming that directory;
//! - it holds no log and the recorded one is gone (a lost device): a new log starts
//!   there if the store last stopped cleanly (every logged commit applied and durable in
//!   the database, so the lost log held nothing the database lacks); otherwise refused,
//!   naming where the log was; a new database starts its first log;
//! - it holds segments but no id: adopted in the default directory by a database that
//!   has no log id yet (a store from before ids), refused otherwise.
//!
//! A clean stop is recorded after the last applied commit is durable ([`mark_clean`]);
//! an open records the opposite before the log takes a write.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use rusqlite::Connection;

use super::journal;
use crate::store::StoreError;

/// The log's id file in its directory: 32 hex digits.
pub(super) const ID: &str = "id";

/// What the database records of its log.
struct Recorded {
    id: Option<String>,
    dir: Option<String>,
    clean: bool,
}

/// Opens the log in `dir` for the database on `connection` (at `synchronous=FULL`, so
/// what it records is durable when this returns): decides as the module says, locks the
/// directory (creating it for a new log, with its id) and records the log's id and
/// directory with the store marked as not stopped cleanly. `default` says `dir` is the
/// default directory beside the database. Returns the directory's lock.
pub(super) fn claim(
    connection: &Connection,
    dir: &Path,
    default: bool,
) -> Result<File, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: dir.display().to_string(),
        source,
    };
    let recorded = connection
        .query_row("SELECT log_id, log_dir, clean FROM commit_log", [], |row| {
            Ok(Recorded {
                id: row.get(0)?,
                dir: row.get(1)?,
                clean: row.get(2)?,
            })
        })
        .map_err(sqlite)?;
    let exists = dir.is_dir();
    let lock = if exists {
        Some(journal::lock(&dir.join(journal::LOCK))?)
    } else {
        None
    };
    let found = read_id(dir)?;
    let has_segments = !journal::segments(dir)?.is_empty();
    let shown = dir.display();
    let last_at = recorded.dir.as_deref().unwrap_or("its default directory");
    let id = match (&recorded.id, found.as_deref()) {
        (Some(ours), Some(theirs)) if ours == theirs => ours.clone(),
        (_, Some(theirs)) => {
            return Err(StoreError::Misplaced(format!(
                "{shown} holds another database's commit log (id {theirs}); this database's{} was last in {last_at}: start with --commit-log-dir where it is, or give this database a directory of its own",
                recorded
                    .id
                    .as_deref()
                    .map_or(String::new(), |ours| format!(" (id {ours})"))
            )));
        }
        (Some(ours), None) if still_there(&recorded, ours) => {
            let waiting = if recorded.clean {
                ""
            } else {
                " (the store did not stop cleanly: it may hold acknowledged commits the database lacks)"
            };
            return Err(StoreError::Misplaced(format!(
                "this database's commit log (id {ours}) is in {last_at}, not in {shown}{waiting}: start with --commit-log-dir {last_at}, or move that directory to {shown}"
            )));
        }
        (Some(_), None) if has_segments => {
            return Err(StoreError::Misplaced(format!(
                "{shown} holds commit log segments but no id file: not this database's log; start with --commit-log-dir where it is ({last_at})"
            )));
        }
        (Some(_), None) if recorded.clean => {
            tracing::warn!(
                dir = %shown,
                was = %last_at,
                "this database's commit log is not here; the store stopped cleanly (the database holds every commit), so a new log starts here"
            );
            new_id()
        }
        (Some(ours), None) => {
            return Err(StoreError::Misplaced(format!(
                "this database's commit log (id {ours}) is not in {shown}; it was last in {last_at}, and the store did not stop cleanly, so it may hold acknowledged commits the database lacks: start with --commit-log-dir where it is (or move it to {shown})"
            )));
        }
        (None, None) if has_segments && !default => {
            return Err(StoreError::Misplaced(format!(
                "{shown} holds commit log segments but no id file: not a log this database wrote; give this database an empty directory"
            )));
        }
        // A new database, or one from before ids whose log is in the default directory.
        (None, None) => new_id(),
    };
    let lock = match lock {
        Some(lock) => lock,
        None => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let lock = journal::lock(&dir.join(journal::LOCK))?;
            // Decided before the directory existed: another store may have made it a
            // log of its own meanwhile.
            if read_id(dir)?.is_some() || !journal::segments(dir)?.is_empty() {
                return Err(StoreError::Misplaced(format!(
                    "{shown} became another store's commit log while this one opened"
                )));
            }
            lock
        }
    };
    if found.as_deref() != Some(id.as_str()) {
        write_id(dir, &id)?;
    }
    let at = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    connection
        .execute(
            "UPDATE commit_log SET log_id = ?1, log_dir = ?2, clean = 0",
            rusqlite::params![id, at.display().to_string()],
        )
        .map_err(sqlite)?;
    Ok(lock)
}

/// Records that the store stopped cleanly: every entry up to `last`, the log's last, is
/// applied and durable in the database (at `path`), so a start may begin a new log if
/// this one is gone. Said at `warn` if it cannot be recorded (the next start then wants
/// this log).
pub(super) fn mark_clean(path: &Path, last: u64) {
    let marked = Connection::open(path).and_then(|connection| {
        connection.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;")?;
        connection.execute(
            "UPDATE commit_log SET clean = 1 WHERE applied = ?1",
            [last as i64],
        )
    });
    match marked {
        Ok(1) => {}
        Ok(_) => tracing::warn!(
            path = %path.display(),
            last,
            "the database has not applied the commit log's last entry; not recorded as a clean stop"
        ),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "recording a clean stop failed")
        }
    }
}

/// Whether the directory the database last recorded its log in still holds it.
fn still_there(recorded: &Recorded, ours: &str) -> bool {
    recorded
        .dir
        .as_deref()
        .is_some_and(|dir| read_id(Path::new(dir)).ok().flatten().as_deref() == Some(ours))
}

fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The id in `dir`, if it has one.
fn read_id(dir: &Path) -> Result<Option<String>, StoreError> {
    let path = dir.join(ID);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `id` to `dir`'s id file durably: a temporary file, synced, renamed over it,
/// the directory synced.
fn write_id(dir: &Path, id: &str) -> Result<(), StoreError> {
    let temporary = dir.join(format!("{ID}.new"));
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    writeln!(file, "{id}").map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, dir.join(ID)).map_err(io(dir))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The lock beside the database file (`control.sqlite3-lock`), held while the store is
/// open: with the log elsewhere, the log's own lock no longer guards the database.
pub(super) fn lock_database(database: &Path) -> Result<File, StoreError> {
    journal::lock(&journal::beside(database, "-lock"))
}

#[cfg(test)]
mod tests;
