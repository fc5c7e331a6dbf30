//! Limits with real processes: a rate limit on a gateway holds over a run, and a key
//! limited to 2 concurrent captures never has 3 running, measured from the attempts'
//! own start and end times as the control unit recorded them.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use paygrid_proto::v1 as pb;
use serde_json::json;
use support::*;

const PAYMENTS: usize = 40;
const RATE: f64 = 20.0;

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_rate_and_a_merchant_concurrency_limit_hold_over_a_run() {
    let dir = TempDir::new("limits");
    let limits = dir.0.join("limits.yaml");
    std::fs::write(
        &limits,
        format!(
            "rate:\n  - {{ skill: gateway.authorize, gateway: alpha, per_second: {RATE}, burst: 1 }}\nconcurrency:\n  - {{ name: captures-per-merchant, skill: gateway.capture, key: \"{{{{ inputs.merchant }}}}\", max: 2 }}\n"
        ),
    )
    .unwrap();
    let gateway = Part::start(&["gateway-sim", "--listen", "127.0.0.1:0", "--name", "alpha"]);
    // Captures take 500 ms: one merchant has one every 100 ms, so 5 would overlap without the limit.
    http(
        &gateway.url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"capture_latency_ms": 500}"#),
    );
    let limits_arg = limits.display().to_string();
    let control = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--limits",
        &limits_arg,
    ]);
    let gateway_arg = format!("alpha={}@25", gateway.url);
    let _exec = Part::start(&[
        "--control",
        &control.url,
        "exec",
        "--name",
        "exec-limits",
        "--gateway",
        &gateway_arg,
    ]);
    let mut client = Fleet::client(&control.url).await;
    let card = spec("card-payment");
    let mut ids = Vec::new();
    for i in 0..PAYMENTS {
        let merchant = if i % 2 == 0 { "big" } else { "small" };
        let input = json!({"amount_minor": 1000 + i, "currency": "EUR", "card_token": format!("tok_visa_{i}"), "merchant": merchant});
        ids.push(submit(&mut client, &card, input, pb::Priority::Unspecified).await);
    }
    let mut authorizations = Vec::new();
    let mut captures: Vec<(String, i64, i64)> = Vec::new();
    for id in &ids {
        let done = tokio::time::timeout(Duration::from_secs(60), wait_terminal(&mut client, id))
            .await
            .unwrap();
        assert_eq!(
            done.status,
            pb::WorkflowStatus::Succeeded as i32,
            "{done:#?}"
        );
        let merchant =
            serde_json::from_str::<serde_json::Value>(&done.input_json).unwrap()["merchant"]
                .as_str()
                .unwrap()
                .to_owned();
        for attempt in &task(&done, "authorize").history {
            authorizations.push(attempt.started_at_ms);
        }
        for attempt in &task(&done, "capture").history {
            captures.push((
                merchant.clone(),
                attempt.started_at_ms,
                attempt.finished_at_ms,
            ));
        }
    }

    // The rate: one authorization per 50 ms, so no 1 s window holds more than 20 (+1 for
    // the window's edge), and the run takes at least (40 - 1) / 20 s.
    authorizations.sort_unstable();
    assert_eq!(authorizations.len(), PAYMENTS);
    let span = authorizations[PAYMENTS - 1] - authorizations[0];
    assert!(span >= 1_900, "40 authorizations at 20/s took {span} ms");
    for (i, start) in authorizations.iter().enumerate() {
        let in_window = authorizations[i..]
            .iter()
            .take_while(|t| **t < start + 1_000)
            .count();
        assert!(
            in_window <= RATE as usize + 1,
            "{in_window} authorizations in the second from {start}: {authorizations:?}"
        );
    }
    let gaps: Vec<i64> = authorizations.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 45),
        "dispatches at most every 50 ms (5 ms of clock tolerance): {gaps:?}"
    );

    // The key: at no moment 3 captures of one merchant were running.
    for merchant in ["big", "small"] {
        let mine: Vec<&(String, i64, i64)> =
            captures.iter().filter(|(m, _, _)| m == merchant).collect();
        for (_, start, _) in &mine {
            let overlapping = mine
                .iter()
                .filter(|(_, s, f)| s <= start && start < f)
                .count();
            assert!(
                overlapping <= 2,
                "{overlapping} captures of {merchant} running at {start}: {mine:?}"
            );
        }
    }
}
