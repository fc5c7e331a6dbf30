//! What the control unit's store keeps across restarts, as an operator sees it: the
//! commit log in a directory of its own (`--commit-log-dir`: a control unit killed with
//! commits in it, a start that forgets the flag refused with what to do, the start with
//! it finding every workflow, after a clean stop a new log in place of a lost one);
//! idempotency keys; terminal workflows listable from the store; specs by name.

#![allow(clippy::unwrap_used)]

mod support;

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

/// A control unit on `data_dir` with its commit log in `log_dir`.
fn start_control(data_dir: &str, log_dir: &str) -> Part {
    Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
        "--commit-log-dir",
        log_dir,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_elsewhere_is_required_after_a_kill_and_replaceable_after_a_clean_stop() {
    let dir = TempDir::new("log-dir");
    let data_dir = dir.path("control");
    let log_dir = dir.path("fast/commit-log");
    let mut control = start_control(&data_dir, &log_dir);
    let mut client = support::Fleet::client(&control.url).await;
    let spec = "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n";
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = client
            .submit(pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(spec.to_owned())),
                input_json: "{}".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .workflow_id;
        ids.push(id);
    }
    // Killed right after the answers: the log holds them, the database may not yet.
    control.kill();
    assert!(
        !std::path::Path::new(&data_dir)
            .join("control.sqlite3-commits")
            .exists(),
        "the log went where it was told, not beside the database"
    );

    let refused = support::paygrid()
        .args([
            "control",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    let at = std::fs::canonicalize(&log_dir).unwrap();
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(&at.display().to_string())
            && said.contains("--commit-log-dir")
            && said.contains("did not stop cleanly"),
        "the refusal names where the log is and what to pass: {said}"
    );

    let mut control = start_control(&data_dir, &log_dir);
    let mut client = support::Fleet::client(&control.url).await;
    for id in &ids {
        let workflow = get(&mut client, id).await;
        assert_eq!(workflow.workflow_id, *id);
        assert_eq!(workflow.status, pb::WorkflowStatus::Running as i32);
    }

    // A clean stop (SIGTERM) records that the database holds every commit: with the
    // log's device lost, a start on a new directory is let through and loses nothing.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &control.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(control.child.wait().unwrap().success());
    std::fs::rename(&log_dir, dir.path("lost")).unwrap();
    let control = start_control(&data_dir, &dir.path("new-log"));
    let mut client = support::Fleet::client(&control.url).await;
    for id in &ids {
        assert_eq!(get(&mut client, id).await.workflow_id, *id);
    }
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
