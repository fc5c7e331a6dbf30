//! Telemetry for every Paygrid process: tracing setup, attribute names (`semconv`), and
//! redaction of card data.
//!
//! - [`init`]: one call per process: env filter (`RUST_LOG`), human or JSON logs on stderr.
//! - [`semconv`]: span and attribute names, defined once.
//! - [`redact`]: masks anything that looks like a card number (first 6, last 4).
//! - [`metrics`]: counters, gauges and histograms served in Prometheus text format.
//!
//! OTLP export lands with the observability issue; until then spans stay in-process.

pub mod metrics;
pub mod redact;
pub mod semconv;

use tracing_subscriber::EnvFilter;

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Sets up tracing for a process named `service` (e.g. `paygrid-control`). Safe to call
/// twice (the second call does nothing), so tests that run parts in one process work.
pub fn init(service: &'static str, format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Every line passes through redaction: card numbers masked, CVVs replaced.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::Redacting(std::io::stderr));
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
