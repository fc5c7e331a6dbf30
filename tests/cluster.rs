//! Two control units on one real PostgreSQL share the partitions of the workflows; one is
//! paused (SIGSTOP) past its lease with payments in flight. The other takes its partitions
//! over, recovers their workflows as after a crash, and finishes them: every payment ends
//! once, none is captured twice. The paused one, resumed, finds its leases gone and
//! rejoins. (The full run, three members and 3,000 payments with a SIGKILL as
//! well, is the next step; see docs/cluster.md.)

#![allow(clippy::unwrap_used)]

#[path = "../control-unit/tests/common/postgres.rs"]
mod postgres;
mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use support::*;

const LEASE_MS: &str = "1500";

fn member(dir: &TempDir, url: &str, name: &str, http: &str) -> Part {
    Part::start(&[
        "control",
        "--http",
        http,
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

async fn submit_to(url: &str, n: usize) -> String {
    let mut client = Fleet::client(url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(spec("card-payment"))),
                input_json: card(&format!("tok_cluster_{n}")).to_string(),
                idempotency_key: format!("cluster-{n}"),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(response) => return response.into_inner().workflow_id,
            // The key's partition is the other member's, or partitions are moving.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(Instant::now() < deadline, "submit {n}: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("submit {n}: {status:?}"),
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
    let gateway = Part::start(&[
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--data-dir",
        &dir.path("gateway"),
        // Real gateways answer in 0.2 to 2 s: payments are in flight at the pause.
        "--latency-ms",
        "200",
    ]);
    let a_http = free_addr();
    let a = member(&dir, &url, "cu-a", &a_http);
    wait_for_shares(&url, &[("cu-a", 8)]);
    let b = member(&dir, &url, "cu-b", &free_addr());
    wait_for_shares(&url, &[("cu-a", 4), ("cu-b", 4)]);
    let alpha = format!("alpha={}@25", gateway.url);
    let both = format!("{},{}", a.url, b.url);
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
    // One worker unit per member, and one ledger for the cluster, serving both members
    // (a payment's ledger entries must land in one ledger, whichever member runs it).
    let _exec_a = exec(&a.url, "exec-a", "gateway,risk,verify,notify");
    let _exec_b = exec(&b.url, "exec-b", "gateway,risk,verify,notify");
    let _ledger = exec(&both, "exec-ledger", "ledger");

    // Twenty payments through either door: a keyed submit goes to the key's owner.
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut id = None;
        for door in [&a, &b] {
            let mut client = Fleet::client(&door.url).await;
            if let Ok(response) = client
                .submit(pb::SubmitRequest {
                    spec: Some(pb::submit_request::Spec::SpecText(spec("card-payment"))),
                    input_json: card(&format!("tok_cluster_{n}")).to_string(),
                    idempotency_key: format!("cluster-{n}"),
                    ..Default::default()
                })
                .await
            {
                id = Some(response.into_inner().workflow_id);
                break;
            }
        }
        ids.push(id.unwrap_or_else(|| panic!("payment {n}: neither member took it")));
    }
    // A call about another member's workflow names the owner and its address.
    let parked = Fleet::client(&a.url)
        .await
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(
                "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n".into(),
            )),
            input_json: "{}".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let cancel = pb::CancelWorkflowRequest {
        workflow_id: parked.clone(),
        reason: "test".into(),
    };
    let moved = Fleet::client(&b.url)
        .await
        .cancel(cancel.clone())
        .await
        .unwrap_err();
    assert_eq!(moved.code(), tonic::Code::Unavailable, "{moved:?}");
    assert!(
        moved
            .message()
            .contains("owned by control unit cu-a at https://"),
        "{moved:?}"
    );
    Fleet::client(&a.url).await.cancel(cancel).await.unwrap();

    // Pause cu-a with its payments in flight, past its lease: cu-b takes everything.
    let pid = a.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for_shares(&url, &[("cu-b", 8)]);
    // More payments meanwhile, all through cu-b.
    for n in 20..30 {
        ids.push(submit_to(&b.url, n).await);
    }
    // cu-a wakes up: its leases are gone; it rejoins and the partitions spread again.
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Every payment ends, once, succeeded: read from whichever member owns it (either
    // serves Get from the store as well).
    let mut client = Fleet::client(&b.url).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &ids {
        loop {
            let workflow = client
                .get(pb::GetWorkflowRequest {
                    workflow_id: id.clone(),
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
            assert!(Instant::now() < deadline, "{id} never ended: {workflow:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stats = gateway_stats(&gateway);
    assert_eq!(stats["captures"], 30, "one capture per payment: {stats}");
    // cu-a knows it lost its partitions; any commit it tried under the old epochs was
    // refused (how many depends on what it held at the pause).
    let metrics = scrape(&a_http);
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
