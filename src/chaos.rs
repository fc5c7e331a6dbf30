//! `paygrid dev --chaos`: the breaker and remediation loop, shown on the dev fleet.

use paygrid_examples::CARD_PAYMENT;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::AuthChannel as Channel;

use crate::operator::connect;

/// Waits, printing nothing, until a workflow ends; true when it succeeded.
async fn succeeds(client: &mut WorkflowsClient<Channel>, id: &str) -> anyhow::Result<bool> {
    let mut stream = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: id.to_owned(),
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    let workflow = client
        .get(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(workflow.status == pb::WorkflowStatus::Succeeded as i32)
}

/// `paygrid dev --chaos`: gateway alpha fails; its breaker opens, payments go to beta,
/// the remediation workflow drains, probes and (once the fault is gone) reopens alpha,
/// and trial payments close the breaker. Prints each step; true when every payment
/// succeeded and the remediation finished.
pub async fn chaos(endpoint: &str, alpha: &str) -> anyhow::Result<bool> {
    // A card per payment: the risk agent reviews a card used more than 20 times a minute.
    static CARDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let channel = connect(endpoint).await?;
    let mut client = WorkflowsClient::new(channel.clone());
    let mut hub = AgentHubClient::new(channel);
    let pay = async |client: &mut WorkflowsClient<_>, n: u32| -> anyhow::Result<u32> {
        let mut ids = Vec::new();
        for i in 0..n {
            let input = serde_json::json!({"amount_minor": 2000 + i64::from(i), "currency": "EUR", "card_token": format!("tok_chaos_{}", CARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))});
            let request = pb::SubmitRequest {
                spec: Some(pb::submit_request::Spec::SpecText(CARD_PAYMENT.to_owned())),
                input_json: input.to_string(),
                ..Default::default()
            };
            ids.push(client.submit(request).await?.into_inner().workflow_id);
        }
        let mut succeeded = 0;
        for id in &ids {
            succeeded += u32::from(succeeds(client, id).await?);
        }
        Ok(succeeded)
    };
    let breaker = async |hub: &mut AgentHubClient<_>| -> anyhow::Result<Option<pb::Breaker>> {
        let health = hub.health(pb::HealthRequest {}).await?.into_inner();
        Ok(health.breakers.into_iter().find(|b| b.gateway == "alpha"))
    };
    // The demo's breaker window (3 s) forgets the examples' successful payments first.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    println!("paygrid dev --chaos: gateway alpha starts failing every request");
    set_faults(alpha, r#"{"fail_rate": 1.0}"#).await?;
    let succeeded = pay(&mut client, 6).await?;
    println!("  6 card payments while alpha fails: {succeeded} succeeded (on beta)");
    if let Some(b) = breaker(&mut hub).await? {
        let last = b
            .transitions
            .first()
            .map_or(String::new(), |t| t.reason.clone());
        println!("  breaker alpha: {} ({last})", b.state);
    }
    let remediation = client
        .list(pb::ListWorkflowsRequest {
            labels: [("remediation.subject".to_owned(), "alpha".to_owned())].into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .workflows
        .into_iter()
        .next_back();
    let Some(remediation) = remediation else {
        println!("  no remediation started (is a remediation agent hosted?)");
        set_faults(alpha, "{}").await?;
        return Ok(false);
    };
    println!(
        "  remediation {} started: drain alpha, probe it, reopen it (paygrid status {})",
        remediation.workflow_id, remediation.workflow_id
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    println!("paygrid dev --chaos: the fault is removed");
    set_faults(alpha, "{}").await?;
    let finished = succeeds(&mut client, &remediation.workflow_id).await?;
    println!(
        "  remediation {}: alpha probed healthy and reopened (half-open)",
        if finished { "succeeded" } else { "failed" }
    );
    let mut closed = false;
    for _ in 0..10 {
        let succeeded = pay(&mut client, 2).await?;
        let state = breaker(&mut hub)
            .await?
            .map(|b| b.state)
            .unwrap_or_default();
        println!("  2 trial payments: {succeeded} succeeded; breaker alpha: {state}");
        if state == "closed" {
            closed = true;
            break;
        }
    }
    println!("  see `paygrid health` and `paygrid list --label trigger=breaker_opened`");
    Ok(succeeded == 6 && finished && closed)
}

/// Replaces a gateway simulator's injected faults (`PUT /v1/admin/faults`).
async fn set_faults(base: &str, body: &'static str) -> anyhow::Result<()> {
    let security = crate::transport::get().operator_http()?;
    let url = format!("{base}/v1/admin/faults");
    let (status, answer) =
        crate::transport::http_request(&security, http::Method::PUT, &url, Some(body.into()))
            .await?;
    anyhow::ensure!(status == 200, "faults not set: {status} {answer}");
    Ok(())
}
