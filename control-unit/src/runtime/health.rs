//! The live health view: the latest report per subject and reporting execution unit,
//! as telemetry (support) agents relay them. A gateway failing at least half of at least
//! five recent requests is marked unhealthy for `cheapest-healthy` routes.

use std::collections::BTreeMap;

use crate::model::HealthReport;
use crate::scheduler::Scheduler;
use crate::views::HealthEntry;

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
    ) {
        for report in reports {
            let error_rate = report.error_rate();
            if report.kind == "gateway" && report.requests >= 5 && error_rate >= 0.5 {
                core.gateway_unhealthy(now, &report.subject);
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
