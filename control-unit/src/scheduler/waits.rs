//! Dependencies across workflows (`waitFor`): a task that waits until `count` other
//! workflows carrying some labels have passed a checkpoint (or ended).
//!
//! Cheap by construction: a wait is indexed by its first label (`key=value`), and a
//! workflow that passes a checkpoint or ends looks up only the waits indexed by its own
//! labels, so thousands of workflows arriving at one batch cost one lookup each, never a
//! scan. A wait scans the workflows once, when it starts (and once after a restart,
//! `recount_waits`): what arrived before it started counts too.
//!
//! Durable through the workflows themselves: what arrived is recomputed from their state
//! after a restart. Workflows no longer in memory (terminal ones beyond
//! `workflows_retained_max`) are not counted then; see docs/dependencies.md.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::dispatch::WorkflowScope;
use super::{Command, Scheduler, Slot, Timer, TimerKind, Workflow};
use crate::model::{TaskStatus, WorkflowId};
use crate::spec::{TaskKind, WaitFor};

/// One waiting task.
#[derive(Debug, Clone)]
pub struct WaitState {
    pub labels: Vec<(String, String)>,
    pub checkpoint: Option<String>,
    pub count: u32,
    pub arrived: HashSet<WorkflowId>,
    pub continue_on_timeout: bool,
}

impl WaitState {
    fn selects(&self, workflow: &Workflow) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| workflow.labels.get(k) == Some(v))
    }

    /// Whether `workflow` has passed what this wait waits for.
    fn passed(&self, workflow: &Workflow) -> bool {
        if workflow.status.is_terminal() {
            return true;
        }
        self.checkpoint.as_deref().is_some_and(|checkpoint| {
            workflow
                .spec
                .task_index(checkpoint)
                .is_some_and(|i| workflow.tasks[i as usize].run.status == TaskStatus::Succeeded)
        })
    }

    fn describe(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let what = match &self.checkpoint {
            Some(checkpoint) => format!("to pass `{checkpoint}`"),
            None => "to end".to_owned(),
        };
        format!(
            "waiting for {} of {} workflows with {} {what}",
            self.arrived.len(),
            self.count,
            labels.join(",")
        )
    }
}

/// Every waiting task, indexed by its first label.
#[derive(Debug, Default)]
pub struct Waits {
    by_slot: HashMap<Slot, WaitState>,
    /// label key → label value → waits whose first label it is (looked up by `&str`).
    index: HashMap<String, HashMap<String, Vec<Slot>>>,
}

impl Waits {
    fn insert(&mut self, slot: Slot, state: WaitState) {
        if let Some((key, value)) = state.labels.first() {
            self.index
                .entry(key.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(slot);
        }
        self.by_slot.insert(slot, state);
    }

    fn remove(&mut self, slot: Slot) -> Option<WaitState> {
        let state = self.by_slot.remove(&slot)?;
        if let Some((key, value)) = state.labels.first()
            && let Some(values) = self.index.get_mut(key)
        {
            if let Some(slots) = values.get_mut(value) {
                slots.retain(|s| *s != slot);
                if slots.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.index.remove(key);
            }
        }
        Some(state)
    }
}

impl Scheduler {
    /// A `waitFor` task's needs are met: it starts waiting (recorded unless it resumes
    /// after a restart), counts what arrived already, and may be done at once.
    pub(super) fn start_wait(
        &mut self,
        id: WorkflowId,
        task: u32,
        resumed: bool,
        out: &mut Vec<Command>,
    ) {
        let slot = Slot {
            workflow: id,
            task,
            compensation: false,
        };
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        let spec = workflow.spec.clone();
        let TaskKind::Wait(wait) = &spec.tasks[task as usize].kind else {
            return;
        };
        let labels = match resolve_labels(wait, workflow) {
            Ok(labels) => labels,
            Err(error) => {
                self.fail_task(slot, error, out);
                return;
            }
        };
        let mut state = WaitState {
            labels,
            checkpoint: wait.checkpoint.clone(),
            count: wait.count,
            arrived: HashSet::new(),
            continue_on_timeout: wait.continue_on_timeout,
        };
        for other in self.workflows.values() {
            if other.id != id && state.selects(other) && state.passed(other) {
                state.arrived.insert(other.id);
            }
        }
        let Some(started_at) = self.begin_waiting(id, task, resumed, |_| state.describe(), out)
        else {
            return;
        };
        if let Some(timeout) = wait.timeout {
            self.timers.push(Reverse(Timer {
                at: started_at + timeout.as_millis() as u64,
                slot,
                attempt: 0,
                kind: TimerKind::Wait,
            }));
        }
        self.waits.insert(slot, state);
        self.check_wait(slot, out);
    }

    /// A workflow passed a checkpoint or ended: the waits that select it count it.
    pub(super) fn workflow_progressed(&mut self, id: WorkflowId, out: &mut Vec<Command>) {
        if self.waits.by_slot.is_empty() {
            return; // the common case: nothing waits on anything
        }
        let Some(workflow) = self.workflows.get(&id) else {
            return;
        };
        let mut candidates: Vec<Slot> = workflow
            .labels
            .iter()
            .filter_map(|(k, v)| self.waits.index.get(k.as_str())?.get(v.as_str()))
            .flatten()
            .copied()
            .filter(|slot| slot.workflow != id)
            .collect();
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut reached = Vec::new();
        for slot in candidates {
            if let Some(state) = self.waits.by_slot.get_mut(&slot)
                && state.selects(workflow)
                && state.passed(workflow)
                && state.arrived.insert(id)
                && state.arrived.len() >= state.count as usize
            {
                reached.push(slot);
            }
        }
        for slot in reached {
            self.check_wait(slot, out);
        }
    }

    /// Ends a wait whose count is reached (or whose task is no longer waiting).
    fn check_wait(&mut self, slot: Slot, out: &mut Vec<Command>) {
        let still_waiting = self
            .workflows
            .get(&slot.workflow)
            .and_then(|w| w.execution(slot))
            .is_some_and(|e| e.status == TaskStatus::Running);
        if !still_waiting {
            self.waits.remove(slot);
            return;
        }
        let reached = self
            .waits
            .by_slot
            .get(&slot)
            .is_some_and(|s| s.arrived.len() >= s.count as usize);
        if reached && let Some(state) = self.waits.remove(slot) {
            self.end_wait(slot, state, false, out);
        }
    }

    fn end_wait(&mut self, slot: Slot, state: WaitState, timed_out: bool, out: &mut Vec<Command>) {
        let mut arrived: Vec<String> = state.arrived.iter().map(ToString::to_string).collect();
        arrived.sort_unstable();
        let output = serde_json::json!({
            "count": arrived.len(),
            "expected": state.count,
            "timed_out": timed_out,
            "workflows": arrived,
        });
        let detail = format!("{} of {} workflows arrived", arrived.len(), state.count);
        let output: Arc<str> = output.to_string().into();
        self.finish_task(
            slot.workflow,
            slot.task,
            TaskStatus::Succeeded,
            Some(output),
            Some(detail),
            out,
        );
    }

    /// A wait's timeout: it continues with what arrived, or fails, as its spec says.
    pub(super) fn wait_timed_out(&mut self, slot: Slot, out: &mut Vec<Command>) {
        let Some(state) = self.waits.remove(slot) else {
            return;
        };
        if state.continue_on_timeout {
            self.end_wait(slot, state, true, out);
        } else {
            let error = format!("timed out {}", state.describe());
            self.fail_task(slot, error, out);
        }
    }

    /// After a restart, once every workflow is back: count again what each wait sees.
    pub fn recount_waits(&mut self, out: &mut Vec<Command>) {
        let slots: Vec<Slot> = self.waits.by_slot.keys().copied().collect();
        for slot in slots {
            let arrived: HashSet<WorkflowId> = match self.waits.by_slot.get(&slot) {
                Some(state) => self
                    .workflows
                    .values()
                    .filter(|w| w.id != slot.workflow && state.selects(w) && state.passed(w))
                    .map(|w| w.id)
                    .collect(),
                None => continue,
            };
            if let Some(state) = self.waits.by_slot.get_mut(&slot) {
                state.arrived = arrived;
            }
            self.check_wait(slot, out);
        }
    }

    /// What a waiting task waits for, for `status`.
    pub(super) fn wait_reason(&self, slot: Slot) -> Option<String> {
        self.waits.by_slot.get(&slot).map(WaitState::describe)
    }
}

fn resolve_labels(wait: &WaitFor, workflow: &Workflow) -> Result<Vec<(String, String)>, String> {
    let scope = WorkflowScope(workflow);
    wait.labels
        .iter()
        .map(|(key, template)| {
            let value = template
                .resolve(&scope)
                .map_err(|error| format!("waitFor label `{key}`: {error}"))?;
            Ok((
                key.clone(),
                match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                },
            ))
        })
        .collect()
}
