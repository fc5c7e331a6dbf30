//! The spec document as written, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub tasks: Vec<RawTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    #[serde(rename = "type")]
    pub ty: String,
    /// Documentation for operators; not used by the scheduler.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub minimum: Option<Number>,
    #[serde(default)]
    pub maximum: Option<Number>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default, rename = "minLength", alias = "min_length")]
    pub min_length: Option<usize>,
    #[serde(default, rename = "maxLength", alias = "max_length")]
    pub max_length: Option<usize>,
    #[serde(default, rename = "enum")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub initial: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
    #[serde(default)]
    pub multiplier: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    pub id: String,
    /// Documentation for operators; not used by the scheduler.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub skill: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    /// A map of templates, or one template standing for the whole input (e.g.
    /// `"{{ inputs.arguments }}"`, which must render to an object).
    #[serde(default, rename = "with")]
    pub with_input: Option<Value>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub route: Option<RawRoute>,
    #[serde(default)]
    pub compensate: Option<RawCompensate>,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub checkpoint: Option<RawCheckpoint>,
    /// Waits for other workflows (by label) to pass a checkpoint or end.
    #[serde(default, rename = "waitFor")]
    pub wait_for: Option<RawWaitFor>,
    /// Waits for a human decision.
    #[serde(default)]
    pub approval: Option<RawApproval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    /// What the approver is asked (a template).
    #[serde(default)]
    pub prompt: Option<String>,
    /// How long to wait for a decision (default 24h).
    #[serde(default)]
    pub timeout: Option<String>,
    /// `approve` or `reject` (default): applied at the timeout.
    #[serde(default)]
    pub default: Option<String>,
    /// Asked only when this condition holds; otherwise it passes at once.
    #[serde(default, rename = "requiredWhen")]
    pub required_when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaitFor {
    /// Workflows carrying every one of these labels (values may be templates).
    pub labels: BTreeMap<String, String>,
    /// The checkpoint (task id) they must pass; absent: their end.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// How many such workflows make the set.
    pub count: u32,
    #[serde(default)]
    pub timeout: Option<String>,
    /// `fail` (default) or `continue`.
    #[serde(default, rename = "onTimeout")]
    pub on_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub fallback: bool,
    /// `ignore`: go to the gateway even while its breaker is open (probes).
    #[serde(default)]
    pub breaker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompensate {
    pub skill: String,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub route: Option<RawRoute>,
    #[serde(default, rename = "with")]
    pub with_input: Option<Map<String, Value>>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoint {
    #[serde(default)]
    pub verify: Option<String>,
}
