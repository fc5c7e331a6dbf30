//! Domain types shared by the spec compiler, the scheduler core and the services:
//! identifiers, priorities and statuses. Generated protobuf types never reach past the
//! gRPC edge; `service::convert` maps between them and these.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A workflow instance id: a UUIDv7-shaped 128-bit value (time-ordered, unique across
/// control units without coordination), printed as 8-4-4-4-12 hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkflowId(pub u128);

impl WorkflowId {
    /// A new id from the wall clock (unix ms) and 74 random bits.
    pub fn generate(now_ms: u64) -> Self {
        let random: u128 = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..));
        let ts = u128::from(now_ms & 0xFFFF_FFFF_FFFF) << 80;
        let version = 0x7u128 << 76;
        let rand_a = (random >> 64) & 0x0FFF;
        let variant = 0b10u128 << 62;
        let rand_b = random & 0x3FFF_FFFF_FFFF_FFFF;
        Self(ts | version | (rand_a << 64) | variant | rand_b)
    }
}

impl WorkflowId {
    /// The id as 8-4-4-4-12 lower-case hex, without allocating: ids are printed for every
    /// event, key and span, and `format!("{:032x}")` showed up at ~10 % of the control
    /// unit's CPU (docs/benchmarks.md).
    pub fn to_hyphenated(self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut nibble = 0;
        for (at, byte) in out.iter_mut().enumerate() {
            if matches!(at, 8 | 13 | 18 | 23) {
                continue;
            }
            *byte = HEX[((self.0 >> (124 - 4 * nibble)) & 0xF) as usize];
            nibble += 1;
        }
        out
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_hyphenated();
        // Only ASCII hex digits and hyphens were written.
        f.pad(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for WorkflowId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return Err(format!("`{text}` is not a workflow id (expected a UUID)"));
        }
        u128::from_str_radix(&hex, 16)
            .map(Self)
            .map_err(|_| format!("`{text}` is not a workflow id (expected a UUID)"))
    }
}

/// A registered agent's id, `NAME-N`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AgentId(pub Arc<str>);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Priority classes, most urgent first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical = 0,
    High = 1,
    Normal = 2,
    Low = 3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "critical" => Ok(Self::Critical),
            "high" => Ok(Self::High),
            "normal" => Ok(Self::Normal),
            "low" => Ok(Self::Low),
            other => Err(format!(
                "unknown priority `{other}`: use critical, high, normal or low"
            )),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `pending → running → succeeded | failed | compensating → compensated | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    Cancelled,
}

impl WorkflowStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Compensated | Self::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Per-task state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Blocked,
    Ready,
    /// Waiting for its retry backoff.
    Backoff,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Compensated,
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Compensated | Self::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Ready => "ready",
            Self::Backoff => "backoff",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Compensated => "compensated",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_round_trip_and_sort_by_time() {
        let early = WorkflowId::generate(1_000);
        let late = WorkflowId::generate(2_000);
        assert!(early < late);
        let text = early.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "7", "version nibble");
        assert_eq!(text.parse::<WorkflowId>(), Ok(early));
        assert!("nope".parse::<WorkflowId>().is_err());
    }

    #[test]
    fn workflow_ids_print_as_the_standard_uuid_text() {
        let id = WorkflowId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-fedc-ba9876543210");
        for _ in 0..100 {
            let id = WorkflowId::generate(fastrand::u64(..));
            let text = id.to_string();
            assert_eq!(text.replace('-', ""), format!("{:032x}", id.0));
            assert_eq!(text.parse::<WorkflowId>(), Ok(id));
        }
    }
}

/// What an agent does for the platform (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentRole {
    Worker,
    Support,
    Service,
}

/// One skill an agent offers, with its JSON Schemas as the card carried them (checked to
/// be JSON when the card is accepted).
#[derive(Debug, Clone, PartialEq)]
pub struct SkillCard {
    pub name: String,
    pub description: String,
    pub input_schema: String,
    pub output_schema: String,
    pub effect: SkillEffect,
}

/// What calling a skill does, as its agent declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SkillEffect {
    ReadOnly,
    /// A state change that moves no money (the default when an agent does not say).
    #[default]
    State,
    MovesMoney,
}

/// How an agent introduces itself at registration, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCard {
    pub name: String,
    pub role: AgentRole,
    pub version: String,
    pub skills: Vec<SkillCard>,
    pub max_concurrency: u32,
    /// e.g. `gateway=alpha`, `cost_bps=25`, `region=eu`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The health of a gateway or an agent over a window, as a telemetry agent reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthReport {
    /// `gateway` or `agent`.
    pub kind: String,
    pub subject: String,
    pub window_ms: u32,
    pub requests: u64,
    pub errors: u64,
    pub latency_p50_ms: u32,
    pub latency_p99_ms: u32,
    /// Running tasks over the subject's slots, 0 to 1.
    pub saturation: f64,
    pub skills: Vec<String>,
}

impl HealthReport {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A human decision on an `approval` task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }

    /// `approve` or `reject` (also `approved` / `rejected`, any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "approve" | "approved" => Some(Self::Approve),
            "reject" | "rejected" => Some(Self::Reject),
            _ => None,
        }
    }
}
