//! An operator client in Rust: submit the card-payment example over gRPC and follow it.
//! `cargo run -p paygrid-examples --bin operator_client -- http://127.0.0.1:50051`

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let mut client = WorkflowsClient::connect(endpoint).await?;
    let submitted = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(paygrid_examples::CARD_PAYMENT.into())),
            input_json: serde_json::json!({"amount_minor": 4200, "currency": "EUR", "card_token": "tok_visa"}).to_string(),
            idempotency_key: "order-4200".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "workflow {} (created: {})",
        submitted.workflow_id, submitted.created
    );
    let mut events = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: submitted.workflow_id.clone(),
        })
        .await?
        .into_inner();
    while let Some(event) = events.message().await? {
        match event.body {
            Some(pb::workflow_event::Body::Task(task)) => {
                println!("  {} -> {:?}", task.task_id, task.status())
            }
            Some(pb::workflow_event::Body::Workflow(workflow)) => {
                println!("workflow -> {:?}", workflow.status())
            }
            _ => {}
        }
    }
    Ok(())
}
