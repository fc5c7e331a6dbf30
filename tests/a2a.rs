//! A2A v1.0, tested with a client nobody here wrote: the A2A project's Python SDK
//! (`a2a-sdk[grpc]` >= 1.3, installed by `.ci/run`), which finds the gRPC interface through
//! the agent card at `/.well-known/agent-card.json`, starts a card payment, follows it with
//! `SubscribeToTask` to COMPLETED, cancels another task, and approves a payment the risk
//! check sent to review (INPUT_REQUIRED) with an A2A message. The script is
//! `tests/clients/a2a_check.py`.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

fn run_client(python: &str, args: &[&str]) -> serde_json::Value {
    run_client_script(python, "a2a_check.py", args)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_a2a_sdk_drives_paygrid_over_grpc_from_its_agent_card() {
    let Some(python) = python_with("a2a.client") else {
        return;
    };
    let fleet = HttpFleet::start("a2a");
    // The client submits card-payment@3 by reference: register the spec first.
    let mut workflows = fleet.register_card_payment().await;
    let (control, http_addr) = (&fleet.control, &fleet.http);
    let card = http(http_addr, "GET", "/.well-known/agent-card.json", None);
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "GRPC");
    assert_eq!(card["supportedInterfaces"][0]["url"], control.url.as_str());
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        skills.contains(&"card-payment@3") && skills.contains(&"risk.score"),
        "{skills:?}"
    );

    let seen = run_client(&python, &[&format!("https://{http_addr}")]);
    assert_eq!(
        seen["states"],
        serde_json::json!(["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]),
        "{seen}"
    );
    let payment = get(&mut workflows, seen["task_id"].as_str().unwrap()).await;
    assert_eq!(
        payment.status,
        paygrid_proto::v1::WorkflowStatus::Succeeded as i32
    );
    let cancelled = get(&mut workflows, seen["cancelled"].as_str().unwrap()).await;
    assert_eq!(
        cancelled.status,
        paygrid_proto::v1::WorkflowStatus::Cancelled as i32
    );

    // The review: INPUT_REQUIRED until the approval message, then COMPLETED; the control
    // unit kept who decided, through A2A, and why.
    let states = seen["review_states"].as_array().unwrap();
    assert!(
        states.contains(&serde_json::json!("TASK_STATE_INPUT_REQUIRED")),
        "{seen}"
    );
    assert_eq!(states.last().unwrap(), "TASK_STATE_COMPLETED", "{seen}");
    let reviewed = get(&mut workflows, seen["reviewed"].as_str().unwrap()).await;
    assert_eq!(
        reviewed.status,
        paygrid_proto::v1::WorkflowStatus::Succeeded as i32
    );
    let review = reviewed
        .tasks
        .iter()
        .find(|t| t.task_id == "review")
        .unwrap();
    let decision: serde_json::Value = serde_json::from_str(&review.output_json).unwrap();
    assert_eq!(decision["decision"], "approve");
    assert_eq!(decision["decided_by"], "a2a-check");
    assert_eq!(decision["via"], "a2a");
    assert_eq!(decision["note"], "known customer");
    assert!(decision["prompt"].as_str().unwrap().contains("750000 EUR"));
    assert!(!review.approval.as_ref().unwrap().pending);
}
