//! MCP, tested with a client nobody here wrote: the official Python SDK (`mcp` >= 2.3,
//! installed by `.ci/run` into a virtual environment and named by `PAYGRID_PYTHON`),
//! over streamable HTTP at the control unit's `/mcp` and over stdio (`paygrid mcp`).
//! The client script is `tests/clients/mcp_check.py`.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

fn run_client(python: &str, args: &[&str]) -> serde_json::Value {
    run_client_script(python, "mcp_check.py", args)
}

#[tokio::test(flavor = "multi_thread")]
async fn official_mcp_clients_drive_paygrid_over_http_and_stdio() {
    let Some(python) = python_with("mcp") else {
        return;
    };
    let fleet = HttpFleet::start("mcp");
    // The client submits card-payment@3 by reference: register the spec first.
    fleet.register_card_payment().await;
    let (control, http) = (&fleet.control, &fleet.http);
    let mut agents =
        paygrid_proto::v1::agent_hub_client::AgentHubClient::new(channel(&control.url).await);
    let tools = agents
        .list_tools(paygrid_proto::v1::ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools;
    assert!(tools.iter().any(|t| t.name == "gateway.capture"));

    let over_http = run_client(&python, &[&format!("https://{http}/mcp")]);
    assert_eq!(over_http["protocol"], "2026-07-28", "{over_http}");
    assert_eq!(over_http["tasks"][0], "risk");
    let over_stdio = run_client(&python, &["stdio", BIN, &control.url]);
    assert!(over_stdio["workflow_id"].is_string(), "{over_stdio}");
    assert_ne!(over_stdio["workflow_id"], over_http["workflow_id"]);
}
