//! Operations on accepted work (docs/operations.md), the `Workflows` service's side:
//! pause, resume, retry, re-drive, cancel, and their bulk form; each at the workflow's
//! owner, audited with the operation.

use paygrid_proto::v1 as pb;

use super::convert;
use super::workflows::{NOTE_MAX, WorkflowsService, parse_id};
use crate::error::ControlError;
use crate::model::WorkflowId;
use crate::runtime::{BulkOutcome, Input, Operated, Operation};
use crate::scheduler::operations::OperationError;

impl WorkflowsService {
    /// An operation on one workflow (docs/operations.md), at its owner, audited with
    /// the operation. A workflow no longer in memory has ended long ago:
    /// FAILED_PRECONDITION, not NOT_FOUND.
    pub async fn operate(
        &self,
        id: WorkflowId,
        operation: Operation,
    ) -> Result<Operated, ControlError> {
        if let Operation::Pause { reason } | Operation::Cancel { reason } = &operation
            && reason.chars().count() > NOTE_MAX
        {
            return Err(ControlError::invalid(format!(
                "reason is longer than {NOTE_MAX} characters"
            )));
        }
        if let Some(owner) = self.owner_of(id)? {
            return owner.operate(id, &operation).await;
        }
        let record = crate::audit::record(
            operation.name(),
            id.to_string(),
            operation_detail(&operation),
        );
        let result = self
            .handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Operate {
                    id,
                    operation,
                    reply,
                }),
            })
            .await?;
        match result {
            Err(ControlError::Operation(OperationError::NotFound(_)))
                if self.catalog.stored_workflow(id).await?.is_some() =>
            {
                Err(ControlError::Operation(OperationError::Refused(format!(
                    "workflow {id} ended long ago and left this control unit's memory (only its record is kept): submit it again"
                ))))
            }
            other => other,
        }
    }

    /// One operation over the workflows a filter matches (this control unit's), audited
    /// as one record.
    pub async fn bulk(
        &self,
        filter: crate::scheduler::operations::Filter,
        operation: Operation,
        dry_run: bool,
        limit: usize,
    ) -> Result<BulkOutcome, ControlError> {
        let record = crate::audit::record(
            &format!("bulk {}", operation.name()),
            "",
            format!(
                "{}{}{}",
                if dry_run { "dry run; " } else { "" },
                describe_filter(&filter),
                operation_detail(&operation)
            ),
        );
        self.handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Bulk {
                    filter,
                    operation,
                    dry_run,
                    limit,
                    reply,
                }),
            })
            .await
    }

    /// `Pause`, `Resume`, `RetryTask` or `Redrive` (`method`).
    pub(super) async fn operate_pb(
        &self,
        method: &str,
        request: pb::OperateRequest,
    ) -> Result<pb::OperateResponse, ControlError> {
        let (id, operation) = operation_of(method, request)?;
        Ok(operated_to_pb(self.operate(id, operation).await?))
    }

    /// `BulkOperate`.
    pub(super) async fn bulk_pb(
        &self,
        request: pb::BulkOperateRequest,
    ) -> Result<pb::BulkOperateResponse, ControlError> {
        let task = Some(request.task_id).filter(|t| !t.is_empty());
        let reason = if request.reason.is_empty() {
            "bulk operation by operator".to_owned()
        } else {
            request.reason
        };
        let operation = match pb::Operation::try_from(request.operation) {
            Ok(pb::Operation::Pause) => Operation::Pause { reason },
            Ok(pb::Operation::Resume) => Operation::Resume,
            Ok(pb::Operation::Retry) => Operation::Retry { task },
            Ok(pb::Operation::Cancel) => Operation::Cancel { reason },
            Ok(pb::Operation::Redrive) => Operation::Redrive {
                checkpoint: task.ok_or_else(|| {
                    ControlError::invalid("task_id is required: the checkpoint to re-drive from")
                })?,
            },
            _ => {
                return Err(ControlError::invalid(
                    "operation is required: OPERATION_PAUSE, _RESUME, _RETRY, _CANCEL or _REDRIVE",
                ));
            }
        };
        let filter = crate::scheduler::operations::Filter {
            status: convert::workflow_status_from_pb(request.status),
            name: Some(request.name).filter(|n| !n.is_empty()),
            labels: request.labels.into_iter().collect(),
            skill: Some(request.skill).filter(|s| !s.is_empty()),
            gateway: Some(request.gateway).filter(|g| !g.is_empty()),
        };
        let limit = match request.limit {
            0 => 1_000,
            n => n.min(10_000) as usize,
        };
        let outcome = self.bulk(filter, operation, request.dry_run, limit).await?;
        Ok(pb::BulkOperateResponse {
            matched: outcome.matched.len() as u32,
            workflow_ids: outcome.matched.iter().map(ToString::to_string).collect(),
            applied: outcome.applied as u32,
            refused: outcome.refused,
            dry_run: outcome.dry_run,
        })
    }
}

/// What an operation's audit record says besides its name.
fn operation_detail(operation: &Operation) -> String {
    match operation {
        Operation::Pause { reason } | Operation::Cancel { reason } => reason.clone(),
        Operation::Resume => String::new(),
        Operation::Retry { task } => task
            .as_ref()
            .map(|t| format!("task {t}"))
            .unwrap_or_default(),
        Operation::Redrive { checkpoint } => format!("from checkpoint {checkpoint}"),
    }
}

fn describe_filter(filter: &crate::scheduler::operations::Filter) -> String {
    let mut parts = Vec::new();
    if let Some(status) = filter.status {
        parts.push(format!("status={}", status.as_str()));
    }
    if let Some(name) = &filter.name {
        parts.push(format!("name={name}"));
    }
    for (key, value) in &filter.labels {
        parts.push(format!("label {key}={value}"));
    }
    if let Some(skill) = &filter.skill {
        parts.push(format!("skill={skill}"));
    }
    if let Some(gateway) = &filter.gateway {
        parts.push(format!("gateway={gateway}"));
    }
    if parts.is_empty() {
        "every workflow; ".to_owned()
    } else {
        format!("{}; ", parts.join(" "))
    }
}

/// The `OperateRequest` of a single-workflow method, as an operation.
fn operation_of(
    method: &str,
    request: pb::OperateRequest,
) -> Result<(WorkflowId, Operation), ControlError> {
    let id = parse_id(&request.workflow_id)?;
    let task = Some(request.task_id).filter(|t| !t.is_empty());
    let reason = if request.reason.is_empty() {
        "requested by operator".to_owned()
    } else {
        request.reason
    };
    let operation = match method {
        "pause" => Operation::Pause { reason },
        "resume" => Operation::Resume,
        "retry" => Operation::Retry { task },
        _ => Operation::Redrive {
            checkpoint: task.ok_or_else(|| {
                ControlError::invalid("task_id is required: the checkpoint to re-drive from")
            })?,
        },
    };
    Ok((id, operation))
}

fn operated_to_pb(operated: Operated) -> pb::OperateResponse {
    pb::OperateResponse {
        status: convert::workflow_status_to_pb(operated.status).into(),
        tasks: operated.tasks,
        paused: operated.paused,
    }
}
