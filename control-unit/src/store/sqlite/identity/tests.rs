//! The commit log in a directory of its own: reopened there, refused where it is not
//! (with commits waiting in it) or where another database's is, a new one after a clean
//! stop, and a log from before ids adopted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::model::WorkflowId;
use crate::store::sqlite::journal::tests::{batch, writer};
use crate::store::sqlite::journal::{SEGMENT_BYTES, directory};
use crate::store::sqlite::tests::dir;
use crate::store::sqlite::{SqliteStore, identity};
use crate::store::{Store, StoreError, StoreOptions};

fn elsewhere(log: &Path) -> StoreOptions {
    StoreOptions {
        commit_log_dir: Some(log.to_owned()),
        ..StoreOptions::default()
    }
}

/// The ids of the active workflows the store recovers.
async fn active(store: &SqliteStore) -> Vec<String> {
    let recovered = store.recover(10).await.unwrap();
    recovered
        .workflows
        .iter()
        .map(|w| w.snapshot.id.clone())
        .collect()
}

/// What the database records of its log: id, directory, clean stop.
fn recorded(database: &Path) -> (Option<String>, Option<String>, bool) {
    Connection::open(database)
        .unwrap()
        .query_row("SELECT log_id, log_dir, clean FROM commit_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

fn id_in(log: &Path) -> String {
    std::fs::read_to_string(log.join(identity::ID))
        .unwrap()
        .trim()
        .to_owned()
}

/// A store stopped after logging two commits it never applied (a process killed after
/// answering them): the database names the log in `log` and was not stopped cleanly.
fn stopped_with_commits_waiting(database: &Path, log: &Path) -> [WorkflowId; 2] {
    drop(SqliteStore::open_with_options(database, &elsewhere(log)).unwrap());
    let (first, one) = batch(5_000);
    let (second, two) = batch(6_000);
    let (mut written, _spares) = writer(log, SEGMENT_BYTES);
    written.append(&[first]).unwrap();
    written.append(&[second]).unwrap();
    drop(written);
    Connection::open(database)
        .unwrap()
        .execute("UPDATE commit_log SET clean = 0", [])
        .unwrap();
    [one, two]
}

/// Why opening `database` with its log in `log` is refused.
fn refused(database: &Path, log: &Path) -> String {
    misplaced(
        SqliteStore::open_with_options(database, &elsewhere(log))
            .err()
            .unwrap(),
    )
}

fn misplaced(error: StoreError) -> String {
    match error {
        StoreError::Misplaced(reason) => reason,
        other => panic!("expected a misplaced log, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_in_a_directory_of_its_own_is_the_one_reopened() {
    let root = dir("log-elsewhere");
    let database = root.join("data/control.sqlite3");
    let log = root.join("fast/log");
    let store = SqliteStore::open_with_options(&database, &elsewhere(&log)).unwrap();
    let (written, id) = batch(5_000);
    store.commit(written).await.unwrap();
    drop(store);
    assert!(
        !directory(&database).exists(),
        "nothing is written beside the database"
    );
    assert!(log.join("segment-00000000.log").exists());
    let (recorded_id, recorded_dir, clean) = recorded(&database);
    assert_eq!(recorded_id.as_deref(), Some(id_in(&log).as_str()));
    assert_eq!(
        recorded_dir.map(PathBuf::from),
        Some(std::fs::canonicalize(&log).unwrap())
    );
    assert!(
        clean,
        "a store dropped after its last commit stopped cleanly"
    );

    let store = SqliteStore::open_with_options(&database, &elsewhere(&log)).unwrap();
    assert!(active(&store).await.contains(&id.to_string()));
    assert!(
        !recorded(&database).2,
        "an open store is not stopped cleanly"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(root);
}

/// The case the ids are for: a start that forgets `--commit-log-dir` after a crash would
/// otherwise begin an empty log beside the database and lose the two answered commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_without_the_log_holding_unapplied_commits_is_refused() {
    let root = dir("log-missing");
    let database = root.join("control.sqlite3");
    let log = root.join("log");
    let [one, two] = stopped_with_commits_waiting(&database, &log);

    let error = misplaced(SqliteStore::open(&database).err().unwrap());
    let at = std::fs::canonicalize(&log).unwrap().display().to_string();
    assert!(
        error.contains(&format!("--commit-log-dir {at}"))
            && error.contains("did not stop cleanly")
            && error.contains(&directory(&database).display().to_string()),
        "{error}"
    );
    assert!(
        !directory(&database).exists(),
        "a refused start creates nothing"
    );
    let other = root.join("empty");
    std::fs::create_dir_all(&other).unwrap();
    refused(&database, &other);
    // Its device lost: refused all the same (only a clean stop lets a new log start).
    let lost = root.join("lost");
    std::fs::rename(&log, &lost).unwrap();
    let error = misplaced(SqliteStore::open(&database).err().unwrap());
    assert!(
        error.contains(&format!(
            "it was last in {at}, and the store did not stop cleanly"
        )),
        "{error}"
    );
    std::fs::rename(&lost, &log).unwrap();

    let store = SqliteStore::open_with_options(&database, &elsewhere(&log)).unwrap();
    let found = active(&store).await;
    assert!(
        found.contains(&one.to_string()) && found.contains(&two.to_string()),
        "{found:?}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(root);
}

/// A start that names a new directory while the log is still where the database last
/// had it is refused (the flag forgotten once would otherwise move the log for good); a
/// log lost after a clean stop is replaced; the lost one, found again, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_clean_stop_a_lost_log_is_replaced_and_refused_when_found() {
    let root = dir("log-moved");
    let database = root.join("control.sqlite3");
    let (old, new) = (root.join("old"), root.join("new"));
    let store = SqliteStore::open_with_options(&database, &elsewhere(&old)).unwrap();
    let (written, id) = batch(5_000);
    store.commit(written).await.unwrap();
    drop(store);
    let error = misplaced(SqliteStore::open(&database).err().unwrap());
    let at = std::fs::canonicalize(&old).unwrap().display().to_string();
    assert!(error.contains(&format!("--commit-log-dir {at}")), "{error}");

    let lost = root.join("lost");
    std::fs::rename(&old, &lost).unwrap();
    let store = SqliteStore::open_with_options(&database, &elsewhere(&new)).unwrap();
    assert!(active(&store).await.contains(&id.to_string()));
    let (later, _) = batch(7_000);
    store.commit(later).await.unwrap();
    drop(store);
    assert_ne!(id_in(&lost), id_in(&new));
    assert_eq!(recorded(&database).0, Some(id_in(&new)));

    // Found again, the old log is no longer this database's: replaying it would apply
    // old entries again over newer ones.
    std::fs::rename(&lost, &old).unwrap();
    let error = refused(&database, &old);
    assert!(
        error.contains("another database's commit log") && error.contains(&id_in(&old)),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_databases_log_is_refused() {
    let root = dir("log-shared");
    let log = root.join("log");
    let first = root.join("a/control.sqlite3");
    let store = SqliteStore::open_with_options(&first, &elsewhere(&log)).unwrap();
    store.commit(batch(5_000).0).await.unwrap();
    drop(store);

    let second = root.join("b/control.sqlite3");
    let error = refused(&second, &log);
    assert!(error.contains(&id_in(&log)), "{error}");
    // Nor does a directory of segments without an id pass as a new log.
    std::fs::remove_file(log.join(identity::ID)).unwrap();
    let error = refused(&second, &log);
    assert!(error.contains("no id file"), "{error}");
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_database_is_not_opened_twice_with_two_logs() {
    let root = dir("log-twice");
    let database = root.join("control.sqlite3");
    let store = SqliteStore::open_with_options(&database, &elsewhere(&root.join("one"))).unwrap();
    let error = SqliteStore::open_with_options(&database, &elsewhere(&root.join("two")))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("open in another process"), "{error}");
    assert!(!root.join("two").exists());
    drop(store);
    let _ = std::fs::remove_dir_all(root);
}

/// A store from before ids (migration 8, its log beside the database without an id
/// file, commits waiting in it) opens: the log is adopted and its entries applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_from_before_ids_is_adopted_beside_its_database() {
    let root = dir("log-before-ids");
    let database = root.join("control.sqlite3");
    let beside = directory(&database);
    let [one, two] = stopped_with_commits_waiting(&database, &beside);
    std::fs::remove_file(beside.join(identity::ID)).unwrap();
    let connection = Connection::open(&database).unwrap();
    connection
        .execute_batch(
            "ALTER TABLE commit_log DROP COLUMN log_id;
             ALTER TABLE commit_log DROP COLUMN log_dir;
             ALTER TABLE commit_log DROP COLUMN clean;
             DELETE FROM schema_migrations WHERE version = 9;",
        )
        .unwrap();
    drop(connection);

    let store = SqliteStore::open(&database).unwrap();
    let found = active(&store).await;
    assert!(
        found.contains(&one.to_string()) && found.contains(&two.to_string()),
        "{found:?}"
    );
    assert_eq!(recorded(&database).0, Some(id_in(&beside)));
    drop(store);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn postgres_refuses_a_commit_log_dir() {
    let options = elsewhere(Path::new("/nowhere"));
    let error = crate::store::open_with("postgres://paygrid@127.0.0.1:1/none", &options)
        .await
        .err()
        .unwrap();
    assert!(
        misplaced(error).contains("--commit-log-dir /nowhere is for the embedded store"),
        "refused before connecting"
    );
}

/// Even after a clean stop, a directory of segments whose id file is gone is not taken
/// for a fresh log: it is refused, naming it, instead of being written over.
#[tokio::test(flavor = "multi_thread")]
async fn segments_without_an_id_are_refused_after_a_clean_stop() {
    let root = dir("log-no-id");
    let database = root.join("control.sqlite3");
    let log = root.join("log");
    let store = SqliteStore::open_with_options(&database, &elsewhere(&log)).unwrap();
    store.commit(batch(5_000).0).await.unwrap();
    drop(store);
    assert!(recorded(&database).2, "stopped cleanly");
    std::fs::remove_file(log.join(identity::ID)).unwrap();
    let error = refused(&database, &log);
    assert!(error.contains("no id file"), "{error}");
    let _ = std::fs::remove_dir_all(root);
}
