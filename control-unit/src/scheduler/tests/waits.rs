//! Dependencies across workflows: a settlement waits for a batch of payments to pass
//! their `captured` checkpoint, across a restart, and settles exactly once.

use serde_json::json;

use super::*;

const PAYMENT: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: payment\nversion: 1\ntasks:\n  - id: charge\n    skill: work\n  - id: captured\n    needs: [charge]\n    checkpoint: {}\n  - id: receipt\n    skill: work\n    needs: [captured]\n";
const SETTLEMENT: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: settlement\nversion: 1\ninputs:\n  batch: { type: string }\ntasks:\n  - id: payments\n    waitFor: { labels: { batch: \"{{ inputs.batch }}\" }, checkpoint: captured, count: 5 }\n  - id: settle\n    skill: settle\n    needs: [payments]\n";

/// Answers in-flight tasks of `skill` with success.
fn succeed_all(sim: &mut Sim, skill: &str) -> usize {
    let mut done = 0;
    while let Some(index) = sim.inflight.iter().position(|(_, a)| &*a.skill == skill) {
        sim.succeed(index);
        done += 1;
    }
    done
}

#[test]
fn a_settlement_waits_for_its_batch_across_a_restart_and_settles_once() {
    let mut sim = Sim::new();
    sim.join("worker", &["work", "settle"], 64, &[]);
    let payment = spec(PAYMENT);
    let settlement = spec(SETTLEMENT);
    // Two payments of the batch pass their checkpoint before the settlement starts; one
    // payment of another batch never counts.
    let batch = [("batch", "b1")];
    let mut payments: Vec<_> = (0..2)
        .map(|_| sim.submit_labelled(&payment, Priority::Normal, json!({}), &batch))
        .collect();
    sim.submit_labelled(&payment, Priority::Normal, json!({}), &[("batch", "b2")]);
    succeed_all(&mut sim, "work");
    let settle = sim.submit(&settlement, Priority::Normal, json!({"batch": "b1"}));
    let reason = sim.core.waiting_reason(Slot {
        workflow: settle,
        task: 0,
        compensation: false,
    });
    assert!(
        reason.starts_with("waiting for 2 of 5 workflows with batch=b1 to pass `captured`"),
        "{reason}"
    );
    // Three more; their charges answer after a restart.
    payments
        .extend((0..3).map(|_| sim.submit_labelled(&payment, Priority::Normal, json!({}), &batch)));
    sim.crash_and_restore();
    assert_eq!(sim.status(settle), WorkflowStatus::Running);
    for _ in 0..2 {
        let index = sim
            .inflight
            .iter()
            .position(|(_, a)| &*a.skill == "work")
            .expect("a charge in flight");
        sim.succeed(index);
        assert!(
            !sim.inflight.iter().any(|(_, a)| &*a.skill == "settle"),
            "not before the fifth"
        );
    }
    succeed_all(&mut sim, "work");
    let settles: Vec<_> = sim
        .dispatch_log
        .iter()
        .filter(|(_, a)| &*a.skill == "settle")
        .collect();
    assert_eq!(settles.len(), 1, "settled exactly once");
    succeed_all(&mut sim, "settle");
    assert_eq!(sim.status(settle), WorkflowStatus::Succeeded);
    let output = sim.core.workflow(settle).unwrap().tasks[0]
        .run
        .output
        .clone()
        .unwrap();
    let output: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output["count"], 5);
    for id in payments {
        assert!(
            output["workflows"]
                .as_array()
                .unwrap()
                .contains(&json!(id.to_string()))
        );
    }
}

#[test]
fn a_wait_times_out_as_its_spec_says() {
    let mut sim = Sim::new();
    sim.join("worker", &["work", "settle"], 64, &[]);
    let patient = SETTLEMENT.replace(
        "count: 5 }",
        "count: 5, timeout: 10s, onTimeout: continue }",
    );
    let strict = SETTLEMENT.replace("count: 5 }", "count: 5, timeout: 10s }");
    let patient = sim.submit(&spec(&patient), Priority::Normal, json!({"batch": "b9"}));
    let strict = sim.submit(&spec(&strict), Priority::Normal, json!({"batch": "b9"}));
    sim.advance(10_000);
    assert_eq!(sim.status(strict), WorkflowStatus::Failed);
    let error = sim.core.workflow(strict).unwrap().error.clone().unwrap();
    assert!(error.contains("timed out waiting for 0 of 5"), "{error}");
    succeed_all(&mut sim, "settle");
    assert_eq!(sim.status(patient), WorkflowStatus::Succeeded);
}
