//! The state the scheduler core keeps per workflow, task and agent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::model::{AgentId, Priority, TaskStatus, WorkflowId, WorkflowStatus};
use crate::spec::CompiledSpec;

/// Unix time in milliseconds: the core's only notion of time, always passed in.
pub type Millis = u64;

/// One schedulable unit: a task of a workflow, or that task's compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub workflow: WorkflowId,
    pub task: u32,
    pub compensation: bool,
}

impl Slot {
    /// Bit 31 of the wire `task_index` marks a compensation.
    pub const COMPENSATION_BIT: u32 = 1 << 31;

    pub fn wire_index(self) -> u32 {
        if self.compensation {
            self.task | Self::COMPENSATION_BIT
        } else {
            self.task
        }
    }

    pub fn from_wire(workflow: WorkflowId, index: u32) -> Self {
        Self {
            workflow,
            task: index & !Self::COMPENSATION_BIT,
            compensation: index & Self::COMPENSATION_BIT != 0,
        }
    }
}

/// One finished (or abandoned) attempt, for status and history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub agent: Option<AgentId>,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A settlement lookup (see [`Execution::settling`]), not an attempt at the effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lookup: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Retryable,
    Permanent,
    Timeout,
    LeaseExpired,
    AgentLost,
    Cancelled,
    /// Replaced by a new attempt after a control-unit restart, its outcome unknown.
    Interrupted,
    /// The agent answered that the effect may or may not have been taken.
    Unknown,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::LeaseExpired => "lease_expired",
            Self::AgentLost => "agent_lost",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::Unknown => "unknown",
        }
    }

    /// The attempt may have taken effect without the control unit learning its result:
    /// such an outcome is settled before the task may fail.
    pub fn is_unknown(self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::LeaseExpired
                | Self::AgentLost
                | Self::Cancelled
                | Self::Interrupted
                | Self::Unknown
        )
    }
}

/// The running state of a task or of a compensation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Execution {
    pub status: TaskStatus,
    /// Dispatches so far: attempts at the effect plus settlement lookups. The wire
    /// attempt number; `attempt - lookups` is what `max_attempts` bounds.
    pub attempt: u32,
    /// Settlement lookups dispatched so far (in this run).
    #[serde(default)]
    pub lookups: u32,
    /// Dispatches before an operator's retry or re-drive reset the task: `max_attempts`
    /// bounds the attempts after it.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub attempts_before: u32,
    /// The idempotency key's generation: 0 is `WORKFLOW:TASK`; a retry of a task whose
    /// attempts all failed definitely moves it on (docs/operations.md).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub generation: u32,
    /// The attempts ran out and one of them may have taken effect: the next dispatches
    /// are settlement lookups (same key) until an answer is definite.
    #[serde(default)]
    pub settling: bool,
    /// A result for `attempt` is still expected and will be accepted.
    pub attempt_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub attempt_started_at: Millis,
    /// When the current attempt became ready (queued for an agent).
    #[serde(default)]
    pub ready_at: Millis,
    pub deadline: Millis,
    pub lease_until: Millis,
    pub retry_at: Millis,
    /// Raw JSON output on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub history: Vec<AttemptRecord>,
}

impl Execution {
    pub fn new(status: TaskStatus) -> Self {
        Self {
            status,
            attempt: 0,
            lookups: 0,
            attempts_before: 0,
            generation: 0,
            settling: false,
            attempt_open: false,
            agent: None,
            started_at: 0,
            finished_at: 0,
            attempt_started_at: 0,
            ready_at: 0,
            deadline: 0,
            lease_until: 0,
            retry_at: 0,
            output: None,
            error: None,
            history: Vec::new(),
        }
    }

    /// Dispatched or running, with a result still expected.
    pub fn is_in_flight(&self) -> bool {
        matches!(self.status, TaskStatus::Dispatched | TaskStatus::Running)
    }

    /// Attempts at the effect so far (settlement lookups not counted).
    pub fn effect_attempts(&self) -> u32 {
        self.attempt
            .saturating_sub(self.lookups)
            .saturating_sub(self.attempts_before)
    }

    /// `attempt` is the current attempt, its agent was lost (or the control unit
    /// restarted) and it has not been replaced yet: the agent may still run it, so its
    /// report or late result is taken back.
    pub fn is_lost_attempt(&self, attempt: u32) -> bool {
        self.attempt == attempt
            && matches!(self.status, TaskStatus::Backoff | TaskStatus::Ready)
            && self.history.last().is_some_and(|h| {
                h.attempt == attempt
                    && matches!(
                        h.outcome,
                        AttemptOutcome::AgentLost | AttemptOutcome::Interrupted
                    )
            })
    }

    /// How the current attempt ended, once the history holds it.
    pub fn current_outcome(&self) -> Option<AttemptOutcome> {
        self.history
            .last()
            .filter(|h| h.attempt == self.attempt && self.attempt > 0)
            .map(|h| h.outcome)
    }
}

/// Per-task state of a workflow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskState {
    pub run: Execution,
    /// Needs not yet finished.
    pub pending_needs: u32,
    /// The compensation, once the task succeeded and has one.
    /// Boxed: most tasks never have one, and a waiting workflow should stay under 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Box<Execution>>,
}

/// A workflow instance.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: WorkflowId,
    pub spec: Arc<CompiledSpec>,
    pub input: Arc<Value>,
    pub priority: Priority,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    /// The root span's context; task and attempt span ids derive from it.
    pub traceparent: String,
    /// The caller's span (hex) the root span is a child of; empty for a new trace.
    pub trace_parent_span: String,
    pub tracestate: String,
    pub status: WorkflowStatus,
    pub tasks: Vec<TaskState>,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Tasks not yet in a terminal state.
    pub tasks_remaining: u32,
    /// Succeeded tasks with a compensation, in completion order; compensated from the back.
    pub compensation_stack: Vec<u32>,
    /// The compensation running now.
    pub compensating: Option<u32>,
    pub compensation_failures: u32,
    pub cancel_requested: bool,
    /// Paused by an operator (why, and by whom): nothing of it is dispatched.
    pub paused: Option<String>,
}

impl Workflow {
    pub fn task_id(&self, index: u32) -> &str {
        &self.spec.tasks[index as usize].id
    }

    pub fn execution(&self, slot: Slot) -> Option<&Execution> {
        let task = self.tasks.get(slot.task as usize)?;
        if slot.compensation {
            task.compensation.as_deref()
        } else {
            Some(&task.run)
        }
    }

    pub fn execution_mut(&mut self, slot: Slot) -> Option<&mut Execution> {
        let task = self.tasks.get_mut(slot.task as usize)?;
        if slot.compensation {
            task.compensation.as_deref_mut()
        } else {
            Some(&mut task.run)
        }
    }
}

/// A connected agent as the core sees it.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub id: AgentId,
    pub skills: Vec<Arc<str>>,
    pub labels: BTreeMap<String, String>,
    /// Parsed `cost_bps` label; `u32::MAX` when absent.
    pub cost_bps: u32,
    pub max_concurrency: u32,
    /// Free slots the agent granted and the core has not used yet.
    pub credits: u32,
    pub draining: bool,
    /// Slot → attempt of every assignment without a result yet.
    pub assigned: HashMap<Slot, u32>,
    pub consecutive_failures: u32,
    pub unhealthy_until: Millis,
    pub completed: u64,
}

/// A task waiting for an agent.
#[derive(Debug, Clone, Copy)]
pub struct ReadyEntry {
    pub slot: Slot,
    /// The task's `attempt` when it became ready; a mismatch means the entry is stale.
    pub attempt: u32,
    pub ready_at: Millis,
}

/// Ready tasks and agents of one skill.
#[derive(Debug, Default)]
pub struct SkillQueue {
    pub agents: Vec<AgentId>,
    /// One queue per priority class.
    pub ready: [ClassQueue; 4],
    pub dirty: bool,
}

impl SkillQueue {
    pub fn ready_len(&self) -> usize {
        self.ready.iter().map(ClassQueue::len).sum()
    }
}

/// One priority class's ready tasks of a skill: FIFO, or, when a fairness key is
/// configured, round robin over the keys' own FIFOs (each key one task per turn), so a
/// burst of one key delays another key's task by at most one task per busy key.
#[derive(Debug, Default)]
pub struct ClassQueue {
    /// Every entry, without fairness.
    fifo: VecDeque<ReadyEntry>,
    /// The keys with entries, in turn order (the front key goes next).
    turns: VecDeque<Arc<str>>,
    by_key: HashMap<Arc<str>, VecDeque<ReadyEntry>>,
    fair_len: usize,
}

impl ClassQueue {
    pub fn len(&self) -> usize {
        self.fifo.len() + self.fair_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an entry: to the FIFO (`key` `None`), or to its key's queue.
    pub fn push_back(&mut self, entry: ReadyEntry, key: Option<Arc<str>>) {
        let Some(key) = key else {
            self.fifo.push_back(entry);
            return;
        };
        let queue = self.by_key.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(key);
        }
        queue.push_back(entry);
        self.fair_len += 1;
    }

    /// Puts back an entry taken by `pop_front` (its key goes first again).
    pub fn push_front(&mut self, entry: ReadyEntry, key: Option<Arc<str>>) {
        let Some(key) = key else {
            self.fifo.push_front(entry);
            return;
        };
        let queue = self.by_key.entry(key.clone()).or_default();
        if let Some(at) = self.turns.iter().position(|k| *k == key) {
            self.turns.remove(at);
        }
        self.turns.push_front(key);
        queue.push_front(entry);
        self.fair_len += 1;
    }

    /// The entry that goes next.
    pub fn front(&self) -> Option<&ReadyEntry> {
        match self.turns.front() {
            Some(key) => self.by_key.get(key).and_then(VecDeque::front),
            None => self.fifo.front(),
        }
    }

    /// Takes the next entry (and its key); the key's turn passes to the next key.
    pub fn pop_front(&mut self) -> Option<(ReadyEntry, Option<Arc<str>>)> {
        let Some(key) = self.turns.pop_front() else {
            return self.fifo.pop_front().map(|entry| (entry, None));
        };
        let queue = self.by_key.get_mut(&key)?;
        let entry = queue.pop_front()?;
        self.fair_len -= 1;
        if queue.is_empty() {
            self.by_key.remove(&key);
        } else {
            self.turns.push_back(key.clone());
        }
        Some((entry, Some(key)))
    }

    /// Every entry, emptying the queue (to sort them again under a new fairness key).
    pub fn drain(&mut self) -> Vec<ReadyEntry> {
        let mut all: Vec<ReadyEntry> = self.fifo.drain(..).collect();
        for key in std::mem::take(&mut self.turns) {
            if let Some(queue) = self.by_key.remove(&key) {
                all.extend(queue);
            }
        }
        self.by_key.clear();
        self.fair_len = 0;
        all.sort_by_key(|e| e.ready_at);
        all
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    Backoff,
    /// An attempt's timeout and lease, whichever comes first.
    Attempt,
    /// A `waitFor` task's timeout.
    Wait,
    /// An approval's timeout: its default decision applies.
    Approval,
}

/// A deadline; stale timers are ignored when they fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Millis,
    pub slot: Slot,
    pub attempt: u32,
    pub kind: TimerKind,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u32) -> ReadyEntry {
        ReadyEntry {
            slot: Slot {
                workflow: WorkflowId(u128::from(n)),
                task: 0,
                compensation: false,
            },
            attempt: n,
            ready_at: u64::from(n),
        }
    }

    proptest! {
        /// Whatever the keys and the pops and put-backs in between, every entry comes
        /// out once, each key's entries in their order, and while two keys have entries
        /// neither goes twice in a row.
        #[test]
        fn round_robin_over_keys_loses_nothing_and_takes_turns(
            keys in proptest::collection::vec(0u8..4, 1..200),
            put_backs in proptest::collection::vec(any::<bool>(), 0..50),
        ) {
            let mut queue = ClassQueue::default();
            for (n, key) in keys.iter().enumerate() {
                queue.push_back(entry(n as u32), Some(Arc::from(key.to_string())));
            }
            prop_assert_eq!(queue.len(), keys.len());
            let mut out: Vec<(u32, Arc<str>)> = Vec::new();
            let mut put_backs = put_backs.into_iter();
            while let Some((popped, key)) = queue.pop_front() {
                if put_backs.next() == Some(true) {
                    queue.push_front(popped, key);
                    let (again, key) = queue.pop_front().unwrap();
                    out.push((again.attempt, key.unwrap()));
                } else {
                    out.push((popped.attempt, key.unwrap()));
                }
            }
            prop_assert!(queue.is_empty());
            let mut seen: Vec<u32> = out.iter().map(|(n, _)| *n).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..keys.len() as u32).collect::<Vec<_>>());
            for key in 0u8..4 {
                let key = key.to_string();
                let order: Vec<u32> = out.iter().filter(|(_, k)| **k == *key).map(|(n, _)| *n).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "key {} out of order: {:?}", key, order);
            }
            // Round robin: the keys in the order they first came, one entry each per
            // round, a key leaving the rounds when it has none left (a put-back changes
            // nothing).
            let mut rounds: Vec<(String, VecDeque<u32>)> = Vec::new();
            for (n, key) in keys.iter().enumerate() {
                let key = key.to_string();
                match rounds.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, queue)) => queue.push_back(n as u32),
                    None => rounds.push((key, VecDeque::from([n as u32]))),
                }
            }
            let mut expected: Vec<u32> = Vec::new();
            while rounds.iter().any(|(_, q)| !q.is_empty()) {
                for (_, queue) in &mut rounds {
                    expected.extend(queue.pop_front());
                }
            }
            prop_assert_eq!(out.iter().map(|(n, _)| *n).collect::<Vec<_>>(), expected);
        }
    }
}
