//! Hosting agents: one session per agent, credits, heartbeats, cancellation, reconnect
//! with backoff (backon) and drain on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::{AGENT_ID_METADATA, SESSION_TOKEN_METADATA};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::{Agent, AgentCard, SkillEffect, Task, TaskOutcome};
use crate::metric_names;
use crate::outbox::{Finished, Outbox, OutboxState};
use crate::peer::Peers;

mod spans;
use spans::{handling_span, peer_span, record_outcome};

/// How long a draining session waits for the control unit's acknowledgement (an older
/// control unit sends none) before it leaves once its tasks have ended.
const DRAIN_ACK_WAIT: Duration = Duration::from_secs(5);

/// Execution unit settings.
#[derive(Debug, Clone)]
pub struct ExecutionUnitConfig {
    /// Shown in `paygrid agents`; defaults to the host name and process id.
    pub name: String,
    /// The control unit, e.g. `http://127.0.0.1:50051`.
    pub control_endpoint: String,
    /// How long shutdown waits for in-flight tasks before abandoning them.
    pub drain_timeout: Duration,
    pub reconnect_delay_min: Duration,
    pub reconnect_delay_max: Duration,
    /// Where task metrics go (served by `paygrid exec --metrics-addr`).
    pub metrics: std::sync::Arc<paygrid_telemetry::metrics::Registry>,
    /// Health windows of this unit's agents and gateways, relayed by support agents.
    pub health: std::sync::Arc<crate::health::HealthCollector>,
    /// How the unit reaches the control unit: TLS with its client certificate (its
    /// identity, which the access policy lets offer skills), or plaintext.
    pub security: paygrid_security::ClientSecurity,
}

impl ExecutionUnitConfig {
    pub fn new(name: impl Into<String>, control_endpoint: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            control_endpoint: control_endpoint.into(),
            drain_timeout: Duration::from_secs(30),
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            metrics: paygrid_telemetry::metrics::Registry::new(),
            health: std::sync::Arc::new(crate::health::HealthCollector::default()),
            security: paygrid_security::ClientSecurity::insecure(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid control endpoint `{endpoint}`: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{call}: {status}")]
    Call {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("session metadata: {0}")]
    Metadata(String),
    #[error("the control unit closed the session")]
    Closed,
}

/// Hosts agents until shutdown.
pub struct ExecutionUnit {
    config: ExecutionUnitConfig,
    agents: Vec<Arc<dyn Agent>>,
}

impl ExecutionUnit {
    pub fn new(config: ExecutionUnitConfig) -> Self {
        Self {
            config,
            agents: Vec::new(),
        }
    }

    pub fn host(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agents.push(agent);
        self
    }

    /// Runs every agent until `shutdown` fires and in-flight work drained.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for agent in self.agents {
            let runner = AgentRunner::new(agent, self.config.clone());
            loops.spawn(runner.run(shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// Workflow id, wire task index and attempt: a new attempt of a task never overwrites
/// an older one that still runs.
pub(crate) type TaskKey = (String, u32, u32);

/// A task running on this agent.
struct Running {
    cancel: CancellationToken,
    started: std::time::Instant,
    skill: String,
}

struct AgentRunner {
    agent: Arc<dyn Agent>,
    card: AgentCard,
    config: ExecutionUnitConfig,
    tasks: JoinSet<()>,
    running: HashMap<TaskKey, Running>,
    results: mpsc::Receiver<Finished>,
    results_sender: mpsc::Sender<Finished>,
    /// The open session's frames, for tasks to send their results on (None between
    /// sessions: results then wait in `undelivered`).
    outbox: Option<Outbox>,
    /// Sessions opened so far (the current one's number).
    sessions: u64,
    /// Results taken off the channel but not delivered (the session broke).
    undelivered: Vec<pb::TaskResult>,
    /// Slots freed but not yet granted back as credits.
    credits_owed: u32,
    /// The id the control unit gave this agent at its last registration.
    agent_id: Arc<str>,
    /// This agent's door to its peers, and the queue of its outgoing peer messages.
    peers: Peers,
    peer_outbound: mpsc::Receiver<pb::PeerMessage>,
    /// Peer requests this agent serves at once (beside its task slots).
    peer_slots: Arc<tokio::sync::Semaphore>,
}

impl AgentRunner {
    fn new(agent: Arc<dyn Agent>, config: ExecutionUnitConfig) -> Self {
        let card = agent.card();
        // One result per slot at most is ever waiting: the channel never blocks a task long.
        let (results_sender, results) = mpsc::channel(card.max_concurrency as usize + 16);
        let (peers, peer_outbound) = Peers::new(&card.name);
        let peer_slots = Arc::new(tokio::sync::Semaphore::new(
            card.max_concurrency.max(1) as usize
        ));
        Self {
            peers,
            peer_outbound,
            peer_slots,
            agent,
            card,
            config,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            results,
            results_sender,
            outbox: None,
            sessions: 0,
            undelivered: Vec::new(),
            credits_owed: 0,
            agent_id: "".into(),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut delays = self.backoff();
        loop {
            let ended = self.session(&shutdown).await;
            // Tasks that end from now on pass their results to the loop, for the next session.
            self.close_outbox();
            match ended {
                Ok(()) => return,
                Err(error) => {
                    let connected = [("agent", self.card.name.as_str())];
                    self.config
                        .metrics
                        .gauge(&metric_names::SESSION_CONNECTED, &connected, 0);
                    if shutdown.is_cancelled() && self.running.is_empty() {
                        return;
                    }
                    let delay = delays.next().unwrap_or(self.config.reconnect_delay_max);
                    tracing::warn!(agent = %self.card.name, %error, retry_in_ms = delay.as_millis() as u64, "session lost");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {
                            // Disconnected and asked to stop: finish what runs, then leave.
                            let drain = tokio::time::timeout(self.config.drain_timeout, async {
                                while self.tasks.join_next().await.is_some() {}
                            });
                            let _ = drain.await;
                            return;
                        }
                    }
                }
            }
            if self.undelivered.is_empty() {
                delays = self.backoff();
            }
        }
    }

    /// Connects to the control unit and registers the agent's card.
    async fn register(
        &self,
    ) -> Result<
        (
            AgentHubClient<tonic::transport::Channel>,
            pb::RegisterResponse,
        ),
        SessionError,
    > {
        let endpoint = self.config.control_endpoint.clone();
        let security = &self.config.security;
        let channel = security
            .endpoint(&endpoint)
            .map_err(|source| SessionError::Endpoint {
                endpoint: endpoint.clone(),
                source,
            })?;
        let channel = security
            .channel(channel)
            .await
            .map_err(|source| SessionError::Connect { endpoint, source })?;
        let mut client = AgentHubClient::new(channel);
        let registration = client
            .register(pb::RegisterRequest {
                card: Some(self.card.to_pb()),
                execution_unit: self.config.name.clone(),
            })
            .await
            .map_err(|status| SessionError::Call {
                call: "register",
                status,
            })?
            .into_inner();
        Ok((client, registration))
    }

    /// Books ended tasks, and sends the results they could not send themselves, with
    /// the credits their slots free.
    async fn deliver(
        &mut self,
        finished: &mut Vec<Finished>,
        draining: bool,
        frames: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let mut batch = Vec::new();
        for done in finished.drain(..) {
            // Sent with its slot's credit on this session: nothing more to send.
            let sent_here = done.sent_on == Some(self.sessions);
            let result = self.book(done);
            if !sent_here {
                // Its slot was still running when this session opened: the credit is
                // granted now, with the result (again, if an ended session had it).
                self.credits_owed += 1;
                batch.push(result);
            }
        }
        if batch.is_empty() && (draining || self.credits_owed == 0) {
            return Ok(());
        }
        let frame = pb::AgentMessage {
            credits: if draining {
                0
            } else {
                std::mem::take(&mut self.credits_owed)
            },
            results: batch,
            draining,
            ..Default::default()
        };
        if let Err(failed) = frames.send(frame).await {
            self.undelivered.extend(failed.0.results);
            return Err(SessionError::Closed);
        }
        Ok(())
    }

    /// A session's opening frame: free slots, every result not yet delivered, what still
    /// runs. Tasks that ended before it are booked first, so that it counts their slots
    /// free and does not list them as running (the control unit would then wait for
    /// their leases), and their results go with it, also those a task sent on the
    /// session that ended: whether they reached the control unit is unknown.
    fn opening(&mut self, draining: bool) -> pb::AgentMessage {
        while let Ok(done) = self.results.try_recv() {
            let result = self.book(done);
            self.undelivered.push(result);
        }
        let free = self
            .card
            .max_concurrency
            .saturating_sub(self.running.len() as u32);
        self.credits_owed = 0;
        pb::AgentMessage {
            credits: if draining { 0 } else { free },
            results: std::mem::take(&mut self.undelivered),
            running: self.running_refs(),
            draining,
            ..Default::default()
        }
    }

    /// The session ended (or is ending): tasks that end from now on give their results
    /// to the loop.
    fn close_outbox(&mut self) {
        if let Some(outbox) = self.outbox.take() {
            outbox.close();
        }
    }

    /// Takes an ended task off the books; its result, to send.
    fn book(&mut self, done: Finished) -> pb::TaskResult {
        if let Some(running) = self.running.remove(&done.key) {
            self.observe(&running.skill, done.outcome, running.started.elapsed());
        }
        done.result
    }

    fn backoff(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.config.reconnect_delay_min)
            .with_max_delay(self.config.reconnect_delay_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// One session: register, stream, until it breaks (error) or drains (Ok).
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let (mut client, registration) = self.register().await?;
        let (frames, outbound) = mpsc::channel::<pb::AgentMessage>(64);
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        for (key, value) in [
            (AGENT_ID_METADATA, &registration.agent_id),
            (SESSION_TOKEN_METADATA, &registration.session_token),
        ] {
            let value = value
                .parse()
                .map_err(|_| SessionError::Metadata(format!("{key} is not ASCII")))?;
            request.metadata_mut().insert(key, value);
        }
        let opening = self.opening(shutdown.is_cancelled());
        let _ = frames.send(opening).await;
        let state = Arc::new(OutboxState::default());
        state
            .draining
            .store(shutdown.is_cancelled(), Ordering::Release);
        self.sessions += 1;
        let outbox = Outbox {
            session: self.sessions,
            frames: frames.clone(),
            state: state.clone(),
        };
        // Until the session ends (`run` takes it back, however it ends).
        self.outbox = Some(outbox);
        let mut inbound = client
            .session(request)
            .await
            .map_err(|status| SessionError::Call {
                call: "session",
                status,
            })?
            .into_inner();
        tracing::info!(agent = %self.card.name, agent_id = %registration.agent_id, "session open");
        self.agent_id = registration.agent_id.as_str().into();
        let connected = [("agent", self.card.name.as_str())];
        self.config
            .metrics
            .gauge(&metric_names::SESSION_CONNECTED, &connected, 1);
        let heartbeat_ms = u64::from(registration.heartbeat_interval_ms.max(100));
        let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms));
        let mut draining = shutdown.is_cancelled();
        if draining {
            // Asked to stop while the session opened: the opening frame may not say so.
            let _ = frames
                .send(pb::AgentMessage {
                    draining: true,
                    ..Default::default()
                })
                .await;
        }
        // Until the control unit acknowledges the drain, an assignment may still be on
        // its way: it was sent before the control unit saw the flag, and runs here. A
        // control unit that does not acknowledge (an older one) is waited for a while.
        let mut acknowledged = false;
        let mut unacknowledged_until =
            draining.then(|| tokio::time::Instant::now() + DRAIN_ACK_WAIT);
        let mut finished = Vec::with_capacity(64);
        loop {
            if draining && acknowledged && self.running.is_empty() {
                // End our side after every queued frame, then wait (bounded) for the
                // control unit to end its side: it has then read every result.
                self.close_outbox();
                drop(frames);
                let closed = async { while let Ok(Some(_)) = inbound.message().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
                return Ok(());
            }
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        acknowledged |= self.on_control(message, draining, acknowledged, &frames).await;
                    }
                    Ok(None) => return Err(SessionError::Closed),
                    Err(status) => return Err(SessionError::Call { call: "session stream", status }),
                },
                received = self.results.recv_many(&mut finished, 256) => {
                    if received == 0 {
                        return Err(SessionError::Closed);
                    }
                    self.deliver(&mut finished, draining, &frames).await?;
                }
                _ = heartbeat.tick() => {
                    // Support agents relay the unit's health with every heartbeat.
                    let health = if self.card.role == crate::agent::Role::Support { self.config.health.reports() } else { Vec::new() };
                    if !self.running.is_empty() || !health.is_empty() {
                        let frame = pb::AgentMessage { running: self.running_refs(), draining, health, ..Default::default() };
                        if frames.send(frame).await.is_err() {
                            return Err(SessionError::Closed);
                        }
                    }
                }
                Some(first) = self.peer_outbound.recv() => {
                    let mut peer = vec![first];
                    while peer.len() < crate::peer::OUTBOUND_MAX {
                        match self.peer_outbound.try_recv() {
                            Ok(next) => peer.push(next),
                            Err(_) => break,
                        }
                    }
                    if frames.send(pb::AgentMessage { peer, ..Default::default() }).await.is_err() {
                        return Err(SessionError::Closed);
                    }
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                () = wait_until(unacknowledged_until), if !acknowledged => {
                    tracing::warn!(agent = %self.card.name, "the control unit did not acknowledge the drain; leaving without it");
                    acknowledged = true;
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    state.draining.store(true, Ordering::Release);
                    unacknowledged_until = Some(tokio::time::Instant::now() + DRAIN_ACK_WAIT);
                    tracing::info!(agent = %self.card.name, running = self.running.len(), "draining");
                    let _ = frames.send(pb::AgentMessage { draining: true, ..Default::default() }).await;
                }
            }
        }
    }

    /// Task duration and outcome, per agent and skill: for a gateway agent (one per
    /// gateway), the gateway's latency and error rate.
    fn observe(&self, skill: &str, outcome: pb::Outcome, elapsed: Duration) {
        let outcome = match outcome {
            pb::Outcome::Succeeded => "succeeded",
            pb::Outcome::Retryable => "retryable",
            pb::Outcome::Permanent => "permanent",
            pb::Outcome::Cancelled => "cancelled",
            pb::Outcome::Unknown => "unknown",
            pb::Outcome::Refused => "refused",
            pb::Outcome::Unspecified => "unspecified",
        };
        let labels = [
            ("agent", self.card.name.as_str()),
            ("skill", skill),
            ("outcome", outcome),
        ];
        let metrics = &self.config.metrics;
        metrics.count(&metric_names::TASKS, &labels, 1);
        metrics.observe(&metric_names::TASK_DURATION, &labels, elapsed.as_secs_f64());
        self.running_changed();
        let gateway = self.card.labels.get("gateway").map(String::as_str);
        let health = &self.config.health;
        health.observe(
            &self.card.name,
            gateway,
            skill,
            matches!(outcome, "retryable" | "unknown"),
            elapsed,
        );
        health.load(
            &self.card.name,
            gateway,
            self.running.len() as u32,
            self.card.max_concurrency,
        );
    }

    /// The running-tasks gauge, after a task started or ended.
    fn running_changed(&self) {
        self.config.metrics.gauge(
            &metric_names::RUNNING_TASKS,
            &[("agent", self.card.name.as_str())],
            self.running.len() as i64,
        );
    }

    fn running_refs(&self) -> Vec<pb::TaskRef> {
        self.running
            .keys()
            .map(|(workflow_id, task_index, attempt)| pb::TaskRef {
                workflow_id: workflow_id.clone(),
                task_index: *task_index,
                attempt: *attempt,
            })
            .collect()
    }

    /// Handles one message from the control unit; true when it acknowledges the drain.
    /// Once the drain is acknowledged, an assignment is refused (none should come).
    async fn on_control(
        &mut self,
        message: pb::ControlMessage,
        draining: bool,
        acknowledged: bool,
        frames: &mpsc::Sender<pb::AgentMessage>,
    ) -> bool {
        for peer in message.peer {
            if peer.in_reply_to.is_empty() {
                self.serve_peer(peer);
            } else {
                self.peers.answered(peer);
            }
        }
        for cancellation in message.cancellations {
            let key = (
                cancellation.workflow_id,
                cancellation.task_index,
                cancellation.attempt,
            );
            if let Some(running) = self.running.get(&key) {
                running.cancel.cancel();
            }
        }
        let drained = draining && acknowledged;
        let mut refused = Vec::new();
        for assignment in message.assignments {
            let Some(task_ref) = assignment.task.clone() else {
                continue;
            };
            let over_capacity = self.running.len() as u32 >= self.card.max_concurrency;
            if drained || over_capacity {
                // Not started: not an attempt, and nothing about the gateway's health.
                refused.push(pb::TaskResult {
                    task: Some(task_ref),
                    outcome: pb::Outcome::Refused.into(),
                    error_code: if drained { "draining" } else { "no_capacity" }.into(),
                    error_message: "the agent cannot take this task now".into(),
                    ..Default::default()
                });
                continue;
            }
            self.start(assignment, task_ref);
        }
        if !refused.is_empty() {
            let _ = frames
                .send(pb::AgentMessage {
                    results: refused,
                    draining,
                    ..Default::default()
                })
                .await;
        }
        message.drain_acknowledged
    }

    /// A peer's request, routed by the control unit: runs the read-only skill it asks
    /// for (beside the task slots, at most `max_concurrency` at once) and answers.
    fn serve_peer(&mut self, request: pb::PeerMessage) {
        let read_only = self
            .card
            .skills
            .iter()
            .any(|s| s.name == request.skill && s.effect == SkillEffect::ReadOnly);
        let input = serde_json::from_slice::<Value>(&request.data_json);
        let permit = self.peer_slots.clone().try_acquire_owned();
        let refused = |why: String| {
            let peers = self.peers.clone();
            let answer = peer_answer(&request, Err(why));
            async move { peers.reply(answer).await }
        };
        let (input, permit) = match (read_only, input, permit) {
            (true, Ok(input), Ok(permit)) => (input, permit),
            (false, _, _) => {
                let why = format!(
                    "agent {} has no read-only skill {}",
                    self.card.name, request.skill
                );
                self.tasks.spawn(refused(why));
                return;
            }
            (true, Err(error), _) => {
                self.tasks
                    .spawn(refused(format!("the request's input is not JSON: {error}")));
                return;
            }
            (true, Ok(_), Err(_)) => {
                let why = format!("agent {} is busy serving peers", self.card.name);
                self.tasks.spawn(refused(why));
                return;
            }
        };
        let deadline = request.deadline_unix_ms;
        let task = Task {
            workflow_id: request.context_id.clone(),
            workflow_name: String::new(),
            task_id: format!("peer:{}", request.from_agent),
            skill: request.skill.clone(),
            attempt: 1,
            input,
            idempotency_key: format!("peer:{}", request.message_id),
            deadline_unix_ms: deadline,
            settle: false,
            traceparent: request.traceparent.clone(),
            tracestate: request.tracestate.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
            peers: self.peers.clone(),
        };
        let span = peer_span(&request, &self.agent_id);
        let handled = span.clone();
        let (agent, peers) = (self.agent.clone(), self.peers.clone());
        let time_left = task.time_left();
        let work = async move {
            let _permit = permit;
            let outcome = tokio::time::timeout(time_left, agent.handle(task)).await;
            let data = match outcome {
                Ok(TaskOutcome::Succeeded(value)) => Ok(value),
                Ok(
                    TaskOutcome::Retryable { code, message }
                    | TaskOutcome::Permanent { code, message }
                    | TaskOutcome::Unknown { code, message },
                ) => Err(format!("{code}: {message}")),
                Err(_) => Err("the peer ran out of time".to_owned()),
            };
            if let Err(error) = &data {
                paygrid_telemetry::context::record_error(&handled, "peer_error", error, false);
            }
            peers.reply(peer_answer(&request, data)).await;
        };
        self.tasks.spawn(work.instrument(span));
    }

    fn start(&mut self, assignment: pb::Assignment, task_ref: pb::TaskRef) {
        let cancel = CancellationToken::new();
        let key = (
            task_ref.workflow_id.clone(),
            task_ref.task_index,
            task_ref.attempt,
        );
        self.running.insert(
            key.clone(),
            Running {
                cancel: cancel.clone(),
                started: std::time::Instant::now(),
                skill: assignment.skill.clone(),
            },
        );
        self.running_changed();
        let agent = self.agent.clone();
        let results = self.results_sender.clone();
        let outbox = self.outbox.clone();
        let peers = self.peers.clone();
        let span = handling_span(&assignment, &task_ref, &self.agent_id);
        let handling = span.clone();
        let work = async move {
            let input = serde_json::from_slice(&assignment.input_json);
            let result = match input {
                Err(error) => outcome_to_pb(
                    task_ref,
                    Some(TaskOutcome::invalid_input(format!(
                        "input is not JSON: {error}"
                    ))),
                ),
                Ok(input) => {
                    let task = Task {
                        workflow_id: task_ref.workflow_id.clone(),
                        workflow_name: assignment.workflow_name,
                        task_id: assignment.task_id,
                        skill: assignment.skill,
                        attempt: task_ref.attempt,
                        input,
                        idempotency_key: assignment.idempotency_key,
                        deadline_unix_ms: assignment.deadline_unix_ms,
                        settle: assignment.settle,
                        traceparent: assignment.traceparent,
                        tracestate: assignment.tracestate,
                        cancel: cancel.clone(),
                        peers,
                    };
                    let work = async {
                        if task.settle {
                            agent.settle(task).await
                        } else {
                            agent.handle(task).await
                        }
                    };
                    let outcome = tokio::select! {
                        outcome = work => Some(outcome),
                        () = cancel.cancelled() => None,
                    };
                    outcome_to_pb(task_ref, outcome)
                }
            };
            record_outcome(&handling, &result);
            let sent_on = outbox.and_then(|outbox| outbox.try_deliver(&result));
            let finished = Finished {
                key,
                outcome: result.outcome(),
                result,
                sent_on,
            };
            let _ = results.send(finished).await;
        };
        self.tasks.spawn(work.instrument(span));
    }
}

/// The answer to a peer's request: the skill's output, or why there is none.
fn peer_answer(request: &pb::PeerMessage, data: Result<Value, String>) -> pb::PeerMessage {
    let mut answer = pb::PeerMessage {
        message_id: format!("{}-answer", request.message_id),
        in_reply_to: request.message_id.clone(),
        skill: request.skill.clone(),
        ..Default::default()
    };
    match data {
        Ok(value) => answer.data_json = serde_json::to_vec(&value).unwrap_or_default().into(),
        Err(error) => answer.error = error,
    }
    answer
}

fn outcome_to_pb(task: pb::TaskRef, outcome: Option<TaskOutcome>) -> pb::TaskResult {
    let mut result = pb::TaskResult {
        task: Some(task),
        ..Default::default()
    };
    match outcome {
        Some(TaskOutcome::Succeeded(output)) => {
            result.outcome = pb::Outcome::Succeeded.into();
            result.output_json = serde_json::to_vec(&output).unwrap_or_default().into();
        }
        Some(TaskOutcome::Retryable { code, message }) => {
            result.outcome = pb::Outcome::Retryable.into();
            result.error_code = code;
            result.error_message = message;
        }
        Some(TaskOutcome::Permanent { code, message }) => {
            result.outcome = pb::Outcome::Permanent.into();
            result.error_code = code;
            result.error_message = message;
        }
        Some(TaskOutcome::Unknown { code, message }) => {
            result.outcome = pb::Outcome::Unknown.into();
            result.error_code = code;
            result.error_message = message;
        }
        None => result.outcome = pb::Outcome::Cancelled.into(),
    }
    result
}

/// Resolves at `deadline`, never without one.
async fn wait_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
