//! Tools (MCP-style): every skill a connected agent offers, listed with its schemas and
//! effect, and callable once outside any workflow.
//!
//! A call is a durable one-task workflow of a generated spec, `tool.SKILL@1` (plus
//! `.route-KEY` per route label key): it takes the same path as any task (dispatch,
//! retries, settlement of an unknown outcome, compensation-free), survives a control-unit
//! restart, and is visible in `list`/`status` with the label `paygrid.tool=SKILL`. The
//! arguments are checked against the tool's input schema first ([`schema`]), so a bad
//! argument is refused naming its field before anything runs.

pub mod schema;

use std::collections::BTreeMap;

use crate::model::{AgentId, SkillCard, SkillEffect};
use crate::views::AgentView;

/// Label every tool call's workflow carries: the tool.
pub const LABEL_TOOL: &str = "paygrid.tool";

/// One tool: a skill, as the first connected agent offering it describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub skill: SkillCard,
    pub agents: Vec<AgentId>,
}

/// The tools the connected agents offer, by name.
pub fn tools(agents: &[AgentView]) -> Vec<Tool> {
    let mut tools: BTreeMap<&str, Tool> = BTreeMap::new();
    for agent in agents.iter().filter(|a| a.connected) {
        for skill in &agent.card.skills {
            tools
                .entry(skill.name.as_str())
                .or_insert_with(|| Tool {
                    skill: skill.clone(),
                    agents: Vec::new(),
                })
                .agents
                .push(agent.id.clone());
        }
    }
    tools.into_values().collect()
}

/// The spec a call of `skill` runs, and its `name@version`. Route label keys must be
/// lowercase letters, digits and `_` (they become input names); the values are inputs.
pub fn spec_text(skill: &str, effect: SkillEffect, route_keys: &[&str]) -> (String, String) {
    let mut name = format!("tool.{skill}");
    for key in route_keys {
        name.push_str(".route-");
        name.push_str(key);
    }
    let mut inputs = String::from("  arguments: { type: object }\n");
    let mut route = String::new();
    if !route_keys.is_empty() {
        route.push_str("    route: { labels: {");
        for (n, key) in route_keys.iter().enumerate() {
            inputs.push_str(&format!("  route_{key}: {{ type: string }}\n"));
            let comma = if n == 0 { "" } else { "," };
            route.push_str(&format!("{comma} {key}: \"{{{{ inputs.route_{key} }}}}\""));
        }
        route.push_str(" } }\n");
    }
    // A money-moving call is retried only where that is safe (the gateway agent's
    // errors say which); an unknown outcome is settled by the key like any task's.
    let retry = match effect {
        SkillEffect::ReadOnly => "{ max_attempts: 3, initial: 200ms, max: 2s }",
        SkillEffect::State | SkillEffect::MovesMoney => {
            "{ max_attempts: 4, initial: 200ms, max: 5s }"
        }
    };
    let text = format!(
        "apiVersion: paygrid/v1\nkind: Workflow\nname: {name}\nversion: 1\ndescription: One call of the tool {skill}, outside any workflow (CallTool).\ninputs:\n{inputs}defaults:\n  timeout: 30s\n  retry: {retry}\ntasks:\n  - id: call\n    skill: {skill}\n{route}    with: \"{{{{ inputs.arguments }}}}\"\n"
    );
    (text, format!("{name}@1"))
}

/// A route label key usable in a tool spec.
pub fn valid_route_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SpecLimits, compile};

    #[test]
    fn tool_specs_compile_with_and_without_routes() {
        for keys in [&[][..], &["gateway"][..], &["gateway", "region"][..]] {
            let (text, reference) = spec_text("gateway.capture", SkillEffect::MovesMoney, keys);
            let spec =
                compile(&text, &SpecLimits::default()).unwrap_or_else(|e| panic!("{text}\n{e}"));
            assert_eq!(format!("{}@{}", spec.name, spec.version), reference);
        }
    }
}
