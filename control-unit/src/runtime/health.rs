//! The live health view: the latest report per subject and reporting execution unit,
//! as telemetry (support) agents relay them. Gateway reports go to the core, where they
//! mark a failing gateway unhealthy for `cheapest-healthy` routes and may open its
//! circuit breaker.

use std::collections::BTreeMap;

use crate::model::HealthReport;
use crate::scheduler::breaker::{Breaker, BreakerState};
use crate::scheduler::{Command, Scheduler};
use crate::views::{BreakerView, HealthEntry};

/// Keyed by (kind, subject, reporting unit): units sharing a gateway or a skill each keep
/// their own view.
#[derive(Default)]
pub(super) struct HealthView {
    entries: BTreeMap<(String, String, String), HealthEntry>,
}

impl HealthView {
    pub(super) fn report(
        &mut self,
        now: u64,
        reported_by: &str,
        reports: Vec<HealthReport>,
        core: &mut Scheduler,
        out: &mut Vec<Command>,
    ) {
        for report in reports {
            let error_rate = report.error_rate();
            if report.kind == "gateway" {
                let window_ms = u64::from(report.window_ms);
                let (requests, errors) = (report.requests, report.errors);
                core.gateway_report(now, &report.subject, window_ms, requests, errors, out);
            }
            let key = (
                report.kind.clone(),
                report.subject.clone(),
                reported_by.to_owned(),
            );
            self.entries.insert(
                key,
                HealthEntry {
                    report,
                    error_rate,
                    reported_by: reported_by.to_owned(),
                    updated_at: now,
                },
            );
        }
    }

    pub(super) fn entries(&self) -> Vec<HealthEntry> {
        self.entries.values().cloned().collect()
    }

    /// An agent's latest entry from its own unit.
    pub(super) fn agent(&self, name: &str, execution_unit: &str) -> Option<HealthEntry> {
        self.entries
            .get(&(
                "agent".to_owned(),
                name.to_owned(),
                execution_unit.to_owned(),
            ))
            .cloned()
    }
}

/// Every gateway's breaker as the core keeps it now.
pub(super) fn breakers(core: &Scheduler, now: u64) -> Vec<BreakerView> {
    core.breakers()
        .all()
        .into_iter()
        .map(|breaker| view(core, breaker, now))
        .collect()
}

/// One gateway's breaker, if it has one.
pub(super) fn breaker(core: &Scheduler, gateway: &str, now: u64) -> Option<BreakerView> {
    core.breakers()
        .get(gateway)
        .map(|breaker| view(core, breaker, now))
}

fn view(core: &Scheduler, breaker: &Breaker, now: u64) -> BreakerView {
    BreakerView {
        gateway: breaker.gateway.clone(),
        state: breaker.state,
        window: breaker.counts(now, &core.breakers().config),
        open_until: if breaker.state == BreakerState::Open {
            breaker.until
        } else {
            0
        },
        trials_in_flight: breaker.trials_in_flight(),
        transitions: breaker.transitions.iter().cloned().collect(),
    }
}

/// The adaptive concurrency limits, as they stand.
pub(super) fn adaptive(core: &Scheduler) -> Vec<crate::views::AdaptiveView> {
    core.limits()
        .adaptive()
        .into_iter()
        .map(|(rule, state)| crate::views::AdaptiveView {
            gateway: rule.gateway.clone(),
            limit: state.limit,
            running: state.running,
            min: rule.min,
            max: rule.max,
            latency_target_ms: rule.latency_target_ms,
        })
        .collect()
}
