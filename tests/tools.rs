//! Tools (MCP-style) in the AgentHub, against the real parts: `ListTools` shows every skill
//! with its schemas and effect; `CallTool` runs one skill once, validated, idempotent by
//! key, and durable across a control-unit restart.

#![allow(clippy::unwrap_used)]

mod support;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use serde_json::{Value, json};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

fn call(tool: &str, arguments: Value, key: &str, timeout_ms: u32) -> pb::CallToolRequest {
    pb::CallToolRequest {
        tool: tool.into(),
        arguments_json: arguments.to_string(),
        idempotency_key: key.into(),
        timeout_ms,
        ..Default::default()
    }
}

async fn hub(fleet: &Fleet) -> AgentHubClient<Channel> {
    fleet.agents().await
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_are_listed_and_called_once_durably() {
    let mut fleet = Fleet::start(&[], 1);
    fleet.add_exec("sleeper", &["--agents", "sleep", "--sleep-ms", "1"]);
    fleet
        .wait_for_skills(&["gateway.authorize", "risk.score", "bench.sleep"])
        .await;
    let mut client = hub(&fleet).await;

    // Every skill is a tool, with its schemas, its effect and the agents offering it.
    let tools = client
        .list_tools(pb::ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools;
    let tool = |name: &str| tools.iter().find(|t| t.name == name).unwrap().clone();
    let capture = tool("gateway.capture");
    assert_eq!(capture.effect, pb::SkillEffect::MovesMoney as i32);
    assert_eq!(capture.agent_ids.len(), 1);
    let schema: Value = serde_json::from_str(&capture.input_schema_json).unwrap();
    assert_eq!(schema["required"], json!(["authorization_id"]));
    assert_eq!(tool("risk.score").effect, pb::SkillEffect::ReadOnly as i32);
    assert_eq!(tool("ledger.post").effect, pb::SkillEffect::State as i32);

    // A read-only call.
    let scored = client
        .call_tool(call(
            "risk.score",
            json!({"amount_minor": 1250, "currency": "EUR", "card_token": "tok_visa"}),
            "",
            30_000,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(scored.succeeded, "{scored:?}");
    let output: Value = serde_json::from_str(&scored.output_json).unwrap();
    assert!(output["decision"].is_string(), "{output}");

    // Refusals name what is wrong, before anything runs.
    let refused = |tool: &str, arguments: Value, key: &str| {
        let mut client = client.clone();
        let request = call(tool, arguments, key, 30_000);
        async move { client.call_tool(request).await.unwrap_err() }
    };
    let bad = refused(
        "risk.score",
        json!({"amount_minor": "lots", "card_token": "tok_visa"}),
        "",
    )
    .await;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .contains("arguments.amount_minor: must be integer"),
        "{bad:?}"
    );
    let missing = refused("risk.score", json!({"amount_minor": 5}), "").await;
    assert!(
        missing
            .message()
            .contains("arguments.card_token: is required"),
        "{missing:?}"
    );
    let keyless = refused(
        "gateway.authorize",
        json!({"amount_minor": 900, "currency": "EUR", "card_token": "tok_visa"}),
        "",
    )
    .await;
    assert_eq!(keyless.code(), Code::InvalidArgument);
    assert!(
        keyless.message().contains("idempotency_key is required"),
        "{keyless:?}"
    );
    let unknown = refused("nobody.offers", json!({}), "").await;
    assert_eq!(unknown.code(), Code::NotFound);

    // A money-moving call with a key happens once, however often it is asked for.
    let authorize = call(
        "gateway.authorize",
        json!({"amount_minor": 900, "currency": "EUR", "card_token": "tok_visa"}),
        "order-1",
        30_000,
    );
    let first = client
        .call_tool(authorize.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.succeeded, "{first:?}");
    let again = client.call_tool(authorize).await.unwrap().into_inner();
    assert_eq!(again.call_id, first.call_id);
    assert_eq!(again.output_json, first.output_json);
    assert_eq!(gateway_stats(&fleet.gateway)["authorizations"], 1);
    // The call is a workflow like any other: listed with its tool label.
    let mut workflows = fleet.workflows().await;
    let call_view = get(&mut workflows, &first.call_id).await;
    assert_eq!(call_view.labels["paygrid.tool"], "gateway.authorize");

    // A call outliving its deadline goes on; across a control-unit restart, the same key
    // finds it and gets its answer.
    let slow = call("bench.sleep", json!({"sleep_ms": 3000}), "slow-1", 200);
    let late = client.call_tool(slow.clone()).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    fleet.control.restart();
    let mut client = hub(&fleet).await;
    fleet.wait_for_skills(&["bench.sleep"]).await;
    let mut slow = slow;
    slow.timeout_ms = 30_000;
    let done = client.call_tool(slow).await.unwrap().into_inner();
    assert!(done.succeeded, "{done:?}");
    assert!(
        late.message().contains(&done.call_id),
        "the deadline named the call: {late:?} / {done:?}"
    );
}
