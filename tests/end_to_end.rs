//! The platform end to end: control unit, execution units and gateway simulator as
//! separate processes on loopback ports chosen at run time.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

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
    let output = paygrid_async()
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
    let output = paygrid()
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
    let ok = paygrid()
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

/// An authorization left un-captured past its rule's limit is voided by remediation:
/// the stale-authorization rule starts one remediation, which cancels the workflow, whose
/// compensation voids the authorization at the gateway; exactly once, with the control
/// unit killed and restarted while it happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_authorization_is_voided_once_across_a_restart() {
    let dir = TempDir::new("stale-auth");
    let rules = dir.0.join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: void-stale-authorization\n    on: authorization_stale\n    after: 2s\n    start: void-stale-authorization@1\n    input:\n      workflow_id: \"{{ trigger.workflow_id }}\"\n      authorization_id: \"{{ trigger.authorization_id }}\"\n      gateway: \"{{ trigger.gateway }}\"\n",
    )
    .unwrap();
    let gateway = Part::start(&[
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--data-dir",
        &dir.path("gateway"),
    ]);
    let rules_arg = rules.display().to_string();
    let mut control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--remediation-rules",
        &rules_arg,
    ]);
    let gateway_arg = format!("alpha={}@25", gateway.url);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "exec-stale",
        "--gateway",
        &gateway_arg,
    ]);
    // Authorized, then the capture waits for a gateway no agent serves: the hold stays.
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: held\nversion: 1\ntasks:\n  - id: authorize\n    skill: gateway.authorize\n    with: { amount_minor: 4200, currency: EUR, card_token: tok_visa }\n    compensate:\n      skill: gateway.void\n      route: { labels: { gateway: \"{{ tasks.authorize.output.gateway }}\" } }\n      with: { authorization_id: \"{{ tasks.authorize.output.authorization_id }}\" }\n  - id: capture\n    skill: gateway.capture\n    needs: [authorize]\n    route: { labels: { gateway: nowhere } }\n    with: { authorization_id: \"{{ tasks.authorize.output.authorization_id }}\" }\n";
    let mut client = support::Fleet::client(&control.url).await;
    let id = submit(&mut client, spec, json!({}), pb::Priority::Unspecified).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let authorization = loop {
        let workflow = get(&mut client, &id).await;
        let authorize = task(&workflow, "authorize");
        if authorize.status == pb::TaskStatus::Succeeded as i32 {
            let output: serde_json::Value = serde_json::from_str(&authorize.output_json).unwrap();
            break output["authorization_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never authorized: {workflow:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let remediations = async |client: &mut pb::workflows_client::WorkflowsClient<_>| {
        client
            .list(pb::ListWorkflowsRequest {
                labels: [("remediation.subject".to_owned(), authorization.clone())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .workflows
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while remediations(&mut client).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no remediation for the stale authorization"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control.restart();
    let mut client = support::Fleet::client(&control.url).await;
    let held = wait_terminal(&mut client, &id).await;
    assert_eq!(
        held.status,
        pb::WorkflowStatus::Cancelled as i32,
        "{held:#?}"
    );
    assert_eq!(
        task(&held, "authorize").compensation_status,
        pb::TaskStatus::Compensated as i32,
        "the void ran: {held:#?}"
    );
    let found = remediations(&mut client).await;
    assert_eq!(
        found.len(),
        1,
        "one remediation per authorization: {found:#?}"
    );
    let remediation = wait_terminal(&mut client, &found[0].workflow_id).await;
    assert_eq!(
        remediation.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{remediation:#?}"
    );
    assert_eq!(remediation.labels["trigger"], "authorization_stale");
    let payment = http(
        &gateway.url,
        "GET",
        &format!("/v1/payments/{authorization}"),
        None,
    );
    assert_eq!(payment["status"], "voided", "{payment}");
    let stats = http(&gateway.url, "GET", "/v1/stats", None);
    assert_eq!(stats["voids"], 1, "voided exactly once: {stats}");
}

/// A workflow stuck on a skill no agent offers raises one alert, by the stuck-workflow
/// rule: a remediation workflow that names what it waits for.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_workflow_raises_an_alert_naming_what_it_waits_for() {
    let dir = TempDir::new("stuck");
    let rules = dir.0.join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: alert-stuck-workflow\n    on: workflow_stuck\n    after: 1s\n    start: alert-stuck-workflow@1\n    input:\n      workflow_id: \"{{ trigger.workflow_id }}\"\n      workflow_name: \"{{ trigger.workflow_name }}\"\n      reason: \"{{ trigger.reason }}\"\n      idle: \"{{ trigger.idle }}\"\n",
    )
    .unwrap();
    let rules_arg = rules.display().to_string();
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--remediation-rules",
        &rules_arg,
    ]);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "exec-stuck",
        "--agents",
        "remediate",
    ]);
    let mut client = support::Fleet::client(&control.url).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n";
    let id = submit(&mut client, spec, json!({}), pb::Priority::Unspecified).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let found = client
            .list(pb::ListWorkflowsRequest {
                labels: [("remediation.subject".to_owned(), id.clone())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .workflows;
        if let Some(alert) = found.first() {
            assert_eq!(found.len(), 1, "{found:#?}");
            break alert.clone();
        }
        assert!(Instant::now() < deadline, "no alert for the stuck workflow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alert.labels["trigger"], "workflow_stuck");
    let alert = wait_terminal(&mut client, &alert.workflow_id).await;
    assert_eq!(
        alert.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{alert:#?}"
    );
    let output = &task(&alert, "alert").output_json;
    assert!(
        output.contains("no connected agent offers skill nobody.offers"),
        "{output}"
    );
    assert_eq!(
        get(&mut client, &id).await.status,
        pb::WorkflowStatus::Running as i32,
        "an alert does not touch the workflow"
    );
}

/// A settlement batch waits for 500 payments of its batch (card payments, and one in five
/// a marketplace payment split between three sub-merchants and the platform), survives a
/// control-unit restart while it waits, then pays each sub-merchant once for the whole
/// batch, closes the gateway's settlement batch, reconciles it with no mismatch, and sends
/// its statement exactly once after the last payment. The ledger balances throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_batch_waits_for_500_payments_across_a_restart() {
    const PAYMENTS: usize = 500;
    let mut fleet = Fleet::start(&[], 1);
    fleet
        .wait_for_skills(&["gateway.authorize", "notify.receipt", "ledger.post"])
        .await;
    let mut client = fleet.workflows().await;
    let batch = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(spec("settlement-batch"))),
            input_json: json!({"batch": "2026-11-24"}).to_string(),
            idempotency_key: "batch-2026-11-24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let (card, marketplace) = (spec("card-payment"), spec("marketplace-split"));
    let payment = |n: usize| {
        let (spec, input) = if n.is_multiple_of(5) {
            // 90.00 + n: 30.00, 25.00 and 20.00 to the sellers, the rest to the platform.
            let amount = 9_000 + n;
            (
                marketplace.clone(),
                json!({"amount_minor": amount, "currency": "EUR", "card_token": format!("tok_visa_{n}"), "batch": "2026-11-24", "seller_a_minor": 3000, "seller_b_minor": 2500, "seller_c_minor": 2000, "platform_fee_minor": amount - 7500}),
            )
        } else {
            (
                card.clone(),
                json!({"amount_minor": 1000 + n, "currency": "EUR", "card_token": format!("tok_visa_{n}")}),
            )
        };
        pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(spec)),
            input_json: input.to_string(),
            labels: [("batch".to_owned(), "2026-11-24".to_owned())].into(),
            idempotency_key: format!("order-{n}"),
            ..Default::default()
        }
    };
    let mut ids = Vec::new();
    for n in 0..PAYMENTS / 2 {
        ids.push(
            client
                .submit(payment(n))
                .await
                .unwrap()
                .into_inner()
                .workflow_id,
        );
    }
    // Restart while the batch waits and payments are in flight.
    fleet.control.restart();
    let mut client = fleet.workflows().await;
    for n in PAYMENTS / 2..PAYMENTS {
        // The same keys again are harmless: submissions cut by the restart are retried.
        ids.push(
            client
                .submit(payment(n))
                .await
                .unwrap()
                .into_inner()
                .workflow_id,
        );
    }
    let waiting = get(&mut client, &batch).await;
    assert_eq!(waiting.status, pb::WorkflowStatus::Running as i32);
    let settled = wait_terminal(&mut client, &batch).await;
    assert_eq!(
        settled.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{settled:#?}"
    );
    for id in &ids {
        let payment = get(&mut client, id).await;
        assert_eq!(
            payment.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{payment:#?}"
        );
    }
    let waited: serde_json::Value =
        serde_json::from_str(&task(&settled, "payments").output_json).unwrap();
    assert_eq!(waited["count"], PAYMENTS, "{waited}");
    assert_eq!(waited["timed_out"], false);
    let statement = task(&settled, "statement");
    assert_eq!(
        statement.attempts, 1,
        "the statement went once: {statement:#?}"
    );
    assert_eq!(statement.history.len(), 1, "{statement:#?}");
    // Finished only after the last payment did.
    let last_payment_end = {
        let mut last = 0;
        for id in &ids {
            last = last.max(get(&mut client, id).await.updated_at_ms);
        }
        last
    };
    assert!(
        statement.started_at_ms >= last_payment_end,
        "{statement:#?}"
    );

    // One payout per sub-merchant for the whole batch, sent once.
    let sellers = PAYMENTS / 5;
    let payouts: serde_json::Value =
        serde_json::from_str(&task(&settled, "payouts").output_json).unwrap();
    let paid: std::collections::BTreeMap<String, u64> = payouts["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["destination"].as_str().unwrap().to_owned(),
                p["amount_minor"].as_u64().unwrap(),
            )
        })
        .collect();
    let each = |minor: usize| (sellers * minor) as u64;
    assert_eq!(
        paid,
        [
            ("seller-a".to_owned(), each(3000)),
            ("seller-b".to_owned(), each(2500)),
            ("seller-c".to_owned(), each(2000)),
        ]
        .into(),
        "{payouts}"
    );
    assert_eq!(gateway_stats(&fleet.gateway)["payouts"], 3);
    // Every capture and payout of the batch is in the gateway's report, and matches.
    let reconciled: serde_json::Value =
        serde_json::from_str(&task(&settled, "reconcile").output_json).unwrap();
    assert_eq!(reconciled["mismatch_count"], 0, "{reconciled}");
    assert_eq!(reconciled["matched"], PAYMENTS + 3, "{reconciled}");
    assert_eq!(reconciled["expected"], PAYMENTS + 3, "{reconciled}");
    // The ledger balances; the sub-merchants were paid all they were owed, the platform
    // kept its fees.
    let ledger = paygrid()
        .args(["--json", "ledger", "--data-dir", &fleet.dir.path("exec-0")])
        .output()
        .unwrap();
    assert!(ledger.status.success(), "{ledger:?}");
    let ledger: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    assert_eq!(ledger["balanced"], true);
    let fees: usize = (0..PAYMENTS).step_by(5).map(|n| 9_000 + n - 7_500).sum();
    for balance in ledger["balances"].as_array().unwrap() {
        let account = balance["account"].as_str().unwrap();
        if account.starts_with("sub_merchant_payable:") {
            assert_eq!(
                balance["debits_posted"], balance["credits_posted"],
                "{balance}"
            );
        }
        if account == "platform_revenue" {
            assert_eq!(balance["credits_posted"], fees, "{balance}");
        }
    }
}

/// Waits until the workflow's approval task waits for a decision.
async fn wait_for_approval(
    client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
    id: &str,
) -> pb::TaskState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workflow = get(client, id).await;
        if let Some(waiting) = workflow
            .tasks
            .iter()
            .find(|t| t.approval.as_ref().is_some_and(|a| a.pending))
        {
            return waiting.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no approval waits: {workflow:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A payment the risk check sends to review waits for an operator, across a control-unit
/// restart; `paygrid approve` lets it go on (audited: who, through what, why), and a
/// rejected one is never authorized at the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_review_waits_for_an_operator_across_a_restart_and_is_audited() {
    let mut fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    let spec = spec("card-payment");
    let big = json!({"amount_minor": 620_000, "currency": "EUR", "card_token": "tok_visa"});
    let approved = submit(&mut client, &spec, big.clone(), pb::Priority::Unspecified).await;
    let rejected = submit(&mut client, &spec, big, pb::Priority::Unspecified).await;
    let waiting = wait_for_approval(&mut client, &approved).await;
    assert_eq!(waiting.task_id, "review");
    let approval = waiting.approval.unwrap();
    assert!(approval.prompt.contains("620000 EUR"), "{approval:?}");
    assert_eq!(approval.default_decision, "reject");
    assert!(
        waiting
            .waiting_reason
            .starts_with("awaiting approval: Risk review"),
        "{}",
        waiting.waiting_reason
    );
    wait_for_approval(&mut client, &rejected).await;
    let (_, status) = cli(&fleet.control.url, &["status", &approved]);
    assert!(status.contains("awaiting approval"), "{status}");

    fleet.control.restart();
    let mut client = fleet.workflows().await;
    wait_for_approval(&mut client, &approved).await;
    let url = fleet.control.url.clone();
    // A task that is not an approval, and a decision that is neither, are refused.
    let (code, _) = cli(
        &url,
        &["approve", &approved, "authorize", "--decision", "approve"],
    );
    assert_ne!(code, 0);
    let (code, _) = cli(&url, &["approve", &approved, "--decision", "maybe"]);
    assert_ne!(code, 0);
    let (code, out) = cli(
        &url,
        &[
            "approve",
            &approved,
            "review",
            "--decision",
            "approve",
            "--note",
            "customer called",
            // The decision is alice's, proven by her token, whatever --by claims.
            "--by",
            "mallory",
            "--token",
            &token("alice", paygrid_security::Role::Operator),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("approved by alice"), "{out}");
    let (code, out) = cli(
        &url,
        &["approve", &rejected, "--decision", "reject", "--by", "bob"],
    );
    assert_eq!(code, 0, "{out}");
    // Twice: the approval no longer waits.
    let (code, _) = cli(
        &url,
        &["approve", &rejected, "--decision", "approve", "--by", "eve"],
    );
    assert_ne!(code, 0);

    let done = wait_terminal(&mut client, &approved).await;
    assert_eq!(
        done.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{done:#?}"
    );
    let decision: serde_json::Value =
        serde_json::from_str(&task(&done, "review").output_json).unwrap();
    assert_eq!(decision["decision"], "approve");
    assert_eq!(decision["decided_by"], "alice");
    assert_eq!(decision["via"], "cli");
    assert_eq!(decision["note"], "customer called");
    let failed = wait_terminal(&mut client, &rejected).await;
    assert_ne!(failed.status, pb::WorkflowStatus::Succeeded as i32);
    let review = task(&failed, "review");
    // The CLI presented the `root` certificate: that is who rejected, not `--by bob`.
    assert_eq!(review.error, "rejected by root via cli");
    assert_eq!(
        task(&failed, "authorize").attempts,
        0,
        "a rejected payment is never authorized"
    );
    let stats = gateway_stats(&fleet.gateway);
    assert_eq!(stats["authorizations"], 1, "{stats}");
    assert_eq!(stats["captures"], 1, "{stats}");
}

/// Oversize labels and idempotency keys are refused with INVALID_ARGUMENT naming the
/// limit, before anything is compiled or stored (10,000 labels of 100 bytes and a
/// 10,000-character key used to be accepted).
#[tokio::test(flavor = "multi_thread")]
async fn oversize_labels_and_keys_are_refused_naming_the_limit() {
    let control = Part::start(&["control", "--listen", "127.0.0.1:0", "--store", "memory"]);
    let mut client = Fleet::client(&control.url).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: tiny\nversion: 1\ntasks:\n  - id: a\n    skill: nobody.offers\n";
    let request =
        |labels: std::collections::HashMap<String, String>, key: String| pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(spec.into())),
            input_json: "{}".into(),
            labels,
            idempotency_key: key,
            ..Default::default()
        };
    let refused =
        async |client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
               request: pb::SubmitRequest| {
            let status = client.submit(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
            status.message().to_owned()
        };
    let many: std::collections::HashMap<String, String> = (0..10_000)
        .map(|i| (format!("k{i}"), "v".repeat(100)))
        .collect();
    assert_eq!(
        refused(&mut client, request(many, String::new())).await,
        "10000 labels; the limit is 64"
    );
    assert_eq!(
        refused(&mut client, request(Default::default(), "k".repeat(10_000))).await,
        "idempotency_key is 10000 bytes; the limit is 255"
    );
    let long_key = [("x".repeat(100), "v".to_owned())].into();
    assert!(
        refused(&mut client, request(long_key, String::new()))
            .await
            .ends_with("is 100 bytes; keys are 1 to 63 bytes")
    );
    let long_value = [("merchant".to_owned(), "v".repeat(1_000))].into();
    assert_eq!(
        refused(&mut client, request(long_value, String::new())).await,
        "label `merchant` has a value of 1000 bytes; the limit is 256"
    );
    // At the limits, accepted.
    let fine: std::collections::HashMap<String, String> = (0..64)
        .map(|i| (format!("k{i}"), "v".repeat(256)))
        .collect();
    client
        .submit(request(fine, "k".repeat(255)))
        .await
        .expect("at the limits");
}
