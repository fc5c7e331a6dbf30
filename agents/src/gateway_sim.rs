//! A payment gateway simulator: a small Stripe-like HTTP API (authorize, capture, void,
//! refund, payout) with real idempotency semantics and injected faults.
//!
//! Idempotency (`Idempotency-Key` header, required on every POST):
//! same key and body → the stored response (header `idempotent-replayed: true`);
//! same key, other body → 422 `idempotency_key_reused`; a key whose first request is
//! still running → 409 `idempotency_conflict`. `GET /v1/idempotency/KEY` looks a key up
//! (a payment sync): 200 with the stored `status` and `body`, 409 while in progress, or
//! 404 when no request was made with it, and then the key is fenced (a late request with
//! it gets 409 `idempotency_key_fenced`), so "not taken" stays true. Request
//! fingerprints are SHA-256 over a canonical form, stable across releases and restarts.
//!
//! Test card tokens: `tok_decline` is declined at authorize (402 `card_declined`);
//! `tok_capture_decline` authorizes but its capture is refused (402 `capture_declined`).
//!
//! Faults (`PUT /v1/admin/faults`): `latency_ms`, `capture_latency_ms`, `fail_next`
//! (503 before the effect), `fail_after_next` (500 after the effect was applied and
//! stored), `fail_rate` (503 before the effect, at random), `slow_rate` with
//! `slow_latency_min_ms`..`slow_latency_max_ms` (a share of requests is slow).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use paygrid_telemetry::semconv;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The gateway's name, e.g. `alpha`.
    pub name: String,
    /// Journal file for payments and idempotency records; `None` keeps them in memory.
    pub journal: Option<std::path::PathBuf>,
    /// Fee per transaction in basis points, reported on every payment.
    pub cost_bps: u32,
    pub faults: Faults,
}

/// Injected faults; replace them at run time with `PUT /v1/admin/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub latency_ms: u64,
    pub capture_latency_ms: u64,
    pub fail_next: u32,
    pub fail_after_next: u32,
    pub fail_rate: f64,
    pub slow_rate: f64,
    pub slow_latency_min_ms: u64,
    pub slow_latency_max_ms: u64,
}

/// Counters for tests and operators (`GET /v1/stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub authorizations: u64,
    pub declines: u64,
    pub captures: u64,
    pub voids: u64,
    pub refunds: u64,
    pub payouts: u64,
    pub replays: u64,
    pub conflicts: u64,
    pub injected_failures: u64,
    pub requests_in_flight: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Payment {
    authorization_id: String,
    amount_minor: i64,
    currency: String,
    status: &'static str,
    captured_minor: i64,
    refunded_minor: i64,
    capture_ids: Vec<String>,
    card_token: String,
}

enum Entry {
    InFlight {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: StatusCode,
        body: Value,
    },
    /// Looked up before any request used it: it never will.
    Fenced,
}

struct Inner {
    payments: HashMap<String, Payment>,
    captures: HashMap<String, String>,
    idempotency: HashMap<String, Entry>,
    faults: Faults,
    stats: Stats,
    next_id: u64,
}

struct Sim {
    name: String,
    cost_bps: u32,
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    journal: Option<crate::journal::Journal>,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes an in-flight idempotency record if the request is dropped half-way (the
/// client went away), so a retry with the same key is not stuck on a conflict.
struct InFlightGuard<'a> {
    sim: &'a Sim,
    key: String,
    armed: bool,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.sim.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.armed {
            let mut inner = self.sim.lock();
            if matches!(
                inner.idempotency.get(&self.key),
                Some(Entry::InFlight { .. })
            ) {
                inner.idempotency.remove(&self.key);
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({"error": code, "message": message.into()}))
}

fn respond(status: StatusCode, body: Value, replayed: bool) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Effect {
    Authorize,
    Capture,
    Void,
    Refund,
    Payout,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
            Self::Payout => "payout",
        }
    }
}

/// One effect request in a server span (when spans are exported), a child of the
/// caller's `traceparent`.
async fn effect(
    sim: Arc<Sim>,
    effect: Effect,
    target: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !paygrid_telemetry::otel::exporting() {
        return detached(apply_effect(sim, effect, target, headers, body)).await;
    }
    let span = tracing::info_span!(
        target: "paygrid::gateway_sim",
        "effect",
        otel.name = format!("gateway-sim {}", effect.as_str()),
        otel.kind = "server",
    );
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    paygrid_telemetry::context::set_parent(&span, &header("traceparent"), &header("tracestate"));
    span.set_attribute(semconv::GATEWAY, sim.name.clone());
    span.set_attribute(semconv::HTTP_METHOD, "POST");
    let response =
        detached(apply_effect(sim, effect, target, headers, body).instrument(span.clone())).await;
    let status = response.status();
    span.set_attribute(semconv::HTTP_STATUS, i64::from(status.as_u16()));
    span.set_attribute(
        "paygrid.idempotent_replay",
        response.headers().contains_key("idempotent-replayed"),
    );
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(format!(
            "answered {}",
            status.as_u16()
        )));
    }
    response
}

/// Runs a request to its end even when the client goes away, as a real gateway does:
/// a client that timed out or crashed does not undo an effect under way, and a retry
/// with the same key meets it (in progress, then its stored answer).
async fn detached(
    request: impl std::future::Future<Output = Response> + Send + 'static,
) -> Response {
    match tokio::spawn(request).await {
        Ok(response) => response,
        Err(error) => {
            let (status, body) = error_body(&error);
            respond(status, body, false)
        }
    }
}

fn error_body(join: &tokio::task::JoinError) -> (StatusCode, Value) {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("request handler stopped: {join}"),
    )
}

async fn apply_effect(
    sim: Arc<Sim>,
    effect: Effect,
    target: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        let (status, body) = error(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "send an Idempotency-Key header",
        );
        return respond(status, body, false);
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            let (status, body) = error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string());
            return respond(status, body, false);
        }
    };
    let fingerprint = fingerprint(effect, target.as_deref(), &request);
    let latency = {
        let mut inner = sim.lock();
        match inner.idempotency.get(&key) {
            Some(
                Entry::InFlight {
                    fingerprint: stored,
                }
                | Entry::Done {
                    fingerprint: stored,
                    ..
                },
            ) if *stored != fingerprint => {
                let (status, body) = error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this key was used with a different request",
                );
                return respond(status, body, false);
            }
            Some(Entry::InFlight { .. }) => {
                inner.stats.conflicts += 1;
                let (status, body) = error(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "a request with this key is in progress",
                );
                return respond(status, body, false);
            }
            Some(Entry::Done { status, body, .. }) => {
                let (status, body) = (*status, body.clone());
                inner.stats.replays += 1;
                return respond(status, body, true);
            }
            Some(Entry::Fenced) => {
                let (status, body) = error(
                    StatusCode::CONFLICT,
                    "idempotency_key_fenced",
                    "this key was looked up before any request used it; use a new key",
                );
                return respond(status, body, false);
            }
            None => {}
        }
        inner.idempotency.insert(
            key.clone(),
            Entry::InFlight {
                fingerprint: fingerprint.clone(),
            },
        );
        let faults = &inner.faults;
        let slow = if faults.slow_rate > 0.0 && fastrand::f64() < faults.slow_rate {
            fastrand::u64(
                faults.slow_latency_min_ms
                    ..=faults.slow_latency_max_ms.max(faults.slow_latency_min_ms),
            )
        } else {
            0
        };
        slow + match effect {
            Effect::Capture => faults.latency_ms + faults.capture_latency_ms,
            _ => faults.latency_ms,
        }
    };
    sim.in_flight.fetch_add(1, Ordering::SeqCst);
    let mut guard = InFlightGuard {
        sim: &sim,
        key: key.clone(),
        armed: true,
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut inner = sim.lock();
    let fail_before = inner.faults.fail_next > 0
        || (inner.faults.fail_rate > 0.0 && fastrand::f64() < inner.faults.fail_rate);
    if fail_before {
        inner.faults.fail_next = inner.faults.fail_next.saturating_sub(1);
        inner.stats.injected_failures += 1;
        inner.idempotency.remove(&key);
        guard.armed = false;
        drop(inner);
        tracing::info!(fault = "fail_before", "injected failure before the effect");
        let (status, body) = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "injected failure before the effect",
        );
        return respond(status, body, false);
    }
    let (status, body) = apply(&sim, &mut inner, effect, target.as_deref(), &request);
    if let Some(journal) = &sim.journal {
        let entry =
            json!({"key": key, "effect": effect, "target": target, "request": request}).to_string();
        if let Err(error) = tokio::task::block_in_place(|| journal.append(&entry)) {
            // Memory is ahead of disk: answer that the outcome is unknown, and stop
            // serving (`serve` returns the error); the restart replays the journal.
            tracing::error!(%error, "gateway journal write failed; stopping");
            let (status, body) = error_body_journal();
            return respond(status, body, false);
        }
    }
    inner.idempotency.insert(
        key,
        Entry::Done {
            fingerprint,
            status,
            body: body.clone(),
        },
    );
    guard.armed = false;
    if inner.faults.fail_after_next > 0 {
        inner.faults.fail_after_next -= 1;
        inner.stats.injected_failures += 1;
        tracing::info!(fault = "fail_after", "injected failure after the effect");
        let (status, body) = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "injected failure after the effect",
        );
        return respond(status, body, false);
    }
    respond(status, body, false)
}

/// SHA-256 over a canonical form of the request (effect, target, JSON with sorted
/// keys): fixed by its definition, so a stored fingerprint means the same after an
/// upgrade or a restart.
fn fingerprint(effect: Effect, target: Option<&str>, request: &Value) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(effect.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(target.unwrap_or("").as_bytes());
    hasher.update([0]);
    // serde_json's maps are sorted by key: `to_string` is canonical.
    hasher.update(request.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /v1/idempotency/KEY`: the stored answer of the request made with a key, 409
/// while it runs, or 404 (and the key fenced, durably) when none was made.
fn lookup(sim: &Sim, key: &str) -> Response {
    let mut inner = sim.lock();
    match inner.idempotency.get(key) {
        Some(Entry::Done { status, body, .. }) => {
            let answer = json!({"key": key, "status": status.as_u16(), "body": body});
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Some(Entry::InFlight { .. }) => {
            let (status, body) = error(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "a request with this key is in progress",
            );
            respond(status, body, false)
        }
        Some(Entry::Fenced) | None => {
            if !matches!(inner.idempotency.get(key), Some(Entry::Fenced)) {
                if let Some(journal) = &sim.journal {
                    let entry = json!({"key": key, "fenced": true}).to_string();
                    if let Err(error) = tokio::task::block_in_place(|| journal.append(&entry)) {
                        tracing::error!(%error, "gateway journal write failed; stopping");
                        let (status, body) = error_body_journal();
                        return respond(status, body, false);
                    }
                }
                inner.idempotency.insert(key.to_owned(), Entry::Fenced);
            }
            let (status, body) = error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no request was made with this key; it is now fenced",
            );
            respond(status, body, false)
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

fn apply(
    sim: &Sim,
    inner: &mut Inner,
    effect: Effect,
    target: Option<&str>,
    request: &Value,
) -> (StatusCode, Value) {
    inner.next_id += 1;
    let serial = inner.next_id;
    let fee = |amount: i64| amount * i64::from(sim.cost_bps) / 10_000;
    match effect {
        Effect::Authorize => {
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
            if token == "tok_decline" {
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
                },
            );
            (
                StatusCode::CREATED,
                json!({"authorization_id": id, "status": "authorized", "amount_minor": amount, "currency": currency, "gateway": sim.name, "fee_minor": fee(amount)}),
            )
        }
        Effect::Capture => {
            let payment = match authorized(&mut inner.payments, target) {
                Ok(payment) => payment,
                Err(answer) => return answer,
            };
            if payment.card_token == "tok_capture_decline" {
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
            let (authorization_id, currency) =
                (payment.authorization_id.clone(), payment.currency.clone());
            inner.captures.insert(id.clone(), authorization_id.clone());
            inner.stats.captures += 1;
            (
                StatusCode::CREATED,
                json!({"capture_id": id, "authorization_id": authorization_id, "amount_minor": amount, "currency": currency, "status": "captured", "gateway": sim.name}),
            )
        }
        Effect::Void => {
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
        Effect::Refund => {
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
            inner.stats.refunds += 1;
            (
                StatusCode::CREATED,
                json!({"refund_id": format!("re_{}_{serial}", sim.name), "capture_id": target, "amount_minor": amount, "status": "refunded", "gateway": sim.name}),
            )
        }
        Effect::Payout => {
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
            inner.stats.payouts += 1;
            (
                StatusCode::CREATED,
                json!({"payout_id": format!("po_{}_{serial}", sim.name), "destination": destination, "amount_minor": amount, "status": "sent", "gateway": sim.name}),
            )
        }
    }
}

/// The simulator's HTTP routes.
fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(
            "/v1/authorizations",
            post(|State(s): State<Arc<Sim>>, h: HeaderMap, b: Bytes| {
                effect(s, Effect::Authorize, None, h, b)
            }),
        )
        .route(
            "/v1/authorizations/{id}/capture",
            post(
                |State(s): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap, b: Bytes| {
                    effect(s, Effect::Capture, Some(id), h, b)
                },
            ),
        )
        .route(
            "/v1/authorizations/{id}/void",
            post(
                |State(s): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap, b: Bytes| {
                    effect(s, Effect::Void, Some(id), h, b)
                },
            ),
        )
        .route(
            "/v1/captures/{id}/refunds",
            post(
                |State(s): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap, b: Bytes| {
                    effect(s, Effect::Refund, Some(id), h, b)
                },
            ),
        )
        .route(
            "/v1/payouts",
            post(|State(s): State<Arc<Sim>>, h: HeaderMap, b: Bytes| {
                effect(s, Effect::Payout, None, h, b)
            }),
        )
        .route(
            "/v1/idempotency/{key}",
            get(|State(s): State<Arc<Sim>>, Path(key): Path<String>| async move { lookup(&s, &key) }),
        )
        .route(
            "/v1/payments",
            get(|State(s): State<Arc<Sim>>| async move {
                let mut payments: Vec<Payment> = s.lock().payments.values().cloned().collect();
                payments.sort_by(|a, b| a.authorization_id.cmp(&b.authorization_id));
                axum::Json(json!({"payments": payments}))
            }),
        )
        .route(
            "/v1/payments/{id}",
            get(
                |State(s): State<Arc<Sim>>, Path(id): Path<String>| async move {
                    match s.lock().payments.get(&id) {
                        Some(p) => (StatusCode::OK, axum::Json(json!(p))).into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"error": "not_found"})),
                        )
                            .into_response(),
                    }
                },
            ),
        )
        .route(
            "/v1/stats",
            get(|State(s): State<Arc<Sim>>| async move {
                let mut stats = s.lock().stats.clone();
                stats.requests_in_flight = s.in_flight.load(Ordering::SeqCst);
                axum::Json(stats)
            }),
        )
        .route(
            "/v1/admin/faults",
            put(
                |State(s): State<Arc<Sim>>, axum::Json(faults): axum::Json<Faults>| async move {
                    s.lock().faults = faults.clone();
                    axum::Json(faults)
                },
            ),
        )
        .route(
            "/healthz",
            get(|State(s): State<Arc<Sim>>| async move {
                axum::Json(json!({"gateway": s.name, "cost_bps": s.cost_bps}))
            }),
        )
        .with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` resolves.
/// Why the simulator stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A journal write failed: memory is ahead of disk; restart to replay the journal.
    #[error("the gateway's journal failed: memory is ahead of disk; restart to replay it")]
    JournalFailed,
}

pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (journal, entries) = match &config.journal {
        Some(path) => {
            let (journal, entries) =
                crate::journal::Journal::open(path).map_err(std::io::Error::other)?;
            (Some(journal), entries)
        }
        None => (None, Vec::new()),
    };
    let sim = Arc::new(Sim {
        name: config.name,
        cost_bps: config.cost_bps,
        inner: Mutex::new(Inner {
            payments: HashMap::new(),
            captures: HashMap::new(),
            idempotency: HashMap::new(),
            faults: config.faults,
            stats: Stats::default(),
            next_id: 0,
        }),
        in_flight: AtomicU64::new(0),
        journal,
    });
    replay(&sim, &entries);
    let broken = sim.journal.as_ref().map(crate::journal::Journal::broken);
    let stop = {
        let broken = broken.clone();
        async move {
            match broken {
                Some(broken) => tokio::select! {
                    () = shutdown => {}
                    () = broken.cancelled() => {}
                },
                None => shutdown.await,
            }
        }
    };
    {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router(sim))
    }
    .with_graceful_shutdown(stop)
    .await?;
    match broken {
        Some(broken) if broken.is_cancelled() => Err(ServeError::JournalFailed),
        _ => Ok(()),
    }
}

/// The answer when the journal failed after the effect was applied in memory: a 500, so
/// the caller treats the outcome as unknown and settles it after the restart.
fn error_body_journal() -> (StatusCode, Value) {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "journal_failed",
        "the gateway could not record the request; its outcome is unknown",
    )
}

/// Re-applies every journaled request in order: the same ids, payments and stored
/// responses as before the restart.
fn replay(sim: &Sim, entries: &[String]) {
    let mut inner = sim.lock();
    for entry in entries {
        let Ok(entry) = serde_json::from_str::<Value>(entry) else {
            continue;
        };
        let key = entry["key"].as_str().unwrap_or_default().to_owned();
        if entry["fenced"] == true {
            inner.idempotency.insert(key, Entry::Fenced);
            continue;
        }
        let Ok(effect) = serde_json::from_value::<Effect>(entry["effect"].clone()) else {
            continue;
        };
        let target = entry["target"].as_str().map(str::to_owned);
        let fingerprint = fingerprint(effect, target.as_deref(), &entry["request"]);
        let (status, body) = apply(
            sim,
            &mut inner,
            effect,
            target.as_deref(),
            &entry["request"],
        );
        inner.idempotency.insert(
            key,
            Entry::Done {
                fingerprint,
                status,
                body,
            },
        );
    }
}
