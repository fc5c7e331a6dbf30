//! Limits on how much runs at once and how fast: concurrency limits (at most N attempts
//! running) and rate limits (GCRA token buckets) per skill, per gateway and per key, a
//! key being a template over the workflow (`merchant={{ inputs.merchant }}`), so each
//! distinct value has its own count.
//!
//! Owned by the core, with time as an input like everything else in it: a rate limit's
//! bucket is a GCRA "theoretical arrival time" advanced by the dispatch times the core is
//! given, so simulations replay exactly (a clock-reading limiter such as `governor` would
//! not). Checked at dispatch: a rule that names a gateway applies to the agents of that
//! gateway (a routed task overflows to another gateway, a pinned one waits); a rule
//! without one applies to the task whatever agent takes it. A task held back waits in its
//! queue (not an attempt), with the rule in `status`: `waiting: rate limit gateway=alpha
//! 100/s`. Each dispatched attempt holds its concurrency places until it ends, however it
//! ends (answer, timeout, lost agent).
//!
//! Nothing here costs anything when no limit is configured.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;

use super::{Millis, Slot};
use crate::spec::{Scope, Template};

/// The store setting that keeps limits changed at run time.
pub const SETTING: &str = "limits";

/// Which attempts a rule counts.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Only tasks of this skill.
    pub skill: Option<String>,
    /// Only attempts on agents of this gateway (their `gateway` label).
    pub gateway: Option<String>,
    /// A separate count per value of this template (e.g. `merchant={{ inputs.merchant }}`);
    /// a task for which it does not resolve is not counted by the rule.
    pub key: Option<Template>,
    /// The key's source, for messages.
    pub key_text: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConcurrencyRule {
    pub name: String,
    pub selector: Selector,
    pub max: u32,
    /// Places only critical work may take: other work stops at `max - reserve_critical`.
    pub reserve_critical: u32,
}

#[derive(Debug, Clone)]
pub struct RateRule {
    pub name: String,
    pub selector: Selector,
    pub per_second: f64,
    /// Attempts that may start at once above the rate.
    pub burst: u32,
}

/// An adaptive concurrency limit on a gateway (AIMD, as Netflix's concurrency-limits):
/// an answer slower than `latency_target_ms`, a retryable failure or a timeout cuts the
/// limit by `backoff` (default 0.5; at most once per `latency_target_ms`, so one slow
/// burst is one cut); an answer in time while the limit is at least half used raises it
/// by one.
#[derive(Debug, Clone)]
pub struct AdaptiveRule {
    pub name: String,
    pub gateway: String,
    pub initial: u32,
    pub min: u32,
    pub max: u32,
    pub latency_target_ms: u64,
    pub backoff: f64,
}

/// Every limit, as configured.
#[derive(Debug, Clone, Default)]
pub struct LimitRules {
    pub concurrency: Vec<ConcurrencyRule>,
    pub rate: Vec<RateRule>,
    pub adaptive: Vec<AdaptiveRule>,
    /// Within a priority class, ready tasks take turns by this key (round robin).
    pub fairness_key: Option<Template>,
    /// At most `max_active` running workflows per value of this key: past it, `Submit`
    /// is refused for that key (RESOURCE_EXHAUSTED, with a retry hint).
    pub admission: Option<(Template, u32)>,
    /// The document they were parsed from (what `paygrid limits` shows and stores).
    pub source: String,
}

impl LimitRules {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_empty() && self.rate.is_empty() && self.adaptive.is_empty()
    }

    /// The fairness key of a workflow (`""` when it does not resolve: those share a turn).
    pub fn fairness_key(&self, scope: &dyn Scope) -> Option<Arc<str>> {
        let template = self.fairness_key.as_ref()?;
        Some(match template.resolve(scope) {
            Ok(serde_json::Value::String(text)) => Arc::from(text),
            Ok(other) => Arc::from(other.to_string()),
            Err(_) => Arc::from(""),
        })
    }

    /// Parses the limits file (YAML or JSON):
    ///
    /// ```yaml
    /// concurrency:
    ///   - { name: captures-per-merchant, skill: gateway.capture, key: "{{ inputs.merchant }}", max: 2 }
    ///   - { gateway: beta, max: 50 }
    /// rate:
    ///   - { gateway: alpha, per_second: 100, burst: 10 }
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: RawLimits = serde_norway::from_str(text).map_err(|e| format!("limits: {e}"))?;
        let mut rules = Self {
            source: text.to_owned(),
            ..Self::default()
        };
        for (index, rule) in raw.concurrency.into_iter().enumerate() {
            let name = rule
                .name
                .clone()
                .unwrap_or_else(|| default_name(&rule, "concurrency", index));
            if rule.per_second.is_some() || rule.burst.is_some() {
                return Err(format!(
                    "concurrency limit `{name}`: per_second and burst belong to `rate` limits"
                ));
            }
            let max = match rule.max {
                None => return Err(format!("concurrency limit `{name}`: max is required")),
                Some(0) => {
                    return Err(format!(
                        "concurrency limit `{name}`: max must be at least 1"
                    ));
                }
                Some(max) => max,
            };
            let reserve_critical = rule.reserve_critical.unwrap_or(0);
            if reserve_critical >= max {
                return Err(format!(
                    "concurrency limit `{name}`: reserve_critical ({reserve_critical}) must be below max ({max})"
                ));
            }
            rules.concurrency.push(ConcurrencyRule {
                selector: rule.selector(&name)?,
                name,
                max,
                reserve_critical,
            });
        }
        for (index, rule) in raw.rate.into_iter().enumerate() {
            let name = rule
                .name
                .clone()
                .unwrap_or_else(|| default_name(&rule, "rate", index));
            if rule.max.is_some() {
                return Err(format!(
                    "rate limit `{name}`: max belongs to `concurrency` limits"
                ));
            }
            let per_second = rule.per_second.unwrap_or(0.0);
            if !(per_second > 0.0 && per_second.is_finite()) {
                return Err(format!("rate limit `{name}`: per_second must be above 0"));
            }
            rules.rate.push(RateRule {
                selector: rule.selector(&name)?,
                name,
                per_second,
                burst: rule.burst.unwrap_or(1).max(1),
            });
        }
        if let Some(fairness) = raw.fairness {
            rules.fairness_key = Some(
                Template::parse(&serde_json::Value::String(fairness.key))
                    .map_err(|e| format!("fairness: key: {e}"))?,
            );
        }
        if let Some(admission) = raw.admission {
            if admission.max_active == 0 {
                return Err("admission: max_active must be at least 1".into());
            }
            let key = Template::parse(&serde_json::Value::String(admission.key))
                .map_err(|e| format!("admission: key: {e}"))?;
            rules.admission = Some((key, admission.max_active));
        }
        for (index, rule) in raw.adaptive.into_iter().enumerate() {
            let name = rule
                .name
                .clone()
                .unwrap_or_else(|| default_name(&rule, "adaptive", index));
            let Some(gateway) = rule.gateway.clone() else {
                return Err(format!("adaptive limit `{name}`: gateway is required"));
            };
            if rule.skill.is_some() || rule.key.is_some() || rule.per_second.is_some() {
                return Err(format!(
                    "adaptive limit `{name}`: takes gateway, initial, min, max, latency_target_ms and backoff"
                ));
            }
            let min = rule.min.unwrap_or(1).max(1);
            let max = rule.max.unwrap_or(1_000);
            let initial = rule.initial.unwrap_or(min.max(max / 10));
            if max < min || !(min..=max).contains(&initial) {
                return Err(format!(
                    "adaptive limit `{name}`: needs min <= initial <= max (got {min}, {initial}, {max})"
                ));
            }
            // Halved once per latency target, as TCP halves its window once per round trip:
            // a gentler cut (0.9) lets abandoned requests pile up at the gateway faster than
            // the limit comes down (docs/benchmarks.md, `slowdown`).
            let backoff = rule.backoff.unwrap_or(0.5);
            if !(0.1..1.0).contains(&backoff) {
                return Err(format!(
                    "adaptive limit `{name}`: backoff must be in [0.1, 1), got {backoff}"
                ));
            }
            let latency_target_ms = rule.latency_target_ms.unwrap_or(1_000);
            if latency_target_ms == 0 {
                return Err(format!(
                    "adaptive limit `{name}`: latency_target_ms must be above 0"
                ));
            }
            rules.adaptive.push(AdaptiveRule {
                name,
                gateway,
                initial,
                min,
                max,
                latency_target_ms,
                backoff,
            });
        }
        Ok(rules)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    concurrency: Vec<RawRule>,
    #[serde(default)]
    rate: Vec<RawRule>,
    #[serde(default)]
    adaptive: Vec<RawRule>,
    #[serde(default)]
    fairness: Option<RawFairness>,
    #[serde(default)]
    admission: Option<RawAdmission>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    /// Running workflows are counted per value of this key.
    key: String,
    max_active: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFairness {
    /// Ready tasks of one priority take turns by this key's value.
    key: String,
}

/// One rule as written; which fields it needs depends on its section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    skill: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    key: Option<String>,
    /// Concurrency: attempts running at once.
    #[serde(default)]
    max: Option<u32>,
    /// Rate: attempts started per second, and how many at once above it.
    #[serde(default)]
    per_second: Option<f64>,
    #[serde(default)]
    burst: Option<u32>,
    /// Adaptive: the limit's start, floor, ceiling, latency target and cut.
    #[serde(default)]
    initial: Option<u32>,
    #[serde(default)]
    min: Option<u32>,
    #[serde(default)]
    latency_target_ms: Option<u64>,
    #[serde(default)]
    backoff: Option<f64>,
    /// Concurrency: places kept for critical work.
    #[serde(default)]
    reserve_critical: Option<u32>,
}

impl RawRule {
    fn selector(&self, name: &str) -> Result<Selector, String> {
        let key = match &self.key {
            None => None,
            Some(text) => Some(
                Template::parse(&serde_json::Value::String(text.clone()))
                    .map_err(|e| format!("limit `{name}`: key: {e}"))?,
            ),
        };
        Ok(Selector {
            skill: self.skill.clone(),
            gateway: self.gateway.clone(),
            key,
            key_text: self.key.clone(),
        })
    }
}

fn default_name(select: &RawRule, kind: &str, index: usize) -> String {
    let mut parts = Vec::new();
    if let Some(skill) = &select.skill {
        parts.push(format!("skill={skill}"));
    }
    if let Some(gateway) = &select.gateway {
        parts.push(format!("gateway={gateway}"));
    }
    if let Some(key) = &select.key {
        parts.push(format!("key={key}"));
    }
    if parts.is_empty() {
        format!("{kind}-{index}")
    } else {
        parts.join(" ")
    }
}

/// One count: a rule and the key value it counts under ("" without a key).
type Counted = (usize, Arc<str>);

/// Limits and what they count now.
#[derive(Debug, Default)]
pub struct Limits {
    rules: LimitRules,
    /// Attempts running per concurrency rule and key.
    running: HashMap<Counted, u32>,
    /// GCRA theoretical arrival time (ms, fractional) per rate rule and key.
    tat: HashMap<Counted, f64>,
    /// What each dispatched attempt holds, released when it ends.
    held: HashMap<(Slot, u32), Vec<Counted>>,
    /// Skills with a task held back by a limit: looked at again when a place frees or a
    /// rate bucket refills.
    blocked: HashSet<Arc<str>>,
    /// When the earliest held-back rate limit lets a task through.
    wake_at: Option<Millis>,
    /// Each adaptive rule's limit now, and what runs under it.
    adaptive: Vec<Adaptive>,
    /// Running workflows per admission key value.
    admitted: HashMap<Arc<str>, u32>,
    /// The adaptive rule each dispatched attempt counts under.
    held_adaptive: HashMap<(Slot, u32), usize>,
}

/// An adaptive limit's state.
#[derive(Debug, Clone, Default)]
pub struct Adaptive {
    pub limit: f64,
    pub running: u32,
    last_cut: Option<Millis>,
}

impl Adaptive {
    /// The whole attempts it lets run.
    pub fn allowed(&self) -> u32 {
        self.limit.floor() as u32
    }
}

/// Why a task may not go to an agent now.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub reason: String,
    /// For a rate limit: when it lets the next attempt through.
    pub retry_at: Option<Millis>,
}

impl Limits {
    pub fn new(rules: LimitRules) -> Self {
        let adaptive = rules
            .adaptive
            .iter()
            .map(|rule| Adaptive {
                limit: f64::from(rule.initial),
                ..Adaptive::default()
            })
            .collect();
        Self {
            rules,
            adaptive,
            ..Self::default()
        }
    }

    /// The admission key of a workflow, when admission is limited per key.
    fn admission_key(&self, scope: &dyn Scope) -> Option<(Arc<str>, u32)> {
        let (template, max) = self.rules.admission.as_ref()?;
        // A workflow the key does not apply to (no such input) is not counted.
        let key = match template.resolve(scope).ok()? {
            serde_json::Value::String(text) => Arc::from(text),
            other => Arc::from(other.to_string()),
        };
        Some((key, *max))
    }

    /// A new workflow asks to run: counted under its key, or refused with the key and
    /// its count when the key is at its share.
    pub fn admit(&mut self, scope: &dyn Scope) -> Result<(), (String, u32, u32)> {
        let Some((key, max)) = self.admission_key(scope) else {
            return Ok(());
        };
        let active = self.admitted.entry(key.clone()).or_insert(0);
        if *active >= max {
            return Err((key.to_string(), *active, max));
        }
        *active += 1;
        Ok(())
    }

    /// A workflow counted before (restored after a restart, or recounted) runs.
    pub fn readmit(&mut self, scope: &dyn Scope) {
        if let Some((key, _)) = self.admission_key(scope) {
            *self.admitted.entry(key).or_insert(0) += 1;
        }
    }

    /// A workflow ended: its key's count goes down.
    pub fn finished(&mut self, scope: &dyn Scope) {
        if let Some((key, _)) = self.admission_key(scope)
            && let Some(active) = self.admitted.get_mut(&key)
        {
            *active = active.saturating_sub(1);
            if *active == 0 {
                self.admitted.remove(&key);
            }
        }
    }

    /// The adaptive rule of `gateway`, if it has one.
    fn adaptive_of(&self, gateway: Option<&str>) -> Option<usize> {
        let gateway = gateway?;
        self.rules
            .adaptive
            .iter()
            .position(|r| r.gateway == gateway)
    }

    /// An answer (or timeout) from an agent of `gateway`: the adaptive limit learns from
    /// its latency and whether it failed.
    pub fn sample(&mut self, now: Millis, gateway: &str, latency_ms: u64, failed: bool) {
        let Some(index) = self.adaptive_of(Some(gateway)) else {
            return;
        };
        let rule = &self.rules.adaptive[index];
        let state = &mut self.adaptive[index];
        if failed || latency_ms > rule.latency_target_ms {
            let cooled = state
                .last_cut
                .is_none_or(|at| now >= at + rule.latency_target_ms);
            if cooled {
                state.limit = (state.limit * rule.backoff).max(f64::from(rule.min));
                state.last_cut = Some(now);
            }
        } else if state.running * 2 >= state.allowed() {
            state.limit = (state.limit + 1.0).min(f64::from(rule.max));
        }
    }

    /// Each adaptive limit now: (rule, gateway, limit, running, min, max, target ms).
    pub fn adaptive(&self) -> Vec<(&AdaptiveRule, &Adaptive)> {
        self.rules.adaptive.iter().zip(&self.adaptive).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &LimitRules {
        &self.rules
    }

    /// The counts an attempt of `skill` for the workflow in `scope` on an agent of
    /// `gateway` would take: (concurrency, rate), each with its key value.
    fn applicable(
        &self,
        skill: &str,
        gateway: Option<&str>,
        scope: &dyn Scope,
    ) -> (Vec<Counted>, Vec<Counted>) {
        let selects = |selector: &Selector| -> Option<Arc<str>> {
            if selector.skill.as_deref().is_some_and(|s| s != skill) {
                return None;
            }
            if let Some(wanted) = &selector.gateway
                && gateway != Some(wanted.as_str())
            {
                return None;
            }
            match &selector.key {
                None => Some(Arc::from("")),
                Some(template) => match template.resolve(scope).ok()? {
                    serde_json::Value::String(text) => Some(Arc::from(text)),
                    other => Some(Arc::from(other.to_string())),
                },
            }
        };
        let concurrency = self
            .rules
            .concurrency
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| selects(&rule.selector).map(|key| (i, key)))
            .collect();
        let rate = self
            .rules
            .rate
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| selects(&rule.selector).map(|key| (i, key)))
            .collect();
        (concurrency, rate)
    }

    /// Whether an attempt may start now on an agent of `gateway` (`None`: an agent of no
    /// gateway, or the task-wide check before an agent is chosen).
    pub fn check(
        &self,
        now: Millis,
        skill: &str,
        gateway: Option<&str>,
        scope: &dyn Scope,
        critical: bool,
    ) -> Result<(), Held> {
        if self.rules.is_empty() {
            return Ok(());
        }
        if let Some(index) = self.adaptive_of(gateway) {
            let state = &self.adaptive[index];
            if state.running >= state.allowed() {
                let rule = &self.rules.adaptive[index];
                return Err(Held {
                    reason: format!(
                        "waiting: adaptive limit {} ({} of {} running; answers slower than {} ms or failing cut it)",
                        rule.name,
                        state.running,
                        state.allowed(),
                        rule.latency_target_ms
                    ),
                    retry_at: None,
                });
            }
        }
        let (concurrency, rate) = self.applicable(skill, gateway, scope);
        for counted in &concurrency {
            let rule = &self.rules.concurrency[counted.0];
            let running = self.running.get(counted).copied().unwrap_or(0);
            let cap = if critical {
                rule.max
            } else {
                rule.max - rule.reserve_critical
            };
            if running >= cap {
                let kept = if critical || rule.reserve_critical == 0 {
                    String::new()
                } else {
                    format!("; {} kept for critical work", rule.reserve_critical)
                };
                return Err(Held {
                    reason: format!(
                        "waiting: concurrency limit {}{} ({running} of {} running{kept})",
                        rule.name,
                        key_suffix(&counted.1),
                        rule.max
                    ),
                    retry_at: None,
                });
            }
        }
        for counted in &rate {
            let rule = &self.rules.rate[counted.0];
            let (_, tolerance) = gcra(rule);
            let tat = self.tat.get(counted).copied().unwrap_or(0.0);
            let allowed_at = tat - tolerance;
            if allowed_at > now as f64 {
                return Err(Held {
                    reason: format!(
                        "waiting: rate limit {}{} {}/s",
                        rule.name,
                        key_suffix(&counted.1),
                        rule.per_second
                    ),
                    retry_at: Some(allowed_at.ceil() as Millis),
                });
            }
        }
        Ok(())
    }

    /// The rules change (`paygrid limits set`): the counts start again from the
    /// attempts running now, each given with its skill, its agent's gateway and its
    /// workflow; rate buckets start full.
    pub fn replace<'a>(
        &mut self,
        rules: LimitRules,
        running: impl Iterator<Item = (Slot, u32, &'a str, Option<&'a str>, &'a dyn Scope)>,
    ) {
        *self = Self::new(rules);
        if self.rules.is_empty() {
            return;
        }
        for (slot, attempt, skill, gateway, scope) in running {
            let (concurrency, _) = self.applicable(skill, gateway, scope);
            self.hold(slot, attempt, concurrency);
            self.hold_adaptive(slot, attempt, gateway);
        }
    }

    fn hold(&mut self, slot: Slot, attempt: u32, concurrency: Vec<Counted>) {
        if concurrency.is_empty() {
            return;
        }
        for counted in &concurrency {
            *self.running.entry(counted.clone()).or_insert(0) += 1;
        }
        self.held.insert((slot, attempt), concurrency);
    }

    /// An attempt starts on an agent of `gateway`: it takes its places and tokens (the
    /// caller checked it may).
    pub fn acquire(
        &mut self,
        now: Millis,
        slot: Slot,
        attempt: u32,
        skill: &str,
        gateway: Option<&str>,
        scope: &dyn Scope,
    ) {
        if self.rules.is_empty() {
            return;
        }
        let (concurrency, rate) = self.applicable(skill, gateway, scope);
        for counted in &rate {
            let (interval, _) = gcra(&self.rules.rate[counted.0]);
            let tat = self.tat.entry(counted.clone()).or_insert(0.0);
            *tat = tat.max(now as f64) + interval;
        }
        self.hold(slot, attempt, concurrency);
        self.hold_adaptive(slot, attempt, gateway);
    }

    fn hold_adaptive(&mut self, slot: Slot, attempt: u32, gateway: Option<&str>) {
        if let Some(index) = self.adaptive_of(gateway) {
            self.adaptive[index].running += 1;
            self.held_adaptive.insert((slot, attempt), index);
        }
    }

    /// An attempt ended, however: its places free. Returns the skills to look at again.
    pub fn release(&mut self, slot: Slot, attempt: u32) -> Vec<Arc<str>> {
        let adaptive = self.held_adaptive.remove(&(slot, attempt));
        if let Some(index) = adaptive {
            let state = &mut self.adaptive[index];
            state.running = state.running.saturating_sub(1);
        }
        let counted = self.held.remove(&(slot, attempt));
        for key in counted.iter().flatten() {
            if let Some(running) = self.running.get_mut(key) {
                *running = running.saturating_sub(1);
                if *running == 0 {
                    self.running.remove(key);
                }
            }
        }
        if adaptive.is_none() && counted.is_none() {
            return Vec::new();
        }
        self.blocked.drain().collect()
    }

    /// A task of `skill` was held back: look at it again when a place frees or, for a
    /// rate limit, at `retry_at`.
    pub fn held_back(&mut self, skill: &Arc<str>, retry_at: Option<Millis>) {
        self.blocked.insert(skill.clone());
        if let Some(at) = retry_at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    /// When a rate limit next lets a held-back task through.
    pub fn next_wake(&self) -> Option<Millis> {
        self.wake_at
    }

    /// Time passed: the skills to look at again, if a rate limit refilled.
    pub fn tick(&mut self, now: Millis) -> Vec<Arc<str>> {
        match self.wake_at {
            Some(at) if at <= now => {
                self.wake_at = None;
                self.blocked.drain().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Attempts running under each concurrency rule and key, for `health`.
    pub fn running(&self) -> Vec<(String, String, u32, u32)> {
        let mut rows: Vec<_> = self
            .running
            .iter()
            .map(|((rule, key), n)| {
                let rule = &self.rules.concurrency[*rule];
                (rule.name.clone(), key.to_string(), *n, rule.max)
            })
            .collect();
        rows.sort();
        rows
    }
}

/// GCRA's emission interval and tolerance, in ms.
fn gcra(rule: &RateRule) -> (f64, f64) {
    let interval = 1000.0 / rule.per_second;
    (interval, interval * f64::from(rule.burst.saturating_sub(1)))
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" [{key}]")
    }
}
