//! What the control unit learns from reconciliation runs: a `reconcile.gateway` task
//! that succeeds carries the run's summary in its output (see the reconciliation agent),
//! which becomes metrics and, with mismatches, a `reconciliation_mismatch` trigger for
//! remediation. The results themselves stay where they are durable: the task's output.

use serde_json::Value;

use crate::metric_names as names;
use crate::model::WorkflowId;
use paygrid_telemetry::metrics::Registry;

/// The skill whose outputs are reconciliation results.
pub const SKILL: &str = "reconcile.gateway";

/// The mismatch kinds a run counts, in the order `paygrid reconcile` shows them.
pub const MISMATCH_KINDS: [&str; 7] = [
    "missing_in_report",
    "missing_in_ledger",
    "duplicate",
    "amount_over",
    "amount_under",
    "currency_mismatch",
    "late",
];

/// One reconciliation run, as its output reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub workflow: WorkflowId,
    pub gateway: String,
    pub as_of: String,
    pub matched: u64,
    pub mismatches: Vec<(&'static str, u64)>,
}

impl Summary {
    /// The summary in a task output, when it is one.
    pub fn from_output(workflow: WorkflowId, output: &str) -> Option<Self> {
        let output: Value = serde_json::from_str(output).ok()?;
        let gateway = output.get("gateway")?.as_str()?.to_owned();
        let counts = output.get("counts")?;
        Some(Self {
            workflow,
            gateway,
            as_of: output
                .get("as_of")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            matched: output.get("matched").and_then(Value::as_u64).unwrap_or(0),
            mismatches: MISMATCH_KINDS
                .iter()
                .map(|&kind| (kind, counts.get(kind).and_then(Value::as_u64).unwrap_or(0)))
                .collect(),
        })
    }

    pub fn mismatch_count(&self) -> u64 {
        self.mismatches.iter().map(|(_, n)| n).sum()
    }

    /// `missing_in_report=1 late=2`: the kinds found.
    pub fn describe(&self) -> String {
        let found: Vec<String> = self
            .mismatches
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect();
        found.join(" ")
    }

    /// Rows classified, counted by gateway and class; the latest run's mismatches as
    /// gauges (what is open now).
    pub fn observe(&self, metrics: &Registry) {
        let gateway = self.gateway.as_str();
        metrics.count(
            &names::RECONCILIATION_ROWS,
            &[("gateway", gateway), ("class", "matched")],
            self.matched,
        );
        for (kind, n) in &self.mismatches {
            let labels = [("gateway", gateway), ("class", *kind)];
            metrics.count(&names::RECONCILIATION_ROWS, &labels, *n);
            metrics.gauge(
                &names::RECONCILIATION_MISMATCHES,
                &[("gateway", gateway), ("kind", *kind)],
                i64::try_from(*n).unwrap_or(i64::MAX),
            );
        }
        metrics.count(&names::RECONCILIATION_RUNS, &[("gateway", gateway)], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_output_reads_as_a_summary() {
        let output = r#"{"gateway":"alpha","as_of":"2026-12-03","matched":10,"counts":{"late":1,"duplicate":2}}"#;
        let summary = Summary::from_output(WorkflowId::generate(1), output).unwrap();
        assert_eq!(summary.mismatch_count(), 3);
        assert_eq!(summary.describe(), "duplicate=2 late=1");
        assert!(Summary::from_output(WorkflowId::generate(1), r#"{"status":"ok"}"#).is_none());
    }
}
