//! Domain ⇄ protobuf, in one place. Generated types stop here.

use paygrid_proto::v1 as pb;

use crate::model::{Priority, TaskStatus, WorkflowStatus};
use crate::scheduler::{Change, Execution, Record, Scheduler, Workflow};

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

fn history(execution: &Execution) -> Vec<pb::AttemptRecord> {
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
        })
        .collect()
}

/// The full workflow, as `Get` returns it.
pub fn workflow_to_pb(workflow: &Workflow, scheduler: &Scheduler) -> pb::Workflow {
    let tasks = workflow
        .tasks
        .iter()
        .zip(&workflow.spec.tasks)
        .map(|(state, compiled)| {
            let run = &state.run;
            let waiting_reason = match (run.status, compiled.skill()) {
                (TaskStatus::Ready, Some(skill)) => scheduler.waiting_reason(skill),
                _ => String::new(),
            };
            let mut task_history = history(run);
            if let Some(compensation) = &state.compensation {
                task_history.extend(history(compensation));
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
    }
}

pub fn summary_to_pb(workflow: &Workflow) -> pb::WorkflowSummary {
    pb::WorkflowSummary {
        workflow_id: workflow.id.to_string(),
        name: workflow.spec.name.clone(),
        version: workflow.spec.version,
        status: workflow_status_to_pb(workflow.status).into(),
        priority: priority_to_pb(workflow.priority).into(),
        created_at_ms: ms(workflow.created_at),
        updated_at_ms: ms(workflow.updated_at),
        labels: workflow
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tasks_total: workflow.tasks.len() as u32,
        tasks_done: workflow
            .tasks
            .iter()
            .filter(|t| t.run.status.is_terminal())
            .count() as u32,
    }
}

/// A recorded change as a `Watch` event; `None` for records a watcher does not see.
pub fn record_to_event(
    record: &Record,
    workflow: &Workflow,
    sequence: u64,
) -> Option<pb::WorkflowEvent> {
    let body = match &record.change {
        Change::Created | Change::CancelRequested { .. } => return None,
        Change::Workflow { status, detail } => {
            pb::workflow_event::Body::Workflow(pb::WorkflowChanged {
                status: workflow_status_to_pb(*status).into(),
                detail: detail.clone().unwrap_or_default(),
            })
        }
        Change::Task {
            task,
            compensation,
            status,
            attempt,
            agent,
            detail,
            ..
        } => pb::workflow_event::Body::Task(pb::TaskChanged {
            task_id: workflow.task_id(*task).to_owned(),
            status: task_status_to_pb(*status).into(),
            attempt: *attempt,
            agent_id: agent.as_ref().map(ToString::to_string).unwrap_or_default(),
            detail: detail.clone().unwrap_or_default(),
            compensation: *compensation,
        }),
    };
    Some(pb::WorkflowEvent {
        workflow_id: record.workflow.to_string(),
        sequence,
        at_ms: ms(record.at),
        body: Some(body),
    })
}

/// A stored workflow's summary, from its latest snapshot.
pub fn summary_from_snapshot(
    snapshot: &crate::scheduler::restore::Snapshot,
) -> pb::WorkflowSummary {
    pb::WorkflowSummary {
        workflow_id: snapshot.id.clone(),
        name: snapshot.name.clone(),
        version: snapshot.version,
        status: workflow_status_to_pb(snapshot.status).into(),
        priority: priority_to_pb(snapshot.priority).into(),
        created_at_ms: ms(snapshot.created_at),
        updated_at_ms: ms(snapshot.updated_at),
        labels: snapshot
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tasks_total: snapshot.tasks.len() as u32,
        tasks_done: snapshot
            .tasks
            .iter()
            .filter(|t| t.run.status.is_terminal())
            .count() as u32,
    }
}
