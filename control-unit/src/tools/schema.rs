//! The JSON Schema keywords a tool's input is checked against before a call runs: `type`
//! (one or a list), `required`, `properties`, `additionalProperties: false`, `enum`,
//! `const`, `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`, `items`,
//! `minItems`, `maxItems`. Other keywords are not checked (the agent still validates what
//! it receives). An error names the field by its path, e.g. `arguments.amount_minor`.

use serde_json::Value;

/// Checks `value` against `schema`; the first problem found, naming its path.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
            return Err(format!(
                "{path}: must be {} (got {})",
                allowed.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let options: Vec<String> = options.iter().map(Value::to_string).collect();
        return Err(format!("{path}: must be one of {}", options.join(", ")));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{path}: must be {constant}"));
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            return Err(format!("{path}: must be at least {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            return Err(format!("{path}: must be at most {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            return Err(format!("{path}: must be at least {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            return Err(format!("{path}: must be at most {max} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Ok(regex) = regex::Regex::new(pattern)
            && !regex.is_match(text)
        {
            return Err(format!("{path}: must match `{pattern}`"));
        }
    }
    if let Some(items) = value.as_array() {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            return Err(format!("{path}: must have at least {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            return Err(format!("{path}: must have at most {max} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{index}]"))?;
            }
        }
    }
    if let Some(fields) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                return Err(format!("{path}.{name}: is required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(field_schema, field, &format!("{path}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}.{name}: is not an accepted field"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let schema = json!({"type": "object", "required": ["amount_minor", "currency"], "properties": {
            "amount_minor": {"type": "integer", "minimum": 1},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {"type": "array", "items": {"type": "object", "required": ["id"]}}
        }});
        let check = |value: Value| validate(&schema, &value, "arguments");
        assert_eq!(check(json!({"amount_minor": 5, "currency": "EUR"})), Ok(()));
        assert_eq!(
            check(json!({"currency": "EUR"})).unwrap_err(),
            "arguments.amount_minor: is required"
        );
        assert_eq!(
            check(json!({"amount_minor": "5", "currency": "EUR"})).unwrap_err(),
            "arguments.amount_minor: must be integer (got a string)"
        );
        assert!(
            check(json!({"amount_minor": 0, "currency": "EUR"}))
                .unwrap_err()
                .starts_with("arguments.amount_minor: must be at least")
        );
        assert!(
            check(json!({"amount_minor": 1, "currency": "eur"}))
                .unwrap_err()
                .contains("currency")
        );
        assert_eq!(
            check(json!({"amount_minor": 1, "currency": "EUR", "items": [{}]})).unwrap_err(),
            "arguments.items[0].id: is required"
        );
    }
}
