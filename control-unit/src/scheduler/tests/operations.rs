//! Operators' operations: pause and resume, retry of a failed workflow, re-drive from a
//! checkpoint; each kept across a restart, each refused where it makes no sense.

use super::*;
use crate::scheduler::operations::{Filter, OperationError};

const CHAIN2: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: chain\nversion: 1\ndefaults:\n  retry: { max_attempts: 1 }\ntasks:\n  - id: a\n    skill: work\n  - id: b\n    skill: work\n    needs: [a]\n";

const WITH_CHECKPOINT: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: staged\nversion: 1\ntasks:\n  - id: a\n    skill: work\n  - id: cp\n    checkpoint: {}\n    needs: [a]\n  - id: b\n    skill: work\n    needs: [cp]\n";

fn operate(
    sim: &mut Sim,
    op: impl FnOnce(&mut Scheduler, u64, &mut Vec<Command>) -> Result<Vec<String>, OperationError>,
) -> Result<Vec<String>, OperationError> {
    let mut out = Vec::new();
    let result = op(&mut sim.core, sim.now, &mut out);
    sim.apply(out);
    result
}

#[test]
fn a_paused_workflow_dispatches_nothing_until_resumed_even_across_a_restart() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 2, &[]);
    let id = sim.submit(&spec(CHAIN2), Priority::Normal, serde_json::json!({}));
    assert_eq!(sim.inflight.len(), 1, "a runs");
    operate(&mut sim, |core, now, out| {
        core.pause(now, id, "gateway maintenance", out)
            .map(|_| Vec::new())
    })
    .unwrap();
    // The running task finishes; the next one waits.
    sim.succeed(0);
    assert!(sim.inflight.is_empty(), "b was dispatched while paused");
    assert_eq!(sim.status(id), WorkflowStatus::Running);
    let again = operate(&mut sim, |core, now, out| {
        core.pause(now, id, "twice", out).map(|_| Vec::new())
    });
    assert!(
        matches!(&again, Err(OperationError::Refused(m)) if m.contains("paused already")),
        "{again:?}"
    );
    // A restart keeps the pause.
    sim.crash_and_restore();
    sim.advance(10);
    assert!(
        sim.inflight.is_empty(),
        "dispatched after a restart while paused"
    );
    assert_eq!(
        sim.core.workflow(id).unwrap().paused.as_deref(),
        Some("gateway maintenance")
    );
    operate(&mut sim, |core, now, out| {
        core.resume(now, id, out).map(|_| Vec::new())
    })
    .unwrap();
    assert_eq!(sim.inflight.len(), 1, "b goes once resumed");
    sim.succeed(0);
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let resumed_twice = operate(&mut sim, |core, now, out| {
        core.resume(now, id, out).map(|_| Vec::new())
    });
    assert!(
        matches!(&resumed_twice, Err(OperationError::Refused(m)) if m.contains("not paused")),
        "{resumed_twice:?}"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

/// A workflow that failed with nothing undone runs again from its failed task; a task
/// whose attempts all failed definitely gets a new key generation, one that succeeded
/// never runs again.
#[test]
fn a_failed_workflow_is_retried_from_its_failed_task_with_a_new_key() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 2, &[]);
    let id = sim.submit(&spec(CHAIN2), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    let first_key = sim.inflight[0].1.idempotency_key.clone();
    sim.answer(
        0,
        Outcome::Permanent {
            error: "card declined".into(),
        },
    );
    assert_eq!(sim.status(id), WorkflowStatus::Failed);
    let refused = operate(&mut sim, |core, now, out| {
        core.retry(now, id, Some("a"), out)
    });
    assert!(
        matches!(&refused, Err(OperationError::Refused(m)) if m.contains("only a failed task")),
        "{refused:?}"
    );
    let unknown = operate(&mut sim, |core, now, out| {
        core.retry(now, id, Some("zz"), out)
    });
    assert!(
        matches!(unknown, Err(OperationError::Invalid(_))),
        "{unknown:?}"
    );
    let tasks = operate(&mut sim, |core, now, out| {
        core.retry(now, id, Some("b"), out)
    })
    .unwrap();
    assert_eq!(tasks, ["b"]);
    assert_eq!(sim.status(id), WorkflowStatus::Running);
    assert_eq!(sim.inflight.len(), 1);
    let retried = &sim.inflight[0].1;
    assert_eq!(retried.task_id, "b");
    assert_eq!(retried.attempt, 2, "attempt numbers go on");
    assert_eq!(retried.idempotency_key, format!("{first_key}:r1"));
    // Kept across a restart: the same attempt is claimed, nothing runs twice.
    sim.crash_and_restore();
    sim.succeed(0);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let runs_of_a = sim
        .dispatch_log
        .iter()
        .filter(|(_, a)| a.task_id == "a")
        .count();
    assert_eq!(runs_of_a, 1, "a succeeded before: it is not run again");
    let again = operate(&mut sim, |core, now, out| core.retry(now, id, None, out));
    assert!(
        matches!(&again, Err(OperationError::Refused(m)) if m.contains("is succeeded")),
        "{again:?}"
    );
}

/// Once a compensation ran, effects were undone: retry is refused.
#[test]
fn a_compensated_workflow_is_not_retried() {
    const UNDONE: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: pay\nversion: 1\ndefaults:\n  retry: { max_attempts: 1 }\ntasks:\n  - id: authorize\n    skill: work\n    compensate: { skill: undo }\n  - id: capture\n    skill: work\n    needs: [authorize]\n";
    let mut sim = Sim::new();
    sim.join("w", &["work", "undo"], 2, &[]);
    let id = sim.submit(&spec(UNDONE), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    sim.answer(
        0,
        Outcome::Permanent {
            error: "declined".into(),
        },
    );
    sim.succeed(0); // the undo
    assert_eq!(sim.status(id), WorkflowStatus::Compensated);
    let refused = operate(&mut sim, |core, now, out| core.retry(now, id, None, out));
    assert!(
        matches!(&refused, Err(OperationError::Refused(m)) if m.contains("is compensated")),
        "{refused:?}"
    );
}

/// Re-driving from a checkpoint runs it and what follows again under the same keys (the
/// gateway answers effects already taken), and is kept across a restart.
#[test]
fn a_workflow_is_redriven_from_a_checkpoint_under_the_same_keys() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 2, &[]);
    let id = sim.submit(
        &spec(WITH_CHECKPOINT),
        Priority::Normal,
        serde_json::json!({}),
    );
    sim.succeed(0);
    let key_of_b = sim.inflight[0].1.idempotency_key.clone();
    sim.succeed(0);
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let not_a_checkpoint = operate(&mut sim, |core, now, out| core.redrive(now, id, "a", out));
    assert!(
        matches!(&not_a_checkpoint, Err(OperationError::Invalid(m)) if m.contains("not a checkpoint")),
        "{not_a_checkpoint:?}"
    );
    let tasks = operate(&mut sim, |core, now, out| core.redrive(now, id, "cp", out)).unwrap();
    assert_eq!(tasks, ["cp", "b"]);
    assert_eq!(sim.inflight.len(), 1);
    assert_eq!(sim.inflight[0].1.task_id, "b");
    assert_eq!(sim.inflight[0].1.idempotency_key, key_of_b, "same key");
    sim.crash_and_restore();
    sim.succeed(0);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let workflow = sim.core.workflow(id).unwrap();
    assert!(
        workflow
            .tasks
            .iter()
            .all(|t| t.run.status == TaskStatus::Succeeded)
    );
    assert_eq!(
        sim.dispatch_log
            .iter()
            .filter(|(_, a)| a.task_id == "a")
            .count(),
        1,
        "a is before the checkpoint: not run again"
    );
    // While it runs, it cannot be re-driven.
    let id2 = sim.submit(
        &spec(WITH_CHECKPOINT),
        Priority::Normal,
        serde_json::json!({}),
    );
    let running = operate(&mut sim, |core, now, out| core.redrive(now, id2, "cp", out));
    assert!(
        matches!(&running, Err(OperationError::Refused(m)) if m.contains("is running")),
        "{running:?}"
    );
}

#[test]
fn a_filter_finds_the_workflows_waiting_on_a_skill_or_a_gateway() {
    let mut sim = Sim::new();
    sim.join("gw", &["work"], 1, &[("gateway", "alpha")]);
    let on_alpha = sim.submit(&spec(CHAIN2), Priority::Normal, serde_json::json!({}));
    const OTHER: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: other\nversion: 1\ntasks:\n  - id: x\n    skill: nobody\n";
    let elsewhere = sim.submit(&spec(OTHER), Priority::Normal, serde_json::json!({}));
    let matching = |filter: &Filter| -> Vec<WorkflowId> {
        sim.core
            .workflows()
            .filter(|w| sim.core.matches(w, filter))
            .map(|w| w.id)
            .collect()
    };
    let by_gateway = Filter {
        gateway: Some("alpha".into()),
        ..Filter::default()
    };
    assert_eq!(matching(&by_gateway), [on_alpha]);
    let by_skill = Filter {
        skill: Some("nobody".into()),
        ..Filter::default()
    };
    assert_eq!(matching(&by_skill), [elsewhere]);
    let by_name = Filter {
        name: Some("chain".into()),
        status: Some(WorkflowStatus::Running),
        ..Filter::default()
    };
    assert_eq!(matching(&by_name), [on_alpha]);
}

/// Dispatch of a skill, or to a gateway, paused by an operator: nothing goes until it is
/// resumed; other gateways still serve the skill.
#[test]
fn paused_dispatch_of_a_skill_or_a_gateway_holds_its_tasks() {
    use crate::scheduler::operations::{HoldOn, Holds};
    let mut sim = Sim::new();
    sim.join("alpha", &["work"], 2, &[("gateway", "alpha")]);
    let mut holds = Holds::default();
    holds.set(&HoldOn::Gateway("alpha".into()), Some("alpha maintenance"));
    sim.core.set_holds(sim.now, holds.clone());
    let id = sim.submit(&spec(CHAIN2), Priority::Normal, serde_json::json!({}));
    assert!(sim.inflight.is_empty(), "dispatched to a paused gateway");
    let reason = sim.core.waiting_reason(Slot {
        workflow: id,
        task: 0,
        compensation: false,
    });
    assert_eq!(
        reason,
        "waiting: dispatch to gateway alpha (alpha maintenance) is paused"
    );
    // Another gateway still takes the skill.
    sim.join("beta", &["work"], 2, &[("gateway", "beta")]);
    sim.advance(1);
    assert_eq!(sim.inflight.len(), 1);
    assert_eq!(sim.inflight[0].0, agent("beta"));
    // Pausing the skill holds it everywhere: a, running, finishes; b waits.
    holds.set(&HoldOn::Skill("work".into()), Some("ledger migration"));
    sim.core.set_holds(sim.now, holds.clone());
    sim.succeed(0);
    sim.advance(1);
    assert!(
        sim.inflight.is_empty(),
        "dispatched a paused skill: {:?}",
        sim.inflight
    );
    let reason = sim.core.waiting_reason(Slot {
        workflow: id,
        task: 1,
        compensation: false,
    });
    assert_eq!(
        reason,
        "waiting: dispatch of skill work is paused: ledger migration"
    );
    holds.set(&HoldOn::Skill("work".into()), None);
    holds.set(&HoldOn::Gateway("alpha".into()), None);
    sim.core.set_holds(sim.now, holds);
    sim.advance(1);
    assert_eq!(sim.inflight.len(), 1, "released: b goes");
    sim.succeed(0);
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}
