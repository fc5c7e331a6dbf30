//! The embedded store as an operator runs it: the commit log in a directory of its own
//! (`--commit-log-dir`), a control unit killed with commits in it, a start that forgets
//! the flag refused (with what to do), the start with it finding every workflow, and
//! after a clean stop a new log in place of a lost one.

#![allow(clippy::unwrap_used)]

mod support;

use paygrid_proto::v1 as pb;
use support::{Part, TempDir, get};

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
