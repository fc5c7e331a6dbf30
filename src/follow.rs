//! `paygrid watch ID ID ...`: several workflows followed to their ends on one `Follow`
//! stream, each end printed as it comes (a line, or a JSON object with `--json`).
//! Exit code: 0 when every one succeeded, 1 when any ended otherwise, 2 when an id was
//! refused (malformed or unknown).

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_telemetry::redact::redact_text;
use serde_json::json;

use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::operator::connect;
use crate::output::status_name;

pub async fn watch_many(endpoint: &str, ids: &[String], json: bool) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let request = pb::FollowRequest {
        workflow_ids: ids.to_vec(),
        snapshot: false,
    };
    // One request, then the caller's side closes: the stream ends after the last answer.
    let mut stream = client
        .follow(tokio_stream::iter([request]))
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let (mut failed, mut refused, mut answered) = (false, false, 0);
    while let Some(event) = stream.message().await.map_err(anyhow::Error::new)? {
        match event.body {
            Some(pb::follow_event::Body::Ended(ended)) => {
                let (status, detail) = match ended.body {
                    Some(pb::workflow_event::Body::Workflow(w)) => (w.status, w.detail),
                    Some(pb::workflow_event::Body::Snapshot(w)) => (w.status, w.error),
                    _ => (pb::WorkflowStatus::Unspecified as i32, String::new()),
                };
                failed |= status != pb::WorkflowStatus::Succeeded as i32;
                let detail = redact_text(&detail);
                if json {
                    println!(
                        "{}",
                        json!({"workflow_id": ended.workflow_id, "status": status_name(status), "detail": detail})
                    );
                } else {
                    println!("{}  {}  {detail}", ended.workflow_id, status_name(status));
                }
            }
            Some(pb::follow_event::Body::Refused(no)) => {
                refused = true;
                if json {
                    println!(
                        "{}",
                        json!({"workflow_id": no.workflow_id, "refused": no.code, "message": no.message})
                    );
                } else {
                    eprintln!("{}: {} ({})", no.workflow_id, no.message, no.code);
                }
            }
            None => continue,
        }
        answered += 1;
    }
    anyhow::ensure!(
        answered == ids.len(),
        "the control unit answered {answered} of {} workflows before the stream ended",
        ids.len()
    );
    Ok(if refused {
        EXIT_USAGE
    } else if failed {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}
