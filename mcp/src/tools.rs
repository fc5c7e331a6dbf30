//! The tools Paygrid's MCP server lists: the operator's calls with their schemas and
//! hints, and an agent's skill as a tool (its schemas, with `idempotency_key` added).

use std::sync::Arc;

use paygrid_proto::v1 as pb;
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

fn object(value: Value) -> Arc<Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(Map::new()),
    }
}

pub(crate) fn annotations(read_only: bool, destructive: bool, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(read_only)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

/// The operator's tools.
pub(crate) fn operator_tools() -> Vec<Tool> {
    let tool = |name: &'static str, description: &'static str, schema: Value, hints| {
        Tool::new(name, description, object(schema)).with_annotations(hints)
    };
    vec![
        tool(
            "submit_workflow",
            "Start a workflow from a spec (YAML or JSON text, or NAME@VERSION of a spec already submitted). Returns its id; the same idempotency_key returns the same workflow.",
            json!({"type": "object", "properties": {
                "spec_text": {"type": "string", "description": "the spec, YAML or JSON"},
                "spec_ref": {"type": "string", "description": "NAME@VERSION, e.g. card-payment@3"},
                "input": {"type": "object", "description": "the workflow's input"},
                "priority": {"type": "string", "enum": ["critical", "high", "normal", "low"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "idempotency_key": {"type": "string"}
            }}),
            annotations(false, false, true),
        ),
        tool(
            "get_workflow",
            "A workflow's status and tasks: each task's status, attempts, output, error, and what a waiting task waits for.",
            json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}}}),
            annotations(true, false, true),
        ),
        tool(
            "list_workflows",
            "Workflows, oldest first, filtered by status, spec name and labels; follow next_page_token.",
            json!({"type": "object", "properties": {
                "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed", "compensating", "compensated", "cancelled"]},
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 1000},
                "page_token": {"type": "string"}
            }}),
            annotations(true, false, true),
        ),
        tool(
            "cancel_workflow",
            "Cancel a running workflow: running tasks are cancelled and finished ones compensated (authorizations voided, captures refunded).",
            json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}, "reason": {"type": "string"}}}),
            annotations(false, true, true),
        ),
        tool(
            "pause_workflow",
            "Pause a running workflow: nothing new of it is dispatched until resumed; running tasks finish. Durable and audited.",
            json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}, "reason": {"type": "string"}}}),
            annotations(false, false, false),
        ),
        tool(
            "resume_workflow",
            "Resume a paused workflow.",
            json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}}}),
            annotations(false, false, false),
        ),
        tool(
            "retry_workflow",
            "Run a failed workflow again from its failed task (refused once anything was compensated). Tasks that took effects keep their idempotency keys; nothing is taken twice.",
            json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}, "task_id": {"type": "string", "description": "the failed task; default: whichever failed"}}}),
            annotations(false, false, false),
        ),
        tool(
            "redrive_workflow",
            "Run a failed (nothing compensated) or succeeded workflow again from a checkpoint it passed: the checkpoint and every task after it. Effects already taken keep their idempotency keys.",
            json!({"type": "object", "required": ["workflow_id", "checkpoint"], "properties": {"workflow_id": {"type": "string"}, "checkpoint": {"type": "string"}}}),
            annotations(false, false, false),
        ),
        tool(
            "bulk_operation",
            "One operation (pause, resume, retry, cancel, redrive) over every workflow a filter matches. dry_run (the default) only counts them: call again with dry_run false to apply.",
            json!({"type": "object", "required": ["operation"], "properties": {
                "operation": {"type": "string", "enum": ["pause", "resume", "retry", "cancel", "redrive"]},
                "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed", "compensating", "compensated", "cancelled"]},
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "skill": {"type": "string", "description": "workflows with an unfinished task of this skill"},
                "gateway": {"type": "string", "description": "workflows with an unfinished task at (or waiting for) this gateway"},
                "task_id": {"type": "string", "description": "redrive: the checkpoint; retry: the task"},
                "reason": {"type": "string"},
                "dry_run": {"type": "boolean", "default": true}
            }}),
            annotations(false, true, false),
        ),
        tool(
            "pause_dispatch",
            "Pause all dispatch of a skill or to a gateway (maintenance): its tasks wait, running ones finish; held until resume_dispatch, across restarts. Give one of skill or gateway.",
            json!({"type": "object", "properties": {"skill": {"type": "string"}, "gateway": {"type": "string"}, "reason": {"type": "string"}}}),
            annotations(false, false, true),
        ),
        tool(
            "resume_dispatch",
            "Resume dispatch of a skill or to a gateway. Give one of skill or gateway.",
            json!({"type": "object", "properties": {"skill": {"type": "string"}, "gateway": {"type": "string"}}}),
            annotations(false, false, true),
        ),
        tool(
            "approve_task",
            "Decide an approval task a workflow waits for (status INPUT_REQUIRED, e.g. a risk review): approve continues the payment, reject fails it (nothing is authorized, or what was done is compensated). Recorded with who decided and why.",
            json!({"type": "object", "required": ["workflow_id", "decision", "decided_by"], "properties": {
                "workflow_id": {"type": "string"},
                "task_id": {"type": "string", "description": "the approval task; default: the one the workflow waits for"},
                "decision": {"type": "string", "enum": ["approve", "reject"]},
                "decided_by": {"type": "string", "description": "the person deciding"},
                "note": {"type": "string", "description": "why"}
            }}),
            annotations(false, false, true),
        ),
        tool(
            "validate_spec",
            "Check a spec (and optionally an input) without running it; errors name the task, line and column.",
            json!({"type": "object", "required": ["spec_text"], "properties": {"spec_text": {"type": "string"}, "input": {"type": "object"}}}),
            annotations(true, false, true),
        ),
        tool(
            "list_agents",
            "Connected agents, their skills and live health.",
            json!({"type": "object", "properties": {"skill": {"type": "string", "description": "only agents offering this skill"}}}),
            annotations(true, false, true),
        ),
        tool(
            "health",
            "The live health of gateways and agents as telemetry agents report it, and the circuit breakers.",
            json!({"type": "object", "properties": {}}),
            annotations(true, false, true),
        ),
    ]
}

pub(crate) const OPERATOR_TOOLS: [&str; 15] = [
    "pause_dispatch",
    "resume_dispatch",
    "submit_workflow",
    "get_workflow",
    "list_workflows",
    "cancel_workflow",
    "pause_workflow",
    "resume_workflow",
    "retry_workflow",
    "redrive_workflow",
    "bulk_operation",
    "approve_task",
    "validate_spec",
    "list_agents",
    "health",
];

/// An agent's skill as an MCP tool: its schemas, with `idempotency_key` added (required
/// when it moves money).
pub(crate) fn agent_tool(tool: &pb::Tool) -> Tool {
    let mut schema: Value =
        serde_json::from_str(&tool.input_schema_json).unwrap_or_else(|_| json!({}));
    if !schema.is_object() {
        schema = json!({});
    }
    schema["type"] = json!("object");
    let moves_money = tool.effect == pb::SkillEffect::MovesMoney as i32;
    let read_only = tool.effect == pb::SkillEffect::ReadOnly as i32;
    if !schema["properties"].is_object() {
        schema["properties"] = json!({});
    }
    schema["properties"]["idempotency_key"] = json!({
        "type": "string",
        "description": if moves_money {
            "required: the same key is the same call, taken once"
        } else {
            "optional: the same key is the same call"
        }
    });
    if moves_money {
        let mut required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
        required.push(json!("idempotency_key"));
        schema["required"] = Value::Array(required);
    }
    let description = format!(
        "{} (agent skill; {}; {} agent(s))",
        tool.description,
        if moves_money {
            "moves money"
        } else if read_only {
            "read-only"
        } else {
            "changes state"
        },
        tool.agent_ids.len()
    );
    let mut out = Tool::new(tool.name.clone(), description, object(schema))
        .with_annotations(annotations(read_only, moves_money, true));
    if let Ok(Value::Object(output)) = serde_json::from_str::<Value>(&tool.output_schema_json)
        && output.get("type") == Some(&json!("object"))
    {
        out = out.with_raw_output_schema(Arc::new(output));
    }
    out
}
