//! An operator client in Rust: submit the card-payment example over gRPC and follow it.
//! `PAYGRID_CERTS_DIR=.paygrid/dev/certs cargo run -p paygrid-examples --bin operator_client -- https://127.0.0.1:50051`

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    // With TLS (PAYGRID_CERTS_DIR) it trusts the CA there and presents client.root.crt,
    // or sends PAYGRID_TOKEN as a bearer token; without, plaintext (a control unit
    // started with --insecure).
    let token = std::env::var("PAYGRID_TOKEN").ok();
    let security = match std::env::var_os("PAYGRID_CERTS_DIR") {
        Some(dir) => {
            let tls = paygrid_security::Tls::new(dir);
            let cert = (token.is_none() && tls.has_client("root")).then_some("root");
            paygrid_security::ClientSecurity::tls(
                &tls,
                cert,
                token.as_deref(),
                paygrid_security::client::ALPN_H2,
            )?
        }
        None => paygrid_security::ClientSecurity::insecure(),
    };
    let mut client =
        WorkflowsClient::new(security.auth_channel(security.endpoint(&endpoint)?).await?);
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
