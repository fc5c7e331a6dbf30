//! Crash tests with real processes and a gateway as slow as card networks are: part of
//! the traffic takes 0.5 to 2 s, and parts are killed (SIGKILL) and restarted while
//! gateway calls are in flight, 8 times per run. Afterwards every accepted workflow is
//! terminal, every good payment succeeded, a failed one left no capture and no open
//! authorization at the gateway, authorizations = captures + voids, the ledger balances
//! with no pending hold, no task made more attempts than its `max_attempts`, and no
//! attempt was recorded as timed out before its deadline. And the single faults: an
//! execution unit killed mid-task (redispatched, captured once) and one told to stop
//! (SIGTERM: it drains what it runs).
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

const PAYMENTS: usize = 300;
const SUBMITTERS: usize = 16;
/// Kills per run, each while the gateway has calls in flight.
const KILLS: usize = 8;
/// A gateway like a card network: 2 ms usually, 0.5 to 2 s for 40 % of the requests.
const GATEWAY: &[&str] = &[
    "--latency-ms",
    "2",
    "--slow-rate",
    "0.4",
    "--slow-latency-ms",
    "500-2000",
];
/// The card-payment spec's task timeout and attempts.
const TASK_TIMEOUT_MS: i64 = 10_000;
const MAX_ATTEMPTS: u32 = 4;

/// Which card each payment uses: mostly good, some declined, some whose capture fails.
fn token(i: usize) -> String {
    // A card per payment (the simulator reads `tok_decline_N` as `tok_decline`): the
    // risk agent sends a card used more than 20 times a minute to review, and the
    // retries after each crash count as uses.
    match i % 20 {
        0 => format!("tok_decline_{i}"),
        7 => format!("tok_capture_decline_{i}"),
        _ => format!("tok_visa_{i}"),
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
            let security = client_security();
            let channel = security.channel_lazy(security.endpoint(&url).unwrap());
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
                    ..Default::default()
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
        if Instant::now() >= deadline {
            // Say what the stuck ones wait for: their status, as `paygrid status` shows it.
            let stuck: Vec<&String> = ids
                .iter()
                .filter(|(i, _)| !done.contains_key(i))
                .map(|(_, id)| id)
                .collect();
            let shown: Vec<String> = stuck
                .iter()
                .take(3)
                .map(|id| cli(url, &["status", id]).1)
                .collect();
            panic!(
                "{} of {} workflows still running:\n{}\n{}",
                stuck.len(),
                ids.len(),
                cli(url, &["health"]).1,
                shown.join("\n")
            );
        }
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
        match token(*i).as_str() {
            good if good.starts_with("tok_visa") => assert_eq!(
                status,
                pb::WorkflowStatus::Succeeded,
                "good payment {i} did not succeed: {workflow:#?}"
            ),
            declined if declined.starts_with("tok_decline") => {
                assert_eq!(
                    status,
                    pb::WorkflowStatus::Failed,
                    "payment {i}: {workflow:#?}"
                );
                assert!(
                    workflow.error.contains("card_declined"),
                    "a declined card reports its decline: {}",
                    workflow.error
                );
            }
            _ => assert_eq!(
                status,
                pb::WorkflowStatus::Compensated,
                "payment {i}: {workflow:#?}"
            ),
        }
        for task in &workflow.tasks {
            assert!(
                task.attempts <= MAX_ATTEMPTS,
                "payment {i}: {} made {} attempts",
                task.task_id,
                task.attempts
            );
            let effect_attempts = task
                .history
                .iter()
                .filter(|h| !h.lookup && !h.compensation)
                .count();
            assert!(
                effect_attempts <= MAX_ATTEMPTS as usize,
                "payment {i}: {task:#?}"
            );
            for attempt in &task.history {
                if attempt.outcome == "timeout" {
                    let took = attempt.finished_at_ms - attempt.started_at_ms;
                    assert!(
                        took >= TASK_TIMEOUT_MS,
                        "payment {i}: attempt {} of {} timed out after {took} ms, before its deadline",
                        attempt.attempt,
                        task.task_id
                    );
                }
            }
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
    // The gateway's own view: one payment per authorized workflow, none left holding
    // an authorization, every amount (one per workflow) at most once.
    let payments = http(&fleet.gateway.url, "GET", "/v1/payments", None);
    let payments = payments["payments"].as_array().unwrap();
    let mut amounts = HashSet::new();
    for payment in payments {
        assert_ne!(
            payment["status"], "authorized",
            "an authorization hold was left behind: {payment}"
        );
        let amount = payment["amount_minor"].as_i64().unwrap();
        assert!(
            amounts.insert(amount),
            "two authorizations for one payment: {payment}"
        );
        let i = usize::try_from(amount - 1000).unwrap();
        let expected = if token(i).starts_with("tok_visa") {
            "captured"
        } else {
            "voided"
        };
        assert_eq!(payment["status"], expected, "payment {i}: {payment}");
    }
    assert_eq!(
        payments.len(),
        authorized,
        "one authorization per authorized payment"
    );
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
    assert_eq!(
        stats["authorizations"].as_u64().unwrap(),
        stats["captures"].as_u64().unwrap() + stats["voids"].as_u64().unwrap(),
        "authorizations = captures + voids: {stats}"
    );
    let ledger_dir = fleet.dir.path("exec-0");
    let output = paygrid()
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

/// Effects the gateway has answered so far (its counters survive its restarts: they
/// are rebuilt from its journal).
fn effects_done(stats: &serde_json::Value) -> u64 {
    ["authorizations", "declines", "captures", "voids", "refunds"]
        .iter()
        .map(|k| stats[k].as_u64().unwrap_or(0))
        .sum()
}

/// What the control unit says when the workload stalls: its health (breakers, drains),
/// the remediation workflows and the workflows still running, for the failure message.
fn stall_report(fleet: &Fleet) -> String {
    let url = &fleet.control.url;
    let mut report = cli(url, &["health"]).1;
    let (_, remediations) = cli(url, &["list", "--label", "trigger=breaker_opened"]);
    report.push_str(&remediations);
    for line in remediations.lines().filter(|l| l.contains("running")) {
        if let Some(id) = line.split_whitespace().next() {
            report.push_str(&cli(url, &["status", id]).1);
        }
    }
    report.push_str(&cli(url, &["list", "--status", "running", "--limit", "5"]).1);
    report
}

/// Kills a part `KILLS` times while payments flow, each time at a random moment with
/// gateway calls in flight: after a random number of further effects, as soon as the
/// gateway reports a request in progress.
async fn run_with_crashes(kill: impl Fn(&mut Fleet, usize)) {
    let mut fleet = Fleet::start(GATEWAY, 1);
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
    let mut done_at_last_kill = 0;
    for round in 0..KILLS {
        let further = rng.u64(5..25);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let stats = gateway_stats(&fleet.gateway);
            let in_flight = stats["requests_in_flight"].as_u64().unwrap_or(0);
            if effects_done(&stats) >= done_at_last_kill + further && in_flight > 0 {
                done_at_last_kill = effects_done(&stats);
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "kill {round}: no gateway call in flight (stats {stats})\n{}",
                    stall_report(&fleet)
                );
            }
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

/// The control unit is killed 8 times with slow gateway calls in flight: nothing it
/// accepted is lost, no good payment fails, nothing is paid twice or left on hold.
#[tokio::test(flavor = "multi_thread")]
async fn control_unit_crashes_with_gateway_calls_in_flight() {
    run_with_crashes(|fleet, _| fleet.control.restart()).await;
}

/// The execution unit and the gateway simulator are killed instead, alternately.
#[tokio::test(flavor = "multi_thread")]
async fn execution_unit_and_gateway_crashes_with_calls_in_flight() {
    run_with_crashes(|fleet, round| {
        if round % 2 == 0 {
            fleet.execs[0].restart();
        } else {
            fleet.gateway.restart();
        }
    })
    .await;
}

/// Killing an execution unit (SIGKILL) in the middle of a capture re-dispatches it to
/// another execution unit, and the gateway still shows exactly one capture.
#[tokio::test(flavor = "multi_thread")]
async fn killed_execution_unit_task_is_redispatched_without_double_capture() {
    // Services in one unit; the gateway agent in two units, one of which is killed.
    let mut fleet = Fleet::start(&["--capture-latency-ms", "1000"], 0);
    fleet.add_exec("services", &["--agents", "risk,ledger,verify,notify"]);
    fleet.add_exec("exec-0", &["--agents", "gateway"]);
    fleet.add_exec("exec-1", &["--agents", "gateway"]);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    // Retries generous enough to outlast the in-flight first capture (409 conflicts).
    let spec = spec("card-payment").replace(
        "max_attempts: 4, initial: 100ms, max: 5s",
        "max_attempts: 12, initial: 100ms, max: 1s",
    );
    let id = submit(
        &mut client,
        &spec,
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;

    // Wait until the capture is in flight at the gateway, then kill the unit running it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent_id = loop {
        let workflow = get(&mut client, &id).await;
        let capture = task(&workflow, "capture");
        let in_flight = gateway_stats(&fleet.gateway)["requests_in_flight"]
            .as_u64()
            .unwrap_or(0);
        if in_flight > 0 && !capture.agent_id.is_empty() && capture.attempts == 1 {
            break capture.agent_id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "capture never went in flight: {workflow:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let agents = fleet
        .agents()
        .await
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents;
    let unit = agents
        .iter()
        .find(|a| a.agent_id == agent_id)
        .expect("capturing agent")
        .execution_unit
        .clone();
    let victim = if unit == "exec-0" { 1 } else { 2 };
    fleet.execs[victim].kill();

    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{workflow:#?}"
    );
    let capture = task(&workflow, "capture");
    assert!(capture.attempts >= 2, "re-dispatched: {capture:#?}");
    assert_eq!(capture.history[0].outcome, "agent_lost");
    assert_ne!(
        capture.agent_id, agent_id,
        "finished on another execution unit"
    );
    let stats = gateway_stats(&fleet.gateway);
    assert_eq!(stats["captures"], 1, "exactly one capture: {stats}");
}

/// SIGTERM drains an execution unit: the task it is running finishes and is reported
/// (no retry, no re-dispatch), no new work is taken, and the process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_work() {
    let mut fleet = Fleet::start(&[], 0);
    fleet.add_exec("drainer", &["--agents", "sleep", "--sleep-ms", "800"]);
    fleet.wait_for_skills(&["bench.sleep"]).await;
    let mut client = fleet.workflows().await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: slow\nversion: 1\ntasks:\n  - id: slow\n    skill: bench.sleep\n";
    let id = submit(&mut client, spec, json!({}), pb::Priority::Unspecified).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while task(&get(&mut client, &id).await, "slow").attempts == 0 {
        assert!(Instant::now() < deadline, "task never dispatched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = fleet.execs[0].child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Once the control unit has seen the drain, nothing new goes to the unit. (An
    // assignment already on its way when the signal came runs as part of the drain.)
    fleet
        .wait_for_agents("the drain reached the control unit", |agents| {
            agents.iter().any(|a| a.draining)
        })
        .await;
    let second = submit(&mut client, spec, json!({}), pb::Priority::Unspecified).await;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{workflow:#?}"
    );
    assert_eq!(
        task(&workflow, "slow").attempts,
        1,
        "finished by the draining unit, not re-dispatched"
    );
    let status = tokio::task::spawn_blocking(move || {
        let child = &mut fleet.execs[0].child;
        let status = child.wait().unwrap();
        (status, fleet)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "the execution unit exits cleanly after draining: {:?}",
        status.0
    );
    let waiting = get(&mut client, &second).await;
    assert_eq!(
        task(&waiting, "slow").status,
        pb::TaskStatus::Ready as i32,
        "no new work taken while draining"
    );
}
