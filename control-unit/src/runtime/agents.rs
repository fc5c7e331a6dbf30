//! Registered agents and their sessions: registration, session open and close, the
//! frames sent to each, and what `ListAgents` shows.

use std::collections::HashMap;
use std::sync::Arc;

use super::health::HealthView;
use super::{RuntimeConfig, SessionSender};
use crate::error::ControlError;
use crate::model::{AgentCard, AgentId};
use crate::scheduler::{AgentEvent, Scheduler};
use crate::views::{AgentView, Frame, Registration};

/// How long a registration may wait for its session.
const REGISTRATION_TTL_MS: u64 = 60_000;

struct AgentRecord {
    card: AgentCard,
    execution_unit: String,
    token: String,
    registered_at: u64,
    session: Option<(u64, SessionSender)>,
}

#[derive(Default)]
pub(super) struct Agents {
    records: HashMap<AgentId, AgentRecord>,
    agent_counter: u64,
    session_counter: u64,
}

impl Agents {
    pub(super) fn register(
        &mut self,
        now: u64,
        card: AgentCard,
        execution_unit: String,
        config: &RuntimeConfig,
    ) -> Registration {
        // A registration whose session never opened (the agent retried, or died first)
        // expires, so repeated reconnects cannot grow the agent map without bound.
        self.records.retain(|_, record| {
            record.session.is_some()
                || now.saturating_sub(record.registered_at) < REGISTRATION_TTL_MS
        });
        self.agent_counter += 1;
        let agent = AgentId(format!("{}-{}", card.name, self.agent_counter).into());
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        tracing::info!(agent = %agent, execution_unit, skills = card.skills.len(), "agent registered");
        self.records.insert(
            agent.clone(),
            AgentRecord {
                card,
                execution_unit,
                token: token.clone(),
                registered_at: now,
                session: None,
            },
        );
        Registration {
            agent,
            session_token: token,
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: config.scheduler.lease_ttl.as_millis() as u32,
        }
    }

    /// Opens an agent's session: its number, and the event that tells the core.
    pub(super) fn open_session(
        &mut self,
        agent: AgentId,
        token: &str,
        sender: SessionSender,
    ) -> Result<(u64, AgentEvent, AgentCard), ControlError> {
        let record = self.records.get_mut(&agent).ok_or_else(|| {
            ControlError::NotFound(format!(
                "agent {agent} is not registered: call Register first"
            ))
        })?;
        if record.token != token {
            return Err(ControlError::Unauthenticated(format!(
                "wrong session token for agent {agent}"
            )));
        }
        if record.session.is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "agent {agent} already has a session"
            )));
        }
        self.session_counter += 1;
        let session = self.session_counter;
        record.session = Some((session, sender));
        let card = &record.card;
        let joined = AgentEvent::Joined {
            agent: agent.clone(),
            skills: card
                .skills
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            labels: card
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_concurrency: card.max_concurrency.max(1),
        };
        tracing::info!(agent = %agent, "agent session opened");
        Ok((session, joined, card.clone()))
    }

    /// Closes a session if it is the agent's current one; true when the agent left.
    pub(super) fn close_session(&mut self, agent: &AgentId, session: u64) -> bool {
        let current = self
            .records
            .get(agent)
            .and_then(|a| a.session.as_ref())
            .map(|(s, _)| *s);
        if current != Some(session) {
            return false;
        }
        self.records.remove(agent);
        tracing::info!(agent = %agent, "agent session closed");
        true
    }

    pub(super) fn execution_unit(&self, agent: &AgentId) -> Option<&str> {
        self.records.get(agent).map(|a| a.execution_unit.as_str())
    }

    pub(super) fn connected(&self) -> usize {
        self.records
            .values()
            .filter(|a| a.session.is_some())
            .count()
    }

    pub(super) fn list(
        &self,
        core: &Scheduler,
        health: &HealthView,
        skill: Option<&str>,
    ) -> Vec<AgentView> {
        let mut agents: Vec<AgentView> = self
            .records
            .iter()
            .filter(|(_, r)| skill.is_none_or(|s| r.card.skills.iter().any(|k| k.name == s)))
            .map(|(id, record)| {
                let slot = core.agent(id);
                AgentView {
                    id: id.clone(),
                    card: record.card.clone(),
                    execution_unit: record.execution_unit.clone(),
                    connected: record.session.is_some(),
                    inflight: slot.map_or(0, |s| s.assigned.len() as u32),
                    credits: slot.map_or(0, |s| s.credits),
                    draining: slot.is_some_and(|s| s.draining),
                    registered_at: record.registered_at,
                    tasks_completed: slot.map_or(0, |s| s.completed),
                    health: health.agent(&record.card.name, &record.execution_unit),
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        agents
    }

    /// Sends one frame per agent without waiting; returns the agents whose session is
    /// full or gone (they are dropped: their tasks go elsewhere).
    pub(super) fn send_frames(&mut self, frames: HashMap<AgentId, Frame>) -> Vec<AgentId> {
        let mut broken = Vec::new();
        for (agent, frame) in frames {
            let sender = self
                .records
                .get(&agent)
                .and_then(|r| r.session.as_ref())
                .map(|(_, s)| s);
            let delivered = sender.is_some_and(|s| s.try_send(Ok(frame)).is_ok());
            if !delivered {
                broken.push(agent);
            }
        }
        for agent in &broken {
            tracing::warn!(agent = %agent, "agent session full or gone; its tasks go to other agents");
            if let Some(record) = self.records.get_mut(agent)
                && let Some((_, sender)) = record.session.take()
            {
                let _ = sender.try_send(Err(ControlError::Exhausted("session buffer full".into())));
            }
            self.records.remove(agent);
        }
        broken
    }
}
