//! The control unit's protobuf answers as the JSON the page reads. Free text that may
//! hold what a client or an agent wrote (inputs, outputs, errors, reasons) goes through
//! the same masking as logs: no card number or CVV reaches the browser.

use paygrid_proto::v1 as pb;
use paygrid_telemetry::redact::{redact_json, redact_text};
use serde_json::{Value, json};

pub use paygrid_mcp::convert::{agent, health, task_status, workflow_status};

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

/// JSON text as a value with card data masked; text that is not JSON, masked.
fn masked(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut value) => {
            redact_json(&mut value);
            value
        }
        Err(_) => Value::String(redact_text(text)),
    }
}

/// The trace id of a W3C `traceparent` (`00-TRACE-SPAN-FLAGS`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

pub fn workflow(w: &pb::Workflow) -> Value {
    let tasks: Vec<Value> = w
        .tasks
        .iter()
        .map(|t| {
            json!({
                "task_id": t.task_id,
                "skill": t.skill,
                "status": task_status(t.status),
                "needs": t.needs,
                "checkpoint": t.checkpoint,
                "attempts": t.attempts,
                "lookups": t.lookups,
                "agent_id": t.agent_id,
                "output": masked(&t.output_json),
                "error": redact_text(&t.error),
                "waiting": redact_text(&t.waiting_reason),
                "started_at_ms": t.started_at_ms,
                "finished_at_ms": t.finished_at_ms,
                "compensation_status": (t.compensation_status != 0).then(|| task_status(t.compensation_status)),
                "compensation_error": redact_text(&t.compensation_error),
                "approval": t.approval.as_ref().map(|a| json!({
                    "prompt": redact_text(&a.prompt),
                    "pending": a.pending,
                    "timeout_at_ms": a.timeout_at_ms,
                    "default": a.default_decision,
                })),
                "history": t.history.iter().map(|h| json!({
                    "attempt": h.attempt,
                    "agent_id": h.agent_id,
                    "started_at_ms": h.started_at_ms,
                    "finished_at_ms": h.finished_at_ms,
                    "outcome": h.outcome,
                    "error": redact_text(&h.error),
                    "lookup": h.lookup,
                    "compensation": h.compensation,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "workflow_id": w.workflow_id,
        "name": w.name,
        "version": w.version,
        "status": workflow_status(w.status),
        "priority": enum_name(pb::Priority::try_from(w.priority).ok().map(|p| p.as_str_name()), "PRIORITY_"),
        "labels": w.labels,
        "idempotency_key": w.idempotency_key,
        "input": masked(&w.input_json),
        "error": redact_text(&w.error),
        "paused": redact_text(&w.paused),
        "created_at_ms": w.created_at_ms,
        "updated_at_ms": w.updated_at_ms,
        "trace_id": trace_id(&w.traceparent),
        "tasks": tasks,
    })
}

pub fn summary(w: &pb::WorkflowSummary) -> Value {
    json!({
        "workflow_id": w.workflow_id,
        "name": w.name,
        "version": w.version,
        "status": workflow_status(w.status),
        "labels": w.labels,
        "tasks_done": w.tasks_done,
        "tasks_total": w.tasks_total,
        "paused": w.paused,
        "created_at_ms": w.created_at_ms,
        "updated_at_ms": w.updated_at_ms,
    })
}

/// A full workflow as a list line (a search hit).
pub fn summary_of(w: &pb::Workflow) -> Value {
    let done = w
        .tasks
        .iter()
        .filter(|t| {
            !matches!(
                pb::TaskStatus::try_from(t.status),
                Ok(pb::TaskStatus::Blocked
                    | pb::TaskStatus::Ready
                    | pb::TaskStatus::Dispatched
                    | pb::TaskStatus::Running
                    | pb::TaskStatus::Backoff)
            )
        })
        .count();
    json!({
        "workflow_id": w.workflow_id,
        "name": w.name,
        "version": w.version,
        "status": workflow_status(w.status),
        "labels": w.labels,
        "tasks_done": done,
        "tasks_total": w.tasks.len(),
        "paused": !w.paused.is_empty(),
        "created_at_ms": w.created_at_ms,
        "updated_at_ms": w.updated_at_ms,
    })
}

pub fn limits(l: &pb::LimitsState) -> Value {
    json!({
        "yaml": l.limits_yaml,
        "concurrency_rules": l.concurrency_rules,
        "rate_rules": l.rate_rules,
        "running": l.running.iter().map(|u| json!({"rule": u.rule, "key": u.key, "running": u.running, "max": u.max})).collect::<Vec<_>>(),
    })
}
