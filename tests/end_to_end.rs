//! The platform end to end: control unit, execution units and gateway simulator as
//! separate processes on loopback ports chosen at run time.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

fn card(token: &str) -> serde_json::Value {
    json!({"amount_minor": 1250, "currency": "EUR", "card_token": token})
}

/// The card-payment example runs to success, submitted and watched with the CLI
/// (exit code 0), with exactly one capture at the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn card_payment_succeeds_across_processes() {
    let fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let spec_path = format!(
        "{}/examples/specs/card-payment.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = tokio::process::Command::new(BIN)
        .args([
            "--control",
            &fleet.control.url,
            "--json",
            "submit",
            &spec_path,
            "--input",
            "amount_minor=1250",
            "--input",
            "currency=EUR",
            "--input",
            "card_token=tok_visa",
            "--watch",
        ])
        .output()
        .await
        .expect("run paygrid submit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "submit --watch: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let id = first["workflow_id"].as_str().unwrap().to_owned();
    let mut client = fleet.workflows().await;
    let workflow = get(&mut client, &id).await;
    assert_eq!(workflow.status, pb::WorkflowStatus::Succeeded as i32);
    for task in &workflow.tasks {
        assert_eq!(
            task.status,
            pb::TaskStatus::Succeeded as i32,
            "{}",
            task.task_id
        );
    }
    let capture: serde_json::Value =
        serde_json::from_str(&task(&workflow, "capture").output_json).unwrap();
    assert_eq!(capture["amount_minor"], 1250);
    assert_eq!(capture["gateway"], "alpha");
    let stats = gateway_stats(&fleet.gateway);
    assert_eq!(stats["authorizations"], 1);
    assert_eq!(stats["captures"], 1);
}

/// A transient gateway failure is retried and the workflow succeeds; a decline fails the
/// workflow without retry.
#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_retry_and_declines_do_not() {
    let fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;

    http(
        &fleet.gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_next": 2}"#),
    );
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{workflow:#?}"
    );
    let authorize = task(&workflow, "authorize");
    assert_eq!(authorize.attempts, 3, "two injected 503s, then success");
    assert_eq!(authorize.history[0].outcome, "retryable");
    assert_eq!(gateway_stats(&fleet.gateway)["injected_failures"], 2);

    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_decline"),
        pb::Priority::Unspecified,
    )
    .await;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Failed as i32,
        "{workflow:#?}"
    );
    let authorize = task(&workflow, "authorize");
    assert_eq!(authorize.attempts, 1, "a decline is not retried");
    assert!(
        authorize.error.contains("card_declined"),
        "{}",
        authorize.error
    );
    assert_eq!(
        task(&workflow, "capture").status,
        pb::TaskStatus::Cancelled as i32
    );
    assert_eq!(gateway_stats(&fleet.gateway)["declines"], 1);
}

/// A capture that fails permanently leads to a void of the authorization, visible in
/// status and at the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn failed_capture_voids_the_authorization() {
    let fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_capture_decline"),
        pb::Priority::Unspecified,
    )
    .await;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Compensated as i32,
        "{workflow:#?}"
    );
    assert!(
        workflow.error.contains("capture_declined"),
        "{}",
        workflow.error
    );
    let authorize = task(&workflow, "authorize");
    assert_eq!(
        authorize.compensation_status,
        pb::TaskStatus::Compensated as i32
    );
    assert_eq!(authorize.status, pb::TaskStatus::Compensated as i32);
    let authorization: serde_json::Value = serde_json::from_str(&authorize.output_json).unwrap();
    let payment = http(
        &fleet.gateway.url,
        "GET",
        &format!(
            "/v1/payments/{}",
            authorization["authorization_id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(payment["status"], "voided");
    let stats = gateway_stats(&fleet.gateway);
    assert_eq!(stats["voids"], 1);
    assert_eq!(stats["captures"], 0);
    // The ledger's pending hold was voided too (its compensation ran).
    assert_eq!(
        task(&workflow, "book").compensation_status,
        pb::TaskStatus::Compensated as i32
    );
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

/// With the agent pool saturated, critical workflows submitted later finish before low
/// ones submitted earlier, and the low ones still finish.
#[tokio::test(flavor = "multi_thread")]
async fn critical_work_overtakes_low_work() {
    let mut fleet = Fleet::start(&[], 0);
    fleet.add_exec(
        "sleepers",
        &[
            "--agents",
            "sleep",
            "--sleep-concurrency",
            "1",
            "--sleep-ms",
            "150",
        ],
    );
    fleet.wait_for_skills(&["bench.sleep"]).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: two-steps\nversion: 1\ntasks:\n  - id: one\n    skill: bench.sleep\n  - id: two\n    skill: bench.sleep\n    needs: [one]\n";
    let mut client = fleet.workflows().await;
    let mut lows = Vec::new();
    for _ in 0..6 {
        lows.push(submit(&mut client, spec, json!({}), pb::Priority::Low).await);
    }
    let mut criticals = Vec::new();
    for _ in 0..6 {
        criticals.push(submit(&mut client, spec, json!({}), pb::Priority::Critical).await);
    }
    let finished = |workflows: Vec<pb::Workflow>| {
        workflows
            .iter()
            .map(|w| {
                assert_eq!(w.status, pb::WorkflowStatus::Succeeded as i32);
                w.tasks.iter().map(|t| t.finished_at_ms).max().unwrap()
            })
            .collect::<Vec<_>>()
    };
    let mut low_states = Vec::new();
    for id in &lows {
        low_states.push(wait_terminal(&mut client, id).await);
    }
    let mut critical_states = Vec::new();
    for id in &criticals {
        critical_states.push(wait_terminal(&mut client, id).await);
    }
    let low_done = finished(low_states);
    let critical_done = finished(critical_states);
    let last_critical = critical_done.iter().max().unwrap();
    let first_low = low_done.iter().min().unwrap();
    assert!(
        last_critical < first_low,
        "criticals {critical_done:?} should finish before lows {low_done:?}"
    );
}

/// `paygrid validate` rejects a bad spec with exit code 2, naming task and line.
#[test]
fn cli_validate_names_task_and_line() {
    let dir = std::env::temp_dir().join(format!("paygrid-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "apiVersion: paygrid/v1\nkind: Workflow\nname: bad\nversion: 1\ntasks:\n  - id: a\n    skill: s\n    needs: [b]\n  - id: b\n    skill: s\n    needs: [a]\n").unwrap();
    let output = std::process::Command::new(BIN)
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("dependency cycle: a -> b -> a")
            || stderr.contains("dependency cycle: b -> a -> b"),
        "{stderr}"
    );
    assert!(stderr.contains("line "), "{stderr}");
    let ok = std::process::Command::new(BIN)
        .args([
            "validate",
            &format!(
                "{}/examples/specs/card-payment.yaml",
                env!("CARGO_MANIFEST_DIR")
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
}

/// Submit with an idempotency key: the same key twice gives one workflow (also after a
/// control-unit restart); the same key with another input is refused with ALREADY_EXISTS.
#[tokio::test(flavor = "multi_thread")]
async fn idempotent_submission() {
    let mut fleet = Fleet::start(&[], 0);
    let request = |amount: i64| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(spec("card-payment"))),
        input_json: json!({"amount_minor": amount, "currency": "EUR", "card_token": "tok_visa"})
            .to_string(),
        idempotency_key: "order-42".into(),
        ..Default::default()
    };
    let mut client = fleet.workflows().await;
    let first = client.submit(request(4200)).await.unwrap().into_inner();
    assert!(first.created);
    let again = client.submit(request(4200)).await.unwrap().into_inner();
    assert_eq!(again.workflow_id, first.workflow_id);
    assert!(!again.created);
    let refused = client.submit(request(9999)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert!(
        refused.message().contains("order-42"),
        "{}",
        refused.message()
    );

    fleet.control.restart();
    let mut client = fleet.workflows().await;
    let after_restart = client.submit(request(4200)).await.unwrap().into_inner();
    assert_eq!(after_restart.workflow_id, first.workflow_id);
    assert!(!after_restart.created);
    let refused = client.submit(request(9999)).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::AlreadyExists,
        "the fingerprint survives the restart"
    );
    let workflows = client
        .list(pb::ListWorkflowsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workflows;
    assert_eq!(workflows.len(), 1);
}

/// Terminal workflows stay listable and fetchable, with their history, after they left
/// the control unit's memory and after a restart, until retention prunes them.
#[tokio::test(flavor = "multi_thread")]
async fn terminal_workflows_stay_listable_from_the_store() {
    let dir = TempDir::new("history");
    let data_dir = dir.path("control");
    let mut control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--retained-max",
        "2",
    ]);
    let mut client = support::Fleet::client(&control.url).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n";
    let mut ids = Vec::new();
    let keyed = |key: &str| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(spec.to_owned())),
        input_json: "{}".into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    for n in 0..4 {
        let id = client
            .submit(keyed(&format!("parked-{n}")))
            .await
            .unwrap()
            .into_inner()
            .workflow_id;
        let workflow = get(&mut client, &id).await;
        assert_eq!(
            task(&workflow, "wait").waiting_reason,
            "no connected agent offers skill nobody.offers"
        );
        client
            .cancel(pb::CancelWorkflowRequest {
                workflow_id: id.clone(),
                reason: "test".into(),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    for round in 0..2 {
        let listed = client
            .list(pb::ListWorkflowsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .workflows;
        let listed: Vec<_> = listed
            .iter()
            .map(|w| (w.workflow_id.clone(), w.status))
            .collect();
        let expected: Vec<_> = ids
            .iter()
            .map(|id| (id.clone(), pb::WorkflowStatus::Cancelled as i32))
            .collect();
        assert_eq!(listed, expected, "round {round}");
        // A page of two, then the rest.
        let page = client
            .list(pb::ListWorkflowsRequest {
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.workflows.len(), 2);
        let rest = client
            .list(pb::ListWorkflowsRequest {
                page_size: 2,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            rest.workflows
                .iter()
                .map(|w| w.workflow_id.clone())
                .collect::<Vec<_>>(),
            ids[2..].to_vec()
        );
        let oldest = get(&mut client, &ids[0]).await;
        assert_eq!(oldest.status, pb::WorkflowStatus::Cancelled as i32);
        assert!(oldest.error.contains("cancelled: test"), "{}", oldest.error);
        // The same key again, for a workflow that left memory: its real status, read
        // from the store.
        let again = client.submit(keyed("parked-0")).await.unwrap().into_inner();
        assert_eq!(again.workflow_id, ids[0]);
        assert!(!again.created);
        assert_eq!(
            again.status,
            pb::WorkflowStatus::Cancelled as i32,
            "round {round}"
        );
        control.restart();
        client = support::Fleet::client(&control.url).await;
    }
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
    let status = std::process::Command::new(BIN)
        .args(["--control", &control.url, "status", &id])
        .output()
        .unwrap();
    let json_status = std::process::Command::new(BIN)
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
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        haystacks.push((
            "store file",
            String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
        ));
    }
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
    let (control_metrics, exec_metrics) = (free_addr(), free_addr());
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
        &control_metrics,
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
    while !scrape(&control_metrics).contains("paygrid_agent_sessions 6") {
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

    let text = scrape(&control_metrics);
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
        "paygrid_agent_sessions 6",
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
        let output = std::process::Command::new(BIN)
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
        let output = std::process::Command::new(BIN)
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

/// The catalog: a spec submitted once is found by `name@version` after a control-unit
/// restart, without sending its text again; another text under a `name@version` already
/// taken is refused, also after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn specs_are_found_by_name_after_a_restart_and_stay_immutable() {
    let mut fleet = Fleet::start(&[], 0);
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked-spec\nversion: 3\ntasks:\n  - id: wait\n    skill: nobody.offers\n";
    let changed = spec.replace("id: wait", "id: linger");
    let mut client = fleet.workflows().await;
    let by_text = submit(&mut client, spec, json!({}), pb::Priority::Unspecified).await;
    let by_ref = |reference: &str| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecRef(reference.into())),
        input_json: "{}".into(),
        ..Default::default()
    };
    for round in ["before the restart", "after the restart"] {
        let id = client
            .submit(by_ref("parked-spec@3"))
            .await
            .unwrap_or_else(|e| panic!("{round}: {e}"))
            .into_inner()
            .workflow_id;
        assert_ne!(id, by_text);
        assert_eq!(
            get(&mut client, &id).await.tasks[0].task_id,
            "wait",
            "{round}"
        );
        let refused = client
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(changed.clone())),
                input_json: "{}".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{round}");
        assert!(
            refused.message().contains("parked-spec@3")
                && refused.message().contains("new version"),
            "{round}: {}",
            refused.message()
        );
        let missing = client.submit(by_ref("parked-spec@4")).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound, "{round}");
        let malformed = client.submit(by_ref("parked-spec")).await.unwrap_err();
        assert_eq!(malformed.code(), tonic::Code::InvalidArgument, "{round}");
        fleet.control.restart();
        client = fleet.workflows().await;
    }
}
