//! One trace per payment: the control unit, the execution unit and the gateway simulator,
//! each its own process, export spans over OTLP to a receiver in this test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::otlp::{Received, Receiver};
use support::*;

const CALLER_TRACE: &str = "5b8efff798038103d269b633813fc60c";
const CALLER_SPAN: &str = "eee19b7ec3c1b174";

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.name() == name).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one span named {name}: {found:#?}");
    found[0]
}

fn attempt_no(span: &Received) -> u32 {
    span.attr("paygrid.task.attempt")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{} has no attempt attribute", span.name()))
}

/// A card payment whose first authorization gets a 503: one trace across the three
/// services, in the tree workflow → task → attempt → agent handling → gateway call →
/// simulator, with the attributes and the retry as span events. The operator's
/// `traceparent` makes the workflow's root a child of the operator's span.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_per_payment_across_processes() {
    let receiver = Receiver::start().await;
    let fleet = Fleet::start_with(&[], 1, Some(&receiver.url));
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    http(
        &fleet.gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_next": 1}"#),
    );
    let mut client = fleet.workflows().await;
    let mut request = tonic::Request::new(pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(spec("card-payment"))),
        input_json: json!({"amount_minor": 1999, "currency": "EUR", "card_token": "tok_visa"})
            .to_string(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let id = client
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(workflow.status, pb::WorkflowStatus::Succeeded as i32);
    assert_eq!(task(&workflow, "authorize").attempts, 2);

    // Root + 7 tasks + 8 attempts in the control unit, 8 handlings in the execution unit,
    // 3 gateway calls (2 authorizations, 1 capture) and the simulator's 3 requests.
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            let ours: Vec<&Received> = spans
                .iter()
                .filter(|s| s.trace_id() == CALLER_TRACE)
                .collect();
            let count = |service: &str| ours.iter().filter(|s| s.service == service).count();
            count("paygrid-control") >= 16
                && count("paygrid-exec") >= 11
                && count("paygrid-gateway-sim") >= 3
        })
        .await;
    let trace: Vec<Received> = spans
        .into_iter()
        .filter(|s| s.trace_id() == CALLER_TRACE)
        .collect();
    let services: std::collections::BTreeSet<&str> =
        trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["paygrid-control", "paygrid-exec", "paygrid-gateway-sim"]
    );
    let ids: std::collections::HashSet<String> = trace.iter().map(Received::span_id).collect();
    assert_eq!(ids.len(), trace.len(), "span ids are unique");

    // workflow (root): a child of the operator's span, with the payment's attributes.
    let root = one(&trace, "workflow card-payment");
    assert_eq!(root.service, "paygrid-control");
    assert_eq!(root.parent_id(), CALLER_SPAN);
    assert_eq!(
        root.attr("paygrid.workflow.id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        root.attr("paygrid.workflow.name").as_deref(),
        Some("card-payment")
    );
    assert_eq!(root.attr("paygrid.amount.minor").as_deref(), Some("1999"));
    assert_eq!(root.attr("paygrid.currency").as_deref(), Some("EUR"));
    assert_eq!(root.status_code(), 1, "a succeeded workflow is OK");

    // Every other span hangs under it; every parent is in the trace.
    for span in &trace {
        if span.span_id() != root.span_id() {
            assert!(
                ids.contains(&span.parent_id()),
                "{} ({}) has a parent outside the trace",
                span.name(),
                span.service
            );
        }
    }

    // task → attempts: the first failed and was retried, as events and statuses.
    let authorize = one(&trace, "task authorize");
    assert_eq!(authorize.parent_id(), root.span_id());
    assert_eq!(
        authorize.attr("paygrid.skill").as_deref(),
        Some("gateway.authorize")
    );
    assert_eq!(
        authorize.attr("paygrid.task.id").as_deref(),
        Some("authorize")
    );
    let retry = authorize.event("paygrid.retry").expect("a retry event");
    assert_eq!(
        support::otlp::attr(&retry.attributes, "paygrid.task.attempt").as_deref(),
        Some("1")
    );
    let attempts = named(&trace, "attempt authorize");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.parent_id(), authorize.span_id());
        assert!(attempt.attr("paygrid.agent.id").is_some());
        assert_eq!(
            attempt.attr("paygrid.workflow.id").as_deref(),
            Some(id.as_str())
        );
        let failed = attempt_no(attempt) == 1;
        assert_eq!(attempt.status_code(), if failed { 2 } else { 1 });
        assert_eq!(attempt.event("paygrid.error").is_some(), failed);
        assert_eq!(
            attempt.attr("paygrid.attempt.outcome").as_deref(),
            Some(if failed { "retryable" } else { "succeeded" })
        );
    }

    // attempt → handling (execution unit) → gateway call → simulator, per attempt.
    for attempt in &attempts {
        let n = attempt_no(attempt);
        let handle = trace
            .iter()
            .find(|s| s.name() == "handle gateway.authorize" && attempt_no(s) == n)
            .expect("a handling span per attempt");
        assert_eq!(handle.service, "paygrid-exec");
        assert_eq!(handle.parent_id(), attempt.span_id());
        assert_eq!(
            handle.attr("paygrid.skill").as_deref(),
            Some("gateway.authorize")
        );
        assert_eq!(handle.status_code(), if n == 1 { 2 } else { 1 });
        assert_eq!(
            handle.attr("paygrid.attempt.outcome").as_deref(),
            Some(if n == 1 { "retryable" } else { "succeeded" })
        );
        let call = trace
            .iter()
            .find(|s| s.name() == "gateway authorize" && s.parent_id() == handle.span_id())
            .expect("a gateway call under the handling");
        assert_eq!(call.attr("paygrid.gateway").as_deref(), Some("alpha"));
        assert_eq!(call.attr("paygrid.amount.minor").as_deref(), Some("1999"));
        let sim = trace
            .iter()
            .find(|s| s.parent_id() == call.span_id())
            .expect("the simulator's span under the call");
        assert_eq!(sim.service, "paygrid-gateway-sim");
        assert_eq!(sim.name(), "gateway-sim authorize");
        let status = if n == 1 { "503" } else { "201" };
        assert_eq!(
            call.attr("http.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(
            sim.attr("http.response.status_code").as_deref(),
            Some(status)
        );
        if n == 1 {
            assert!(call.event("paygrid.error").is_some());
            assert!(
                sim.span
                    .events
                    .iter()
                    .any(|e| e.name.contains("injected failure")),
                "{:#?}",
                sim.span.events
            );
        }
    }

    // The capture's chain too, and the checkpoint's verification.
    let capture = one(&trace, "task capture");
    let capture_attempt = one(&trace, "attempt capture");
    assert_eq!(capture_attempt.parent_id(), capture.span_id());
    let capture_call = one(&trace, "gateway capture");
    let capture_handle = one(&trace, "handle gateway.capture");
    assert_eq!(capture_handle.parent_id(), capture_attempt.span_id());
    assert_eq!(capture_call.parent_id(), capture_handle.span_id());
    assert_eq!(
        one(&trace, "gateway-sim capture").parent_id(),
        capture_call.span_id()
    );
    assert_eq!(one(&trace, "task authorized").parent_id(), root.span_id());
}

/// The control unit is killed (SIGKILL) while the capture runs and started again: the
/// payment still has one trace, whose root span (recorded at the end, by the new
/// process) is the parent of task spans the old process exported, and the capture's
/// handling and gateway call still hang under an attempt span.
#[tokio::test(flavor = "multi_thread")]
async fn a_payment_keeps_its_trace_across_a_control_unit_restart() {
    let receiver = Receiver::start().await;
    let mut fleet = Fleet::start_with(&[], 1, Some(&receiver.url));
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    http(
        &fleet.gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"capture_latency_ms": 1500}"#),
    );
    let mut client = fleet.workflows().await;
    let id = submit(
        &mut client,
        &spec("card-payment"),
        json!({"amount_minor": 500, "currency": "EUR", "card_token": "tok_visa"}),
        pb::Priority::Unspecified,
    )
    .await;
    let of_workflow = |s: &Received| s.attr("paygrid.workflow.id").as_deref() == Some(id.as_str());
    // The checkpoint's span is exported once it passed: the capture is running then.
    receiver
        .wait_until(Duration::from_secs(30), |spans| {
            spans
                .iter()
                .any(|s| s.name() == "task authorized" && of_workflow(s))
        })
        .await;
    fleet.control.restart();
    let mut client = fleet.workflows().await;
    let workflow = wait_terminal(&mut client, &id).await;
    assert_eq!(workflow.status, pb::WorkflowStatus::Succeeded as i32);
    // The execution unit reported the running capture when it reconnected: adopted, not
    // dispatched again.
    assert_eq!(task(&workflow, "capture").attempts, 1, "{workflow:#?}");

    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            let has = |name: &str| spans.iter().any(|s| s.name() == name && of_workflow(s));
            has("workflow card-payment") && has("task receipt") && has("handle notify.receipt")
        })
        .await;
    let root = spans
        .iter()
        .find(|s| s.name() == "workflow card-payment" && of_workflow(s))
        .unwrap();
    let trace: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id() == root.trace_id())
        .collect();
    let ids: std::collections::HashSet<String> = trace.iter().map(|s| s.span_id()).collect();
    let find = |name: &str| {
        trace
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace"))
    };
    // Exported by the first process, under the root the second one recorded.
    assert_eq!(find("task risk").parent_id(), root.span_id());
    assert_eq!(find("task authorize").parent_id(), root.span_id());
    // Exported by the second process.
    assert_eq!(find("task capture").parent_id(), root.span_id());
    assert_eq!(find("task receipt").parent_id(), root.span_id());
    // Every capture handling (the interrupted attempt's and its replacement's) hangs
    // under an attempt span of the capture task.
    let capture = find("task capture");
    let handles: Vec<&&Received> = trace
        .iter()
        .filter(|s| s.name() == "handle gateway.capture")
        .collect();
    assert_eq!(handles.len(), 1);
    for handle in handles {
        let attempt = trace
            .iter()
            .find(|s| s.span_id() == handle.parent_id())
            .unwrap_or_else(|| panic!("the attempt span of {handle:#?} is missing"));
        assert_eq!(attempt.name(), "attempt capture");
        assert_eq!(attempt.parent_id(), capture.span_id());
    }
    for span in &trace {
        if span.span_id() != root.span_id() {
            assert!(
                ids.contains(&span.parent_id()),
                "{} has no parent",
                span.name()
            );
        }
    }
    assert_eq!(gateway_stats(&fleet.gateway)["captures"], 1);
}

/// Breaker transitions reach the trace backend: a span `breaker GATEWAY` per transition,
/// with the transition as an event (from, to, reason).
#[tokio::test(flavor = "multi_thread")]
async fn breaker_transitions_are_span_events() {
    let receiver = Receiver::start().await;
    let fleet = Fleet::start_with(&[], 0, Some(&receiver.url));
    let mut hub = fleet.agents().await;
    let drained = hub
        .drain_gateway(pb::DrainGatewayRequest {
            gateway: "alpha".into(),
            for_ms: 60_000,
            reason: "maintenance".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drained.state, "open");
    hub.drain_gateway(pb::DrainGatewayRequest {
        gateway: "alpha".into(),
        for_ms: 0,
        reason: "maintenance over".into(),
    })
    .await
    .unwrap();
    let missing = hub
        .drain_gateway(pb::DrainGatewayRequest {
            gateway: "nowhere".into(),
            for_ms: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            spans.iter().filter(|s| s.name() == "breaker alpha").count() >= 2
        })
        .await;
    let transitions: Vec<(String, String)> = spans
        .iter()
        .filter(|s| s.name() == "breaker alpha")
        .map(|s| {
            assert_eq!(s.service, "paygrid-control");
            let event = s
                .event("paygrid.breaker.transition")
                .unwrap_or_else(|| panic!("no transition event on {s:?}"));
            let field = |key: &str| support::otlp::attr(&event.attributes, key).unwrap_or_default();
            assert!(field("reason").contains("maintenance"), "{event:?}");
            (field("from"), field("to"))
        })
        .collect();
    assert_eq!(
        transitions,
        [
            ("closed".to_owned(), "open".to_owned()),
            ("open".to_owned(), "half_open".to_owned())
        ]
    );
}

/// Two agents in two execution units exchange a peer message inside one workflow: the
/// reconciliation agent asks the ledger agent for what it expects (`ledger.expected`),
/// through the control unit. The trace shows it: the reconciliation's handling → its
/// `peer ask` → the control unit's `peer` span → the ledger's `handle peer`.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_message_between_two_agents_is_in_the_workflows_trace() {
    let receiver = Receiver::start().await;
    let mut fleet = Fleet::start_with(&[], 0, Some(&receiver.url));
    fleet.add_exec(
        "exec-payments",
        &["--agents", "gateway,risk,ledger,verify,notify"],
    );
    fleet.add_exec("exec-reconcile", &["--agents", "reconcile"]);
    fleet
        .wait_for_skills(&["gateway.authorize", "ledger.expected", "reconcile.gateway"])
        .await;
    let mut client = fleet.workflows().await;
    let payment = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    let paid = wait_terminal(&mut client, &payment).await;
    assert_eq!(paid.status, pb::WorkflowStatus::Succeeded as i32);

    let reconcile = "apiVersion: paygrid/v1\nkind: Workflow\nname: peer-reconcile\nversion: 1\ntasks:\n  - id: reconcile\n    skill: reconcile.gateway\n    with: { gateway: alpha }\n";
    let mut request = tonic::Request::new(pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(reconcile.into())),
        input_json: "{}".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let id = client
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let done = wait_terminal(&mut client, &id).await;
    assert_eq!(
        done.status,
        pb::WorkflowStatus::Succeeded as i32,
        "{done:#?}"
    );
    let output: serde_json::Value =
        serde_json::from_str(&task(&done, "reconcile").output_json).unwrap();
    assert_eq!(
        output["expected"], 1,
        "the ledger agent answered with the payment's capture: {output}"
    );

    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            [
                "handle reconcile.gateway",
                "peer ask ledger.expected",
                "peer ledger.expected",
                "handle peer ledger.expected",
            ]
            .iter()
            .all(|name| {
                spans
                    .iter()
                    .any(|s| s.trace_id() == CALLER_TRACE && s.name() == *name)
            })
        })
        .await;
    let trace: Vec<Received> = spans
        .into_iter()
        .filter(|s| s.trace_id() == CALLER_TRACE)
        .collect();
    let handle = one(&trace, "handle reconcile.gateway");
    assert_eq!(handle.service, "paygrid-exec");
    let ask = one(&trace, "peer ask ledger.expected");
    assert_eq!(ask.service, "paygrid-exec");
    assert_eq!(ask.parent_id(), handle.span_id(), "asked while handling");
    let routed = one(&trace, "peer ledger.expected");
    assert_eq!(routed.service, "paygrid-control");
    assert_eq!(routed.parent_id(), ask.span_id());
    assert_eq!(
        routed.attr("paygrid.workflow.id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(routed.status_code(), 1, "answered");
    let served = one(&trace, "handle peer ledger.expected");
    assert_eq!(served.service, "paygrid-exec");
    assert_eq!(served.parent_id(), routed.span_id());
    assert_eq!(
        served.attr("paygrid.peer.from"),
        routed.attr("paygrid.peer.from"),
        "the ledger sees who asked"
    );
    assert_ne!(
        routed.attr("paygrid.peer.from"),
        routed.attr("paygrid.peer.to"),
        "between two agents"
    );
}
