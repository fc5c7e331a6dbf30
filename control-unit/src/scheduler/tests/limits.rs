//! Limits in the core: a key limited to 2 concurrent tasks never has 3 running, and its
//! neighbours are not held back; a rate limit spaces dispatches; a routed task overflows
//! to the dearer gateway only when the cheap one is at its limit, a pinned one waits
//! with the reason; a lost agent gives its places back.

use serde_json::json;

use super::*;
use crate::scheduler::limits::LimitRules;

const CHARGE: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: charge\nversion: 1\ninputs:\n  merchant: { type: string }\ntasks:\n  - id: charge\n    skill: charge\n";
const ROUTED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: routed\nversion: 1\ntasks:\n  - id: authorize\n    skill: gateway.authorize\n    route: { policy: cheapest-healthy, fallback: true }\n";
const PINNED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: pinned\nversion: 1\ntasks:\n  - id: capture\n    skill: gateway.authorize\n    route: { labels: { gateway: alpha } }\n";

fn with_limits(text: &str) -> Sim {
    Sim::with_config(SchedulerConfig {
        limits: LimitRules::parse(text).expect("limits"),
        ..SchedulerConfig::default()
    })
}

fn running_for(sim: &Sim, merchant: &str) -> usize {
    sim.inflight
        .iter()
        .filter(|(_, a)| {
            sim.core
                .workflow(a.slot.workflow)
                .is_some_and(|w| w.input["merchant"] == merchant)
        })
        .count()
}

#[test]
fn a_key_limited_to_two_never_has_three_running_and_others_go_on() {
    let mut sim = with_limits(
        "concurrency:\n  - { name: per-merchant, skill: charge, key: \"{{ inputs.merchant }}\", max: 2 }\n",
    );
    sim.join("worker", &["charge"], 16, &[]);
    let charge = spec(CHARGE);
    let big: Vec<_> = (0..6)
        .map(|_| sim.submit(&charge, Priority::Normal, json!({"merchant": "big"})))
        .collect();
    let small = sim.submit(&charge, Priority::Normal, json!({"merchant": "small"}));
    assert_eq!(running_for(&sim, "big"), 2);
    assert_eq!(
        running_for(&sim, "small"),
        1,
        "another key is not held back"
    );
    let reason = sim.core.waiting_reason(Slot {
        workflow: big[5],
        task: 0,
        compensation: false,
    });
    assert_eq!(
        reason,
        "waiting: concurrency limit per-merchant [big] (2 of 2 running)"
    );
    let mut most = 0;
    while !sim.inflight.is_empty() {
        most = most.max(running_for(&sim, "big"));
        sim.succeed(0);
    }
    assert_eq!(most, 2, "never 3 running for one key");
    for id in big.iter().chain([&small]) {
        assert_eq!(sim.status(*id), WorkflowStatus::Succeeded);
    }
}

#[test]
fn a_rate_limit_spaces_the_dispatches() {
    let mut sim = with_limits("rate:\n  - { gateway: alpha, per_second: 10, burst: 2 }\n");
    sim.join(
        "gw-alpha",
        &["gateway.authorize"],
        64,
        &[("gateway", "alpha"), ("cost_bps", "25")],
    );
    let pinned = spec(PINNED);
    let ids: Vec<_> = (0..30)
        .map(|_| sim.submit(&pinned, Priority::Normal, json!({})))
        .collect();
    assert_eq!(sim.inflight.len(), 2, "the burst goes at once");
    let reason = sim.core.waiting_reason(Slot {
        workflow: ids[29],
        task: 0,
        compensation: false,
    });
    assert_eq!(reason, "waiting: rate limit gateway=alpha 10/s");
    let start = sim.now;
    for _ in 0..10_000 {
        if ids.iter().all(|id| sim.status(*id).is_terminal()) {
            break;
        }
        while !sim.inflight.is_empty() {
            sim.succeed(0);
        }
        if let Some(at) = sim.core.next_deadline() {
            sim.advance(at.saturating_sub(sim.now).max(1));
        }
    }
    let times: Vec<u64> = sim.dispatch_log.iter().map(|(_, a)| a.deadline).collect();
    assert_eq!(times.len(), 30);
    // 2 at once, then one per 100 ms: 28 more take 2.8 s.
    assert_eq!(times[29] - times[0], 2_800, "{times:?}");
    assert!(sim.now >= start + 2_800);
    for window in times.windows(3) {
        assert!(window[2] - window[0] >= 100, "{times:?}");
    }
}

#[test]
fn routed_work_overflows_only_at_the_cheap_gateways_limit_and_pinned_work_waits() {
    let mut sim = with_limits("concurrency:\n  - { gateway: alpha, max: 3 }\n");
    for (name, gateway, cost) in [("gw-alpha", "alpha", "25"), ("gw-beta", "beta", "30")] {
        sim.join(
            name,
            &["gateway.authorize"],
            64,
            &[("gateway", gateway), ("cost_bps", cost)],
        );
    }
    let routed = spec(ROUTED);
    for _ in 0..2 {
        sim.submit(&routed, Priority::Normal, json!({}));
    }
    let on = |sim: &Sim, name: &str| {
        sim.inflight
            .iter()
            .filter(|(a, _)| *a == agent(name))
            .count()
    };
    assert_eq!(
        (on(&sim, "gw-alpha"), on(&sim, "gw-beta")),
        (2, 0),
        "cheapest first"
    );
    for _ in 0..3 {
        sim.submit(&routed, Priority::Normal, json!({}));
    }
    assert_eq!(
        (on(&sim, "gw-alpha"), on(&sim, "gw-beta")),
        (3, 2),
        "past alpha's limit, the rest overflows to beta"
    );
    let pinned = sim.submit(&spec(PINNED), Priority::Normal, json!({}));
    assert_eq!(on(&sim, "gw-alpha"), 3, "a task pinned to alpha waits");
    let reason = sim.core.waiting_reason(Slot {
        workflow: pinned,
        task: 0,
        compensation: false,
    });
    assert_eq!(
        reason,
        "waiting: concurrency limit gateway=alpha (3 of 3 running)"
    );
    let first_alpha = sim
        .inflight
        .iter()
        .position(|(a, _)| *a == agent("gw-alpha"))
        .unwrap();
    sim.succeed(first_alpha);
    assert_eq!(
        on(&sim, "gw-alpha"),
        3,
        "the freed place went to the pinned task"
    );
    assert_eq!(sim.inflight.last().unwrap().1.slot.workflow, pinned);
}

#[test]
fn a_lost_agent_gives_its_places_back() {
    let mut sim = with_limits("concurrency:\n  - { skill: charge, max: 2 }\n");
    sim.join("worker", &["charge"], 8, &[]);
    let charge = spec(CHARGE);
    let ids: Vec<_> = (0..3)
        .map(|_| sim.submit(&charge, Priority::Normal, json!({"merchant": "m"})))
        .collect();
    assert_eq!(sim.inflight.len(), 2);
    sim.inflight.clear();
    sim.event(AgentEvent::Left {
        agent: agent("worker"),
    });
    sim.join("worker-2", &["charge"], 8, &[]);
    sim.run_to_quiet();
    for id in ids {
        assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    }
}

#[test]
fn a_bad_limits_file_is_refused_naming_what_is_wrong() {
    let zero = LimitRules::parse("concurrency:\n  - { name: none, max: 0 }\n").unwrap_err();
    assert_eq!(zero, "concurrency limit `none`: max must be at least 1");
    let rate = LimitRules::parse("rate:\n  - { gateway: alpha, per_second: 0 }\n").unwrap_err();
    assert_eq!(
        rate,
        "rate limit `gateway=alpha`: per_second must be above 0"
    );
    let unknown = LimitRules::parse("concurrency:\n  - { maximum: 3 }\n").unwrap_err();
    assert!(unknown.contains("maximum"), "{unknown}");
}

const TIMED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: timed\nversion: 1\ndefaults:\n  timeout: 5s\ntasks:\n  - id: capture\n    skill: gateway.authorize\n    route: { labels: { gateway: alpha } }\n";

/// Answers `answers` attempts, each `latency` ms after its dispatch, earliest first.
fn serve_with_latency(sim: &mut Sim, latency: u64, answers: usize) {
    for _ in 0..answers {
        let Some((index, due)) = sim
            .inflight
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (i, a.deadline - 5_000 + latency))
            .min_by_key(|(_, due)| *due)
        else {
            return;
        };
        if due > sim.now {
            sim.advance(due - sim.now);
        }
        let index = sim
            .inflight
            .iter()
            .position(|(_, a)| a.deadline - 5_000 + latency == due)
            .unwrap_or(index);
        sim.succeed(index);
    }
}

fn adaptive_limit(sim: &Sim) -> f64 {
    sim.core.limits().adaptive()[0].1.limit
}

#[test]
fn a_gateway_that_slows_down_gets_a_lower_adaptive_limit_and_no_timeouts_then_recovers() {
    let mut sim = with_limits(
        "adaptive:\n  - { gateway: alpha, initial: 10, min: 2, max: 40, latency_target_ms: 250 }\n",
    );
    sim.join(
        "gw-alpha",
        &["gateway.authorize"],
        64,
        &[("gateway", "alpha"), ("cost_bps", "25")],
    );
    let timed = spec(TIMED);
    let ids: Vec<_> = (0..3_000)
        .map(|_| sim.submit(&timed, Priority::Normal, json!({})))
        .collect();
    assert_eq!(sim.inflight.len(), 10, "the initial limit");
    // Fast answers (5 ms) while the limit is used: it grows to its ceiling.
    serve_with_latency(&mut sim, 5, 300);
    assert_eq!(adaptive_limit(&sim), 40.0);
    assert_eq!(sim.inflight.len(), 40);
    // The gateway slows to 500 ms: the limit comes down instead of piling up work.
    serve_with_latency(&mut sim, 500, 400);
    let slow = adaptive_limit(&sim);
    assert!(slow <= 10.0, "the limit came down to {slow}");
    assert!(sim.inflight.len() <= 10, "{} in flight", sim.inflight.len());
    let reason = sim.core.waiting_reason(Slot {
        workflow: ids[2_999],
        task: 0,
        compensation: false,
    });
    assert!(
        reason.starts_with("waiting: adaptive limit gateway=alpha"),
        "{reason}"
    );
    // It recovers: fast answers raise it again.
    serve_with_latency(&mut sim, 5, 400);
    assert_eq!(adaptive_limit(&sim), 40.0);
    let timeouts = sim
        .records
        .iter()
        .filter(|r| {
            matches!(
                &r.change,
                Change::Task {
                    outcome: Some(AttemptOutcome::Timeout),
                    ..
                }
            )
        })
        .count();
    assert_eq!(timeouts, 0, "no attempt timed out");
}

#[test]
fn one_merchants_burst_does_not_hold_back_anothers_payment() {
    let fair = "fairness: { key: \"{{ inputs.merchant }}\" }\n";
    for (limits, fair_turns) in [(fair, true), ("", false)] {
        let mut sim = with_limits(limits);
        sim.join("worker", &["charge"], 1, &[]);
        let charge = spec(CHARGE);
        for _ in 0..200 {
            sim.submit(&charge, Priority::Normal, json!({"merchant": "big"}));
        }
        let small = sim.submit(&charge, Priority::Normal, json!({"merchant": "small"}));
        let mut served_before = 0;
        while sim.status(small) != WorkflowStatus::Succeeded {
            let index = sim.inflight.len() - 1;
            if sim.inflight[index].1.slot.workflow != small {
                served_before += 1;
            }
            sim.succeed(index);
        }
        if fair_turns {
            assert!(
                served_before <= 2,
                "with fairness the small merchant waits for at most the running task and one turn: {served_before}"
            );
        } else {
            assert_eq!(served_before, 200, "FIFO: behind the whole burst");
        }
    }
}

#[test]
fn a_key_over_its_share_is_refused_and_others_are_admitted() {
    let mut sim = with_limits("admission: { key: \"{{ inputs.merchant }}\", max_active: 3 }\n");
    sim.join("worker", &["charge"], 1, &[]);
    let charge = spec(CHARGE);
    let big: Vec<_> = (0..3)
        .map(|_| sim.submit(&charge, Priority::Normal, json!({"merchant": "big"})))
        .collect();
    let mut out = Vec::new();
    let refused = sim.core.submit(
        sim.now,
        NewWorkflow {
            id: WorkflowId(42),
            spec: charge.clone(),
            input: json!({"merchant": "big"}),
            priority: Priority::Normal,
            labels: BTreeMap::new(),
            idempotency_key: None,
            traceparent: String::new(),
            trace_parent_span: String::new(),
            tracestate: String::new(),
        },
        &mut out,
    );
    assert_eq!(
        refused,
        Err(SubmitError::KeyOverloaded {
            key: "big".into(),
            active: 3,
            limit: 3
        })
    );
    assert!(out.is_empty(), "nothing recorded for a refusal");
    assert_eq!(refused.unwrap_err().retry_after_ms(), Some(1_000));
    let small = sim.submit(&charge, Priority::Normal, json!({"merchant": "small"}));
    // One of big's ends: big is admitted again.
    while sim.status(big[0]) != WorkflowStatus::Succeeded {
        sim.succeed(0);
    }
    sim.submit(&charge, Priority::Normal, json!({"merchant": "big"}));
    sim.run_to_quiet();
    assert_eq!(sim.status(small), WorkflowStatus::Succeeded);
}

#[test]
fn critical_work_keeps_its_reserved_places() {
    let mut sim = with_limits(
        "concurrency:\n  - { name: charges, skill: charge, max: 4, reserve_critical: 1 }\n",
    );
    sim.join("worker", &["charge"], 16, &[]);
    let charge = spec(CHARGE);
    let normal: Vec<_> = (0..6)
        .map(|_| sim.submit(&charge, Priority::Normal, json!({"merchant": "m"})))
        .collect();
    assert_eq!(
        sim.inflight.len(),
        3,
        "normal work stops short of the reserved place"
    );
    let reason = sim.core.waiting_reason(Slot {
        workflow: normal[5],
        task: 0,
        compensation: false,
    });
    assert_eq!(
        reason,
        "waiting: concurrency limit charges (3 of 4 running; 1 kept for critical work)"
    );
    let critical = sim.submit(&charge, Priority::Critical, json!({"merchant": "m"}));
    assert_eq!(
        sim.inflight.len(),
        4,
        "critical work takes the reserved place"
    );
    assert_eq!(sim.inflight[3].1.slot.workflow, critical);
    let second = sim.submit(&charge, Priority::Critical, json!({"merchant": "m"}));
    assert_eq!(sim.inflight.len(), 4, "and no more than max");
    sim.run_to_quiet();
    for id in normal.iter().chain([&critical, &second]) {
        assert_eq!(sim.status(*id), WorkflowStatus::Succeeded);
    }
    let refused =
        LimitRules::parse("concurrency:\n  - { name: all, max: 2, reserve_critical: 2 }\n")
            .unwrap_err();
    assert_eq!(
        refused,
        "concurrency limit `all`: reserve_critical (2) must be below max (2)"
    );
}
