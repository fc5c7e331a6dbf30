//! Protobuf answers of the control unit as the JSON MCP clients and the web console
//! read.

use paygrid_proto::v1 as pb;
use paygrid_telemetry::redact::redact_text;
use serde_json::{Value, json};

/// `succeeded`, `running`, ... from the enum's name.
pub fn workflow_status(status: i32) -> String {
    pb::WorkflowStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WORKFLOW_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn task_status(status: i32) -> String {
    pb::TaskStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn json_or_text(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub fn workflow(w: &pb::Workflow) -> Value {
    let tasks: Vec<Value> = w
        .tasks
        .iter()
        .map(|t| {
            let mut task = json!({
                "task_id": t.task_id,
                "skill": t.skill,
                "status": task_status(t.status),
                "attempts": t.attempts,
            });
            if !t.output_json.is_empty() {
                task["output"] = json_or_text(&t.output_json);
            }
            if !t.error.is_empty() {
                task["error"] = json!(t.error);
            }
            if !t.waiting_reason.is_empty() {
                task["waiting"] = json!(t.waiting_reason);
            }
            if let Some(approval) = &t.approval {
                task["approval"] = json!({
                    "prompt": approval.prompt,
                    "pending": approval.pending,
                    "timeout_at_ms": approval.timeout_at_ms,
                    "default": approval.default_decision,
                });
            }
            task
        })
        .collect();
    json!({
        "workflow_id": w.workflow_id,
        "spec": format!("{}@{}", w.name, w.version),
        "status": workflow_status(w.status),
        "labels": w.labels,
        "input": json_or_text(&w.input_json),
        "error": w.error,
        "created_at_ms": w.created_at_ms,
        "updated_at_ms": w.updated_at_ms,
        "tasks": tasks,
    })
}

pub fn summary(w: &pb::WorkflowSummary) -> Value {
    json!({
        "workflow_id": w.workflow_id,
        "spec": format!("{}@{}", w.name, w.version),
        "status": workflow_status(w.status),
        "labels": w.labels,
        "tasks_done": w.tasks_done,
        "tasks_total": w.tasks_total,
        "updated_at_ms": w.updated_at_ms,
    })
}

pub fn agent(a: &pb::AgentInfo) -> Value {
    let card = a.card.clone().unwrap_or_default();
    json!({
        "agent_id": a.agent_id,
        "name": card.name,
        "execution_unit": a.execution_unit,
        "connected": a.connected,
        "skills": card.skills.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "labels": card.labels,
        "max_concurrency": card.max_concurrency,
        "inflight": a.inflight,
        "tasks_completed": a.tasks_completed,
        "error_rate": a.health.as_ref().map(|h| h.error_rate),
    })
}

pub fn health(h: &pb::HealthResponse) -> Value {
    let entries: Vec<Value> = h
        .entries
        .iter()
        .filter_map(|e| {
            let r = e.report.as_ref()?;
            Some(json!({
                "kind": r.kind,
                "subject": r.subject,
                "requests": r.requests,
                "errors": r.errors,
                "error_rate": e.error_rate,
                "latency_p50_ms": r.latency_p50_ms,
                "latency_p99_ms": r.latency_p99_ms,
                "reported_by": e.reported_by,
                "updated_at_ms": e.updated_at_ms,
            }))
        })
        .collect();
    let breakers: Vec<Value> = h
        .breakers
        .iter()
        .map(|b| {
            json!({
                "gateway": b.gateway,
                "state": b.state,
                "requests": b.requests,
                "errors": b.errors,
                "slow": b.slow,
                "open_until_ms": b.open_until_ms,
                "last": b.transitions.last().map(|t| format!("{} → {}: {}", t.from, t.to, redact_text(&t.reason))),
            })
        })
        .collect();
    let adaptive: Vec<Value> = h
        .adaptive
        .iter()
        .map(|a| json!({"gateway": a.gateway, "limit": a.limit, "running": a.running, "min": a.min, "max": a.max}))
        .collect();
    let holds = h.holds.clone().unwrap_or_default();
    json!({
        "entries": entries,
        "breakers": breakers,
        "adaptive": adaptive,
        "paused_skills": holds.skills,
        "paused_gateways": holds.gateways,
    })
}
