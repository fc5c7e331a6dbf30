//! The embedded store's own layout: the carry-over of older files, the log's cut, the
//! snapshots' format.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;

use std::collections::BTreeMap;

use super::*;
use crate::model::{Priority, TaskStatus, WorkflowStatus};
use crate::scheduler::{Change, NewWorkflow, Scheduler, SchedulerConfig};
use crate::spec::{SpecLimits, compile};
use crate::store::sqlite::migrations::MIGRATIONS;
use crate::store::{EventWrite, SpecWrite, WorkflowWrite};

const SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: stored\nversion: 1\ntasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    needs: [a]\n";

pub(super) fn dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "paygrid-sqlite-{what}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A real workflow, submitted at `now`.
fn workflow(now: u64) -> (Scheduler, WorkflowId, Arc<crate::spec::CompiledSpec>) {
    let spec = Arc::new(compile(SPEC, &SpecLimits::default()).unwrap());
    let mut core = Scheduler::new(SchedulerConfig::default());
    let id = WorkflowId::generate(now);
    core.submit(
        now,
        NewWorkflow {
            id,
            spec: spec.clone(),
            input: serde_json::json!({"amount_minor": 1250}),
            priority: Priority::Normal,
            labels: BTreeMap::new(),
            idempotency_key: None,
            traceparent: String::new(),
            trace_parent_span: String::new(),
            tracestate: String::new(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    (core, id, spec)
}

/// A real workflow's snapshot as the control unit takes it (a format-2 record).
pub(super) fn snapshot(now: u64) -> (WorkflowId, Vec<u8>, Arc<crate::spec::CompiledSpec>) {
    let (core, id, spec) = workflow(now);
    let record = crate::store::records::encode_snapshot(core.workflow(id).unwrap());
    (id, record, spec)
}

/// A real workflow's snapshot as JSON, as files before format 2 hold it.
fn snapshot_json(now: u64) -> (WorkflowId, Vec<u8>, Arc<crate::spec::CompiledSpec>) {
    let (core, id, spec) = workflow(now);
    let json = serde_json::to_vec(&core.workflow(id).unwrap().snapshot()).unwrap();
    (id, json, spec)
}

/// The spec of [`snapshot`]'s workflows, as a commit writes it.
pub(super) fn spec_write(hash: &str) -> SpecWrite {
    SpecWrite {
        hash: hash.to_owned(),
        name: "stored".into(),
        version: 1,
        text: Arc::from(SPEC),
    }
}

/// A workflow row as a commit writes it, created and last updated `at`.
pub(super) fn stored(
    id: WorkflowId,
    spec_hash: &str,
    status: WorkflowStatus,
    at: u64,
    snapshot: Option<(Vec<u8>, u64)>,
) -> WorkflowWrite {
    WorkflowWrite {
        id,
        name: "stored".into(),
        spec_hash: spec_hash.to_owned(),
        status,
        idempotency_key: None,
        fingerprint: 0,
        created_at: at,
        updated_at: at,
        snapshot,
    }
}

/// A new file at `path` with the first `applied` migrations and the spec `spec_hash`
/// (text [`SPEC`]), as an older release left it.
fn at_migration(path: &std::path::Path, applied: usize, spec_hash: &str) -> Connection {
    let mut connection = Connection::open(path).unwrap();
    connection.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)").unwrap();
    for (index, migration) in MIGRATIONS[..applied].iter().enumerate() {
        let transaction = connection.transaction().unwrap();
        transaction.execute_batch(migration).unwrap();
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
                params![index as i64 + 1],
            )
            .unwrap();
        transaction.commit().unwrap();
    }
    connection
        .execute(
            "INSERT INTO specs (hash, text) VALUES (?1, ?2)",
            params![spec_hash, SPEC],
        )
        .unwrap();
    connection
}

pub(super) fn task(task: u32, status: TaskStatus) -> Vec<u8> {
    serde_json::to_vec(&Change::Task {
        task,
        compensation: false,
        status,
        attempt: 1,
        agent: None,
        detail: None,
        output: None,
        retry_at: None,
        deadline: None,
        outcome: None,
        lookups: 0,
        settling: false,
    })
    .unwrap()
}

/// A file written by the layout before migration 5 (snapshots inline as JSON, one
/// event row per change keyed by workflow; the audit log with AUTOINCREMENT) opens, is
/// carried over, and recovers the same: the active workflow with the changes after its
/// snapshot, the ended one, the key, the last sequence, the audit records and the next
/// audit sequence.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_written_by_an_older_layout_is_carried_over() {
    let dir = dir("migrate");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sqlite3");
    let (active, active_json, spec) = snapshot_json(1_000);
    let (ended, ended_json, _) = snapshot_json(1_001);
    {
        let connection = at_migration(&path, 4, &spec.hash);
        let row = "INSERT INTO workflows (id, name, spec_hash, status, terminal, idempotency_key, fingerprint, created_at, updated_at, snapshot, snapshot_sequence) VALUES (?1, 'stored', ?2, ?3, ?4, ?5, 9, 1000, ?6, ?7, ?8)";
        connection
            .execute(
                row,
                params![
                    active.to_string(),
                    spec.hash,
                    "running",
                    false,
                    "key-1",
                    1_000,
                    active_json,
                    2
                ],
            )
            .unwrap();
        connection
            .execute(
                row,
                params![
                    ended.to_string(),
                    spec.hash,
                    "succeeded",
                    true,
                    None::<String>,
                    1_010,
                    ended_json,
                    6
                ],
            )
            .unwrap();
        let event =
            "INSERT INTO events (workflow_id, sequence, at, change) VALUES (?1, ?2, 1000, ?3)";
        for (id, sequence, change) in [
            (active, 1, br#"{"kind":"created"}"#.to_vec()),
            (active, 2, task(0, TaskStatus::Ready)),
            (active, 3, task(0, TaskStatus::Succeeded)),
            (ended, 4, br#"{"kind":"created"}"#.to_vec()),
            (active, 5, task(1, TaskStatus::Ready)),
            (
                ended,
                6,
                br#"{"kind":"workflow","status":"succeeded"}"#.to_vec(),
            ),
        ] {
            connection
                .execute(event, params![id.to_string(), sequence, change])
                .unwrap();
        }
        for target in ["first", "second"] {
            connection
                .execute(
                    "INSERT INTO audit (at, actor, proof, role, origin, action, target, detail, outcome) VALUES (1, 'ops', 'token', 'operator', 'here', 'submit', ?1, '', 'ok')",
                    params![target],
                )
                .unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    let third = crate::audit::AuditRecord {
        at_ms: 2,
        actor: "ops".into(),
        action: "cancel".into(),
        target: "third".into(),
        ..Default::default()
    };
    store
        .commit(Batch {
            audit: vec![third],
            ..Default::default()
        })
        .await
        .unwrap();
    let audit: Vec<(u64, String)> = store
        .audit(crate::audit::AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sequence, r.target))
        .collect();
    assert_eq!(
        audit,
        vec![
            (3, "third".to_owned()),
            (2, "second".to_owned()),
            (1, "first".to_owned())
        ]
    );
    let audit_table: String = store
        .with(|c| {
            c.query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert!(!audit_table.contains("AUTOINCREMENT"), "{audit_table}");
    let recovered = store.recover(10).await.unwrap();
    assert_eq!(recovered.last_sequence, 6);
    assert_eq!(recovered.workflows.len(), 2);
    let restored = recovered
        .workflows
        .iter()
        .find(|w| w.snapshot.id == active.to_string())
        .expect("the active workflow");
    assert_eq!(restored.fingerprint, 9);
    let statuses: Vec<_> = restored
        .changes
        .iter()
        .map(|(_, change)| match change {
            Change::Task { task, status, .. } => (*task, *status),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        vec![(0, TaskStatus::Succeeded), (1, TaskStatus::Ready)]
    );
    assert_eq!(recovered.idempotency, vec![("key-1".to_owned(), active, 9)]);
    let (loaded, text) = store.load(ended).await.unwrap().expect("the ended one");
    assert_eq!(loaded.id, ended.to_string());
    assert_eq!(text, SPEC);
    // Only the changes a workflow still needs were carried over.
    let kept: Vec<i64> = store
        .with(|c| {
            c.prepare("SELECT sequence FROM changes ORDER BY sequence")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(kept, vec![3, 5]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every [`TRUNCATE_EVERY`] commits the log's head goes: the changes before the
/// oldest active workflow's snapshot, never one an active workflow still needs; the
/// snapshots are written compressed and read back.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_cut_before_the_oldest_active_snapshot() {
    let dir = dir("truncate");
    let store = SqliteStore::open(&dir.join("control.sqlite3")).unwrap();
    let (waiting, waiting_json, spec) = snapshot(2_000);
    let row = |id, status: WorkflowStatus, json: Option<Vec<u8>>, sequence| WorkflowWrite {
        id,
        name: "stored".into(),
        spec_hash: spec.hash.clone(),
        status,
        idempotency_key: None,
        fingerprint: 0,
        created_at: 2_000,
        updated_at: 2_000 + sequence,
        snapshot: json.map(|json| (json, sequence)),
    };
    let change = |workflow, sequence, change: Vec<u8>| EventWrite {
        workflow,
        sequence,
        at: 2_000 + sequence,
        change,
    };
    // One workflow's whole life in one commit, ending with its snapshot at `sequence`.
    let started_and_ended = |sequence: u64| {
        let (id, json, _) = snapshot(3_000);
        Batch {
            workflows: vec![row(id, WorkflowStatus::Succeeded, Some(json), sequence)],
            events: vec![
                change(id, sequence - 1, br#"{"kind":"created"}"#.to_vec()),
                change(
                    id,
                    sequence,
                    br#"{"kind":"workflow","status":"succeeded"}"#.to_vec(),
                ),
            ],
            ..Batch::default()
        }
    };
    // A workflow that waits (snapshot at 1, then one change of its own at 2).
    let mut sequence = 2;
    store
        .commit(Batch {
            specs: vec![spec_write(&spec.hash)],
            workflows: vec![row(waiting, WorkflowStatus::Running, Some(waiting_json), 1)],
            events: vec![
                change(waiting, 1, br#"{"kind":"created"}"#.to_vec()),
                change(waiting, 2, task(0, TaskStatus::Ready)),
            ],
            ..Batch::default()
        })
        .await
        .unwrap();
    // Then many that start and end, one per commit, each ending with a snapshot.
    for _ in 0..TRUNCATE_EVERY * 2 {
        sequence += 2;
        store.commit(started_and_ended(sequence)).await.unwrap();
    }
    async fn first(store: &SqliteStore) -> Option<i64> {
        store
            .with(|c| c.query_row("SELECT MIN(sequence) FROM changes", [], |r| r.get(0)))
            .await
            .unwrap()
    }
    // The waiting workflow's snapshot (1) holds the log: only change 1 may go.
    assert_eq!(first(&store).await, Some(2));
    let recovered = store.recover(0).await.unwrap();
    assert_eq!(recovered.last_sequence, sequence);
    let restored = &recovered.workflows[0];
    assert_eq!(restored.snapshot.id, waiting.to_string());
    assert_eq!(restored.changes.len(), 1, "{:?}", restored.changes);
    // Once it has a newer snapshot (it ended), the log goes up to the last one.
    let (_, ended_json, _) = snapshot(2_000);
    sequence += 1;
    let ended = row(
        waiting,
        WorkflowStatus::Succeeded,
        Some(ended_json),
        sequence,
    );
    store
        .commit(Batch {
            workflows: vec![ended],
            events: vec![change(
                waiting,
                sequence,
                br#"{"kind":"workflow","status":"succeeded"}"#.to_vec(),
            )],
            ..Batch::default()
        })
        .await
        .unwrap();
    // Up to the next commit that cuts the log (1 + 2 × TRUNCATE_EVERY + 1 so far).
    for _ in 0..TRUNCATE_EVERY - 2 {
        sequence += 2;
        store.commit(started_and_ended(sequence)).await.unwrap();
    }
    assert_eq!(
        first(&store).await,
        None,
        "everything up to the last snapshot"
    );
    let recovered = store.recover(10).await.unwrap();
    assert_eq!(recovered.last_sequence, sequence);
    assert!(recovered.workflows.iter().all(|w| w.changes.is_empty()));
    // Stored as a record, read back whole.
    let (loaded, _) = store.load(waiting).await.unwrap().unwrap();
    assert_eq!(loaded.name, "stored");
    let body: Vec<u8> = store
        .with(move |c| {
            c.query_row(
                "SELECT s.body FROM snapshots s JOIN workflows w ON w.snapshot_position = s.position WHERE w.id = ?1",
                params![waiting.to_string()],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(body[0], crate::store::records::PROTOBUF);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A paged recovery sends the specs first, then every workflow `recover` reads, at most
/// a page at a time with each one's changes; and stops without error when the receiver
/// goes.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_comes_in_pages() {
    let dir = dir("pages");
    let store = SqliteStore::open(&dir.join("control.sqlite3")).unwrap();
    let mut batch = Batch::default();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let (id, json, spec) = snapshot(4_000 + n);
        if batch.specs.is_empty() {
            batch.specs.push(spec_write(&spec.hash));
        }
        batch.workflows.push(WorkflowWrite {
            fingerprint: n,
            ..stored(
                id,
                &spec.hash,
                WorkflowStatus::Running,
                4_000,
                Some((json, 5)),
            )
        });
        ids.push(id);
    }
    // One change after the snapshots, for the third workflow.
    batch.events.push(EventWrite {
        workflow: ids[2],
        sequence: 6,
        at: 4_100,
        change: task(0, TaskStatus::Ready),
    });
    store.commit(batch).await.unwrap();

    let (sender, mut pages) = tokio::sync::mpsc::channel(1);
    let reading = store.recover_pages(10, 2, sender);
    let receiving = async {
        let mut received = Vec::new();
        while let Some(page) = pages.recv().await {
            received.push(page.unwrap());
        }
        received
    };
    let (rest, received) = tokio::join!(reading, receiving);
    let rest = rest.unwrap();
    assert_eq!(rest.last_sequence, 6);
    assert!(rest.specs.is_empty() && rest.workflows.is_empty());
    let mut sizes = Vec::new();
    let mut restored = Vec::new();
    for (n, page) in received.into_iter().enumerate() {
        match page {
            RecoveryPage::Specs(specs) => {
                assert_eq!(n, 0, "the specs come first");
                assert_eq!(specs.len(), 1);
            }
            RecoveryPage::Workflows(workflows) => {
                assert!(n > 0, "the specs come first");
                sizes.push(workflows.len());
                restored.extend(workflows);
            }
        }
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    let mut got: Vec<(String, u64, usize)> = restored
        .iter()
        .map(|w| (w.snapshot.id.clone(), w.fingerprint, w.changes.len()))
        .collect();
    got.sort();
    let mut want: Vec<(String, u64, usize)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.to_string(), n as u64, usize::from(n == 2)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // `recover` reads the same through the pages.
    assert_eq!(store.recover(10).await.unwrap().workflows.len(), 5);

    // A receiver that stops after the specs ends the reading, without error.
    let (sender, mut pages) = tokio::sync::mpsc::channel(1);
    let reading = store.recover_pages(10, 1, sender);
    let stopping = async {
        let first = pages.recv().await;
        drop(pages);
        first
    };
    let (rest, first) = tokio::join!(reading, stopping);
    assert!(matches!(first, Some(Ok(RecoveryPage::Specs(_)))));
    assert_eq!(
        rest.unwrap().last_sequence,
        0,
        "stopped early: nothing else read"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A prune deletes every snapshot of a pruned workflow (its latest and those it
/// superseded, found by position), and only theirs; a file written before migration 7
/// (where an index of workflow ids found them) gets its lists of superseded snapshots
/// when opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_prune_deletes_every_snapshot_of_a_pruned_workflow() {
    let dir = dir("prune");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sqlite3");
    let (older, older_json, spec) = snapshot_json(1_000);
    // Version 6 files hold snapshots as format 1 (compressed JSON).
    let older_json = crate::store::records::compress_snapshot_json(&older_json);
    {
        let connection = at_migration(&path, 6, &spec.hash);
        for sequence in [1, 2] {
            connection
                .execute(
                    "INSERT INTO snapshots (workflow_id, sequence, body) VALUES (?1, ?2, ?3)",
                    params![older.to_string(), sequence, older_json],
                )
                .unwrap();
        }
        connection
            .execute(
                "INSERT INTO workflows (id, name, spec_hash, status, terminal, fingerprint, created_at, updated_at, snapshot_position, snapshot_sequence) VALUES (?1, 'stored', ?2, 'succeeded', 1, 0, 1000, 1000, 2, 2)",
                params![older.to_string(), spec.hash],
            )
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let row = |id, status, json, sequence: u64, updated_at| WorkflowWrite {
        created_at: 1_000,
        ..stored(id, &spec.hash, status, updated_at, Some((json, sequence)))
    };
    // Written by this layout: created, then ended (two snapshots); and one that stays.
    let (newer, newer_json, _) = snapshot(1_001);
    let (kept, kept_json, _) = snapshot(5_000);
    for write in [
        row(newer, WorkflowStatus::Running, newer_json.clone(), 3, 1_001),
        row(newer, WorkflowStatus::Succeeded, newer_json, 4, 1_002),
        row(kept, WorkflowStatus::Succeeded, kept_json, 5, 5_000),
    ] {
        store
            .commit(Batch {
                workflows: vec![write],
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    async fn owners(store: &SqliteStore) -> Vec<String> {
        store
            .with(|c| {
                c.prepare("SELECT workflow_id FROM snapshots ORDER BY position")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .await
            .unwrap()
    }
    assert_eq!(owners(&store).await.len(), 5);
    let indexes: i64 = store
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'snapshots'",
                [],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(indexes, 0, "a commit writes no index of snapshots");
    let pruned = store.prune(2_000).await.unwrap();
    assert_eq!(pruned.workflows, 2);
    assert_eq!(owners(&store).await, vec![kept.to_string()]);
    let (loaded, _) = store.load(kept).await.unwrap().expect("the kept one");
    assert_eq!(loaded.id, kept.to_string());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checkpointer copies the WAL into the database file on its own thread: after
/// [`CHECKPOINT_EVERY`] + 1 commits (far below the writer's own threshold) it reports a
/// checkpoint that copied every frame committed, and the commits read back.
#[tokio::test(flavor = "multi_thread")]
async fn the_checkpointer_copies_the_wal_off_the_writers_path() {
    let dir = dir("checkpointer");
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("control.sqlite3")).unwrap();
    let mut reports = store.checkpointed();
    let mut ids = Vec::new();
    for sequence in 1..=CHECKPOINT_EVERY + 1 {
        let (id, json, spec) = snapshot(1_000 + sequence);
        ids.push(id);
        store
            .commit(Batch {
                workflows: vec![stored(
                    id,
                    &spec.hash,
                    WorkflowStatus::Running,
                    1_000,
                    Some((json, sequence)),
                )],
                specs: vec![spec_write(&spec.hash)],
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    // The first and the last commit asked for one; the run after the last copies all.
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reports.wait_for(|report| {
            report.copied_frames > 0 && report.copied_frames == report.wal_frames
        }),
    )
    .await
    .expect("a checkpoint within 30 s")
    .map(|report| *report)
    .unwrap();
    assert!(report.runs >= 1, "{report:?}");
    assert!(
        report.wal_frames < i64::from(WAL_BACKSTOP_PAGES),
        "the writer's own checkpoint did not run: {report:?}"
    );
    for id in ids {
        assert!(store.load(id).await.unwrap().is_some(), "{id}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The nice values of this process's threads named `name` (Linux).
#[cfg(target_os = "linux")]
fn nice_of_threads(name: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3; nice is 19.
        let after = &stat[stat.rfind(')').map_or(0, |at| at + 1)..];
        if let Some(nice) = after.split_whitespace().nth(16) {
            found.push(nice.parse().unwrap());
        }
    }
    found
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_commit_log_thread_runs_at_the_nice_value_it_was_given_when_the_process_may() {
    // Whether this process may lower a thread's nice value: tried on a scratch thread.
    let permitted = std::thread::spawn(|| crate::priority::set_current_thread_nice(-7).is_ok())
        .join()
        .unwrap();
    let dir = dir("nice");
    // -7: a value no other test's store asks for (they take the default).
    let options = StoreOptions {
        commit_log_nice: -7,
        ..StoreOptions::default()
    };
    let store = SqliteStore::open_with_options(&dir.join("control.sqlite3"), &options).unwrap();
    // A read passes through the log's thread: it has set its priority by the answer.
    assert_eq!(store.setting("limits").await.unwrap(), None);
    let nices = nice_of_threads("paygrid-log");
    if permitted {
        assert!(
            nices.contains(&-7),
            "commit log threads' nice values: {nices:?}"
        );
    } else {
        // Not permitted: the store runs all the same, at the process's priority.
        assert!(
            !nices.contains(&-7),
            "commit log threads' nice values: {nices:?}"
        );
        store.put_setting("limits", "{}").await.unwrap();
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
