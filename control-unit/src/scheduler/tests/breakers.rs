//! Circuit breakers in the core: an open breaker sends routed work to the fallback
//! gateway at once, work pinned to the gateway waits (with the reason) instead of
//! failing, and trial tasks close it again.

use serde_json::json;

use super::*;
use crate::scheduler::breaker::{BreakerConfig, BreakerState};

const ROUTED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: routed\nversion: 1\ndefaults:\n  retry: { max_attempts: 4, initial: 100ms, max: 1s }\n  timeout: 5s\ntasks:\n  - id: charge\n    skill: gateway.authorize\n    route: { policy: cheapest-healthy, fallback: true }\n";
const PINNED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: pinned\nversion: 1\ndefaults:\n  timeout: 5s\ntasks:\n  - id: capture\n    skill: gateway.capture\n    route: { labels: { gateway: alpha } }\n";

fn config() -> SchedulerConfig {
    SchedulerConfig {
        breaker: BreakerConfig {
            window: std::time::Duration::from_secs(10),
            min_requests: 4,
            error_rate: 0.5,
            open_for: std::time::Duration::from_secs(5),
            trials: 2,
            ..BreakerConfig::default()
        },
        ..SchedulerConfig::default()
    }
}

fn gateways(sim: &mut Sim, skills: &[&'static str]) {
    sim.join(
        "gw-alpha",
        skills,
        8,
        &[("gateway", "alpha"), ("cost_bps", "25")],
    );
    sim.join(
        "gw-beta",
        skills,
        8,
        &[("gateway", "beta"), ("cost_bps", "30")],
    );
}

/// Answers what is in flight (alpha as `alpha_fails` says, beta always well) and lets
/// time pass, until every workflow ended.
fn run(sim: &mut Sim, ids: &[WorkflowId], alpha_fails: bool) {
    for _ in 0..10_000 {
        if ids.iter().all(|id| sim.status(*id).is_terminal()) {
            return;
        }
        if sim.inflight.is_empty() {
            let at = sim.core.next_deadline().expect("something to wait for");
            sim.advance(at.saturating_sub(sim.now).max(1));
            continue;
        }
        sim.now += 50;
        if sim.inflight[0].0 == agent("gw-alpha") && alpha_fails {
            let error = "gateway_unavailable: 503".to_owned();
            sim.answer(0, Outcome::Retryable { error });
        } else {
            sim.succeed(0);
        }
    }
    panic!("workflows did not end");
}

fn states(sim: &Sim) -> Vec<(BreakerState, BreakerState)> {
    sim.breaker_log.iter().map(|t| (t.from, t.to)).collect()
}

#[test]
fn an_open_breaker_sends_work_to_the_fallback_gateway_then_trials_close_it() {
    let mut sim = Sim::with_config(config());
    gateways(&mut sim, &["gateway.authorize"]);
    let routed = spec(ROUTED);
    let ids: Vec<_> = (0..6)
        .map(|_| sim.submit(&routed, Priority::Normal, json!({})))
        .collect();
    run(&mut sim, &ids, true);
    for id in &ids {
        assert_eq!(
            sim.status(*id),
            WorkflowStatus::Succeeded,
            "no payment fails"
        );
    }
    assert_eq!(
        states(&sim),
        [(BreakerState::Closed, BreakerState::Open)],
        "{:?}",
        sim.breaker_log
    );
    let opened_at = sim.breaker_log[0].at;
    let to_alpha_while_open = sim
        .dispatch_log
        .iter()
        .filter(|(agent_id, a)| *agent_id == agent("gw-alpha") && a.deadline - 5_000 > opened_at)
        .count();
    assert_eq!(to_alpha_while_open, 0, "nothing goes to an open gateway");
    assert_eq!(
        sim.core.breakers().get("alpha").map(|b| b.state),
        Some(BreakerState::Open)
    );

    // The fault is gone; after the cool-down, two trials go to alpha (the cheaper), the
    // rest to beta, and two successes close the breaker.
    sim.advance(5_000);
    assert_eq!(
        states(&sim).last(),
        Some(&(BreakerState::Open, BreakerState::HalfOpen))
    );
    let before = sim.dispatch_log.len();
    let ids: Vec<_> = (0..4)
        .map(|_| sim.submit(&routed, Priority::Normal, json!({})))
        .collect();
    let trials = sim.dispatch_log[before..]
        .iter()
        .filter(|(agent_id, _)| *agent_id == agent("gw-alpha"))
        .count();
    assert_eq!(trials, 2, "half-open lets the configured trials through");
    run(&mut sim, &ids, false);
    assert_eq!(
        states(&sim),
        [
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
    for id in &ids {
        assert_eq!(sim.status(*id), WorkflowStatus::Succeeded);
    }
}

#[test]
fn work_pinned_to_an_open_gateway_waits_with_the_reason_and_does_not_fail() {
    let mut sim = Sim::with_config(config());
    gateways(&mut sim, &["gateway.capture"]);
    // Telemetry reports alpha failing: its breaker opens without a task of ours.
    let mut out = Vec::new();
    sim.core
        .gateway_report(sim.now, "alpha", 30_000, 20, 15, &mut out);
    sim.apply(out);
    assert_eq!(states(&sim), [(BreakerState::Closed, BreakerState::Open)]);
    assert!(
        sim.breaker_log[0].reason.starts_with("telemetry: 15 of 20"),
        "{}",
        sim.breaker_log[0].reason
    );
    let id = sim.submit(&spec(PINNED), Priority::Normal, json!({}));
    assert!(
        sim.inflight.is_empty(),
        "a capture on alpha is not sent to beta"
    );
    let reason = sim.core.waiting_reason(Slot {
        workflow: id,
        task: 0,
        compensation: false,
    });
    assert!(
        reason.starts_with("waiting: circuit breaker open for gateway alpha"),
        "{reason}"
    );
    // It waits past its own timeout (5 s): waiting is not an attempt.
    sim.advance(4_999);
    assert_eq!(sim.status(id), WorkflowStatus::Running);
    sim.advance(1);
    assert_eq!(sim.inflight.len(), 1, "half-open: the trial goes");
    assert_eq!(sim.inflight[0].0, agent("gw-alpha"));
    sim.succeed(0);
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}

/// The execution unit running a half-open breaker's trials is killed: the trials end
/// without a verdict and free their places, so the waiting work goes to the gateway's
/// agent on the restarted unit instead of waiting forever on answers that cannot come.
#[test]
fn trials_lost_with_their_agent_free_their_places() {
    let mut sim = Sim::with_config(config());
    sim.join(
        "gw-alpha",
        &["gateway.capture"],
        8,
        &[("gateway", "alpha"), ("cost_bps", "25")],
    );
    let mut out = Vec::new();
    sim.core
        .gateway_report(sim.now, "alpha", 30_000, 20, 15, &mut out);
    sim.apply(out);
    let pinned = spec(PINNED);
    let ids: Vec<_> = (0..4)
        .map(|_| sim.submit(&pinned, Priority::Normal, json!({})))
        .collect();
    sim.advance(5_000);
    assert_eq!(sim.inflight.len(), 2, "half-open: two trials");
    // The unit is killed with both trials in flight.
    sim.inflight.clear();
    sim.event(AgentEvent::Left {
        agent: agent("gw-alpha"),
    });
    sim.join(
        "gw-alpha-2",
        &["gateway.capture"],
        8,
        &[("gateway", "alpha"), ("cost_bps", "25")],
    );
    assert_eq!(
        sim.core.breakers().get("alpha").map(|b| b.state),
        Some(BreakerState::HalfOpen)
    );
    assert_eq!(
        sim.inflight.len(),
        2,
        "the restarted agent gets two new trials"
    );
    run(&mut sim, &ids, false);
    for id in &ids {
        assert_eq!(sim.status(*id), WorkflowStatus::Succeeded);
    }
    assert_eq!(
        states(&sim).last(),
        Some(&(BreakerState::HalfOpen, BreakerState::Closed))
    );
}
