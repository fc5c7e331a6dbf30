//! `Follow`: one completion stream for many workflows, against a real control unit,
//! execution unit and gateway simulator.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use paygrid_proto::v1 as pb;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const PAYMENTS: usize = 40;

/// Reads the stream until `expected` ids are answered; returns each id's answers.
async fn answers(
    stream: &mut tonic::Streaming<pb::FollowEvent>,
    expected: usize,
) -> HashMap<String, Vec<pb::follow_event::Body>> {
    let mut seen: HashMap<String, Vec<pb::follow_event::Body>> = HashMap::new();
    let mut count = 0;
    while count < expected {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("an answer within 60 s")
            .expect("the stream stays healthy")
            .expect("the stream stays open while ids are open");
        let body = event.body.expect("an event has a body");
        let id = match &body {
            pb::follow_event::Body::Ended(ended) => ended.workflow_id.clone(),
            pb::follow_event::Body::Refused(refused) => refused.workflow_id.clone(),
        };
        seen.entry(id).or_default().push(body);
        count += 1;
    }
    seen
}

fn ended_status(body: &pb::follow_event::Body) -> pb::WorkflowStatus {
    match body {
        pb::follow_event::Body::Ended(pb::WorkflowEvent {
            body: Some(pb::workflow_event::Body::Workflow(changed)),
            ..
        }) => changed.status(),
        pb::follow_event::Body::Ended(pb::WorkflowEvent {
            body: Some(pb::workflow_event::Body::Snapshot(workflow)),
            ..
        }) => workflow.status(),
        other => panic!("not an end: {other:?}"),
    }
}

/// Payments in flight (each gateway call takes 300 ms) and already ended, followed on one
/// stream: each end arrives once, with the status `Get` shows; unknown and malformed ids
/// are refused by name; an end asked as a snapshot carries the tasks' outputs; once the
/// caller stops sending, the stream ends when the last open workflow does.
#[tokio::test(flavor = "multi_thread")]
async fn one_stream_follows_many_payments_to_their_ends() {
    let fleet = Fleet::start(&["--latency-ms", "300"], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    let spec = spec("card-payment");

    // One payment that has ended before anyone follows it.
    let early = submit(&mut client, &spec, card("tok_visa"), pb::Priority::Normal).await;
    wait_terminal(&mut client, &early).await;

    let (requests, outgoing) = mpsc::channel(8);
    let mut stream = client
        .follow(ReceiverStream::new(outgoing))
        .await
        .expect("follow")
        .into_inner();

    // Payments in flight, every fifth declined, followed in batches of 10 as submitted;
    // a card each (the risk agent sends a card used too often to review).
    let mut ids = Vec::new();
    for n in 0..PAYMENTS {
        let token = if n % 5 == 0 {
            format!("tok_decline_{n}")
        } else {
            format!("tok_visa_{n}")
        };
        ids.push(submit(&mut client, &spec, card(&token), pb::Priority::Normal).await);
        if ids.len() % 10 == 0 {
            let batch = ids[ids.len() - 10..].to_vec();
            requests
                .send(pb::FollowRequest {
                    workflow_ids: batch,
                    snapshot: false,
                })
                .await
                .unwrap();
        }
    }
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057".to_owned();
    requests
        .send(pb::FollowRequest {
            workflow_ids: vec![unknown.clone(), "not-an-id".into()],
            snapshot: false,
        })
        .await
        .unwrap();
    requests
        .send(pb::FollowRequest {
            workflow_ids: vec![early.clone()],
            snapshot: true,
        })
        .await
        .unwrap();

    let seen = answers(&mut stream, PAYMENTS + 3).await;
    for (n, id) in ids.iter().enumerate() {
        let answers = &seen[id];
        assert_eq!(answers.len(), 1, "{id} answered once: {answers:?}");
        let workflow = get(&mut client, id).await;
        assert!(is_terminal(workflow.status), "{id} had ended: {workflow:?}");
        assert_eq!(ended_status(&answers[0]) as i32, workflow.status, "{id}");
        let expected = if n % 5 == 0 {
            pb::WorkflowStatus::Failed
        } else {
            pb::WorkflowStatus::Succeeded
        };
        assert_eq!(workflow.status(), expected, "payment {n}");
    }
    match &seen[&unknown][..] {
        [pb::follow_event::Body::Refused(refused)] => {
            assert_eq!(refused.code, "NOT_FOUND");
            assert!(refused.message.contains(&unknown), "{refused:?}");
        }
        other => panic!("the unknown id is refused: {other:?}"),
    }
    match &seen["not-an-id"][..] {
        [pb::follow_event::Body::Refused(refused)] => {
            assert_eq!(refused.code, "INVALID_ARGUMENT");
            assert!(refused.message.contains("not-an-id"), "{refused:?}");
        }
        other => panic!("the malformed id is refused: {other:?}"),
    }
    match &seen[&early][..] {
        [
            pb::follow_event::Body::Ended(pb::WorkflowEvent {
                body: Some(pb::workflow_event::Body::Snapshot(workflow)),
                ..
            }),
        ] => {
            assert_eq!(workflow.status(), pb::WorkflowStatus::Succeeded);
            let capture = task(workflow, "capture");
            assert!(
                capture.output_json.contains("amount_minor"),
                "the snapshot carries outputs: {capture:?}"
            );
        }
        other => panic!("the ended payment is answered with its snapshot: {other:?}"),
    }

    // One more in flight, then the caller closes its side: the stream answers it and ends.
    let last = submit(&mut client, &spec, card("tok_visa"), pb::Priority::Normal).await;
    requests
        .send(pb::FollowRequest {
            workflow_ids: vec![last.clone()],
            snapshot: false,
        })
        .await
        .unwrap();
    drop(requests);
    let seen = answers(&mut stream, 1).await;
    assert_eq!(ended_status(&seen[&last][0]), pb::WorkflowStatus::Succeeded);
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends once nothing is open");
    assert!(matches!(closed, Ok(None)), "ends cleanly: {closed:?}");
}

/// A workflow that ended before a restart is no longer in the control unit's memory: its
/// end is answered from the store.
#[tokio::test(flavor = "multi_thread")]
async fn an_end_from_before_a_restart_is_answered_from_the_store() {
    let mut fleet = Fleet::start(&[], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_decline"),
        pb::Priority::Normal,
    )
    .await;
    wait_terminal(&mut client, &id).await;
    fleet.control.restart();
    let mut client = fleet.workflows().await;
    let (requests, outgoing) = mpsc::channel(1);
    requests
        .send(pb::FollowRequest {
            workflow_ids: vec![id.clone()],
            snapshot: true,
        })
        .await
        .unwrap();
    drop(requests);
    let mut stream = client
        .follow(ReceiverStream::new(outgoing))
        .await
        .expect("follow")
        .into_inner();
    let seen = answers(&mut stream, 1).await;
    match &seen[&id][..] {
        [
            pb::follow_event::Body::Ended(pb::WorkflowEvent {
                body: Some(pb::workflow_event::Body::Snapshot(workflow)),
                ..
            }),
        ] => {
            assert_eq!(workflow.status(), pb::WorkflowStatus::Failed);
            assert!(task(workflow, "authorize").error.contains("card_declined"));
        }
        other => panic!("answered from the store: {other:?}"),
    }
}

/// `paygrid watch` with several ids follows them on one stream: one line per end, exit 1
/// when one failed, exit 2 when an id is unknown.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_watches_several_payments_on_one_stream() {
    let fleet = Fleet::start(&["--latency-ms", "200"], 1);
    fleet.wait_for_skills(SHIPPED_SKILLS).await;
    let mut client = fleet.workflows().await;
    let spec = spec("card-payment");
    let mut ids = Vec::new();
    for token in ["tok_visa_cli_1", "tok_visa_cli_2", "tok_decline_cli_3"] {
        ids.push(submit(&mut client, &spec, card(token), pb::Priority::Normal).await);
    }
    let control = fleet.control.url.clone();
    let args: Vec<String> = ["--json", "watch"]
        .into_iter()
        .map(str::to_owned)
        .chain(ids.iter().cloned())
        .collect();
    let (code, stdout) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&control, &args)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "one payment was declined: {stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (n, id) in ids.iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l["workflow_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} printed: {stdout}"));
        let expected = if n == 2 { "failed" } else { "succeeded" };
        assert_eq!(line["status"], expected, "{line}");
    }

    let control = fleet.control.url.clone();
    let first = ids[0].clone();
    let (code, stdout) = tokio::task::spawn_blocking(move || {
        cli(
            &control,
            &[
                "--json",
                "watch",
                &first,
                "01890a5d-ac96-774b-bcce-b302099a8057",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "an unknown id is a usage error: {stdout}");
    assert!(stdout.contains("NOT_FOUND"), "{stdout}");
    assert!(
        stdout.contains("succeeded"),
        "the known one is still answered: {stdout}"
    );
}
