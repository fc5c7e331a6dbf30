//! Span and attribute names, defined once so Jaeger queries never chase typos.

pub const WORKFLOW_ID: &str = "paygrid.workflow.id";
pub const WORKFLOW_NAME: &str = "paygrid.workflow.name";
pub const TASK_ID: &str = "paygrid.task.id";
pub const TASK_ATTEMPT: &str = "paygrid.task.attempt";
pub const SKILL: &str = "paygrid.skill";
pub const AGENT_ID: &str = "paygrid.agent.id";
pub const GATEWAY: &str = "paygrid.gateway";
pub const AMOUNT_MINOR: &str = "paygrid.amount.minor";
pub const CURRENCY: &str = "paygrid.currency";
