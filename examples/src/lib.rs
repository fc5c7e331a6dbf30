//! Example workflow specs (also in `examples/specs/`), a custom agent
//! (`cargo run -p paygrid-examples --bin custom_agent`) and an operator client
//! (`cargo run -p paygrid-examples --bin operator_client`).

/// Risk → authorize → checkpoint → capture and ledger in parallel → receipt.
pub const CARD_PAYMENT: &str = include_str!("../specs/card-payment.yaml");
/// Refund a capture, book it, notify.
pub const REFUND: &str = include_str!("../specs/refund.yaml");
/// One charge, three payouts in parallel, a checkpoint, settlement.
pub const MARKETPLACE_SPLIT: &str = include_str!("../specs/marketplace-split.yaml");
