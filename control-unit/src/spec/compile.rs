//! From text to [`CompiledSpec`]: deserialize, then check names, durations, the task
//! graph (unknown needs, duplicates, cycles), references and conditions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value};

use super::raw::{RawRetry, RawSpec, RawTask};
use super::source::{Position, SourceMap};
use super::{
    Compensation, CompiledSpec, CompiledTask, Condition, InputDecl, InputType, Reference,
    RetryPolicy, Route, RoutePolicy, SpecError, SpecErrors, SpecLimits, TaskKind, Template,
    content_hash, duration::parse_duration, json_depth,
};
use crate::model::Priority;

mod graph;

/// Output fields of the skills known to the caller (from registered agent cards), so a
/// reference to an output a skill never produces is caught at submit.
pub trait SkillCatalog {
    /// The property names of the skill's output schema, or `None` when unknown.
    fn output_fields(&self, skill: &str) -> Option<Vec<String>>;
}

/// Default attempt timeout when neither the task nor the spec sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an approval waits for a decision unless its spec says.
const APPROVAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Parses and validates a spec document (YAML, or JSON when it starts with `{`).
pub fn compile(text: &str, limits: &SpecLimits) -> Result<CompiledSpec, SpecErrors> {
    if text.len() > limits.spec_bytes_max {
        return Err(SpecErrors(vec![SpecError::new(format!(
            "spec is {} bytes; the limit is {} bytes",
            text.len(),
            limits.spec_bytes_max
        ))]));
    }
    let source = SourceMap::new(text);
    let raw = deserialize(text, &source)?;
    let mut checker = Checker {
        errors: Vec::new(),
        source: &source,
        limits,
    };
    let spec = checker.spec(raw, text);
    match spec {
        Some(spec) if checker.errors.is_empty() => Ok(spec),
        _ => Err(SpecErrors(checker.errors)),
    }
}

fn deserialize(text: &str, source: &SourceMap) -> Result<RawSpec, SpecErrors> {
    let located = |message: String, line: usize, column: usize| {
        let line = line as u32;
        SpecError {
            message,
            task: source.task_at_line(line).map(str::to_owned),
            position: (line > 0).then_some(Position {
                line,
                column: column as u32,
            }),
        }
    };
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|error| {
            let message = strip_location(&error.to_string());
            SpecErrors(vec![located(message, error.line(), error.column())])
        })
    } else {
        serde_norway::from_str(text).map_err(|error| {
            let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = strip_location(&error.to_string());
            SpecErrors(vec![located(message, line, column)])
        })
    }
}

/// serde errors end with "at line X column Y"; the position is reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

struct Checker<'a> {
    errors: Vec<SpecError>,
    source: &'a SourceMap,
    limits: &'a SpecLimits,
}

impl Checker<'_> {
    fn spec_error(&mut self, message: String) {
        self.errors.push(SpecError::new(message));
    }

    fn task_error(&mut self, task: &str, key: Option<&str>, message: String) {
        let position = match key {
            Some(key) => self.source.task_key(task, key),
            None => self.source.task(task),
        };
        self.errors.push(SpecError {
            message,
            task: Some(task.to_owned()),
            position,
        });
    }

    fn spec(&mut self, raw: RawSpec, text: &str) -> Option<CompiledSpec> {
        if raw.api_version != "paygrid/v1" {
            self.spec_error(format!(
                "apiVersion is `{}`; this control unit reads `paygrid/v1`",
                raw.api_version
            ));
        }
        if raw.kind != "Workflow" {
            self.spec_error(format!("kind is `{}`; expected `Workflow`", raw.kind));
        }
        self.name("spec name", &raw.name, None);
        if raw.version == 0 {
            self.spec_error("version must be 1 or more".into());
        }
        let priority = match raw.priority.as_deref().map(str::parse::<Priority>) {
            None => Priority::Normal,
            Some(Ok(priority)) => priority,
            Some(Err(message)) => {
                self.spec_error(message);
                Priority::Normal
            }
        };
        let inputs = self.inputs(&raw.inputs);
        let default_retry = self.retry(None, RetryPolicy::default(), raw.defaults.retry.as_ref());
        let default_timeout = match raw.defaults.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(text) => self
                .duration(None, "timeout", text)
                .unwrap_or(DEFAULT_TIMEOUT),
        };
        if raw.tasks.is_empty() {
            self.spec_error("a workflow needs at least one task".into());
            return None;
        }
        if raw.tasks.len() > self.limits.tasks_max {
            self.spec_error(format!(
                "spec has {} tasks; the limit is {}",
                raw.tasks.len(),
                self.limits.tasks_max
            ));
            return None;
        }
        let index = self.task_index(&raw.tasks);
        let tasks: Vec<CompiledTask> = raw
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| self.task(i as u32, task, &index, default_retry, default_timeout))
            .collect();
        let mut tasks = tasks;
        for i in 0..tasks.len() {
            for need in tasks[i].needs.clone() {
                tasks[need as usize].dependents.push(i as u32);
            }
        }
        let order = self.topological_order(&tasks)?;
        self.check_references(&tasks, &order, &inputs, &raw.tasks);
        Some(CompiledSpec {
            name: raw.name,
            version: raw.version,
            hash: content_hash(text),
            priority,
            description: raw.description,
            inputs,
            tasks,
            labels: raw.labels,
            topological_order: order,
            text: Arc::from(text),
        })
    }

    fn name(&mut self, what: &str, name: &str, task: Option<&str>) {
        let valid = !name.is_empty()
            && name.len() <= self.limits.name_length_max
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            let message = format!(
                "{what} `{name}` must be 1 to {} characters of letters, digits, `-`, `_` or `.`",
                self.limits.name_length_max
            );
            match task {
                Some(task) => self.task_error(task, None, message),
                None => self.spec_error(message),
            }
        }
    }

    fn inputs(&mut self, raw: &BTreeMap<String, super::raw::RawInput>) -> Vec<InputDecl> {
        let mut out = Vec::with_capacity(raw.len());
        for (name, input) in raw {
            let ty = match InputType::parse(&input.ty) {
                Ok(ty) => ty,
                Err(message) => {
                    self.spec_error(format!("input `{name}`: {message}"));
                    continue;
                }
            };
            let pattern = match input.pattern.as_deref().map(Regex::new) {
                None => None,
                Some(Ok(regex)) => Some(regex),
                Some(Err(error)) => {
                    self.spec_error(format!("input `{name}`: invalid pattern: {error}"));
                    None
                }
            };
            let decl = InputDecl {
                name: name.clone(),
                ty,
                minimum: input.minimum.clone(),
                maximum: input.maximum.clone(),
                pattern,
                min_length: input.min_length,
                max_length: input.max_length,
                one_of: input.one_of.clone(),
                default: input.default.clone(),
                required: input.required.unwrap_or(input.default.is_none()),
            };
            if let Some(default) = &decl.default
                && let Err(message) = decl.check(default)
            {
                self.spec_error(format!("default of {message}"));
            }
            out.push(decl);
        }
        out
    }

    fn duration(&mut self, task: Option<&str>, key: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                let message = format!("`{key}`: {message}");
                match task {
                    Some(task) => self.task_error(task, Some(key), message),
                    None => self.spec_error(format!("defaults {message}")),
                }
                None
            }
        }
    }

    fn retry(
        &mut self,
        task: Option<&str>,
        base: RetryPolicy,
        raw: Option<&RawRetry>,
    ) -> RetryPolicy {
        let Some(raw) = raw else { return base };
        let mut policy = base;
        let complain = |checker: &mut Self, message: String| match task {
            Some(task) => checker.task_error(task, Some("retry"), message),
            None => checker.spec_error(format!("defaults {message}")),
        };
        if let Some(attempts) = raw.max_attempts {
            if attempts == 0 || attempts > self.limits.attempts_max {
                complain(
                    self,
                    format!(
                        "retry.max_attempts must be 1 to {}, got {attempts}",
                        self.limits.attempts_max
                    ),
                );
            } else {
                policy.max_attempts = attempts;
            }
        }
        for (key, text, slot) in [
            ("initial", raw.initial.as_deref(), &mut policy.initial),
            ("max", raw.max.as_deref(), &mut policy.max),
        ] {
            if let Some(text) = text {
                match parse_duration(text) {
                    Ok(duration) => *slot = duration,
                    Err(message) => complain(self, format!("`retry.{key}`: {message}")),
                }
            }
        }
        if let Some(multiplier) = raw.multiplier {
            if !(1.0..=10.0).contains(&multiplier) {
                complain(
                    self,
                    format!("retry.multiplier must be 1 to 10, got {multiplier}"),
                );
            } else {
                policy.multiplier = multiplier as f32;
            }
        }
        if policy.initial > policy.max {
            complain(self, "retry.initial is longer than retry.max".into());
        }
        policy
    }

    /// Task id → index; reports duplicate and malformed ids.
    fn task_index(&mut self, tasks: &[RawTask]) -> HashMap<String, u32> {
        let mut index = HashMap::with_capacity(tasks.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            self.name("task id", &task.id, Some(&task.id));
            let count = seen.entry(task.id.as_str()).or_insert(0);
            *count += 1;
            if *count > 1 {
                let first = self.source.task(&task.id);
                let position = self.source.task_occurrence(&task.id, *count - 1);
                self.errors.push(SpecError {
                    message: format!(
                        "duplicate task id `{}`{}",
                        task.id,
                        first.map_or(String::new(), |p| format!(
                            " (first declared at line {})",
                            p.line
                        ))
                    ),
                    task: Some(task.id.clone()),
                    position,
                });
            } else {
                index.insert(task.id.clone(), i as u32);
            }
        }
        index
    }

    fn task(
        &mut self,
        index: u32,
        raw: &RawTask,
        ids: &HashMap<String, u32>,
        default_retry: RetryPolicy,
        default_timeout: Duration,
    ) -> CompiledTask {
        let id = raw.id.as_str();
        let kind = self.kind(raw);
        let needs = self.needs(index, raw, ids);
        let input = match raw.with_input.as_ref() {
            None => self.template(id, "with", None),
            Some(Value::Object(map)) => self.template(id, "with", Some(map)),
            Some(Value::String(text)) if is_whole_template(text) => {
                match Template::parse(&Value::String(text.clone())) {
                    Ok(template) => template,
                    Err(message) => {
                        self.task_error(id, Some("with"), format!("`with`: {message}"));
                        Template::Object(Vec::new())
                    }
                }
            }
            Some(_) => {
                self.task_error(
                    id,
                    Some("with"),
                    "`with` must be a map, or one template for the whole input such as \"{{ inputs.arguments }}\"".into(),
                );
                Template::Object(Vec::new())
            }
        };
        let retry = self.retry(Some(id), default_retry, raw.retry.as_ref());
        let timeout = match raw.timeout.as_deref() {
            None => default_timeout,
            Some(text) => self
                .duration(Some(id), "timeout", text)
                .unwrap_or(default_timeout),
        };
        let route = raw.route.as_ref().map(|route| self.route(id, route));
        let compensate = raw
            .compensate
            .as_ref()
            .map(|compensate| self.compensation(id, compensate, default_retry, timeout));
        let when = self.condition(id, "when", raw.when.as_deref());
        CompiledTask {
            id: raw.id.clone(),
            index,
            kind,
            needs,
            dependents: Vec::new(),
            input,
            retry,
            timeout,
            route,
            compensate,
            when,
            position: self.source.task(id),
        }
    }

    /// A skill, a checkpoint or a wait on other workflows: exactly one.
    fn kind(&mut self, raw: &RawTask) -> TaskKind {
        let id = raw.id.as_str();
        let declared = [
            raw.skill.is_some(),
            raw.checkpoint.is_some(),
            raw.wait_for.is_some(),
            raw.approval.is_some(),
        ]
        .iter()
        .filter(|d| **d)
        .count();
        if declared > 1 {
            self.task_error(
                id,
                None,
                "a task has one of `skill`, `checkpoint`, `waitFor` or `approval`, not several"
                    .into(),
            );
            return TaskKind::Checkpoint { verify: None };
        }
        if let Some(skill) = &raw.skill {
            self.name("skill", skill, Some(id));
            return TaskKind::Skill(skill.clone());
        }
        if let Some(checkpoint) = &raw.checkpoint {
            if let Some(verify) = &checkpoint.verify {
                self.name("verify skill", verify, Some(id));
            }
            return TaskKind::Checkpoint {
                verify: checkpoint.verify.clone(),
            };
        }
        if let Some(wait) = &raw.wait_for {
            return TaskKind::Wait(self.wait_for(id, wait));
        }
        if let Some(approval) = &raw.approval {
            return TaskKind::Approval(self.approval(id, raw, approval));
        }
        self.task_error(
            id,
            None,
            "a task needs a `skill` (or a `checkpoint`, `waitFor` or `approval`)".into(),
        );
        TaskKind::Checkpoint { verify: None }
    }

    fn approval(
        &mut self,
        id: &str,
        task: &RawTask,
        raw: &super::raw::RawApproval,
    ) -> super::Approval {
        for (present, field) in [
            (task.with_input.is_some(), "with"),
            (task.route.is_some(), "route"),
            (task.compensate.is_some(), "compensate"),
            (task.retry.is_some(), "retry"),
        ] {
            if present {
                self.task_error(
                    id,
                    Some(field),
                    format!("an approval task has no `{field}`: a person decides, no agent runs"),
                );
            }
        }
        let prompt = raw.prompt.as_ref().and_then(|text| {
            match Template::parse(&Value::String(text.clone())) {
                Ok(template) => Some(template),
                Err(message) => {
                    self.task_error(id, Some("approval"), format!("prompt: {message}"));
                    None
                }
            }
        });
        let timeout = raw
            .timeout
            .as_deref()
            .and_then(|text| self.duration(Some(id), "approval", text))
            .unwrap_or(APPROVAL_TIMEOUT_DEFAULT);
        let default = match raw.default.as_deref() {
            None => crate::model::Decision::Reject,
            Some(text) => crate::model::Decision::parse(text).unwrap_or_else(|| {
                self.task_error(
                    id,
                    Some("approval"),
                    format!("default `{text}`: use approve or reject"),
                );
                crate::model::Decision::Reject
            }),
        };
        let required_when = self.condition(id, "approval", raw.required_when.as_deref());
        super::Approval {
            prompt,
            timeout,
            default,
            required_when,
        }
    }

    fn wait_for(&mut self, id: &str, raw: &super::raw::RawWaitFor) -> super::WaitFor {
        if raw.labels.is_empty() {
            self.task_error(
                id,
                Some("waitFor"),
                "waitFor needs at least one label".into(),
            );
        }
        if raw.count == 0 || raw.count > 1_000_000 {
            self.task_error(
                id,
                Some("waitFor"),
                format!("waitFor count must be 1 to 1000000, got {}", raw.count),
            );
        }
        let labels = raw
            .labels
            .iter()
            .filter_map(
                |(key, value)| match Template::parse(&Value::String(value.clone())) {
                    Ok(template) => Some((key.clone(), template)),
                    Err(message) => {
                        self.task_error(id, Some("waitFor"), format!("label `{key}`: {message}"));
                        None
                    }
                },
            )
            .collect();
        let timeout = raw
            .timeout
            .as_deref()
            .and_then(|text| self.duration(Some(id), "waitFor", text));
        let continue_on_timeout = match raw.on_timeout.as_deref() {
            None | Some("fail") => false,
            Some("continue") => true,
            Some(other) => {
                self.task_error(
                    id,
                    Some("waitFor"),
                    format!("onTimeout `{other}`: use fail or continue"),
                );
                false
            }
        };
        super::WaitFor {
            labels,
            checkpoint: raw.checkpoint.clone(),
            count: raw.count,
            timeout,
            continue_on_timeout,
        }
    }

    /// Needs as task indexes: known, not itself, not twice, within the limit.
    fn needs(&mut self, index: u32, raw: &RawTask, ids: &HashMap<String, u32>) -> Vec<u32> {
        let id = raw.id.as_str();
        if raw.needs.len() > self.limits.needs_max {
            self.task_error(
                id,
                Some("needs"),
                format!(
                    "{} needs; the limit is {}",
                    raw.needs.len(),
                    self.limits.needs_max
                ),
            );
        }
        let mut needs = Vec::with_capacity(raw.needs.len());
        for need in &raw.needs {
            match ids.get(need) {
                Some(&target) if target == index => {
                    self.task_error(id, Some("needs"), format!("`{id}` needs itself"));
                }
                Some(&target) if needs.contains(&target) => {
                    self.task_error(
                        id,
                        Some("needs"),
                        format!("`{need}` is listed twice in needs"),
                    );
                }
                Some(&target) => needs.push(target),
                None => {
                    let message = format!(
                        "needs unknown task `{need}`{}",
                        suggestion(need, ids.keys())
                    );
                    self.task_error(id, Some("needs"), message);
                }
            }
        }
        needs
    }

    /// A task's compensation: its skill, input, retries (10 attempts by default: an undo
    /// must not give up early), timeout, route and condition.
    fn compensation(
        &mut self,
        id: &str,
        compensate: &super::raw::RawCompensate,
        default_retry: RetryPolicy,
        timeout: Duration,
    ) -> Compensation {
        self.name("compensation skill", &compensate.skill, Some(id));
        let input = self.template(id, "compensate", compensate.with_input.as_ref());
        let retry = self.retry(
            Some(id),
            RetryPolicy {
                max_attempts: 10,
                ..default_retry
            },
            compensate.retry.as_ref(),
        );
        let timeout = match compensate.timeout.as_deref() {
            None => timeout,
            Some(text) => self
                .duration(Some(id), "compensate", text)
                .unwrap_or(timeout),
        };
        let route = compensate.route.as_ref().map(|route| self.route(id, route));
        let when = self.condition(id, "compensate", compensate.when.as_deref());
        Compensation {
            skill: compensate.skill.clone(),
            route,
            when,
            input,
            retry,
            timeout,
        }
    }

    /// A CEL condition, compiled; an error is reported under `field`.
    fn condition(&mut self, id: &str, field: &str, text: Option<&str>) -> Option<Condition> {
        match Condition::compile(text?) {
            Ok(condition) => Some(condition),
            Err(message) => {
                self.task_error(id, Some(field), message);
                None
            }
        }
    }

    fn route(&mut self, id: &str, route: &super::raw::RawRoute) -> Route {
        let policy = match route.policy.as_deref() {
            None | Some("least-loaded") => RoutePolicy::LeastLoaded,
            Some("cheapest") => RoutePolicy::Cheapest,
            Some("cheapest-healthy") => RoutePolicy::CheapestHealthy,
            Some(other) => {
                self.task_error(id, Some("route"), format!(
                        "unknown route policy `{other}`: use least-loaded, cheapest or cheapest-healthy"
                    ));
                RoutePolicy::LeastLoaded
            }
        };
        let labels = route
            .labels
            .iter()
            .filter_map(
                |(key, value)| match Template::parse(&Value::String(value.clone())) {
                    Ok(template) => Some((key.clone(), template)),
                    Err(message) => {
                        self.task_error(
                            id,
                            Some("route"),
                            format!("route label `{key}`: {message}"),
                        );
                        None
                    }
                },
            )
            .collect();
        let ignore_breaker = match route.breaker.as_deref() {
            None | Some("respect") => false,
            Some("ignore") => true,
            Some(other) => {
                self.task_error(
                    id,
                    Some("route"),
                    format!("route breaker `{other}`: use respect (the default) or ignore"),
                );
                false
            }
        };
        Route {
            ignore_breaker,
            policy,
            labels,
            fallback: route.fallback,
        }
    }

    fn template(&mut self, task: &str, key: &str, value: Option<&Map<String, Value>>) -> Template {
        let value = Value::Object(value.cloned().unwrap_or_default());
        let depth = json_depth(&value);
        if depth > self.limits.nesting_depth_max {
            self.task_error(
                task,
                Some(key),
                format!(
                    "`{key}` nests {depth} levels deep; the limit is {}",
                    self.limits.nesting_depth_max
                ),
            );
            return Template::Object(Vec::new());
        }
        match Template::parse(&value) {
            Ok(template) => template,
            Err(message) => {
                self.task_error(task, Some(key), format!("`{key}`: {message}"));
                Template::Object(Vec::new())
            }
        }
    }
}

/// ` (did you mean `x`?)` when a known name is one or two edits away.
fn suggestion<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .filter(|candidate| edit_distance(name, candidate) <= 2)
        .min_by_key(|candidate| edit_distance(name, candidate))
        .map_or(String::new(), |c| format!(" (did you mean `{c}`?)"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

impl CompiledSpec {
    /// Checks `tasks.X.output.FIELD` references against the output schemas of skills the
    /// catalog knows. Skills it does not know are resolved at dispatch.
    pub fn check_outputs(&self, catalog: &dyn SkillCatalog) -> Vec<SpecError> {
        let mut errors = Vec::new();
        for task in &self.tasks {
            let mut references = task.input.references();
            if let Some(compensate) = &task.compensate {
                references.extend(compensate.input.references());
            }
            for reference in references {
                let Reference::TaskOutput { task: target, rest } = reference else {
                    continue;
                };
                let Some(field) = rest.first() else { continue };
                let Some(target_task) = self.task_index(target).map(|i| &self.tasks[i as usize])
                else {
                    continue;
                };
                let Some(skill) = target_task.skill() else {
                    continue;
                };
                let Some(fields) = catalog.output_fields(skill) else {
                    continue;
                };
                if !fields.iter().any(|f| f == field) {
                    errors.push(SpecError {
                        message: format!(
                            "references unknown output `tasks.{target}.output.{field}`: skill `{skill}` outputs {}",
                            fields.join(", ")
                        ),
                        task: Some(task.id.clone()),
                        position: task.position,
                    });
                }
            }
        }
        errors
    }
}

/// `{{ ... }}` and nothing else: a template standing for one whole value.
fn is_whole_template(text: &str) -> bool {
    let text = text.trim();
    text.starts_with("{{") && text.ends_with("}}") && text.matches("{{").count() == 1
}
