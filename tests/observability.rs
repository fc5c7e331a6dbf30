//! What SREs see, across real processes: health and reflection, metrics after a known
//! run, the health view from telemetry agents, and card data never shown.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

/// Every server answers gRPC health checks and lists its services by reflection, so
/// grpcurl works against it.
#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection() {
    let fleet = Fleet::start(&[], 0);
    let channel = channel(&fleet.control.url).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "paygrid.v1.Workflows", "paygrid.v1.AgentHub"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }
    // Both reflection versions list the product's services, and only those: the
    // benchmark's protocol is not served by a control unit.
    let v1 = {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    let v1alpha = {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    for names in [&v1, &v1alpha] {
        for expected in [
            "paygrid.v1.Workflows",
            "paygrid.v1.AgentHub",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("Bench")),
            "the benchmark is not part of the product: {names:?}"
        );
    }
}

/// Card data stays secret: a workflow whose input holds a card number and a CVV runs, and
/// neither appears unmasked in any log line (debug level), in status output, or in the
/// control unit's store.
#[tokio::test(flavor = "multi_thread")]
async fn card_numbers_and_cvvs_never_appear() {
    let dir = TempDir::new("secrets");
    let (control_log, exec_log) = (dir.0.join("control.log"), dir.0.join("exec.log"));
    let data_dir = dir.path("control");
    let receiver = support::otlp::Receiver::start().await;
    let control = Part::start_logged(
        &[
            "control",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--otlp",
            &receiver.url,
        ],
        &control_log,
    );
    let exec = Part::start_logged(
        &[
            "--control",
            &control.url,
            "exec",
            "--agents",
            "sleep",
            "--sleep-ms",
            "1",
            "--otlp",
            &receiver.url,
        ],
        &exec_log,
    );
    let mut client = support::Fleet::client(&control.url).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: leaky\nversion: 1\ninputs:\n  card_number: { type: string }\n  cvv: { type: string }\n  note: { type: string }\ntasks:\n  - id: use\n    skill: bench.sleep\n    with: { card: \"{{ inputs.card_number }}\", cvv: \"{{ inputs.cvv }}\", note: \"{{ inputs.note }}\" }\n";
    let input = json!({"card_number": "4242424242424242", "cvv": "737", "note": "paid with 4000 0566 5566 5556, customer said cvv=737"});
    // Labels are stored and shown too: a card number in one is masked like an input's.
    let id = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(spec.to_owned())),
            input_json: input.to_string(),
            labels: [("card_number".to_owned(), "4111 1111 1111 1111".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .workflow_id;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(workflow.status, pb::WorkflowStatus::Succeeded as i32);
    assert!(
        workflow.input_json.contains("424242******4242"),
        "{}",
        workflow.input_json
    );
    assert_eq!(
        workflow.labels.get("card_number").map(String::as_str),
        Some("411111******1111"),
        "{:?}",
        workflow.labels
    );
    let status = paygrid()
        .args(["--control", &control.url, "status", &id])
        .output()
        .unwrap();
    let json_status = paygrid()
        .args(["--control", &control.url, "--json", "status", &id])
        .output()
        .unwrap();
    // Every span of the workflow, from both processes, with its events and status.
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            let has = |name: &str| spans.iter().any(|s| s.name() == name);
            has("workflow leaky") && has("handle bench.sleep")
        })
        .await;
    drop(exec);
    drop(control);
    let mut haystacks = vec![
        (
            "status",
            String::from_utf8_lossy(&status.stdout).into_owned(),
        ),
        (
            "status --json",
            String::from_utf8_lossy(&json_status.stdout).into_owned(),
        ),
        (
            "control log",
            std::fs::read_to_string(&control_log).unwrap(),
        ),
        ("exec log", std::fs::read_to_string(&exec_log).unwrap()),
        ("spans", format!("{spans:#?}")),
    ];
    // Every file of the store, the commit log's segments in their directory too.
    let mut dirs = vec![std::path::PathBuf::from(&data_dir)];
    let mut segments = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            segments += usize::from(path.extension().is_some_and(|e| e == "log"));
            haystacks.push((
                "store file",
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    assert!(segments > 0, "the commit log's segments were read too");
    assert!(
        haystacks[2].1.contains("workflow input held card data"),
        "the control unit says it masked something"
    );
    for (what, text) in &haystacks {
        for secret in [
            "4242424242424242",
            "4000056655665556",
            "4000 0566 5566 5556",
            "4111111111111111",
            "4111 1111 1111 1111",
            // The CVV as a value in any format (a bare 737 may occur in timestamps or ids).
            "\"737\"",
            "\\\"737\\\"",
            "=737",
        ] {
            assert!(!text.contains(secret), "{what} shows `{secret}`");
        }
    }
}

/// Both metrics endpoints, scraped after a known run (one payment with two injected 503s
/// on authorize, one declined card), show the counters and histogram counts of that run.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoints_count_a_known_run() {
    let dir = TempDir::new("metrics");
    let exec_metrics = free_addr();
    let gateway = Part::start(&[
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--cost-bps",
        "25",
    ]);
    let data_dir = dir.path("control");
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let gateway_arg = format!("alpha={}@25", gateway.url);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "metered",
        "--gateway",
        &gateway_arg,
        "--metrics-addr",
        &exec_metrics,
    ]);
    let mut client = support::Fleet::client(&control.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(&control.http).contains("paygrid_agent_sessions 8") {
        assert!(Instant::now() < deadline, "agents never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http(
        &gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_next": 2}"#),
    );
    let paid = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    assert_eq!(
        wait_terminal(&mut client, &paid).await.status,
        pb::WorkflowStatus::Succeeded as i32
    );
    let declined = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_decline"),
        pb::Priority::Unspecified,
    )
    .await;
    assert_eq!(
        wait_terminal(&mut client, &declined).await.status,
        pb::WorkflowStatus::Failed as i32
    );

    let text = scrape(&control.http);
    for line in [
        "paygrid_workflows_finished_total{name=\"card-payment\",status=\"succeeded\"} 1",
        "paygrid_workflows_finished_total{name=\"card-payment\",status=\"failed\"} 1",
        "paygrid_workflows{status=\"succeeded\"} 1",
        "paygrid_workflows{status=\"failed\"} 1",
        "paygrid_workflows{status=\"running\"} 0",
        "paygrid_task_retries_total{skill=\"gateway.authorize\"} 2",
        "paygrid_task_duration_seconds_count{skill=\"gateway.authorize\",status=\"succeeded\"} 1",
        "paygrid_task_duration_seconds_count{skill=\"gateway.authorize\",status=\"failed\"} 1",
        "paygrid_task_duration_seconds_count{skill=\"gateway.capture\",status=\"succeeded\"} 1",
        "paygrid_dispatch_latency_seconds_count{skill=\"risk.score\"} 2",
        "paygrid_dispatch_latency_seconds_count{skill=\"gateway.authorize\"} 4",
        "paygrid_ready_queue_depth{priority=\"critical\"} 0",
        "paygrid_agent_sessions 8",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "control unit metrics lack `{line}`:\n{text}"
        );
    }
    let text = scrape(&exec_metrics);
    for line in [
        "paygrid_agent_tasks_total{agent=\"gateway-alpha\",skill=\"gateway.authorize\",outcome=\"retryable\"} 2",
        "paygrid_agent_tasks_total{agent=\"gateway-alpha\",skill=\"gateway.authorize\",outcome=\"succeeded\"} 1",
        "paygrid_agent_tasks_total{agent=\"gateway-alpha\",skill=\"gateway.authorize\",outcome=\"permanent\"} 1",
        "paygrid_agent_task_duration_seconds_count{agent=\"gateway-alpha\",skill=\"gateway.capture\",outcome=\"succeeded\"} 1",
        "paygrid_agent_tasks_total{agent=\"risk\",skill=\"risk.score\",outcome=\"succeeded\"} 2",
        "paygrid_agent_session_connected{agent=\"gateway-alpha\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "execution unit metrics lack `{line}`:\n{text}"
        );
    }
}

/// The telemetry agent's reports reach the control unit: after the gateway starts
/// failing, `paygrid health` shows its error rate rise.
#[tokio::test(flavor = "multi_thread")]
async fn health_shows_a_failing_gateway() {
    let fleet = Fleet::start(&[], 1);
    fleet
        .wait_for_skills(&[
            "gateway.authorize",
            "risk.score",
            "ledger.post",
            "verify.amounts",
            "notify.receipt",
            "telemetry.report",
        ])
        .await;
    let mut client = fleet.workflows().await;
    let health = |fleet: &Fleet| {
        let output = paygrid()
            .args(["--control", &fleet.control.url, "--json", "health"])
            .output()
            .unwrap();
        let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "gateway" && e["subject"] == "alpha")
            .cloned()
    };
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    assert_eq!(
        wait_terminal(&mut client, &id).await.status,
        pb::WorkflowStatus::Succeeded as i32
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        if let Some(entry) = health(&fleet).filter(|e| e["requests"].as_u64() >= Some(2)) {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "no health report for gateway alpha"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(healthy["error_rate"], 0.0, "{healthy}");
    assert_eq!(healthy["reported_by"], "exec-0");

    http(
        &fleet.gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_rate": 1.0}"#),
    );
    for _ in 0..3 {
        submit(
            &mut client,
            &spec("card-payment"),
            card("tok_visa"),
            pb::Priority::Unspecified,
        )
        .await;
    }
    let failing = loop {
        if let Some(entry) = health(&fleet).filter(|e| e["error_rate"].as_f64() > Some(0.5)) {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "gateway alpha's error rate never rose: {:?}",
            health(&fleet)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failing["errors"].as_u64() >= Some(3), "{failing}");

    // The same report, per skill in `paygrid health` and per agent in `paygrid agents`.
    let cli = |args: &[&str]| {
        let output = paygrid()
            .args(["--control", &fleet.control.url])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let entries: serde_json::Value = serde_json::from_str(&cli(&["--json", "health"])).unwrap();
    let skill = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "skill" && e["subject"] == "gateway.authorize")
        .expect("a health entry for skill gateway.authorize");
    assert!(skill["error_rate"].as_f64() > Some(0.5), "{skill}");
    let agents: serde_json::Value = serde_json::from_str(&cli(&["--json", "agents"])).unwrap();
    let gateway_agent = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "gateway-alpha")
        .expect("the gateway agent");
    assert!(
        gateway_agent["health"]["error_rate"].as_f64() > Some(0.5),
        "{gateway_agent}"
    );
    let table = cli(&["agents"]);
    assert!(table.lines().next().unwrap().contains("ERR%"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("gateway.authorize"))
        .unwrap();
    assert!(
        !row.contains(" - "),
        "the gateway agent's row shows its health: {row}"
    );
}

/// A gateway starts failing: its circuit breaker opens, new payments go to the fallback
/// gateway and none fails; once the fault is removed the breaker half-opens and closes.
/// A remediation workflow drains it, probes it, and reopens it once healthy. The
/// transitions are in `paygrid health --json` and in the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_gateway_opens_its_breaker_and_payments_go_to_the_fallback() {
    // A card per payment: the risk agent reviews a card used more than 20 times a minute.
    static CARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = TempDir::new("breaker");
    let gateway = |name: &str, cost: &str| {
        Part::start(&[
            "gateway-sim",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--cost-bps",
            cost,
        ])
    };
    let (alpha, beta) = (gateway("alpha", "25"), gateway("beta", "30"));
    let data_dir = dir.path("control");
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--metrics-addr",
        "127.0.0.1:0",
        // Three failures: as many as mark an agent unhealthy for `cheapest-healthy`, after
        // which alpha sees no more requests to count.
        "--breaker-min-requests",
        "3",
        "--breaker-open-ms",
        "2000",
        "--breaker-trials",
        "2",
    ]);
    let (alpha_arg, beta_arg) = (
        format!("alpha={}@25", alpha.url),
        format!("beta={}@30", beta.url),
    );
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "exec-breaker",
        "--gateway",
        &alpha_arg,
        "--gateway",
        &beta_arg,
    ]);
    let mut client = support::Fleet::client(&control.url).await;
    let breaker = |control: &Part| {
        let output = paygrid()
            .args(["--control", &control.url, "--json", "health"])
            .output()
            .unwrap();
        let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "breaker" && e["subject"] == "alpha")
            .cloned()
    };
    let transitions = |entry: &serde_json::Value| -> Vec<(String, String)> {
        entry["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["from"].as_str().unwrap().to_owned(),
                    t["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pay = async |client: &mut pb::workflows_client::WorkflowsClient<_>, n: usize| {
        let mut ids = Vec::new();
        for i in 0..n {
            let card = CARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let input = json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": format!("tok_visa_{card}")});
            ids.push(
                submit(
                    client,
                    &spec("card-payment"),
                    input,
                    pb::Priority::Unspecified,
                )
                .await,
            );
        }
        let mut finals = Vec::new();
        for id in &ids {
            finals.push(wait_terminal(client, id).await);
        }
        finals
    };

    // Alpha, the cheaper gateway, fails every request before taking an effect.
    http(
        &alpha.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_rate": 1.0}"#),
    );
    let finals = pay(&mut client, 8).await;
    for workflow in &finals {
        assert_eq!(
            workflow.status,
            pb::WorkflowStatus::Succeeded as i32,
            "no payment fails while alpha does: {workflow:#?}"
        );
    }
    let opened = breaker(&control).expect("a breaker for alpha");
    assert_eq!(
        transitions(&opened).first(),
        Some(&("closed".to_owned(), "open".to_owned())),
        "{opened}"
    );
    let beta_stats = http(&beta.url, "GET", "/v1/stats", None);
    assert_eq!(
        beta_stats["captures"], 8,
        "every payment was captured on beta"
    );
    let alpha_stats = http(&alpha.url, "GET", "/v1/stats", None);
    assert_eq!(alpha_stats["authorizations"], 0, "{alpha_stats}");
    assert!(
        alpha_stats["injected_failures"].as_u64() <= Some(8),
        "an open breaker stops the calls: {alpha_stats}"
    );

    // Remediation: one workflow, started by the rule, drains alpha and probes it.
    let remediations = |client: &mut pb::workflows_client::WorkflowsClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .list(pb::ListWorkflowsRequest {
                    labels: [("remediation.subject".to_owned(), "alpha".to_owned())].into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .workflows
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let remediation = loop {
        let found = remediations(&mut client).await;
        if let Some(first) = found.first() {
            assert_eq!(
                found.len(),
                1,
                "at most one remediation per gateway: {found:#?}"
            );
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no remediation started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let listed = paygrid()
        .args([
            "--control",
            &control.url,
            "--json",
            "list",
            "--label",
            "remediation.subject=alpha",
        ])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(remediation.name, "remediate-gateway");
    assert_eq!(remediation.labels["trigger"], "breaker_opened");
    assert_eq!(
        remediation.labels["remediation.rule"],
        "reroute-failing-gateway"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workflow = get(&mut client, &remediation.workflow_id).await;
        let drain = workflow
            .tasks
            .iter()
            .find(|t| t.task_id == "drain")
            .unwrap();
        let probe = workflow
            .tasks
            .iter()
            .find(|t| t.task_id == "probe")
            .unwrap();
        if drain.status == pb::TaskStatus::Succeeded as i32 && probe.attempts >= 1 {
            assert!(
                workflow.status == pb::WorkflowStatus::Running as i32,
                "the probe keeps trying while alpha fails: {workflow:#?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remediation did not drain and probe: {workflow:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = breaker(&control).unwrap();
    assert_eq!(drained["state"], "open", "drained: {drained}");

    // The fault is removed: the probe finds alpha healthy, remediation reopens it, and
    // trial payments go to alpha and close it.
    http(&alpha.url, "PUT", "/v1/admin/faults", Some("{}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let closed = loop {
        let entry = breaker(&control).unwrap();
        if entry["state"] == "closed" {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed: {entry}"
        );
        let finals = pay(&mut client, 2).await;
        assert!(
            finals
                .iter()
                .all(|w| w.status == pb::WorkflowStatus::Succeeded as i32),
            "{finals:#?}"
        );
    };
    let seen = transitions(&closed);
    for step in [("open", "half_open"), ("half_open", "closed")] {
        assert!(
            seen.contains(&(step.0.to_owned(), step.1.to_owned())),
            "{step:?} in {seen:?}"
        );
    }
    // The breaker may close on the probe's trials alone (a race with the payments'
    // trials): payments then go to alpha, the cheaper gateway, again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&alpha.url, "GET", "/v1/stats", None)["authorizations"].as_u64() < Some(2)
        && Instant::now() < deadline
    {
        pay(&mut client, 1).await;
    }
    assert!(
        http(&alpha.url, "GET", "/v1/stats", None)["authorizations"].as_u64() >= Some(2),
        "trial payments went to alpha"
    );
    let done = wait_terminal(&mut client, &remediation.workflow_id).await;
    assert_eq!(
        done.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{done:#?}"
    );
    assert_eq!(
        remediations(&mut client).await.len(),
        1,
        "exactly one remediation"
    );
    let metrics = scrape(&control.http);
    for line in [
        "paygrid_breaker_state{gateway=\"alpha\"} 0",
        "paygrid_breaker_transitions_total{gateway=\"alpha\",to=\"open\"}",
        "paygrid_breaker_transitions_total{gateway=\"alpha\",to=\"half_open\"}",
        "paygrid_breaker_transitions_total{gateway=\"alpha\",to=\"closed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}
