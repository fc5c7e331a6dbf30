//! The control unit's one error type. Everything below the gRPC edge (actor, catalog,
//! store, spec compiler) answers with a [`ControlError`]; `service::status` maps each
//! kind to its gRPC status code, in one place.

use crate::model::WorkflowId;
use crate::scheduler::{CancelError, SubmitError};
use crate::spec::SpecErrors;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control unit is shutting down")]
    ShuttingDown,
    #[error("invalid workflow spec:\n{0}")]
    InvalidSpec(SpecErrors),
    /// A request field that is missing or malformed, named in the message.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(
        "idempotency key `{key}` was used for workflow {existing} with a different spec or input"
    )]
    KeyReused { key: String, existing: WorkflowId },
    /// A bound was reached (active workflows, watchers, a session buffer): retry later.
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the access policy does not allow it; the message says what is
    /// missing.
    #[error("{0}")]
    PermissionDenied(String),
    /// In a cluster: the workflow's partition is another control unit's (retry there, or
    /// later).
    #[error("{0}")]
    NotOwner(String),
    /// In a cluster: the answer of the member a call was forwarded to, passed on as it is.
    #[error("{}", .0.message())]
    Remote(Box<tonic::Status>),
    /// A wait that ran out of time; the work it waited for goes on.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Cancel(#[from] CancelError),
    #[error(transparent)]
    Approval(#[from] crate::scheduler::approvals::ApprovalError),
    #[error(transparent)]
    Operation(#[from] crate::scheduler::operations::OperationError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A broken invariant: a bug, or stored data this release cannot read.
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}
