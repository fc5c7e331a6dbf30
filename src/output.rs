//! How the CLI prints: live progress on a terminal (indicatif), plain lines when not a
//! terminal, JSON with `--json`. Everything printed passes through PAN masking.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use paygrid_control_unit::spec::{CompiledSpec, TaskKind};
use paygrid_proto::v1 as pb;
use paygrid_telemetry::redact::redact_text;
use serde_json::{Value, json};

pub fn status_name(value: i32) -> &'static str {
    match pb::WorkflowStatus::try_from(value).unwrap_or(pb::WorkflowStatus::Unspecified) {
        pb::WorkflowStatus::Unspecified => "unknown",
        pb::WorkflowStatus::Pending => "pending",
        pb::WorkflowStatus::Running => "running",
        pb::WorkflowStatus::Succeeded => "succeeded",
        pb::WorkflowStatus::Failed => "failed",
        pb::WorkflowStatus::Compensating => "compensating",
        pb::WorkflowStatus::Compensated => "compensated",
        pb::WorkflowStatus::Cancelled => "cancelled",
    }
}

pub fn task_status_name(value: i32) -> String {
    pb::TaskStatus::try_from(value)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn priority_name(value: i32) -> String {
    pb::Priority::try_from(value)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PRIORITY_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn json_text(text: &str) -> Value {
    serde_json::from_str(&redact_text(text)).unwrap_or(Value::Null)
}

pub fn workflow_json(w: &pb::Workflow) -> Value {
    let tasks: Vec<Value> = w
        .tasks
        .iter()
        .map(|t| {
            json!({
                "task_id": t.task_id, "skill": t.skill, "status": task_status_name(t.status),
                "attempts": t.attempts, "lookups": t.lookups, "agent_id": t.agent_id, "output": json_text(&t.output_json),
                "error": redact_text(&t.error), "waiting_reason": t.waiting_reason, "checkpoint": t.checkpoint,
                "started_at_ms": t.started_at_ms, "finished_at_ms": t.finished_at_ms,
                "compensation_status": task_status_name(t.compensation_status),
                "compensation_error": t.compensation_error,
                "history": t.history.iter().map(|h| json!({"attempt": h.attempt, "agent_id": h.agent_id, "outcome": h.outcome, "error": redact_text(&h.error), "started_at_ms": h.started_at_ms, "finished_at_ms": h.finished_at_ms, "lookup": h.lookup, "compensation": h.compensation})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "workflow_id": w.workflow_id, "name": w.name, "version": w.version, "spec_hash": w.spec_hash,
        "status": status_name(w.status), "priority": priority_name(w.priority), "labels": w.labels,
        "idempotency_key": w.idempotency_key, "input": json_text(&w.input_json), "error": redact_text(&w.error),
        "created_at_ms": w.created_at_ms, "updated_at_ms": w.updated_at_ms, "traceparent": w.traceparent,
        "paused": (!w.paused.is_empty()).then(|| redact_text(&w.paused)),
        "tasks": tasks,
    })
}

pub fn summary_json(w: &pb::WorkflowSummary) -> Value {
    json!({
        "workflow_id": w.workflow_id, "name": w.name, "version": w.version, "status": status_name(w.status),
        "priority": priority_name(w.priority), "created_at_ms": w.created_at_ms, "updated_at_ms": w.updated_at_ms,
        "labels": w.labels, "tasks_total": w.tasks_total, "tasks_done": w.tasks_done,
    })
}

pub fn agent_json(a: &pb::AgentInfo) -> Value {
    let card = a.card.clone().unwrap_or_default();
    json!({
        "agent_id": a.agent_id, "name": card.name, "execution_unit": a.execution_unit, "connected": a.connected,
        "draining": a.draining, "inflight": a.inflight, "credits": a.credits, "tasks_completed": a.tasks_completed,
        "max_concurrency": card.max_concurrency, "labels": card.labels,
        "skills": card.skills.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "health": a.health.as_ref().and_then(|h| h.report.as_ref().map(|r| json!({
            "requests": r.requests, "errors": r.errors, "error_rate": h.error_rate,
            "latency_p50_ms": r.latency_p50_ms, "latency_p99_ms": r.latency_p99_ms,
            "saturation": r.saturation, "updated_at_ms": h.updated_at_ms,
        }))),
    })
}

pub fn workflow_text(w: &pb::Workflow) -> String {
    let mut out = format!(
        "workflow {}  {}@{}  {}  priority {}\n",
        w.workflow_id,
        w.name,
        w.version,
        status_name(w.status),
        priority_name(w.priority)
    );
    out.push_str(&format!("  input: {}\n", redact_text(&w.input_json)));
    if !w.paused.is_empty() {
        out.push_str(&format!(
            "  paused: {} (paygrid resume {} lets it go on)\n",
            redact_text(&w.paused),
            w.workflow_id
        ));
    }
    if !w.error.is_empty() {
        out.push_str(&format!("  error: {}\n", redact_text(&w.error)));
    }
    for t in &w.tasks {
        let kind = if t.checkpoint {
            "checkpoint"
        } else {
            t.skill.as_str()
        };
        out.push_str(&format!(
            "  {:<14} {:<12} {:<20} attempts {}",
            t.task_id,
            task_status_name(t.status),
            kind,
            t.attempts
        ));
        if t.lookups > 0 {
            out.push_str(&format!(" + {} lookups", t.lookups));
        }
        if !t.agent_id.is_empty() {
            out.push_str(&format!("  on {}", t.agent_id));
        }
        if t.compensation_status != 0 {
            out.push_str(&format!(
                "  compensation {}",
                task_status_name(t.compensation_status)
            ));
        }
        out.push('\n');
        if !t.waiting_reason.is_empty() {
            out.push_str(&format!("      waiting: {}\n", t.waiting_reason));
        }
        if !t.error.is_empty() {
            out.push_str(&format!("      error: {}\n", redact_text(&t.error)));
        }
        if !t.output_json.is_empty() {
            out.push_str(&format!("      output: {}\n", redact_text(&t.output_json)));
        }
    }
    out
}

/// Live progress of one workflow.
pub struct Progress {
    json: bool,
    bar: Option<ProgressBar>,
    names: HashMap<String, String>,
    total: u64,
    done: u64,
}

impl Progress {
    pub fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            // One shared set of bars, so workflows followed at once (dev) each get a line.
            static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
            let bars = BARS.get_or_init(|| {
                indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
            });
            let bar = bars.add(ProgressBar::new(1));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:.bold} [{bar:20}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Self {
            json,
            bar,
            names: HashMap::new(),
            total: 0,
            done: 0,
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    /// Shows one event; returns the workflow status when it changed.
    pub fn event(&mut self, event: &pb::WorkflowEvent) -> Option<pb::WorkflowStatus> {
        let short = event
            .workflow_id
            .get(28..)
            .unwrap_or(&event.workflow_id)
            .to_owned();
        match &event.body {
            Some(pb::workflow_event::Body::Snapshot(w)) => {
                self.total = w.tasks.len() as u64;
                self.done = w.tasks.iter().filter(|t| is_done(t.status)).count() as u64;
                self.names.insert(event.workflow_id.clone(), w.name.clone());
                if let Some(bar) = &self.bar {
                    bar.set_length(self.total);
                    bar.set_position(self.done);
                    bar.set_prefix(format!("{} {short}", w.name));
                }
                if self.json {
                    println!(
                        "{}",
                        json!({"workflow_id": event.workflow_id, "event": "snapshot", "status": status_name(w.status)})
                    );
                } else if self.bar.is_none() {
                    self.line(format!("{short} {} {}", w.name, status_name(w.status)));
                }
                pb::WorkflowStatus::try_from(w.status).ok()
            }
            Some(pb::workflow_event::Body::Task(t)) => {
                let status = task_status_name(t.status);
                if is_done(t.status) && !t.compensation {
                    self.done += 1;
                }
                if self.json {
                    println!(
                        "{}",
                        json!({"workflow_id": event.workflow_id, "event": "task", "task_id": t.task_id, "status": status, "attempt": t.attempt, "agent_id": t.agent_id, "detail": redact_text(&t.detail), "compensation": t.compensation})
                    );
                    return None;
                }
                let what = if t.compensation {
                    format!("{} (compensation)", t.task_id)
                } else {
                    t.task_id.clone()
                };
                let detail = if t.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", redact_text(&t.detail))
                };
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(self.done);
                        bar.set_message(format!("{what} {status}"));
                        if matches!(status.as_str(), "failed" | "backoff" | "compensated") {
                            bar.println(format!("{short} {what} {status}{detail}"));
                        }
                    }
                    None => self.line(format!(
                        "{short} {what} {status} (attempt {}){detail}",
                        t.attempt
                    )),
                }
                None
            }
            Some(pb::workflow_event::Body::Workflow(w)) => {
                let status = status_name(w.status);
                if self.json {
                    println!(
                        "{}",
                        json!({"workflow_id": event.workflow_id, "event": "workflow", "status": status, "detail": redact_text(&w.detail)})
                    );
                } else if self.bar.is_none()
                    || pb::WorkflowStatus::try_from(w.status).is_ok_and(is_terminal)
                {
                    let detail = if w.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", redact_text(&w.detail))
                    };
                    self.line(format!("{short} workflow {status}{detail}"));
                }
                pb::WorkflowStatus::try_from(w.status).ok()
            }
            None => None,
        }
    }

    pub fn finish(&self, workflow: &pb::Workflow) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(status_name(workflow.status).to_owned());
        }
    }
}

fn is_done(status: i32) -> bool {
    matches!(
        pb::TaskStatus::try_from(status),
        Ok(pb::TaskStatus::Succeeded
            | pb::TaskStatus::Skipped
            | pb::TaskStatus::Failed
            | pb::TaskStatus::Cancelled)
    )
}

fn is_terminal(status: pb::WorkflowStatus) -> bool {
    matches!(
        status,
        pb::WorkflowStatus::Succeeded
            | pb::WorkflowStatus::Failed
            | pb::WorkflowStatus::Compensated
            | pb::WorkflowStatus::Cancelled
    )
}

/// The task graph as Graphviz DOT or Mermaid.
pub fn graph(spec: &CompiledSpec, mermaid: bool) -> String {
    let label = |index: u32| {
        let task = &spec.tasks[index as usize];
        match &task.kind {
            TaskKind::Skill(skill) => format!("{}\\n{skill}", task.id),
            TaskKind::Checkpoint { verify: Some(v) } => format!("{}\\ncheckpoint: {v}", task.id),
            TaskKind::Checkpoint { verify: None } => format!("{}\\ncheckpoint", task.id),
            TaskKind::Wait(wait) => format!(
                "{}\\nwaits for {} workflows{}",
                task.id,
                wait.count,
                wait.checkpoint
                    .as_deref()
                    .map(|c| format!(" at {c}"))
                    .unwrap_or_default()
            ),
            TaskKind::Approval(approval) => format!(
                "{}\\napproval (default {})",
                task.id,
                approval.default.as_str()
            ),
        }
    };
    let mut out = String::new();
    if mermaid {
        out.push_str("flowchart TD\n");
        for task in &spec.tasks {
            let text = label(task.index).replace("\\n", "<br/>");
            if task.is_checkpoint() {
                out.push_str(&format!("  {}{{{{\"{text}\"}}}}\n", task.id));
            } else {
                out.push_str(&format!("  {}[\"{text}\"]\n", task.id));
            }
        }
        for task in &spec.tasks {
            for need in &task.needs {
                out.push_str(&format!(
                    "  {} --> {}\n",
                    spec.tasks[*need as usize].id, task.id
                ));
            }
        }
    } else {
        out.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n", spec.name));
        for task in &spec.tasks {
            let shape = if task.is_checkpoint() {
                "hexagon"
            } else {
                "box"
            };
            out.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{}\"];\n",
                task.id,
                label(task.index)
            ));
        }
        for task in &spec.tasks {
            for need in &task.needs {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    spec.tasks[*need as usize].id, task.id
                ));
            }
        }
        out.push_str("}\n");
    }
    out
}
