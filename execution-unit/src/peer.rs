//! Peer messaging from an agent's side: ask another agent to run one of its read-only
//! skills and await the answer (A2A-style), through this agent's session with the
//! control unit, which routes it (agents never dial each other).
//!
//! ```ignore
//! let entries = task
//!     .peers
//!     .ask(PeerRequest::new("ledger.expected", json!({"gateway": "alpha"})).context(&task.workflow_id))
//!     .await?;
//! ```
//!
//! Requests carry the caller's trace context (the span current when `ask` is called,
//! usually the task's handling span), so the peer's handling shows up in the same trace.
//! The answer is awaited at most `timeout` (default 10 s, never past the task's deadline
//! when built with [`PeerRequest::for_task`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paygrid_proto::v1 as pb;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Peer messages an agent may have queued for its session at once.
pub(crate) const OUTBOUND_MAX: usize = 64;

/// Why a peer request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no answer from a peer within {0:?}")]
    Timeout(Duration),
    /// The control unit could not deliver it (no peer offers the skill, rate limit, too
    /// large, a skill that changes state), or the peer failed: the reason.
    #[error("peer request refused: {0}")]
    Refused(String),
    #[error("{0} peer messages already wait for the session: retry later")]
    Busy(usize),
    #[error("the answer is not JSON: {0}")]
    BadAnswer(String),
}

/// What to ask a peer.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    pub skill: String,
    pub input: Value,
    /// A particular agent; otherwise any connected agent offering the skill.
    pub to_agent: Option<String>,
    /// What it is for (a workflow id): shown on the control unit's span.
    pub context_id: String,
    pub timeout: Duration,
}

impl PeerRequest {
    pub fn new(skill: impl Into<String>, input: Value) -> Self {
        Self {
            skill: skill.into(),
            input,
            to_agent: None,
            context_id: String::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Asked while handling `task`: in its workflow's context, and never waiting past
    /// its deadline.
    pub fn for_task(skill: impl Into<String>, input: Value, task: &crate::Task) -> Self {
        let mut request = Self::new(skill, input);
        request.context_id.clone_from(&task.workflow_id);
        request.timeout = request.timeout.min(task.time_left());
        request
    }

    pub fn to_agent(mut self, agent_id: impl Into<String>) -> Self {
        self.to_agent = Some(agent_id.into());
        self
    }

    pub fn context(mut self, context_id: impl Into<String>) -> Self {
        self.context_id = context_id.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

type Waiter = oneshot::Sender<Result<Value, PeerError>>;

struct Inner {
    outbound: mpsc::Sender<pb::PeerMessage>,
    waiting: Mutex<HashMap<String, Waiter>>,
    next: AtomicU64,
    /// Makes message ids unique across restarts of the agent.
    prefix: String,
}

/// An agent's door to its peers; cheap to clone, handed to every task.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// A door and the queue its messages leave by (read by the agent's session).
    pub(crate) fn new(agent: &str) -> (Self, mpsc::Receiver<pb::PeerMessage>) {
        let (outbound, receiver) = mpsc::channel(OUTBOUND_MAX);
        let peers = Self {
            inner: Arc::new(Inner {
                outbound,
                waiting: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
                prefix: format!("{agent}-{}-{:x}", std::process::id(), nonce()),
            }),
        };
        (peers, receiver)
    }

    /// A door that leads nowhere (an agent handled outside an execution unit, in tests):
    /// every request is refused.
    pub fn detached() -> Self {
        Self::new("detached").0
    }

    /// Asks a peer and awaits its answer.
    pub async fn ask(&self, request: PeerRequest) -> Result<Value, PeerError> {
        let span = ask_span(&request);
        self.ask_in(request).instrument(span).await
    }

    async fn ask_in(&self, request: PeerRequest) -> Result<Value, PeerError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let message_id = format!("{}-{n}", self.inner.prefix);
        let (traceparent, tracestate) =
            paygrid_telemetry::context::inject(&tracing::Span::current());
        let deadline = SystemTime::now() + request.timeout;
        let message = pb::PeerMessage {
            message_id: message_id.clone(),
            skill: request.skill,
            to_agent: request.to_agent.unwrap_or_default(),
            data_json: serde_json::to_vec(&request.input)
                .unwrap_or_default()
                .into(),
            context_id: request.context_id,
            traceparent,
            tracestate,
            deadline_unix_ms: deadline
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            ..Default::default()
        };
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(message_id.clone(), sender);
        if self.inner.outbound.try_send(message).is_err() {
            self.lock().remove(&message_id);
            return Err(PeerError::Busy(OUTBOUND_MAX));
        }
        let answer = tokio::time::timeout(request.timeout, receiver).await;
        self.lock().remove(&message_id);
        let result = match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(PeerError::Timeout(request.timeout)),
        };
        if let Err(error) = &result {
            paygrid_telemetry::context::record_error(
                &tracing::Span::current(),
                "peer_error",
                &error.to_string(),
                false,
            );
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An answer (or a refusal) from the control unit: wakes the request it answers.
    pub(crate) fn answered(&self, message: pb::PeerMessage) {
        let Some(waiter) = self.lock().remove(&message.in_reply_to) else {
            return; // it stopped waiting
        };
        let result = if message.error.is_empty() {
            serde_json::from_slice(&message.data_json)
                .map_err(|e| PeerError::BadAnswer(e.to_string()))
        } else {
            Err(PeerError::Refused(message.error))
        };
        let _ = waiter.send(result);
    }

    /// Sends an answer to a request this agent handled.
    pub(crate) async fn reply(&self, answer: pb::PeerMessage) {
        let _ = self.inner.outbound.send(answer).await;
    }
}

/// The caller's side of a request: a client span, child of the current one.
fn ask_span(request: &PeerRequest) -> tracing::Span {
    if !paygrid_telemetry::otel::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "paygrid::peer",
        "peer ask",
        otel.name = format!("peer ask {}", request.skill),
        otel.kind = "client",
    );
    span.set_attribute(paygrid_telemetry::semconv::SKILL, request.skill.clone());
    span
}

/// Nanoseconds of the wall clock: with the process id, unique enough across restarts.
fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
