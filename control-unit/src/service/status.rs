//! Every control-unit error as a gRPC status: the one place where status codes are
//! chosen, so each kind of failure reads the same to every client.

use tonic::{Code, Status};

use crate::error::ControlError;
use crate::scheduler::approvals::ApprovalError;
use crate::scheduler::{CancelError, SubmitError};
use crate::store::StoreError;

/// The metadata of a refusal for load: milliseconds to wait before retrying.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        let error = match error {
            ControlError::Remote(status) => return *status,
            error => error,
        };
        let code = match &error {
            ControlError::Remote(_) => Code::Unknown,
            ControlError::ShuttingDown | ControlError::NotOwner(_) => Code::Unavailable,
            ControlError::InvalidSpec(_) | ControlError::InvalidArgument(_) => {
                Code::InvalidArgument
            }
            ControlError::NotFound(_) | ControlError::Cancel(CancelError::NotFound(_)) => {
                Code::NotFound
            }
            ControlError::AlreadyExists(_)
            | ControlError::KeyReused { .. }
            | ControlError::Submit(SubmitError::Duplicate(_)) => Code::AlreadyExists,
            ControlError::Exhausted(_)
            | ControlError::Submit(
                SubmitError::Overloaded { .. } | SubmitError::KeyOverloaded { .. },
            ) => Code::ResourceExhausted,
            ControlError::Unauthenticated(_) => Code::Unauthenticated,
            ControlError::PermissionDenied(_) => Code::PermissionDenied,
            ControlError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ControlError::Store(store) => match store {
                // The database is unreachable or refused the statement: worth a retry.
                StoreError::Sqlite { .. }
                | StoreError::Io { .. }
                | StoreError::Postgres(_)
                | StoreError::Join(_)
                | StoreError::Fenced(_)
                | StoreError::Interrupted(_) => Code::Unavailable,
                StoreError::Corrupt(_) => Code::DataLoss,
                StoreError::Unsupported(_) | StoreError::Misplaced(_) => Code::FailedPrecondition,
            },
            ControlError::Approval(approval) => match approval {
                ApprovalError::WorkflowNotFound(_) | ApprovalError::NoSuchTask { .. } => {
                    Code::NotFound
                }
                ApprovalError::NotAnApproval(_) => Code::InvalidArgument,
                ApprovalError::NotPending { .. }
                | ApprovalError::NonePending(_)
                | ApprovalError::Ambiguous { .. } => Code::FailedPrecondition,
            },
            ControlError::Operation(operation) => {
                use crate::scheduler::operations::OperationError;
                match operation {
                    OperationError::NotFound(_) => Code::NotFound,
                    OperationError::Refused(_) => Code::FailedPrecondition,
                    OperationError::Invalid(_) => Code::InvalidArgument,
                }
            }
            ControlError::Internal(_) => Code::Internal,
        };
        let retry_after = match &error {
            ControlError::Submit(submit) => submit.retry_after_ms(),
            _ => None,
        };
        let mut status = Status::new(code, error.to_string());
        if let Some(ms) = retry_after {
            // The hint as metadata a client can read without parsing the message.
            status
                .metadata_mut()
                .insert(RETRY_AFTER_METADATA, ms.into());
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkflowId;

    #[test]
    fn each_kind_has_its_code_and_keeps_its_message() {
        let cases = [
            (ControlError::ShuttingDown, Code::Unavailable),
            (
                ControlError::invalid("input_json: not JSON"),
                Code::InvalidArgument,
            ),
            (
                ControlError::Cancel(CancelError::NotFound(WorkflowId(1))),
                Code::NotFound,
            ),
            (
                ControlError::KeyReused {
                    key: "order-1".into(),
                    existing: WorkflowId(1),
                },
                Code::AlreadyExists,
            ),
            (
                ControlError::Submit(SubmitError::Overloaded {
                    active: 2,
                    limit: 2,
                }),
                Code::ResourceExhausted,
            ),
            (
                ControlError::Store(StoreError::Postgres("connection refused".into())),
                Code::Unavailable,
            ),
            (
                ControlError::Store(StoreError::Corrupt("snapshot".into())),
                Code::DataLoss,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
