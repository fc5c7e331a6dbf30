//! Metrics through the official Prometheus client library (`prometheus-client`,
//! OpenMetrics text), and an HTTP endpoint (`GET /metrics`) that serves them.
//!
//! Each part names its metrics once, as [`Metric`] constants (`metric_names`); a family
//! is registered on its first observation. An observation finds its family under a
//! read lock and its series by label values (no global lock, no formatting); rendering
//! walks the registry once per scrape.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Latency buckets in seconds, from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A metric's name and help text, defined once as a constant next to its siblings
/// (see each part's `metric_names` module), like span attributes in `semconv`. A
/// counter's name ends in `_total`, as exported.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
}

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type Gauges = Family<Labels, Gauge<i64, AtomicI64>>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every metric family of one process.
#[derive(Default)]
pub struct Registry {
    registry: Mutex<prometheus_client::registry::Registry>,
    counters: RwLock<HashMap<&'static str, Family<Labels, Counter>>>,
    gauges: RwLock<HashMap<&'static str, Gauges>>,
    histograms: RwLock<HashMap<&'static str, Histograms>>,
    // Metrics without labels are exported without braces (`name 3`, not `name{} 3`).
    plain_counters: RwLock<HashMap<&'static str, Counter>>,
    plain_gauges: RwLock<HashMap<&'static str, Gauge<i64, AtomicI64>>>,
    plain_histograms: RwLock<HashMap<&'static str, Histogram>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

/// The family named `metric`, registered on first use.
fn family<F: Clone + prometheus_client::registry::Metric>(
    families: &RwLock<HashMap<&'static str, F>>,
    registry: &Mutex<prometheus_client::registry::Registry>,
    metric: &Metric,
    name: &'static str,
    make: impl FnOnce() -> F,
) -> F {
    let read = families
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(family) = read.get(metric.name) {
        return family.clone();
    }
    drop(read);
    let mut write = families
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    write
        .entry(metric.name)
        .or_insert_with(|| {
            let family = make();
            registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                // The encoder ends help texts with a full stop.
                .register(
                    name,
                    metric.help.strip_suffix('.').unwrap_or(metric.help),
                    family.clone(),
                );
            family
        })
        .clone()
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds `by` to a counter.
    pub fn count(&self, metric: &Metric, labels_: &[(&str, &str)], by: u64) {
        // The encoder appends `_total`.
        let name = metric.name.strip_suffix("_total").unwrap_or(metric.name);
        if labels_.is_empty() {
            let plain = &self.plain_counters;
            family(plain, &self.registry, metric, name, Counter::default).inc_by(by);
            return;
        }
        family(
            &self.counters,
            &self.registry,
            metric,
            name,
            Family::default,
        )
        .get_or_create(&labels(labels_))
        .inc_by(by);
    }

    /// Sets a gauge (counts: workflows, queue depths, sessions).
    pub fn gauge(&self, metric: &Metric, labels_: &[(&str, &str)], value: i64) {
        if labels_.is_empty() {
            let (plain, make) = (&self.plain_gauges, Gauge::<i64, AtomicI64>::default);
            family(plain, &self.registry, metric, metric.name, make).set(value);
            return;
        }
        family(
            &self.gauges,
            &self.registry,
            metric,
            metric.name,
            Family::default,
        )
        .get_or_create(&labels(labels_))
        .set(value);
    }

    /// Records one observation (seconds) in a latency histogram.
    pub fn observe(&self, metric: &Metric, labels_: &[(&str, &str)], seconds: f64) {
        if labels_.is_empty() {
            let plain = &self.plain_histograms;
            family(
                plain,
                &self.registry,
                metric,
                metric.name,
                latency_histogram,
            )
            .observe(seconds);
            return;
        }
        let make = || Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
        family(&self.histograms, &self.registry, metric, metric.name, make)
            .get_or_create(&labels(labels_))
            .observe(seconds);
    }

    /// The OpenMetrics text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`; `refresh` runs before each
/// scrape (to set gauges computed on demand).
pub async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    refresh: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    axum::serve(listener, router(registry, refresh))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /metrics` as a router, to serve beside other routes on one listener.
pub fn router<F, Fut>(registry: Arc<Registry>, refresh: F) -> axum::Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (registry, refresh) = (registry.clone(), refresh.clone());
            async move {
                refresh().await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    registry.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let registry = Registry::new();
        let metric = |name, help| Metric { name, help };
        registry.count(&metric("jobs_total", "Jobs."), &[("status", "ok")], 2);
        registry.gauge(&metric("depth", "Depth."), &[], 3);
        registry.observe(
            &metric("latency_seconds", "Latency."),
            &[("skill", "a")],
            0.003,
        );
        let text = registry.render();
        assert!(
            text.contains("# TYPE jobs counter\n")
                && text.contains("jobs_total{status=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("depth 3\n"), "{text}");
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.0025\",skill=\"a\"} 0\n")
                || text.contains("latency_seconds_bucket{skill=\"a\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_count{skill=\"a\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
