//! The scheduler core under a seeded simulation: agents that succeed, fail, hang and
//! disconnect, time that jumps. Property tests check the invariants users rely on.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::spec::{SpecLimits, compile};

const MINUTE: u64 = 60_000;

fn spec(text: &str) -> Arc<CompiledSpec> {
    Arc::new(compile(text, &SpecLimits::default()).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

fn agent(name: &str) -> AgentId {
    AgentId(name.into())
}

/// Drives a scheduler and keeps what it said.
struct Sim {
    core: Scheduler,
    now: Millis,
    inflight: Vec<(AgentId, Assignment)>,
    records: Vec<Record>,
    cancels: Vec<(AgentId, Slot, u32)>,
    dispatch_log: Vec<(AgentId, Assignment)>,
    violations: Vec<String>,
    snapshots: Vec<(Arc<CompiledSpec>, restore::Snapshot)>,
    agents_joined: Vec<(String, Vec<&'static str>, u32)>,
    crashed_at_record: usize,
    breaker_log: Vec<breaker::Transition>,
    drains_acknowledged: Vec<AgentId>,
}

impl Sim {
    fn new() -> Self {
        Self::with_config(SchedulerConfig::default())
    }

    fn with_config(config: SchedulerConfig) -> Self {
        Self {
            core: Scheduler::new(config),
            now: 1_000_000,
            inflight: Vec::new(),
            records: Vec::new(),
            cancels: Vec::new(),
            dispatch_log: Vec::new(),
            violations: Vec::new(),
            snapshots: Vec::new(),
            agents_joined: Vec::new(),
            crashed_at_record: 0,
            breaker_log: Vec::new(),
            drains_acknowledged: Vec::new(),
        }
    }

    fn join(&mut self, name: &str, skills: &[&'static str], slots: u32, labels: &[(&str, &str)]) {
        self.agents_joined
            .push((name.to_owned(), skills.to_vec(), slots));
        let id = agent(name);
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        self.event(AgentEvent::Joined {
            agent: id.clone(),
            skills: skills.iter().map(|s| Arc::from(*s)).collect(),
            labels,
            max_concurrency: slots,
        });
        self.event(AgentEvent::Credits {
            agent: id,
            credits: slots,
        });
    }

    fn submit(
        &mut self,
        spec: &Arc<CompiledSpec>,
        priority: Priority,
        input: serde_json::Value,
    ) -> WorkflowId {
        self.submit_labelled(spec, priority, input, &[])
    }

    fn submit_labelled(
        &mut self,
        spec: &Arc<CompiledSpec>,
        priority: Priority,
        input: serde_json::Value,
        labels: &[(&str, &str)],
    ) -> WorkflowId {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let id = WorkflowId(u128::from(self.now) << 64 | self.records.len() as u128);
        let mut out = Vec::new();
        self.core
            .submit(
                self.now,
                NewWorkflow {
                    id,
                    spec: spec.clone(),
                    input,
                    priority,
                    labels,
                    idempotency_key: None,
                    traceparent: String::new(),
                    trace_parent_span: String::new(),
                    tracestate: String::new(),
                },
                &mut out,
            )
            .expect("submit");
        let snapshot = self.core.workflow(id).expect("submitted").snapshot();
        self.snapshots.push((spec.clone(), snapshot));
        self.apply(out);
        id
    }

    fn event(&mut self, event: AgentEvent) {
        let mut out = Vec::new();
        self.core.handle(self.now, event, &mut out);
        self.apply(out);
    }

    fn answer(&mut self, index: usize, outcome: Outcome) {
        let (agent, assignment) = self.inflight.remove(index);
        self.event(AgentEvent::Result {
            agent: agent.clone(),
            slot: assignment.slot,
            attempt: assignment.attempt,
            outcome,
        });
        self.event(AgentEvent::Credits { agent, credits: 1 });
    }

    fn succeed(&mut self, index: usize) {
        let output = format!(
            "{{\"task\":\"{}\",\"amount_minor\":7}}",
            self.inflight[index].1.task_id
        );
        self.answer(
            index,
            Outcome::Succeeded {
                output: output.into(),
            },
        );
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let mut out = Vec::new();
        self.core.tick(self.now, &mut out);
        self.apply(out);
    }

    fn apply(&mut self, mut out: Vec<Command>) {
        self.core.dispatch(self.now, &mut out);
        for command in out {
            match command {
                Command::Dispatch { agent, assignment } => {
                    self.check_dispatch(&assignment);
                    self.dispatch_log
                        .push((agent.clone(), (*assignment).clone()));
                    self.inflight.push((agent, *assignment));
                }
                Command::Cancel {
                    agent,
                    slot,
                    attempt,
                } => self.cancels.push((agent, slot, attempt)),
                Command::Record(record) => self.records.push(record),
                Command::Breaker(transition) => self.breaker_log.push(transition),
                Command::DrainAcknowledged { agent } => self.drains_acknowledged.push(agent),
            }
        }
    }

    /// No task starts before every need (and every upstream checkpoint) succeeded.
    fn check_dispatch(&mut self, assignment: &Assignment) {
        if assignment.slot.compensation {
            return;
        }
        let succeeded_before = self.records.iter().any(|r| {
            r.workflow == assignment.slot.workflow
                && matches!(r.change, Change::Task { task, compensation: false, status: TaskStatus::Succeeded, .. } if task == assignment.slot.task)
        });
        if succeeded_before {
            self.violations.push(format!(
                "{} dispatched again after it succeeded",
                assignment.task_id
            ));
        }
        let Some(workflow) = self.core.workflow(assignment.slot.workflow) else {
            return;
        };
        let mut stack = workflow.spec.tasks[assignment.slot.task as usize]
            .needs
            .clone();
        while let Some(need) = stack.pop() {
            let status = workflow.tasks[need as usize].run.status;
            if status != TaskStatus::Succeeded {
                self.violations.push(format!(
                    "{} dispatched while upstream {} is {status:?}",
                    assignment.task_id,
                    workflow.task_id(need)
                ));
            }
            stack.extend(workflow.spec.tasks[need as usize].needs.iter().copied());
        }
    }

    /// The control unit crashes: a new core is rebuilt from each workflow's creation
    /// snapshot and every recorded change, and the connected agents join it again.
    /// Assignments already handed out may still be answered (late results).
    fn crash_and_restore(&mut self) {
        let mut core = Scheduler::new(SchedulerConfig::default());
        let mut out = Vec::new();
        for (spec, snapshot) in &self.snapshots {
            let id: WorkflowId = snapshot.id.parse().expect("id");
            let changes: Vec<(u64, Change)> = self
                .records
                .iter()
                .filter(|r| r.workflow == id)
                .map(|r| (r.at, r.change.clone()))
                .collect();
            core.restore(self.now, snapshot.clone(), spec.clone(), &changes, &mut out)
                .expect("restore");
        }
        // As the actor does once every workflow is back.
        core.recount_waits(&mut out);
        self.core = core;
        self.crashed_at_record = self.records.len();
        self.apply(out);
        let agents: Vec<_> = self.core_agents_to_rejoin();
        for (name, skills, slots) in agents {
            let id = agent(&name);
            self.event(AgentEvent::Joined {
                agent: id.clone(),
                skills: skills.iter().map(|s| Arc::from(*s)).collect(),
                labels: BTreeMap::new(),
                max_concurrency: slots,
            });
            self.event(AgentEvent::Credits {
                agent: id,
                credits: slots,
            });
        }
    }

    fn core_agents_to_rejoin(&self) -> Vec<(String, Vec<&'static str>, u32)> {
        let mut seen = std::collections::HashSet::new();
        self.agents_joined
            .iter()
            .rev()
            .filter(|(n, _, _)| seen.insert(n.clone()))
            .cloned()
            .collect()
    }

    fn status(&self, id: WorkflowId) -> WorkflowStatus {
        self.core.workflow(id).expect("workflow").status
    }

    /// Answers everything with success until nothing is in flight and no timer is due.
    fn run_to_quiet(&mut self) {
        for _ in 0..10_000 {
            if !self.inflight.is_empty() {
                self.succeed(0);
            } else if let Some(at) = self.core.next_deadline() {
                self.advance(at.saturating_sub(self.now).max(1));
            } else {
                return;
            }
        }
        panic!("simulation did not quiesce");
    }

    fn index_of(&self, task: &str) -> usize {
        self.inflight
            .iter()
            .position(|(_, a)| a.task_id == task)
            .unwrap_or_else(|| panic!("{task} not in flight"))
    }
}

const CHAIN: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: chain\nversion: 1\ndefaults:\n  retry: { max_attempts: 3, initial: 100ms, max: 1s }\n  timeout: 5s\ntasks:\n  - id: a\n    skill: work\n  - id: b\n    skill: work\n    needs: [a]\n";

/// A retryable failure is retried after a backoff and the workflow then succeeds.
#[test]
fn retryable_failure_is_retried_with_backoff() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    sim.answer(
        0,
        Outcome::Retryable {
            error: "503".into(),
        },
    );
    assert!(sim.inflight.is_empty(), "retry waits for its backoff");
    let at = sim.core.next_deadline().expect("backoff timer");
    assert!(at > sim.now, "backoff is in the future");
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let a = &sim.core.workflow(id).unwrap().tasks[0].run;
    assert_eq!(a.attempt, 2);
    assert_eq!(a.history[0].outcome, AttemptOutcome::Retryable);
}

/// Attempts that ended after the last snapshot are rebuilt from the change log on
/// restore, with the times, agent and outcome the running core recorded.
#[test]
fn restore_rebuilds_attempt_history_from_the_log() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    sim.advance(5);
    sim.answer(
        0,
        Outcome::Retryable {
            error: "503".into(),
        },
    );
    let before = sim.core.workflow(id).unwrap().tasks[0].run.history.clone();
    assert_eq!(before.len(), 1);
    sim.crash_and_restore();
    let after = &sim.core.workflow(id).unwrap().tasks[0].run.history;
    assert_eq!(after.len(), 1, "{after:?}");
    let (was, is) = (&before[0], &after[0]);
    assert_eq!(
        (
            is.attempt,
            &is.agent,
            is.started_at,
            is.finished_at,
            is.outcome
        ),
        (
            was.attempt,
            &was.agent,
            was.started_at,
            was.finished_at,
            was.outcome
        )
    );
    assert!(is.error.as_deref().is_some_and(|e| e.contains("503")));
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    let history = &sim.core.workflow(id).unwrap().tasks[0].run.history;
    assert_eq!(history.len(), 2, "{history:?}");
}

/// A permanent failure fails the workflow at once: no retry, downstream never runs.
#[test]
fn permanent_failure_is_not_retried() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    sim.answer(
        0,
        Outcome::Permanent {
            error: "card_declined".into(),
        },
    );
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Failed);
    let workflow = sim.core.workflow(id).unwrap();
    assert_eq!(workflow.tasks[0].run.attempt, 1);
    assert_eq!(workflow.tasks[1].run.status, TaskStatus::Cancelled);
    assert!(workflow.error.as_deref().unwrap().contains("card_declined"));
}

/// Compensations of completed tasks run in reverse completion order.
#[test]
fn compensation_runs_in_reverse_order() {
    let text = "apiVersion: paygrid/v1\nkind: Workflow\nname: saga\nversion: 1\ntasks:\n  - id: a\n    skill: work\n    compensate: { skill: undo, with: { of: a } }\n  - id: b\n    skill: work\n    needs: [a]\n    compensate: { skill: undo, with: { of: b } }\n  - id: c\n    skill: work\n    needs: [b]\n    retry: { max_attempts: 1 }\n";
    let mut sim = Sim::new();
    sim.join("w", &["work", "undo"], 4, &[]);
    let id = sim.submit(&spec(text), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    sim.succeed(0);
    sim.answer(
        0,
        Outcome::Permanent {
            error: "capture refused".into(),
        },
    );
    assert_eq!(sim.status(id), WorkflowStatus::Compensating);
    let order: Vec<String> = (0..2)
        .map(|_| {
            let input = String::from_utf8(sim.inflight[0].1.input_json.clone()).unwrap();
            sim.succeed(0);
            input
        })
        .collect();
    assert_eq!(order, vec!["{\"of\":\"b\"}", "{\"of\":\"a\"}"]);
    assert_eq!(sim.status(id), WorkflowStatus::Compensated);
    assert_eq!(
        sim.core.workflow(id).unwrap().tasks[0].run.status,
        TaskStatus::Compensated
    );
}

/// A task on an agent that disconnects goes to another agent with the same
/// idempotency key.
#[test]
fn lost_agent_task_is_redispatched_with_the_same_key() {
    let mut sim = Sim::new();
    sim.join("one", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    let first = sim.inflight[0].1.clone();
    sim.inflight.clear();
    sim.event(AgentEvent::Left {
        agent: agent("one"),
    });
    sim.join("two", &["work"], 1, &[]);
    assert!(
        sim.inflight.is_empty(),
        "a lost attempt is retried after its backoff"
    );
    sim.advance(2_000);
    let (to, second) = sim.inflight[0].clone();
    assert_eq!(to, agent("two"));
    assert_eq!(second.idempotency_key, first.idempotency_key);
    assert_eq!(second.attempt, first.attempt + 1);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}

/// A task whose agent stops heartbeating is re-dispatched when its lease runs out.
#[test]
fn expired_lease_redispatches() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 2, &[]);
    let id = sim.submit(
        &spec(&CHAIN.replace("timeout: 5s", "timeout: 5m")),
        Priority::Normal,
        serde_json::json!({}),
    );
    let hung = sim.inflight.remove(0);
    sim.advance(SchedulerConfig::default().lease_ttl.as_millis() as u64 + 1);
    assert!(
        sim.cancels
            .iter()
            .any(|(_, slot, attempt)| *slot == hung.1.slot && *attempt == hung.1.attempt)
    );
    sim.advance(2_000); // past the retry backoff
    assert_eq!(sim.inflight.len(), 1, "re-dispatched");
    assert_eq!(sim.inflight[0].1.attempt, hung.1.attempt + 1);
    let history = &sim.core.workflow(id).unwrap().tasks[0].run.history;
    assert_eq!(history[0].outcome, AttemptOutcome::LeaseExpired);
}

/// Heartbeats keep a long task's lease alive until its own timeout.
#[test]
fn heartbeats_renew_leases() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    let running = vec![(sim.inflight[0].1.slot, sim.inflight[0].1.attempt)];
    for _ in 0..4 {
        sim.advance(1_000);
        sim.event(AgentEvent::Heartbeat {
            agent: agent("w"),
            running: running.clone(),
        });
    }
    assert_eq!(
        sim.core.workflow(id).unwrap().tasks[0].run.status,
        TaskStatus::Running
    );
    assert!(sim.cancels.is_empty());
    sim.advance(2_000); // past the 5s attempt timeout
    assert_eq!(
        sim.cancels.len(),
        1,
        "timed-out attempt cancelled on its agent"
    );
}

/// With no agent for a skill the task waits, visibly, and runs once one joins.
#[test]
fn tasks_wait_for_an_agent() {
    let mut sim = Sim::new();
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    assert_eq!(
        sim.core.workflow(id).unwrap().tasks[0].run.status,
        TaskStatus::Ready
    );
    assert_eq!(
        sim.core.waiting_reason(Slot {
            workflow: id,
            task: 0,
            compensation: false
        }),
        "no connected agent offers skill work"
    );
    sim.advance(MINUTE);
    assert_eq!(sim.status(id), WorkflowStatus::Running);
    sim.join("w", &["work"], 1, &[]);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
}

/// Under saturation, critical work submitted later runs before low work submitted
/// earlier, and low work still runs once it has aged.
#[test]
fn priorities_with_aging() {
    let mut sim = Sim::new();
    sim.join("w", &["work"], 1, &[]);
    let lows: Vec<_> = (0..5)
        .map(|_| sim.submit(&spec(CHAIN), Priority::Low, serde_json::json!({})))
        .collect();
    let criticals: Vec<_> = (0..5)
        .map(|_| sim.submit(&spec(CHAIN), Priority::Critical, serde_json::json!({})))
        .collect();
    let mut finished = Vec::new();
    while finished.len() < 10 {
        sim.advance(10);
        sim.succeed(0);
        for id in lows.iter().chain(&criticals) {
            if sim.status(*id).is_terminal() && !finished.contains(id) {
                finished.push(*id);
            }
        }
    }
    let last_critical = finished
        .iter()
        .rposition(|id| criticals.contains(id))
        .unwrap();
    let first_low = finished.iter().position(|id| lows.contains(id)).unwrap();
    assert!(last_critical < first_low, "criticals first: {finished:?}");

    // Aging: a low task ready long enough beats a fresh critical one.
    let mut sim = Sim::new();
    let low = sim.submit(&spec(CHAIN), Priority::Low, serde_json::json!({}));
    sim.advance(SchedulerConfig::default().priority_aging[3].as_millis() as u64 + 1);
    sim.submit(&spec(CHAIN), Priority::Critical, serde_json::json!({}));
    sim.join("w", &["work"], 1, &[]);
    assert_eq!(sim.inflight[0].1.slot.workflow, low);
}

/// Cancellation reaches the running task's agent and compensates finished work.
#[test]
fn cancel_reaches_running_tasks() {
    let text = "apiVersion: paygrid/v1\nkind: Workflow\nname: c\nversion: 1\ntasks:\n  - id: a\n    skill: work\n    compensate: { skill: undo }\n  - id: b\n    skill: work\n    needs: [a]\n";
    let mut sim = Sim::new();
    sim.join("w", &["work", "undo"], 2, &[]);
    let id = sim.submit(&spec(text), Priority::Normal, serde_json::json!({}));
    sim.succeed(0);
    let running = sim.inflight[0].1.clone();
    let mut out = Vec::new();
    sim.core.cancel(sim.now, id, "operator", &mut out).unwrap();
    sim.apply(out);
    assert!(sim.cancels.iter().any(|(_, slot, _)| *slot == running.slot));
    let index = sim.index_of("b");
    sim.answer(index, Outcome::Cancelled);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Cancelled);
    assert_eq!(
        sim.core.workflow(id).unwrap().tasks[0].run.status,
        TaskStatus::Compensated
    );
}

/// `when` false skips the task and everything downstream; routes pick by label.
#[test]
fn when_skips_and_routes_pick_labels() {
    let text = "apiVersion: paygrid/v1\nkind: Workflow\nname: r\nversion: 1\ninputs:\n  gw: { type: string }\ntasks:\n  - id: risk\n    skill: work\n  - id: pay\n    skill: pay\n    needs: [risk]\n    when: tasks.risk.output.task == \"risk\"\n    route: { labels: { gateway: \"{{ inputs.gw }}\" } }\n  - id: skipme\n    skill: work\n    needs: [risk]\n    when: inputs.gw == \"nope\"\n  - id: after\n    skill: work\n    needs: [skipme]\n";
    let mut sim = Sim::new();
    sim.join("w", &["work"], 2, &[]);
    sim.join("alpha", &["pay"], 2, &[("gateway", "alpha")]);
    sim.join("beta", &["pay"], 2, &[("gateway", "beta")]);
    let id = sim.submit(
        &spec(text),
        Priority::Normal,
        serde_json::json!({"gw": "beta"}),
    );
    sim.succeed(0);
    let pay = sim.index_of("pay");
    assert_eq!(sim.inflight[pay].0, agent("beta"));
    sim.run_to_quiet();
    let workflow = sim.core.workflow(id).unwrap();
    assert_eq!(workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(workflow.tasks[2].run.status, TaskStatus::Skipped);
    assert_eq!(workflow.tasks[3].run.status, TaskStatus::Skipped);
}

mod approvals;
mod breakers;
mod chaos;
mod limits;
mod operations;
mod restart;
mod waits;

/// An agent that drains gets an acknowledgement, and nothing is assigned to it after
/// that: its running task ends there, the next one goes to another agent.
#[test]
fn a_draining_agent_is_acknowledged_and_assigned_nothing_more() {
    let mut sim = Sim::new();
    sim.join("leaving", &["work"], 4, &[]);
    let id = sim.submit(&spec(CHAIN), Priority::Normal, serde_json::json!({}));
    assert_eq!(sim.inflight.len(), 1);
    sim.event(AgentEvent::Draining {
        agent: agent("leaving"),
    });
    assert_eq!(sim.drains_acknowledged, vec![agent("leaving")]);
    let dispatched = sim.dispatch_log.len();
    sim.join("staying", &["work"], 4, &[]);
    sim.succeed(0);
    sim.run_to_quiet();
    assert_eq!(sim.status(id), WorkflowStatus::Succeeded);
    assert!(sim.dispatch_log.len() > dispatched, "later tasks ran");
    assert!(
        sim.dispatch_log[dispatched..]
            .iter()
            .all(|(to, _)| *to == agent("staying")),
        "nothing assigned to the draining agent after its acknowledgement"
    );
}
