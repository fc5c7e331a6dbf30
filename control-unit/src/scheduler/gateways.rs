//! The core's side of the gateways' health: telemetry reports, drains, and the breaker
//! transitions that follow answers (`breaker` holds the breakers themselves).

use std::sync::Arc;

use super::{Command, Millis, Scheduler, breaker};
use crate::model::AgentId;

impl Scheduler {
    /// A telemetry agent's report on `gateway` over `window_ms`: failing half of five
    /// requests or more, its agents are skipped by `cheapest-healthy` routes for the
    /// cool-down; over the breaker's thresholds, its breaker opens.
    pub fn gateway_report(
        &mut self,
        now: Millis,
        gateway: &str,
        window_ms: u64,
        requests: u64,
        errors: u64,
        out: &mut Vec<Command>,
    ) {
        self.advance(now);
        // While the breaker decides (half-open), or the report's window still holds what
        // happened before the breaker last closed, the report says nothing new.
        let current = self.breakers.get(gateway).is_none_or(|b| {
            b.state == breaker::BreakerState::Closed
                && self.now.saturating_sub(window_ms) >= b.closed_at
        });
        if current && requests >= 5 && errors * 2 >= requests {
            let until = self.now + self.config.unhealthy_cooldown.as_millis() as u64;
            for agent in self.agents.values_mut() {
                if agent.labels.get("gateway").is_some_and(|g| g == gateway) {
                    agent.unhealthy_until = agent.unhealthy_until.max(until);
                }
            }
        }
        let counts = breaker::WindowCounts {
            requests: u32::try_from(requests).unwrap_or(u32::MAX),
            errors: u32::try_from(errors).unwrap_or(u32::MAX),
            slow: 0,
        };
        if let Some(transition) = self.breakers.report(gateway, self.now, window_ms, counts) {
            self.breaker_changed(transition, out);
        }
    }

    /// Drains `gateway` for `for_ms` (its breaker held open), or with 0 ends a drain
    /// (half-open: trial tasks decide). Returns the breaker's state and open-until.
    pub fn drain_gateway(
        &mut self,
        now: Millis,
        gateway: &str,
        for_ms: u64,
        reason: &str,
        out: &mut Vec<Command>,
    ) -> (breaker::BreakerState, Millis) {
        self.advance(now);
        let transition = if for_ms == 0 {
            self.breakers.release(gateway, self.now, reason)
        } else {
            let until = self.now + for_ms;
            Some(self.breakers.hold(gateway, self.now, until, reason))
        };
        if let Some(transition) = transition {
            self.breaker_changed(transition, out);
        }
        self.breakers
            .get(gateway)
            .map_or((breaker::BreakerState::Closed, 0), |b| (b.state, b.until))
    }

    /// A breaker moved: say so, and look again at the tasks its gateway's agents offer
    /// (half-open or closed, parked tasks may go).
    pub(super) fn breaker_changed(
        &mut self,
        transition: breaker::Transition,
        out: &mut Vec<Command>,
    ) {
        if transition.to != breaker::BreakerState::Open {
            for agent in self.agents.values_mut() {
                if agent.labels.get("gateway") == Some(&transition.gateway) {
                    // The breaker decides now: trials (half-open) or all clear (closed).
                    agent.unhealthy_until = 0;
                    agent.consecutive_failures = 0;
                }
            }
        }
        self.mark_gateway_dirty(&transition.gateway);
        out.push(Command::Breaker(transition));
    }

    /// An attempt on an agent ended: its gateway's breaker counts the verdict (an answer
    /// or a timeout; `None` when it ended without one, which only frees a trial place).
    pub(super) fn breaker_record(
        &mut self,
        agent: &AgentId,
        attempt: breaker::Attempt,
        failed: Option<bool>,
        latency_ms: u64,
        out: &mut Vec<Command>,
    ) {
        // Disjoint fields: the agent's label is borrowed, not cloned, per answer.
        let Some(gateway) = self.agents.get(agent).and_then(|a| a.labels.get("gateway")) else {
            return;
        };
        if let Some(failed) = failed
            && !self.limits.is_empty()
        {
            self.limits.sample(self.now, gateway, latency_ms, failed);
        }
        let blocked = !self.breakers.allows(gateway);
        let transition = self
            .breakers
            .record(gateway, self.now, attempt, failed, latency_ms);
        if let Some(transition) = transition {
            self.breaker_changed(transition, out);
        } else if blocked && self.breakers.allows(gateway) {
            // A trial place freed: the tasks parked on this gateway may go again.
            let gateway = gateway.clone();
            self.mark_gateway_dirty(&gateway);
        }
    }

    /// An attempt ended, however: the limits' places it held free.
    pub(super) fn limits_release(&mut self, slot: super::Slot, attempt: u32) {
        if self.limits.is_empty() {
            return;
        }
        for skill in self.limits.release(slot, attempt) {
            self.mark_dirty(&skill);
        }
    }

    /// Looks again at the tasks the gateway's agents offer.
    pub(crate) fn mark_gateway_dirty(&mut self, gateway: &str) {
        let skills: Vec<Arc<str>> = self
            .agents
            .values()
            .filter(|a| a.labels.get("gateway").is_some_and(|g| g == gateway))
            .flat_map(|a| a.skills.iter().cloned())
            .collect();
        for skill in &skills {
            self.mark_dirty(skill);
        }
    }
}
