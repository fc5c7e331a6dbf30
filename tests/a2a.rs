//! A2A v1.0, tested with a client nobody here wrote: the A2A project's Python SDK
//! (`a2a-sdk[grpc]` >= 1.3, installed by `.ci/run`), which finds the gRPC interface through
//! the agent card at `/.well-known/agent-card.json`, starts a card payment, follows it with
//! `SubscribeToTask` to COMPLETED and cancels another task. The script is
//! `tests/clients/a2a_check.py`.

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
    let script = format!("{}/tests/clients/a2a_check.py", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run the A2A client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "A2A client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_a2a_sdk_drives_paygrid_over_grpc_from_its_agent_card() {
    let Some(python) = python_with("a2a.client") else {
        return;
    };
    let dir = TempDir::new("a2a");
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
    // The client starts card-payment@2 by reference: register the spec first.
    let mut workflows = Fleet::client(&control.url).await;
    let warm = submit(
        &mut workflows,
        &spec("card-payment"),
        card("tok_visa"),
        paygrid_proto::v1::Priority::Unspecified,
    )
    .await;
    wait_terminal(&mut workflows, &warm).await;
    let card = http_get_json(&http, "/.well-known/agent-card.json");
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "GRPC");
    assert_eq!(card["supportedInterfaces"][0]["url"], control.url.as_str());
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        skills.contains(&"card-payment@2") && skills.contains(&"risk.score"),
        "{skills:?}"
    );

    let seen = run_client(&python, &[&format!("http://{http}")]);
    assert_eq!(
        seen["states"],
        serde_json::json!(["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]),
        "{seen}"
    );
    let payment = get(&mut workflows, seen["task_id"].as_str().unwrap()).await;
    assert_eq!(
        payment.status,
        paygrid_proto::v1::WorkflowStatus::Succeeded as i32
    );
    let cancelled = get(&mut workflows, seen["cancelled"].as_str().unwrap()).await;
    assert_eq!(
        cancelled.status,
        paygrid_proto::v1::WorkflowStatus::Cancelled as i32
    );
}

/// `GET PATH` on an HTTP listener, as JSON.
fn http_get_json(addr: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}
