//! Operations on accepted work through the real parts (docs/operations.md): pause and
//! resume a payment mid-flight, retry a payment that failed while its gateway was down,
//! a bulk cancel with its dry-run count first; each refused where it makes no sense,
//! each in the audit log and in the Watch stream.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use support::*;

/// Polls the workflow until `done` holds for it.
async fn until(
    client: &mut pb::workflows_client::WorkflowsClient<tonic::transport::Channel>,
    id: &str,
    what: &str,
    done: impl Fn(&pb::Workflow) -> bool,
) -> pb::Workflow {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workflow = get(client, id).await;
        if done(&workflow) {
            return workflow;
        }
        assert!(Instant::now() < deadline, "never {what}: {workflow:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_retry_and_bulk_through_the_real_parts() {
    let fleet = Fleet::start(&["--latency-ms", "200"], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let control = fleet.control.url.clone();
    let mut client = fleet.workflows().await;

    // Pause a payment in flight: what runs finishes, nothing new starts.
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    let mut events = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let (code, out) = cli(&control, &["pause", &id, "--reason", "gateway maintenance"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("paused"), "{out}");
    let held = until(&mut client, &id, "held at a paused task", |w| {
        w.tasks.iter().any(|t| {
            t.waiting_reason
                .starts_with("workflow paused: gateway maintenance")
        }) && !w.tasks.iter().any(|t| {
            t.status == pb::TaskStatus::Dispatched as i32
                || t.status == pb::TaskStatus::Running as i32
        })
    })
    .await;
    assert_eq!(held.status, pb::WorkflowStatus::Running as i32);
    assert_eq!(held.paused, "gateway maintenance");
    let captures_while_paused = gateway_stats(&fleet.gateway)["captures"].clone();
    let (code, status) = cli(&control, &["status", &id]);
    assert_eq!(code, 0);
    assert!(status.contains("paused: gateway maintenance"), "{status}");
    // Pausing twice, or retrying a running workflow, makes no sense.
    let again = client
        .pause(pb::OperateRequest {
            workflow_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("paused already"), "{again:?}");
    let retry_running = client
        .retry_task(pb::OperateRequest {
            workflow_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(retry_running.code(), tonic::Code::FailedPrecondition);
    assert!(
        retry_running.message().contains("only a failed workflow"),
        "{retry_running:?}"
    );
    let (code, out) = cli(&control, &["resume", &id]);
    assert_eq!(code, 0, "{out}");
    let done = wait_terminal(&mut client, &id).await;
    assert_eq!(
        done.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{done:#?}"
    );
    assert_eq!(
        captures_while_paused, 0,
        "nothing was captured while paused"
    );
    // The Watch stream showed both.
    let mut details = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::workflow_event::Body::Workflow(changed)) = event.body {
            details.push(changed.detail);
        }
    }
    assert!(
        details.iter().any(|d| d == "paused: gateway maintenance")
            && details.iter().any(|d| d == "resumed"),
        "{details:?}"
    );
    let resume_done = client
        .resume(pb::OperateRequest {
            workflow_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(resume_done.code(), tonic::Code::FailedPrecondition);

    // The gateway is down for every attempt: the payment fails with nothing taken;
    // once it is back, a retry runs it again from the failed task, under a new key.
    let workflow = payment_failed_at_gateway(&mut client, &fleet.gateway.url).await;
    let failed = workflow.workflow_id.clone();
    assert_eq!(task(&workflow, "authorize").attempts, 4);
    http(&fleet.gateway.url, "PUT", "/v1/admin/faults", Some("{}"));
    let (code, out) = cli(&control, &["retry", &failed, "--task", "authorize"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("authorize"), "{out}");
    let workflow = wait_terminal(&mut client, &failed).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{workflow:#?}"
    );
    let authorize = task(&workflow, "authorize");
    assert_eq!(authorize.attempts, 1, "one attempt since the retry");
    assert_eq!(
        authorize.history.len(),
        5,
        "the history keeps the failed ones"
    );
    assert_eq!(
        gateway_stats(&fleet.gateway)["authorizations"],
        2,
        "one per payment: the failed attempts took nothing"
    );
    let (code, out) = cli(&control, &["retry", &failed]);
    assert_ne!(code, 0, "retrying a succeeded workflow is refused: {out}");

    // Bulk: three parked workflows with one label; a dry run counts them, --yes cancels.
    let parked_spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n";
    let mut parked = Vec::new();
    for _ in 0..3 {
        let response = client
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(parked_spec.into())),
                input_json: "{}".into(),
                labels: [("batch".to_owned(), "b7".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        parked.push(response.workflow_id);
    }
    let (code, out) = cli(
        &control,
        &[
            "bulk",
            "cancel",
            "--label",
            "batch=b7",
            "--skill",
            "nobody.offers",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 workflows match"), "{out}");
    assert_eq!(
        get(&mut client, &parked[0]).await.status,
        pb::WorkflowStatus::Running as i32,
        "a dry run changes nothing"
    );
    let (code, out) = cli(
        &control,
        &[
            "bulk",
            "cancel",
            "--label",
            "batch=b7",
            "--reason",
            "batch withdrawn",
            "--yes",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 matched, 3 done, 0 refused"), "{out}");
    for id in &parked {
        let workflow = wait_terminal(&mut client, id).await;
        assert_eq!(workflow.status, pb::WorkflowStatus::Cancelled as i32);
    }

    // Dispatch to gateway alpha paused for maintenance: a new payment waits, across a
    // restart of the control unit, until dispatch is resumed.
    let (code, out) = cli(
        &control,
        &[
            "pause-dispatch",
            "--gateway",
            "alpha",
            "--reason",
            "alpha maintenance",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dispatch to gateway alpha paused: alpha maintenance"),
        "{out}"
    );
    let held = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    let waiting = |w: &pb::Workflow| {
        w.tasks.iter().any(|t| {
            t.waiting_reason == "waiting: dispatch to gateway alpha (alpha maintenance) is paused"
        })
    };
    until(
        &mut client,
        &held,
        "waiting for the paused gateway",
        waiting,
    )
    .await;
    let (code, health) = cli(&control, &["health"]);
    assert_eq!(code, 0);
    assert!(
        health.contains("dispatch to gateway alpha paused"),
        "{health}"
    );
    let mut fleet = fleet;
    fleet.control.restart();
    let control = fleet.control.url.clone();
    let mut client = fleet.workflows().await;
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    until(&mut client, &held, "still waiting after a restart", waiting).await;
    let (code, out) = cli(&control, &["resume-dispatch", "--gateway", "alpha"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no dispatch is paused"), "{out}");
    let workflow = wait_terminal(&mut client, &held).await;
    assert_eq!(workflow.status, pb::WorkflowStatus::Succeeded as i32);

    // Every operation is in the audit log, with who and what came of it.
    let audit = client
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    for wanted in [
        ("pause", "ok"),
        ("resume", "ok"),
        ("retry", "ok"),
        ("bulk cancel", "3 matched, 3 applied, 0 refused"),
        ("bulk cancel", "dry run: 3 matched, 0 applied, 0 refused"),
        ("pause dispatch", "ok"),
        ("resume dispatch", "ok"),
    ] {
        assert!(seen.contains(&wanted), "{wanted:?} not in {seen:?}");
    }
    assert!(
        seen.iter()
            .any(|(action, outcome)| *action == "pause" && outcome.contains("paused already")),
        "the refusal is audited too: {seen:?}"
    );
}
