//! Two control units on one real PostgreSQL share the partitions of the workflows; one is
//! paused (SIGSTOP) past its lease with payments in flight. The other takes its partitions
//! over, recovers their workflows as after a crash, and finishes them: every payment ends
//! once, none is captured twice. The paused one, resumed, finds its leases gone and
//! rejoins. Then the run: three members, 3,000 payments, one SIGKILLed and one
//! paused mid-run.

#![allow(clippy::unwrap_used)]

#[path = "../control-unit/tests/common/postgres.rs"]
mod postgres;
mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use support::*;

const LEASE_MS: &str = "1500";

fn member(dir: &TempDir, url: &str, name: &str) -> Part {
    Part::start(&[
        "control",
        "--http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path(name),
        "--store",
        url,
        "--cluster-member",
        name,
        "--partitions",
        "8",
        "--partition-lease-ms",
        LEASE_MS,
        // A takeover's recovery gives in-flight attempts one lease to be claimed.
        "--lease-ttl-ms",
        "2000",
        // Operators may call with tokens; certificates of the CA are admins.
        "--token-key",
        &token_key(),
    ])
}

/// `paygrid cluster --json`: partitions per live member.
fn shares(url: &str) -> Vec<(String, u64)> {
    let output = paygrid()
        .args(["--json", "cluster", "--store", url])
        .output()
        .unwrap();
    // Before the first member created the tables, there is nothing to show.
    let Ok(view) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        eprintln!("cluster: {}", String::from_utf8_lossy(&output.stderr));
        return Vec::new();
    };
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["heartbeat_age_ms"].as_u64().unwrap() < 1_500)
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["partitions"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn wait_for_shares(url: &str, wanted: &[(&str, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = shares(url);
        let matches = wanted.iter().all(|(name, count)| {
            now.iter()
                .any(|(member, owned)| member == name && owned == count)
        });
        if matches {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never became {wanted:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `members` live members hold all `partitions`, none more than its share.
fn wait_for_spread(url: &str, members: usize, partitions: u64) {
    let share = partitions.div_ceil(members as u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = shares(url);
        let held: u64 = now.iter().map(|(_, owned)| owned).sum();
        if now.len() == members && held == partitions && now.iter().all(|(_, o)| *o <= share) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never spread over {members} members: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every workflow of `ids` ended, asserting it succeeded; reads them at the
/// member `door`. On a timeout, says who owns what in the cluster at `store`.
async fn all_succeed(door: &str, store: &str, ids: &[String], within: Duration) {
    let mut client = Fleet::client(door).await;
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let workflow = client
                .get(pb::GetWorkflowRequest {
                    workflow_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner);
            if let Ok(workflow) = &workflow
                && is_terminal(workflow.status)
            {
                assert_eq!(
                    workflow.status,
                    pb::WorkflowStatus::Succeeded as i32,
                    "{workflow:#?}"
                );
                break;
            }
            if Instant::now() >= deadline {
                let view = paygrid()
                    .args(["cluster", "--store", store, "--partitions"])
                    .output()
                    .unwrap();
                panic!(
                    "{id} never ended: {workflow:?}\n{}",
                    String::from_utf8_lossy(&view.stdout)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_member_s_partitions_are_taken_over_and_nothing_runs_twice() {
    let Some(database) = postgres::Postgres::start("cluster-pause") else {
        eprintln!("SKIPPED cluster test: PostgreSQL server binaries not found");
        return;
    };
    let url = database.url();
    let dir = TempDir::new("cluster");
    // Real gateways answer in 0.2 to 2 s: payments are in flight at the pause.
    let gateway = gateway_sim(&dir, &["--latency-ms", "200"]);
    let a = member(&dir, &url, "cu-a");
    wait_for_shares(&url, &[("cu-a", 8)]);
    let b = member(&dir, &url, "cu-b");
    wait_for_shares(&url, &[("cu-a", 4), ("cu-b", 4)]);
    let alpha = format!("alpha={}@25", gateway.url);
    let exec = |control: &str, name: &str, agents: &str| {
        Part::start(&[
            "--control",
            control,
            "exec",
            "--name",
            name,
            "--gateway",
            &alpha,
            "--agents",
            agents,
            "--data-dir",
            &dir.path(name),
        ])
    };
    // Two worker units, and one ledger for the cluster (a payment's ledger entries must
    // land in one ledger, whichever member runs it); each is given one member and serves
    // both, having asked it for the others.
    let _exec_a = exec(&a.url, "exec-a", "gateway,risk,verify,notify");
    let _exec_b = exec(&b.url, "exec-b", "gateway,risk,verify,notify");
    let _ledger = exec(&a.url, "exec-ledger", "ledger");

    // Twenty payments through either door: a keyed submit goes to the key's owner.
    let both_doors = [a.url.clone(), b.url.clone()];
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(submit_anywhere(&both_doors, "cluster", n).await);
    }
    any_door_works(&a.url, &b.url, &b.http).await;

    // Pause cu-a with its payments in flight, past its lease: cu-b takes everything.
    signal(&a, "-STOP");
    wait_for_shares(&url, &[("cu-b", 8)]);
    // More payments meanwhile, all through cu-b.
    for n in 20..30 {
        ids.push(submit_anywhere(std::slice::from_ref(&b.url), "cluster", n).await);
    }
    // cu-a wakes up: its leases are gone; it rejoins and the partitions spread again.
    signal(&a, "-CONT");

    // Every payment ends, once, succeeded: read at cu-b, whichever member owns it (Get
    // serves any workflow, from the store when another member owns it).
    all_succeed(&b.url, &url, &ids, Duration::from_secs(90)).await;
    let stats = gateway_stats(&gateway);
    assert_eq!(stats["captures"], 30, "one capture per payment: {stats}");
    // cu-a knows it lost its partitions; any commit it tried under the old epochs was
    // refused (how many depends on what it held at the pause).
    let metrics = scrape(&a.http);
    let lost = metrics
        .lines()
        .find(|l| l.starts_with("paygrid_partition_changes_total{change=\"lost\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(lost >= 4.0, "cu-a lost its partitions: {lost}\n{metrics}");
    let fenced = metrics
        .lines()
        .find(|l| l.starts_with("paygrid_fenced_commits_total"))
        .unwrap_or("paygrid_fenced_commits_total 0");
    eprintln!("cu-a after the pause: {fenced}");
    assert_eq!(stats["authorizations"], 30, "{stats}");
    drop(a);
    drop(b);
}

/// A workflow that waits for a skill nobody offers.
const PARKED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n";

/// Submits a parked workflow at `door` (with idempotency key `key`, when not empty),
/// retrying while the key's partition has no owner: a member that misses a lease renewal
/// on a loaded machine moves partitions, and the refusal says to retry shortly.
async fn park(door: &str, key: &str) -> pb::SubmitResponse {
    let mut client = Fleet::client(door).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(PARKED.into())),
                input_json: "{}".into(),
                idempotency_key: key.into(),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(Instant::now() < deadline, "park at {door}: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("park at {door}: {status:?}"),
        }
    }
}

/// Calls about one member's workflow work at the other: it forwards them to the owner as
/// the caller it authenticated (checked there again, and audited with the door it came
/// through), one idempotency key is one workflow whichever door takes it.
async fn any_door_works(a: &str, b: &str, b_http: &str) {
    // An unkeyed submission lands in a partition of the member that takes it: cu-a.
    let parked = park(a, "").await.workflow_id;
    let as_user = |name: &str, role| {
        let security = client_security()
            .with_bearer(paygrid_security::Bearer::new(Some(&token(name, role))).unwrap());
        let channel = security.channel_lazy(security.endpoint(b).unwrap());
        pb::workflows_client::WorkflowsClient::new(security.authorize(channel))
    };
    let cancel = pb::CancelWorkflowRequest {
        workflow_id: parked.clone(),
        reason: "cancelled through the other door".into(),
    };
    // A viewer may watch it through cu-b, not cancel it.
    let mut watch = as_user("vera", paygrid_security::Role::Viewer)
        .watch(pb::WatchWorkflowRequest {
            workflow_id: parked.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(
        matches!(first.body, Some(pb::workflow_event::Body::Snapshot(_))),
        "{first:?}"
    );
    // And follow it through cu-b on a completion stream (forwarded to cu-a by a watch).
    let (follow_ids, outgoing) = tokio::sync::mpsc::channel(1);
    follow_ids
        .send(pb::FollowRequest {
            workflow_ids: vec![parked.clone()],
            snapshot: false,
        })
        .await
        .unwrap();
    let mut follow = as_user("vera", paygrid_security::Role::Viewer)
        .follow(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let refused = as_user("vera", paygrid_security::Role::Viewer)
        .cancel(cancel.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // An operator cancels it through cu-b; the watch through cu-b sees it end.
    as_user("olga", paygrid_security::Role::Operator)
        .cancel(cancel)
        .await
        .unwrap();
    let mut last = first;
    while let Some(event) = watch.message().await.unwrap() {
        last = event;
    }
    assert!(
        matches!(
            &last.body,
            Some(pb::workflow_event::Body::Workflow(changed))
                if changed.status == pb::WorkflowStatus::Cancelled as i32
        ),
        "the forwarded watch ends with the cancellation: {last:?}"
    );
    drop(follow_ids);
    let ended = follow.message().await.unwrap().unwrap();
    assert!(
        matches!(
            &ended.body,
            Some(pb::follow_event::Body::Ended(pb::WorkflowEvent {
                workflow_id,
                body: Some(pb::workflow_event::Body::Workflow(changed)),
                ..
            })) if *workflow_id == parked && changed.status == pb::WorkflowStatus::Cancelled as i32
        ),
        "the follow through cu-b ends with the cancellation: {ended:?}"
    );
    assert!(
        follow.message().await.unwrap().is_none(),
        "the stream ends once its one workflow has"
    );
    // The owner audited it: olga's token and role, through cu-b.
    let audit = Fleet::client(a)
        .await
        .list_audit(pb::ListAuditRequest {
            target: parked.clone(),
            action: "cancel".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let entry = &audit[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.proof.as_str(),
            entry.role.as_str(),
            entry.outcome.as_str()
        ),
        ("olga", "token", "operator", "ok"),
        "{entry:?}"
    );
    assert!(entry.origin.ends_with("via cu-b"), "{entry:?}");
    // One key, one workflow, whichever door takes it (one of them forwards).
    let (first, second) = (park(a, "both-doors").await, park(b, "both-doors").await);
    assert!(first.created && !second.created, "{first:?} {second:?}");
    assert_eq!(first.workflow_id, second.workflow_id);

    // An A2A client nobody here wrote (the A2A project's Python SDK) finds cu-b by its
    // agent card, and follows and cancels there a task cu-a owns.
    let Some(python) = python_with("a2a.client") else {
        return;
    };
    let parked = park(a, "").await.workflow_id;
    let seen = run_client_script(
        &python,
        "a2a_check.py",
        &["--door", &format!("https://{b_http}"), &parked],
    );
    assert_eq!(
        seen["door_states"].as_array().unwrap().last().unwrap(),
        "TASK_STATE_CANCELED",
        "{seen}"
    );
}

/// Submits payment `label`-`n` at whichever of `doors` takes it (the key's owner),
/// retrying while partitions move or a member is down.
async fn submit_anywhere(doors: &[String], label: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let security = client_security();
    let mut turn = n;
    loop {
        let door = &doors[turn % doors.len()];
        turn += 1;
        let channel = security.channel_lazy(security.endpoint(door).unwrap());
        let answer = pb::workflows_client::WorkflowsClient::new(channel)
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(spec("card-payment"))),
                input_json: card(&format!("tok_{label}_{n}")).to_string(),
                idempotency_key: format!("{label}-{n}"),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(response) => return response.into_inner().workflow_id,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                assert!(Instant::now() < deadline, "submit {n}: {status:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("submit {n}: {status:?}"),
        }
    }
}

fn signal(part: &Part, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &part.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// The run: three members share 3,000 card payments; mid-run one is SIGKILLed and
/// another paused past its lease and resumed. Every payment ends succeeded, once; the
/// gateway captured each once; the one ledger balances with a posted transfer per payment.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_share_3000_payments_through_a_kill_and_a_pause() {
    const PAYMENTS: usize = 3_000;
    let Some(database) = postgres::Postgres::start("cluster-scale") else {
        eprintln!("SKIPPED cluster test: PostgreSQL server binaries not found");
        return;
    };
    let url = database.url();
    let dir = TempDir::new("cluster-scale");
    // Mostly quick, 5 % of requests like a slow card network.
    let gateway = gateway_sim(
        &dir,
        &[
            "--latency-ms",
            "20",
            "--slow-rate",
            "0.05",
            "--slow-latency-ms",
            "200-2000",
        ],
    );
    let mut members = Vec::new();
    for name in ["cu-1", "cu-2", "cu-3"] {
        members.push(member(&dir, &url, name));
    }
    wait_for_spread(&url, 3, 8);
    let doors: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    let alpha = format!("alpha={}@25", gateway.url);
    // Each execution unit is given one member (cu-3) and discovers the others: payments
    // owned by cu-1 and cu-2 finish only if it does.
    let exec = |name: &str, agents: &str| {
        Part::start(&[
            "--control",
            &doors[2],
            "exec",
            "--name",
            name,
            "--gateway",
            &alpha,
            "--agents",
            agents,
            "--data-dir",
            &dir.path(name),
        ])
    };
    let _workers = [
        exec("exec-1", "gateway,risk,verify,notify"),
        exec("exec-2", "gateway,risk,verify,notify"),
    ];
    let _ledger = exec("exec-ledger", "ledger");

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (doors, next, ids) = (doors.clone(), next.clone(), ids.clone());
        submitters.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= PAYMENTS {
                    return;
                }
                let id = submit_anywhere(&doors, "scale", n).await;
                ids.lock().await.push(id);
            }
        });
    }
    let submitted = |at: usize| {
        let next = next.clone();
        async move {
            while next.load(std::sync::atomic::Ordering::SeqCst) < at {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // A third in: cu-1 dies.
    submitted(PAYMENTS / 3).await;
    signal(&members[0], "-KILL");
    // Two thirds in: cu-2 stops past its lease, then carries on.
    submitted(2 * PAYMENTS / 3).await;
    signal(&members[1], "-STOP");
    wait_for_shares(&url, &[("cu-3", 8)]);
    signal(&members[1], "-CONT");
    submitters.join_all().await;

    let ids = ids.lock().await.clone();
    assert_eq!(ids.len(), PAYMENTS);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), PAYMENTS, "one workflow per payment");
    // Every payment ends succeeded: read at cu-3 (Get serves any workflow).
    all_succeed(&members[2].url, &url, &ids, Duration::from_secs(180)).await;
    let stats = gateway_stats(&gateway);
    assert_eq!(
        stats["captures"], PAYMENTS,
        "one capture per payment: {stats}"
    );
    assert_eq!(stats["authorizations"], PAYMENTS, "{stats}");
    let output = paygrid()
        .args(["--json", "ledger", "--data-dir", &dir.path("exec-ledger")])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(report["transfers"]["posted"], PAYMENTS, "{report}");
    // cu-2 lost its partitions while stopped.
    let metrics = scrape(&members[1].http);
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("paygrid_partition_changes_total{change=\"lost\"}") >= 1.0,
        "{metrics}"
    );
    // Stopped in the middle of the run, it had work to commit when it woke up: refused.
    let fenced = value("paygrid_fenced_commits_total");
    eprintln!("cu-2 after its pause: {fenced} fenced commits");
    assert!(
        fenced >= 1.0,
        "cu-2's late commits were refused and counted: {metrics}"
    );
}
