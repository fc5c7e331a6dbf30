//! Telemetry for every Paygrid process: logs, OTLP traces, attribute names (`semconv`),
//! W3C trace context, metrics and redaction of card data.
//!
//! - [`init`]: one call per process: env filter (`RUST_LOG`), human or JSON logs on
//!   stderr, and with an OTLP endpoint, spans exported over gRPC in batches under the
//!   process's `service.name`. The returned [`Telemetry`] flushes them on shutdown.
//! - [`semconv`]: span and attribute names, defined once.
//! - [`context`]: `traceparent` parsing, derived span ids, parents for `tracing` spans.
//! - [`redact`]: masks anything that looks like a card number (first 6, last 4), for logs
//!   and spans alike ([`otel::Redacting`]).
//! - [`metrics`]: counters, gauges and histograms served in Prometheus text format.

pub mod context;
pub mod metrics;
pub mod otel;
pub mod redact;
pub mod semconv;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// What [`init`] set up; flushes exported spans when shut down or dropped.
#[derive(Debug, Default)]
#[must_use = "dropping it flushes and stops span export"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still queued (bounded by the exporter's timeout) and stops.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: flushing spans on shutdown failed: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets up logs and, when `otlp` names an endpoint (`http://host:4317`), span export for
/// a process named `service` (e.g. `paygrid-control`). Call it inside a Tokio runtime.
/// Safe to call twice (the second call does nothing), so tests that run parts in one
/// process work.
///
/// Spans from Paygrid's crates at INFO and above are exported whatever `RUST_LOG` says
/// about logs; events inside them become span events.
pub fn init(
    service: &'static str,
    format: LogFormat,
    default_filter: &str,
    otlp: Option<&str>,
) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Every line passes through redaction: card numbers masked, CVVs replaced.
    let writer = redact::Redacting(std::io::stderr);
    let logs = match format {
        LogFormat::Human => fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(writer).boxed(),
    }
    .with_filter(filter);
    let mut telemetry = Telemetry::default();
    let traces = match otlp.filter(|e| !e.is_empty()) {
        Some(endpoint) => match otel::pipeline(service, endpoint) {
            Ok(provider) => {
                let tracer = provider.tracer(service);
                telemetry.provider = Some(provider);
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(Targets::new().with_target("paygrid", tracing::Level::INFO)),
                )
            }
            Err(error) => {
                eprintln!("warning: OTLP export to {endpoint} is off: {error}");
                None
            }
        },
        None => None,
    };
    let result = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if result.is_ok() {
        if let Some(provider) = &telemetry.provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        tracing::debug!(service, otlp, "telemetry initialised");
    } else {
        // Another part of this process set up telemetry first: keep its exporter.
        telemetry.provider = None;
    }
    telemetry
}
