//! Workflow specs: parsing (YAML or JSON), validation and compilation into the form the
//! scheduler core runs.
//!
//! - [`duration`]: `250ms`, `10s`, `5m`.
//! - [`source`]: lines and columns of tasks and keys, for errors.
//! - [`template`]: `{{ inputs.x }}` / `{{ tasks.t.output.y }}` in `with`.
//! - [`input`]: declared inputs and the check of a submitted input.
//! - [`condition`]: `when` expressions in CEL.
//!
//! Validation collects every problem it can find, each naming the task and, where the
//! text allows, the line and column.

pub mod condition;
pub mod duration;
pub mod input;
pub mod source;
pub mod template;

mod compile;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use compile::{SkillCatalog, compile};
pub use condition::Condition;
pub use input::{InputDecl, InputType};
pub use source::Position;
pub use template::{Reference, Scope, Template};

use crate::model::Priority;

/// Named limits on what a spec may be.
#[derive(Debug, Clone)]
pub struct SpecLimits {
    /// Largest spec document accepted.
    pub spec_bytes_max: usize,
    /// Most tasks in one spec.
    pub tasks_max: usize,
    /// Most `needs` of one task.
    pub needs_max: usize,
    /// Deepest nesting of a `with` value or of an input.
    pub nesting_depth_max: usize,
    /// Largest workflow input, in bytes of JSON.
    pub input_bytes_max: usize,
    /// Longest task id, spec name or skill name.
    pub name_length_max: usize,
    /// Most retry attempts a task may ask for.
    pub attempts_max: u32,
    /// Most labels on one workflow, and the longest label key and value, in bytes.
    pub labels_max: usize,
    pub label_key_bytes_max: usize,
    pub label_value_bytes_max: usize,
    /// Longest idempotency key, in bytes (Stripe's limit: 255).
    pub idempotency_key_bytes_max: usize,
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self {
            spec_bytes_max: 256 * 1024,
            tasks_max: 500,
            needs_max: 64,
            nesting_depth_max: 16,
            input_bytes_max: 64 * 1024,
            name_length_max: 64,
            attempts_max: 100,
            labels_max: 64,
            label_key_bytes_max: 63,
            label_value_bytes_max: 256,
            idempotency_key_bytes_max: 255,
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub message: String,
    pub task: Option<String>,
    pub position: Option<Position>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            task: None,
            position: None,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(position) = self.position {
            write!(f, "line {}, column {}: ", position.line, position.column)?;
        }
        if let Some(task) = &self.task {
            write!(f, "task `{task}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a spec (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// How a task is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
        }
    }
}

/// How agents are chosen for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutePolicy {
    /// The eligible agent with the most free slots.
    LeastLoaded,
    /// The eligible agent with the lowest `cost_bps` label, then least loaded.
    Cheapest,
    /// Like `Cheapest` among agents not marked unhealthy.
    CheapestHealthy,
}

/// Gateway choice for a task.
#[derive(Debug, Clone)]
pub struct Route {
    pub policy: RoutePolicy,
    /// Agents must carry every one of these labels (values may be templates).
    pub labels: Vec<(String, Template)>,
    /// When no agent matches the labels, any agent with the skill may take it.
    pub fallback: bool,
    /// Goes to the gateway even while its breaker is open (`breaker: ignore`): a probe
    /// of a drained gateway.
    pub ignore_breaker: bool,
}

/// The task that undoes a completed task when its workflow fails.
#[derive(Debug, Clone)]
pub struct Compensation {
    pub skill: String,
    /// Where the compensation runs, e.g. the gateway that authorized.
    pub route: Option<Route>,
    /// Runs only when this holds at compensation time (e.g. nothing was captured).
    pub when: Option<Condition>,
    pub input: Template,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

/// What a task does.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// Runs a skill on an agent.
    Skill(String),
    /// A barrier; with `verify`, a verification skill runs before it passes.
    Checkpoint { verify: Option<String> },
    /// Waits until `count` other workflows with the labels passed a checkpoint (or ended).
    Wait(WaitFor),
    /// Waits for a human decision (`approval`).
    Approval(Approval),
}

/// A human decision (`approval`): an operator approves or rejects, by CLI, gRPC, MCP or
/// an A2A message; at the timeout the default decision applies. Approve: the task
/// succeeds (its output is the decision). Reject: the task fails, and the workflow
/// compensates.
#[derive(Debug, Clone)]
pub struct Approval {
    /// What the approver is asked: a template over inputs and upstream outputs.
    pub prompt: Option<Template>,
    pub timeout: Duration,
    /// Applied when the timeout passes with no decision.
    pub default: crate::model::Decision,
    /// Asked only when this holds; otherwise the task passes at once (approve,
    /// `required: false`), so that what needs it still runs.
    pub required_when: Option<Condition>,
}

/// A dependency on other workflows (`waitFor`).
#[derive(Debug, Clone)]
pub struct WaitFor {
    pub labels: Vec<(String, Template)>,
    /// The checkpoint's task id; `None`: the workflows' end.
    pub checkpoint: Option<String>,
    pub count: u32,
    pub timeout: Option<Duration>,
    /// At the timeout: succeed with what arrived (`continue`) instead of failing.
    pub continue_on_timeout: bool,
}

/// A task ready to schedule.
#[derive(Debug)]
pub struct CompiledTask {
    pub id: String,
    pub index: u32,
    pub kind: TaskKind,
    /// Indices of upstream tasks.
    pub needs: Vec<u32>,
    /// Indices of tasks that need this one.
    pub dependents: Vec<u32>,
    pub input: Template,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub route: Option<Route>,
    pub compensate: Option<Compensation>,
    pub when: Option<Condition>,
    /// Tasks whose outputs the input or `when` refers to (resolved at dispatch).
    pub position: Option<Position>,
}

impl CompiledTask {
    /// The skill an agent runs for this task, if any.
    pub fn skill(&self) -> Option<&str> {
        match &self.kind {
            TaskKind::Skill(skill) => Some(skill),
            TaskKind::Checkpoint { verify } => verify.as_deref(),
            TaskKind::Wait(_) | TaskKind::Approval(_) => None,
        }
    }

    pub fn is_checkpoint(&self) -> bool {
        matches!(self.kind, TaskKind::Checkpoint { .. })
    }

    /// The approval, for an `approval` task.
    pub fn approval(&self) -> Option<&Approval> {
        match &self.kind {
            TaskKind::Approval(approval) => Some(approval),
            _ => None,
        }
    }
}

/// A validated spec. Shared (`Arc`) by every workflow started from it.
#[derive(Debug)]
pub struct CompiledSpec {
    pub name: String,
    pub version: u32,
    /// FNV-1a 64 of the text, as 16 hex digits.
    pub hash: String,
    pub priority: Priority,
    pub description: Option<String>,
    pub inputs: Vec<InputDecl>,
    pub tasks: Vec<CompiledTask>,
    pub labels: BTreeMap<String, String>,
    /// Task indices in a topological order.
    pub topological_order: Vec<u32>,
    /// The document as submitted.
    pub text: Arc<str>,
}

impl CompiledSpec {
    pub fn task_index(&self, id: &str) -> Option<u32> {
        self.tasks.iter().position(|t| t.id == id).map(|i| i as u32)
    }

    /// Checks an input against the declared inputs and fills in defaults.
    pub fn check_input(
        &self,
        input: &serde_json::Value,
        limits: &SpecLimits,
    ) -> Result<serde_json::Value, SpecErrors> {
        let depth = json_depth(input);
        if depth > limits.nesting_depth_max {
            return Err(SpecErrors(vec![SpecError::new(format!(
                "input nests {depth} levels deep; the limit is {}",
                limits.nesting_depth_max
            ))]));
        }
        input::check_input(&self.inputs, input)
            .map_err(|errors| SpecErrors(errors.into_iter().map(SpecError::new).collect()))
    }
}

/// FNV-1a 64: a stable content hash of a spec text.
pub fn content_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// How deep a JSON value nests (a scalar is 0).
pub fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}
