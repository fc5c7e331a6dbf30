//! Property tests: random specs, random agent behaviour and crashes; the invariants
//! hold whatever happens.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// A spec generated for the property tests: a DAG over three skills with checkpoints
/// and compensations.
#[derive(Debug, Clone)]
struct GenTask {
    needs: Vec<usize>,
    checkpoint: bool,
    compensate: bool,
}

fn gen_spec() -> impl Strategy<Value = Vec<GenTask>> {
    (1usize..10).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (
                    proptest::collection::btree_set(0..i.max(1), 0..=i.min(3)),
                    any::<bool>(),
                    any::<bool>(),
                )
                    .prop_map(move |(needs, cp, comp)| GenTask {
                        needs: needs.into_iter().filter(|d| *d < i).collect(),
                        checkpoint: cp && i > 0 && i % 3 == 0,
                        compensate: comp,
                    })
            })
            .collect::<Vec<_>>()
    })
}

fn render(tasks: &[GenTask]) -> String {
    let mut text = "apiVersion: paygrid/v1\nkind: Workflow\nname: gen\nversion: 1\ndefaults:\n  retry: { max_attempts: 3, initial: 50ms, max: 500ms }\n  timeout: 2s\ntasks:\n".to_owned();
    for (i, task) in tasks.iter().enumerate() {
        let needs: Vec<String> = task.needs.iter().map(|d| format!("t{d}")).collect();
        text.push_str(&format!(
            "  - id: t{i}\n    needs: [{}]\n",
            needs.join(", ")
        ));
        if task.checkpoint {
            text.push_str("    checkpoint: {}\n");
        } else {
            text.push_str(&format!("    skill: s{}\n", i % 3));
            if task.compensate {
                text.push_str("    compensate: { skill: undo }\n");
            }
        }
    }
    text
}

const ALL_SKILLS: &[&str] = &["s0", "s1", "s2", "undo"];

/// Runs workflows under chaos (failures, hangs, disconnects, time jumps), then lets
/// agents answer, and checks the invariants.
fn chaos(
    tasks: &[GenTask],
    workflows: usize,
    seed: u64,
    chaos_steps: usize,
    crash_at: Option<usize>,
) -> Result<(), TestCaseError> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let spec = spec(&render(tasks));
    let mut sim = Sim::new();
    let mut next_agent = 0;
    for _ in 0..2 {
        sim.join(
            &format!("a{next_agent}"),
            ALL_SKILLS,
            1 + rng.u32(0..3),
            &[],
        );
        next_agent += 1;
    }
    let ids: Vec<WorkflowId> = (0..workflows)
        .map(|i| sim.submit(&spec, Priority::ALL[i % 4], serde_json::json!({})))
        .collect();
    let mut hung: Vec<(AgentId, Assignment)> = Vec::new();
    for step in 0..chaos_steps {
        if crash_at == Some(step) {
            sim.crash_and_restore();
        }
        match rng.u32(0..100) {
            0..60 if !sim.inflight.is_empty() => {
                let index = rng.usize(..sim.inflight.len());
                match rng.u32(0..100) {
                    0..70 => sim.succeed(index),
                    70..85 => sim.answer(
                        index,
                        Outcome::Retryable {
                            error: "flaky".into(),
                        },
                    ),
                    85..90 => sim.answer(
                        index,
                        Outcome::Permanent {
                            error: "broken".into(),
                        },
                    ),
                    90..95 => hung.push(sim.inflight.remove(index)),
                    _ => sim.answer(index, Outcome::Cancelled),
                }
            }
            60..64 => {
                let victim = sim.core.agents().map(|a| a.id.clone()).min();
                if let Some(victim) = victim {
                    sim.inflight.retain(|(a, _)| *a != victim);
                    hung.retain(|(a, _)| *a != victim);
                    sim.event(AgentEvent::Left { agent: victim });
                    sim.join(
                        &format!("a{next_agent}"),
                        ALL_SKILLS,
                        1 + rng.u32(0..3),
                        &[],
                    );
                    next_agent += 1;
                }
            }
            _ => {
                let running: Vec<(AgentId, (Slot, u32))> = sim
                    .inflight
                    .iter()
                    .map(|(a, x)| (a.clone(), (x.slot, x.attempt)))
                    .collect();
                sim.advance(rng.u64(1..1_500));
                let mut by_agent: HashMap<AgentId, Vec<(Slot, u32)>> = HashMap::new();
                for (a, r) in running {
                    by_agent.entry(a).or_default().push(r);
                }
                for (agent, running) in by_agent {
                    sim.event(AgentEvent::Heartbeat { agent, running });
                }
            }
        }
        // Agents honour cancellations of what they still run.
        for (agent, slot, attempt) in std::mem::take(&mut sim.cancels) {
            if let Some(index) = sim
                .inflight
                .iter()
                .position(|(a, x)| *a == agent && x.slot == slot && x.attempt == attempt)
            {
                sim.answer(index, Outcome::Cancelled);
            }
        }
    }
    // Hung attempts never answer; their agents free the slots. Everyone else answers.
    for (agent, _) in hung {
        sim.event(AgentEvent::Credits { agent, credits: 1 });
    }
    sim.run_to_quiet();

    prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for id in &ids {
        let status = sim.status(*id);
        prop_assert!(status.is_terminal(), "workflow {id} ended {status:?}");
    }
    let mut successes: HashMap<(WorkflowId, u32), usize> = HashMap::new();
    for record in &sim.records {
        if let Change::Task {
            task,
            compensation: false,
            status: TaskStatus::Succeeded,
            ..
        } = record.change
        {
            *successes.entry((record.workflow, task)).or_default() += 1;
        }
    }
    prop_assert!(
        successes.values().all(|n| *n == 1),
        "a task succeeded twice"
    );
    for id in &ids {
        let workflow = sim.core.workflow(*id).unwrap();
        for (index, task) in workflow.tasks.iter().enumerate() {
            let compiled = &workflow.spec.tasks[index];
            let attempts = task.run.effect_attempts();
            prop_assert!(
                attempts <= compiled.retry.max_attempts,
                "task {} made {attempts} attempts, max {}",
                compiled.id,
                compiled.retry.max_attempts
            );
            let effect_records = task.run.history.iter().filter(|h| !h.lookup).count() as u32;
            prop_assert!(effect_records <= compiled.retry.max_attempts);
            for record in &task.run.history {
                if record.outcome == AttemptOutcome::Timeout {
                    let took = record.finished_at - record.started_at;
                    prop_assert!(
                        took >= compiled.timeout.as_millis() as u64,
                        "attempt {} of {} timed out after {took}ms",
                        record.attempt,
                        compiled.id
                    );
                }
            }
        }
    }
    for id in &ids {
        let workflow = sim.core.workflow(*id).unwrap();
        if workflow.status == WorkflowStatus::Succeeded {
            prop_assert!(
                workflow
                    .tasks
                    .iter()
                    .all(|t| t.run.status == TaskStatus::Succeeded),
                "{:?}",
                workflow
                    .tasks
                    .iter()
                    .map(|t| (
                        t.run.status,
                        t.run.attempt,
                        t.run.attempt_open,
                        t.run.history.iter().map(|h| h.outcome).collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>()
            );
        }
        // Every succeeded task with a compensation was compensated when the workflow failed.
        if matches!(workflow.status, WorkflowStatus::Compensated) {
            for (i, t) in workflow.tasks.iter().enumerate() {
                if workflow.spec.tasks[i].compensate.is_some() && t.run.output.is_some() {
                    prop_assert_eq!(t.run.status, TaskStatus::Compensated);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// No task starts before its needs; each task succeeds at most once; nothing
    /// downstream of a checkpoint starts before it passed; every workflow ends.
    #[test]
    fn invariants_hold_under_chaos(tasks in gen_spec(), workflows in 1usize..6, seed in any::<u64>(), steps in 0usize..300) {
        chaos(&tasks, workflows, seed, steps, None)?;
    }

    /// The same, with the control unit crashing at a random step and restored from
    /// snapshots and recorded changes: nothing that succeeded runs again, all ends.
    #[test]
    fn invariants_hold_across_a_restore(tasks in gen_spec(), workflows in 1usize..6, seed in any::<u64>(), steps in 1usize..300, crash in any::<prop::sample::Index>()) {
        chaos(&tasks, workflows, seed, steps, Some(crash.index(steps)))?;
    }
}
