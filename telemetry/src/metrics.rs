//! Metrics in Prometheus text format: a small registry of counters, gauges and
//! histograms, and an HTTP endpoint (`GET /metrics`) that serves it.
//!
//! Observations take one short mutex (never held across an await); rendering walks the
//! registry once. Names and labels are static strings or small label sets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Latency buckets in seconds, from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

enum Series {
    Counter(u64),
    Gauge(f64),
    Histogram {
        buckets: &'static [f64],
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

struct Family {
    help: &'static str,
    kind: &'static str,
    series: BTreeMap<String, Series>,
}

/// A metric's name and help text, defined once as a constant next to its siblings
/// (see each part's `metric_names` module), like span attributes in `semconv`.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
}

/// A set of metric families.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn label_key(labels: &[(&str, &str)]) -> String {
    let mut key = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(key, "{name}=\"{value}\"");
    }
    key
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        update: impl FnOnce(&mut Series),
        make: impl FnOnce() -> Series,
    ) {
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        let series = family.series.entry(label_key(labels)).or_insert_with(make);
        update(series);
    }

    /// Adds `by` to a counter.
    pub fn count(&self, metric: &Metric, labels: &[(&str, &str)], by: u64) {
        self.with(
            metric.name,
            metric.help,
            "counter",
            labels,
            |s| {
                if let Series::Counter(v) = s {
                    *v += by
                }
            },
            || Series::Counter(0),
        );
    }

    /// Sets a gauge.
    pub fn gauge(&self, metric: &Metric, labels: &[(&str, &str)], value: f64) {
        self.with(
            metric.name,
            metric.help,
            "gauge",
            labels,
            |s| {
                if let Series::Gauge(v) = s {
                    *v = value
                }
            },
            || Series::Gauge(0.0),
        );
    }

    /// Records one observation (seconds) in a latency histogram.
    pub fn observe(&self, metric: &Metric, labels: &[(&str, &str)], seconds: f64) {
        self.with(
            metric.name,
            metric.help,
            "histogram",
            labels,
            |s| {
                if let Series::Histogram {
                    buckets,
                    counts,
                    sum,
                    count,
                } = s
                {
                    for (i, bound) in buckets.iter().enumerate() {
                        if seconds <= *bound {
                            counts[i] += 1;
                        }
                    }
                    *sum += seconds;
                    *count += 1;
                }
            },
            || Series::Histogram {
                buckets: LATENCY_BUCKETS,
                counts: vec![0; LATENCY_BUCKETS.len()],
                sum: 0.0,
                count: 0,
            },
        );
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(4096);
        for (name, family) in families.iter() {
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}",
                family.help, family.kind
            );
            for (labels, series) in &family.series {
                let braces = |extra: &str| {
                    let all: Vec<&str> = [labels.as_str(), extra]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect();
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", all.join(","))
                    }
                };
                match series {
                    Series::Counter(v) => {
                        let _ = writeln!(out, "{name}{} {v}", braces(""));
                    }
                    Series::Gauge(v) => {
                        let _ = writeln!(out, "{name}{} {v}", braces(""));
                    }
                    Series::Histogram {
                        buckets,
                        counts,
                        sum,
                        count,
                    } => {
                        for (bound, n) in buckets.iter().zip(counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {n}",
                                braces(&format!("le=\"{bound}\""))
                            );
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", braces("le=\"+Inf\""));
                        let _ = writeln!(out, "{name}_sum{} {sum}", braces(""));
                        let _ = writeln!(out, "{name}_count{} {count}", braces(""));
                    }
                }
            }
        }
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
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (registry, refresh) = (registry.clone(), refresh.clone());
            async move {
                refresh().await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    registry.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let registry = Registry::new();
        let metric = |name, help| Metric { name, help };
        registry.count(&metric("jobs_total", "Jobs."), &[("status", "ok")], 2);
        registry.gauge(&metric("depth", "Depth."), &[], 3.0);
        registry.observe(
            &metric("latency_seconds", "Latency."),
            &[("skill", "a")],
            0.003,
        );
        let text = registry.render();
        assert!(
            text.contains("# TYPE jobs_total counter\njobs_total{status=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("depth 3\n"), "{text}");
        assert!(
            text.contains("latency_seconds_bucket{skill=\"a\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{skill=\"a\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_count{skill=\"a\"} 1\n"),
            "{text}"
        );
    }
}
