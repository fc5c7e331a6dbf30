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
}

#[derive(Debug, Clone)]
pub struct RateRule {
    pub name: String,
    pub selector: Selector,
    pub per_second: f64,
    /// Attempts that may start at once above the rate.
    pub burst: u32,
}

/// Every limit, as configured.
#[derive(Debug, Clone, Default)]
pub struct LimitRules {
    pub concurrency: Vec<ConcurrencyRule>,
    pub rate: Vec<RateRule>,
    /// The document they were parsed from (what `paygrid limits` shows and stores).
    pub source: String,
}

impl LimitRules {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_empty() && self.rate.is_empty()
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
            rules.concurrency.push(ConcurrencyRule {
                selector: rule.selector(&name)?,
                name,
                max,
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
        Self {
            rules,
            ..Self::default()
        }
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
    ) -> Result<(), Held> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let (concurrency, rate) = self.applicable(skill, gateway, scope);
        for counted in &concurrency {
            let rule = &self.rules.concurrency[counted.0];
            let running = self.running.get(counted).copied().unwrap_or(0);
            if running >= rule.max {
                return Err(Held {
                    reason: format!(
                        "waiting: concurrency limit {}{} ({running} of {} running)",
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
    }

    /// An attempt ended, however: its places free. Returns the skills to look at again.
    pub fn release(&mut self, slot: Slot, attempt: u32) -> Vec<Arc<str>> {
        let Some(counted) = self.held.remove(&(slot, attempt)) else {
            return Vec::new();
        };
        for key in counted {
            if let Some(running) = self.running.get_mut(&key) {
                *running = running.saturating_sub(1);
                if *running == 0 {
                    self.running.remove(&key);
                }
            }
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
