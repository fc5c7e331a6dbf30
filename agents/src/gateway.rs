//! The gateway worker agent: `gateway.authorize`, `gateway.capture`, `gateway.void`,
//! `gateway.refund`, `gateway.payout` over HTTP, with the task's idempotency key as the
//! `Idempotency-Key` header. A decline is a value from the gateway; it becomes a
//! permanent failure of the task. 5xx, 409 and timeouts are retryable.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::Status;
use paygrid_execution_unit::{Agent, AgentCard, Role, SkillSpec, Task, TaskOutcome};
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
    client: Client<HttpConnector, Full<Bytes>>,
}

impl GatewayAgent {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        cost_bps: u32,
        max_concurrency: u32,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
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

    /// One call to the gateway, in its own client span (when spans are exported) whose
    /// context goes out as the `traceparent` header.
    async fn post(&self, path: &str, task: &Task, body: Value) -> TaskOutcome {
        let span = self.call_span(path, task);
        let outcome = self
            .send(path, task, body, &span)
            .instrument(span.clone())
            .await;
        if !span.is_none() {
            match &outcome {
                TaskOutcome::Succeeded(_) => span.set_status(Status::Ok),
                TaskOutcome::Retryable { code, message }
                | TaskOutcome::Permanent { code, message } => {
                    paygrid_telemetry::context::record_error(
                        &span,
                        code,
                        message,
                        matches!(outcome, TaskOutcome::Retryable { .. }),
                    );
                }
            }
        }
        outcome
    }

    fn call_span(&self, path: &str, task: &Task) -> tracing::Span {
        if !paygrid_telemetry::otel::exporting() {
            return tracing::Span::none();
        }
        let operation = task.skill.strip_prefix("gateway.").unwrap_or(&task.skill);
        let span = tracing::info_span!(
            target: "paygrid::gateway",
            "gateway call",
            otel.name = format!("gateway {operation}"),
            otel.kind = "client",
        );
        span.set_attribute(semconv::GATEWAY, self.name.clone());
        span.set_attribute(semconv::HTTP_METHOD, "POST");
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
        path: &str,
        task: &Task,
        body: Value,
        span: &tracing::Span,
    ) -> TaskOutcome {
        let uri = format!("{}{path}", self.base_url);
        // This call's span, or the attempt's when spans are not exported here.
        let (traceparent, tracestate) = match paygrid_telemetry::context::inject(span) {
            (traceparent, tracestate) if !traceparent.is_empty() => (traceparent, tracestate),
            _ => (task.traceparent.clone(), task.tracestate.clone()),
        };
        let mut request = http::Request::post(&uri)
            .header("content-type", "application/json")
            .header("idempotency-key", &task.idempotency_key);
        if !traceparent.is_empty() {
            request = request.header("traceparent", traceparent);
            if !tracestate.is_empty() {
                request = request.header("tracestate", tracestate);
            }
        }
        let request = request.body(Full::new(Bytes::from(body.to_string())));
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                return TaskOutcome::invalid_input(format!("cannot build request to {uri}: {e}"));
            }
        };
        let timeout = self
            .request_timeout
            .min(task.time_left().max(Duration::from_millis(100)));
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return TaskOutcome::retryable(
                    "gateway_timeout",
                    format!(
                        "{} did not answer within {}ms",
                        self.name,
                        timeout.as_millis()
                    ),
                );
            }
            Ok(Err(e)) => {
                return TaskOutcome::retryable(
                    "gateway_unreachable",
                    format!("{}: {e}", self.name),
                );
            }
            Ok(Ok(answer)) => answer,
        };
        if !span.is_none() {
            span.set_attribute(semconv::HTTP_STATUS, i64::from(status.as_u16()));
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let code = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("gateway_error")
            .to_owned();
        let message = format!(
            "{} answered {}: {}",
            self.name,
            status.as_u16(),
            body.get("message").and_then(Value::as_str).unwrap_or("")
        );
        match status.as_u16() {
            200..=299 => TaskOutcome::Succeeded(body),
            // A key still in use by an earlier attempt: wait and retry. Other conflicts
            // (e.g. voiding a captured authorization) will not change by retrying.
            409 if code == "idempotency_conflict" => TaskOutcome::retryable(code, message),
            429 | 500..=599 => TaskOutcome::retryable(code, message),
            _ => TaskOutcome::permanent(code, message),
        }
    }
}

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
                        json!({"amount_minor": money["amount_minor"], "currency": money["currency"], "card_token": {"type": "string"}, "merchant": {"type": "string"}}),
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
                        json!({"destination": {"type": "string"}, "amount_minor": {"type": "integer"}, "currency": {"type": "string"}}),
                    ),
                    schema(
                        &[],
                        json!({"payout_id": {"type": "string"}, "destination": {"type": "string"}, "amount_minor": {"type": "integer"}, "status": {"type": "string"}, "gateway": {"type": "string"}}),
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

    async fn handle(&self, task: Task) -> TaskOutcome {
        let path_id = |field: &str| task.str(field).map(str::to_owned);
        match task.skill.as_str() {
            "gateway.authorize" => {
                let body = json!({
                    "amount_minor": task.input.get("amount_minor"),
                    "currency": task.input.get("currency"),
                    "card_token": task.input.get("card_token"),
                    "merchant": task.input.get("merchant"),
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
            other => TaskOutcome::permanent(
                "unknown_skill",
                format!("gateway agent has no skill {other}"),
            ),
        }
    }
}
