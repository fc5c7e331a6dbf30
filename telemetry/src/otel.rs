//! OTLP trace export: a batch span processor over gRPC (tonic), one `service.name` per
//! process, every span redacted before it leaves the process.
//!
//! Two kinds of spans reach the processor:
//! - live spans, from `tracing` spans through `tracing-opentelemetry` (execution units,
//!   the gateway simulator, gRPC handlers);
//! - recorded spans ([`export`]), which the control unit builds from its durable history
//!   with explicit ids and times, so a workflow's root span can outlive a restart.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};

use crate::redact;

/// Spans waiting for export; when full, new spans are dropped (and counted by the SDK).
pub const QUEUE_MAX: usize = 8192;
/// Spans per OTLP request.
pub const EXPORT_BATCH_MAX: usize = 512;
/// How long a span may wait for a fuller batch.
pub const EXPORT_DELAY: Duration = Duration::from_millis(500);

static PROCESSOR: OnceLock<Arc<BatchSpanProcessor>> = OnceLock::new();
static SCOPE: OnceLock<opentelemetry::InstrumentationScope> = OnceLock::new();

/// True when this process exports spans; recorded spans are only built then.
pub fn exporting() -> bool {
    PROCESSOR.get().is_some()
}

/// Hands a finished span, built by the caller with explicit ids and times, to the batch
/// processor. Does nothing when export is off.
pub fn export(mut span: SpanData) {
    if let Some(processor) = PROCESSOR.get() {
        if let Some(scope) = SCOPE.get() {
            span.instrumentation_scope = scope.clone();
        }
        processor.on_end(span);
    }
}

/// The scope recorded spans carry.
pub fn scope() -> opentelemetry::InstrumentationScope {
    SCOPE
        .get()
        .cloned()
        .unwrap_or_else(|| opentelemetry::InstrumentationScope::builder("paygrid").build())
}

/// Builds the OTLP pipeline for `service`. Must run inside a Tokio runtime (tonic's
/// channel lives on it).
pub(crate) fn pipeline(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let resource = Resource::builder().with_service_name(service).build();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    exporter.set_resource(&resource);
    let processor = Arc::new(
        BatchSpanProcessor::builder(Redacting(exporter))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(QUEUE_MAX)
                    .with_max_export_batch_size(EXPORT_BATCH_MAX)
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build(),
    );
    let _ = PROCESSOR.set(processor.clone());
    let _ = SCOPE.set(
        opentelemetry::InstrumentationScope::builder(service)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(Shared(processor))
        .build())
}

/// The one batch processor, shared by the provider (live spans) and [`export`].
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// Redacts every span before export, with the same rules as the log writer: card numbers
/// masked in names, attribute values, event names and attributes and status messages;
/// values of CVV-like attributes replaced.
#[derive(Debug)]
pub struct Redacting<E>(pub E);

impl<E: SpanExporter> SpanExporter for Redacting<E> {
    fn export(
        &self,
        mut batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        for span in &mut batch {
            redact_span(span);
        }
        self.0.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Applies the redaction rules to one span.
pub fn redact_span(span: &mut SpanData) {
    if let Some(masked) = changed(&span.name) {
        span.name = masked.into();
    }
    redact_attributes(&mut span.attributes);
    for event in &mut span.events.events {
        if let Some(masked) = changed(&event.name) {
            event.name = masked.into();
        }
        redact_attributes(&mut event.attributes);
    }
    if let Status::Error { description } = &mut span.status
        && let Some(masked) = changed(description)
    {
        *description = masked.into();
    }
}

fn redact_attributes(attributes: &mut [KeyValue]) {
    for attribute in attributes {
        if redact::is_secret_field(attribute.key.as_str())
            || attribute
                .key
                .as_str()
                .rsplit('.')
                .next()
                .is_some_and(redact::is_secret_field)
        {
            attribute.value = Value::from("[redacted]");
            continue;
        }
        let masked = match &attribute.value {
            Value::String(text) => changed(text.as_str()),
            Value::I64(number) => changed(&number.to_string()),
            _ => None,
        };
        if let Some(masked) = masked {
            attribute.value = Value::from(masked);
        }
    }
}

/// The redacted text, when redaction changed it.
fn changed(text: &str) -> Option<String> {
    let redacted = redact::redact_text(text);
    (redacted != text).then_some(redacted)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{Event, SpanContext, SpanKind};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    #[derive(Debug, Default)]
    struct Capture(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Capture {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(batch);
            Ok(())
        }
    }

    fn leaky_span() -> SpanData {
        let mut events = SpanEvents::default();
        events.events = vec![Event::new(
            "declined 4242 4242 4242 4242",
            std::time::SystemTime::now(),
            vec![
                KeyValue::new("message", "card 4000-0566-5566-5556 declined"),
                KeyValue::new("card.cvv", "737"),
            ],
            0,
        )];
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "charge 4242424242424242".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![
                KeyValue::new("card_number", "4242424242424242"),
                KeyValue::new("pan", 4_242_424_242_424_242_i64),
                KeyValue::new("security_code", "1234"),
                KeyValue::new("paygrid.amount.minor", 1999_i64),
            ],
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::error("gateway refused 5555555555554444 with cvv=123"),
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("t").build(),
        }
    }

    #[test]
    fn exported_spans_hold_no_card_data() {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let exporter = Redacting(Capture(captured.clone()));
        let export = exporter.export(vec![leaky_span()]);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(export)
            .expect("export");
        let spans = captured.lock().unwrap_or_else(|e| e.into_inner());
        let text = format!("{spans:?}");
        for secret in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4000-0566-5566-5556",
            "5555555555554444",
            "\"737\"",
            "\"1234\"",
            "cvv=123",
        ] {
            assert!(!text.contains(secret), "`{secret}` was exported: {text}");
        }
        assert!(text.contains("424242******4242"), "{text}");
        assert!(text.contains("555555******4444"), "{text}");
        assert!(text.contains("I64(1999)"), "amounts are kept: {text}");
    }
}
