//! Peer messaging between agents: an agent asks another (by skill, optionally naming the
//! agent) to run one of its read-only skills and gets the answer back, A2A-style, over
//! the two agents' sessions. The control unit is the only route: agents never dial each
//! other, so a peer is reachable only while it holds a session here.
//!
//! The router is its own owner at the gRPC edge, beside the actor (which schedules tasks
//! and never sees a peer message): the session tasks hand it what agents send, and it
//! writes to the target's session (a bounded channel merged into its response stream)
//! with `try_send`, so a slow or full peer gets a refusal, never a stalled sender. Everything it holds is bounded: the message size, each agent's rate (a token
//! bucket), and the requests awaiting an answer (each with a deadline).
//!
//! Only read-only skills may be asked for: an effect (a booking, a capture) goes through
//! a workflow, where it is durable and idempotent by key; a peer request is neither.
//!
//! Each request is a span `peer SKILL` in the control unit, a child of the sender's span
//! and the parent of the peer's handling, so one trace shows both agents.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use paygrid_telemetry::metrics::Registry;
use paygrid_telemetry::semconv;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metric_names;
use crate::model::{AgentCard, AgentId, SkillEffect};

/// Where the router writes an agent's peer messages (merged into its session stream).
pub type PeerSender = tokio::sync::mpsc::Sender<pb::PeerMessage>;

/// Bounds of peer messaging.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Largest `data_json` (and error) of one message.
    pub message_bytes_max: usize,
    /// Messages per second each agent may send (answers included), sustained.
    pub rate_per_s: f64,
    /// Messages an agent may send at once above the rate.
    pub burst: f64,
    /// Requests awaiting an answer, over all agents.
    pub pending_max: usize,
    /// Peer messages queued for one agent's session.
    pub session_buffer: usize,
    /// The longest an answer is awaited, whatever the request's deadline says.
    pub timeout_max: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            message_bytes_max: 1 << 20,
            rate_per_s: 200.0,
            burst: 400.0,
            pending_max: 10_000,
            session_buffer: 64,
            timeout_max: Duration::from_secs(60),
        }
    }
}

/// The sender a control unit names on its own answers (a refusal).
pub const CONTROL: &str = "control-unit";

/// A token bucket: `rate` per second, up to `burst` at once.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Endpoint {
    session: u64,
    sender: PeerSender,
    /// Skills and whether a peer may ask for them (read-only).
    skills: Vec<(String, SkillEffect)>,
    bucket: Bucket,
}

impl Endpoint {
    fn offers(&self, skill: &str) -> Option<SkillEffect> {
        self.skills
            .iter()
            .find(|(name, _)| name == skill)
            .map(|(_, effect)| *effect)
    }

    /// Hands one message to the agent's session, without waiting.
    fn deliver(&self, message: pb::PeerMessage) -> Result<(), &'static str> {
        self.sender.try_send(message).map_err(|error| match error {
            tokio::sync::mpsc::error::TrySendError::Full(_) => "its session is full",
            tokio::sync::mpsc::error::TrySendError::Closed(_) => "its session closed",
        })
    }
}

/// A request on its way: who asked, who answers, until when.
struct Pending {
    from: AgentId,
    /// The id the sender gave it (the answer carries it back).
    message_id: String,
    to: AgentId,
    skill: String,
    deadline: Instant,
    started: Instant,
    span: tracing::Span,
}

#[derive(Default)]
struct Inner {
    /// Connected agents, ordered so that the choice among peers is deterministic.
    endpoints: BTreeMap<AgentId, Endpoint>,
    /// Router id → the request.
    pending: HashMap<String, Pending>,
    next_id: u64,
    /// Round robin over the peers offering a skill.
    turn: usize,
    /// When requests past their deadline are next failed.
    next_purge: Option<Instant>,
}

/// Routes peer messages between connected agents.
pub struct PeerRouter {
    inner: Mutex<Inner>,
    config: PeerConfig,
    metrics: Arc<Registry>,
}

impl PeerRouter {
    /// Peer messages queued for one agent's session, at most.
    pub fn session_buffer(&self) -> usize {
        self.config.session_buffer
    }

    pub fn new(config: PeerConfig, metrics: Arc<Registry>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            config,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An agent opened its session (`session` numbers it): it may send and be asked.
    pub fn connect(&self, agent: AgentId, session: u64, sender: PeerSender, card: &AgentCard) {
        let endpoint = Endpoint {
            session,
            sender,
            skills: card
                .skills
                .iter()
                .map(|s| (s.name.clone(), s.effect))
                .collect(),
            bucket: Bucket {
                tokens: self.config.burst,
                at: Instant::now(),
            },
        };
        self.lock().endpoints.insert(agent, endpoint);
    }

    /// The agent's session `session` ended: requests it was to answer fail now.
    pub fn disconnect(&self, agent: &AgentId, session: u64) {
        let mut inner = self.lock();
        if inner
            .endpoints
            .get(agent)
            .is_none_or(|e| e.session != session)
        {
            return;
        }
        inner.endpoints.remove(agent);
        let orphaned: Vec<String> = inner
            .pending
            .iter()
            .filter(|(_, p)| &p.to == agent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphaned {
            if let Some(pending) = inner.pending.remove(&id) {
                let reason = format!("peer {agent} disconnected before answering");
                self.finish(&inner, pending, Err(reason));
            }
        }
    }

    /// Peer messages an agent sent on its session.
    pub fn route(&self, from: &AgentId, messages: Vec<pb::PeerMessage>) {
        let mut inner = self.lock();
        let now = Instant::now();
        for message in messages {
            let (rate, burst) = (self.config.rate_per_s, self.config.burst);
            let Some(endpoint) = inner.endpoints.get_mut(from) else {
                return; // its session is gone: nobody to answer
            };
            let allowed = endpoint.bucket.take(now, rate, burst);
            let answer = !message.in_reply_to.is_empty();
            if !allowed {
                self.count(answer, "refused", "rate_limited");
                if !answer {
                    let reason = format!(
                        "rate limit: an agent may send {rate} peer messages per second (burst {burst})"
                    );
                    refuse(&inner, from, &message.message_id, &message.skill, &reason);
                }
                continue;
            }
            if answer {
                self.answer(&mut inner, from, message);
                continue;
            }
            let (id, skill) = (message.message_id.clone(), message.skill.clone());
            if let Err(reason) = self.request(&mut inner, from, message, now) {
                self.count(false, "refused", "undeliverable");
                refuse(&inner, from, &id, &skill, &reason);
            }
        }
        if inner.next_purge.is_none_or(|at| at <= now) {
            inner.next_purge = Some(now + Duration::from_secs(1));
            purge_expired(&mut inner, now, self);
        }
    }

    /// A request: checked, sent to a peer, awaited.
    fn request(
        &self,
        inner: &mut Inner,
        from: &AgentId,
        mut message: pb::PeerMessage,
        now: Instant,
    ) -> Result<(), String> {
        if message.message_id.is_empty() || message.message_id.len() > 128 {
            return Err("message_id is required (at most 128 characters)".into());
        }
        if message.skill.is_empty() {
            return Err("skill is required: the peer skill to run".into());
        }
        let size = message.data_json.len();
        if size > self.config.message_bytes_max {
            return Err(format!(
                "data_json is {size} bytes; the limit is {}",
                self.config.message_bytes_max
            ));
        }
        let to = self.choose(inner, from, &message)?;
        if inner.pending.len() >= self.config.pending_max {
            purge_expired(inner, now, self);
        }
        if inner.pending.len() >= self.config.pending_max {
            return Err(format!(
                "{} peer requests await answers; retry later",
                self.config.pending_max
            ));
        }
        let deadline = deadline(&message, now, self.config.timeout_max);
        inner.next_id += 1;
        let routed = format!("peer-{}", inner.next_id);
        let span = request_span(from, &to, &message);
        let (traceparent, tracestate) = paygrid_telemetry::context::inject(&span);
        let original = std::mem::replace(&mut message.message_id, routed.clone());
        message.from_agent = from.to_string();
        message.to_agent = to.to_string();
        if !traceparent.is_empty() {
            message.traceparent = traceparent;
            message.tracestate = tracestate;
        }
        let skill = message.skill.clone();
        let endpoint = inner.endpoints.get(&to).ok_or("peer left")?;
        endpoint
            .deliver(message)
            .map_err(|why| format!("peer {to} cannot take it: {why}"))?;
        self.count(false, "delivered", "");
        inner.pending.insert(
            routed,
            Pending {
                from: from.clone(),
                message_id: original,
                to,
                skill,
                deadline,
                started: now,
                span,
            },
        );
        Ok(())
    }

    /// The peer that answers: the named agent, or the next connected agent offering the
    /// skill (never the sender); the skill must be read-only.
    fn choose(
        &self,
        inner: &mut Inner,
        from: &AgentId,
        message: &pb::PeerMessage,
    ) -> Result<AgentId, String> {
        let skill = message.skill.as_str();
        let read_only = |effect: SkillEffect| {
            if effect == SkillEffect::ReadOnly {
                Ok(())
            } else {
                Err(format!(
                    "skill {skill} changes state: a peer may only ask for read-only skills (run it in a workflow)"
                ))
            }
        };
        if !message.to_agent.is_empty() {
            let to = AgentId(message.to_agent.as_str().into());
            let endpoint = inner
                .endpoints
                .get(&to)
                .ok_or_else(|| format!("agent {to} is not connected"))?;
            let effect = endpoint
                .offers(skill)
                .ok_or_else(|| format!("agent {to} does not offer skill {skill}"))?;
            read_only(effect)?;
            return Ok(to);
        }
        let offering: Vec<(&AgentId, SkillEffect)> = inner
            .endpoints
            .iter()
            .filter(|(id, _)| *id != from)
            .filter_map(|(id, e)| e.offers(skill).map(|effect| (id, effect)))
            .collect();
        let Some(&(_, effect)) = offering.first() else {
            return Err(format!("no connected peer offers skill {skill}"));
        };
        read_only(effect)?;
        let chosen = offering[inner.turn % offering.len()].0.clone();
        inner.turn = inner.turn.wrapping_add(1);
        Ok(chosen)
    }

    /// An answer: back to the agent that asked, if the request still waits and the answer
    /// comes from the peer it went to.
    fn answer(&self, inner: &mut Inner, from: &AgentId, mut message: pb::PeerMessage) {
        let matches = inner
            .pending
            .get(&message.in_reply_to)
            .is_some_and(|p| &p.to == from);
        if !matches {
            // Late (past its deadline), or not this agent's to give.
            self.count(true, "refused", "unexpected");
            return;
        }
        let Some(pending) = inner.pending.remove(&message.in_reply_to) else {
            return;
        };
        let size = message.data_json.len() + message.error.len();
        let result = if size > self.config.message_bytes_max {
            Err(format!(
                "the answer is {size} bytes; the limit is {}",
                self.config.message_bytes_max
            ))
        } else if message.error.is_empty() {
            Ok(std::mem::take(&mut message.data_json))
        } else {
            Err(std::mem::take(&mut message.error))
        };
        self.finish(inner, pending, result);
    }

    /// Ends a request: the answer (or why there is none) to the agent that asked.
    fn finish(&self, inner: &Inner, pending: Pending, result: Result<bytes::Bytes, String>) {
        let mut message = pb::PeerMessage {
            message_id: format!("{}-answer", pending.message_id),
            in_reply_to: pending.message_id.clone(),
            from_agent: pending.to.to_string(),
            skill: pending.skill.clone(),
            ..Default::default()
        };
        let outcome = match result {
            Ok(data) => {
                message.data_json = data;
                pending.span.set_status(opentelemetry::trace::Status::Ok);
                "ok"
            }
            Err(error) => {
                paygrid_telemetry::context::record_error(
                    &pending.span,
                    "peer_error",
                    &error,
                    false,
                );
                message.error = error;
                "error"
            }
        };
        self.metrics.observe(
            &metric_names::PEER_ROUND_TRIP,
            &[("skill", pending.skill.as_str()), ("outcome", outcome)],
            pending.started.elapsed().as_secs_f64(),
        );
        let delivered = inner
            .endpoints
            .get(&pending.from)
            .is_some_and(|e| e.deliver(message).is_ok());
        self.count(
            true,
            if delivered { "delivered" } else { "refused" },
            if delivered { "" } else { "asker_gone" },
        );
    }

    fn count(&self, answer: bool, outcome: &str, reason: &str) {
        let kind = if answer { "answer" } else { "request" };
        self.metrics.count(
            &metric_names::PEER_MESSAGES,
            &[("kind", kind), ("outcome", outcome), ("reason", reason)],
            1,
        );
    }

    /// Requests awaiting an answer (for tests and health).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Answers a request the control unit will not deliver, naming why.
fn refuse(inner: &Inner, to: &AgentId, message_id: &str, skill: &str, reason: &str) {
    if message_id.is_empty() {
        return;
    }
    let refusal = pb::PeerMessage {
        message_id: format!("{message_id}-refused"),
        in_reply_to: message_id.to_owned(),
        from_agent: CONTROL.into(),
        skill: skill.to_owned(),
        error: reason.to_owned(),
        ..Default::default()
    };
    if let Some(endpoint) = inner.endpoints.get(to) {
        let _ = endpoint.deliver(refusal);
    }
}

/// When the router stops waiting: the request's deadline, at most `max` from now.
fn deadline(message: &pb::PeerMessage, now: Instant, max: Duration) -> Instant {
    let latest = now + max;
    if message.deadline_unix_ms <= 0 {
        return latest;
    }
    let left_ms = message.deadline_unix_ms - crate::runtime::now_ms() as i64;
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    (now + left).min(latest)
}

/// Requests past their deadline fail (the asker stopped waiting).
fn purge_expired(inner: &mut Inner, now: Instant, router: &PeerRouter) {
    let expired: Vec<String> = inner
        .pending
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        if let Some(pending) = inner.pending.remove(&id) {
            router.finish(inner, pending, Err("no answer before the deadline".into()));
        }
    }
}

/// The request's span: a child of the sender's, exported when spans are.
fn request_span(from: &AgentId, to: &AgentId, message: &pb::PeerMessage) -> tracing::Span {
    if !paygrid_telemetry::otel::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "paygrid::peer",
        "peer",
        otel.name = format!("peer {}", message.skill),
        otel.kind = "internal",
    );
    paygrid_telemetry::context::set_parent(&span, &message.traceparent, &message.tracestate);
    span.set_attribute(semconv::SKILL, message.skill.clone());
    span.set_attribute(semconv::PEER_FROM, from.to_string());
    span.set_attribute(semconv::PEER_TO, to.to_string());
    if !message.context_id.is_empty() {
        span.set_attribute(semconv::WORKFLOW_ID, message.context_id.clone());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRole, SkillCard};
    use tokio::sync::mpsc;

    type Inbox = mpsc::Receiver<pb::PeerMessage>;

    fn card(skills: &[(&str, SkillEffect)]) -> AgentCard {
        AgentCard {
            name: "test".into(),
            role: AgentRole::Service,
            version: "1".into(),
            skills: skills
                .iter()
                .map(|(name, effect)| SkillCard {
                    name: (*name).into(),
                    description: String::new(),
                    input_schema: "{}".into(),
                    output_schema: "{}".into(),
                    effect: *effect,
                })
                .collect(),
            max_concurrency: 4,
            labels: Default::default(),
        }
    }

    fn join(router: &PeerRouter, name: &str, skills: &[(&str, SkillEffect)]) -> (AgentId, Inbox) {
        let (sender, inbox) = mpsc::channel(8);
        let id = AgentId(name.into());
        router.connect(id.clone(), 1, sender, &card(skills));
        (id, inbox)
    }

    fn next(inbox: &mut Inbox) -> pb::PeerMessage {
        inbox.try_recv().expect("a peer message")
    }

    fn ask(id: &str, skill: &str) -> pb::PeerMessage {
        pb::PeerMessage {
            message_id: id.into(),
            skill: skill.into(),
            data_json: br#"{"gateway":"alpha"}"#.to_vec().into(),
            context_id: "wf-1".into(),
            ..Default::default()
        }
    }

    fn router(config: PeerConfig) -> PeerRouter {
        PeerRouter::new(config, Registry::new())
    }

    const LEDGER: &[(&str, SkillEffect)] = &[
        ("ledger.expected", SkillEffect::ReadOnly),
        ("ledger.post", SkillEffect::State),
    ];

    #[test]
    fn a_request_goes_to_the_peer_and_its_answer_back_under_the_askers_id() {
        let metrics = Registry::new();
        let router = PeerRouter::new(PeerConfig::default(), metrics.clone());
        let (reconcile, mut asker) = join(&router, "reconcile", LEDGER);
        let (ledger, mut peer) = join(&router, "ledger", LEDGER);
        router.route(&reconcile, vec![ask("r-1", "ledger.expected")]);
        let request = next(&mut peer);
        assert_eq!(request.from_agent, "reconcile", "never back to the sender");
        assert_eq!(request.to_agent, "ledger");
        assert_ne!(request.message_id, "r-1", "the router's own id");
        assert_eq!(&request.data_json[..], br#"{"gateway":"alpha"}"#);
        assert_eq!(router.pending(), 1);
        // Only the peer it went to may answer it.
        let forged = pb::PeerMessage {
            in_reply_to: request.message_id.clone(),
            data_json: b"{}".to_vec().into(),
            ..Default::default()
        };
        router.route(&reconcile, vec![forged]);
        assert!(asker.try_recv().is_err());
        let answer = pb::PeerMessage {
            message_id: "a-1".into(),
            in_reply_to: request.message_id,
            data_json: br#"{"entries":[]}"#.to_vec().into(),
            ..Default::default()
        };
        router.route(&ledger, vec![answer]);
        let answered = next(&mut asker);
        assert_eq!(answered.in_reply_to, "r-1");
        assert_eq!(answered.from_agent, "ledger");
        assert_eq!(&answered.data_json[..], br#"{"entries":[]}"#);
        assert!(answered.error.is_empty());
        assert_eq!(router.pending(), 0);
        let rendered = metrics.render();
        for line in [
            "paygrid_peer_messages_total{kind=\"request\",outcome=\"delivered\",reason=\"\"} 1",
            "paygrid_peer_messages_total{kind=\"answer\",outcome=\"delivered\",reason=\"\"} 1",
            "paygrid_peer_messages_total{kind=\"answer\",outcome=\"refused\",reason=\"unexpected\"} 1",
            "paygrid_peer_round_trip_seconds_count{skill=\"ledger.expected\",outcome=\"ok\"} 1",
        ] {
            assert!(rendered.contains(line), "{line} in\n{rendered}");
        }
    }

    #[test]
    fn what_cannot_be_delivered_is_refused_to_the_sender_naming_why() {
        let config = PeerConfig {
            message_bytes_max: 64,
            ..PeerConfig::default()
        };
        let router = router(config);
        let (reconcile, mut asker) = join(&router, "reconcile", &[]);
        let (_ledger, mut peer) = join(&router, "ledger", LEDGER);
        let refusal = |router: &PeerRouter, message: pb::PeerMessage, asker: &mut Inbox| {
            router.route(&reconcile, vec![message]);
            let refused = next(asker);
            assert_eq!(refused.from_agent, CONTROL);
            refused.error
        };
        let error = refusal(&router, ask("r-1", "nobody.offers"), &mut asker);
        assert_eq!(error, "no connected peer offers skill nobody.offers");
        let error = refusal(&router, ask("r-2", "ledger.post"), &mut asker);
        assert!(error.contains("changes state"), "{error}");
        let mut large = ask("r-3", "ledger.expected");
        large.data_json = vec![b' '; 65].into();
        let error = refusal(&router, large, &mut asker);
        assert_eq!(error, "data_json is 65 bytes; the limit is 64");
        let mut pinned = ask("r-4", "ledger.expected");
        pinned.to_agent = "elsewhere".into();
        let error = refusal(&router, pinned, &mut asker);
        assert_eq!(error, "agent elsewhere is not connected");
        assert!(peer.try_recv().is_err(), "nothing reached the peer");
        assert_eq!(router.pending(), 0);
    }

    #[test]
    fn each_agent_is_held_to_its_rate() {
        let config = PeerConfig {
            rate_per_s: 0.001,
            burst: 3.0,
            ..PeerConfig::default()
        };
        let router = router(config);
        let (reconcile, mut asker) = join(&router, "reconcile", &[]);
        let (_ledger, mut peer) = join(&router, "ledger", LEDGER);
        let burst: Vec<_> = (0..5)
            .map(|n| ask(&format!("r-{n}"), "ledger.expected"))
            .collect();
        router.route(&reconcile, burst);
        let delivered = std::iter::from_fn(|| peer.try_recv().ok()).count();
        assert_eq!(delivered, 3, "the burst");
        let refused: Vec<String> = std::iter::from_fn(|| asker.try_recv().ok())
            .map(|m| m.error)
            .collect();
        assert_eq!(refused.len(), 2);
        assert!(refused[0].starts_with("rate limit"), "{refused:?}");
    }

    #[test]
    fn a_peer_that_leaves_fails_what_it_was_asked() {
        let router = router(PeerConfig::default());
        let (reconcile, mut asker) = join(&router, "reconcile", &[]);
        let (ledger, mut peer) = join(&router, "ledger", LEDGER);
        router.route(&reconcile, vec![ask("r-1", "ledger.expected")]);
        let _ = next(&mut peer);
        router.disconnect(&ledger, 2);
        assert_eq!(router.pending(), 1, "another session's end changes nothing");
        router.disconnect(&ledger, 1);
        let failed = next(&mut asker);
        assert_eq!(failed.in_reply_to, "r-1");
        assert_eq!(failed.error, "peer ledger disconnected before answering");
        assert_eq!(router.pending(), 0);
    }
}
