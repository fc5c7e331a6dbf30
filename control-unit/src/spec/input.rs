//! Declared workflow inputs and the check of a submitted input against them.

use regex::Regex;
use serde_json::{Map, Number, Value};

/// The JSON type an input must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    Integer,
    Number,
    String,
    Boolean,
    Object,
    Array,
}

impl InputType {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "integer" => Self::Integer,
            "number" => Self::Number,
            "string" => Self::String,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            other => {
                return Err(format!(
                    "unknown input type `{other}`: use integer, number, string, boolean, object or array"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Number => "number",
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
        }
    }
}

/// One declared input.
#[derive(Debug, Clone)]
pub struct InputDecl {
    pub name: String,
    pub ty: InputType,
    pub minimum: Option<Number>,
    pub maximum: Option<Number>,
    pub pattern: Option<Regex>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub one_of: Option<Vec<Value>>,
    pub default: Option<Value>,
    pub required: bool,
}

impl InputDecl {
    /// Checks one value; the message names the input.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let name = &self.name;
        let type_ok = match self.ty {
            InputType::Integer => value.as_i64().is_some() || value.as_u64().is_some(),
            InputType::Number => value.is_number(),
            InputType::String => value.is_string(),
            InputType::Boolean => value.is_boolean(),
            InputType::Object => value.is_object(),
            InputType::Array => value.is_array(),
        };
        if !type_ok {
            return Err(format!(
                "input `{name}` must be {} {}, got {}",
                article(self.ty.as_str()),
                self.ty.as_str(),
                describe(value)
            ));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = self.minimum.as_ref().and_then(Number::as_f64)
                && number < minimum
            {
                return Err(format!(
                    "input `{name}` must be at least {minimum}, got {value}"
                ));
            }
            if let Some(maximum) = self.maximum.as_ref().and_then(Number::as_f64)
                && number > maximum
            {
                return Err(format!(
                    "input `{name}` must be at most {maximum}, got {value}"
                ));
            }
        }
        if let Some(text) = value.as_str() {
            let length = text.chars().count();
            if self.min_length.is_some_and(|min| length < min) {
                return Err(format!(
                    "input `{name}` must be at least {} characters long",
                    self.min_length.unwrap_or_default()
                ));
            }
            if self.max_length.is_some_and(|max| length > max) {
                return Err(format!(
                    "input `{name}` must be at most {} characters long",
                    self.max_length.unwrap_or_default()
                ));
            }
            if let Some(pattern) = &self.pattern
                && !pattern.is_match(text)
            {
                return Err(format!("input `{name}` must match `{}`", pattern.as_str()));
            }
        }
        if let Some(allowed) = &self.one_of
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("input `{name}` must be one of {}", list.join(", ")));
        }
        Ok(())
    }
}

/// Checks `input` against `decls`, fills defaults, and returns every problem found.
pub fn check_input(decls: &[InputDecl], input: &Value) -> Result<Value, Vec<String>> {
    let empty = Map::new();
    let object = match input {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(vec![format!(
                "input must be a JSON object, got {}",
                describe(other)
            )]);
        }
    };
    let mut errors = Vec::new();
    let mut out = Map::with_capacity(decls.len());
    for key in object.keys() {
        if !decls.iter().any(|d| &d.name == key) {
            let declared: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
            errors.push(format!(
                "input `{key}` is not declared by the spec (declared: {})",
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            ));
        }
    }
    for decl in decls {
        match object.get(&decl.name) {
            Some(value) => match decl.check(value) {
                Ok(()) => {
                    out.insert(decl.name.clone(), value.clone());
                }
                Err(message) => errors.push(message),
            },
            None => match &decl.default {
                Some(default) => {
                    out.insert(decl.name.clone(), default.clone());
                }
                None if decl.required => {
                    errors.push(format!("input `{}` is required", decl.name));
                }
                None => {}
            },
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(errors)
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
