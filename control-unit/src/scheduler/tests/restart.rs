//! Restart safety and settlement: deadlines across a restore, reclaimed attempts,
//! bounded poison tasks, unknown outcomes settled, refusals, compensation conditions.

use super::*;

/// A compensation with `when` runs only when it holds: once captured, the refund undoes
/// the payment and the void is skipped.
#[test]
fn conditional_compensation_is_skipped_when_false() {
    let text = "apiVersion: paygrid/v1\nkind: Workflow\nname: pay\nversion: 1\ntasks:\n  - id: authorize\n    skill: work\n    compensate: { skill: void, when: 'tasks.capture.status != \"succeeded\" && tasks.capture.status != \"compensated\"' }\n  - id: capture\n    skill: work\n    needs: [authorize]\n    compensate: { skill: refund }\n  - id: settle\n    skill: work\n    needs: [capture]\n    retry: { max_attempts: 1 }\n";
    let mut sim = Sim::new();
    sim.join("w", &["work", "void", "refund"], 4, &[]);
    let id = sim.submit(&spec(text), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    sim.succeed(0);
    sim.answer(
        0,
        Outcome::Permanent {
            error: "ledger down".into(),
        },
    );
    assert_eq!(sim.inflight.len(), 1);
    assert_eq!(&*sim.inflight[0].1.skill, "refund");
    sim.succeed(0);
    assert!(sim.inflight.is_empty(), "the void is skipped");
    let workflow = sim.core.workflow(id).unwrap();
    assert_eq!(workflow.status, WorkflowStatus::Compensated);
    let void = workflow.tasks[0].compensation.as_ref().unwrap();
    assert_eq!(void.status, TaskStatus::Skipped);
}

const PAY: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: pay\nversion: 1\ndefaults:\n  retry: { max_attempts: 2, initial: 100ms, max: 1s }\n  timeout: 5s\ntasks:\n  - id: authorize\n    skill: work\n    compensate: { skill: undo }\n  - id: capture\n    skill: work\n    needs: [authorize]\n";

fn timeouts(sim: &Sim, id: WorkflowId) -> Vec<AttemptRecord> {
    sim.core
        .workflow(id)
        .unwrap()
        .tasks
        .iter()
        .flat_map(|t| t.run.history.iter())
        .filter(|h| h.outcome == AttemptOutcome::Timeout)
        .cloned()
        .collect()
}

/// An attempt in flight when the control unit crashes keeps its real deadline: the
/// restored attempt gets its lease to be claimed and its late answer counts, instead of
/// timing out at once (the last snapshot predates the dispatch).
#[test]
fn a_restored_attempt_keeps_its_deadline_and_is_claimed() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    let running = sim.inflight[0].clone();
    sim.advance(300);
    sim.crash_and_restore();
    sim.advance(1);
    assert!(timeouts(&sim, id).is_empty(), "timed out at the restart");
    sim.event(AgentEvent::Heartbeat {
        agent: agent("w"),
        running: vec![(running.1.slot, running.1.attempt)],
    });
    sim.advance(4_000); // still before the 5 s deadline
    assert!(
        timeouts(&sim, id).is_empty(),
        "timed out before its deadline"
    );
    assert!(
        sim.inflight
            .iter()
            .filter(|(_, a)| a.task_id == "a")
            .count()
            == 1,
        "claimed, not dispatched again"
    );
    let index = sim.index_of("a");
    sim.succeed(index);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    assert_eq!(sim.core.workflow(id).unwrap().tasks[0].run.attempt, 1);
}

/// A restored attempt whose agent never claims it times out at its own deadline.
#[test]
fn an_unclaimed_restored_attempt_times_out_at_its_deadline_not_before() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(
        &spec(&CHAIN.replace("timeout: 5s", "timeout: 30s")),
        Priority::Normal,
        serde_json::json!({}),
    );
    sim.inflight.clear();
    sim.advance(100);
    sim.crash_and_restore();
    sim.advance(SchedulerConfig::default().lease_ttl.as_millis() as u64 + 1);
    let history = &sim.core.workflow(id).unwrap().tasks[0].run.history;
    assert_eq!(
        history[0].outcome,
        AttemptOutcome::LeaseExpired,
        "{history:?}"
    );
}

/// An agent that reconnects and reports a task given up for its lost session gets it
/// back: the task is not run a second time in parallel under the same key.
#[test]
fn a_reconnecting_agent_reclaims_its_task() {
    let mut sim = Sim::new();
    sim.join("one", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    let (_, first) = sim.inflight.remove(0);
    sim.event(AgentEvent::Left {
        agent: agent("one"),
    });
    sim.join("two", &["work"], 1, &[]);
    sim.join("one-again", &["work"], 0, &[]);
    sim.event(AgentEvent::Heartbeat {
        agent: agent("one-again"),
        running: vec![(first.slot, first.attempt)],
    });
    sim.advance(2_000); // past the backoff, before the 5 s deadline
    assert!(
        sim.inflight.is_empty(),
        "dispatched again while its agent still runs it: {:?}",
        sim.inflight
    );
    sim.event(AgentEvent::Result {
        agent: agent("one-again"),
        slot: first.slot,
        attempt: first.attempt,
        outcome: Outcome::Succeeded {
            output: "{}".into(),
        },
    });
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let a = &sim.core.workflow(id).unwrap().tasks[0].run;
    assert_eq!((a.attempt, a.history.len()), (1, 1), "{:?}", a.history);
}

/// A task whose input crashes every agent that takes it (a poison task) is bounded:
/// lost attempts count against max_attempts, then settlement lookups, then it fails as
/// `outcome unknown` instead of looping forever.
#[test]
fn a_poison_task_is_bounded() {
    let mut sim = Sim::new();
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    let mut dispatches = 0;
    for round in 0..100 {
        let name = format!("crashy-{round}");
        sim.join(&name, &["work"], 1, &[]);
        if sim.inflight.is_empty() {
            sim.event(AgentEvent::Left {
                agent: agent(&name),
            });
            match sim.core.next_deadline() {
                Some(at) => sim.advance(at.saturating_sub(sim.now).max(1)),
                None => break,
            }
            continue;
        }
        dispatches += 1;
        sim.inflight.clear();
        sim.event(AgentEvent::Left {
            agent: agent(&name),
        });
    }
    assert_eq!(sim.status(id), WorkflowStatus::Failed);
    let config = SchedulerConfig::default();
    assert_eq!(dispatches, 3 + config.settle_lookups_max);
    let a = &sim.core.workflow(id).unwrap().tasks[0].run;
    assert_eq!(a.effect_attempts(), 3);
    assert!(
        a.error.as_deref().unwrap().contains("outcome unknown"),
        "{:?}",
        a.error
    );
}

/// When the attempts run out and one of them may have taken effect, the task is
/// settled by a lookup (same key) before the workflow may fail: a success found by the
/// lookup continues the workflow, and no task makes more attempts than allowed.
#[test]
fn an_unknown_outcome_is_settled_before_failing() {
    let mut sim = Sim::new();
    sim.join("w", &["work", "undo"], 2, &[]);
    let id = sim.submit(&spec(PAY), Priority::Normal, serde_json::json!({}));
    sim.answer(
        0,
        Outcome::Unknown {
            error: "gateway_timeout".into(),
        },
    );
    sim.advance(2_000);
    assert!(!sim.inflight[0].1.settle, "attempt 2 is an attempt");
    sim.answer(
        0,
        Outcome::Unknown {
            error: "500 after the effect".into(),
        },
    );
    assert_eq!(sim.status(id), WorkflowStatus::Running, "not failed");
    sim.advance(60_000);
    let lookup = sim.inflight[0].1.clone();
    assert!(lookup.settle, "a lookup, not a third attempt");
    assert_eq!(lookup.idempotency_key, format!("{id}:authorize"));
    sim.succeed(0);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let a = &sim.core.workflow(id).unwrap().tasks[0].run;
    assert_eq!((a.effect_attempts(), a.lookups), (2, 1));
    assert!(a.history[2].lookup);
}

/// A lookup that finds nothing was done fails the task for good; attempts that failed
/// definitely (refused before the effect) fail without a lookup.
#[test]
fn a_definite_answer_fails_without_dangling_effects() {
    let mut sim = Sim::new();
    sim.join("w", &["work", "undo"], 2, &[]);
    let settled = sim.submit(&spec(PAY), Priority::Normal, serde_json::json!({}));
    for _ in 0..2 {
        sim.answer(
            0,
            Outcome::Unknown {
                error: "gateway_timeout".into(),
            },
        );
        sim.advance(60_000);
    }
    assert!(sim.inflight[0].1.settle);
    sim.answer(
        0,
        Outcome::Permanent {
            error: "not_taken".into(),
        },
    );
    assert_eq!(sim.status(settled), WorkflowStatus::Failed);

    let refused = sim.submit(&spec(PAY), Priority::Normal, serde_json::json!({}));
    for _ in 0..2 {
        sim.answer(
            0,
            Outcome::Retryable {
                error: "503 before the effect".into(),
            },
        );
        sim.advance(2_000);
    }
    assert!(sim.inflight.is_empty(), "no lookup after definite failures");
    assert_eq!(sim.status(refused), WorkflowStatus::Failed);
    let error = sim.core.workflow(refused).unwrap().error.clone().unwrap();
    assert!(error.contains("(after 2 attempts)"), "{error}");
}

/// An agent that refuses a task (no free slot) costs it no attempt and says nothing
/// about the agent's health: the task goes to another agent.
#[test]
fn a_refusal_is_not_an_attempt() {
    let text = CHAIN.replace("max_attempts: 3", "max_attempts: 1");
    let mut sim = Sim::new();
    sim.join("full", &["work"], 1, &[]);
    let id = sim.submit(&spec(&text), Priority::Normal, serde_json::json!({}));
    for _ in 0..5 {
        assert_eq!(sim.inflight[0].1.attempt, 1);
        sim.answer(0, Outcome::Refused);
    }
    let full = sim.core.agent(&agent("full")).unwrap();
    assert_eq!((full.consecutive_failures, full.unhealthy_until), (0, 0));
    assert_eq!(sim.inflight[0].1.attempt, 1, "still the first attempt");
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}

/// A compensation whose `when` cannot be evaluated is a compensation failure, visible
/// in the workflow's end, never a silent skip that would leave an effect in place.
#[test]
fn an_undecidable_compensation_is_a_failure() {
    let text = "apiVersion: paygrid/v1\nkind: Workflow\nname: pay\nversion: 1\ntasks:\n  - id: authorize\n    skill: work\n    compensate: { skill: void, when: 'tasks.authorize.output.missing == 1' }\n  - id: capture\n    skill: work\n    needs: [authorize]\n    retry: { max_attempts: 1 }\n";
    let mut sim = Sim::new();
    sim.join("w", &["work", "void"], 2, &[]);
    let id = sim.submit(&spec(text), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    sim.answer(
        0,
        Outcome::Permanent {
            error: "capture_declined".into(),
        },
    );
    sim.run_to_quiet();
    let workflow = sim.core.workflow(id).unwrap();
    assert_eq!(workflow.status, WorkflowStatus::Failed);
    let void = workflow.tasks[0].compensation.as_ref().unwrap();
    assert_eq!(void.status, TaskStatus::Failed);
    assert!(
        workflow
            .error
            .as_deref()
            .unwrap()
            .contains("cannot be evaluated"),
        "{:?}",
        workflow.error
    );
}
