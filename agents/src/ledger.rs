//! The ledger service agent (`ledger.post`): double-entry postings with two-phase
//! transfers. `authorize` books a pending transfer, `capture` posts it (up to its amount),
//! `void` voids it, `refund` and `settle` book posted transfers. Debits equal credits,
//! checked after every posting: a broken invariant stops the agent (it must never happen).
//! Postings are idempotent by the task's idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use paygrid_execution_unit::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
use serde_json::{Value, json};

use crate::dates::Day;
use crate::gateway_sim::RowType;

/// Debits and credits of one account in one currency, pending and posted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub debits_posted: i64,
    pub credits_posted: i64,
}

#[derive(Debug, Clone)]
struct Transfer {
    amount_minor: i64,
    posted_minor: i64,
    currency: String,
    status: &'static str,
    split: bool,
}

const RECEIVABLE: &str = "gateway_receivable";
const PAYABLE: &str = "merchant_payable";
const CASH: &str = "settlement_cash";
const PLATFORM: &str = "platform_revenue";

fn sub_merchant(merchant: &str) -> String {
    format!("sub_merchant_payable:{merchant}")
}

/// A movement the ledger expects in a gateway's settlement report: what reconciliation
/// matches report rows against (by PSP reference).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    pub row_type: RowType,
    pub psp_reference: String,
    pub merchant_reference: String,
    pub gateway: String,
    /// The amount, positive whatever the direction.
    pub amount_minor: i64,
    pub currency: String,
    pub booked_on: Day,
}

/// One sub-merchant's payout owed in a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PayoutItem {
    pub destination: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Default)]
pub struct Ledger {
    balances: BTreeMap<(String, String), Balance>,
    /// The transfer of each payment.
    transfers: HashMap<String, Transfer>,
    /// Idempotency key → the answer given.
    answers: HashMap<String, Value>,
    /// What the gateways' settlement reports should show, in booking order.
    expected: Vec<Expected>,
    expected_by_reference: HashMap<String, usize>,
    /// Sub-merchant shares not paid out yet, by (batch, sub-merchant, currency).
    owed: BTreeMap<(String, String, String), i64>,
}

impl Ledger {
    fn book(&mut self, debit: &str, credit: &str, amount: i64, currency: &str, pending: bool) {
        for (account, is_debit) in [(debit, true), (credit, false)] {
            let balance = self
                .balances
                .entry((account.to_owned(), currency.to_owned()))
                .or_default();
            match (pending, is_debit) {
                (true, true) => balance.debits_pending += amount,
                (true, false) => balance.credits_pending += amount,
                (false, true) => balance.debits_posted += amount,
                (false, false) => balance.credits_posted += amount,
            }
        }
    }

    /// Debits equal credits per currency, pending and posted.
    pub fn is_balanced(&self) -> bool {
        let mut sums: HashMap<&str, Balance> = HashMap::new();
        for ((_, currency), balance) in &self.balances {
            let sum = sums.entry(currency).or_default();
            sum.debits_pending += balance.debits_pending;
            sum.credits_pending += balance.credits_pending;
            sum.debits_posted += balance.debits_posted;
            sum.credits_posted += balance.credits_posted;
        }
        sums.values()
            .all(|s| s.debits_pending == s.credits_pending && s.debits_posted == s.credits_posted)
    }

    /// Applies one posting request; `Err` is a message for a permanent failure.
    pub fn post(&mut self, request: &Value) -> Result<Value, String> {
        let event = string(request, "event")?;
        let booked_on = match request.get("booked_on").and_then(Value::as_str) {
            Some(text) => Day::parse(text).map_err(|e| format!("`booked_on`: {e}"))?,
            None => Day::today(),
        };
        let answer = match event {
            "authorize" => self.authorize(string(request, "payment_id")?, request)?,
            "capture" | "void" => {
                let payment = string(request, "payment_id")?;
                self.settle_pending(payment, event == "capture", request, booked_on)?
            }
            "refund" | "settle" => {
                let payment = string(request, "payment_id")?;
                let (amount, currency) = (amount(request)?, string(request, "currency")?);
                let (debit, credit) = if event == "refund" {
                    (PAYABLE, RECEIVABLE)
                } else {
                    (CASH, RECEIVABLE)
                };
                if event == "refund" {
                    self.expect(
                        RowType::Refunded,
                        request,
                        payment,
                        amount,
                        currency,
                        booked_on,
                    )?;
                }
                self.book(debit, credit, amount, currency, false);
                json!({"payment_id": payment, "status": "posted", "amount_minor": amount})
            }
            "split" => self.split(string(request, "payment_id")?, request)?,
            "payouts" => self.payouts(request, booked_on)?,
            other => {
                return Err(format!(
                    "unknown event `{other}`: use authorize, capture, void, refund, settle, split or payouts"
                ));
            }
        };
        assert!(self.is_balanced(), "ledger out of balance after {event}");
        Ok(answer)
    }

    /// Records what the report should show, when the posting names its gateway and PSP
    /// reference (a posting without them is not reconciled).
    fn expect(
        &mut self,
        row_type: RowType,
        request: &Value,
        merchant_reference: &str,
        amount_minor: i64,
        currency: &str,
        booked_on: Day,
    ) -> Result<(), String> {
        let (Some(psp_reference), Some(gateway)) = (
            request.get("psp_reference").and_then(Value::as_str),
            request.get("gateway").and_then(Value::as_str),
        ) else {
            return Ok(());
        };
        if self.expected_by_reference.contains_key(psp_reference) {
            return Err(format!("PSP reference {psp_reference} is already booked"));
        }
        self.expected_by_reference
            .insert(psp_reference.to_owned(), self.expected.len());
        self.expected.push(Expected {
            row_type,
            psp_reference: psp_reference.to_owned(),
            merchant_reference: merchant_reference.to_owned(),
            gateway: gateway.to_owned(),
            amount_minor,
            currency: currency.to_owned(),
            booked_on,
        });
        Ok(())
    }

    /// A pending transfer for an authorization.
    fn authorize(&mut self, payment: &str, request: &Value) -> Result<Value, String> {
        if self.transfers.contains_key(payment) {
            return Err(format!("payment {payment} already has a transfer"));
        }
        let (amount, currency) = (amount(request)?, string(request, "currency")?.to_owned());
        self.book(RECEIVABLE, PAYABLE, amount, &currency, true);
        self.transfers.insert(
            payment.to_owned(),
            Transfer {
                amount_minor: amount,
                posted_minor: 0,
                currency,
                status: "pending",
                split: false,
            },
        );
        Ok(json!({"payment_id": payment, "status": "pending", "amount_minor": amount}))
    }

    /// Ends a pending transfer: posts what was captured, or releases it all (void).
    fn settle_pending(
        &mut self,
        payment: &str,
        capture: bool,
        request: &Value,
        booked_on: Day,
    ) -> Result<Value, String> {
        let transfer = self
            .transfers
            .get(payment)
            .cloned()
            .ok_or_else(|| format!("payment {payment} has no pending transfer"))?;
        if transfer.status != "pending" {
            return Err(format!("payment {payment} transfer is {}", transfer.status));
        }
        let posted = if capture {
            let amount = request
                .get("amount_minor")
                .and_then(Value::as_i64)
                .unwrap_or(transfer.amount_minor);
            if amount <= 0 || amount > transfer.amount_minor {
                return Err(format!(
                    "capture of {amount} exceeds the pending {}",
                    transfer.amount_minor
                ));
            }
            self.expect(
                RowType::Settled,
                request,
                payment,
                amount,
                &transfer.currency,
                booked_on,
            )?;
            amount
        } else {
            0
        };
        // Release the pending amounts, then post what was captured.
        let currency = &transfer.currency;
        self.book(RECEIVABLE, PAYABLE, -transfer.amount_minor, currency, true);
        if posted > 0 {
            self.book(RECEIVABLE, PAYABLE, posted, currency, false);
        }
        let status = if capture { "posted" } else { "voided" };
        if let Some(t) = self.transfers.get_mut(payment) {
            t.status = status;
            t.posted_minor = posted;
        }
        Ok(json!({"payment_id": payment, "status": status, "amount_minor": posted}))
    }

    /// A marketplace (PayFac) payment's captured amount, split: each sub-merchant's share
    /// becomes owed to it (paid out with its batch) and the rest is the platform's fee.
    /// The shares and the fee must add up to what was captured.
    fn split(&mut self, payment: &str, request: &Value) -> Result<Value, String> {
        let transfer = self
            .transfers
            .get(payment)
            .cloned()
            .ok_or_else(|| format!("payment {payment} has no transfer"))?;
        if transfer.status != "posted" || transfer.split {
            return Err(format!(
                "payment {payment} cannot be split: its transfer is {}{}",
                transfer.status,
                if transfer.split {
                    " and already split"
                } else {
                    ""
                }
            ));
        }
        let batch = string(request, "batch")?;
        let fee = request
            .get("platform_fee_minor")
            .and_then(Value::as_i64)
            .filter(|fee| *fee >= 0)
            .ok_or("`platform_fee_minor` must be a non-negative integer")?;
        let shares = request
            .get("shares")
            .and_then(Value::as_array)
            .filter(|shares| !shares.is_empty())
            .ok_or("`shares` must be a non-empty array of {merchant, amount_minor}")?;
        let mut checked = Vec::with_capacity(shares.len());
        for (index, share) in shares.iter().enumerate() {
            let merchant = share
                .get("merchant")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| format!("`shares[{index}].merchant` must be a string"))?;
            let amount = amount(share).map_err(|e| format!("`shares[{index}]`: {e}"))?;
            checked.push((merchant, amount));
        }
        let total: i64 = checked.iter().map(|(_, a)| a).sum::<i64>() + fee;
        if total != transfer.posted_minor {
            return Err(format!(
                "shares and platform fee add up to {total}, the capture is {}",
                transfer.posted_minor
            ));
        }
        let currency = transfer.currency.clone();
        for (merchant, amount) in &checked {
            self.book(PAYABLE, &sub_merchant(merchant), *amount, &currency, false);
            *self
                .owed
                .entry((batch.to_owned(), (*merchant).to_owned(), currency.clone()))
                .or_default() += amount;
        }
        if fee > 0 {
            self.book(PAYABLE, PLATFORM, fee, &currency, false);
        }
        if let Some(t) = self.transfers.get_mut(payment) {
            t.split = true;
        }
        Ok(
            json!({"payment_id": payment, "status": "split", "shares": checked.len(), "platform_fee_minor": fee}),
        )
    }

    /// The payouts a batch owes its sub-merchants, one per sub-merchant and currency.
    pub fn payout_plan(&self, batch: &str) -> Vec<PayoutItem> {
        self.owed
            .iter()
            .filter(|((b, _, _), amount)| b == batch && **amount > 0)
            .map(|((_, merchant, currency), amount)| PayoutItem {
                destination: merchant.clone(),
                amount_minor: *amount,
                currency: currency.clone(),
            })
            .collect()
    }

    /// Books the payouts a gateway sent for a batch (`gateway.payout_batch`'s output):
    /// each clears what the batch owes its sub-merchant, and is expected in the report.
    fn payouts(&mut self, request: &Value, booked_on: Day) -> Result<Value, String> {
        let batch = string(request, "batch")?;
        let payouts = request.get("payouts").and_then(Value::as_array).ok_or(
            "`payouts` must be an array of {payout_id, destination, amount_minor, currency}",
        )?;
        let mut checked = Vec::with_capacity(payouts.len());
        for (index, payout) in payouts.iter().enumerate() {
            let field = |name: &str| {
                payout
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`payouts[{index}].{name}` must be a string"))
            };
            let (id, destination, currency) = (
                field("payout_id")?,
                field("destination")?,
                field("currency")?,
            );
            let amount = amount(payout).map_err(|e| format!("`payouts[{index}]`: {e}"))?;
            let owed = self
                .owed
                .get(&(
                    batch.to_owned(),
                    destination.to_owned(),
                    currency.to_owned(),
                ))
                .copied()
                .unwrap_or(0);
            if amount > owed {
                return Err(format!(
                    "`payouts[{index}]`: {amount} {currency} to {destination} exceeds the {owed} batch {batch} owes it"
                ));
            }
            if self.expected_by_reference.contains_key(id) {
                return Err(format!("`payouts[{index}]`: payout {id} is already booked"));
            }
            checked.push((id, destination, currency, amount));
        }
        for (id, destination, currency, amount) in &checked {
            let reference = format!("{batch}:{destination}");
            let with_reference = json!({"psp_reference": id, "gateway": request.get("gateway")});
            self.expect(
                RowType::Payout,
                &with_reference,
                &reference,
                *amount,
                currency,
                booked_on,
            )?;
            self.book(
                &sub_merchant(destination),
                RECEIVABLE,
                *amount,
                currency,
                false,
            );
            if let Some(owed) = self.owed.get_mut(&(
                batch.to_owned(),
                (*destination).to_owned(),
                (*currency).to_owned(),
            )) {
                *owed -= amount;
            }
        }
        Ok(json!({"batch": batch, "status": "posted", "payouts": checked.len()}))
    }

    pub fn balances(&self) -> Vec<(String, String, Balance)> {
        self.balances
            .iter()
            .map(|((a, c), b)| (a.clone(), c.clone(), *b))
            .collect()
    }

    /// What a gateway's settlement reports should show, in booking order.
    pub fn expected(&self, gateway: &str) -> Vec<Expected> {
        self.expected
            .iter()
            .filter(|e| e.gateway == gateway)
            .cloned()
            .collect()
    }
}

pub struct LedgerAgent {
    ledger: Arc<Mutex<Ledger>>,
    journal: Option<crate::journal::Journal>,
}

impl LedgerAgent {
    /// A ledger kept in memory only.
    pub fn new() -> Self {
        Self {
            ledger: Arc::new(Mutex::new(Ledger::default())),
            journal: None,
        }
    }

    /// Fires when the ledger's journal failed: the host must stop (exit code 70).
    pub fn broken(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.journal.as_ref().map(crate::journal::Journal::broken)
    }

    /// A ledger kept in `path`: every posting is journaled before it is answered, and the
    /// journal is replayed at start.
    pub fn open(path: &std::path::Path) -> Result<Self, crate::journal::JournalError> {
        let (journal, entries) = crate::journal::Journal::open(path)?;
        Ok(Self {
            ledger: Arc::new(Mutex::new(Ledger::replay(&entries))),
            journal: Some(journal),
        })
    }
}

impl Ledger {
    /// Rebuilds a ledger from journal entries (`{"key": ..., "request": ...}`).
    pub fn replay(entries: &[String]) -> Self {
        let mut ledger = Self::default();
        for entry in entries {
            let Ok(entry) = serde_json::from_str::<Value>(entry) else {
                continue;
            };
            let key = entry["key"].as_str().unwrap_or_default().to_owned();
            if let Ok(answer) = ledger.post(&entry["request"]) {
                ledger.answers.insert(key, answer);
            }
        }
        ledger
    }

    /// Transfers booked, by status.
    pub fn transfer_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for transfer in self.transfers.values() {
            *counts.entry(transfer.status).or_default() += 1;
        }
        counts
    }
}

impl Default for LedgerAgent {
    fn default() -> Self {
        Self::new()
    }
}

/// One page of `ledger.expected`: the gateway's expected movements booked up to
/// `booked_until`, from position `after`, at most `limit` (default 2,000).
fn expected_page(ledger: &Ledger, input: &Value) -> TaskOutcome {
    let Some(gateway) = input.get("gateway").and_then(Value::as_str) else {
        return TaskOutcome::permanent("invalid_input", "`gateway` must be a string");
    };
    let until = match input.get("booked_until").and_then(Value::as_str) {
        Some(text) => match Day::parse(text) {
            Ok(day) => Some(day),
            Err(e) => {
                return TaskOutcome::permanent("invalid_input", format!("`booked_until`: {e}"));
            }
        },
        None => None,
    };
    let after = input.get("after").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = input
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(2_000, |l| l.clamp(1, 5_000)) as usize;
    let all: Vec<Expected> = ledger
        .expected(gateway)
        .into_iter()
        .filter(|e| until.is_none_or(|until| e.booked_on <= until))
        .collect();
    let page: Vec<&Expected> = all.iter().skip(after).take(limit).collect();
    let next = (after + page.len() < all.len()).then_some(after + page.len());
    TaskOutcome::Succeeded(json!({"gateway": gateway, "entries": page, "next": next}))
}

#[async_trait::async_trait]
impl Agent for LedgerAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "ledger".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![
                SkillSpec {
                    name: "ledger.post".into(),
                    description: "Book a double-entry posting: authorize (pending), capture (post), void, refund, settle, split (a marketplace payment's sub-merchant shares and platform fee), payouts (a batch's sub-merchant payouts). With `gateway` and `psp_reference`, a capture, refund or payout is expected in that gateway's settlement report.".into(),
                    input_schema: json!({"type": "object", "required": ["event"], "properties": {"event": {"type": "string", "enum": ["authorize", "capture", "void", "refund", "settle", "split", "payouts"]}, "payment_id": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "gateway": {"type": "string"}, "psp_reference": {"type": "string"}, "batch": {"type": "string"}, "platform_fee_minor": {"type": "integer"}, "shares": {"type": "array"}, "payouts": {"type": "array"}, "booked_on": {"type": "string", "format": "date"}}}),
                    output_schema: json!({"type": "object", "properties": {"payment_id": {"type": "string"}, "status": {"type": "string"}, "amount_minor": {"type": "integer"}}}),
                    effect: SkillEffect::State,
                },
                SkillSpec {
                    name: "ledger.expected".into(),
                    description: "Read-only: the movements the ledger expects in a gateway's settlement reports (captures, refunds, payouts with their PSP reference), booked up to a date, a page at a time; what reconciliation asks for as a peer".into(),
                    input_schema: json!({"type": "object", "required": ["gateway"], "properties": {"gateway": {"type": "string"}, "booked_until": {"type": "string", "format": "date"}, "after": {"type": "integer", "minimum": 0, "description": "the `next` of the previous page"}, "limit": {"type": "integer", "minimum": 1, "maximum": 5000}}}),
                    output_schema: json!({"type": "object", "properties": {"gateway": {"type": "string"}, "entries": {"type": "array"}, "next": {"type": ["integer", "null"]}}}),
                    effect: SkillEffect::ReadOnly,
                },
                SkillSpec {
                    name: "ledger.payout_plan".into(),
                    description: "Read-only: the payouts a settlement batch owes its sub-merchants".into(),
                    input_schema: json!({"type": "object", "required": ["batch"], "properties": {"batch": {"type": "string"}}}),
                    output_schema: json!({"type": "object", "properties": {"batch": {"type": "string"}, "items": {"type": "array"}, "total_minor": {"type": "integer"}}}),
                    effect: SkillEffect::ReadOnly,
                },
            ],
            max_concurrency: 256,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if task.skill == "ledger.expected" {
            return expected_page(&ledger, &task.input);
        }
        if task.skill == "ledger.payout_plan" {
            let Some(batch) = task.input.get("batch").and_then(Value::as_str) else {
                return TaskOutcome::permanent("invalid_input", "`batch` must be a string");
            };
            let items = ledger.payout_plan(batch);
            let total: i64 = items.iter().map(|i| i.amount_minor).sum();
            return TaskOutcome::Succeeded(
                json!({"batch": batch, "items": items, "total_minor": total}),
            );
        }
        if let Some(answer) = ledger.answers.get(&task.idempotency_key) {
            return TaskOutcome::Succeeded(answer.clone());
        }
        // The booking date goes into the journal with the request: a replay books on
        // the same day.
        let mut request = task.input;
        if let Some(fields) = request.as_object_mut()
            && !fields.contains_key("booked_on")
        {
            fields.insert("booked_on".into(), json!(Day::today().to_string()));
        }
        match ledger.post(&request) {
            Ok(answer) => {
                if let Some(journal) = &self.journal {
                    let entry =
                        json!({"key": task.idempotency_key, "request": request}).to_string();
                    if let Err(error) = tokio::task::block_in_place(|| journal.append(&entry)) {
                        // Memory is ahead of disk: the journal is now broken, the host
                        // stops (see `broken`), and the restart replays the journal. The
                        // posting may or may not survive: the outcome is unknown.
                        tracing::error!(%error, "ledger journal write failed; stopping");
                        return TaskOutcome::unknown("ledger_journal_failed", error.to_string());
                    }
                }
                ledger
                    .answers
                    .insert(task.idempotency_key.clone(), answer.clone());
                TaskOutcome::Succeeded(answer)
            }
            Err(message) => TaskOutcome::permanent("ledger_rejected", message),
        }
    }
}

fn string<'a>(request: &'a Value, name: &str) -> Result<&'a str, String> {
    request
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{name}` must be a string"))
}

fn amount(request: &Value) -> Result<i64, String> {
    request
        .get("amount_minor")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or_else(|| "`amount_minor` must be a positive integer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending on authorize, posted on capture, voided on void; always balanced.
    #[test]
    fn two_phase_postings_balance() {
        let mut ledger = Ledger::default();
        ledger.post(&json!({"event": "authorize", "payment_id": "p1", "amount_minor": 1000, "currency": "EUR"})).unwrap();
        ledger
            .post(&json!({"event": "capture", "payment_id": "p1", "amount_minor": 800}))
            .unwrap();
        ledger.post(&json!({"event": "authorize", "payment_id": "p2", "amount_minor": 500, "currency": "EUR"})).unwrap();
        ledger
            .post(&json!({"event": "void", "payment_id": "p2"}))
            .unwrap();
        assert!(ledger.is_balanced());
        let receivable = ledger
            .balances()
            .into_iter()
            .find(|(a, _, _)| a == RECEIVABLE)
            .unwrap()
            .2;
        assert_eq!(
            receivable,
            Balance {
                debits_pending: 0,
                credits_pending: 0,
                debits_posted: 800,
                credits_posted: 0
            }
        );
        assert!(
            ledger
                .post(&json!({"event": "capture", "payment_id": "p2"}))
                .unwrap_err()
                .contains("voided")
        );
        assert!(
            ledger
                .post(&json!({"event": "capture", "payment_id": "p9"}))
                .is_err()
        );
    }

    /// A marketplace payment: captured, split into shares and a platform fee, paid out
    /// with its batch; each step balances, and the payouts are expected in the report.
    #[test]
    fn a_split_is_owed_to_sub_merchants_until_their_batch_pays_out() {
        let mut ledger = Ledger::default();
        let post = |ledger: &mut Ledger, request: Value| ledger.post(&request);
        post(&mut ledger, json!({"event": "authorize", "payment_id": "m1", "amount_minor": 9000, "currency": "EUR"})).unwrap();
        post(&mut ledger, json!({"event": "capture", "payment_id": "m1", "gateway": "alpha", "psp_reference": "cap_1", "booked_on": "2026-11-24"})).unwrap();
        let bad = post(
            &mut ledger,
            json!({"event": "split", "payment_id": "m1", "batch": "b1", "platform_fee_minor": 100, "shares": [{"merchant": "a", "amount_minor": 8000}]}),
        );
        assert!(bad.unwrap_err().contains("add up to 8100"));
        post(&mut ledger, json!({"event": "split", "payment_id": "m1", "batch": "b1", "platform_fee_minor": 1000, "shares": [{"merchant": "a", "amount_minor": 5000}, {"merchant": "b", "amount_minor": 3000}]})).unwrap();
        assert!(post(&mut ledger, json!({"event": "split", "payment_id": "m1", "batch": "b1", "platform_fee_minor": 9000, "shares": [{"merchant": "a", "amount_minor": 1}]})).is_err(), "split once");
        let plan = ledger.payout_plan("b1");
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].amount_minor, 5000);
        let too_much = post(
            &mut ledger,
            json!({"event": "payouts", "batch": "b1", "gateway": "alpha", "payouts": [{"payout_id": "po_1", "destination": "a", "amount_minor": 5001, "currency": "EUR"}]}),
        );
        assert!(too_much.unwrap_err().contains("exceeds the 5000"));
        post(&mut ledger, json!({"event": "payouts", "batch": "b1", "gateway": "alpha", "payouts": [{"payout_id": "po_1", "destination": "a", "amount_minor": 5000, "currency": "EUR"}, {"payout_id": "po_2", "destination": "b", "amount_minor": 3000, "currency": "EUR"}]})).unwrap();
        assert!(ledger.payout_plan("b1").is_empty());
        assert!(ledger.is_balanced());
        let expected = ledger.expected("alpha");
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[2].merchant_reference, "b1:b");
        assert_eq!(expected[0].booked_on.to_string(), "2026-11-24");
        let platform = ledger
            .balances()
            .into_iter()
            .find(|(a, _, _)| a == PLATFORM)
            .unwrap()
            .2;
        assert_eq!(platform.credits_posted, 1000);
        for (account, _, balance) in ledger.balances() {
            if account.starts_with("sub_merchant_payable:") {
                assert_eq!(
                    balance.debits_posted, balance.credits_posted,
                    "{account} paid out"
                );
            }
        }
    }
}
