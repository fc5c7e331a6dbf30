//! Limits with real processes: a rate limit on a gateway holds over a run, and a key
//! limited to 2 concurrent captures never has 3 running, measured from the attempts'
//! own start and end times as the control unit recorded them.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

const PAYMENTS: usize = 40;
const RATE: f64 = 20.0;

/// A control unit started with `--limits` (the YAML given), gateway simulators (name,
/// bps), one execution unit serving them, and the control unit's HTTP listener.
struct Limited {
    // Dropped in this order: the execution unit first.
    _exec: Part,
    control: Part,
    gateways: Vec<Part>,
    http: String,
    _dir: TempDir,
}

impl Limited {
    fn start(name: &str, limits: &str, gateways: &[(&str, u32)]) -> Self {
        let dir = TempDir::new(name);
        let file = dir.0.join("limits.yaml");
        std::fs::write(&file, limits).unwrap();
        let parts: Vec<Part> = gateways
            .iter()
            .map(|(gateway, _)| {
                Part::start(&["gateway-sim", "--listen", "127.0.0.1:0", "--name", gateway])
            })
            .collect();
        let file = file.display().to_string();
        let control = Part::start(&[
            "control",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path("control"),
            "--http",
            "127.0.0.1:0",
            "--limits",
            &file,
        ]);
        let gateway_args: Vec<String> = gateways
            .iter()
            .zip(&parts)
            .map(|((gateway, bps), part)| format!("{gateway}={}@{bps}", part.url))
            .collect();
        let exec_name = format!("exec-{name}");
        let mut args = vec!["--control", &control.url, "exec", "--name", &exec_name];
        for gateway in &gateway_args {
            args.extend(["--gateway", gateway.as_str()]);
        }
        let exec = Part::start(&args);
        Self {
            _exec: exec,
            http: control.http.clone(),
            control,
            gateways: parts,
            _dir: dir,
        }
    }

    /// Waits until every gateway's agent is connected: routing compares gateways only
    /// among the connected ones.
    async fn wait_for_gateways(&self) {
        let security = client_security();
        let channel = security.channel_lazy(security.endpoint(&self.control.url).unwrap());
        let mut hub = pb::agent_hub_client::AgentHubClient::new(channel);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let agents = hub
                .list_agents(pb::ListAgentsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .agents;
            let connected = agents
                .iter()
                .filter(|a| a.connected)
                .filter(|a| {
                    a.card
                        .as_ref()
                        .is_some_and(|c| c.labels.contains_key("gateway"))
                })
                .count();
            if connected == self.gateways.len() {
                return;
            }
            assert!(Instant::now() < deadline, "gateway agents never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_rate_and_a_merchant_concurrency_limit_hold_over_a_run() {
    let fleet = Limited::start(
        "limits",
        &format!(
            "rate:\n  - {{ skill: gateway.authorize, gateway: alpha, per_second: {RATE}, burst: 1 }}\nconcurrency:\n  - {{ name: captures-per-merchant, skill: gateway.capture, key: \"{{{{ inputs.merchant }}}}\", max: 2 }}\n"
        ),
        &[("alpha", 25)],
    );
    fleet.wait_for_gateways().await;
    // Captures take 500 ms: one merchant has one every 100 ms, so 5 would overlap without the limit.
    http(
        &fleet.gateways[0].url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"capture_latency_ms": 500}"#),
    );
    let control = &fleet.control;
    let mut client = Fleet::client(&control.url).await;
    let card = spec("card-payment");
    let mut ids = Vec::new();
    for i in 0..PAYMENTS {
        let merchant = if i % 2 == 0 { "big" } else { "small" };
        let input = json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": format!("tok_visa_{i}"), "merchant": merchant});
        ids.push(submit(&mut client, &card, input, pb::Priority::Unspecified).await);
    }
    let mut authorizations = Vec::new();
    let mut captures: Vec<(String, i64, i64)> = Vec::new();
    for id in &ids {
        let done = tokio::time::timeout(Duration::from_secs(60), wait_terminal(&mut client, id))
            .await
            .unwrap();
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
        let merchant =
            serde_json::from_str::<serde_json::Value>(&done.input_json).unwrap()["merchant"]
                .as_str()
                .unwrap()
                .to_owned();
        for attempt in &task(&done, "authorize").history {
            authorizations.push(attempt.started_at_ms);
        }
        for attempt in &task(&done, "capture").history {
            captures.push((
                merchant.clone(),
                attempt.started_at_ms,
                attempt.finished_at_ms,
            ));
        }
    }

    // The rate: one authorization per 50 ms, so no 1 s window holds more than 20 (+1 for
    // the window's edge), and the run takes at least (40 - 1) / 20 s.
    authorizations.sort_unstable();
    assert_eq!(authorizations.len(), PAYMENTS);
    let span = authorizations[PAYMENTS - 1] - authorizations[0];
    assert!(span >= 1_900, "40 authorizations at 20/s took {span} ms");
    for (i, start) in authorizations.iter().enumerate() {
        let in_window = authorizations[i..]
            .iter()
            .take_while(|t| **t < start + 1_000)
            .count();
        assert!(
            in_window <= RATE as usize + 1,
            "{in_window} authorizations in the second from {start}: {authorizations:?}"
        );
    }
    let gaps: Vec<i64> = authorizations.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 45),
        "dispatches at most every 50 ms (5 ms of clock tolerance): {gaps:?}"
    );

    // The key: at no moment 3 captures of one merchant were running.
    for merchant in ["big", "small"] {
        let mine: Vec<&(String, i64, i64)> =
            captures.iter().filter(|(m, _, _)| m == merchant).collect();
        for (_, start, _) in &mine {
            let overlapping = mine
                .iter()
                .filter(|(_, s, f)| s <= start && start < f)
                .count();
            assert!(
                overlapping <= 2,
                "{overlapping} captures of {merchant} running at {start}: {mine:?}"
            );
        }
    }
}

/// The risk task of `id`, when it waits: its reason.
async fn risk_waiting(
    client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
    id: &str,
) -> String {
    task(&get(client, id).await, "risk").waiting_reason.clone()
}

/// Limits change at run time (`paygrid limits set`), hold back work with the reason in
/// `status`, survive a control-unit restart, and `paygrid limits clear` lets the held
/// work go. A bad document is refused and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn limits_change_at_run_time_and_survive_a_restart() {
    let mut fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let url = fleet.control.url.clone();
    let (code, shown) = cli(&url, &["limits"]);
    assert_eq!((code, shown.trim()), (0, "no limits"));
    let bad = fleet.dir.0.join("bad.yaml");
    std::fs::write(&bad, "rate:\n  - { skill: risk.score, per_second: 0 }\n").unwrap();
    let (code, _) = cli(&url, &["limits", "set", bad.to_str().unwrap()]);
    assert_ne!(code, 0, "a bad document is refused");
    let (_, shown) = cli(&url, &["limits"]);
    assert_eq!(shown.trim(), "no limits", "and changes nothing");

    // One risk score per 10 s: the second payment's risk task waits.
    let slow = fleet.dir.0.join("slow.yaml");
    std::fs::write(&slow, "rate:\n  - { skill: risk.score, per_second: 0.1 }\n").unwrap();
    let (code, shown) = cli(&url, &["limits", "set", slow.to_str().unwrap()]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("0 concurrency and 1 rate limits"), "{shown}");
    let mut client = fleet.workflows().await;
    let card = spec("card-payment");
    let first = submit(&mut client, &card, card_input(1), pb::Priority::Unspecified).await;
    let second = submit(&mut client, &card, card_input(2), pb::Priority::Unspecified).await;
    let done = wait_terminal(&mut client, &first).await;
    assert_eq!(done.status, pb::WorkflowStatus::Succeeded as i32);
    let reason = "waiting: rate limit skill=risk.score 0.1/s";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while risk_waiting(&mut client, &second).await != reason {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            get(&mut client, &second).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, status) = cli(&url, &["status", &second]);
    assert!(status.contains(reason), "{status}");

    // After a restart the limit is still there (the bucket starts full: one goes, the
    // next waits).
    fleet.control.restart();
    let mut client = fleet.workflows().await;
    let (_, shown) = cli(&url, &["--json", "limits"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["rate_rules"], 1, "{shown}");
    let third = submit(&mut client, &card, card_input(3), pb::Priority::Unspecified).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = [
            risk_waiting(&mut client, &second).await,
            risk_waiting(&mut client, &third).await,
        ];
        if waiting.iter().filter(|w| w.as_str() == reason).count() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{waiting:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (code, shown) = cli(&url, &["limits", "clear"]);
    assert_eq!((code, shown.trim()), (0, "no limits"));
    for id in [&second, &third] {
        let done = wait_terminal(&mut client, id).await;
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
    }
}

fn card_input(i: u32) -> serde_json::Value {
    json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": format!("tok_visa_{i}")})
}

/// The adaptive limit of gateway alpha, as `paygrid health` shows it.
fn adaptive_limit(control: &str) -> f64 {
    let (_, shown) = cli(control, &["--json", "health"]);
    let items: serde_json::Value = serde_json::from_str(&shown).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "adaptive_limit" && i["subject"] == "alpha")
        .and_then(|i| i["limit"].as_f64())
        .unwrap()
}

/// A gateway whose latency rises from a few ms to 500 ms gets a lower adaptive limit and
/// no timeouts; the limit is in `paygrid health` and in the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_slows_down_gets_a_lower_adaptive_limit_and_no_timeouts() {
    let fleet = Limited::start(
        "adaptive",
        "adaptive:\n  - { gateway: alpha, initial: 8, min: 2, max: 32, latency_target_ms: 250 }\n",
        &[("alpha", 25)],
    );
    fleet.wait_for_gateways().await;
    let (control, gateway, http_addr) = (&fleet.control, &fleet.gateways[0], &fleet.http);
    let mut client = Fleet::client(&control.url).await;
    let card = spec("card-payment");
    let pay =
        async |client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
               from: u32,
               n: u32| {
            let mut ids = Vec::new();
            for i in from..from + n {
                ids.push(submit(client, &card, card_input(i), pb::Priority::Unspecified).await);
            }
            let mut finals = Vec::new();
            for id in &ids {
                finals.push(wait_terminal(client, id).await);
            }
            finals
        };
    for done in pay(&mut client, 0, 60).await {
        assert_eq!(done.status, pb::WorkflowStatus::Succeeded as i32);
    }
    let fast = adaptive_limit(&control.url);
    assert!(fast >= 8.0, "fast answers keep or raise the limit: {fast}");

    http(
        &gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"latency_ms": 500}"#),
    );
    let finals = pay(&mut client, 100, 30).await;
    let slow = adaptive_limit(&control.url);
    eprintln!("adaptive limit of alpha: {fast} while fast, {slow} at 500 ms");
    assert!(
        slow < fast && slow <= 6.0,
        "the limit came down from {fast} to {slow}"
    );
    for done in &finals {
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
        for task in &done.tasks {
            assert!(
                task.history.iter().all(|a| a.outcome != "timeout"),
                "no timeouts: {task:#?}"
            );
        }
    }
    let metrics = scrape(http_addr);
    assert!(
        metrics.contains("paygrid_gateway_concurrency_limit{gateway=\"alpha\"}"),
        "{metrics}"
    );
}

/// The value of one metric line (`name{labels} value`), 0 when absent.
fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Cost-aware overflow: at low load every payment goes to the cheaper gateway (alpha);
/// when alpha is at its concurrency limit, routed authorizations overflow to beta, never
/// more than 2 attempts run on alpha, and the metrics give each gateway's share and fees.
#[tokio::test(flavor = "multi_thread")]
async fn work_overflows_to_the_dearer_gateway_only_at_the_cheaper_ones_limit() {
    let fleet = Limited::start(
        "overflow",
        "concurrency:\n  - { gateway: alpha, max: 2 }\n",
        &[("alpha", 25), ("beta", 30)],
    );
    fleet.wait_for_gateways().await;
    let (control, http_addr) = (&fleet.control, &fleet.http);
    let (alpha, beta) = (&fleet.gateways[0], &fleet.gateways[1]);
    let mut client = Fleet::client(&control.url).await;
    let card = spec("card-payment");
    // Low load, one payment at a time: all on alpha.
    for i in 0..5 {
        let id = submit(&mut client, &card, card_input(i), pb::Priority::Unspecified).await;
        let done = wait_terminal(&mut client, &id).await;
        assert_eq!(task_output(&done, "capture")["gateway"], "alpha");
    }
    let metrics = scrape(http_addr);
    let on = |metrics: &str, gateway: &str| {
        metric(
            metrics,
            &format!(
                "paygrid_gateway_dispatches_total{{gateway=\"{gateway}\",skill=\"gateway.authorize\"}}"
            ),
        )
    };
    assert_eq!(
        (on(&metrics, "alpha"), on(&metrics, "beta")),
        (5, 0),
        "{metrics}"
    );

    // Peak: 20 at once, every gateway call taking 300 ms: alpha fills, the rest overflows.
    for part in [&alpha, &beta] {
        http(
            &part.url,
            "PUT",
            "/v1/admin/faults",
            Some(r#"{"latency_ms": 300}"#),
        );
    }
    let mut ids = Vec::new();
    for i in 100..120 {
        ids.push(submit(&mut client, &card, card_input(i), pb::Priority::Unspecified).await);
    }
    let mut on_alpha: Vec<(i64, i64)> = Vec::new();
    let mut fees = std::collections::HashMap::new();
    for id in &ids {
        let done = wait_terminal(&mut client, id).await;
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
        let capture = task_output(&done, "capture");
        let gateway = capture["gateway"].as_str().unwrap().to_owned();
        let bps = if gateway == "alpha" { 25 } else { 30 };
        *fees.entry(gateway.clone()).or_insert(0) +=
            capture["amount_minor"].as_i64().unwrap() * bps / 10_000;
        if gateway == "alpha" {
            for name in ["authorize", "capture"] {
                for attempt in &task(&done, name).history {
                    on_alpha.push((attempt.started_at_ms, attempt.finished_at_ms));
                }
            }
        }
    }
    let metrics = scrape(http_addr);
    assert!(on(&metrics, "beta") > 0, "overflow reached beta: {metrics}");
    assert!(on(&metrics, "alpha") > 5, "alpha kept its share: {metrics}");
    for (start, _) in &on_alpha {
        let running = on_alpha
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(running <= 2, "{running} attempts on alpha at {start}");
    }
    for (gateway, fee) in fees {
        let shown = metric(
            &metrics,
            &format!("paygrid_gateway_cost_minor_total{{gateway=\"{gateway}\",currency=\"EUR\"}}"),
        );
        if gateway == "alpha" {
            assert!(
                shown >= fee as u64,
                "alpha's fees {shown} include this run's {fee}"
            );
        } else {
            assert_eq!(shown, fee as u64, "beta's fees");
        }
    }
}

fn task_output(workflow: &pb::Workflow, name: &str) -> serde_json::Value {
    serde_json::from_str(&task(workflow, name).output_json).unwrap()
}

/// A submit storm past a merchant's share: the excess is refused with
/// RESOURCE_EXHAUSTED and a `retry-after-ms` hint, another merchant is admitted at once,
/// the refused submissions get in when retried with their keys, and every accepted
/// workflow finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_submit_storm_past_a_keys_share_is_refused_with_a_hint_and_nothing_accepted_is_lost() {
    let fleet = Limited::start(
        "admission",
        "admission: { key: \"{{ inputs.merchant }}\", max_active: 5 }\n",
        &[("alpha", 25)],
    );
    fleet.wait_for_gateways().await;
    http(
        &fleet.gateways[0].url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"capture_latency_ms": 300}"#),
    );
    let control = &fleet.control;
    let card = std::sync::Arc::new(spec("card-payment"));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..30u32 {
        let (url, card, refused) = (control.url.clone(), card.clone(), refused.clone());
        storm.spawn(async move {
            let mut client = Fleet::client(&url).await;
            let request = pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText((*card).clone())),
                input_json: json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": format!("tok_visa_{i}"), "merchant": "big"}).to_string(),
                idempotency_key: format!("storm-{i}"),
                ..Default::default()
            };
            loop {
                match client.submit(request.clone()).await {
                    Ok(accepted) => return accepted.into_inner().workflow_id,
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                        assert!(status.message().contains("key `big`"), "{status}");
                        let hint = status.metadata().get("retry-after-ms").unwrap();
                        assert_eq!(hint.to_str().unwrap(), "1000");
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // A tenth of the hint keeps the test short.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    // Mid-storm, another merchant gets in at once.
    let mut client = Fleet::client(&control.url).await;
    let small = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText((*card).clone())),
            input_json: json!({"amount_minor": 777, "currency": "EUR", "card_token": "tok_small", "merchant": "small"}).to_string(),
            ..Default::default()
        })
        .await
        .expect("another merchant is admitted")
        .into_inner()
        .workflow_id;
    let mut ids = vec![small];
    while let Some(id) = storm.join_next().await {
        ids.push(id.unwrap());
    }
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the storm went past the share"
    );
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 31, "one workflow per payment");
    for id in &ids {
        let done = wait_terminal(&mut client, id).await;
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
    }
}
