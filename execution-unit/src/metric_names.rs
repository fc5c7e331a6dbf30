//! Every metric the execution unit exports: name and help text, defined once.

use paygrid_telemetry::metrics::Metric;

pub const SESSION_CONNECTED: Metric = Metric {
    name: "paygrid_agent_session_connected",
    help: "1 while an agent's session is open.",
};
pub const TASKS: Metric = Metric {
    name: "paygrid_agent_tasks_total",
    help: "Tasks an agent finished, by agent, skill and outcome.",
};
pub const TASK_DURATION: Metric = Metric {
    name: "paygrid_agent_task_duration_seconds",
    help: "How long an agent took per task, by agent, skill and outcome.",
};
pub const RUNNING_TASKS: Metric = Metric {
    name: "paygrid_agent_running_tasks",
    help: "Tasks running on an agent.",
};
