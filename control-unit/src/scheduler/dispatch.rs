//! Dispatch: which ready task goes next, and to which agent.
//!
//! Per skill, one FIFO per priority class. The next task is the queue head with the
//! earliest `ready_at + aging[class]`: strict priority over short waits, FIFO over long
//! ones, so nothing starves. The agent is the eligible one (skill, free credit, not
//! draining, route labels) that the route policy ranks first: most free slots, or lowest
//! `cost_bps` then most free slots.

use std::cmp::Reverse;
use std::sync::Arc;

use serde_json::Value;

use super::AgentSlot;
use super::{
    Assignment, AttemptOutcome, AttemptRecord, Change, Command, Millis, ReadyEntry, Scheduler,
    Slot, Timer, TimerKind, record,
};
use paygrid_telemetry::context::TraceParent;

use crate::model::{AgentId, TaskStatus, WorkflowStatus};
use crate::spec::{RoutePolicy, Scope};

/// Resolves template references against a workflow's input and task outputs.
pub(super) struct WorkflowScope<'a>(pub &'a super::Workflow);

impl Scope for WorkflowScope<'_> {
    fn input(&self, name: &str) -> Option<Value> {
        self.0.input.get(name).cloned()
    }
    fn task_output(&self, task: &str) -> Option<Value> {
        let index = self.0.spec.task_index(task)?;
        let output = self.0.tasks[index as usize].run.output.as_ref()?;
        serde_json::from_str(output).ok()
    }
    fn workflow_id(&self) -> String {
        self.0.id.to_string()
    }
    fn workflow_name(&self) -> String {
        self.0.spec.name.clone()
    }
    fn label(&self, name: &str) -> Option<String> {
        self.0.labels.get(name).cloned()
    }
}

impl Scheduler {
    pub(super) fn dispatch_skill(&mut self, skill: &Arc<str>, out: &mut Vec<Command>) {
        // An operator paused this skill: its tasks stay queued until released.
        if !self.holds.skills.is_empty() && self.holds.skills.contains_key(&**skill) {
            return;
        }
        let mut parked: Vec<(usize, ReadyEntry, Option<Arc<str>>)> = Vec::new();
        loop {
            if !self.skill_has_credit(skill) || parked.len() >= self.config.parked_scan_max {
                break;
            }
            let Some((class, entry, key)) = self.pop_next(skill) else {
                break;
            };
            if !self.entry_is_current(&entry) {
                continue;
            }
            match self.choose_agent(skill, entry.slot) {
                Ok(Choice::Agent(agent)) => self.assign(skill, agent, entry, out),
                Ok(Choice::Busy) => parked.push((class, entry, key)),
                Ok(Choice::Limited(retry_at)) => {
                    self.limits.held_back(skill, retry_at);
                    parked.push((class, entry, key));
                }
                Err(error) => self.fail_task(entry.slot, error, out),
            }
        }
        if let Some(queue) = self.skills.get_mut(skill) {
            for (class, entry, key) in parked.into_iter().rev() {
                queue.ready[class].push_front(entry, key);
            }
        }
    }

    fn skill_has_credit(&self, skill: &Arc<str>) -> bool {
        self.skills.get(skill).is_some_and(|queue| {
            queue.agents.iter().any(|id| {
                self.agents
                    .get(id)
                    .is_some_and(|a| a.credits > 0 && !a.draining)
            })
        })
    }

    /// Pops the queue head with the earliest `ready_at + aging[class]` (with its fairness
    /// key, to put it back under if it cannot go).
    fn pop_next(&mut self, skill: &Arc<str>) -> Option<(usize, ReadyEntry, Option<Arc<str>>)> {
        let aging = self.config.priority_aging;
        let queue = self.skills.get_mut(skill)?;
        let class = (0..4)
            .filter_map(|class| {
                queue.ready[class]
                    .front()
                    .map(|e| (e.ready_at + aging[class].as_millis() as u64, class))
            })
            .min()?
            .1;
        queue.ready[class]
            .pop_front()
            .map(|(entry, key)| (class, entry, key))
    }

    fn entry_is_current(&self, entry: &ReadyEntry) -> bool {
        self.workflows
            .get(&entry.slot.workflow)
            .is_some_and(|workflow| {
                // In a compensating workflow, tasks still run to settle their outcome.
                let running = matches!(
                    workflow.status,
                    WorkflowStatus::Running | WorkflowStatus::Compensating
                );
                // A paused workflow's entries are dropped; resuming queues them again.
                running
                    && workflow.paused.is_none()
                    && workflow.execution(entry.slot).is_some_and(|e| {
                        e.status == TaskStatus::Ready && e.attempt == entry.attempt
                    })
            })
    }

    /// The agents a slot's route admits (its labels, or any when `fallback` finds none),
    /// whether or not they have room now, and the route's policy.
    fn route_agents(
        &self,
        skill: &str,
        slot: Slot,
    ) -> Result<(Vec<&AgentSlot>, RoutePolicy, bool), String> {
        let workflow = &self.workflows[&slot.workflow];
        let compiled = &workflow.spec.tasks[slot.task as usize];
        let route = if slot.compensation {
            compiled.compensate.as_ref().and_then(|c| c.route.as_ref())
        } else {
            compiled.route.as_ref()
        };
        let mut wanted: Vec<(String, String)> = Vec::new();
        if let Some(route) = route {
            let scope = WorkflowScope(workflow);
            for (key, template) in &route.labels {
                let value = template
                    .resolve(&scope)
                    .map_err(|error| format!("route label `{key}`: {error}"))?;
                let value = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                wanted.push((key.clone(), value));
            }
        }
        let policy = route.map_or(RoutePolicy::LeastLoaded, |r| r.policy);
        let ignore_breaker = route.is_some_and(|r| r.ignore_breaker);
        let Some(queue) = self.skills.get(skill) else {
            return Ok((Vec::new(), policy, ignore_breaker));
        };
        let offering = queue.agents.iter().filter_map(|id| self.agents.get(id));
        let matches =
            |agent: &&AgentSlot| wanted.iter().all(|(k, v)| agent.labels.get(k) == Some(v));
        let mut admitted: Vec<&AgentSlot> = offering.clone().filter(matches).collect();
        if admitted.is_empty() && route.is_some_and(|r| r.fallback) {
            admitted = offering.collect();
        }
        Ok((admitted, policy, ignore_breaker))
    }

    /// The agent a slot should go to now; `Busy` when every eligible agent is busy, or
    /// its gateway's breaker is open; `Limited` when a limit holds it back (every
    /// eligible agent's gateway, or the task itself).
    fn choose_agent(&self, skill: &Arc<str>, slot: Slot) -> Result<Choice, String> {
        let (admitted, policy, ignore_breaker) = self.route_agents(skill, slot)?;
        let now = self.now;
        let mut limited: Option<Option<Millis>> = None;
        let scope = WorkflowScope(&self.workflows[&slot.workflow]);
        let critical = self.workflows[&slot.workflow].priority == crate::model::Priority::Critical;
        if !self.limits.is_empty()
            && let Err(held) = self.limits.check(now, skill, None, &scope, critical)
        {
            return Ok(Choice::Limited(held.retry_at));
        }
        let mut hold = |retry_at: Option<Millis>| {
            let earliest = match (limited.flatten(), retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            limited = Some(earliest);
        };
        let candidates: Vec<&AgentSlot> = admitted
            .into_iter()
            .filter(|agent| agent.credits > 0 && !agent.draining)
            // A gateway at its limit takes no more: routed work overflows to another.
            .filter(|agent| {
                let gateway = agent.labels.get("gateway");
                if self.limits.is_empty() || gateway.is_none() {
                    return true;
                }
                match self
                    .limits
                    .check(now, skill, gateway.map(String::as_str), &scope, critical)
                {
                    Ok(()) => true,
                    Err(held) => {
                        hold(held.retry_at);
                        false
                    }
                }
            })
            .collect();
        let candidates = candidates
            .into_iter()
            // An open breaker takes its gateway out at once; half-open, a few trials.
            .filter(|agent| {
                ignore_breaker
                    || agent
                        .labels
                        .get("gateway")
                        .is_none_or(|gateway| self.breakers.allows(gateway))
            })
            // A gateway an operator paused gets nothing, probes included.
            .filter(|agent| {
                self.holds.gateways.is_empty()
                    || agent
                        .labels
                        .get("gateway")
                        .is_none_or(|gateway| !self.holds.gateways.contains_key(gateway))
            });
        let chosen = match policy {
            RoutePolicy::LeastLoaded => {
                candidates.max_by_key(|a| (a.credits, Reverse(a.id.clone())))
            }
            RoutePolicy::Cheapest => {
                candidates.min_by_key(|a| (a.cost_bps, Reverse(a.credits), a.id.clone()))
            }
            RoutePolicy::CheapestHealthy => {
                let all: Vec<_> = candidates.collect();
                let healthy: Vec<_> = all
                    .iter()
                    .filter(|a| a.unhealthy_until <= now)
                    .copied()
                    .collect();
                let pool = if healthy.is_empty() { all } else { healthy };
                pool.into_iter()
                    .min_by_key(|a| (a.cost_bps, Reverse(a.credits), a.id.clone()))
            }
        };
        Ok(match (chosen, limited) {
            (Some(agent), _) => Choice::Agent(agent.id.clone()),
            (None, Some(retry_at)) => Choice::Limited(retry_at),
            (None, None) => Choice::Busy,
        })
    }

    /// Why a ready task has not been dispatched, for status output: no agent its route
    /// admits, every such gateway's breaker open, or no free slot.
    pub fn waiting_reason(&self, slot: Slot) -> String {
        if let Some(reason) = self.wait_reason(slot) {
            return reason;
        }
        if let Some(reason) = self.approval_reason(slot) {
            return reason;
        }
        let Some(skill) = self.workflows.get(&slot.workflow).and_then(|w| {
            let compiled = &w.spec.tasks[slot.task as usize];
            if slot.compensation {
                compiled.compensate.as_ref().map(|c| c.skill.as_str())
            } else {
                compiled.skill()
            }
        }) else {
            return String::new();
        };
        let (admitted, ignore_breaker) = match self.route_agents(skill, slot) {
            Ok((admitted, _, ignore_breaker)) => (admitted, ignore_breaker),
            Err(error) => return error,
        };
        if admitted.is_empty() {
            return format!("no connected agent offers skill {skill}");
        }
        if let Some(held) =
            self.held_reason(skill, admitted.iter().map(|a| a.labels.get("gateway")))
        {
            return held;
        }
        if !self.limits.is_empty() {
            let scope = WorkflowScope(&self.workflows[&slot.workflow]);
            let critical =
                self.workflows[&slot.workflow].priority == crate::model::Priority::Critical;
            if let Err(held) = self.limits.check(self.now, skill, None, &scope, critical) {
                return held.reason;
            }
            let held: Vec<String> = admitted
                .iter()
                .filter_map(|a| {
                    let gateway = a.labels.get("gateway")?;
                    self.limits
                        .check(self.now, skill, Some(gateway), &scope, critical)
                        .err()
                })
                .map(|held| held.reason)
                .collect();
            if held.len() == admitted.len()
                && let Some(first) = held.into_iter().next()
            {
                return first;
            }
        }
        let mut open: Vec<&str> = admitted
            .iter()
            .filter_map(|a| a.labels.get("gateway"))
            .filter(|gateway| !self.breakers.allows(gateway))
            .map(String::as_str)
            .collect();
        let all_gated = !ignore_breaker
            && admitted.iter().all(|a| {
                a.labels
                    .get("gateway")
                    .is_some_and(|g| !self.breakers.allows(g))
            });
        if all_gated {
            open.sort_unstable();
            open.dedup();
            let until = open
                .iter()
                .filter_map(|g| self.breakers.get(g))
                .map(|b| b.until)
                .min()
                .unwrap_or(self.now);
            return format!(
                "waiting: circuit breaker open for gateway {} (trial tasks in {} ms)",
                open.join(", "),
                until.saturating_sub(self.now)
            );
        }
        format!(
            "waiting for a free slot on one of {} agents offering {skill}",
            admitted.len()
        )
    }

    fn assign(
        &mut self,
        skill: &Arc<str>,
        agent: AgentId,
        entry: ReadyEntry,
        out: &mut Vec<Command>,
    ) {
        let now = self.now;
        let slot = entry.slot;
        let prepared = match self.prepare(slot) {
            Ok(prepared) => prepared,
            Err(error) => {
                self.fail_task(slot, format!("input: {error}"), out);
                return;
            }
        };
        let Some((attempt, lookups, settling)) = self.open_attempt(slot, &agent, prepared.deadline)
        else {
            return;
        };
        if !self.limits.is_empty() {
            let gateway = self
                .agents
                .get(&agent)
                .and_then(|a| a.labels.get("gateway"))
                .map(String::as_str);
            let scope = WorkflowScope(&self.workflows[&slot.workflow]);
            self.limits
                .acquire(now, slot, attempt, skill, gateway, &scope);
        }
        record(
            out,
            slot.workflow,
            now,
            Change::task(
                slot.task,
                slot.compensation,
                TaskStatus::Dispatched,
                attempt,
                Some(agent.clone()),
                None,
            )
            .with_attempt_facts(Some(prepared.deadline), None, lookups, settling),
        );
        out.push(Command::Dispatch {
            agent,
            assignment: Box::new(Assignment {
                slot,
                attempt,
                task_id: prepared.task_id,
                skill: skill.clone(),
                input_json: prepared.input_json,
                deadline: prepared.deadline,
                idempotency_key: prepared.idempotency_key,
                traceparent: crate::traces::attempt_context(prepared.root, slot, attempt),
                tracestate: prepared.tracestate,
                workflow_name: prepared.workflow_name,
                settle: settling,
            }),
        });
    }

    /// What an assignment of `slot` carries, from the workflow as it is now: its input
    /// resolved from the templates (an error fails the task), key, deadline and trace.
    fn prepare(&self, slot: Slot) -> Result<Prepared, String> {
        let workflow = &self.workflows[&slot.workflow];
        let compiled = &workflow.spec.tasks[slot.task as usize];
        let (template, timeout) = match (&compiled.compensate, slot.compensation) {
            (Some(compensation), true) => (&compensation.input, compensation.timeout),
            _ => (&compiled.input, compiled.timeout),
        };
        let mut input = template
            .resolve(&WorkflowScope(workflow))
            .map_err(|e| e.to_string())?;
        if compiled.is_checkpoint() && !slot.compensation {
            input = checkpoint_input(workflow, input);
        }
        // A retried task whose attempts all failed definitely runs under a new key
        // generation (scheduler::operations).
        let generation = workflow
            .execution(slot)
            .map_or(0, |execution| execution.generation);
        let idempotency_key = match (slot.compensation, generation) {
            (true, _) => format!("{}:{}:compensate", slot.workflow, compiled.id),
            (false, 0) => format!("{}:{}", slot.workflow, compiled.id),
            (false, generation) => format!("{}:{}:r{generation}", slot.workflow, compiled.id),
        };
        Ok(Prepared {
            input_json: serde_json::to_vec(&input)
                .expect("a resolved input is a JSON value and always serialises"),
            idempotency_key,
            task_id: compiled.id.clone(),
            workflow_name: workflow.spec.name.clone(),
            root: TraceParent::parse(&workflow.traceparent),
            tracestate: workflow.tracestate.clone(),
            deadline: self.now + timeout.as_millis() as u64,
        })
    }

    /// Opens the next attempt of `slot` on `agent`: its lease and deadline, the agent's
    /// credit, one timer. Returns (attempt, lookups, settling).
    fn open_attempt(
        &mut self,
        slot: Slot,
        agent: &AgentId,
        deadline: Millis,
    ) -> Option<(u32, u32, bool)> {
        let now = self.now;
        let lease_until = now + self.config.lease_ttl.as_millis() as u64;
        let workflow = self.workflows.get_mut(&slot.workflow)?;
        let execution = workflow.execution_mut(slot)?;
        let unrecorded = execution
            .history
            .last()
            .is_none_or(|h| h.attempt != execution.attempt);
        if execution.attempt_open && execution.attempt > 0 && unrecorded {
            // Only after a restart, for an attempt whose end the log does not hold (its
            // agent was lost and it was queued again): this one replaces it, and its late
            // answer no longer counts.
            execution.history.push(AttemptRecord {
                attempt: execution.attempt,
                agent: execution.agent.clone(),
                started_at: execution.attempt_started_at,
                finished_at: now,
                outcome: AttemptOutcome::Interrupted,
                error: Some("no answer recorded before a control-unit restart; replaced".into()),
                lookup: execution.settling,
            });
        }
        execution.attempt += 1;
        if execution.settling {
            execution.lookups += 1;
        }
        execution.attempt_open = true;
        execution.status = TaskStatus::Dispatched;
        execution.agent = Some(agent.clone());
        execution.attempt_started_at = now;
        execution.deadline = deadline;
        execution.lease_until = lease_until;
        if execution.started_at == 0 {
            execution.started_at = now;
        }
        let opened = (execution.attempt, execution.lookups, execution.settling);
        workflow.updated_at = now;
        if let Some(agent_slot) = self.agents.get_mut(agent) {
            agent_slot.credits -= 1;
            agent_slot.assigned.insert(slot, opened.0);
            if let Some(gateway) = agent_slot.labels.get("gateway") {
                self.breakers.dispatched(gateway, (slot, opened.0));
            }
        }
        // One timer per attempt, at the earlier of its timeout and its lease; it re-arms
        // itself for whichever is left (see `Scheduler::fire`).
        self.timers.push(Reverse(Timer {
            at: deadline.min(lease_until),
            slot,
            attempt: opened.0,
            kind: TimerKind::Attempt,
        }));
        Some(opened)
    }
}

/// Where a ready task goes now.
enum Choice {
    Agent(AgentId),
    /// Every eligible agent is busy (or its gateway's breaker is open).
    Busy,
    /// A limit holds it back; a rate limit says when it lets the next one through.
    Limited(Option<Millis>),
}

/// An assignment's content, prepared before its attempt opens.
struct Prepared {
    input_json: Vec<u8>,
    idempotency_key: String,
    task_id: String,
    workflow_name: String,
    root: Option<TraceParent>,
    tracestate: String,
    deadline: Millis,
}

/// A checkpoint's verification sees the workflow input and every finished output.
fn checkpoint_input(workflow: &super::Workflow, with: Value) -> Value {
    let mut outputs = serde_json::Map::new();
    for (index, task) in workflow.tasks.iter().enumerate() {
        if let Some(output) = &task.run.output {
            let value = serde_json::from_str(output).unwrap_or(Value::Null);
            outputs.insert(workflow.task_id(index as u32).to_owned(), value);
        }
    }
    serde_json::json!({
        "workflow_id": workflow.id.to_string(),
        "inputs": *workflow.input,
        "outputs": outputs,
        "with": with,
    })
}
