//! The ledger service agent (`ledger.post`): double-entry postings with two-phase
//! transfers. `authorize` books a pending transfer, `capture` posts it (up to its amount),
//! `void` voids it, `refund` and `settle` book posted transfers. Debits equal credits,
//! checked after every posting: a broken invariant stops the agent (it must never happen).
//! Postings are idempotent by the task's idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use paygrid_execution_unit::{Agent, AgentCard, Role, SkillSpec, Task, TaskOutcome};
use serde_json::{Value, json};

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
    debit: &'static str,
    credit: &'static str,
    amount_minor: i64,
    currency: String,
    status: &'static str,
}

const RECEIVABLE: &str = "gateway_receivable";
const PAYABLE: &str = "merchant_payable";
const CASH: &str = "settlement_cash";

#[derive(Default)]
pub struct Ledger {
    balances: BTreeMap<(&'static str, String), Balance>,
    /// Pending transfer per payment.
    transfers: HashMap<String, Transfer>,
    /// Idempotency key → the answer given.
    answers: HashMap<String, Value>,
}

impl Ledger {
    fn balance(&mut self, account: &'static str, currency: &str) -> &mut Balance {
        self.balances
            .entry((account, currency.to_owned()))
            .or_default()
    }

    fn book(
        &mut self,
        debit: &'static str,
        credit: &'static str,
        amount: i64,
        currency: &str,
        pending: bool,
    ) {
        if pending {
            self.balance(debit, currency).debits_pending += amount;
            self.balance(credit, currency).credits_pending += amount;
        } else {
            self.balance(debit, currency).debits_posted += amount;
            self.balance(credit, currency).credits_posted += amount;
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
        let payment = string(request, "payment_id")?.to_owned();
        let answer = match event {
            "authorize" => self.authorize(&payment, request)?,
            "capture" | "void" => self.settle_pending(&payment, event == "capture", request)?,
            "refund" | "settle" => {
                let (amount, currency) = (amount(request)?, string(request, "currency")?);
                let (debit, credit) = if event == "refund" {
                    (PAYABLE, RECEIVABLE)
                } else {
                    (CASH, RECEIVABLE)
                };
                self.book(debit, credit, amount, currency, false);
                json!({"payment_id": payment, "status": "posted", "amount_minor": amount})
            }
            other => {
                return Err(format!(
                    "unknown event `{other}`: use authorize, capture, void, refund or settle"
                ));
            }
        };
        assert!(
            self.is_balanced(),
            "ledger out of balance after {event} of {payment}"
        );
        Ok(answer)
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
                debit: RECEIVABLE,
                credit: PAYABLE,
                amount_minor: amount,
                currency,
                status: "pending",
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
            amount
        } else {
            0
        };
        // Release the pending amounts, then post what was captured.
        let (debit, credit, currency) = (transfer.debit, transfer.credit, &transfer.currency);
        self.book(debit, credit, -transfer.amount_minor, currency, true);
        if posted > 0 {
            self.book(debit, credit, posted, currency, false);
        }
        let status = if capture { "posted" } else { "voided" };
        if let Some(t) = self.transfers.get_mut(payment) {
            t.status = status;
        }
        Ok(json!({"payment_id": payment, "status": status, "amount_minor": posted}))
    }

    pub fn balances(&self) -> Vec<(String, String, Balance)> {
        self.balances
            .iter()
            .map(|((a, c), b)| ((*a).to_owned(), c.clone(), *b))
            .collect()
    }
}

pub struct LedgerAgent {
    ledger: Mutex<Ledger>,
    journal: Option<crate::journal::Journal>,
}

impl LedgerAgent {
    /// A ledger kept in memory only.
    pub fn new() -> Self {
        Self {
            ledger: Mutex::new(Ledger::default()),
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
            ledger: Mutex::new(Ledger::replay(&entries)),
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

#[async_trait::async_trait]
impl Agent for LedgerAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "ledger".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "ledger.post".into(),
                description: "Book a double-entry posting: authorize (pending), capture (post), void, refund, settle".into(),
                input_schema: json!({"type": "object", "required": ["event", "payment_id"], "properties": {"event": {"type": "string", "enum": ["authorize", "capture", "void", "refund", "settle"]}, "payment_id": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}}}),
                output_schema: json!({"type": "object", "properties": {"payment_id": {"type": "string"}, "status": {"type": "string"}, "amount_minor": {"type": "integer"}}}),
            }],
            max_concurrency: 256,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(answer) = ledger.answers.get(&task.idempotency_key) {
            return TaskOutcome::Succeeded(answer.clone());
        }
        match ledger.post(&task.input) {
            Ok(answer) => {
                if let Some(journal) = &self.journal {
                    let entry =
                        json!({"key": task.idempotency_key, "request": task.input}).to_string();
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
}
