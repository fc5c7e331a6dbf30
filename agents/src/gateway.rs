//! The gateway worker agent: `gateway.authorize`, `gateway.capture`, `gateway.void`,
//! `gateway.refund`, `gateway.payout`, `gateway.payout_batch`, `gateway.close_batch`
//! over HTTP, with the task's idempotency key as the
//! `Idempotency-Key` header. A decline is a value from the gateway; it becomes a
//! permanent failure of the task. 429 and 503 (refused before processing) and connection
//! refusals are retryable; timeouts and other 5xx may come after the effect and are
//! `Unknown`; a key still in progress is waited out until the deadline. A settlement
//! lookup asks the gateway what became of the task's key (`GET /v1/idempotency/KEY`).

use std::collections::BTreeMap;
use std::time::Duration;

use backon::BackoffBuilder;
use backon::ExponentialBuilder;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::Status;
use paygrid_execution_unit::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
use paygrid_security::Connector;
use paygrid_telemetry::semconv;
use serde_json::{Value, json};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// One gateway, one agent.
pub struct GatewayAgent {
    name: String,
    base_url: String,
    cost_bps: u32,
    max_concurrency: u32,
    request_timeout: Duration,
    client: Client<Connector, Full<Bytes>>,
}

impl GatewayAgent {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        cost_bps: u32,
        max_concurrency: u32,
        // TLS to the gateway (with this unit's client certificate) or plaintext.
        connector: Connector,
    ) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            cost_bps,
            max_concurrency,
            request_timeout: Duration::from_secs(5),
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }

    /// One effect at the gateway, in its own client span (when spans are exported)
    /// whose context goes out as the `traceparent` header.
    async fn post(&self, path: &str, task: &Task, body: Value) -> TaskOutcome {
        self.call(http::Method::POST, path, task, Some(body)).await
    }

    /// A settlement lookup: what the gateway did with this task's idempotency key.
    async fn lookup(&self, task: &Task) -> TaskOutcome {
        let path = format!("/v1/idempotency/{}", task.idempotency_key);
        self.call(http::Method::GET, &path, task, None).await
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        task: &Task,
        body: Option<Value>,
    ) -> TaskOutcome {
        let span = self.call_span(&method, path, task);
        let outcome = self
            .until_settled(&method, path, task, body, &span)
            .instrument(span.clone())
            .await;
        if !span.is_none() {
            match &outcome {
                TaskOutcome::Succeeded(_) => span.set_status(Status::Ok),
                TaskOutcome::Retryable { code, message }
                | TaskOutcome::Unknown { code, message }
                | TaskOutcome::Permanent { code, message } => {
                    paygrid_telemetry::context::record_error(
                        &span,
                        code,
                        message,
                        !matches!(outcome, TaskOutcome::Permanent { .. }),
                    );
                }
            }
        }
        outcome
    }

    /// Sends the request; while the gateway answers that a request with this key is
    /// still in progress (an earlier attempt, e.g. from before a control-unit restart),
    /// waits it out with backoff until the attempt's deadline instead of failing: the
    /// answer will be that request's.
    async fn until_settled(
        &self,
        method: &http::Method,
        path: &str,
        task: &Task,
        body: Option<Value>,
        span: &tracing::Span,
    ) -> TaskOutcome {
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(IN_PROGRESS_DELAY_MIN)
            .with_max_delay(IN_PROGRESS_DELAY_MAX)
            .with_jitter()
            .with_max_times(IN_PROGRESS_WAITS_MAX)
            .build();
        loop {
            let outcome = self.send(method, path, task, body.as_ref(), span).await;
            let in_progress =
                matches!(&outcome, TaskOutcome::Unknown { code, .. } if code == IN_PROGRESS);
            if !in_progress {
                return outcome;
            }
            let Some(delay) = delays.next() else {
                return outcome;
            };
            if task.time_left() <= delay {
                return outcome;
            }
            if !span.is_none() {
                span.add_event(
                    "paygrid.gateway.in_progress",
                    vec![opentelemetry::KeyValue::new(
                        "paygrid.retry_in_ms",
                        delay.as_millis() as i64,
                    )],
                );
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn call_span(&self, method: &http::Method, path: &str, task: &Task) -> tracing::Span {
        if !paygrid_telemetry::otel::exporting() {
            return tracing::Span::none();
        }
        let operation = task.skill.strip_prefix("gateway.").unwrap_or(&task.skill);
        let name = if task.settle {
            format!("gateway lookup {operation}")
        } else {
            format!("gateway {operation}")
        };
        let span = tracing::info_span!(
            target: "paygrid::gateway",
            "gateway call",
            otel.name = name,
            otel.kind = "client",
        );
        span.set_attribute(semconv::GATEWAY, self.name.clone());
        span.set_attribute(semconv::HTTP_METHOD, method.as_str().to_owned());
        span.set_attribute(semconv::URL_PATH, path.to_owned());
        span.set_attribute(semconv::TASK_ATTEMPT, i64::from(task.attempt));
        if let Some(amount) = task.input.get("amount_minor").and_then(Value::as_i64) {
            span.set_attribute(semconv::AMOUNT_MINOR, amount);
        }
        if let Some(currency) = task.input.get("currency").and_then(Value::as_str) {
            span.set_attribute(semconv::CURRENCY, currency.to_owned());
        }
        span
    }

    async fn send(
        &self,
        method: &http::Method,
        path: &str,
        task: &Task,
        body: Option<&Value>,
        span: &tracing::Span,
    ) -> TaskOutcome {
        let uri = format!("{}{path}", self.base_url);
        // This call's span, or the attempt's when spans are not exported here.
        let (traceparent, tracestate) = match paygrid_telemetry::context::inject(span) {
            (traceparent, tracestate) if !traceparent.is_empty() => (traceparent, tracestate),
            _ => (task.traceparent.clone(), task.tracestate.clone()),
        };
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("content-type", "application/json")
            .header("idempotency-key", &task.idempotency_key);
        if !traceparent.is_empty() {
            request = request.header("traceparent", traceparent);
            if !tracestate.is_empty() {
                request = request.header("tracestate", tracestate);
            }
        }
        let payload = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = match request.body(Full::new(payload)) {
            Ok(request) => request,
            Err(e) => {
                return TaskOutcome::invalid_input(format!("cannot build request to {uri}: {e}"));
            }
        };
        let timeout = self
            .request_timeout
            .min(task.time_left().max(Duration::from_millis(100)));
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                // Refused before anything was sent: definitely not taken.
                let sent = !e.is_connect();
                (sent, e.to_string())
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| (true, e.to_string()))?
                .to_bytes();
            Ok::<_, (bool, String)>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return TaskOutcome::unknown(
                    "gateway_timeout",
                    format!(
                        "{} did not answer within {}ms",
                        self.name,
                        timeout.as_millis()
                    ),
                );
            }
            Ok(Err((false, e))) => {
                return TaskOutcome::retryable(
                    "gateway_unreachable",
                    format!("{}: {e}", self.name),
                );
            }
            Ok(Err((true, e))) => {
                return TaskOutcome::unknown(
                    "gateway_connection_lost",
                    format!("{}: {e}", self.name),
                );
            }
            Ok(Ok(answer)) => answer,
        };
        if !span.is_none() {
            span.set_attribute(semconv::HTTP_STATUS, i64::from(status.as_u16()));
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if task.settle {
            return self.settled(status.as_u16(), body);
        }
        self.classify(status.as_u16(), body)
    }

    /// What a gateway answer means for the attempt.
    fn classify(&self, status: u16, body: Value) -> TaskOutcome {
        let code = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("gateway_error")
            .to_owned();
        let message = format!(
            "{} answered {status}: {}",
            self.name,
            body.get("message").and_then(Value::as_str).unwrap_or("")
        );
        match status {
            200..=299 => TaskOutcome::Succeeded(body),
            // A key still in use by an earlier attempt: its effect is under way.
            409 if code == IN_PROGRESS => TaskOutcome::unknown(code, message),
            // Refused before processing: nothing was taken.
            429 | 503 => TaskOutcome::retryable(code, message),
            // Anything else from the server side may come after the effect.
            500..=599 => TaskOutcome::unknown(code, message),
            // Other conflicts (e.g. voiding a captured authorization) and declines will
            // not change by retrying.
            _ => TaskOutcome::permanent(code, message),
        }
    }

    /// What a lookup by key says: the stored answer of the request made with it, that
    /// no request was made (definite: the gateway fences the key), or still running.
    fn settled(&self, status: u16, body: Value) -> TaskOutcome {
        match status {
            200 => {
                let stored_status = body
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(500);
                let stored = body.get("body").cloned().unwrap_or(Value::Null);
                self.classify(stored_status, stored)
            }
            404 => TaskOutcome::permanent(
                "not_taken",
                format!(
                    "{} has no request with this idempotency key: nothing was done",
                    self.name
                ),
            ),
            other => match self.classify(other, body) {
                // The lookup itself failed: the outcome is still unknown.
                TaskOutcome::Retryable { code, message }
                | TaskOutcome::Permanent { code, message } => {
                    TaskOutcome::unknown(code, format!("lookup failed: {message}"))
                }
                outcome => outcome,
            },
        }
    }
}

/// The gateway's code for "a request with this key is in progress".
const IN_PROGRESS: &str = "idempotency_conflict";
const IN_PROGRESS_DELAY_MIN: Duration = Duration::from_millis(100);
const IN_PROGRESS_DELAY_MAX: Duration = Duration::from_secs(1);
/// Bounds the wait loop besides the deadline (about a minute of waiting).
const IN_PROGRESS_WAITS_MAX: usize = 64;

fn schema(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

#[async_trait::async_trait]
impl Agent for GatewayAgent {
    fn card(&self) -> AgentCard {
        let money = json!({"amount_minor": {"type": "integer", "minimum": 1}, "currency": {"type": "string"}});
        let skill = |name: &str, description: &str, input: Value, output: Value| SkillSpec {
            name: name.into(),
            description: description.into(),
            input_schema: input,
            output_schema: output,
            effect: match name {
                "gateway.probe" => SkillEffect::ReadOnly,
                // Closing a batch changes the acquirer's state, but moves nothing itself.
                "gateway.close_batch" => SkillEffect::State,
                _ => SkillEffect::MovesMoney,
            },
        };
        AgentCard {
            name: format!("gateway-{}", self.name),
            role: Role::Worker,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![
                skill(
                    "gateway.authorize",
                    "Authorize a card payment",
                    schema(
                        &["amount_minor", "currency", "card_token"],
                        json!({"amount_minor": money["amount_minor"], "currency": money["currency"], "card_token": {"type": "string"}, "merchant": {"type": "string"}, "reference": {"type": "string", "description": "the merchant's reference, carried into the settlement report"}}),
                    ),
                    schema(
                        &[],
                        json!({"authorization_id": {"type": "string"}, "status": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "gateway": {"type": "string"}, "fee_minor": {"type": "integer"}}),
                    ),
                ),
                skill(
                    "gateway.capture",
                    "Capture an authorization",
                    schema(
                        &["authorization_id"],
                        json!({"authorization_id": {"type": "string"}, "amount_minor": {"type": "integer"}}),
                    ),
                    schema(
                        &[],
                        json!({"capture_id": {"type": "string"}, "authorization_id": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.void",
                    "Void an authorization",
                    schema(
                        &["authorization_id"],
                        json!({"authorization_id": {"type": "string"}}),
                    ),
                    schema(
                        &[],
                        json!({"authorization_id": {"type": "string"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.refund",
                    "Refund a capture",
                    schema(
                        &["capture_id"],
                        json!({"capture_id": {"type": "string"}, "amount_minor": {"type": "integer"}}),
                    ),
                    schema(
                        &[],
                        json!({"refund_id": {"type": "string"}, "capture_id": {"type": "string"}, "amount_minor": {"type": "integer"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.payout",
                    "Pay out to a destination account",
                    schema(
                        &["destination", "amount_minor"],
                        json!({"destination": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "reference": {"type": "string"}}),
                    ),
                    schema(
                        &[],
                        json!({"payout_id": {"type": "string"}, "destination": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.payout_batch",
                    "Pay out to several destinations in one request (all or none)",
                    schema(
                        &["reference", "items"],
                        json!({"reference": {"type": "string"}, "items": {"type": "array", "items": schema(&["destination", "amount_minor", "currency"], json!({"destination": {"type": "string"}, "amount_minor": {"type": "integer", "minimum": 1}, "currency": {"type": "string"}}))}}),
                    ),
                    schema(
                        &[],
                        json!({"reference": {"type": "string"}, "payouts": {"type": "array"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.close_batch",
                    "Close the open settlement batch (default value date: today, UTC)",
                    schema(
                        &[],
                        json!({"value_date": {"type": "string", "format": "date"}}),
                    ),
                    schema(
                        &[],
                        json!({"batch_id": {"type": "string"}, "value_date": {"type": "string"}, "rows": {"type": "integer"}, "gateway": {"type": "string"}}),
                    ),
                ),
                skill(
                    "gateway.probe",
                    "Probe the gateway's health (read-only; fails while the gateway is failing)",
                    schema(&[], json!({"gateway": {"type": "string"}})),
                    schema(
                        &[],
                        json!({"gateway": {"type": "string"}, "healthy": {"type": "boolean"}}),
                    ),
                ),
            ],
            max_concurrency: self.max_concurrency,
            labels: BTreeMap::from([
                ("gateway".to_owned(), self.name.clone()),
                ("cost_bps".to_owned(), self.cost_bps.to_string()),
            ]),
        }
    }

    /// A status lookup by idempotency key (like a payment sync), for every gateway
    /// skill: the gateway keeps each key's answer.
    async fn settle(&self, task: Task) -> TaskOutcome {
        self.lookup(&task).await
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let path_id = |field: &str| task.str(field).map(str::to_owned);
        match task.skill.as_str() {
            "gateway.authorize" => {
                let body = json!({
                    "amount_minor": task.input.get("amount_minor"),
                    "currency": task.input.get("currency"),
                    "card_token": task.input.get("card_token"),
                    "merchant": task.input.get("merchant"),
                    "reference": task.input.get("reference"),
                });
                self.post("/v1/authorizations", &task, body).await
            }
            "gateway.capture" => match path_id("authorization_id") {
                Ok(id) => {
                    self.post(
                        &format!("/v1/authorizations/{id}/capture"),
                        &task,
                        json!({"amount_minor": task.input.get("amount_minor")}),
                    )
                    .await
                }
                Err(outcome) => outcome,
            },
            "gateway.void" => match path_id("authorization_id") {
                Ok(id) => {
                    self.post(&format!("/v1/authorizations/{id}/void"), &task, json!({}))
                        .await
                }
                Err(outcome) => outcome,
            },
            "gateway.refund" => match path_id("capture_id") {
                Ok(id) => {
                    self.post(
                        &format!("/v1/captures/{id}/refunds"),
                        &task,
                        json!({"amount_minor": task.input.get("amount_minor")}),
                    )
                    .await
                }
                Err(outcome) => outcome,
            },
            "gateway.payout" => self.post("/v1/payouts", &task, task.input.clone()).await,
            "gateway.payout_batch" => {
                self.post("/v1/payout-batches", &task, task.input.clone())
                    .await
            }
            "gateway.close_batch" => {
                let value_date = match task.input.get("value_date").and_then(Value::as_str) {
                    Some(date) if !date.is_empty() => date.to_owned(),
                    // Same-day settlement unless told.
                    _ => crate::dates::Day::today().to_string(),
                };
                self.post(
                    "/v1/settlement-batches",
                    &task,
                    json!({"value_date": value_date}),
                )
                .await
            }
            // Read-only: the gateway's health endpoint (503 while it is failing).
            "gateway.probe" => self.call(http::Method::GET, "/healthz", &task, None).await,
            other => TaskOutcome::permanent(
                "unknown_skill",
                format!("gateway agent has no skill {other}"),
            ),
        }
    }
}
