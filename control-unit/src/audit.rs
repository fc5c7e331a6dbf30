//! The audit log: every state-changing operator action (submit, cancel, approve, a
//! limits change, a tool call), who took it (the authenticated caller), when, from where,
//! and what came of it.
//!
//! A record is written in the same group commit as the action it records (the actor
//! takes both in one input, [`crate::runtime::Input::Audited`]), so an action is never
//! durable without its record, and the caller hears back only once both are.
//!
//! The caller is the one the access layer authenticated for the gRPC call being served
//! ([`scope`]): the services need not pass it down to every function that acts.

use std::future::Future;

use paygrid_security::policy::{Caller, Proof};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned when stored: increasing, the order records were written in.
    pub sequence: u64,
    pub at_ms: u64,
    /// Who: the certificate's common name or the token's subject.
    pub actor: String,
    /// How they proved it: `certificate`, `token`, or `none` (`--insecure`).
    pub proof: String,
    pub role: String,
    /// The address the call came from.
    pub origin: String,
    /// `submit`, `cancel`, `approve`, `set_limits`, `call_tool`.
    pub action: String,
    /// The workflow (or what else the action was on).
    pub target: String,
    /// What was asked: spec, reason, decision, ... (never card data: only names).
    pub detail: String,
    /// `ok`, `existing` (an idempotent repeat), or the refusal's message.
    pub outcome: String,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `call` with `caller` as the caller its audit records name.
pub fn scope<F: Future>(caller: Caller, call: F) -> impl Future<Output = F::Output> {
    CALLER.scope(caller, call)
}

/// A record of `action` on `target`, by the caller of the call being served (or the
/// control unit itself, for actions nobody called).
pub fn record(action: &str, target: impl Into<String>, detail: impl Into<String>) -> AuditRecord {
    let mut record = AuditRecord {
        at_ms: crate::runtime::now_ms(),
        actor: "control-unit".into(),
        proof: "internal".into(),
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
        ..AuditRecord::default()
    };
    let _ = CALLER.try_with(|caller| {
        record.actor = caller.name.to_string();
        record.proof = match caller.proof {
            Proof::Certificate => "certificate",
            Proof::Token => "token",
            Proof::None => "none",
        }
        .into();
        record.role = caller.role.map(|r| r.name().to_owned()).unwrap_or_default();
        record.origin = caller.from.map(|a| a.to_string()).unwrap_or_default();
        if let Some(member) = &caller.via {
            // Forwarded by another cluster member, which authenticated the caller.
            record.origin = format!("{} via {member}", record.origin)
                .trim_start()
                .to_owned();
        }
    });
    record
}

/// The caller of the call being served (`None` outside a call, or on unchecked paths).
pub fn caller() -> Option<Caller> {
    CALLER.try_with(Caller::clone).ok()
}

/// The name the caller of the call being served proved (certificate or token); `None`
/// without authentication (`--insecure`) or outside a call.
pub fn authenticated_name() -> Option<String> {
    CALLER
        .try_with(|caller| (caller.proof != Proof::None).then(|| caller.name.to_string()))
        .ok()
        .flatten()
}

/// Which records to list: newest first, filtered.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Only records older than this sequence (paging).
    pub before: Option<u64>,
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == record.actor)
            && self.action.as_ref().is_none_or(|a| *a == record.action)
            && self.target.as_ref().is_none_or(|t| *t == record.target)
            && self.before.is_none_or(|b| record.sequence < b)
    }
}

/// Records kept in memory when the control unit has no store: the newest 10,000.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: std::collections::VecDeque<AuditRecord>,
    next: u64,
}

impl MemoryLog {
    const KEPT: usize = 10_000;

    pub fn push(&mut self, mut record: AuditRecord) {
        self.next += 1;
        record.sequence = self.next;
        if self.records.len() == Self::KEPT {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    pub fn list(&self, query: &AuditQuery) -> Vec<AuditRecord> {
        self.records
            .iter()
            .rev()
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect()
    }
}
