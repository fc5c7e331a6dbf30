//! The payment state machine: authorizations, captures, voids, refunds and payouts,
//! with the test cards' behaviour. Money is integer minor units.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::settlement::{Entry, RowType};
use super::{Inner, Sim, error};
use crate::dates::Day;

#[derive(Debug, Clone, Serialize)]
pub(super) struct Payment {
    pub(super) authorization_id: String,
    amount_minor: i64,
    currency: String,
    status: &'static str,
    captured_minor: i64,
    refunded_minor: i64,
    capture_ids: Vec<String>,
    card_token: String,
    /// The merchant's reference (e.g. its payment id), carried into the settlement report.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Effect {
    Authorize,
    Capture,
    Void,
    Refund,
    Payout,
    /// Several payouts in one request (a PayFac's sub-merchant payouts of a batch).
    PayoutBatch,
    /// Closes the open settlement batch.
    CloseBatch,
}

impl Effect {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
            Self::Payout => "payout",
            Self::PayoutBatch => "payout_batch",
            Self::CloseBatch => "close_batch",
        }
    }
}

/// The authorization `target` names, if it can still be captured or voided.
fn authorized<'a>(
    payments: &'a mut HashMap<String, Payment>,
    target: Option<&str>,
) -> Result<&'a mut Payment, (StatusCode, Value)> {
    let Some(payment) = target.and_then(|id| payments.get_mut(id)) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no_such_authorization",
            format!("{target:?} not found"),
        ));
    };
    if payment.status != "authorized" {
        return Err(error(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("authorization is {}", payment.status),
        ));
    }
    Ok(payment)
}

fn amount(request: &Value) -> Option<i64> {
    request
        .get("amount_minor")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
}

/// Applies one effect to the payments; the answer is what the gateway replies.
pub(super) fn apply(
    sim: &Sim,
    inner: &mut Inner,
    effect: Effect,
    target: Option<&str>,
    request: &Value,
) -> (StatusCode, Value) {
    inner.next_id += 1;
    let serial = inner.next_id;
    match effect {
        Effect::Authorize => authorize(sim, inner, serial, request),
        Effect::Capture => capture(sim, inner, serial, target, request),
        Effect::Void => void(sim, inner, target),
        Effect::Refund => refund(sim, inner, serial, target, request),
        Effect::Payout => payout(sim, inner, serial, request),
        Effect::PayoutBatch => payout_batch(sim, inner, serial, request),
        Effect::CloseBatch => close_batch(sim, inner, request),
    }
}

fn authorize(sim: &Sim, inner: &mut Inner, serial: u64, request: &Value) -> (StatusCode, Value) {
    let fee = |amount: i64| amount * i64::from(sim.cost_bps) / 10_000;
    let (Some(amount), Some(currency), Some(token)) = (
        amount(request),
        request.get("currency").and_then(Value::as_str),
        request.get("card_token").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "amount_minor (> 0), currency and card_token are required",
        );
    };
    if is_test_token(token, "tok_decline") {
        inner.stats.declines += 1;
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            "the issuer declined the card",
        );
    }
    let id = format!("auth_{}_{serial}", sim.name);
    inner.stats.authorizations += 1;
    inner.payments.insert(
        id.clone(),
        Payment {
            authorization_id: id.clone(),
            amount_minor: amount,
            currency: currency.to_owned(),
            status: "authorized",
            captured_minor: 0,
            refunded_minor: 0,
            capture_ids: Vec::new(),
            card_token: token.to_owned(),
            reference: request
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
    );
    (
        StatusCode::CREATED,
        json!({"authorization_id": id, "status": "authorized", "amount_minor": amount, "currency": currency, "gateway": sim.name, "fee_minor": fee(amount)}),
    )
}

fn capture(
    sim: &Sim,
    inner: &mut Inner,
    serial: u64,
    target: Option<&str>,
    request: &Value,
) -> (StatusCode, Value) {
    let payment = match authorized(&mut inner.payments, target) {
        Ok(payment) => payment,
        Err(answer) => return answer,
    };
    if is_test_token(&payment.card_token, "tok_capture_decline") {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "capture_declined",
            "the issuer refused the capture",
        );
    }
    let amount = amount(request).unwrap_or(payment.amount_minor);
    if amount > payment.amount_minor {
        return error(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            "capture exceeds the authorized amount",
        );
    }
    let id = format!("cap_{}_{serial}", sim.name);
    payment.status = "captured";
    payment.captured_minor = amount;
    payment.capture_ids.push(id.clone());
    let (authorization_id, currency) = (payment.authorization_id.clone(), payment.currency.clone());
    let reference = payment
        .reference
        .clone()
        .unwrap_or_else(|| authorization_id.clone());
    inner.settlement.record(Entry {
        row_type: RowType::Settled,
        psp_reference: id.clone(),
        merchant_reference: reference,
        gross: amount,
        currency: currency.clone(),
    });
    inner.captures.insert(id.clone(), authorization_id.clone());
    inner.stats.captures += 1;
    (
        StatusCode::CREATED,
        json!({"capture_id": id, "authorization_id": authorization_id, "amount_minor": amount, "currency": currency, "status": "captured", "gateway": sim.name}),
    )
}

fn void(sim: &Sim, inner: &mut Inner, target: Option<&str>) -> (StatusCode, Value) {
    let payment = match authorized(&mut inner.payments, target) {
        Ok(payment) => payment,
        Err(answer) => return answer,
    };
    payment.status = "voided";
    let id = payment.authorization_id.clone();
    inner.stats.voids += 1;
    (
        StatusCode::OK,
        json!({"authorization_id": id, "status": "voided", "gateway": sim.name}),
    )
}

fn refund(
    sim: &Sim,
    inner: &mut Inner,
    serial: u64,
    target: Option<&str>,
    request: &Value,
) -> (StatusCode, Value) {
    let Some(authorization) = target.and_then(|id| inner.captures.get(id)).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_capture",
            format!("{target:?} not found"),
        );
    };
    let Some(payment) = inner.payments.get_mut(&authorization) else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_capture",
            "capture has no payment",
        );
    };
    let amount = amount(request).unwrap_or(payment.captured_minor - payment.refunded_minor);
    if amount <= 0 || payment.refunded_minor + amount > payment.captured_minor {
        return error(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            "refund exceeds the captured amount",
        );
    }
    payment.refunded_minor += amount;
    if payment.refunded_minor == payment.captured_minor {
        payment.status = "refunded";
    }
    let refund_id = format!("re_{}_{serial}", sim.name);
    let entry = Entry {
        row_type: RowType::Refunded,
        psp_reference: refund_id.clone(),
        merchant_reference: payment
            .reference
            .clone()
            .unwrap_or_else(|| payment.authorization_id.clone()),
        gross: -amount,
        currency: payment.currency.clone(),
    };
    inner.settlement.record(entry);
    inner.stats.refunds += 1;
    (
        StatusCode::CREATED,
        json!({"refund_id": refund_id, "capture_id": target, "amount_minor": amount, "status": "refunded", "gateway": sim.name}),
    )
}

fn payout(sim: &Sim, inner: &mut Inner, serial: u64, request: &Value) -> (StatusCode, Value) {
    let (Some(amount), Some(destination)) = (
        amount(request),
        request.get("destination").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "amount_minor (> 0) and destination are required",
        );
    };
    let currency = request
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("EUR");
    let payout_id = format!("po_{}_{serial}", sim.name);
    let reference = request
        .get("reference")
        .and_then(Value::as_str)
        .unwrap_or(destination);
    inner.settlement.record(Entry {
        row_type: RowType::Payout,
        psp_reference: payout_id.clone(),
        merchant_reference: reference.to_owned(),
        gross: -amount,
        currency: currency.to_owned(),
    });
    inner.stats.payouts += 1;
    (
        StatusCode::CREATED,
        json!({"payout_id": payout_id, "destination": destination, "amount_minor": amount, "currency": currency, "status": "sent", "gateway": sim.name}),
    )
}

/// Several payouts at once: `{"reference": BATCH, "items": [{"destination", "amount_minor",
/// "currency"}]}`; all or none (every item is checked first). Each payout's merchant
/// reference in the report is `REFERENCE:DESTINATION`.
fn payout_batch(sim: &Sim, inner: &mut Inner, serial: u64, request: &Value) -> (StatusCode, Value) {
    let (Some(reference), Some(items)) = (
        request.get("reference").and_then(Value::as_str),
        request.get("items").and_then(Value::as_array),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "reference and items are required",
        );
    };
    let mut checked = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let (Some(amount), Some(destination), Some(currency)) = (
            amount(item),
            item.get("destination").and_then(Value::as_str),
            item.get("currency").and_then(Value::as_str),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "items[{index}]: amount_minor (> 0), destination and currency are required"
                ),
            );
        };
        checked.push((amount, destination, currency));
    }
    let mut payouts = Vec::with_capacity(checked.len());
    for (index, (amount, destination, currency)) in checked.into_iter().enumerate() {
        let payout_id = format!("po_{}_{serial}_{index}", sim.name);
        inner.settlement.record(Entry {
            row_type: RowType::Payout,
            psp_reference: payout_id.clone(),
            merchant_reference: format!("{reference}:{destination}"),
            gross: -amount,
            currency: currency.to_owned(),
        });
        inner.stats.payouts += 1;
        payouts.push(json!({"payout_id": payout_id, "destination": destination, "amount_minor": amount, "currency": currency}));
    }
    (
        StatusCode::CREATED,
        json!({"reference": reference, "payouts": payouts, "status": "sent", "gateway": sim.name}),
    )
}

/// Closes the open settlement batch with the given `value_date` (required, so a replay
/// of the journal closes it the same way).
fn close_batch(sim: &Sim, inner: &mut Inner, request: &Value) -> (StatusCode, Value) {
    let value_date = match request
        .get("value_date")
        .and_then(Value::as_str)
        .map(Day::parse)
    {
        Some(Ok(day)) => day,
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, "invalid_request", message),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "value_date (YYYY-MM-DD) is required",
            );
        }
    };
    let batch = inner
        .settlement
        .close(&sim.name, value_date, sim.cost_bps, sim.batch_fee_minor);
    (
        StatusCode::CREATED,
        json!({"batch_id": batch.batch_id, "value_date": batch.value_date, "rows": batch.rows.len(), "planted": batch.planted, "gateway": sim.name}),
    )
}

/// A test card token: `base` itself, or `base_SUFFIX` (one card per payment, e.g.
/// `tok_decline_17`, so that a risk check counting uses per card sees distinct cards).
fn is_test_token(token: &str, base: &str) -> bool {
    token
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}
