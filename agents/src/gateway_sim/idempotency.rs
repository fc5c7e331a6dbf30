//! Idempotency keys: one record per key (in progress, done with its stored answer, or
//! fenced by a lookup), request fingerprints, and the lookup by key.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::payments::Effect;
use super::{Sim, error, error_body_journal, respond};

pub(super) enum Entry {
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

/// What a key's record says about a new request with it: go ahead (the key is now in
/// progress), or answer at once (a replay, a conflict, a reuse, a fenced key).
pub(super) fn begin(sim: &Sim, key: &str, fingerprint: &str) -> Result<(), Box<Response>> {
    let mut inner = sim.lock();
    match inner.idempotency.get(key) {
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
            return Err(Box::new(respond(status, body, false)));
        }
        Some(Entry::InFlight { .. }) => {
            inner.stats.conflicts += 1;
            let (status, body) = error(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "a request with this key is in progress",
            );
            return Err(Box::new(respond(status, body, false)));
        }
        Some(Entry::Done { status, body, .. }) => {
            let (status, body) = (*status, body.clone());
            inner.stats.replays += 1;
            return Err(Box::new(respond(status, body, true)));
        }
        Some(Entry::Fenced) => {
            let (status, body) = error(
                StatusCode::CONFLICT,
                "idempotency_key_fenced",
                "this key was looked up before any request used it; use a new key",
            );
            return Err(Box::new(respond(status, body, false)));
        }
        None => {}
    }
    inner.idempotency.insert(
        key.to_owned(),
        Entry::InFlight {
            fingerprint: fingerprint.to_owned(),
        },
    );
    Ok(())
}

/// Removes an in-flight idempotency record if the request is dropped half-way (the
/// client went away), so a retry with the same key is not stuck on a conflict.
pub(super) struct InFlightGuard<'a> {
    pub(super) sim: &'a Sim,
    pub(super) key: String,
    pub(super) armed: bool,
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

/// SHA-256 over a canonical form of the request (effect, target, JSON with sorted
/// keys): fixed by its definition, so a stored fingerprint means the same after an
/// upgrade or a restart.
pub(super) fn fingerprint(effect: Effect, target: Option<&str>, request: &Value) -> String {
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
pub(super) fn lookup(sim: &Sim, key: &str) -> Response {
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
