//! What an agent author writes against.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paygrid_proto::v1 as pb;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// An agent's role in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Calls payment gateways.
    Worker,
    /// Collects and relays telemetry.
    Support,
    /// Remediates, verifies, keeps the ledger.
    Service,
}

/// One skill, exposed as a tool with JSON Schemas for its input and output.
#[derive(Debug, Clone)]
pub struct SkillSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    /// What calling it does (shown to tool clients as MCP annotations).
    pub effect: SkillEffect,
}

/// What calling a skill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SkillEffect {
    /// Reads only.
    ReadOnly,
    /// Changes state (a booking, a message), idempotent by the task's key.
    #[default]
    State,
    /// Moves money (capture, refund, payout, void); a tool call must give a key.
    MovesMoney,
}

impl SkillEffect {
    pub fn to_pb(self) -> pb::SkillEffect {
        match self {
            Self::ReadOnly => pb::SkillEffect::ReadOnly,
            Self::State => pb::SkillEffect::State,
            Self::MovesMoney => pb::SkillEffect::MovesMoney,
        }
    }
}

/// How an agent introduces itself when it registers.
#[derive(Debug, Clone)]
pub struct AgentCard {
    pub name: String,
    pub role: Role,
    pub version: String,
    pub skills: Vec<SkillSpec>,
    pub max_concurrency: u32,
    /// e.g. `gateway=alpha`, `cost_bps=25`, `region=eu`.
    pub labels: BTreeMap<String, String>,
}

impl AgentCard {
    pub fn to_pb(&self) -> pb::AgentCard {
        pb::AgentCard {
            name: self.name.clone(),
            role: match self.role {
                Role::Worker => pb::AgentRole::Worker,
                Role::Support => pb::AgentRole::Support,
                Role::Service => pb::AgentRole::Service,
            }
            .into(),
            version: self.version.clone(),
            skills: self
                .skills
                .iter()
                .map(|s| pb::Skill {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    input_schema_json: s.input_schema.to_string(),
                    output_schema_json: s.output_schema.to_string(),
                    effect: s.effect.to_pb().into(),
                })
                .collect(),
            max_concurrency: self.max_concurrency,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// One attempt of a task, as handed to [`Agent::handle`].
#[derive(Debug, Clone)]
pub struct Task {
    pub workflow_id: String,
    pub workflow_name: String,
    pub task_id: String,
    pub skill: String,
    pub attempt: u32,
    pub input: Value,
    /// Stable across attempts and restarts: pass it to every effect.
    pub idempotency_key: String,
    /// Unix milliseconds after which the control unit gives up on this attempt.
    pub deadline_unix_ms: i64,
    /// A settlement lookup (see [`Agent::settle`]): the attempts ran out and one of them
    /// may have taken effect; report what became of the effect made with the key.
    pub settle: bool,
    /// W3C trace context: the attempt's span in the control unit. Agents that call out
    /// (HTTP, gRPC) pass the current span's context instead, see
    /// `paygrid_telemetry::context::inject`, and fall back to this one.
    pub traceparent: String,
    pub tracestate: String,
    /// Fires when the control unit cancels the task or the unit shuts down hard.
    pub cancel: CancellationToken,
    /// Ask other agents (their read-only skills) through the control unit.
    pub peers: crate::peer::Peers,
}

impl Task {
    /// Time left before the deadline (zero once past it).
    pub fn time_left(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Duration::from_millis(self.deadline_unix_ms.saturating_sub(now).max(0) as u64)
    }

    /// A required string field of the input, or a permanent failure naming it.
    pub fn str(&self, field: &str) -> Result<&str, TaskOutcome> {
        self.input
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| TaskOutcome::invalid_input(format!("`{field}` must be a string")))
    }

    /// A required integer field of the input, or a permanent failure naming it.
    pub fn i64(&self, field: &str) -> Result<i64, TaskOutcome> {
        self.input
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| TaskOutcome::invalid_input(format!("`{field}` must be an integer")))
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    Succeeded(Value),
    /// Try again later (5xx, timeouts, conflicts).
    Retryable {
        code: String,
        message: String,
    },
    /// Do not try again (declines, invalid input).
    Permanent {
        code: String,
        message: String,
    },
    /// The effect may or may not have been taken (no answer after the request was sent,
    /// a 5xx after the effect, the key still in progress at the deadline). Retried like
    /// `Retryable`; when attempts run out the control unit settles it with lookups.
    Unknown {
        code: String,
        message: String,
    },
}

impl TaskOutcome {
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retryable {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn unknown(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unknown {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::permanent("invalid_input", message)
    }
}

/// An agent: a card and a handler. Implementations must be cancel-safe: the runtime
/// drops the handler's future when the task is cancelled.
#[async_trait::async_trait]
pub trait Agent: Send + Sync + 'static {
    fn card(&self) -> AgentCard;
    async fn handle(&self, task: Task) -> TaskOutcome;

    /// A settlement lookup: what became of the effect made with `task.idempotency_key`?
    /// `Succeeded` with the effect's output, `Permanent` when it definitely did not
    /// happen (or was refused), `Unknown` when the agent cannot tell yet. The default
    /// runs the task again with the same key, which an agent's idempotency makes safe;
    /// an agent that can look an effect up by key (a gateway's status API) should.
    async fn settle(&self, task: Task) -> TaskOutcome {
        self.handle(task).await
    }
}
