//! Any door works: a call about a workflow another member owns (`Cancel`, `Approve`,
//! `Watch`, a keyed `Submit`) is forwarded to its owner over gRPC, as the caller this
//! member authenticated. The owner believes that caller because the forwarding member
//! presents the node certificate (docs/cluster.md, "Any door"). One hop at most: a
//! member that receives a forwarded call for a workflow it does not own (the directory
//! it was sent by is stale) answers `UNAVAILABLE`, and the client retries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::ClientSecurity;
use paygrid_security::policy::{Caller, FORWARDED_FOR, Proof, Role};
use tokio_stream::Stream;
use tonic::transport::Channel;

use super::membership::{Ownership, Place};
use crate::error::ControlError;
use crate::model::WorkflowId;

/// A forwarded unary call waits this long for the owner.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Events of one workflow as the `Watch` method streams them, wherever it is served.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WorkflowEvent, tonic::Status>> + Send>>;

/// Sends calls to the members that own their workflows.
pub struct Forwarder {
    pub ownership: Arc<Ownership>,
    /// How members reach each other: TLS presenting the node certificate, or plaintext
    /// (`--insecure`).
    client: ClientSecurity,
    /// One channel per member address, connected on first use and reconnecting by itself.
    channels: Mutex<HashMap<String, Channel>>,
}

/// The owner of a call's workflow, ready to take the forwarded call.
pub struct Owner {
    pub member: String,
    client: WorkflowsClient<Channel>,
    forwarded_for: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Forwarder {
    pub fn new(ownership: Arc<Ownership>, client: ClientSecurity) -> Self {
        Self {
            ownership,
            client,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// `None` when this member serves a call about `id`; else its owner.
    pub fn route(&self, id: &WorkflowId) -> Result<Option<Owner>, ControlError> {
        self.owner(self.ownership.place_of(id))
    }

    /// `None` when this member takes a submission with idempotency key `key`.
    pub fn route_key(&self, key: &str) -> Result<Option<Owner>, ControlError> {
        self.owner(self.ownership.place_of_key(key))
    }

    fn owner(&self, place: Place) -> Result<Option<Owner>, ControlError> {
        let (member, url) = match place {
            Place::Here => return Ok(None),
            Place::Nobody(why) => return Err(ControlError::NotOwner(why)),
            Place::Member { name, url } => (name, url),
        };
        // The caller this member authenticated goes with the call; a call nobody made
        // (the control unit's own) goes as the control unit.
        let caller = crate::audit::caller().unwrap_or_else(|| Caller {
            name: "control-unit".into(),
            proof: Proof::Certificate,
            role: Some(Role::Operator),
            skills: Arc::new([]),
            from: None,
            via: None,
        });
        if let Some(via) = &caller.via {
            return Err(ControlError::NotOwner(format!(
                "control unit {} does not own this workflow (control unit {member} at {url} does; {via} sent the call here from a stale view): retry",
                self.ownership.member
            )));
        }
        let forwarded_for = caller
            .forwarded_header(&self.ownership.member)
            .parse()
            .map_err(|e| ControlError::Internal(format!("forwarded-for header: {e}")))?;
        Ok(Some(Owner {
            client: WorkflowsClient::new(self.channel(&url)?),
            member,
            forwarded_for,
        }))
    }

    fn channel(&self, url: &str) -> Result<Channel, ControlError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let endpoint = self
            .client
            .endpoint(url)
            .map_err(|e| ControlError::NotOwner(format!("member address {url}: {e}")))?;
        let channel = self.client.channel_lazy(endpoint);
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl Owner {
    fn request<T>(
        &self,
        message: T,
        trace: Option<&tonic::metadata::MetadataMap>,
    ) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(FORWARDED_FOR, self.forwarded_for.clone());
        // The caller's trace and client name go on with the call.
        for name in ["traceparent", "tracestate", "paygrid-client"] {
            if let Some(value) = trace.and_then(|m| m.get(name)) {
                metadata.insert(name, value.clone());
            }
        }
        request
    }

    fn unary<T>(
        &self,
        message: T,
        trace: Option<&tonic::metadata::MetadataMap>,
    ) -> tonic::Request<T> {
        let mut request = self.request(message, trace);
        request.set_timeout(FORWARD_TIMEOUT);
        request
    }

    pub async fn submit(
        mut self,
        message: pb::SubmitRequest,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<pb::SubmitResponse, ControlError> {
        let request = self.unary(message, Some(metadata));
        Ok(self
            .client
            .submit(request)
            .await
            .map_err(remote)?
            .into_inner())
    }

    pub async fn cancel(
        mut self,
        message: pb::CancelWorkflowRequest,
    ) -> Result<pb::CancelWorkflowResponse, ControlError> {
        let request = self.unary(message, None);
        Ok(self
            .client
            .cancel(request)
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// `via`: the client the decision came through (`grpc`, `a2a`, `cli`, ...).
    pub async fn approve(
        mut self,
        message: pb::ApproveRequest,
        via: &str,
    ) -> Result<pb::ApproveResponse, ControlError> {
        let mut request = self.unary(message, None);
        if let Ok(via) = via.parse() {
            request.metadata_mut().insert("paygrid-client", via);
        }
        Ok(self
            .client
            .approve(request)
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// An operation (docs/operations.md) on the owner's workflow `id`.
    pub async fn operate(
        mut self,
        id: WorkflowId,
        operation: &crate::runtime::Operation,
    ) -> Result<crate::runtime::Operated, ControlError> {
        use crate::runtime::Operation;
        let (task_id, reason) = match operation {
            Operation::Pause { reason } | Operation::Cancel { reason } => {
                (String::new(), reason.clone())
            }
            Operation::Resume => (String::new(), String::new()),
            Operation::Retry { task } => (task.clone().unwrap_or_default(), String::new()),
            Operation::Redrive { checkpoint } => (checkpoint.clone(), String::new()),
        };
        let message = pb::OperateRequest {
            workflow_id: id.to_string(),
            task_id,
            reason,
        };
        let answer = match operation {
            Operation::Cancel { reason } => {
                let request = self.unary(
                    pb::CancelWorkflowRequest {
                        workflow_id: id.to_string(),
                        reason: reason.clone(),
                    },
                    None,
                );
                let status = self.client.cancel(request).await.map_err(remote)?;
                pb::OperateResponse {
                    status: status.into_inner().status,
                    ..Default::default()
                }
            }
            Operation::Pause { .. } => {
                let request = self.unary(message, None);
                self.client
                    .pause(request)
                    .await
                    .map_err(remote)?
                    .into_inner()
            }
            Operation::Resume => {
                let request = self.unary(message, None);
                self.client
                    .resume(request)
                    .await
                    .map_err(remote)?
                    .into_inner()
            }
            Operation::Retry { .. } => {
                let request = self.unary(message, None);
                self.client
                    .retry_task(request)
                    .await
                    .map_err(remote)?
                    .into_inner()
            }
            Operation::Redrive { .. } => {
                let request = self.unary(message, None);
                self.client
                    .redrive(request)
                    .await
                    .map_err(remote)?
                    .into_inner()
            }
        };
        Ok(crate::runtime::Operated {
            status: crate::service::convert::workflow_status_from_pb(answer.status).ok_or_else(
                || ControlError::Internal(format!("the owner of {id} answered no status")),
            )?,
            tasks: answer.tasks,
            paused: answer.paused,
        })
    }

    /// The owner's workflow of idempotency key `key`.
    pub async fn find_key(mut self, key: &str) -> Result<WorkflowId, ControlError> {
        let request = self.unary(
            pb::GetWorkflowRequest {
                workflow_id: String::new(),
                idempotency_key: key.to_owned(),
            },
            None,
        );
        let workflow = self.client.get(request).await.map_err(remote)?.into_inner();
        workflow
            .workflow_id
            .parse()
            .map_err(|e| ControlError::Internal(format!("the owner answered a bad id: {e}")))
    }

    pub async fn watch(mut self, id: WorkflowId) -> Result<EventStream, ControlError> {
        let request = self.request(
            pb::WatchWorkflowRequest {
                workflow_id: id.to_string(),
            },
            None,
        );
        let stream = self
            .client
            .watch(request)
            .await
            .map_err(remote)?
            .into_inner();
        Ok(Box::pin(stream))
    }
}

/// The owner's answer, as it gave it.
fn remote(status: tonic::Status) -> ControlError {
    ControlError::Remote(Box::new(status))
}
