//! Health of the agents an execution unit hosts and of the gateways behind them, over a
//! rolling window: requests, errors (retryable failures: 5xx, timeouts, conflicts),
//! latency and saturation. Support agents relay it to the control unit.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;

/// Samples kept per subject at most.
const SAMPLES_MAX: usize = 4_096;

#[derive(Default)]
struct Window {
    samples: VecDeque<(Instant, bool, u32)>,
    skills: BTreeSet<String>,
    running: u32,
    slots: u32,
}

/// Rolling health windows per agent and per gateway.
pub struct HealthCollector {
    window: Duration,
    subjects: Mutex<HashMap<(&'static str, String), Window>>,
}

impl std::fmt::Debug for HealthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCollector")
            .field("window", &self.window)
            .finish()
    }
}

impl Default for HealthCollector {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            subjects: Mutex::new(HashMap::new()),
        }
    }
}

impl HealthCollector {
    fn subjects_of<'a>(
        agent: &'a str,
        gateway: Option<&'a str>,
    ) -> impl Iterator<Item = (&'static str, &'a str)> {
        std::iter::once(("agent", agent)).chain(gateway.map(|g| ("gateway", g)))
    }

    /// One finished task of `agent` (and of its gateway, if it has one), also counted
    /// for its skill.
    pub fn observe(
        &self,
        agent: &str,
        gateway: Option<&str>,
        skill: &str,
        error: bool,
        elapsed: Duration,
    ) {
        let now = Instant::now();
        let mut subjects = self
            .subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, name) in Self::subjects_of(agent, gateway).chain([("skill", skill)]) {
            let window = subjects.entry((kind, name.to_owned())).or_default();
            window.samples.push_back((
                now,
                error,
                elapsed.as_millis().min(u128::from(u32::MAX)) as u32,
            ));
            if window.samples.len() > SAMPLES_MAX {
                window.samples.pop_front();
            }
            if !window.skills.contains(skill) {
                window.skills.insert(skill.to_owned());
            }
        }
    }

    /// Running tasks over slots, for saturation.
    pub fn load(&self, agent: &str, gateway: Option<&str>, running: u32, slots: u32) {
        let mut subjects = self
            .subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, name) in Self::subjects_of(agent, gateway) {
            let window = subjects.entry((kind, name.to_owned())).or_default();
            window.running = running;
            window.slots = slots;
        }
    }

    /// The current window of every subject.
    pub fn reports(&self) -> Vec<pb::HealthReport> {
        let now = Instant::now();
        let mut subjects = self
            .subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reports = Vec::with_capacity(subjects.len());
        for ((kind, name), window) in subjects.iter_mut() {
            while window
                .samples
                .front()
                .is_some_and(|(at, _, _)| now.duration_since(*at) > self.window)
            {
                window.samples.pop_front();
            }
            let mut latencies: Vec<u32> = window.samples.iter().map(|(_, _, ms)| *ms).collect();
            latencies.sort_unstable();
            let at = |p: f64| {
                latencies
                    .get(((latencies.len().saturating_sub(1)) as f64 * p) as usize)
                    .copied()
                    .unwrap_or(0)
            };
            reports.push(pb::HealthReport {
                kind: (*kind).to_owned(),
                subject: name.clone(),
                window_ms: self.window.as_millis() as u32,
                requests: window.samples.len() as u64,
                errors: window.samples.iter().filter(|(_, error, _)| *error).count() as u64,
                latency_p50_ms: at(0.5),
                latency_p99_ms: at(0.99),
                saturation: if window.slots == 0 {
                    0.0
                } else {
                    f64::from(window.running) / f64::from(window.slots)
                },
                skills: window.skills.iter().cloned().collect(),
            });
        }
        reports.sort_by(|a, b| (&a.kind, &a.subject).cmp(&(&b.kind, &b.subject)));
        reports
    }
}
