//! The web console in a real browser: headless Chromium (Debian's `chromium`, installed
//! by `.ci/run`) driven by Playwright for Python (`tests/clients/console_check.py`) signs
//! in with an operator's token, follows a running payment's graph to succeeded, pauses
//! and resumes another while its gateway call is in flight, and retries a payment that
//! failed while its gateway was down. The operations reach the control unit as the
//! token's person: the audit log says so.

#![allow(clippy::unwrap_used)]

mod support;

use paygrid_proto::v1 as pb;
use support::*;

fn chromium_present() -> bool {
    let names = ["chromium", "chromium-browser", "google-chrome"];
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| names.iter().any(|n| dir.join(n).is_file()))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_pauses_resumes_and_retries_payments_in_chromium() {
    let Some(python) = python_with("playwright.sync_api") else {
        return;
    };
    if !chromium_present() {
        assert!(
            std::env::var_os("PAYGRID_REQUIRE_CLIENTS").is_none(),
            "no chromium on the PATH: run .ci/run (apt-get install chromium)"
        );
        eprintln!("skipped: no chromium on the PATH");
        return;
    }
    let fleet = HttpFleet::start("console");
    let mut workflows = fleet.register_card_payment().await;
    // A payment that fails while the gateway is down for all its attempts.
    let failed = payment_failed_at_gateway(&mut workflows, &fleet.gateway.url)
        .await
        .workflow_id;
    // The gateway is back, answering in 2 s as slow real ones do: payments stay in
    // flight long enough to be watched and paused.
    http(
        &fleet.gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"latency_ms": 2000}"#),
    );
    let mut running = Vec::new();
    for token in ["tok_live", "tok_pause"] {
        running.push(
            submit(
                &mut workflows,
                &spec("card-payment"),
                card(token),
                pb::Priority::Unspecified,
            )
            .await,
        );
    }
    let shots = std::env::var("PAYGRID_CONSOLE_SCREENSHOTS").unwrap_or_default();
    let base = format!("https://{}", fleet.http);
    let mut args = vec![base.as_str(), &running[0], &running[1], &failed];
    if !shots.is_empty() {
        args.push(&shots);
    }
    let seen = run_client_script(&python, "console_check.py", &args);
    assert_eq!(seen["resumed"], "succeeded", "{seen}");
    assert_eq!(seen["retried"], "succeeded", "{seen}");
    for id in [&running[0], &running[1], &failed] {
        let workflow = get(&mut workflows, id).await;
        assert_eq!(
            workflow.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{id}"
        );
    }
    // The console's operations went as the person whose token it holds.
    let audit = workflows
        .list_audit(pb::ListAuditRequest {
            actor: "console-check".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    for wanted in [
        ("pause", running[1].as_str()),
        ("resume", running[1].as_str()),
        ("retry", failed.as_str()),
    ] {
        assert!(actions.contains(&wanted), "{wanted:?} not in {actions:?}");
    }
}
