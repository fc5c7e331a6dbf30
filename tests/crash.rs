//! Crash tests with real processes: card payments keep flowing while parts are killed
//! (SIGKILL) and restarted at random moments; afterwards every accepted workflow is
//! terminal, the gateway holds exactly one capture per succeeded payment and none for the
//! others, and the ledger balances.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;
use tokio::sync::Mutex;

const PAYMENTS: usize = 1_000;
const SUBMITTERS: usize = 32;

/// Which card each payment uses: mostly good, some declined, some whose capture fails.
fn token(i: usize) -> &'static str {
    match i % 20 {
        0 => "tok_decline",
        7 => "tok_capture_decline",
        _ => "tok_visa",
    }
}

/// Submits every payment, retrying each with its idempotency key until accepted.
async fn submit_all(
    url: String,
    accepted: Arc<AtomicUsize>,
    ids: Arc<Mutex<HashMap<usize, String>>>,
) {
    let spec = Arc::new(spec("card-payment"));
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..SUBMITTERS {
        let (url, spec, next, accepted, ids) = (
            url.clone(),
            spec.clone(),
            next.clone(),
            accepted.clone(),
            ids.clone(),
        );
        submitters.spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect_lazy();
            let mut client = pb::workflows_client::WorkflowsClient::new(channel);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= PAYMENTS {
                    return;
                }
                let request = pb::SubmitRequest {
                    spec: Some(pb::submit_request::Spec::SpecText((*spec).clone())),
                    input_json:
                        json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": token(i)})
                            .to_string(),
                    idempotency_key: format!("payment-{i}"),
                    ..Default::default()
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                let id = loop {
                    match client.submit(request.clone()).await {
                        Ok(response) => break response.into_inner().workflow_id,
                        Err(status) => {
                            assert!(
                                Instant::now() < deadline,
                                "payment {i} never accepted: {status}"
                            );
                            // The control unit is restarting: retry, same key.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                let previous = ids.lock().await.insert(i, id.clone());
                assert!(
                    previous.is_none_or(|p| p == id),
                    "payment {i} got two workflows"
                );
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while let Some(result) = submitters.join_next().await {
        result.unwrap();
    }
}

/// Waits until every accepted workflow is terminal; returns their final states.
async fn wait_all_terminal(
    url: &str,
    ids: &HashMap<usize, String>,
) -> HashMap<usize, pb::Workflow> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut client = pb::workflows_client::WorkflowsClient::new(channel(url).await);
    let mut done: HashMap<usize, pb::Workflow> = HashMap::new();
    loop {
        for (i, id) in ids {
            if done.contains_key(i) {
                continue;
            }
            if let Ok(workflow) = client
                .get(pb::GetWorkflowRequest {
                    workflow_id: id.clone(),
                })
                .await
            {
                let workflow = workflow.into_inner();
                if is_terminal(workflow.status) {
                    done.insert(*i, workflow);
                }
            }
        }
        if done.len() == ids.len() {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} workflows still running",
            ids.len() - done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checks every crash test ends with.
fn audit(fleet: &Fleet, finals: &HashMap<usize, pb::Workflow>) {
    let mut succeeded = 0;
    let mut authorized = 0;
    let mut voided = 0;
    let mut captured_authorizations = HashSet::new();
    for (i, workflow) in finals {
        let status = pb::WorkflowStatus::try_from(workflow.status).unwrap();
        match token(*i) {
            "tok_visa" => assert_eq!(
                status,
                pb::WorkflowStatus::Succeeded,
                "payment {i}: {workflow:#?}"
            ),
            "tok_decline" => assert_eq!(
                status,
                pb::WorkflowStatus::Failed,
                "payment {i}: {workflow:#?}"
            ),
            _ => assert_eq!(
                status,
                pb::WorkflowStatus::Compensated,
                "payment {i}: {workflow:#?}"
            ),
        }
        let authorize = task(workflow, "authorize");
        if !authorize.output_json.is_empty() {
            authorized += 1;
        }
        if status == pb::WorkflowStatus::Succeeded {
            succeeded += 1;
            let capture: serde_json::Value =
                serde_json::from_str(&task(workflow, "capture").output_json).unwrap();
            let authorization = capture["authorization_id"].as_str().unwrap().to_owned();
            assert!(
                captured_authorizations.insert(authorization.clone()),
                "authorization {authorization} captured by two payments"
            );
            let payment = http(
                &fleet.gateway.url,
                "GET",
                &format!("/v1/payments/{authorization}"),
                None,
            );
            assert_eq!(payment["status"], "captured");
            assert_eq!(
                payment["capture_ids"].as_array().unwrap().len(),
                1,
                "payment {i} captured more than once"
            );
            assert_eq!(payment["amount_minor"], 1000 + *i as i64);
        }
        if status == pb::WorkflowStatus::Compensated {
            voided += 1;
        }
    }
    let stats = gateway_stats(&fleet.gateway);
    assert_eq!(
        stats["captures"], succeeded,
        "one capture per succeeded payment and none for the others: {stats}"
    );
    assert_eq!(
        stats["authorizations"], authorized,
        "one authorization per authorized payment: {stats}"
    );
    assert_eq!(stats["voids"], voided, "{stats}");
    let ledger_dir = fleet.dir.path("exec-0");
    let output = std::process::Command::new(BIN)
        .args(["--json", "ledger", "--data-dir", &ledger_dir])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "ledger report: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(
        report["transfers"]["posted"], succeeded,
        "one posted transfer per succeeded payment: {report}"
    );
    assert!(
        report["transfers"].get("pending").is_none(),
        "no hold left pending: {report}"
    );
}

/// Kills and restarts `victims` three times, at random moments while payments flow.
async fn run_with_crashes(kill: impl Fn(&mut Fleet, usize)) {
    let mut fleet = Fleet::start(&["--latency-ms", "2"], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(HashMap::new()));
    let submit = tokio::spawn(submit_all(
        fleet.control.url.clone(),
        accepted.clone(),
        ids.clone(),
    ));
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("crash moments seed {seed}");
    for round in 0..3 {
        // A random moment: after a random number of further acceptances.
        let threshold = (round * PAYMENTS / 4) + rng.usize(50..PAYMENTS / 4);
        let deadline = Instant::now() + Duration::from_secs(120);
        while accepted.load(Ordering::SeqCst) < threshold {
            assert!(
                Instant::now() < deadline,
                "submissions stalled at {}",
                accepted.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill(&mut fleet, round);
    }
    submit.await.unwrap();
    let ids = ids.lock().await.clone();
    assert_eq!(ids.len(), PAYMENTS);
    let finals = wait_all_terminal(&fleet.control.url, &ids).await;
    audit(&fleet, &finals);
}

/// The control unit is killed three times; nothing it accepted is lost or paid twice.
#[tokio::test(flavor = "multi_thread")]
async fn control_unit_crashes_lose_nothing_and_capture_once() {
    run_with_crashes(|fleet, _| fleet.control.restart()).await;
}

/// The execution unit and the gateway simulator are killed instead.
#[tokio::test(flavor = "multi_thread")]
async fn execution_unit_and_gateway_crashes_capture_once() {
    run_with_crashes(|fleet, round| {
        if round % 2 == 0 {
            fleet.execs[0].restart();
        } else {
            fleet.gateway.restart();
        }
        if round == 2 {
            fleet.gateway.restart();
        } else {
            fleet.execs[0].restart();
        }
    })
    .await;
}
