//! How the load generator learns that a workflow ended: one `Follow` stream per door for
//! every workflow in flight (the default), or one `Watch` per workflow (`--follow watch`,
//! what a client without `Follow` does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How the load generator follows workflows to their ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FollowMode {
    /// One `Follow` stream per door for every workflow.
    Stream,
    /// One `Watch` per workflow.
    Watch,
}

/// Ids sent to the stream but not yet answered, with who waits for each.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Result<bool, String>>>>>;

/// Ids queued for the stream; more wait on the sender.
const QUEUED_MAX: usize = 4_096;
/// Ids per `FollowRequest`.
const BATCH_MAX: usize = 256;

/// One `Follow` stream, shared by every worker of a door.
pub(crate) struct Completions {
    ids: mpsc::Sender<String>,
    waiting: Waiting,
}

impl Completions {
    pub(crate) async fn open(channel: Channel) -> anyhow::Result<Self> {
        let (ids, mut queued) = mpsc::channel::<String>(QUEUED_MAX);
        let (requests, outgoing) = mpsc::channel(16);
        // Ids that queued up while a request was on its way go together in the next one.
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH_MAX);
            while queued.recv_many(&mut batch, BATCH_MAX).await > 0 {
                let request = pb::FollowRequest {
                    workflow_ids: std::mem::take(&mut batch),
                    snapshot: false,
                };
                if requests.send(request).await.is_err() {
                    return;
                }
            }
        });
        let mut stream = WorkflowsClient::new(channel)
            .follow(ReceiverStream::new(outgoing))
            .await
            .context("opening a Follow stream")?
            .into_inner();
        let waiting: Waiting = Arc::default();
        let answers = waiting.clone();
        tokio::spawn(async move {
            let why = loop {
                let (id, answer) = match stream.message().await {
                    Ok(Some(event)) => match event.body {
                        Some(pb::follow_event::Body::Ended(ended)) => {
                            let status = match ended.body {
                                Some(pb::workflow_event::Body::Workflow(w)) => w.status(),
                                Some(pb::workflow_event::Body::Snapshot(w)) => w.status(),
                                _ => pb::WorkflowStatus::Unspecified,
                            };
                            (
                                ended.workflow_id,
                                Ok(status == pb::WorkflowStatus::Succeeded),
                            )
                        }
                        Some(pb::follow_event::Body::Refused(refused)) => (
                            refused.workflow_id,
                            Err(format!("{}: {}", refused.code, refused.message)),
                        ),
                        None => continue,
                    },
                    Ok(None) => break "the Follow stream ended".to_owned(),
                    Err(status) => break format!("the Follow stream failed: {status}"),
                };
                let waiter = answers.lock().ok().and_then(|mut w| w.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            };
            if let Ok(mut waiting) = answers.lock() {
                for (_, waiter) in waiting.drain() {
                    let _ = waiter.send(Err(why.clone()));
                }
            }
        });
        Ok(Self { ids, waiting })
    }

    /// Whether workflow `id` succeeded, once it has ended.
    pub(crate) async fn ended(&self, id: &str) -> anyhow::Result<bool> {
        let (waiter, answer) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("the Follow reader panicked"))?
            .insert(id.to_owned(), waiter);
        self.ids
            .send(id.to_owned())
            .await
            .map_err(|_| anyhow::anyhow!("the Follow stream is closed"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the Follow stream is closed"))?
            .map_err(|why| anyhow::anyhow!("following {id}: {why}"))
    }
}

/// Whether workflow `id` succeeded, by its own `Watch`.
pub(crate) async fn watch(client: &mut WorkflowsClient<Channel>, id: &str) -> anyhow::Result<bool> {
    let mut stream = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: id.to_owned(),
        })
        .await?
        .into_inner();
    let mut status = pb::WorkflowStatus::Unspecified;
    while let Some(event) = stream.message().await? {
        match event.body {
            Some(pb::workflow_event::Body::Snapshot(w)) => status = w.status(),
            Some(pb::workflow_event::Body::Workflow(w)) => status = w.status(),
            _ => {}
        }
    }
    Ok(status == pb::WorkflowStatus::Succeeded)
}
