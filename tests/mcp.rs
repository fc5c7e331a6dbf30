//! MCP, tested with a client nobody here wrote: the official Python SDK (`mcp` >= 2.3,
//! installed by `.ci/run` into a virtual environment and named by `PAYGRID_PYTHON`),
//! over streamable HTTP at the control unit's `/mcp` and over stdio (`paygrid mcp`).
//! The client script is `tests/clients/mcp_check.py`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::*;

/// The Python that has the `mcp` package, or `None` (the test says so and skips) unless
/// `PAYGRID_REQUIRE_CLIENTS` is set, as CI does: then a missing client fails.
fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("PAYGRID_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("PAYGRID_REQUIRE_CLIENTS").is_none(),
        "`{python}` cannot import `{module}`: run .ci/run, or set PAYGRID_PYTHON"
    );
    eprintln!("skipped: `{python}` cannot import `{module}` (run .ci/run to install it)");
    None
}

fn run_client(python: &str, args: &[&str]) -> serde_json::Value {
    let script = format!("{}/tests/clients/mcp_check.py", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "MCP client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn official_mcp_clients_drive_paygrid_over_http_and_stdio() {
    let Some(python) = python_with("mcp") else {
        return;
    };
    let dir = TempDir::new("mcp");
    let gateway = Part::start(&[
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--data-dir",
        &dir.path("gateway"),
    ]);
    let http = free_addr();
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--http",
        &http,
    ]);
    let alpha = format!("alpha={}@25", gateway.url);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--gateway",
        &alpha,
        "--data-dir",
        &dir.path("exec"),
    ]);
    let mut agents =
        paygrid_proto::v1::agent_hub_client::AgentHubClient::new(channel(&control.url).await);
    // The client submits card-payment@2 by reference: register the spec first.
    let mut workflows = Fleet::client(&control.url).await;
    let warm = submit(
        &mut workflows,
        &spec("card-payment"),
        card("tok_visa"),
        paygrid_proto::v1::Priority::Unspecified,
    )
    .await;
    wait_terminal(&mut workflows, &warm).await;
    let tools = agents
        .list_tools(paygrid_proto::v1::ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools;
    assert!(tools.iter().any(|t| t.name == "gateway.capture"));

    let over_http = run_client(&python, &[&format!("http://{http}/mcp")]);
    assert_eq!(over_http["protocol"], "2026-07-28", "{over_http}");
    assert_eq!(over_http["tasks"][0], "risk");
    let over_stdio = run_client(&python, &["stdio", BIN, &control.url]);
    assert!(over_stdio["workflow_id"].is_string(), "{over_stdio}");
    assert_ne!(over_stdio["workflow_id"], over_http["workflow_id"]);
}
