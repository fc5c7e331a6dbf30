//! The agents Paygrid ships, and the gateway simulator they talk to.
//!
//! - [`gateway`]: the gateway worker agent (authorize, capture, void, refund, payout).
//! - [`risk`]: the risk agent (`risk.score`).
//! - [`ledger`]: the double-entry ledger service agent (`ledger.post`, `ledger.payout_plan`).
//! - [`reconcile`]: the reconciliation service agent (`reconcile.gateway`).
//! - [`service`]: checkpoint verification, receipts, and the benchmark sleep agent.
//! - [`precise`]: a sleep without tokio's 1 ms rounding, for the benchmark agent.
//! - [`telemetry`]: the support agent relaying health to the control unit.
//! - [`gateway_sim`]: a Stripe-like HTTP gateway with idempotency keys and faults.
//! - [`journal`]: the append-only file the ledger and the simulator keep money state in.

pub mod dates;
pub mod gateway;
pub mod gateway_sim;
pub mod journal;
pub mod ledger;
pub mod precise;
pub mod reconcile;
pub mod remediation;
pub mod risk;
pub mod service;
pub mod telemetry;
