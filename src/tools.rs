//! `paygrid tools` and `paygrid call`: the AgentHub's tools (every skill a connected agent
//! offers) and one call of a tool outside any workflow.

use clap::Args;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use serde_json::{Value, json};

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::operator::{InputArgs, connect};

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The tool (a skill), e.g. `risk.score`.
    pub tool: String,
    /// The arguments: --input KEY=VALUE (JSON values parsed) or --input-file FILE.
    #[command(flatten)]
    pub arguments: InputArgs,
    /// Required for a tool that moves money; the same key again is the same call.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// How long to wait for the answer, in milliseconds (the call goes on after it).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u32,
    /// Only agents with this label, KEY=VALUE (e.g. gateway=alpha).
    #[arg(long = "route", value_name = "KEY=VALUE")]
    pub route: Vec<String>,
}

fn effect_name(effect: i32) -> &'static str {
    match pb::SkillEffect::try_from(effect) {
        Ok(pb::SkillEffect::ReadOnly) => "read-only",
        Ok(pb::SkillEffect::MovesMoney) => "moves money",
        _ => "changes state",
    }
}

pub async fn list(endpoint: &str, json: bool) -> anyhow::Result<u8> {
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let tools = client
        .list_tools(pb::ListToolsRequest {})
        .await
        .map_err(anyhow::Error::new)?
        .into_inner()
        .tools;
    if json {
        let items: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "effect": effect_name(t.effect),
                    "input_schema": serde_json::from_str::<Value>(&t.input_schema_json).unwrap_or(Value::Null),
                    "output_schema": serde_json::from_str::<Value>(&t.output_schema_json).unwrap_or(Value::Null),
                    "agents": t.agent_ids,
                })
            })
            .collect();
        println!("{}", Value::Array(items));
    } else {
        println!(
            "{:<26}  {:<14}  {:>6}  description",
            "TOOL", "EFFECT", "AGENTS"
        );
        for t in &tools {
            println!(
                "{:<26}  {:<14}  {:>6}  {}",
                t.name,
                effect_name(t.effect),
                t.agent_ids.len(),
                t.description
            );
        }
    }
    Ok(EXIT_OK)
}

pub async fn call(endpoint: &str, args: CallArgs, json: bool) -> anyhow::Result<u8> {
    let arguments = args.arguments.build()?;
    let route = args
        .route
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    crate::operator::UsageError(format!("--route `{pair}` is not KEY=VALUE"))
                })
        })
        .collect::<Result<_, _>>()?;
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let answer = client
        .call_tool(pb::CallToolRequest {
            tool: args.tool,
            arguments_json: arguments.to_string(),
            idempotency_key: args.idempotency_key.unwrap_or_default(),
            timeout_ms: args.timeout_ms,
            route_labels: route,
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({
                "call_id": answer.call_id,
                "succeeded": answer.succeeded,
                "output": serde_json::from_str::<Value>(&answer.output_json).unwrap_or(Value::Null),
                "error": answer.error,
                "attempts": answer.attempts,
            })
        );
    } else if answer.succeeded {
        println!("{}", answer.output_json);
    } else {
        eprintln!("call {} failed: {}", answer.call_id, answer.error);
    }
    Ok(if answer.succeeded {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
