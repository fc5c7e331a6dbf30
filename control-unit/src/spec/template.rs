//! `with` templates: JSON values whose strings may hold `{{ path }}` references to
//! `inputs.NAME...`, `tasks.ID.output...` or `workflow.id` / `workflow.name`.
//!
//! A string that is exactly one reference takes the referenced value with its type (an
//! integer stays an integer); a string mixing text and references interpolates them.
//! References are parsed once, at validation; they are resolved at dispatch.

use serde_json::{Map, Value};

/// Where a reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `inputs.NAME.rest...`
    Input { name: String, rest: Vec<String> },
    /// `tasks.ID.output.rest...`
    TaskOutput { task: String, rest: Vec<String> },
    /// `workflow.id`
    WorkflowId,
    /// `workflow.name`
    WorkflowName,
    /// `labels.NAME`: one of the workflow's labels.
    Label(String),
}

impl Reference {
    /// Parses a dotted path such as `tasks.authorize.output.authorization_id`.
    pub fn parse(path: &str) -> Result<Self, String> {
        let segments: Vec<&str> = path.split('.').map(str::trim).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("malformed reference `{path}`: empty segment"));
        }
        match segments.as_slice() {
            ["inputs", name, rest @ ..] => Ok(Self::Input {
                name: (*name).to_owned(),
                rest: rest.iter().map(|s| (*s).to_owned()).collect(),
            }),
            ["tasks", task, "output", rest @ ..] => Ok(Self::TaskOutput {
                task: (*task).to_owned(),
                rest: rest.iter().map(|s| (*s).to_owned()).collect(),
            }),
            ["tasks", task, other, ..] => Err(format!(
                "malformed reference `{path}`: expected `tasks.{task}.output...`, found `{other}`"
            )),
            ["tasks", task] => Err(format!(
                "malformed reference `{path}`: expected `tasks.{task}.output...`"
            )),
            ["workflow", "id"] => Ok(Self::WorkflowId),
            ["workflow", "name"] => Ok(Self::WorkflowName),
            ["labels", name] => Ok(Self::Label((*name).to_owned())),
            _ => Err(format!(
                "malformed reference `{path}`: use inputs.NAME, tasks.ID.output.FIELD, labels.NAME, workflow.id or workflow.name"
            )),
        }
    }
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Ref(Reference),
}

/// A `with` value with its references parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    Ref(Reference),
    Interpolate(Vec<Part>),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

/// What a template resolves references against.
pub trait Scope {
    fn input(&self, name: &str) -> Option<Value>;
    fn task_output(&self, task: &str) -> Option<Value>;
    fn workflow_id(&self) -> String;
    fn workflow_name(&self) -> String;
    /// One of the workflow's labels.
    fn label(&self, _name: &str) -> Option<String> {
        None
    }
}

impl Template {
    /// Parses a JSON value, finding every `{{ ... }}`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        Ok(match value {
            Value::String(text) => parse_string(text)?,
            Value::Array(items) => {
                Self::Array(items.iter().map(Self::parse).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Self::Literal(other.clone()),
        })
    }

    /// Every reference in this template.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect_references(&mut out);
        out
    }

    fn collect_references<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Self::Literal(_) => {}
            Self::Ref(reference) => out.push(reference),
            Self::Interpolate(parts) => out.extend(parts.iter().filter_map(|p| match p {
                Part::Ref(r) => Some(r),
                Part::Text(_) => None,
            })),
            Self::Object(fields) => fields.iter().for_each(|(_, t)| t.collect_references(out)),
            Self::Array(items) => items.iter().for_each(|t| t.collect_references(out)),
        }
    }

    /// Resolves every reference; a missing value is an error naming the reference.
    pub fn resolve(&self, scope: &dyn Scope) -> Result<Value, String> {
        Ok(match self {
            Self::Literal(value) => value.clone(),
            Self::Ref(reference) => resolve_reference(reference, scope)?,
            Self::Interpolate(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => text.push_str(t),
                        Part::Ref(r) => match resolve_reference(r, scope)? {
                            Value::String(s) => text.push_str(&s),
                            other => text.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(text)
            }
            Self::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (key, template) in fields {
                    map.insert(key.clone(), template.resolve(scope)?);
                }
                Value::Object(map)
            }
            Self::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.resolve(scope))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

fn parse_string(text: &str) -> Result<Template, String> {
    if !text.contains("{{") {
        return Ok(Template::Literal(Value::String(text.to_owned())));
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in `{text}`"))?;
        parts.push(Part::Ref(Reference::parse(after[..close].trim())?));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    if let [Part::Ref(reference)] = parts.as_slice() {
        return Ok(Template::Ref(reference.clone()));
    }
    Ok(Template::Interpolate(parts))
}

fn resolve_reference(reference: &Reference, scope: &dyn Scope) -> Result<Value, String> {
    let (root, rest, label) = match reference {
        Reference::Input { name, rest } => (scope.input(name), rest, format!("inputs.{name}")),
        Reference::TaskOutput { task, rest } => (
            scope.task_output(task),
            rest,
            format!("tasks.{task}.output"),
        ),
        Reference::WorkflowId => return Ok(Value::String(scope.workflow_id())),
        Reference::WorkflowName => return Ok(Value::String(scope.workflow_name())),
        Reference::Label(name) => {
            return scope
                .label(name)
                .map(Value::String)
                .ok_or_else(|| format!("`labels.{name}` has no value"));
        }
    };
    let mut current = root.ok_or_else(|| format!("`{label}` has no value"))?;
    let mut path = label;
    for segment in rest {
        path.push('.');
        path.push_str(segment);
        current = match current {
            Value::Object(mut map) => map.remove(segment.as_str()),
            Value::Array(mut items) => segment
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .map(|i| items.swap_remove(i)),
            _ => None,
        }
        .ok_or_else(|| format!("`{path}` has no value"))?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct TestScope;
    impl Scope for TestScope {
        fn input(&self, name: &str) -> Option<Value> {
            (name == "amount_minor").then(|| json!(1250))
        }
        fn task_output(&self, task: &str) -> Option<Value> {
            (task == "authorize").then(|| json!({"authorization_id": "auth_1", "ids": ["x", "y"]}))
        }
        fn workflow_id(&self) -> String {
            "wf-1".into()
        }
        fn workflow_name(&self) -> String {
            "card".into()
        }
    }

    #[test]
    fn whole_reference_keeps_its_type() {
        let t = Template::parse(&json!({"amount": "{{ inputs.amount_minor }}"})).unwrap();
        assert_eq!(t.resolve(&TestScope).unwrap(), json!({"amount": 1250}));
    }

    #[test]
    fn interpolation_and_nested_paths() {
        let t =
            Template::parse(&json!("{{workflow.id}}/{{ tasks.authorize.output.ids.1 }}")).unwrap();
        assert_eq!(t.resolve(&TestScope).unwrap(), json!("wf-1/y"));
    }

    #[test]
    fn missing_values_are_named() {
        let t = Template::parse(&json!("{{ tasks.authorize.output.nope }}")).unwrap();
        assert_eq!(
            t.resolve(&TestScope).unwrap_err(),
            "`tasks.authorize.output.nope` has no value"
        );
    }

    #[test]
    fn malformed_references_are_rejected() {
        assert!(
            Reference::parse("tasks.a.outputs.x")
                .unwrap_err()
                .contains("expected `tasks.a.output")
        );
        assert!(Reference::parse("secrets.x").is_err());
        assert!(Template::parse(&json!("{{ inputs.x")).is_err());
    }
}
