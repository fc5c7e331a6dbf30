//! `when` conditions: CEL expressions (the `cel` crate) over `inputs`, `tasks` and
//! `workflow`, evaluated when a task becomes ready.

use std::fmt;

use serde_json::Value;

/// A compiled `when` expression (shared: `cel::Program` is not `Clone`).
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: std::sync::Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Compiles the expression; only `inputs`, `tasks` and `workflow` may be referenced.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = cel::Program::compile(source)
            .map_err(|error| format!("invalid `when` expression `{source}`: {error}"))?;
        for variable in program.references().variables() {
            if !matches!(variable, "inputs" | "tasks" | "workflow") {
                return Err(format!(
                    "`when` expression `{source}` references `{variable}`: only inputs, tasks and workflow exist"
                ));
            }
        }
        Ok(Self {
            source: source.to_owned(),
            program: std::sync::Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean; anything else is an error naming the expression.
    pub fn evaluate(
        &self,
        inputs: &Value,
        tasks: &Value,
        workflow: &Value,
    ) -> Result<bool, String> {
        let mut context = cel::Context::default();
        for (name, value) in [("inputs", inputs), ("tasks", tasks), ("workflow", workflow)] {
            context
                .add_variable(name, value)
                .map_err(|error| format!("`when` {}: {error}", self.source))?;
        }
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!(
                "`when` expression `{}` must be a boolean, got {other:?}",
                self.source
            )),
            Err(error) => Err(format!(
                "`when` expression `{}` failed: {error}",
                self.source
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_task_outputs() {
        let condition = Condition::compile(r#"tasks.risk.output.decision == "approve""#).unwrap();
        let tasks = json!({"risk": {"output": {"decision": "approve"}}});
        assert_eq!(condition.evaluate(&json!({}), &tasks, &json!({})), Ok(true));
        let tasks = json!({"risk": {"output": {"decision": "decline"}}});
        assert_eq!(
            condition.evaluate(&json!({}), &tasks, &json!({})),
            Ok(false)
        );
    }

    #[test]
    fn rejects_unknown_variables_and_non_booleans() {
        assert!(
            Condition::compile("secrets.x == 1")
                .unwrap_err()
                .contains("`secrets`")
        );
        assert!(Condition::compile("inputs.x +").is_err());
        let condition = Condition::compile("inputs.amount_minor + 1").unwrap();
        assert!(
            condition
                .evaluate(&json!({"amount_minor": 1}), &json!({}), &json!({}))
                .is_err()
        );
    }
}
