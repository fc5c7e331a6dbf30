//! Remediation: rules that start workflows when something goes wrong, run by service
//! agents. A rule is a trigger and a workflow to start (`name@version` and an input
//! template); the rules come from a YAML file the operator can read and change
//! (`--remediation-rules`), with shipped defaults (`control-unit/remediation/`).
//!
//! Remediation runs are ordinary workflows: durable, listed, traced, labelled with the
//! trigger, the rule and the subject. At most one runs per rule and subject at a time.
//! Owned by the actor, which hands it the core's breaker transitions after each commit.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::WorkflowId;
use crate::scheduler::Scheduler;
use crate::scheduler::breaker::{BreakerState, Transition};

/// The rules shipped with Paygrid.
pub const DEFAULT_RULES: &str = include_str!("../remediation/rules.yaml");

/// The workflows the shipped rules start, registered in the catalog at start.
pub const SHIPPED_SPECS: &[&str] = &[
    include_str!("../remediation/remediate-gateway.yaml"),
    include_str!("../remediation/void-stale-authorization.yaml"),
    include_str!("../remediation/alert-stuck-workflow.yaml"),
    include_str!("../remediation/cancel-stuck-workflow.yaml"),
    include_str!("../remediation/alert-reconciliation.yaml"),
    include_str!("../remediation/reconcile-gateway.yaml"),
    include_str!("../remediation/close-and-reconcile.yaml"),
];

/// Labels every remediation workflow carries.
pub const LABEL_TRIGGER: &str = "trigger";
pub const LABEL_RULE: &str = "remediation.rule";
pub const LABEL_SUBJECT: &str = "remediation.subject";

/// What starts a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A gateway's circuit breaker opened (closed → open); the subject is the gateway.
    BreakerOpened,
    /// A running workflow holds an authorization (a succeeded task's output with
    /// `authorization_id` and `status: authorized`) that no later task captured or
    /// voided, for longer than the rule's `after`; the subject is the authorization.
    AuthorizationStale,
    /// A running workflow made no progress for longer than the rule's `after` while
    /// some of its tasks wait (no agent for the skill, an open breaker); the subject is
    /// the workflow. Remediation workflows themselves are not watched.
    WorkflowStuck,
    /// A reconciliation run (a `reconcile.gateway` task) found mismatches; the subject is
    /// the gateway.
    ReconciliationMismatch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BreakerOpened => "breaker_opened",
            Self::AuthorizationStale => "authorization_stale",
            Self::WorkflowStuck => "workflow_stuck",
            Self::ReconciliationMismatch => "reconciliation_mismatch",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub on: Trigger,
    /// The workflow to start, `name@version`.
    pub start: String,
    /// Its input; strings may hold `{{ trigger.FIELD }}`.
    #[serde(default)]
    pub input: serde_json::Map<String, Value>,
    /// For `authorization_stale`: how old an open authorization may get (e.g. `7d`).
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

impl Rules {
    /// Parses a rules file; errors name the rule and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rules: Self =
            serde_norway::from_str(text).map_err(|e| format!("remediation rules: {e}"))?;
        let mut names = std::collections::HashSet::new();
        for rule in &rules.rules {
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return Err(format!(
                    "remediation rules: rule names must be unique and not empty (`{}`)",
                    rule.name
                ));
            }
            let valid_ref = rule
                .start
                .rsplit_once('@')
                .is_some_and(|(name, version)| !name.is_empty() && version.parse::<u32>().is_ok());
            if !valid_ref {
                return Err(format!(
                    "remediation rule `{}`: start `{}` is not NAME@VERSION",
                    rule.name, rule.start
                ));
            }
            match (rule.on, rule.after.as_deref()) {
                (Trigger::AuthorizationStale | Trigger::WorkflowStuck, None) => {
                    return Err(format!(
                        "remediation rule `{}`: {} needs `after` (e.g. 1h)",
                        rule.name,
                        rule.on.as_str()
                    ));
                }
                (_, Some(after)) => {
                    crate::spec::duration::parse_duration(after)
                        .map_err(|e| format!("remediation rule `{}`: after: {e}", rule.name))?;
                }
                _ => {}
            }
        }
        Ok(rules)
    }

    /// How often the stale-authorization rules need a scan: a quarter of the shortest
    /// `after`, between 1 s and 60 s; `None` without such rules.
    pub fn scan_interval(&self) -> Option<std::time::Duration> {
        self.rules
            .iter()
            .filter(|r| matches!(r.on, Trigger::AuthorizationStale | Trigger::WorkflowStuck))
            .filter_map(|r| crate::spec::duration::parse_duration(r.after.as_deref()?).ok())
            .min()
            .map(|after| {
                (after / 4).clamp(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                )
            })
    }

    pub fn defaults() -> Self {
        Self::parse(DEFAULT_RULES).expect("the shipped remediation rules parse")
    }
}

/// A remediation workflow to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub rule: String,
    pub trigger: Trigger,
    pub subject: String,
    pub spec_ref: String,
    pub input: Value,
    /// The start's idempotency key: one workflow per trigger occurrence.
    pub key: String,
}

/// The rules, and which remediation runs for which subject.
#[derive(Debug)]
pub struct Remediation {
    rules: Rules,
    running: HashMap<(String, String), WorkflowId>,
}

impl Remediation {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            running: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// After a restart: the remediation workflows still running.
    pub fn recover(&mut self, core: &Scheduler) {
        for workflow in core.workflows() {
            if workflow.status.is_terminal() {
                continue;
            }
            if let (Some(rule), Some(subject)) = (
                workflow.labels.get(LABEL_RULE),
                workflow.labels.get(LABEL_SUBJECT),
            ) {
                self.running
                    .insert((rule.clone(), subject.clone()), workflow.id);
            }
        }
    }

    /// The workflows a breaker transition starts: on closed → open (a drain, which
    /// remediation itself asks for, starts nothing), one per matching rule whose last run
    /// for this gateway has ended.
    pub fn on_breaker(&self, transition: &Transition, core: &Scheduler) -> Vec<Start> {
        if (transition.from, transition.to) != (BreakerState::Closed, BreakerState::Open) {
            return Vec::new();
        }
        let fields = [
            ("gateway", transition.gateway.as_str()),
            ("reason", transition.reason.as_str()),
        ];
        self.rules
            .rules
            .iter()
            .filter(|rule| rule.on == Trigger::BreakerOpened)
            .filter(|rule| !self.is_running(&rule.name, &transition.gateway, core))
            .map(|rule| Start {
                rule: rule.name.clone(),
                trigger: rule.on,
                subject: transition.gateway.clone(),
                spec_ref: rule.start.clone(),
                input: fill(&Value::Object(rule.input.clone()), &fields),
                key: format!(
                    "remediation:{}:{}:{}",
                    rule.name, transition.gateway, transition.at
                ),
            })
            .collect()
    }

    /// The workflows a reconciliation run with mismatches starts: one per matching rule
    /// whose last run for this gateway has ended, once per run (its key names the run).
    pub fn on_reconciled(
        &self,
        summary: &crate::reconciliation::Summary,
        core: &Scheduler,
    ) -> Vec<Start> {
        if summary.mismatch_count() == 0 {
            return Vec::new();
        }
        let (workflow, count, found) = (
            summary.workflow.to_string(),
            summary.mismatch_count().to_string(),
            summary.describe(),
        );
        let fields = [
            ("gateway", summary.gateway.as_str()),
            ("as_of", summary.as_of.as_str()),
            ("workflow_id", workflow.as_str()),
            ("mismatch_count", count.as_str()),
            ("mismatches", found.as_str()),
        ];
        self.rules
            .rules
            .iter()
            .filter(|rule| rule.on == Trigger::ReconciliationMismatch)
            .filter(|rule| !self.is_running(&rule.name, &summary.gateway, core))
            .map(|rule| Start {
                rule: rule.name.clone(),
                trigger: rule.on,
                subject: summary.gateway.clone(),
                spec_ref: rule.start.clone(),
                input: fill(&Value::Object(rule.input.clone()), &fields),
                key: format!("remediation:{}:{}:{workflow}", rule.name, summary.gateway),
            })
            .collect()
    }

    /// Authorizations older than a stale-authorization rule allows, held by running
    /// workflows: one start per rule and authorization (its key has no time in it, so an
    /// authorization is remediated once, also across restarts).
    pub fn scan(&self, core: &Scheduler, now: u64) -> Vec<Start> {
        let mut starts = Vec::new();
        for rule in &self.rules.rules {
            let Some(after) = rule
                .after
                .as_deref()
                .and_then(|a| crate::spec::duration::parse_duration(a).ok())
            else {
                continue;
            };
            let after = after.as_millis() as u64;
            for workflow in core.workflows() {
                if workflow.status != crate::model::WorkflowStatus::Running {
                    continue;
                }
                match rule.on {
                    Trigger::AuthorizationStale => {
                        starts.extend(self.stale_authorizations(rule, workflow, core, now, after));
                    }
                    Trigger::WorkflowStuck => {
                        starts.extend(self.stuck(rule, workflow, core, now, after));
                    }
                    Trigger::BreakerOpened | Trigger::ReconciliationMismatch => {}
                }
            }
        }
        starts
    }

    fn stale_authorizations(
        &self,
        rule: &Rule,
        workflow: &crate::scheduler::Workflow,
        core: &Scheduler,
        now: u64,
        after: u64,
    ) -> Vec<Start> {
        let mut starts = Vec::new();
        for open in open_authorizations(workflow) {
            if now.saturating_sub(open.at) < after
                || self.is_running(&rule.name, &open.authorization_id, core)
            {
                continue;
            }
            let workflow_id = workflow.id.to_string();
            let fields = [
                ("workflow_id", workflow_id.as_str()),
                ("authorization_id", open.authorization_id.as_str()),
                ("gateway", open.gateway.as_str()),
                ("task_id", open.task_id.as_str()),
            ];
            starts.push(Start {
                rule: rule.name.clone(),
                trigger: rule.on,
                subject: open.authorization_id.clone(),
                spec_ref: rule.start.clone(),
                input: fill(&Value::Object(rule.input.clone()), &fields),
                key: format!("remediation:{}:{}", rule.name, open.authorization_id),
            });
        }
        starts
    }

    /// A workflow with waiting tasks and no change for `after`: once per stuck period
    /// (the key holds the time of its last change).
    fn stuck(
        &self,
        rule: &Rule,
        workflow: &crate::scheduler::Workflow,
        core: &Scheduler,
        now: u64,
        after: u64,
    ) -> Option<Start> {
        if workflow.labels.contains_key(LABEL_RULE)
            || now.saturating_sub(workflow.updated_at) < after
        {
            return None;
        }
        let waiting: Vec<String> = workflow
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.run.status == crate::model::TaskStatus::Ready)
            .map(|(index, _)| workflow.task_id(index as u32).to_owned())
            .collect();
        let subject = workflow.id.to_string();
        if waiting.is_empty() || self.is_running(&rule.name, &subject, core) {
            return None;
        }
        let reason = waiting
            .iter()
            .map(|task| {
                let slot = crate::scheduler::Slot {
                    workflow: workflow.id,
                    task: workflow.spec.task_index(task).unwrap_or(0),
                    compensation: false,
                };
                format!("{task}: {}", core.waiting_reason(slot))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let idle = format!("{}s", now.saturating_sub(workflow.updated_at) / 1000);
        let fields = [
            ("workflow_id", subject.as_str()),
            ("workflow_name", workflow.spec.name.as_str()),
            ("reason", reason.as_str()),
            ("idle", idle.as_str()),
        ];
        Some(Start {
            rule: rule.name.clone(),
            trigger: rule.on,
            subject: subject.clone(),
            spec_ref: rule.start.clone(),
            input: fill(&Value::Object(rule.input.clone()), &fields),
            key: format!(
                "remediation:{}:{}:{}",
                rule.name, subject, workflow.updated_at
            ),
        })
    }

    pub fn started(&mut self, start: &Start, id: WorkflowId) {
        self.running
            .insert((start.rule.clone(), start.subject.clone()), id);
    }

    fn is_running(&self, rule: &str, subject: &str, core: &Scheduler) -> bool {
        self.running
            .get(&(rule.to_owned(), subject.to_owned()))
            .and_then(|id| core.workflow(*id))
            .is_some_and(|w| !w.status.is_terminal())
    }
}

/// An authorization a workflow holds and has not captured or voided.
struct OpenAuthorization {
    authorization_id: String,
    gateway: String,
    task_id: String,
    /// When the task that made it finished.
    at: u64,
}

fn open_authorizations(workflow: &crate::scheduler::Workflow) -> Vec<OpenAuthorization> {
    use crate::model::TaskStatus;
    let mut open = Vec::new();
    let mut settled = std::collections::HashSet::new();
    for (index, task) in workflow.tasks.iter().enumerate() {
        if task.run.status != TaskStatus::Succeeded {
            continue;
        }
        // Most outputs name no authorization: skip the parse.
        let Some(output) = task
            .run
            .output
            .as_deref()
            .filter(|o| o.contains("authorization_id"))
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
        else {
            continue;
        };
        let Some(id) = output["authorization_id"].as_str() else {
            continue;
        };
        match output["status"].as_str() {
            Some("authorized") => open.push(OpenAuthorization {
                authorization_id: id.to_owned(),
                gateway: output["gateway"].as_str().unwrap_or_default().to_owned(),
                task_id: workflow.task_id(index as u32).to_owned(),
                at: task.run.finished_at,
            }),
            Some(_) => {
                settled.insert(id.to_owned());
            }
            None => {}
        }
    }
    open.retain(|o| !settled.contains(&o.authorization_id));
    open
}

/// Replaces `{{ trigger.FIELD }}` in every string of `template`.
fn fill(template: &Value, fields: &[(&str, &str)]) -> Value {
    match template {
        Value::String(text) => {
            let mut text = text.clone();
            for (name, value) in fields {
                for pattern in [
                    format!("{{{{ trigger.{name} }}}}"),
                    format!("{{{{trigger.{name}}}}}"),
                ] {
                    text = text.replace(&pattern, value);
                }
            }
            Value::String(text)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, fields)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, fields)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_parse_and_fill_their_input() {
        let rules = Rules::defaults();
        assert_eq!(rules.rules[0].on, Trigger::BreakerOpened);
        assert_eq!(rules.rules[0].start, "remediate-gateway@1");
        let input = fill(
            &Value::Object(rules.rules[0].input.clone()),
            &[("gateway", "alpha")],
        );
        assert_eq!(input["gateway"], "alpha");
        assert_eq!(input["drain_ms"], 600_000);
        for text in SHIPPED_SPECS {
            crate::spec::compile(text, &crate::spec::SpecLimits::default()).unwrap();
        }
    }

    #[test]
    fn bad_rules_are_named() {
        let error = Rules::parse("rules:\n  - name: x\n    on: breaker_opened\n    start: nope\n")
            .unwrap_err();
        assert!(
            error.contains("rule `x`") && error.contains("NAME@VERSION"),
            "{error}"
        );
        let error =
            Rules::parse("rules:\n  - name: x\n    on: moon_phase\n    start: a@1\n").unwrap_err();
        assert!(error.contains("moon_phase"), "{error}");
    }
}
