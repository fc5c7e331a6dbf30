//! Every metric the control unit exports: name and help text, defined once.

use paygrid_telemetry::metrics::Metric;

pub const WORKFLOWS: Metric = Metric {
    name: "paygrid_workflows",
    help: "Workflows held by the control unit, by status.",
};
pub const WORKFLOWS_FINISHED: Metric = Metric {
    name: "paygrid_workflows_finished_total",
    help: "Workflows that ended, by spec name and final status.",
};
pub const DISPATCH_LATENCY: Metric = Metric {
    name: "paygrid_dispatch_latency_seconds",
    help: "From a task being ready to its assignment to an agent.",
};
pub const TASK_DURATION: Metric = Metric {
    name: "paygrid_task_duration_seconds",
    help: "From assignment to the final answer of a task's last attempt, by skill and outcome.",
};
pub const TASK_RETRIES: Metric = Metric {
    name: "paygrid_task_retries_total",
    help: "Attempts that will be retried, by skill.",
};
pub const TASK_TIMEOUTS: Metric = Metric {
    name: "paygrid_task_timeouts_total",
    help: "Attempts that timed out, by skill.",
};
pub const TASK_LEASE_EXPIRATIONS: Metric = Metric {
    name: "paygrid_task_lease_expirations_total",
    help: "Attempts whose agent stopped heartbeating, by skill.",
};
pub const READY_QUEUE_DEPTH: Metric = Metric {
    name: "paygrid_ready_queue_depth",
    help: "Ready tasks waiting for an agent, by priority.",
};
pub const AGENT_SESSIONS: Metric = Metric {
    name: "paygrid_agent_sessions",
    help: "Agents with an open session.",
};
pub const AGENT_SESSIONS_OPENED: Metric = Metric {
    name: "paygrid_agent_sessions_opened_total",
    help: "Agent sessions opened.",
};
pub const BREAKER_STATE: Metric = Metric {
    name: "paygrid_breaker_state",
    help: "A gateway's circuit breaker: 0 closed, 1 half-open, 2 open.",
};
pub const BREAKER_TRANSITIONS: Metric = Metric {
    name: "paygrid_breaker_transitions_total",
    help: "Circuit breaker transitions, by gateway and the state entered.",
};
pub const RECONCILIATION_RUNS: Metric = Metric {
    name: "paygrid_reconciliation_runs_total",
    help: "Reconciliation runs that finished, by gateway.",
};
pub const RECONCILIATION_ROWS: Metric = Metric {
    name: "paygrid_reconciliation_rows_total",
    help: "Settlement report rows and ledger entries classified by reconciliation runs, by gateway and class (matched or a mismatch kind).",
};
pub const RECONCILIATION_MISMATCHES: Metric = Metric {
    name: "paygrid_reconciliation_mismatches",
    help: "Mismatches the latest reconciliation run of a gateway found, by kind.",
};
pub const PEER_MESSAGES: Metric = Metric {
    name: "paygrid_peer_messages_total",
    help: "Peer messages between agents, by kind (request, answer), outcome (delivered, refused) and refusal reason.",
};
pub const PEER_ROUND_TRIP: Metric = Metric {
    name: "paygrid_peer_round_trip_seconds",
    help: "From a peer request to its answer (or failure) in the control unit, by skill and outcome.",
};
pub const GATEWAY_CONCURRENCY_LIMIT: Metric = Metric {
    name: "paygrid_gateway_concurrency_limit",
    help: "A gateway's adaptive concurrency limit now (attempts at once), by gateway.",
};
pub const GATEWAY_DISPATCHES: Metric = Metric {
    name: "paygrid_gateway_dispatches_total",
    help: "Attempts sent to a gateway's agents, by gateway and skill: each gateway's share of the traffic.",
};
pub const GATEWAY_COST: Metric = Metric {
    name: "paygrid_gateway_cost_minor_total",
    help: "Fees of succeeded captures at each gateway's cost_bps, in minor units, by gateway and currency.",
};
pub const CALLS_REFUSED: Metric = Metric {
    name: "paygrid_calls_refused_total",
    help: "gRPC calls refused before any service saw them, by reason (unauthenticated, permission_denied).",
};
pub const PARTITIONS_OWNED: Metric = Metric {
    name: "paygrid_partitions_owned",
    help: "Partitions this control unit owns in its cluster (docs/cluster.md).",
};
pub const PARTITION_CHANGES: Metric = Metric {
    name: "paygrid_partition_changes_total",
    help: "Partitions this control unit gained or lost, by change.",
};
pub const FENCED_COMMITS: Metric = Metric {
    name: "paygrid_fenced_commits_total",
    help: "Group commits refused: a partition they wrote had passed to another control unit, or the database ended a stalled commit.",
};
