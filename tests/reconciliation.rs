//! Reconciliation end to end: a day of payments and refunds through the real parts, the
//! gateway simulator's settlement reports with one planted mismatch of each kind, and the
//! reconciliation agent finding each exactly once among thousands of matched rows; the
//! result in `paygrid reconcile`, the metrics, and a remediation started by it.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paygrid_agents::dates::Day;
use paygrid_proto::v1 as pb;
use serde_json::{Value, json};
use support::*;

/// Authorize, capture, and book both in the ledger (with the capture id): the movements a
/// settlement report must show, without the card example's risk and receipt steps.
const CHARGE: &str = r#"apiVersion: paygrid/v1
kind: Workflow
name: charge
version: 1
inputs:
  amount_minor: { type: integer, minimum: 1 }
tasks:
  - id: authorize
    skill: gateway.authorize
    with: { amount_minor: "{{ inputs.amount_minor }}", currency: EUR, card_token: tok_visa, reference: "{{ workflow.id }}" }
  - id: hold
    skill: ledger.post
    needs: [authorize]
    with: { event: authorize, payment_id: "{{ workflow.id }}", amount_minor: "{{ inputs.amount_minor }}", currency: EUR }
  - id: capture
    skill: gateway.capture
    needs: [hold]
    with: { authorization_id: "{{ tasks.authorize.output.authorization_id }}" }
  - id: book
    skill: ledger.post
    needs: [capture]
    with:
      event: capture
      payment_id: "{{ workflow.id }}"
      amount_minor: "{{ tasks.capture.output.amount_minor }}"
      gateway: "{{ tasks.capture.output.gateway }}"
      psp_reference: "{{ tasks.capture.output.capture_id }}"
"#;

const PAYMENTS: usize = 2_000;
const REFUNDS: usize = 20;

/// Submits `count` workflows from 16 concurrent submitters; their ids.
async fn submit_all(
    control: &str,
    count: usize,
    request: impl Fn(usize) -> pb::SubmitRequest + Send + Sync + Clone + 'static,
) -> Vec<String> {
    let mut submitters = Vec::new();
    for lane in 0..16 {
        let request = request.clone();
        let mut client = Fleet::client(control).await;
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (lane..count).step_by(16) {
                ids.push(
                    client
                        .submit(request(n))
                        .await
                        .unwrap()
                        .into_inner()
                        .workflow_id,
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for submitter in submitters {
        ids.extend(submitter.await.unwrap());
    }
    ids
}

/// Waits until no workflow of `name` runs; panics on any that did not succeed.
async fn wait_all_succeeded(control: &str, name: &str, expected: usize) {
    let mut client = Fleet::client(control).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let running = client
            .list(pb::ListWorkflowsRequest {
                name: name.into(),
                status: pb::WorkflowStatus::Running.into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if running.workflows.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{name} workflows still running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut succeeded = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list(pb::ListWorkflowsRequest {
                name: name.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for w in &page.workflows {
            assert_eq!(
                w.status,
                pb::WorkflowStatus::Succeeded as i32,
                "{name} {} did not succeed",
                w.workflow_id
            );
            succeeded += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(succeeded, expected, "{name} workflows");
}

/// The first workflow carrying a label, following every page (a page filtered by labels
/// may be short, even empty, with more after it).
async fn first_labelled(
    client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
    key: &str,
    value: &str,
) -> Option<pb::WorkflowSummary> {
    let mut token = String::new();
    loop {
        let page = client
            .list(pb::ListWorkflowsRequest {
                labels: [(key.to_owned(), value.to_owned())].into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(found) = page.workflows.into_iter().next() {
            return Some(found);
        }
        if page.next_page_token.is_empty() {
            return None;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_of_payments_reconciles_with_each_planted_mismatch_found_once() {
    let dir = TempDir::new("reconcile");
    let gateway = Part::start(&[
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--cost-bps",
        "25",
        "--batch-fee-minor",
        "50",
        "--data-dir",
        &dir.path("gateway"),
    ]);
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let alpha = format!("alpha={}@25", gateway.url);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "exec-0",
        "--gateway",
        &alpha,
        "--data-dir",
        &dir.path("exec"),
        "--agents",
        "gateway,ledger,reconcile,notify,remediate",
    ]);
    let today = Day::today();

    // A day of payments, and refunds of a few of them.
    let charges = submit_all(&control.url, PAYMENTS, |n| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(CHARGE.into())),
        input_json: json!({"amount_minor": 1_000 + n}).to_string(),
        idempotency_key: format!("charge-{n}"),
        ..Default::default()
    })
    .await;
    wait_all_succeeded(&control.url, "charge", PAYMENTS).await;
    let mut client = Fleet::client(&control.url).await;
    let mut refunds = Vec::new();
    for id in charges.iter().take(REFUNDS) {
        let capture = task(&get(&mut client, id).await, "capture")
            .output_json
            .clone();
        let capture: Value = serde_json::from_str(&capture).unwrap();
        refunds.push(json!({
            "capture_id": capture["capture_id"], "gateway": "alpha", "payment_id": id,
            "amount_minor": capture["amount_minor"], "currency": "EUR",
        }));
    }
    submit_all(&control.url, REFUNDS, move |n| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(spec("refund"))),
        input_json: refunds[n].to_string(),
        ..Default::default()
    })
    .await;
    wait_all_succeeded(&control.url, "refund", REFUNDS).await;

    // One mismatch of each kind in today's batch; the late row comes in a batch 4 days on.
    let kinds = [
        "missing_in_report",
        "missing_in_ledger",
        "duplicate",
        "amount_over",
        "amount_under",
        "currency_mismatch",
        "late",
    ];
    for kind in kinds {
        let answer = http(
            &gateway.url,
            "POST",
            "/v1/admin/mismatches",
            Some(&json!({"kind": kind}).to_string()),
        );
        assert!(answer["queued"].as_array().is_some(), "{answer}");
    }
    let close = |key: &str, day: Day| {
        let (status, body) = http_keyed(
            &gateway.url,
            "POST",
            "/v1/settlement-batches",
            key,
            &json!({"value_date": day.to_string()}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let first = close("close-1", today);
    let planted: BTreeMap<String, String> = first["planted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["psp_reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(planted.len(), kinds.len(), "{first}");
    let second = close("close-2", today.plus(4));
    assert_eq!(second["rows"], 2, "the late row and the fee: {second}");
    // Closing again with the same key is a replay, not a third batch.
    assert_eq!(
        close("close-2", today.plus(4))["batch_id"],
        second["batch_id"]
    );

    // Reconcile as of a day after the late batch: everything booked today is due.
    let run = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecRef(
                "reconcile-gateway@1".into(),
            )),
            input_json: json!({"gateway": "alpha", "as_of": today.plus(5).to_string()}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let finished = wait_terminal(&mut client, &run).await;
    assert_eq!(
        finished.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{finished:#?}"
    );
    let result: Value = serde_json::from_str(&task(&finished, "reconcile").output_json).unwrap();
    let expected = PAYMENTS + REFUNDS;
    assert_eq!(result["expected"], expected, "{result}");
    for kind in kinds {
        assert_eq!(result["counts"][kind], 1, "{kind}: {result}");
    }
    assert_eq!(result["mismatch_count"], kinds.len(), "no false positive");
    // Every entry matched but the five whose row was dropped, changed or late.
    assert_eq!(result["matched"], expected - 5, "{result}");
    assert_eq!(result["pending"], 0);
    assert_eq!(result["fees"]["EUR"], 100, "two batch fees: {result}");
    let found: BTreeMap<String, String> = result["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["psp_reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(found, planted, "each mismatch is the planted row");

    // The CLI shows the run (exit 1: it found mismatches) and lists it.
    let (code, shown) = cli(&control.url, &["--json", "reconcile", &run]);
    assert_eq!(code, 1, "{shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["run"], run.as_str());
    assert_eq!(shown["counts"], result["counts"]);
    let (code, table) = cli(&control.url, &["reconcile", &run]);
    assert_eq!(code, 1);
    for kind in kinds {
        assert!(table.contains(kind), "{table}");
    }
    let (code, listed) = cli(&control.url, &["--json", "reconcile", "--gateway", "alpha"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run"] == run.as_str() && r["mismatch_count"] == 7),
        "{listed}"
    );

    // Metrics count the run; remediation raised an alert for it.
    let text = scrape(&control.http);
    assert!(
        text.contains("paygrid_reconciliation_mismatches{gateway=\"alpha\",kind=\"late\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "paygrid_reconciliation_rows_total{{gateway=\"alpha\",class=\"matched\"}} {}",
            expected - 5
        )),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        if let Some(alert) = first_labelled(&mut client, "trigger", "reconciliation_mismatch").await
        {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "no remediation for the mismatches"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alert = wait_terminal(&mut client, &alert.workflow_id).await;
    assert_eq!(alert.status, pb::WorkflowStatus::Succeeded as i32);
    let message = &task(&alert, "alert").output_json;
    assert!(
        message.contains("late=1") && message.contains(&run),
        "{message}"
    );

    // A clean run after the fact: reconciling as of today (before the late batch, and
    // before anything is due) finds no mismatch the report could not yet show.
    let clean = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecRef(
                "reconcile-gateway@1".into(),
            )),
            input_json: json!({"gateway": "alpha", "as_of": today.to_string()}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let clean = wait_terminal(&mut client, &clean).await;
    let clean: Value = serde_json::from_str(&task(&clean, "reconcile").output_json).unwrap();
    assert_eq!(clean["counts"]["missing_in_report"], 0, "{clean}");
    assert_eq!(
        clean["pending"], 2,
        "the dropped and the late row are not due: {clean}"
    );
}
