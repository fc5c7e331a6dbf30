//! A workflow's spans, recorded from its committed history.
//!
//! The tree is workflow (root) → task (or compensation) → attempt; the execution unit hangs
//! the agent's handling span under the attempt, and the gateway call under that. A
//! workflow can outlive the process that started it, so its spans are not held open:
//! each one is built when what it covers has ended, with the times the history holds and
//! with ids that depend only on stored facts. The root span's id is stored with the
//! workflow (`traceparent`); task and attempt span ids are derived from it, the task's
//! index and the attempt number, so the context an agent received before a restart still
//! names the span recorded after it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use paygrid_telemetry::context::TraceParent;
use paygrid_telemetry::semconv::{self, event};

use crate::model::{TaskStatus, WorkflowStatus};
use crate::scheduler::state::Workflow;
use crate::scheduler::{AttemptOutcome, AttemptRecord, Change, Execution, Millis, Record, Slot};

/// The context to send with an attempt of a workflow whose root span is `root`: the
/// attempt's span as parent.
pub fn attempt_context(root: Option<TraceParent>, slot: Slot, attempt: u32) -> String {
    root.map(|root| {
        root.with_span(attempt_span(root, slot, attempt))
            .to_string()
    })
    .unwrap_or_default()
}

fn task_span(root: TraceParent, slot: Slot) -> SpanId {
    root.derive(u64::from(slot.wire_index()), 0)
}

fn attempt_span(root: TraceParent, slot: Slot, attempt: u32) -> SpanId {
    root.derive(u64::from(slot.wire_index()), u64::from(attempt))
}

/// Builds and exports spans as committed records end what they cover.
#[derive(Debug, Default)]
pub struct SpanRecorder {
    /// Attempts of each unfinished task already exported.
    exported: BTreeMap<Slot, usize>,
}

impl SpanRecorder {
    /// A workflow restored from the store: its past attempts were exported (or lost with
    /// the process that held them); only new ones are.
    pub fn restored(&mut self, workflow: &Workflow) {
        if workflow.status.is_terminal() {
            return;
        }
        for (index, task) in workflow.tasks.iter().enumerate() {
            for (execution, compensation) in [
                (Some(&task.run), false),
                (task.compensation.as_deref(), true),
            ] {
                if let Some(execution) = execution
                    && !execution.history.is_empty()
                {
                    let slot = Slot {
                        workflow: workflow.id,
                        task: index as u32,
                        compensation,
                    };
                    self.exported.insert(slot, execution.history.len());
                }
            }
        }
    }

    /// Exports the spans `record` ends. Call after the record is committed.
    pub fn record(&mut self, record: &Record, workflow: &Workflow) {
        let Some(root) = TraceParent::parse(&workflow.traceparent).filter(|r| r.sampled) else {
            return;
        };
        match &record.change {
            Change::Task {
                task,
                compensation,
                status,
                ..
            } => {
                let slot = Slot {
                    workflow: workflow.id,
                    task: *task,
                    compensation: *compensation,
                };
                let Some(execution) = workflow.execution(slot) else {
                    return;
                };
                let done = self.exported.get(&slot).copied().unwrap_or(0);
                for attempt in execution.history.iter().skip(done) {
                    paygrid_telemetry::otel::export(attempt_span_data(
                        root, workflow, slot, attempt,
                    ));
                }
                let ends_task = if *compensation {
                    matches!(
                        status,
                        TaskStatus::Compensated | TaskStatus::Failed | TaskStatus::Skipped
                    )
                } else {
                    matches!(
                        status,
                        TaskStatus::Succeeded
                            | TaskStatus::Failed
                            | TaskStatus::Skipped
                            | TaskStatus::Cancelled
                    )
                };
                if ends_task {
                    self.exported.remove(&slot);
                    paygrid_telemetry::otel::export(task_span_data(
                        root, workflow, slot, execution, *status, record.at,
                    ));
                } else if execution.history.len() > done {
                    self.exported.insert(slot, execution.history.len());
                }
            }
            Change::Workflow { status, .. } if status.is_terminal() => {
                let first = Slot {
                    workflow: workflow.id,
                    task: 0,
                    compensation: false,
                };
                let last = Slot {
                    workflow: workflow.id,
                    task: u32::MAX,
                    compensation: true,
                };
                let stale: Vec<Slot> = self.exported.range(first..=last).map(|(s, _)| *s).collect();
                for slot in stale {
                    self.exported.remove(&slot);
                }
                paygrid_telemetry::otel::export(workflow_span_data(
                    root, workflow, *status, record.at,
                ));
            }
            _ => {}
        }
    }
}

fn time(at: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(at)
}

/// A finished span of `root`'s trace; the caller fills attributes, events and status.
fn span(
    root: TraceParent,
    span_id: SpanId,
    parent: SpanId,
    name: String,
    kind: SpanKind,
    (start, end): (Millis, Millis),
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            root.trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: time(start),
        end_time: time(end.max(start)),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: paygrid_telemetry::otel::scope(),
    }
}

/// Fills what [`span`] left empty.
fn finish(
    mut data: SpanData,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    status: Status,
) -> SpanData {
    data.attributes = attributes;
    data.events.events = events;
    data.status = status;
    data
}

fn base_attributes(workflow: &Workflow) -> Vec<KeyValue> {
    vec![
        KeyValue::new(semconv::WORKFLOW_ID, workflow.id.to_string()),
        KeyValue::new(semconv::WORKFLOW_NAME, workflow.spec.name.clone()),
    ]
}

fn task_attributes(workflow: &Workflow, slot: Slot) -> Vec<KeyValue> {
    let compiled = &workflow.spec.tasks[slot.task as usize];
    let skill = if slot.compensation {
        compiled.compensate.as_ref().map(|c| c.skill.as_str())
    } else {
        compiled.skill()
    };
    let mut attributes = base_attributes(workflow);
    attributes.push(KeyValue::new(semconv::TASK_ID, compiled.id.clone()));
    if let Some(skill) = skill {
        attributes.push(KeyValue::new(semconv::SKILL, skill.to_owned()));
    }
    if slot.compensation {
        attributes.push(KeyValue::new(semconv::TASK_COMPENSATION, true));
    }
    attributes
}

fn error_event(at: Millis, name: &'static str, message: &str, attributes: Vec<KeyValue>) -> Event {
    let mut attributes = attributes;
    attributes.push(KeyValue::new(semconv::ERROR_MESSAGE, message.to_owned()));
    Event::new(name, time(at), attributes, 0)
}

fn attempt_span_data(
    root: TraceParent,
    workflow: &Workflow,
    slot: Slot,
    attempt: &AttemptRecord,
) -> SpanData {
    let mut attributes = task_attributes(workflow, slot);
    attributes.push(KeyValue::new(
        semconv::TASK_ATTEMPT,
        i64::from(attempt.attempt),
    ));
    attributes.push(KeyValue::new(
        semconv::ATTEMPT_OUTCOME,
        attempt.outcome.as_str(),
    ));
    if let Some(agent) = &attempt.agent {
        attributes.push(KeyValue::new(semconv::AGENT_ID, agent.to_string()));
    }
    let error = attempt.error.as_deref().unwrap_or("");
    let (status, events) = match attempt.outcome {
        AttemptOutcome::Succeeded => (Status::Ok, Vec::new()),
        outcome => {
            let name = match outcome {
                AttemptOutcome::Timeout => event::TIMEOUT,
                AttemptOutcome::LeaseExpired | AttemptOutcome::AgentLost => event::AGENT_LOST,
                _ => event::ERROR,
            };
            let retryable = !matches!(outcome, AttemptOutcome::Permanent);
            (
                Status::error(error.to_owned()),
                vec![error_event(
                    attempt.finished_at,
                    name,
                    error,
                    vec![
                        KeyValue::new(semconv::ATTEMPT_OUTCOME, outcome.as_str()),
                        KeyValue::new(semconv::RETRYABLE, retryable),
                    ],
                )],
            )
        }
    };
    let compiled = &workflow.spec.tasks[slot.task as usize];
    finish(
        span(
            root,
            attempt_span(root, slot, attempt.attempt),
            task_span(root, slot),
            format!("attempt {}", compiled.id),
            SpanKind::Client,
            (attempt.started_at, attempt.finished_at),
        ),
        attributes,
        events,
        status,
    )
}

fn task_span_data(
    root: TraceParent,
    workflow: &Workflow,
    slot: Slot,
    execution: &Execution,
    status: TaskStatus,
    at: Millis,
) -> SpanData {
    let compiled = &workflow.spec.tasks[slot.task as usize];
    let mut attributes = task_attributes(workflow, slot);
    attributes.push(KeyValue::new(semconv::TASK_STATUS, status.as_str()));
    attributes.push(KeyValue::new(
        semconv::TASK_ATTEMPT,
        i64::from(execution.attempt),
    ));
    // Every attempt but the last that failed was retried.
    let retried = execution
        .history
        .iter()
        .filter(|a| a.outcome != AttemptOutcome::Succeeded && a.attempt < execution.attempt);
    let mut events: Vec<Event> = retried
        .map(|a| {
            error_event(
                a.finished_at,
                event::RETRY,
                a.error.as_deref().unwrap_or(""),
                vec![
                    KeyValue::new(semconv::TASK_ATTEMPT, i64::from(a.attempt)),
                    KeyValue::new(semconv::ATTEMPT_OUTCOME, a.outcome.as_str()),
                ],
            )
        })
        .collect();
    let span_status = match status {
        TaskStatus::Failed => {
            let error = execution.error.as_deref().unwrap_or("failed");
            events.push(error_event(at, event::ERROR, error, Vec::new()));
            Status::error(error.to_owned())
        }
        TaskStatus::Succeeded | TaskStatus::Compensated => Status::Ok,
        _ => Status::Unset,
    };
    let start = execution
        .history
        .first()
        .map(|a| a.started_at)
        .filter(|s| *s > 0)
        .or(Some(execution.started_at).filter(|s| *s > 0))
        .unwrap_or(at);
    let verb = if slot.compensation {
        "compensate"
    } else {
        "task"
    };
    finish(
        span(
            root,
            task_span(root, slot),
            root.span_id,
            format!("{verb} {}", compiled.id),
            SpanKind::Internal,
            (start, at),
        ),
        attributes,
        events,
        span_status,
    )
}

fn workflow_span_data(
    root: TraceParent,
    workflow: &Workflow,
    status: WorkflowStatus,
    at: Millis,
) -> SpanData {
    let mut attributes = base_attributes(workflow);
    attributes.push(KeyValue::new(semconv::WORKFLOW_STATUS, status.as_str()));
    let input = workflow.input.as_ref();
    if let Some(amount) = input
        .get("amount_minor")
        .or_else(|| input.get("amount"))
        .and_then(serde_json::Value::as_i64)
    {
        attributes.push(KeyValue::new(semconv::AMOUNT_MINOR, amount));
    }
    if let Some(currency) = input.get("currency").and_then(serde_json::Value::as_str) {
        attributes.push(KeyValue::new(
            semconv::CURRENCY,
            Value::from(currency.to_owned()),
        ));
    }
    let mut events = Vec::new();
    let span_status = if status == WorkflowStatus::Succeeded {
        Status::Ok
    } else {
        let error = workflow.error.as_deref().unwrap_or(status.as_str());
        events.push(error_event(at, event::ERROR, error, Vec::new()));
        Status::error(error.to_owned())
    };
    let mut data = finish(
        span(
            root,
            root.span_id,
            SpanId::INVALID,
            format!("workflow {}", workflow.spec.name),
            SpanKind::Server,
            (workflow.created_at, at),
        ),
        attributes,
        events,
        span_status,
    );
    if let Ok(parent) = SpanId::from_hex(&workflow.trace_parent_span)
        && parent != SpanId::INVALID
    {
        data.parent_span_id = parent;
        data.parent_span_is_remote = true;
    }
    data
}
