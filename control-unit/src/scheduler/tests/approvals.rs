//! Human decisions: a payment the risk check sends to review waits for an approval;
//! approve continues it, reject compensates it, the timeout applies the default, a
//! payment that needs no review passes at once, and a waiting approval survives a
//! restart with its timeout counted from when it started.

use serde_json::json;

use super::*;
use crate::model::Decision;
use crate::scheduler::approvals::{ApprovalError, DecisionBy};

const REVIEWED: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: reviewed\nversion: 1\ninputs:\n  amount_minor: { type: integer }\ntasks:\n  - id: risk\n    skill: risk\n  - id: review\n    needs: [risk]\n    approval:\n      prompt: \"review {{ inputs.amount_minor }}\"\n      timeout: 1h\n      default: reject\n      requiredWhen: tasks.risk.output.decision == \"review\"\n  - id: charge\n    skill: charge\n    needs: [review]\n    compensate: { skill: refund }\n";

/// Runs `risk` with `decision`, then leaves the workflow at its approval.
fn at_review(sim: &mut Sim, decision: &str) -> WorkflowId {
    let id = sim.submit(
        &spec(REVIEWED),
        Priority::Normal,
        json!({"amount_minor": 900_000}),
    );
    let index = sim.index_of("risk");
    let output = json!({"decision": decision}).to_string();
    sim.answer(
        index,
        Outcome::Succeeded {
            output: output.into(),
        },
    );
    id
}

fn by(decision: Decision, who: &str) -> DecisionBy {
    DecisionBy {
        decision,
        by: who.into(),
        via: "cli".into(),
        note: "checked with the merchant".into(),
    }
}

fn decide(
    sim: &mut Sim,
    id: WorkflowId,
    task: Option<&str>,
    decision: DecisionBy,
) -> Result<String, ApprovalError> {
    let mut out = Vec::new();
    let result = sim.core.decide(sim.now, id, task, decision, &mut out);
    sim.apply(out);
    result
}

fn output(sim: &Sim, id: WorkflowId, task: u32) -> serde_json::Value {
    let workflow = sim.core.workflow(id).expect("workflow");
    serde_json::from_str(
        workflow.tasks[task as usize]
            .run
            .output
            .as_deref()
            .expect("output"),
    )
    .expect("json")
}

#[test]
fn an_approved_review_continues_and_records_who_decided() {
    let mut sim = Sim::new();
    sim.join("worker", &["risk", "charge", "refund"], 8, &[]);
    let id = at_review(&mut sim, "review");
    assert!(
        sim.inflight.is_empty(),
        "nothing runs while the review waits"
    );
    let pending = sim.core.pending_approvals(id);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1.prompt, "review 900000");
    let reason = sim.core.waiting_reason(Slot {
        workflow: id,
        task: 1,
        compensation: false,
    });
    assert!(
        reason.starts_with("awaiting approval: review 900000 (default reject"),
        "{reason}"
    );
    assert_eq!(
        decide(&mut sim, id, None, by(Decision::Approve, "alice")),
        Ok("review".to_owned())
    );
    let decided = output(&sim, id, 1);
    assert_eq!(decided["decision"], "approve");
    assert_eq!(decided["decided_by"], "alice");
    assert_eq!(decided["via"], "cli");
    assert_eq!(decided["note"], "checked with the merchant");
    assert_eq!(decided["decided_at_ms"], sim.now);
    // Twice is refused, naming what became of it.
    let again = decide(&mut sim, id, Some("review"), by(Decision::Reject, "bob"));
    assert!(
        matches!(&again, Err(ApprovalError::NotPending { state, .. }) if state.contains("alice")),
        "{again:?}"
    );
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}

#[test]
fn a_rejected_review_fails_the_task_and_compensates() {
    let mut sim = Sim::new();
    sim.join("worker", &["risk", "charge", "refund"], 8, &[]);
    let id = at_review(&mut sim, "review");
    decide(&mut sim, id, Some("review"), by(Decision::Reject, "bob")).expect("decided");
    sim.run_to_quiet();
    let workflow = sim.core.workflow(id).expect("workflow");
    assert!(
        matches!(
            workflow.status,
            WorkflowStatus::Compensated | WorkflowStatus::Failed
        ),
        "{:?}",
        workflow.status
    );
    let error = workflow.tasks[1].run.error.clone().expect("error");
    assert_eq!(error, "rejected by bob via cli: checked with the merchant");
    assert_eq!(output(&sim, id, 1)["decision"], "reject");
    assert_eq!(
        workflow.tasks[2].run.status,
        TaskStatus::Cancelled,
        "no charge"
    );
}

#[test]
fn the_timeout_applies_the_default_and_no_review_means_no_wait() {
    let mut sim = Sim::new();
    sim.join("worker", &["risk", "charge", "refund"], 8, &[]);
    let waits = at_review(&mut sim, "review");
    let clear = at_review(&mut sim, "approve");
    let decided = output(&sim, clear, 1);
    assert_eq!(decided, json!({"decision": "approve", "required": false}));
    assert_eq!(
        sim.inflight.len(),
        1,
        "the clear payment is charged at once"
    );
    sim.advance(3_600_000 - 1);
    assert_eq!(sim.status(waits), WorkflowStatus::Running);
    sim.advance(1);
    let decided = output(&sim, waits, 1);
    assert_eq!(decided["decision"], "reject");
    assert_eq!(decided["via"], "timeout");
    assert_eq!(decided["default_applied"], true);
    sim.run_to_quiet();
    assert_ne!(sim.status(waits), WorkflowStatus::Succeeded);
    assert_eq!(sim.status(clear), WorkflowStatus::Succeeded);
    // Deciding on a workflow without approvals names what it has.
    let other = decide(
        &mut sim,
        clear,
        Some("charge"),
        by(Decision::Approve, "alice"),
    );
    assert_eq!(other, Err(ApprovalError::NotAnApproval("charge".into())));
}

#[test]
fn a_waiting_approval_survives_a_restart_with_its_timeout() {
    let mut sim = Sim::new();
    sim.join("worker", &["risk", "charge", "refund"], 8, &[]);
    let id = at_review(&mut sim, "review");
    sim.advance(60_000);
    sim.crash_and_restore();
    let pending = sim.core.pending_approvals(id);
    assert_eq!(pending.len(), 1, "still waiting after the restart");
    assert_eq!(pending[0].1.prompt, "review 900000");
    // The timeout counts from the start, not from the restart.
    sim.advance(3_600_000 - 60_000);
    assert_eq!(output(&sim, id, 1)["via"], "timeout");

    let id = at_review(&mut sim, "review");
    sim.crash_and_restore();
    decide(&mut sim, id, None, by(Decision::Approve, "carol")).expect("decided");
    sim.crash_and_restore();
    assert_eq!(
        output(&sim, id, 1)["decided_by"],
        "carol",
        "the decision is durable"
    );
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}
