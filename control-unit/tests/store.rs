//! The store suite, run against every backend: the embedded SQLite file, and a real
//! PostgreSQL server this test starts itself (initdb and pg_ctl on a free port in a temp
//! dir). Where the PostgreSQL binaries are absent, the PostgreSQL run says so and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use paygrid_control_unit::model::{Priority, WorkflowId, WorkflowStatus};
use paygrid_control_unit::scheduler::{Change, NewWorkflow, Scheduler, SchedulerConfig};
use paygrid_control_unit::spec::{SpecLimits, compile};
use paygrid_control_unit::store::{Batch, EventWrite, SpecWrite, Store, WorkflowWrite};

#[path = "common/postgres.rs"]
mod postgres;
use postgres::{Postgres, temp_dir};

const SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: stored\nversion: 1\ntasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    needs: [a]\n";

/// A real workflow's snapshot and row, as the control unit writes them.
fn workflow(now: u64, key: Option<&str>, status: WorkflowStatus) -> (WorkflowWrite, Vec<u8>) {
    let spec = Arc::new(compile(SPEC, &SpecLimits::default()).unwrap());
    let mut core = Scheduler::new(SchedulerConfig::default());
    let id = WorkflowId::generate(now);
    let mut out = Vec::new();
    core.submit(
        now,
        NewWorkflow {
            id,
            spec: spec.clone(),
            input: serde_json::json!({}),
            priority: Priority::High,
            labels: BTreeMap::new(),
            idempotency_key: key.map(str::to_owned),
            traceparent: String::new(),
            trace_parent_span: String::new(),
            tracestate: String::new(),
        },
        &mut out,
    )
    .unwrap();
    let snapshot = serde_json::to_vec(&core.workflow(id).unwrap().snapshot()).unwrap();
    let row = WorkflowWrite {
        id,
        name: spec.name.clone(),
        spec_hash: spec.hash.clone(),
        status,
        idempotency_key: key.map(str::to_owned),
        fingerprint: 77,
        created_at: now,
        updated_at: now,
        snapshot: None,
    };
    (row, snapshot)
}

fn event(id: WorkflowId, sequence: u64, change: &Change) -> EventWrite {
    EventWrite {
        workflow: id,
        sequence,
        at: 1_000 + sequence,
        change: serde_json::to_vec(change).unwrap(),
    }
}

fn task_change(task: u32, status: paygrid_control_unit::model::TaskStatus) -> Change {
    Change::Task {
        task,
        compensation: false,
        status,
        attempt: 1,
        agent: None,
        detail: None,
        output: Some(Arc::from("{\"ok\":true}")),
        retry_at: None,
        deadline: Some(1_000),
        outcome: None,
        lookups: 0,
        settling: false,
    }
}

async fn suite(store: Arc<dyn Store>) {
    use paygrid_control_unit::model::TaskStatus;
    let spec = compile(SPEC, &SpecLimits::default()).unwrap();
    // An active workflow: snapshot at sequence 2, then two more changes.
    let (mut active, snapshot) = workflow(1_000, Some("key-active"), WorkflowStatus::Running);
    active.snapshot = Some((snapshot, 2));
    let id = active.id;
    let mut batch = Batch::default();
    batch.specs.push(SpecWrite {
        hash: spec.hash.clone(),
        name: spec.name.clone(),
        version: spec.version,
        text: Arc::from(SPEC),
    });
    batch.workflows.push(active.clone());
    batch.events.push(event(id, 1, &Change::Created));
    batch
        .events
        .push(event(id, 2, &task_change(0, TaskStatus::Ready)));
    batch
        .events
        .push(event(id, 3, &task_change(0, TaskStatus::Succeeded)));
    batch
        .events
        .push(event(id, 4, &task_change(1, TaskStatus::Ready)));
    store.commit(batch).await.unwrap();

    // A later status-only update keeps the snapshot; a repeated event is ignored.
    let mut batch = Batch::default();
    batch.workflows.push(WorkflowWrite {
        snapshot: None,
        updated_at: 2_000,
        ..active.clone()
    });
    batch
        .events
        .push(event(id, 4, &task_change(1, TaskStatus::Failed)));
    store.commit(batch).await.unwrap();

    // A terminal workflow, old enough to prune, and a recent terminal one.
    let (mut old, snapshot) = workflow(10, Some("key-old"), WorkflowStatus::Succeeded);
    old.snapshot = Some((snapshot, 5));
    let (mut recent, snapshot) = workflow(5_000, None, WorkflowStatus::Failed);
    recent.snapshot = Some((snapshot, 6));
    let mut batch = Batch::default();
    batch.workflows.push(old.clone());
    batch.workflows.push(recent.clone());
    batch.events.push(event(
        old.id,
        5,
        &Change::Workflow {
            status: WorkflowStatus::Succeeded,
            detail: None,
        },
    ));
    store.commit(batch).await.unwrap();

    let recovered = store.recover(10).await.unwrap();
    assert_eq!(recovered.last_sequence, 6);
    assert_eq!(recovered.specs, vec![(spec.hash.clone(), SPEC.to_owned())]);
    // The catalog finds the spec again by `name@version`; another version is not there.
    assert_eq!(
        store.spec(&spec.name, spec.version).await.unwrap(),
        Some((spec.hash.clone(), SPEC.to_owned()))
    );
    assert_eq!(
        store.spec(&spec.name, spec.version + 1).await.unwrap(),
        None
    );
    let restored = recovered
        .workflows
        .iter()
        .find(|w| w.snapshot.id == id.to_string())
        .expect("active workflow");
    assert_eq!(restored.fingerprint, 77);
    let statuses: Vec<_> = restored
        .changes
        .iter()
        .map(|(_, c)| match c {
            Change::Task { task, status, .. } => (*task, *status),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        vec![(0, TaskStatus::Succeeded), (1, TaskStatus::Ready)],
        "changes after the snapshot, first write wins"
    );
    assert_eq!(recovered.workflows.len(), 3, "one active and two terminal");
    let mut keys: Vec<_> = recovered
        .idempotency
        .iter()
        .map(|(k, w, f)| (k.clone(), *w, *f))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("key-active".into(), id, 77),
            ("key-old".into(), old.id, 77)
        ]
    );
    let recovered = store.recover(1).await.unwrap();
    assert_eq!(
        recovered.workflows.len(),
        2,
        "terminal workflows limited to the most recent"
    );

    let (snapshot, text) = store.load(old.id).await.unwrap().expect("stored workflow");
    assert_eq!(snapshot.id, old.id.to_string());
    assert_eq!(text, SPEC);
    assert!(store.load(WorkflowId(42)).await.unwrap().is_none());

    // Listing: id order, filters, paging.
    use paygrid_control_unit::store::ListQuery;
    let all = store
        .list(ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let mut expected = vec![id.to_string(), old.id.to_string(), recent.id.to_string()];
    expected.sort();
    assert_eq!(
        all.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(all[0].name, "stored");
    let running = store
        .list(ListQuery {
            status: Some(WorkflowStatus::Running),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let after_first = store
        .list(ListQuery {
            after: expected[0].parse().ok(),
            limit: 1,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after_first.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![expected[1].clone()]
    );
    let none = store
        .list(ListQuery {
            name: Some("other".into()),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Pruning removes only terminal workflows past retention.
    let pruned = store.prune(100).await.unwrap();
    assert_eq!(pruned.workflows, 1);
    assert_eq!(
        pruned.keys,
        vec!["key-old".to_owned()],
        "the pruned workflow's key is returned"
    );
    assert!(store.load(old.id).await.unwrap().is_none());
    assert!(store.load(recent.id).await.unwrap().is_some());
    assert!(store.load(id).await.unwrap().is_some());

    // Settings changed at run time: absent, stored, replaced.
    assert_eq!(store.setting("limits").await.unwrap(), None);
    store.put_setting("limits", "rate: []").await.unwrap();
    store
        .put_setting("limits", "concurrency: []")
        .await
        .unwrap();
    assert_eq!(
        store.setting("limits").await.unwrap().as_deref(),
        Some("concurrency: []")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_suite() {
    let dir = temp_dir("sqlite");
    let store = paygrid_control_unit::store::open(dir.to_str().unwrap())
        .await
        .unwrap();
    suite(store).await;
    // Reopening runs no migration twice and keeps the data.
    let store = paygrid_control_unit::store::open(dir.to_str().unwrap())
        .await
        .unwrap();
    assert!(store.recover(10).await.unwrap().last_sequence >= 6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_store_suite() {
    let Some(cluster) = Postgres::start("pg-suite") else {
        eprintln!(
            "SKIPPED postgres_store_suite: PostgreSQL server binaries (initdb, pg_ctl) not found"
        );
        return;
    };
    let store = paygrid_control_unit::store::open(&cluster.url())
        .await
        .unwrap();
    suite(store).await;
    let store = paygrid_control_unit::store::open(&cluster.url())
        .await
        .unwrap();
    assert!(store.recover(10).await.unwrap().last_sequence >= 6);
}

/// A group commit that fails (the database went away) stops the control unit: the
/// submission in that batch is never acknowledged, and `serve` returns the store error to
/// the binary (which exits with code 70) instead of going on with memory ahead of disk.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_stops_the_control_unit_with_the_error() {
    use paygrid_control_unit::error::ControlError;
    use paygrid_control_unit::server::{ControlConfig, ServeError, serve};
    use paygrid_proto::v1 as pb;
    let Some(cluster) = Postgres::start("pg-failed-commit") else {
        eprintln!(
            "SKIPPED a_failed_commit_stops_the_control_unit: PostgreSQL server binaries not found"
        );
        return;
    };
    let store = paygrid_control_unit::store::open(&cluster.url())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ControlConfig {
        store: Some(store),
        ..Default::default()
    };
    let server = tokio::spawn(serve(listener, config, std::future::pending()));
    let mut client = pb::workflows_client::WorkflowsClient::connect(url)
        .await
        .unwrap();
    let request = || pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(SPEC.into())),
        input_json: "{}".into(),
        ..Default::default()
    };
    client
        .submit(request())
        .await
        .expect("committed while the database is up");
    drop(cluster); // pg_ctl stop -m immediate
    let refused = client.submit(request()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the control unit stops by itself")
        .unwrap();
    assert!(
        matches!(stopped, Err(ServeError::Control(ControlError::Store(_)))),
        "{stopped:?}"
    );
}

/// The ownership protocol's statements against a real PostgreSQL: a partition is taken
/// once per epoch, renewed only by its holder, and a commit's fence locks the lease rows,
/// so a takeover waits for the commit and the old owner's next commit is refused.
#[tokio::test(flavor = "multi_thread")]
async fn partition_leases_take_renew_and_fence_on_postgres() {
    use paygrid_control_unit::cluster::postgres::{PgLeases, fence};
    let Some(cluster) = Postgres::start("pg-leases") else {
        eprintln!("SKIPPED partition_leases: PostgreSQL server binaries not found");
        return;
    };
    let url = cluster.url();
    let ttl = std::time::Duration::from_secs(30);
    let a = PgLeases::connect(&url, "cu-a", ttl, 8).await.unwrap();
    let b = PgLeases::connect(&url, "cu-b", ttl, 16).await.unwrap();
    let table = a.read().await.unwrap();
    // The first member sized the cluster.
    assert_eq!(table.leases.len(), 8);
    assert!(
        table
            .leases
            .iter()
            .all(|l| l.owner.is_none() && l.epoch == 0)
    );

    assert_eq!(a.take(0, 0).await.unwrap(), Some(1));
    // Seen epoch is stale, then the lease is held: b gets nothing.
    assert_eq!(b.take(0, 0).await.unwrap(), None);
    assert_eq!(b.take(0, 1).await.unwrap(), None);
    assert_eq!(a.renew(&[(0, 1)]).await.unwrap(), vec![0]);
    assert_eq!(b.renew(&[(0, 1)]).await.unwrap(), Vec::<u32>::new());

    // a's lease runs out (given back here) while nobody has taken it yet: a commit of
    // a's still holds the epoch, and its fence locks the lease row ...
    a.give_back(0, 1).await.unwrap();
    let (mut writer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let transaction = writer.transaction().await.unwrap();
    assert!(
        fence(&transaction, "cu-a", &[(0, 1)])
            .await
            .unwrap()
            .is_empty()
    );
    // ... so b's takeover waits for that commit.
    let takeover = tokio::spawn(async move { b.take(0, 1).await.map(|e| (e, b)) });
    let (watcher, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            !takeover.is_finished(),
            "the takeover did not wait for the commit"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the takeover never blocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    transaction.commit().await.unwrap();
    let (epoch, b) = takeover.await.unwrap().unwrap();
    assert_eq!(epoch, Some(2));

    // a's next commit under epoch 1 is fenced; b's under epoch 2 goes on.
    let transaction = writer.transaction().await.unwrap();
    assert_eq!(
        fence(&transaction, "cu-a", &[(0, 1)]).await.unwrap(),
        vec![0]
    );
    assert!(
        fence(&transaction, "cu-b", &[(0, 2)])
            .await
            .unwrap()
            .is_empty()
    );
    transaction.rollback().await.unwrap();

    // cu-b restarts under the same name: it takes its partition back at once, under a
    // new epoch that fences its previous incarnation.
    let reborn = PgLeases::connect(&url, "cu-b", ttl, 8).await.unwrap();
    assert_eq!(reborn.take(0, 2).await.unwrap(), Some(3));
    let transaction = writer.transaction().await.unwrap();
    assert_eq!(
        fence(&transaction, "cu-b", &[(0, 2)]).await.unwrap(),
        vec![0]
    );
    transaction.rollback().await.unwrap();
    drop(reborn);

    a.heartbeat("https://127.0.0.1:1", "").await.unwrap();
    b.heartbeat("https://127.0.0.1:2", "").await.unwrap();
    let live: Vec<String> = a
        .live_members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(live, ["cu-a", "cu-b"]);
}

/// Control units of a cluster starting together on a fresh database: one migrates, the
/// others wait for it (they used to race on `CREATE TABLE IF NOT EXISTS`).
#[tokio::test(flavor = "multi_thread")]
async fn control_units_starting_together_migrate_once() {
    let Some(cluster) = Postgres::start("pg-together") else {
        eprintln!("SKIPPED migrate-together: PostgreSQL server binaries not found");
        return;
    };
    let url = cluster.url();
    let (a, b, c) = tokio::join!(
        paygrid_control_unit::store::open(&url),
        paygrid_control_unit::store::open(&url),
        paygrid_control_unit::store::open(&url),
    );
    for store in [a, b, c] {
        store.unwrap();
    }
}
