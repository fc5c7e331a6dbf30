//! Span and attribute names, defined once so Jaeger queries never chase typos.

pub const WORKFLOW_ID: &str = "paygrid.workflow.id";
pub const WORKFLOW_NAME: &str = "paygrid.workflow.name";
pub const TASK_ID: &str = "paygrid.task.id";
pub const TASK_ATTEMPT: &str = "paygrid.task.attempt";
pub const SKILL: &str = "paygrid.skill";
pub const AGENT_ID: &str = "paygrid.agent.id";
/// Peer messaging: the agent that asked and the agent that answers.
pub const PEER_FROM: &str = "paygrid.peer.from";
pub const PEER_TO: &str = "paygrid.peer.to";
pub const GATEWAY: &str = "paygrid.gateway";
pub const AMOUNT_MINOR: &str = "paygrid.amount.minor";
pub const CURRENCY: &str = "paygrid.currency";
pub const WORKFLOW_STATUS: &str = "paygrid.workflow.status";
pub const TASK_STATUS: &str = "paygrid.task.status";
pub const TASK_COMPENSATION: &str = "paygrid.task.compensation";
pub const ATTEMPT_OUTCOME: &str = "paygrid.attempt.outcome";
pub const ERROR_MESSAGE: &str = "paygrid.error.message";
pub const ERROR_CODE: &str = "paygrid.error.code";
pub const RETRYABLE: &str = "paygrid.error.retryable";
pub const HTTP_STATUS: &str = "http.response.status_code";
pub const HTTP_METHOD: &str = "http.request.method";
pub const URL_PATH: &str = "url.path";

/// Span events. Each sets the span's status to error as well.
pub mod event {
    /// An attempt failed and the task will run again; on the task span.
    pub const RETRY: &str = "paygrid.retry";
    /// An attempt ran past its timeout; on the attempt span.
    pub const TIMEOUT: &str = "paygrid.timeout";
    /// An attempt's agent stopped heartbeating, or went away.
    pub const AGENT_LOST: &str = "paygrid.agent_lost";
    /// An attempt, task, workflow or gateway call failed.
    pub const ERROR: &str = "paygrid.error";
}
