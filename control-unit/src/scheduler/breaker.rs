//! Circuit breakers, one per gateway, owned by the scheduler core so that dispatch can
//! consult them and time stays an input (deterministic, testable by simulation).
//!
//! - **Closed**: every answer from the gateway's agents is counted in a sliding window
//!   (ten buckets). With at least `min_requests` in the window, an error rate of
//!   `error_rate` or more, or a share of slow calls (`slow_call` or longer) of
//!   `slow_rate` or more, opens the breaker. Errors are answers that may be the
//!   gateway's fault: retryable, unknown, timed out. A decline is an answer, not an
//!   error. A telemetry agent's report over the same thresholds opens it too.
//! - **Open** for `open_for`: the gateway's agents get no task. Routes that may pick
//!   another gateway (`cheapest-healthy`, `fallback: true`) pick one at once; tasks that
//!   must go to this gateway wait, with the reason in `status`, and do not fail.
//! - **Half-open**: up to `trials` tasks go through. As many successes close it (the
//!   window starts empty); a failure opens it again. Each trial is one attempt, tracked
//!   by its slot and attempt number: only a trial's answer decides, and a trial that
//!   ends without a verdict (its agent lost, cancelled, refused, replaced) frees its
//!   place for another, so a half-open breaker never waits on attempts that will not
//!   answer.
//!
//! Breakers are not durable: after a restart every breaker starts closed and the first
//! failures open it again (as Envoy's and resilience4j's do).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::Millis;
use super::state::Slot;

/// One attempt of one task: a trial, while its breaker is half-open.
pub type Attempt = (Slot, u32);

/// Thresholds; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub window: Duration,
    pub min_requests: u32,
    pub error_rate: f64,
    pub slow_call: Duration,
    pub slow_rate: f64,
    pub open_for: Duration,
    pub trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_requests: 10,
            error_rate: 0.5,
            slow_call: Duration::from_secs(5),
            slow_rate: 0.8,
            open_for: Duration::from_secs(30),
            trials: 3,
        }
    }
}

const BUCKETS: u64 = 10;
/// Transitions kept per breaker for `paygrid health`.
const TRANSITIONS_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A state change, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub gateway: String,
    pub at: Millis,
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-length period of time this bucket counts.
    epoch: u64,
    requests: u32,
    errors: u32,
    slow: u32,
}

/// One gateway's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    pub gateway: String,
    pub state: BreakerState,
    /// When an open breaker half-opens.
    pub until: Millis,
    /// When it last closed (telemetry windows older than this are not held against it).
    pub closed_at: Millis,
    /// The trial attempts in flight (half-open only), at most `trials`.
    trials: Vec<Attempt>,
    pub trial_successes: u32,
    buckets: [Bucket; BUCKETS as usize],
    pub transitions: VecDeque<Transition>,
}

/// Counts over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub requests: u32,
    pub errors: u32,
    pub slow: u32,
}

impl Breaker {
    fn new(gateway: &str) -> Self {
        Self {
            gateway: gateway.to_owned(),
            state: BreakerState::Closed,
            until: 0,
            closed_at: 0,
            trials: Vec::new(),
            trial_successes: 0,
            buckets: [Bucket::default(); BUCKETS as usize],
            transitions: VecDeque::new(),
        }
    }

    fn bucket_ms(config: &BreakerConfig) -> u64 {
        (config.window.as_millis() as u64 / BUCKETS).max(1)
    }

    /// Requests, errors and slow calls over the window ending `now`.
    pub fn counts(&self, now: Millis, config: &BreakerConfig) -> WindowCounts {
        let current = now / Self::bucket_ms(config);
        let mut counts = WindowCounts::default();
        for bucket in &self.buckets {
            if bucket.epoch + BUCKETS > current && bucket.epoch <= current {
                counts.requests += bucket.requests;
                counts.errors += bucket.errors;
                counts.slow += bucket.slow;
            }
        }
        counts
    }

    fn change(&mut self, now: Millis, to: BreakerState, reason: String) -> Transition {
        let transition = Transition {
            gateway: self.gateway.clone(),
            at: now,
            from: self.state,
            to,
            reason,
        };
        self.state = to;
        self.trials.clear();
        self.trial_successes = 0;
        if to == BreakerState::Closed {
            self.closed_at = now;
            self.buckets = [Bucket::default(); BUCKETS as usize];
        }
        if self.transitions.len() == TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        self.transitions.push_back(transition.clone());
        transition
    }

    fn open(&mut self, now: Millis, config: &BreakerConfig, reason: String) -> Transition {
        self.until = now + config.open_for.as_millis() as u64;
        self.change(now, BreakerState::Open, reason)
    }

    /// Trial attempts in flight.
    pub fn trials_in_flight(&self) -> u32 {
        self.trials.len() as u32
    }

    /// One attempt at the gateway ended: `failed` is its verdict (`None`: it ended without
    /// one, e.g. its agent was lost or it was cancelled).
    fn record(
        &mut self,
        now: Millis,
        config: &BreakerConfig,
        attempt: Attempt,
        failed: Option<bool>,
        latency_ms: u64,
    ) -> Option<Transition> {
        match self.state {
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                // Only a trial decides: an answer to an attempt sent before the breaker
                // opened says nothing about the gateway now.
                let trial = self.trials.iter().position(|t| *t == attempt)?;
                self.trials.swap_remove(trial);
                if failed? {
                    return Some(self.open(now, config, "a trial task failed".into()));
                }
                self.trial_successes += 1;
                (self.trial_successes >= config.trials).then(|| {
                    let reason = format!("{} trial tasks succeeded", self.trial_successes);
                    self.change(now, BreakerState::Closed, reason)
                })
            }
            BreakerState::Closed => {
                let failed = failed?;
                let epoch = now / Self::bucket_ms(config);
                let bucket = &mut self.buckets[(epoch % BUCKETS) as usize];
                if bucket.epoch != epoch {
                    *bucket = Bucket {
                        epoch,
                        ..Bucket::default()
                    };
                }
                bucket.requests += 1;
                bucket.errors += u32::from(failed);
                bucket.slow += u32::from(latency_ms >= config.slow_call.as_millis() as u64);
                let counts = self.counts(now, config);
                let reason = over_threshold(counts, config)?;
                Some(self.open(now, config, reason))
            }
        }
    }
}

/// Why these counts open a breaker, if they do.
fn over_threshold(counts: WindowCounts, config: &BreakerConfig) -> Option<String> {
    if counts.requests < config.min_requests.max(1) {
        return None;
    }
    let rate = |n: u32| f64::from(n) / f64::from(counts.requests);
    if rate(counts.errors) >= config.error_rate {
        return Some(format!(
            "{} of {} requests failed in the window",
            counts.errors, counts.requests
        ));
    }
    if rate(counts.slow) >= config.slow_rate {
        return Some(format!(
            "{} of {} requests took {} ms or more",
            counts.slow,
            counts.requests,
            config.slow_call.as_millis()
        ));
    }
    None
}

/// Every gateway's breaker.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    pub config: BreakerConfig,
    by_gateway: HashMap<String, Breaker>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            by_gateway: HashMap::new(),
        }
    }

    pub fn get(&self, gateway: &str) -> Option<&Breaker> {
        self.by_gateway.get(gateway)
    }

    /// Every breaker, by gateway name.
    pub fn all(&self) -> Vec<&Breaker> {
        let mut all: Vec<_> = self.by_gateway.values().collect();
        all.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        all
    }

    /// Whether a task may go to `gateway` now.
    pub fn allows(&self, gateway: &str) -> bool {
        match self.by_gateway.get(gateway) {
            None => true,
            Some(breaker) => match breaker.state {
                BreakerState::Closed => true,
                BreakerState::Open => false,
                BreakerState::HalfOpen => breaker.trials_in_flight() < self.config.trials,
            },
        }
    }

    /// An attempt went to `gateway`: while half-open, it is one of the trials.
    pub fn dispatched(&mut self, gateway: &str, attempt: Attempt) {
        if let Some(breaker) = self.by_gateway.get_mut(gateway)
            && breaker.state == BreakerState::HalfOpen
        {
            breaker.trials.push(attempt);
        }
    }

    /// An attempt at `gateway` ended: with an answer or a timeout (`failed` says whether
    /// it may be the gateway's fault), or without a verdict (`None`: its agent was lost,
    /// it was cancelled, refused or replaced), which only frees its trial place.
    pub fn record(
        &mut self,
        gateway: &str,
        now: Millis,
        attempt: Attempt,
        failed: Option<bool>,
        latency_ms: u64,
    ) -> Option<Transition> {
        let config = self.config;
        // Every answer lands here: allocate the gateway's name once, on its first answer.
        if !self.by_gateway.contains_key(gateway) {
            self.by_gateway
                .insert(gateway.to_owned(), Breaker::new(gateway));
        }
        self.by_gateway
            .get_mut(gateway)?
            .record(now, &config, attempt, failed, latency_ms)
    }

    /// A telemetry report over `window_ms`: opens a closed breaker when its counts pass
    /// the thresholds and the whole window is after the breaker last closed (an older
    /// window still holds the failures that opened it before).
    pub fn report(
        &mut self,
        gateway: &str,
        now: Millis,
        window_ms: u64,
        counts: WindowCounts,
    ) -> Option<Transition> {
        let config = self.config;
        let breaker = self
            .by_gateway
            .entry(gateway.to_owned())
            .or_insert_with(|| Breaker::new(gateway));
        if breaker.state != BreakerState::Closed
            || now.saturating_sub(window_ms) < breaker.closed_at
        {
            return None;
        }
        let reason = over_threshold(counts, &config)?;
        Some(breaker.open(now, &config, format!("telemetry: {reason}")))
    }

    /// Drains `gateway`: its breaker is held open until `until` (remediation reroutes).
    pub fn hold(&mut self, gateway: &str, now: Millis, until: Millis, reason: &str) -> Transition {
        let breaker = self
            .by_gateway
            .entry(gateway.to_owned())
            .or_insert_with(|| Breaker::new(gateway));
        breaker.until = until;
        breaker.change(now, BreakerState::Open, format!("drained: {reason}"))
    }

    /// Ends a drain (or an open breaker's cool-down) now: half-open, trials decide.
    pub fn release(&mut self, gateway: &str, now: Millis, reason: &str) -> Option<Transition> {
        let breaker = self.by_gateway.get_mut(gateway)?;
        (breaker.state == BreakerState::Open)
            .then(|| breaker.change(now, BreakerState::HalfOpen, format!("released: {reason}")))
    }

    /// Open breakers whose cool-down ended half-open.
    pub fn advance(&mut self, now: Millis) -> Vec<Transition> {
        let mut changed = Vec::new();
        for breaker in self.by_gateway.values_mut() {
            if breaker.state == BreakerState::Open && breaker.until <= now {
                changed.push(breaker.change(
                    now,
                    BreakerState::HalfOpen,
                    "cool-down over: trial tasks may go".into(),
                ));
            }
        }
        changed
    }

    /// When the next open breaker half-opens.
    pub fn next_change(&self) -> Option<Millis> {
        self.by_gateway
            .values()
            .filter(|b| b.state == BreakerState::Open)
            .map(|b| b.until)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkflowId;

    /// Attempt 1 of task 0 of workflow `n`.
    fn attempt(n: u128) -> Attempt {
        let slot = Slot {
            workflow: WorkflowId(n),
            task: 0,
            compensation: false,
        };
        (slot, 1)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_requests: 4,
            error_rate: 0.5,
            slow_call: Duration::from_secs(2),
            slow_rate: 0.8,
            open_for: Duration::from_secs(5),
            trials: 2,
        }
    }

    #[test]
    fn opens_on_errors_half_opens_after_the_cool_down_and_closes_on_trials() {
        let mut breakers = Breakers::new(config());
        assert!(
            breakers
                .record("alpha", 1_000, attempt(0), Some(false), 10)
                .is_none()
        );
        assert!(
            breakers
                .record("alpha", 1_100, attempt(0), Some(true), 10)
                .is_none()
        );
        assert!(
            breakers
                .record("alpha", 1_200, attempt(0), Some(false), 10)
                .is_none()
        );
        assert!(
            breakers
                .record("alpha", 1_300, attempt(0), Some(false), 10)
                .is_none(),
            "1 of 4"
        );
        assert!(
            breakers
                .record("alpha", 1_400, attempt(0), Some(true), 10)
                .is_none(),
            "2 of 5"
        );
        let opened = breakers
            .record("alpha", 1_500, attempt(0), Some(true), 10)
            .expect("3 of 6 opens it");
        assert_eq!(
            (opened.from, opened.to),
            (BreakerState::Closed, BreakerState::Open)
        );
        assert!(!breakers.allows("alpha"));
        assert!(breakers.allows("beta"), "other gateways are not affected");
        assert_eq!(breakers.next_change(), Some(6_500));
        assert!(breakers.advance(6_499).is_empty());
        let half = breakers.advance(6_500);
        assert_eq!(half[0].to, BreakerState::HalfOpen);
        // Two trials at most, then no more until they answer.
        breakers.dispatched("alpha", attempt(1));
        assert!(breakers.allows("alpha"));
        breakers.dispatched("alpha", attempt(2));
        assert!(!breakers.allows("alpha"));
        assert!(
            breakers
                .record("alpha", 6_500, attempt(0), Some(false), 10)
                .is_none(),
            "not a trial: sent before the breaker opened"
        );
        assert!(!breakers.allows("alpha"));
        assert!(
            breakers
                .record("alpha", 6_500, attempt(1), Some(false), 10)
                .is_none()
        );
        let closed = breakers
            .record("alpha", 6_600, attempt(2), Some(false), 10)
            .expect("closes");
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(breakers.get("alpha").unwrap().transitions.len(), 3);
        assert_eq!(
            breakers.get("alpha").unwrap().counts(6_600, &config()),
            WindowCounts::default(),
            "the window starts empty"
        );
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let mut breakers = Breakers::new(config());
        for at in 0..4 {
            breakers.record("alpha", at, attempt(0), Some(true), 10);
        }
        assert!(!breakers.allows("alpha"));
        breakers.advance(10_000);
        breakers.dispatched("alpha", attempt(1));
        let reopened = breakers
            .record("alpha", 10_100, attempt(1), Some(true), 10)
            .expect("reopens");
        assert_eq!(reopened.to, BreakerState::Open);
        assert_eq!(breakers.next_change(), Some(15_100));
    }

    #[test]
    fn slow_calls_open_it_and_old_requests_leave_the_window() {
        let mut breakers = Breakers::new(config());
        // Errors older than the window do not count.
        for at in 0..3 {
            breakers.record("alpha", at, attempt(0), Some(true), 10);
        }
        for at in 0..3 {
            assert!(
                breakers
                    .record("alpha", 20_000 + at, attempt(0), Some(false), 10)
                    .is_none()
            );
        }
        assert!(breakers.allows("alpha"));
        for at in 0..4 {
            breakers.record("beta", 30_000 + at, attempt(0), Some(false), 2_500);
        }
        assert!(!breakers.allows("beta"), "every call was slow");
    }

    #[test]
    fn a_drain_holds_it_open_until_released() {
        let mut breakers = Breakers::new(config());
        let drained = breakers.hold("alpha", 1_000, 601_000, "remediation");
        assert_eq!(drained.to, BreakerState::Open);
        assert!(!breakers.allows("alpha"));
        // The usual cool-down (5 s) does not end a drain.
        assert!(breakers.advance(10_000).is_empty());
        let released = breakers
            .release("alpha", 20_000, "probe healthy")
            .expect("released");
        assert_eq!(released.to, BreakerState::HalfOpen);
        assert!(breakers.allows("alpha"));
        assert!(
            breakers.release("alpha", 20_001, "again").is_none(),
            "already half-open"
        );
        assert!(breakers.release("beta", 20_001, "never seen").is_none());
    }

    #[test]
    fn telemetry_opens_it_but_not_with_a_window_from_before_it_closed() {
        let mut breakers = Breakers::new(config());
        let failing = WindowCounts {
            requests: 10,
            errors: 9,
            slow: 0,
        };
        let opened = breakers
            .report("alpha", 40_000, 30_000, failing)
            .expect("opens");
        assert!(
            opened.reason.starts_with("telemetry: 9 of 10"),
            "{}",
            opened.reason
        );
        breakers.advance(45_000);
        breakers.dispatched("alpha", attempt(1));
        breakers.dispatched("alpha", attempt(2));
        breakers.record("alpha", 45_100, attempt(1), Some(false), 10);
        breakers.record("alpha", 45_200, attempt(2), Some(false), 10);
        assert!(breakers.allows("alpha"));
        // The same failures, still inside the telemetry window: not held against it.
        assert!(breakers.report("alpha", 50_000, 30_000, failing).is_none());
        assert!(breakers.report("alpha", 75_300, 30_000, failing).is_some());
    }

    #[test]
    fn a_trial_that_ends_without_a_verdict_frees_its_place() {
        let mut breakers = Breakers::new(config());
        breakers.hold("alpha", 0, 1_000, "remediation");
        breakers.release("alpha", 500, "probe healthy");
        breakers.dispatched("alpha", attempt(1));
        breakers.dispatched("alpha", attempt(2));
        assert!(!breakers.allows("alpha"), "both trials in flight");
        // The execution unit running both is killed: no answer will come.
        assert!(breakers.record("alpha", 600, attempt(1), None, 0).is_none());
        assert!(breakers.record("alpha", 600, attempt(2), None, 0).is_none());
        assert!(
            breakers.allows("alpha"),
            "the lost trials free their places"
        );
        assert_eq!(breakers.get("alpha").unwrap().trials_in_flight(), 0);
        breakers.dispatched("alpha", attempt(3));
        breakers.dispatched("alpha", attempt(4));
        breakers.record("alpha", 700, attempt(3), Some(false), 10);
        let closed = breakers
            .record("alpha", 800, attempt(4), Some(false), 10)
            .expect("the new trials close it");
        assert_eq!(closed.to, BreakerState::Closed);
    }
}
