//! Settlement batches and their reports, the way acquirers produce them: every capture,
//! refund and payout waits in the open batch; closing it (an effect, with an idempotency
//! key, `POST /v1/settlement-batches` with a `value_date`) freezes its rows under a batch
//! id, and `GET /v1/settlement-batches/{id}/report.csv` serves the report.
//!
//! Report columns: `psp_reference, merchant_reference, type, gross, fee, net, currency,
//! batch_id, value_date`; `type` is `settled` (a capture: gross = captured amount, fee =
//! gross × cost bps / 10,000), `refunded` and `payout` (gross negative, no fee) or `fee`
//! (the batch fee, one row per currency when configured: gross 0, net = −fee). Amounts
//! are integer minor units.
//!
//! Planted mismatches (`POST /v1/admin/mismatches` with a `kind`) change the next batch
//! that has a row for them, each on a different `settled` row: `missing_in_report`
//! drops it, `late` holds it for the following batch, `duplicate` reports it twice,
//! `amount_over`/`amount_under` change its gross, `currency_mismatch` its currency,
//! and `missing_in_ledger` adds a capture no merchant ever asked for.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::dates::Day;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowType {
    Settled,
    Refunded,
    Payout,
    Fee,
}

impl RowType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Refunded => "refunded",
            Self::Payout => "payout",
            Self::Fee => "fee",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Settled, Self::Refunded, Self::Payout, Self::Fee]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// A mismatch the simulator can plant in its next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plant {
    MissingInReport,
    MissingInLedger,
    Duplicate,
    AmountOver,
    AmountUnder,
    CurrencyMismatch,
    Late,
}

impl Plant {
    pub const ALL: [Self; 7] = [
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
            Self::MissingInReport => "missing_in_report",
            Self::MissingInLedger => "missing_in_ledger",
            Self::Duplicate => "duplicate",
            Self::AmountOver => "amount_over",
            Self::AmountUnder => "amount_under",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::Late => "late",
        }
    }
}

/// A money movement waiting for its batch.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) row_type: RowType,
    pub(super) psp_reference: String,
    pub(super) merchant_reference: String,
    pub(super) gross: i64,
    pub(super) currency: String,
}

/// One line of a settlement report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub psp_reference: String,
    pub merchant_reference: String,
    #[serde(rename = "type")]
    pub row_type: RowType,
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
    pub currency: String,
    pub batch_id: String,
    pub value_date: String,
}

/// Where a planted mismatch went.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Planted {
    kind: Plant,
    psp_reference: String,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Batch {
    pub(super) batch_id: String,
    pub(super) value_date: String,
    #[serde(skip)]
    pub(super) rows: Vec<Row>,
    pub(super) planted: Vec<Planted>,
}

#[derive(Debug, Default)]
pub(super) struct Settlement {
    /// Movements since the last close, in order.
    pub(super) open: Vec<Entry>,
    /// Rows a `late` plant held back for the next batch.
    held: Vec<Entry>,
    /// Mismatches to plant in the next batch that has rows for them.
    pub(super) plants: Vec<Plant>,
    pub(super) batches: Vec<Batch>,
    unknown: u64,
}

pub(super) const HEADER: &str =
    "psp_reference,merchant_reference,type,gross,fee,net,currency,batch_id,value_date";

impl Settlement {
    pub(super) fn record(&mut self, entry: Entry) {
        self.open.push(entry);
    }

    /// Closes the open batch: its rows (late ones held before come first), with the
    /// queued plants applied where there are rows for them.
    pub(super) fn close(
        &mut self,
        gateway: &str,
        value_date: Day,
        cost_bps: u32,
        batch_fee: i64,
    ) -> &Batch {
        let batch_id = format!("{gateway}-{value_date}-{}", self.batches.len() + 1);
        let mut entries: Vec<Entry> = std::mem::take(&mut self.held);
        let held_count = entries.len();
        entries.append(&mut self.open);
        // Each plant takes a settled row of its own (never a row held as late).
        let mut taken = vec![false; entries.len()];
        let mut chosen: Vec<(Plant, Option<usize>)> = Vec::new();
        let mut left = Vec::new();
        for plant in std::mem::take(&mut self.plants) {
            if plant == Plant::MissingInLedger {
                chosen.push((plant, None));
                continue;
            }
            let target = (held_count..entries.len())
                .find(|&i| !taken[i] && entries[i].row_type == RowType::Settled);
            match target {
                Some(i) => {
                    taken[i] = true;
                    chosen.push((plant, Some(i)));
                }
                None => left.push(plant),
            }
        }
        self.plants = left;
        let fee_of = |gross: i64| gross * i64::from(cost_bps) / 10_000;
        let mut plan: Vec<Option<Plant>> = vec![None; entries.len()];
        let mut planted = Vec::new();
        let mut extra = Vec::new();
        for (plant, target) in chosen {
            match target {
                Some(i) => {
                    plan[i] = Some(plant);
                    planted.push(Planted {
                        kind: plant,
                        psp_reference: entries[i].psp_reference.clone(),
                    });
                }
                None => {
                    self.unknown += 1;
                    let currency = entries
                        .first()
                        .map_or_else(|| "EUR".to_owned(), |e| e.currency.clone());
                    let entry = Entry {
                        row_type: RowType::Settled,
                        psp_reference: format!("cap_{gateway}_u{}", self.unknown),
                        merchant_reference: format!("unknown-{}", self.unknown),
                        gross: 4_200,
                        currency,
                    };
                    planted.push(Planted {
                        kind: plant,
                        psp_reference: entry.psp_reference.clone(),
                    });
                    extra.push(entry);
                }
            }
        }
        let value = value_date.to_string();
        let mut rows = Vec::with_capacity(entries.len() + extra.len());
        let mut row = |entry: &Entry, gross: i64, currency: &str| {
            let fee = if entry.row_type == RowType::Settled {
                fee_of(gross)
            } else {
                0
            };
            rows.push(Row {
                psp_reference: entry.psp_reference.clone(),
                merchant_reference: entry.merchant_reference.clone(),
                row_type: entry.row_type,
                gross,
                fee,
                net: gross - fee,
                currency: currency.to_owned(),
                batch_id: batch_id.clone(),
                value_date: value.clone(),
            });
        };
        let mut held_next = Vec::new();
        for (entry, plant) in entries.iter().zip(&plan) {
            match plant {
                None => row(entry, entry.gross, &entry.currency),
                Some(Plant::MissingInReport) => {}
                Some(Plant::Late) => held_next.push(entry.clone()),
                Some(Plant::Duplicate) => {
                    row(entry, entry.gross, &entry.currency);
                    row(entry, entry.gross, &entry.currency);
                }
                Some(Plant::AmountOver) => row(entry, entry.gross + 100, &entry.currency),
                Some(Plant::AmountUnder) => {
                    row(
                        entry,
                        entry.gross - (entry.gross / 10).max(1),
                        &entry.currency,
                    );
                }
                Some(Plant::CurrencyMismatch) => {
                    let other = if entry.currency == "USD" {
                        "EUR"
                    } else {
                        "USD"
                    };
                    row(entry, entry.gross, other);
                }
                Some(Plant::MissingInLedger) => row(entry, entry.gross, &entry.currency),
            }
        }
        for entry in &extra {
            row(entry, entry.gross, &entry.currency);
        }
        if batch_fee > 0 {
            let mut currencies: Vec<String> = rows.iter().map(|r| r.currency.clone()).collect();
            currencies.sort();
            currencies.dedup();
            for currency in currencies {
                rows.push(Row {
                    psp_reference: format!("fee_{batch_id}_{currency}"),
                    merchant_reference: String::new(),
                    row_type: RowType::Fee,
                    gross: 0,
                    fee: batch_fee,
                    net: -batch_fee,
                    currency,
                    batch_id: batch_id.clone(),
                    value_date: value.clone(),
                });
            }
        }
        self.held = held_next;
        self.batches.push(Batch {
            batch_id,
            value_date: value,
            rows,
            planted,
        });
        self.batches.last().expect("just pushed")
    }

    pub(super) fn batch(&self, id: &str) -> Option<&Batch> {
        self.batches.iter().find(|b| b.batch_id == id)
    }
}

/// A report as CSV (RFC 4180: a field with a comma, quote or line break is quoted).
pub(super) fn csv(batch: &Batch) -> String {
    let mut out = String::with_capacity(64 + batch.rows.len() * 96);
    out.push_str(HEADER);
    out.push_str("\r\n");
    for row in &batch.rows {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{}\r\n",
            field(&row.psp_reference),
            field(&row.merchant_reference),
            row.row_type.as_str(),
            row.gross,
            row.fee,
            row.net,
            field(&row.currency),
            field(&row.batch_id),
            row.value_date
        );
    }
    out
}

fn field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

/// Parses a report (what [`csv`] writes, and any RFC 4180 file with these columns in
/// this order); an error names the line and what is wrong.
pub fn parse_report(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == HEADER => {}
        Some((_, header)) => {
            return Err(format!(
                "line 1: expected the header `{HEADER}`, got `{header}`"
            ));
        }
        None => return Err("the report is empty (no header)".into()),
    }
    let mut rows = Vec::new();
    for (index, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let fields = split_fields(line).map_err(|e| format!("line {number}: {e}"))?;
        let [psp, merchant, kind, gross, fee, net, currency, batch, value] =
            <[String; 9]>::try_from(fields)
                .map_err(|f| format!("line {number}: expected 9 fields, got {}", f.len()))?;
        let amount = |name: &str, text: &str| {
            text.parse::<i64>()
                .map_err(|_| format!("line {number}: {name} `{text}` is not an integer"))
        };
        rows.push(Row {
            row_type: RowType::parse(&kind)
                .ok_or_else(|| format!("line {number}: unknown type `{kind}`"))?,
            gross: amount("gross", &gross)?,
            fee: amount("fee", &fee)?,
            net: amount("net", &net)?,
            psp_reference: psp,
            merchant_reference: merchant,
            currency,
            batch_id: batch,
            value_date: Day::parse(&value)
                .map_err(|e| format!("line {number}: value_date {e}"))?
                .to_string(),
        });
    }
    Ok(rows)
}

fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::with_capacity(9);
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if current.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut current)),
            (_, c) => current.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    fields.push(current);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(n: u32) -> Entry {
        Entry {
            row_type: RowType::Settled,
            psp_reference: format!("cap_a_{n}"),
            merchant_reference: format!("wf, {n}"),
            gross: 1_000,
            currency: "EUR".into(),
        }
    }

    /// Every plant lands on its own row; the late row comes in the next batch; the CSV
    /// parses back to the same rows.
    #[test]
    fn plants_change_the_next_batch_and_reports_parse_back() {
        let mut settlement = Settlement::default();
        for n in 0..10 {
            settlement.record(capture(n));
        }
        settlement.plants = Plant::ALL.to_vec();
        let first = settlement.close("a", Day(20_000), 25, 30).clone();
        assert_eq!(first.planted.len(), 7);
        let mut planted: Vec<&str> = first
            .planted
            .iter()
            .map(|p| p.psp_reference.as_str())
            .collect();
        planted.sort_unstable();
        planted.dedup();
        assert_eq!(planted.len(), 7, "each plant on its own row");
        // 10 - missing - late + duplicate + unknown + a fee row per currency (the
        // currency mismatch made a USD row).
        assert_eq!(first.rows.len(), 10 - 2 + 1 + 1 + 2);
        assert_eq!(parse_report(&csv(&first)).unwrap(), first.rows);
        let second = settlement.close("a", Day(20_003), 25, 0).clone();
        assert_eq!(second.rows.len(), 1, "the late row");
        assert_eq!(second.rows[0].value_date, Day(20_003).to_string());
        assert!(settlement.plants.is_empty());
    }

    #[test]
    fn bad_reports_name_the_line() {
        let bad = format!("{HEADER}\r\ncap,ref,settled,12x,0,12,EUR,b,2026-01-01\r\n");
        assert!(
            parse_report(&bad)
                .unwrap_err()
                .contains("line 2: gross `12x`")
        );
        assert!(parse_report("a,b\n").unwrap_err().contains("line 1"));
    }
}
