//! `Follow`: one completion stream for many workflows. A client that submits thousands of
//! workflows learns of their ends here instead of opening one `Watch` per workflow (a
//! stream each, and a snapshot each, at the control unit and at the client).
//!
//! One task per stream reads the caller's requests, hands the ids this member owns to
//! the actor (one input per request, not awaited: the actor answers each id once, with
//! its end once it is durable or with why not, on the stream's channel), follows ids
//! another member owns through a forwarded `Watch`, and writes ends and refusals to the
//! stream. Everything is bounded: the stream counts the ids it has open and refuses ids
//! beyond [`FOLLOWS_PER_STREAM_MAX`], so the actor's answers always fit their channel.

use std::pin::Pin;

use paygrid_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::convert;
use super::workflows::{WorkflowsService, parse_id};
use crate::error::ControlError;
use crate::model::WorkflowId;
use crate::runtime::{Followed, Follower, Input};

/// Workflows one stream may follow before their ends (locally and forwarded, each).
pub(super) const FOLLOWS_PER_STREAM_MAX: usize = 100_000;

pub type FollowStream = Pin<Box<dyn Stream<Item = Result<pb::FollowEvent, Status>> + Send>>;

type Out = mpsc::Sender<Result<pb::FollowEvent, Status>>;

/// The stream's side of the actor's followers.
struct Answers {
    sender: mpsc::Sender<Followed>,
    receiver: mpsc::Receiver<Followed>,
    /// Ids given to the actor and not answered yet: at most [`FOLLOWS_PER_STREAM_MAX`],
    /// the channel's room, so every answer fits.
    open: usize,
}

impl WorkflowsService {
    /// Serves one `Follow` stream.
    pub fn follow_stream<S>(&self, requests: S) -> FollowStream
    where
        S: Stream<Item = Result<pb::FollowRequest, Status>> + Send + Unpin + 'static,
    {
        let (out, stream) = mpsc::channel(self.watch_buffer);
        let service = self.clone();
        tokio::spawn(async move { service.serve_follow(requests, out).await });
        Box::pin(ReceiverStream::new(stream))
    }

    async fn serve_follow<S>(self, mut requests: S, out: Out)
    where
        S: Stream<Item = Result<pb::FollowRequest, Status>> + Send + Unpin + 'static,
    {
        let (sender, receiver) = mpsc::channel(FOLLOWS_PER_STREAM_MAX);
        let mut answers = Answers {
            sender,
            receiver,
            open: 0,
        };
        let mut restarts = self.handle.restarts();
        let mut forwarded = JoinSet::new();
        let mut reading = true;
        loop {
            if !reading && answers.open == 0 && forwarded.is_empty() {
                return; // every id asked for was answered, and the caller sends no more
            }
            tokio::select! {
                Some(answer) = answers.receiver.recv(), if answers.open > 0 => {
                    answers.open -= 1;
                    if self.answer(answer, &out).await.is_err() {
                        return;
                    }
                }
                // The actor dropped its followers: ids still open would never be answered.
                Ok(()) = restarts.changed() => if answers.open > 0 {
                    let _ = out.send(Err(Status::unavailable(
                        "the control unit's scheduler started again from the store: \
                         follow the open workflows again",
                    ))).await;
                    return;
                },
                request = requests.next(), if reading => match request {
                    Some(Ok(request)) => {
                        self.add(request, &mut answers, &mut forwarded, &out).await;
                    }
                    // The caller sends no more ids (or its side broke): answer the open ones.
                    Some(Err(_)) | None => reading = false,
                },
                Some(_) = forwarded.join_next(), if !forwarded.is_empty() => {}
                () = out.closed() => return,
            }
        }
    }

    /// Writes one of the actor's answers to the stream; `Err` once the caller is gone.
    async fn answer(&self, answer: Followed, out: &Out) -> Result<(), ()> {
        let body = match answer {
            Followed::Ended(event) => pb::follow_event::Body::Ended(convert::event_to_pb(&event)),
            // An ended workflow that has left memory: its end is in the store.
            Followed::NotInMemory { id, snapshot } => {
                match self.catalog.stored_workflow(id).await {
                    Ok(Some(view)) if view.workflow.status.is_terminal() => {
                        pb::follow_event::Body::Ended(stored_end(id, &view, snapshot))
                    }
                    // Stored but not ended, and not in memory: the scheduler is starting
                    // again from the store (a rebalance); it will be back.
                    Ok(Some(_)) => refused(
                        id.to_string(),
                        ControlError::NotOwner(format!(
                            "workflow {id} is being recovered: follow it again"
                        )),
                    ),
                    Ok(None) => refused(
                        id.to_string(),
                        ControlError::NotFound(format!("workflow {id} not found")),
                    ),
                    Err(error) => refused(id.to_string(), error),
                }
            }
            Followed::Refused(id, error) => refused(id.to_string(), error),
        };
        out.send(Ok(pb::FollowEvent { body: Some(body) }))
            .await
            .map_err(|_| ())
    }

    async fn add(
        &self,
        request: pb::FollowRequest,
        answers: &mut Answers,
        forwarded: &mut JoinSet<()>,
        out: &Out,
    ) {
        let mut local = Vec::with_capacity(request.workflow_ids.len());
        for text in request.workflow_ids {
            let id = match parse_id(&text) {
                Ok(id) => id,
                Err(error) => {
                    refuse(out, text, error).await;
                    continue;
                }
            };
            match self.owner_of(id) {
                Ok(None) if answers.open + local.len() >= FOLLOWS_PER_STREAM_MAX => {
                    refuse(out, text, too_many("workflows")).await;
                }
                Ok(None) => local.push(id),
                Ok(Some(_)) if forwarded.len() >= FOLLOWS_PER_STREAM_MAX => {
                    refuse(out, text, too_many("workflows at other members")).await;
                }
                Ok(Some(_)) => {
                    let (service, out) = (self.clone(), out.clone());
                    forwarded.spawn(async move {
                        service.follow_forwarded(id, request.snapshot, out).await;
                    });
                }
                Err(error) => refuse(out, text, error).await,
            }
        }
        if local.is_empty() {
            return;
        }
        let follower = Follower {
            sender: answers.sender.clone(),
            snapshot: request.snapshot,
        };
        let count = local.len();
        match self
            .handle
            .send(Input::Follow {
                ids: local.clone(),
                follower,
            })
            .await
        {
            Ok(()) => answers.open += count,
            // The actor's channel only fails once it has stopped.
            Err(_) => {
                for id in local {
                    refuse(out, id.to_string(), ControlError::ShuttingDown).await;
                }
            }
        }
    }

    /// Follows a workflow another member owns through its `Watch`, and sends its end.
    async fn follow_forwarded(&self, id: WorkflowId, snapshot: bool, out: Out) {
        let watched = match self.owner_of(id) {
            Ok(Some(owner)) => owner.watch(id).await,
            Ok(None) => self.events(id).await,
            Err(error) => Err(error),
        };
        let mut events = match watched {
            Ok(events) => events,
            Err(error) => return refuse(&out, id.to_string(), error).await,
        };
        let mut last = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => last = Some(event),
                Err(status) => {
                    return refuse(&out, id.to_string(), ControlError::Remote(Box::new(status)))
                        .await;
                }
            }
        }
        let Some(mut event) = last else {
            return refuse(
                &out,
                id.to_string(),
                ControlError::Internal(format!("the owner of {id} ended its watch early")),
            )
            .await;
        };
        match (snapshot, event.body.take()) {
            (true, Some(pb::workflow_event::Body::Snapshot(workflow))) => {
                event.body = Some(pb::workflow_event::Body::Snapshot(workflow));
            }
            // The end as a snapshot: a watch of an ended workflow is its snapshot alone.
            (true, _) => {
                let again = match self.owner_of(id) {
                    Ok(Some(owner)) => owner.watch(id).await,
                    Ok(None) => self.events(id).await,
                    Err(error) => Err(error),
                };
                match again {
                    Ok(mut events) => match events.next().await {
                        Some(Ok(snapshot)) => event = snapshot,
                        Some(Err(status)) => {
                            return refuse(
                                &out,
                                id.to_string(),
                                ControlError::Remote(Box::new(status)),
                            )
                            .await;
                        }
                        None => {}
                    },
                    Err(error) => return refuse(&out, id.to_string(), error).await,
                }
            }
            (false, Some(pb::workflow_event::Body::Snapshot(workflow))) => {
                event.body = Some(pb::workflow_event::Body::Workflow(pb::WorkflowChanged {
                    status: workflow.status,
                    detail: workflow.error,
                }));
            }
            (false, body) => event.body = body,
        }
        let _ = out
            .send(Ok(pb::FollowEvent {
                body: Some(pb::follow_event::Body::Ended(event)),
            }))
            .await;
    }
}

fn too_many(what: &str) -> ControlError {
    ControlError::Exhausted(format!(
        "this stream follows {FOLLOWS_PER_STREAM_MAX} open {what}, the limit"
    ))
}

/// The end of a workflow read from the store.
fn stored_end(
    id: WorkflowId,
    view: &crate::views::WorkflowView,
    snapshot: bool,
) -> pb::WorkflowEvent {
    let body = if snapshot {
        pb::workflow_event::Body::Snapshot(convert::workflow_to_pb(view))
    } else {
        pb::workflow_event::Body::Workflow(pb::WorkflowChanged {
            status: convert::workflow_status_to_pb(view.workflow.status).into(),
            detail: view.workflow.error.clone().unwrap_or_default(),
        })
    };
    pb::WorkflowEvent {
        workflow_id: id.to_string(),
        sequence: 0,
        at_ms: view.workflow.updated_at as i64,
        body: Some(body),
    }
}

fn refused(workflow_id: String, error: ControlError) -> pb::follow_event::Body {
    let status = Status::from(error);
    pb::follow_event::Body::Refused(pb::FollowRefused {
        workflow_id,
        code: code_name(status.code()).to_owned(),
        message: status.message().to_owned(),
    })
}

async fn refuse(out: &Out, workflow_id: String, error: ControlError) {
    let body = refused(workflow_id, error);
    let _ = out.send(Ok(pb::FollowEvent { body: Some(body) })).await;
}

/// A gRPC status code as the specification names it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
