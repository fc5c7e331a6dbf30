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
//! `tok_capture_decline` authorizes but its capture is refused (402 `capture_declined`);
//! `tok_decline_N` and `tok_capture_decline_N` behave the same (a distinct card each).
//!
//! Settlement (see `settlement`): captures, refunds and payouts wait in the open batch;
//! `POST /v1/settlement-batches` closes it, `GET /v1/settlement-batches` lists them and
//! `GET /v1/settlement-batches/{id}/report.csv` serves a report; `POST
//! /v1/admin/mismatches` plants a mismatch in the next one. `POST /v1/payout-batches`
//! pays several destinations at once.
//!
//! Faults (`PUT /v1/admin/faults`): `latency_ms`, `capture_latency_ms`, `fail_next`
//! (503 before the effect), `fail_after_next` (500 after the effect was applied and
//! stored), `fail_rate` (503 before the effect, at random), `slow_rate` with
//! `slow_latency_min_ms`..`slow_latency_max_ms` (a share of requests is slow),
//! `latency_per_in_flight_ms` (each request takes longer the more are in flight).

mod idempotency;
mod payments;
mod settlement;

pub use settlement::{Plant, Row, RowType, parse_report};

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

use payments::Effect;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The gateway's name, e.g. `alpha`.
    pub name: String,
    /// Journal file for payments and idempotency records; `None` keeps them in memory.
    pub journal: Option<std::path::PathBuf>,
    /// Fee per transaction in basis points, reported on every payment.
    pub cost_bps: u32,
    /// A fixed fee per settlement batch and currency (a `fee` row), in minor units.
    pub batch_fee_minor: i64,
    pub faults: Faults,
    /// Serve HTTPS with this configuration (client certificates required), or plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
    /// Added per request already in flight: a gateway that slows down under load, as
    /// real ones do (a queue in front of a fixed capacity).
    pub latency_per_in_flight_ms: u64,
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

struct Inner {
    payments: HashMap<String, payments::Payment>,
    captures: HashMap<String, String>,
    idempotency: HashMap<String, idempotency::Entry>,
    settlement: settlement::Settlement,
    faults: Faults,
    stats: Stats,
    next_id: u64,
}

struct Sim {
    name: String,
    cost_bps: u32,
    batch_fee_minor: i64,
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

/// One effect request: its key and body checked, its idempotency record opened, then
/// the effect taken after the configured latency.
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
    let fingerprint = idempotency::fingerprint(effect, target.as_deref(), &request);
    if let Err(answer) = idempotency::begin(&sim, &key, &fingerprint) {
        return *answer;
    }
    let busy = sim.in_flight.fetch_add(1, Ordering::SeqCst);
    let latency = {
        let faults = &sim.lock().faults;
        latency(faults, effect) + busy * faults.latency_per_in_flight_ms
    };
    let mut guard = idempotency::InFlightGuard {
        sim: &sim,
        key: key.clone(),
        armed: true,
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let request = Request {
        key,
        fingerprint,
        effect,
        target,
        body: request,
    };
    take_effect(&sim, request, &mut guard)
}

/// An effect request whose key is in progress.
struct Request {
    key: String,
    fingerprint: String,
    effect: Effect,
    target: Option<String>,
    body: Value,
}

/// Takes the effect, journals it, stores the answer under the key, and answers; or
/// fails before or after it, as the injected faults say.
fn take_effect(
    sim: &Sim,
    request: Request,
    guard: &mut idempotency::InFlightGuard<'_>,
) -> Response {
    let Request {
        key,
        fingerprint,
        effect,
        target,
        body: request,
    } = request;
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
    let (status, body) = payments::apply(sim, &mut inner, effect, target.as_deref(), &request);
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
        idempotency::Entry::Done {
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

/// How long this request takes: the configured latency, and a slow one for a share.
fn latency(faults: &Faults, effect: Effect) -> u64 {
    let slow = if faults.slow_rate > 0.0 && fastrand::f64() < faults.slow_rate {
        fastrand::u64(
            faults.slow_latency_min_ms..=faults.slow_latency_max_ms.max(faults.slow_latency_min_ms),
        )
    } else {
        0
    };
    slow + match effect {
        Effect::Capture => faults.latency_ms + faults.capture_latency_ms,
        _ => faults.latency_ms,
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
            "/v1/payout-batches",
            post(|State(s): State<Arc<Sim>>, h: HeaderMap, b: Bytes| {
                effect(s, Effect::PayoutBatch, None, h, b)
            }),
        )
        .route(
            "/v1/settlement-batches",
            post(|State(s): State<Arc<Sim>>, h: HeaderMap, b: Bytes| {
                effect(s, Effect::CloseBatch, None, h, b)
            })
            .get(|State(s): State<Arc<Sim>>| async move {
                let batches = s.lock().settlement.batches.clone();
                axum::Json(json!({"gateway": s.name, "batches": batches}))
            }),
        )
        .route(
            "/v1/settlement-batches/{id}/report.csv",
            get(
                |State(s): State<Arc<Sim>>, Path(id): Path<String>| async move {
                    let inner = s.lock();
                    match inner.settlement.batch(&id) {
                        Some(batch) => (
                            StatusCode::OK,
                            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                            settlement::csv(batch),
                        )
                            .into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"error": "no_such_batch", "message": format!("no settlement batch `{id}`")})),
                        )
                            .into_response(),
                    }
                },
            ),
        )
        .route(
            "/v1/admin/mismatches",
            post(
                |State(s): State<Arc<Sim>>, axum::Json(body): axum::Json<Value>| async move {
                    plant(&s, &body)
                },
            ),
        )
        .route(
            "/v1/idempotency/{key}",
            get(
                |State(s): State<Arc<Sim>>, Path(key): Path<String>| async move {
                    idempotency::lookup(&s, &key)
                },
            ),
        )
        .route(
            "/v1/payments",
            get(|State(s): State<Arc<Sim>>| async move {
                let mut payments: Vec<payments::Payment> =
                    s.lock().payments.values().cloned().collect();
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
                // Injected faults show here too, as a real acquirer's status page would
                // show an outage: a probe sees what payments see.
                let faults = s.lock().faults.clone();
                let healthy = faults.fail_rate < 0.5 && faults.fail_next == 0;
                let status = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = json!({"gateway": s.name, "cost_bps": s.cost_bps, "healthy": healthy});
                (status, axum::Json(body))
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
        batch_fee_minor: config.batch_fee_minor,
        inner: Mutex::new(Inner {
            payments: HashMap::new(),
            captures: HashMap::new(),
            idempotency: HashMap::new(),
            settlement: settlement::Settlement::default(),
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
    paygrid_security::net::serve_http(listener, config.tls, router(sim), stop).await;
    match broken {
        Some(broken) if broken.is_cancelled() => Err(ServeError::JournalFailed),
        _ => Ok(()),
    }
}

/// `POST /v1/admin/mismatches` `{"kind": ...}`: queues a mismatch for the next batch
/// (journaled, so a replay plants it the same way).
fn plant(sim: &Sim, body: &Value) -> Response {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(plant) = Plant::ALL.into_iter().find(|p| p.as_str() == kind) else {
        let kinds: Vec<&str> = Plant::ALL.iter().map(|p| p.as_str()).collect();
        let (status, body) = error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`kind` must be one of {}", kinds.join(", ")),
        );
        return respond(status, body, false);
    };
    let mut inner = sim.lock();
    if let Some(journal) = &sim.journal {
        let entry = json!({"plant": plant}).to_string();
        if let Err(error) = tokio::task::block_in_place(|| journal.append(&entry)) {
            tracing::error!(%error, "gateway journal write failed; stopping");
            let (status, body) = error_body_journal();
            return respond(status, body, false);
        }
    }
    inner.settlement.plants.push(plant);
    let queued: Vec<&str> = inner.settlement.plants.iter().map(|p| p.as_str()).collect();
    respond(StatusCode::OK, json!({"queued": queued}), false)
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
            inner.idempotency.insert(key, idempotency::Entry::Fenced);
            continue;
        }
        if let Ok(plant) = serde_json::from_value::<Plant>(entry["plant"].clone()) {
            inner.settlement.plants.push(plant);
            continue;
        }
        let Ok(effect) = serde_json::from_value::<Effect>(entry["effect"].clone()) else {
            continue;
        };
        let target = entry["target"].as_str().map(str::to_owned);
        let fingerprint = idempotency::fingerprint(effect, target.as_deref(), &entry["request"]);
        let (status, body) = payments::apply(
            sim,
            &mut inner,
            effect,
            target.as_deref(),
            &entry["request"],
        );
        inner.idempotency.insert(
            key,
            idempotency::Entry::Done {
                fingerprint,
                status,
                body,
            },
        );
    }
}
