//! The reconciliation service agent (`reconcile.gateway`): matches the ledger against a
//! gateway's settlement reports and classifies every row.
//!
//! Rows and ledger entries meet by PSP reference (the gateway's id of the capture,
//! refund or payout, which the ledger books with the posting). A report row is, in this
//! order of precedence: `missing_in_ledger` (no entry has its reference), `duplicate`
//! (an earlier row had it), `currency_mismatch`, `amount_over` / `amount_under` (gross
//! against the booked amount), `late` (its value date is after the entry's due date:
//! booked on + `settlement_days`), or `matched`. An entry no row names is
//! `missing_in_report` once its due date has passed by `as_of`, and `pending` before.
//! `fee` rows (the gateway's batch fees) match no entry: they are summed per currency.
//!
//! The run is a pure function of the ledger and the reports with a value date up to
//! `as_of`: running it again gives the same answer, and the answer is stored as the
//! task's output (durable with its workflow).
//!
//! The ledger's side comes from the ledger agent, asked as a peer (`ledger.expected`,
//! page by page) through the control unit: the reconciliation agent holds no ledger and
//! may run in any execution unit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paygrid_execution_unit::{
    Agent, AgentCard, PeerRequest, Role, SkillEffect, SkillSpec, Task, TaskOutcome,
};
use paygrid_security::Connector;
use serde::Serialize;
use serde_json::{Value, json};

use crate::dates::Day;
use crate::gateway_sim::{Row, RowType, parse_report};
use crate::ledger::Expected;

/// How a row or a ledger entry came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Matched,
    MissingInReport,
    MissingInLedger,
    Duplicate,
    AmountOver,
    AmountUnder,
    CurrencyMismatch,
    Late,
    /// Not in a report yet, and not due.
    Pending,
}

impl Class {
    pub const MISMATCHES: [Self; 7] = [
        Self::MissingInReport,
        Self::MissingInLedger,
        Self::Duplicate,
        Self::AmountOver,
        Self::AmountUnder,
        Self::CurrencyMismatch,
        Self::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::MissingInReport => "missing_in_report",
            Self::MissingInLedger => "missing_in_ledger",
            Self::Duplicate => "duplicate",
            Self::AmountOver => "amount_over",
            Self::AmountUnder => "amount_under",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::Late => "late",
            Self::Pending => "pending",
        }
    }
}

/// One mismatch, with what is needed to chase it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub kind: Class,
    pub psp_reference: String,
    pub merchant_reference: String,
    /// The report's batch; empty for `missing_in_report`.
    pub batch_id: String,
    pub detail: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub counts: BTreeMap<Class, u64>,
    pub mismatches: Vec<Mismatch>,
    /// `fee` rows, summed per currency.
    pub fees: BTreeMap<String, i64>,
    pub rows: usize,
}

/// Classifies every report row and every expected entry (see the module docs). `rows`
/// are in report order, oldest batch first.
pub fn reconcile(expected: &[Expected], rows: &[Row], as_of: Day, settlement_days: i32) -> Outcome {
    let by_reference: HashMap<&str, &Expected> = expected
        .iter()
        .map(|e| (e.psp_reference.as_str(), e))
        .collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
    let mut outcome = Outcome {
        rows: rows.len(),
        ..Outcome::default()
    };
    let found = |outcome: &mut Outcome, kind: Class, row: &Row, detail: String| {
        *outcome.counts.entry(kind).or_default() += 1;
        if kind != Class::Matched {
            outcome.mismatches.push(Mismatch {
                kind,
                psp_reference: row.psp_reference.clone(),
                merchant_reference: row.merchant_reference.clone(),
                batch_id: row.batch_id.clone(),
                detail,
            });
        }
    };
    for row in rows {
        if row.row_type == RowType::Fee {
            *outcome.fees.entry(row.currency.clone()).or_default() += row.fee;
            continue;
        }
        let Some(entry) = by_reference.get(row.psp_reference.as_str()) else {
            found(
                &mut outcome,
                Class::MissingInLedger,
                row,
                format!(
                    "{} {} {} not booked in the ledger",
                    row.row_type.as_str(),
                    row.gross,
                    row.currency
                ),
            );
            continue;
        };
        if !seen.insert(row.psp_reference.as_str()) {
            found(
                &mut outcome,
                Class::Duplicate,
                row,
                "reported more than once".into(),
            );
            continue;
        }
        let gross = row.gross.abs();
        let due = entry.booked_on.plus(settlement_days);
        let value_date = Day::parse(&row.value_date).unwrap_or(due);
        let (kind, detail) = if row.currency != entry.currency || row.row_type != entry.row_type {
            (
                Class::CurrencyMismatch,
                format!(
                    "reported {} {}, booked {} {}",
                    row.row_type.as_str(),
                    row.currency,
                    entry.row_type.as_str(),
                    entry.currency
                ),
            )
        } else if gross > entry.amount_minor {
            (
                Class::AmountOver,
                format!("reported {gross}, booked {}", entry.amount_minor),
            )
        } else if gross < entry.amount_minor {
            (
                Class::AmountUnder,
                format!("reported {gross}, booked {}", entry.amount_minor),
            )
        } else if value_date > due {
            (Class::Late, format!("value date {value_date}, due {due}"))
        } else {
            (Class::Matched, String::new())
        };
        found(&mut outcome, kind, row, detail);
    }
    for entry in expected {
        if seen.contains(entry.psp_reference.as_str()) {
            continue;
        }
        let due = entry.booked_on.plus(settlement_days);
        let kind = if as_of > due {
            Class::MissingInReport
        } else {
            Class::Pending
        };
        *outcome.counts.entry(kind).or_default() += 1;
        if kind == Class::MissingInReport {
            outcome.mismatches.push(Mismatch {
                kind,
                psp_reference: entry.psp_reference.clone(),
                merchant_reference: entry.merchant_reference.clone(),
                batch_id: String::new(),
                detail: format!(
                    "{} {} {} booked {}, due {due}",
                    entry.row_type.as_str(),
                    entry.amount_minor,
                    entry.currency,
                    entry.booked_on
                ),
            });
        }
    }
    outcome
}

/// At most this many mismatches are listed in a run's output (all are counted).
const LISTED_MAX: usize = 200;

pub struct ReconcileAgent {
    gateways: HashMap<String, String>,
    client: Client<Connector, Full<Bytes>>,
}

/// The ledger skill asked for the expected movements.
pub const LEDGER_EXPECTED: &str = "ledger.expected";

impl ReconcileAgent {
    /// Reconciles the ledger (asked of the ledger agent) against the gateways (name →
    /// base URL), connecting through `connector` (TLS or plaintext).
    pub fn new(gateways: HashMap<String, String>, connector: Connector) -> Self {
        Self {
            gateways: gateways
                .into_iter()
                .map(|(name, url)| (name, url.trim_end_matches('/').to_owned()))
                .collect(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// GET a gateway path: the body, or an outcome to end the task with.
    async fn get(&self, url: &str) -> Result<Bytes, TaskOutcome> {
        let request = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| TaskOutcome::permanent("invalid_request", e.to_string()))?;
        let answer = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| TaskOutcome::retryable("gateway_timeout", format!("GET {url} timed out")))?
            .map_err(|e| {
                TaskOutcome::retryable("gateway_unreachable", format!("GET {url}: {e}"))
            })?;
        let status = answer.status();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| TaskOutcome::retryable("gateway_unreachable", format!("GET {url}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(TaskOutcome::retryable(
                "gateway_error",
                format!("GET {url} answered {status}"),
            ));
        }
        Ok(body)
    }

    /// The rows of every batch with a value date up to `as_of`, oldest first.
    async fn reports(
        &self,
        base: &str,
        as_of: Day,
    ) -> Result<(Vec<String>, Vec<Row>), TaskOutcome> {
        let list = self.get(&format!("{base}/v1/settlement-batches")).await?;
        let list: Value = serde_json::from_slice(&list)
            .map_err(|e| TaskOutcome::permanent("bad_report", format!("batch list: {e}")))?;
        let mut batches: Vec<(Day, String)> = Vec::new();
        for batch in list["batches"].as_array().into_iter().flatten() {
            let (Some(id), Some(date)) = (batch["batch_id"].as_str(), batch["value_date"].as_str())
            else {
                continue;
            };
            let date = Day::parse(date)
                .map_err(|e| TaskOutcome::permanent("bad_report", format!("batch {id}: {e}")))?;
            if date <= as_of {
                batches.push((date, id.to_owned()));
            }
        }
        batches.sort();
        let mut rows = Vec::new();
        let mut ids = Vec::with_capacity(batches.len());
        for (_, id) in batches {
            let csv = self
                .get(&format!("{base}/v1/settlement-batches/{id}/report.csv"))
                .await?;
            let text = String::from_utf8_lossy(&csv);
            let mut parsed = parse_report(&text)
                .map_err(|e| TaskOutcome::permanent("bad_report", format!("batch {id}: {e}")))?;
            rows.append(&mut parsed);
            ids.push(id);
        }
        Ok((ids, rows))
    }
}

/// Every movement the ledger expects of `gateway`, booked up to `as_of`: asked of the
/// ledger agent, a page at a time, as a peer.
async fn expected_from_ledger(
    task: &Task,
    gateway: &str,
    as_of: Day,
) -> Result<Vec<Expected>, TaskOutcome> {
    let mut expected = Vec::new();
    let mut after = 0u64;
    loop {
        let input = json!({"gateway": gateway, "booked_until": as_of.to_string(), "after": after});
        let page = task
            .peers
            .ask(PeerRequest::for_task(LEDGER_EXPECTED, input, task))
            .await
            .map_err(|e| TaskOutcome::retryable("ledger_unavailable", e.to_string()))?;
        let entries: Vec<Expected> =
            serde_json::from_value(page["entries"].clone()).map_err(|e| {
                TaskOutcome::retryable("ledger_unavailable", format!("{LEDGER_EXPECTED}: {e}"))
            })?;
        expected.extend(entries);
        match page["next"].as_u64() {
            Some(next) if next > after => after = next,
            _ => return Ok(expected),
        }
    }
}

#[async_trait::async_trait]
impl Agent for ReconcileAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "reconcile".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "reconcile.gateway".into(),
                description: "Read-only: match the ledger against a gateway's settlement reports up to a date and classify every row (matched, missing in report, missing in ledger, duplicate, amount over/under, currency mismatch, late)".into(),
                input_schema: json!({"type": "object", "required": ["gateway"], "properties": {"gateway": {"type": "string"}, "as_of": {"type": "string", "format": "date", "description": "default: today (UTC)"}, "settlement_days": {"type": "integer", "minimum": 0, "maximum": 60, "description": "days after booking a movement is due in a report (default 2)"}}}),
                output_schema: json!({"type": "object", "properties": {"gateway": {"type": "string"}, "as_of": {"type": "string"}, "batches": {"type": "array"}, "report_rows": {"type": "integer"}, "expected": {"type": "integer"}, "matched": {"type": "integer"}, "pending": {"type": "integer"}, "mismatch_count": {"type": "integer"}, "counts": {"type": "object"}, "fees": {"type": "object"}, "mismatches": {"type": "array"}, "listed": {"type": "integer"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: 4,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let gateway = match task.str("gateway") {
            Ok(gateway) => gateway.to_owned(),
            Err(outcome) => return outcome,
        };
        let Some(base) = self.gateways.get(&gateway) else {
            let mut known: Vec<&str> = self.gateways.keys().map(String::as_str).collect();
            known.sort_unstable();
            return TaskOutcome::permanent(
                "unknown_gateway",
                format!("no gateway `{gateway}` here (known: {})", known.join(", ")),
            );
        };
        let as_of = match task.input.get("as_of").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => match Day::parse(text) {
                Ok(day) => day,
                Err(e) => return TaskOutcome::permanent("invalid_input", format!("`as_of`: {e}")),
            },
            _ => Day::today(),
        };
        let settlement_days = task
            .input
            .get("settlement_days")
            .and_then(Value::as_i64)
            .map_or(2, |d| i32::try_from(d.clamp(0, 60)).unwrap_or(2));
        let (batches, rows) = match self.reports(base, as_of).await {
            Ok(reports) => reports,
            Err(outcome) => return outcome,
        };
        let expected = match expected_from_ledger(&task, &gateway, as_of).await {
            Ok(expected) => expected,
            Err(outcome) => return outcome,
        };
        let outcome = reconcile(&expected, &rows, as_of, settlement_days);
        let count = |class: Class| outcome.counts.get(&class).copied().unwrap_or(0);
        let counts: BTreeMap<&str, u64> = Class::MISMATCHES
            .iter()
            .map(|&class| (class.as_str(), count(class)))
            .collect();
        let mismatch_count: u64 = counts.values().sum();
        tracing::info!(%gateway, %as_of, rows = outcome.rows, mismatch_count, "reconciled");
        TaskOutcome::Succeeded(json!({
            "gateway": gateway,
            "as_of": as_of.to_string(),
            "settlement_days": settlement_days,
            "batches": batches,
            "report_rows": outcome.rows,
            "expected": expected.len(),
            "matched": count(Class::Matched),
            "pending": count(Class::Pending),
            "mismatch_count": mismatch_count,
            "counts": counts,
            "fees": outcome.fees,
            "listed": outcome.mismatches.len().min(LISTED_MAX),
            "mismatches": &outcome.mismatches[..outcome.mismatches.len().min(LISTED_MAX)],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, booked_on: Day) -> Expected {
        Expected {
            row_type: RowType::Settled,
            psp_reference: format!("cap_{n}"),
            merchant_reference: format!("wf_{n}"),
            gateway: "alpha".into(),
            amount_minor: 1_000 + i64::from(n),
            currency: "EUR".into(),
            booked_on,
        }
    }

    fn row(e: &Expected, value_date: Day) -> Row {
        Row {
            psp_reference: e.psp_reference.clone(),
            merchant_reference: e.merchant_reference.clone(),
            row_type: e.row_type,
            gross: e.amount_minor,
            fee: 2,
            net: e.amount_minor - 2,
            currency: e.currency.clone(),
            batch_id: "alpha-1".into(),
            value_date: value_date.to_string(),
        }
    }

    /// Thousands of clean rows match; one of each mismatch is found once, and a
    /// movement not due yet is pending, not missing.
    #[test]
    fn every_kind_is_found_once_and_clean_rows_match() {
        let day = Day(20_000);
        let mut expected: Vec<Expected> = (0..5_000).map(|n| entry(n, day)).collect();
        let mut rows: Vec<Row> = expected[..4_990]
            .iter()
            .map(|e| row(e, day.plus(1)))
            .collect();
        // 4_990..5_000 are missing from the report: one is due, the others not yet.
        for e in &mut expected[4_991..] {
            e.booked_on = day.plus(3);
        }
        rows[1].gross += 1; // over
        rows[2].gross -= 1; // under
        rows[3].currency = "USD".into();
        rows[4].value_date = day.plus(5).to_string(); // late (due day + 2)
        let duplicate = rows[5].clone();
        rows.push(duplicate);
        let mut stranger = rows[6].clone();
        stranger.psp_reference = "cap_unknown".into();
        rows.push(stranger);
        let outcome = reconcile(&expected, &rows, day.plus(4), 2);
        for class in Class::MISMATCHES {
            assert_eq!(outcome.counts.get(&class), Some(&1), "{class:?}");
        }
        assert_eq!(outcome.counts[&Class::Matched], 4_990 - 4);
        assert_eq!(outcome.counts[&Class::Pending], 9);
        assert_eq!(outcome.mismatches.len(), 7);
        let missing = outcome
            .mismatches
            .iter()
            .find(|m| m.kind == Class::MissingInReport)
            .unwrap();
        assert_eq!(missing.psp_reference, "cap_4990");
    }
}
