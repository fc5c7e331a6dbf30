//! Domain ⇄ protobuf, in one place. Generated types stop here.

use paygrid_proto::v1 as pb;

use crate::error::ControlError;
use crate::model::{
    AgentCard, AgentRole, HealthReport, Priority, SkillCard, SkillEffect, TaskStatus,
    WorkflowStatus,
};
use crate::model::{AgentId, WorkflowId};
use crate::scheduler::{AgentEvent, Execution, Outcome, Slot};
use crate::views::{
    AgentView, BreakerView, EventBody, Frame, HealthEntry, Page, Registration, WorkflowEvent,
    WorkflowSummary, WorkflowView,
};

pub fn priority_to_pb(priority: Priority) -> pb::Priority {
    match priority {
        Priority::Critical => pb::Priority::Critical,
        Priority::High => pb::Priority::High,
        Priority::Normal => pb::Priority::Normal,
        Priority::Low => pb::Priority::Low,
    }
}

/// `None` for UNSPECIFIED (use the spec's priority).
pub fn priority_from_pb(value: i32) -> Result<Option<Priority>, String> {
    match pb::Priority::try_from(value) {
        Ok(pb::Priority::Unspecified) => Ok(None),
        Ok(pb::Priority::Critical) => Ok(Some(Priority::Critical)),
        Ok(pb::Priority::High) => Ok(Some(Priority::High)),
        Ok(pb::Priority::Normal) => Ok(Some(Priority::Normal)),
        Ok(pb::Priority::Low) => Ok(Some(Priority::Low)),
        Err(_) => Err(format!("unknown priority value {value}")),
    }
}

pub fn workflow_status_to_pb(status: WorkflowStatus) -> pb::WorkflowStatus {
    match status {
        WorkflowStatus::Pending => pb::WorkflowStatus::Pending,
        WorkflowStatus::Running => pb::WorkflowStatus::Running,
        WorkflowStatus::Succeeded => pb::WorkflowStatus::Succeeded,
        WorkflowStatus::Failed => pb::WorkflowStatus::Failed,
        WorkflowStatus::Compensating => pb::WorkflowStatus::Compensating,
        WorkflowStatus::Compensated => pb::WorkflowStatus::Compensated,
        WorkflowStatus::Cancelled => pb::WorkflowStatus::Cancelled,
    }
}

pub fn workflow_status_from_pb(value: i32) -> Option<WorkflowStatus> {
    Some(match pb::WorkflowStatus::try_from(value).ok()? {
        pb::WorkflowStatus::Unspecified => return None,
        pb::WorkflowStatus::Pending => WorkflowStatus::Pending,
        pb::WorkflowStatus::Running => WorkflowStatus::Running,
        pb::WorkflowStatus::Succeeded => WorkflowStatus::Succeeded,
        pb::WorkflowStatus::Failed => WorkflowStatus::Failed,
        pb::WorkflowStatus::Compensating => WorkflowStatus::Compensating,
        pb::WorkflowStatus::Compensated => WorkflowStatus::Compensated,
        pb::WorkflowStatus::Cancelled => WorkflowStatus::Cancelled,
    })
}

pub fn task_status_to_pb(status: TaskStatus) -> pb::TaskStatus {
    match status {
        TaskStatus::Blocked => pb::TaskStatus::Blocked,
        TaskStatus::Ready => pb::TaskStatus::Ready,
        TaskStatus::Backoff => pb::TaskStatus::Backoff,
        TaskStatus::Dispatched => pb::TaskStatus::Dispatched,
        TaskStatus::Running => pb::TaskStatus::Running,
        TaskStatus::Succeeded => pb::TaskStatus::Succeeded,
        TaskStatus::Failed => pb::TaskStatus::Failed,
        TaskStatus::Skipped => pb::TaskStatus::Skipped,
        TaskStatus::Compensated => pb::TaskStatus::Compensated,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn history(execution: &Execution, compensation: bool) -> Vec<pb::AttemptRecord> {
    execution
        .history
        .iter()
        .map(|h| pb::AttemptRecord {
            attempt: h.attempt,
            agent_id: h
                .agent
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            started_at_ms: ms(h.started_at),
            finished_at_ms: ms(h.finished_at),
            outcome: h.outcome.as_str().into(),
            error: h.error.clone().unwrap_or_default(),
            lookup: h.lookup,
            compensation,
        })
        .collect()
}

/// An approval task's question, timeout and default; pending while it waits.
fn approval_to_pb(
    view: &WorkflowView,
    task: u32,
    run: &Execution,
    approval: &crate::spec::Approval,
) -> pb::ApprovalState {
    let pending = view.approvals.iter().find(|(t, _)| *t == task);
    let prompt = match pending {
        Some((_, pending)) => pending.prompt.clone(),
        None => run
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
            .and_then(|o| o["prompt"].as_str().map(str::to_owned))
            .unwrap_or_default(),
    };
    let timeout_at = match pending {
        Some((_, pending)) => pending.timeout_at,
        None if run.started_at > 0 => run.started_at + approval.timeout.as_millis() as u64,
        None => 0,
    };
    pb::ApprovalState {
        prompt,
        pending: pending.is_some(),
        timeout_at_ms: ms(timeout_at),
        default_decision: approval.default.as_str().into(),
    }
}

/// The full workflow, as `Get` returns it.
pub fn workflow_to_pb(view: &WorkflowView) -> pb::Workflow {
    let workflow = &view.workflow;
    let tasks = workflow
        .tasks
        .iter()
        .zip(&workflow.spec.tasks)
        .zip(&view.waiting)
        .map(|((state, compiled), waiting_reason)| {
            let run = &state.run;
            let waiting_reason = waiting_reason.clone();
            let mut task_history = history(run, false);
            if let Some(compensation) = &state.compensation {
                task_history.extend(history(compensation, true));
            }
            pb::TaskState {
                task_id: compiled.id.clone(),
                skill: compiled.skill().unwrap_or_default().into(),
                status: task_status_to_pb(run.status).into(),
                attempts: run.effect_attempts(),
                lookups: run.lookups,
                output_json: run.output.as_deref().unwrap_or_default().into(),
                error: run.error.clone().unwrap_or_default(),
                agent_id: run
                    .agent
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                waiting_reason,
                checkpoint: compiled.is_checkpoint(),
                needs: compiled
                    .needs
                    .iter()
                    .map(|need| view.workflow.spec.tasks[*need as usize].id.clone())
                    .collect(),
                started_at_ms: ms(run.started_at),
                finished_at_ms: ms(run.finished_at),
                compensation_status: state
                    .compensation
                    .as_ref()
                    .map_or(pb::TaskStatus::Unspecified, |c| task_status_to_pb(c.status))
                    .into(),
                compensation_error: state
                    .compensation
                    .as_ref()
                    .and_then(|c| c.error.clone())
                    .unwrap_or_default(),
                history: task_history,
                ready_at_ms: ms(run.ready_at),
                attempt_started_at_ms: ms(run.attempt_started_at),
                approval: compiled
                    .approval()
                    .map(|approval| approval_to_pb(view, compiled.index, run, approval)),
            }
        })
        .collect();
    pb::Workflow {
        workflow_id: workflow.id.to_string(),
        name: workflow.spec.name.clone(),
        version: workflow.spec.version,
        spec_hash: workflow.spec.hash.clone(),
        status: workflow_status_to_pb(workflow.status).into(),
        priority: priority_to_pb(workflow.priority).into(),
        labels: workflow
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        idempotency_key: workflow.idempotency_key.clone().unwrap_or_default(),
        input_json: workflow.input.to_string(),
        tasks,
        error: workflow.error.clone().unwrap_or_default(),
        created_at_ms: ms(workflow.created_at),
        updated_at_ms: ms(workflow.updated_at),
        traceparent: workflow.traceparent.clone(),
        paused: workflow.paused.clone().unwrap_or_default(),
    }
}

pub fn summary_to_pb(summary: &WorkflowSummary) -> pb::WorkflowSummary {
    pb::WorkflowSummary {
        workflow_id: summary.id.to_string(),
        name: summary.name.clone(),
        version: summary.version,
        status: workflow_status_to_pb(summary.status).into(),
        priority: priority_to_pb(summary.priority).into(),
        created_at_ms: ms(summary.created_at),
        updated_at_ms: ms(summary.updated_at),
        labels: summary
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tasks_total: summary.tasks_total,
        tasks_done: summary.tasks_done,
        paused: summary.paused,
    }
}

pub fn page_to_pb(page: &Page) -> pb::ListWorkflowsResponse {
    pb::ListWorkflowsResponse {
        workflows: page.workflows.iter().map(summary_to_pb).collect(),
        next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// A watcher's event.
pub fn event_to_pb(event: &WorkflowEvent) -> pb::WorkflowEvent {
    let body = match &event.body {
        EventBody::Snapshot(view) => pb::workflow_event::Body::Snapshot(workflow_to_pb(view)),
        EventBody::Workflow { status, detail } => {
            pb::workflow_event::Body::Workflow(pb::WorkflowChanged {
                status: workflow_status_to_pb(*status).into(),
                detail: detail.clone().unwrap_or_default(),
            })
        }
        EventBody::Task {
            task_id,
            status,
            attempt,
            agent,
            detail,
            compensation,
        } => pb::workflow_event::Body::Task(pb::TaskChanged {
            task_id: task_id.clone(),
            status: task_status_to_pb(*status).into(),
            attempt: *attempt,
            agent_id: agent.as_ref().map(ToString::to_string).unwrap_or_default(),
            detail: detail.clone().unwrap_or_default(),
            compensation: *compensation,
        }),
    };
    pb::WorkflowEvent {
        workflow_id: event.workflow.to_string(),
        sequence: event.sequence,
        at_ms: ms(event.at),
        body: Some(body),
    }
}

fn task_ref_to_pb(slot: Slot, attempt: u32) -> pb::TaskRef {
    pb::TaskRef {
        workflow_id: slot.workflow.to_string(),
        task_index: slot.wire_index(),
        attempt,
    }
}

/// One frame to an agent.
pub fn frame_to_pb(frame: Frame) -> pb::ControlMessage {
    pb::ControlMessage {
        assignments: frame
            .assignments
            .into_iter()
            .map(|assignment| pb::Assignment {
                task: Some(task_ref_to_pb(assignment.slot, assignment.attempt)),
                task_id: assignment.task_id,
                skill: assignment.skill.to_string(),
                input_json: assignment.input_json.into(),
                deadline_unix_ms: ms(assignment.deadline),
                idempotency_key: assignment.idempotency_key,
                traceparent: assignment.traceparent,
                tracestate: assignment.tracestate,
                workflow_name: assignment.workflow_name,
                settle: assignment.settle,
            })
            .collect(),
        cancellations: frame
            .cancellations
            .into_iter()
            .map(|(slot, attempt)| task_ref_to_pb(slot, attempt))
            .collect(),
        peer: Vec::new(),
        drain_acknowledged: frame.drain_acknowledged,
    }
}

/// Limits on what an agent card may declare.
const SKILLS_MAX: usize = 256;
const CONCURRENCY_MAX: u32 = 10_000;

/// An agent card as registered: every field checked, a missing one named.
impl TryFrom<pb::AgentCard> for AgentCard {
    type Error = ControlError;

    fn try_from(card: pb::AgentCard) -> Result<Self, ControlError> {
        if card.name.is_empty() || card.name.len() > 64 {
            return Err(ControlError::invalid(
                "agent card: name must be 1 to 64 characters",
            ));
        }
        if card.skills.is_empty() || card.skills.len() > SKILLS_MAX {
            return Err(ControlError::invalid(format!(
                "agent card `{}`: declare 1 to {SKILLS_MAX} skills",
                card.name
            )));
        }
        if card.max_concurrency == 0 || card.max_concurrency > CONCURRENCY_MAX {
            return Err(ControlError::invalid(format!(
                "agent card `{}`: max_concurrency must be 1 to {CONCURRENCY_MAX}",
                card.name
            )));
        }
        for skill in &card.skills {
            for (what, schema) in [
                ("input", &skill.input_schema_json),
                ("output", &skill.output_schema_json),
            ] {
                if !schema.is_empty() && serde_json::from_str::<serde_json::Value>(schema).is_err()
                {
                    return Err(ControlError::invalid(format!(
                        "agent card `{}`: skill `{}` has an {what} schema that is not JSON",
                        card.name, skill.name
                    )));
                }
            }
        }
        let role = match pb::AgentRole::try_from(card.role) {
            Ok(pb::AgentRole::Support) => AgentRole::Support,
            Ok(pb::AgentRole::Service) => AgentRole::Service,
            // Unset means a worker, as agents written before roles existed are.
            Ok(pb::AgentRole::Worker | pb::AgentRole::Unspecified) => AgentRole::Worker,
            Err(_) => {
                return Err(ControlError::invalid(format!(
                    "agent card `{}`: unknown role {}",
                    card.name, card.role
                )));
            }
        };
        Ok(Self {
            name: card.name,
            role,
            version: card.version,
            skills: card
                .skills
                .into_iter()
                .map(|skill| SkillCard {
                    name: skill.name,
                    description: skill.description,
                    effect: skill_effect_from_pb(skill.effect),
                    input_schema: skill.input_schema_json,
                    output_schema: skill.output_schema_json,
                })
                .collect(),
            max_concurrency: card.max_concurrency,
            labels: card.labels.into_iter().collect(),
        })
    }
}

pub fn agent_card_to_pb(card: &AgentCard) -> pb::AgentCard {
    pb::AgentCard {
        name: card.name.clone(),
        role: match card.role {
            AgentRole::Worker => pb::AgentRole::Worker,
            AgentRole::Support => pb::AgentRole::Support,
            AgentRole::Service => pb::AgentRole::Service,
        }
        .into(),
        version: card.version.clone(),
        skills: card
            .skills
            .iter()
            .map(|skill| pb::Skill {
                name: skill.name.clone(),
                description: skill.description.clone(),
                input_schema_json: skill.input_schema.clone(),
                output_schema_json: skill.output_schema.clone(),
                effect: skill_effect_to_pb(skill.effect).into(),
            })
            .collect(),
        max_concurrency: card.max_concurrency,
        labels: card
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn registration_to_pb(registration: Registration) -> pb::RegisterResponse {
    pb::RegisterResponse {
        agent_id: registration.agent.to_string(),
        session_token: registration.session_token,
        heartbeat_interval_ms: registration.heartbeat_interval_ms,
        lease_ttl_ms: registration.lease_ttl_ms,
    }
}

pub fn health_report_from_pb(report: pb::HealthReport) -> HealthReport {
    HealthReport {
        kind: report.kind,
        subject: report.subject,
        window_ms: report.window_ms,
        requests: report.requests,
        errors: report.errors,
        latency_p50_ms: report.latency_p50_ms,
        latency_p99_ms: report.latency_p99_ms,
        saturation: report.saturation,
        skills: report.skills,
    }
}

pub fn health_entry_to_pb(entry: &HealthEntry) -> pb::HealthEntry {
    let report = &entry.report;
    pb::HealthEntry {
        report: Some(pb::HealthReport {
            kind: report.kind.clone(),
            subject: report.subject.clone(),
            window_ms: report.window_ms,
            requests: report.requests,
            errors: report.errors,
            latency_p50_ms: report.latency_p50_ms,
            latency_p99_ms: report.latency_p99_ms,
            saturation: report.saturation,
            skills: report.skills.clone(),
        }),
        error_rate: entry.error_rate,
        reported_by: entry.reported_by.clone(),
        updated_at_ms: ms(entry.updated_at),
    }
}

pub fn breaker_to_pb(breaker: &BreakerView) -> pb::Breaker {
    pb::Breaker {
        gateway: breaker.gateway.clone(),
        state: breaker.state.as_str().into(),
        requests: breaker.window.requests,
        errors: breaker.window.errors,
        slow: breaker.window.slow,
        open_until_ms: ms(breaker.open_until),
        trials_in_flight: breaker.trials_in_flight,
        transitions: breaker
            .transitions
            .iter()
            .map(|t| pb::BreakerTransition {
                at_ms: ms(t.at),
                from: t.from.as_str().into(),
                to: t.to.as_str().into(),
                reason: t.reason.clone(),
            })
            .collect(),
    }
}

pub fn agent_view_to_pb(agent: &AgentView) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: agent.id.to_string(),
        card: Some(agent_card_to_pb(&agent.card)),
        execution_unit: agent.execution_unit.clone(),
        connected: agent.connected,
        inflight: agent.inflight,
        credits: agent.credits,
        draining: agent.draining,
        registered_at_ms: ms(agent.registered_at),
        tasks_completed: agent.tasks_completed,
        health: agent.health.as_ref().map(health_entry_to_pb),
    }
}

fn task_ref(task: Option<&pb::TaskRef>) -> Option<(Slot, u32)> {
    let task = task?;
    let workflow: WorkflowId = task.workflow_id.parse().ok()?;
    Some((Slot::from_wire(workflow, task.task_index), task.attempt))
}

/// An agent's output as stored: card numbers masked and CVV-like fields replaced. Most
/// outputs hold neither, and skip the parse.
fn redacted_output(bytes: &[u8]) -> std::sync::Arc<str> {
    let text = String::from_utf8_lossy(bytes);
    if !paygrid_telemetry::redact::might_hold_card_data(&text) {
        return text.into();
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            if paygrid_telemetry::redact::redact_json(&mut value) {
                tracing::warn!("an agent output held card data; it was masked before storing");
            }
            value.to_string().into()
        }
        Err(_) => paygrid_telemetry::redact::redact_text(&text).into(),
    }
}

/// One agent frame as scheduler events. What agents answer is stored and shown, so
/// outputs and errors are redacted here (DESIGN §4).
pub fn agent_events(agent: &AgentId, message: pb::AgentMessage) -> Vec<AgentEvent> {
    let mut events = Vec::with_capacity(message.results.len() + 2);
    for result in message.results {
        let Some((slot, attempt)) = task_ref(result.task.as_ref()) else {
            continue;
        };
        // What agents answer is stored and shown: no card data in it (DESIGN §4).
        let error = || {
            let error = if result.error_code.is_empty() {
                result.error_message.clone()
            } else {
                format!("{}: {}", result.error_code, result.error_message)
            };
            paygrid_telemetry::redact::redact_text(&error)
        };
        let outcome = match pb::Outcome::try_from(result.outcome) {
            Ok(pb::Outcome::Succeeded) => Outcome::Succeeded {
                output: redacted_output(&result.output_json),
            },
            Ok(pb::Outcome::Retryable) => Outcome::Retryable { error: error() },
            Ok(pb::Outcome::Permanent) => Outcome::Permanent { error: error() },
            Ok(pb::Outcome::Unknown) => Outcome::Unknown { error: error() },
            Ok(pb::Outcome::Cancelled) => Outcome::Cancelled,
            Ok(pb::Outcome::Refused) => Outcome::Refused,
            _ => Outcome::Retryable {
                error: format!("agent sent outcome {}", result.outcome),
            },
        };
        events.push(AgentEvent::Result {
            agent: agent.clone(),
            slot,
            attempt,
            outcome,
        });
    }
    if message.credits > 0 {
        events.push(AgentEvent::Credits {
            agent: agent.clone(),
            credits: message.credits,
        });
    }
    if !message.running.is_empty() {
        let running = message
            .running
            .iter()
            .filter_map(|t| task_ref(Some(t)))
            .collect();
        events.push(AgentEvent::Heartbeat {
            agent: agent.clone(),
            running,
        });
    }
    if message.draining {
        events.push(AgentEvent::Draining {
            agent: agent.clone(),
        });
    }
    events
}

pub fn skill_effect_to_pb(effect: SkillEffect) -> pb::SkillEffect {
    match effect {
        SkillEffect::ReadOnly => pb::SkillEffect::ReadOnly,
        SkillEffect::State => pb::SkillEffect::State,
        SkillEffect::MovesMoney => pb::SkillEffect::MovesMoney,
    }
}

fn skill_effect_from_pb(effect: i32) -> SkillEffect {
    match pb::SkillEffect::try_from(effect) {
        Ok(pb::SkillEffect::ReadOnly) => SkillEffect::ReadOnly,
        Ok(pb::SkillEffect::MovesMoney) => SkillEffect::MovesMoney,
        _ => SkillEffect::State,
    }
}

pub fn limits_to_pb(view: &crate::runtime::LimitsView) -> pb::LimitsState {
    pb::LimitsState {
        limits_yaml: view.source.clone(),
        concurrency_rules: view.concurrency_rules as u32,
        rate_rules: view.rate_rules as u32,
        running: view
            .running
            .iter()
            .map(|(rule, key, running, max)| pb::LimitUsage {
                rule: rule.clone(),
                key: key.clone(),
                running: *running,
                max: *max,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_outputs_and_errors_are_stored_without_card_data() {
        let output = redacted_output(
            br#"{"receipt":"paid with 4111 1111 1111 1111","cvv":"737","amount_minor":1250}"#,
        );
        assert!(!output.contains("4111 1111 1111 1111"), "{output}");
        assert!(!output.contains("737"), "{output}");
        assert!(output.contains("1250"), "{output}");
        // Not JSON: masked as text.
        let output = redacted_output(b"card 4242424242424242 cvv=123");
        assert!(!output.contains("4242424242424242"), "{output}");
        assert!(!output.contains("123"), "{output}");
        // Most outputs hold no card data and are stored as they came.
        let plain = br#"{"authorization_id":"auth_alpha_1"}"#;
        assert_eq!(
            &*redacted_output(plain),
            std::str::from_utf8(plain).unwrap()
        );

        let message = pb::AgentMessage {
            results: vec![pb::TaskResult {
                task: Some(pb::TaskRef {
                    workflow_id: WorkflowId(7).to_string(),
                    task_index: 0,
                    attempt: 1,
                }),
                outcome: pb::Outcome::Permanent.into(),
                error_code: "card_declined".into(),
                error_message: "card 4000 0566 5566 5556 declined, cvv=737".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let events = agent_events(&AgentId("agent-1".into()), message);
        let Some(AgentEvent::Result {
            outcome: Outcome::Permanent { error },
            ..
        }) = events.first()
        else {
            panic!("a permanent result: {events:?}");
        };
        assert!(error.starts_with("card_declined: "), "{error}");
        assert!(!error.contains("4000 0566 5566 5556"), "{error}");
        assert!(!error.contains("737"), "{error}");
    }
}
