//! `paygrid limits`: the concurrency and rate limits in force and what they count now;
//! `paygrid limits set FILE` replaces them (durably), `paygrid limits clear` removes them.

use std::io::Read;

use clap::{Args, Subcommand};
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;

use crate::cli::EXIT_OK;
use crate::operator::connect;

#[derive(Debug, Args)]
pub struct LimitsArgs {
    #[command(subcommand)]
    pub action: Option<LimitsAction>,
}

#[derive(Debug, Subcommand)]
pub enum LimitsAction {
    /// Replace the limits with a YAML file (`-`: standard input); docs/limits.md.
    Set { file: std::path::PathBuf },
    /// Remove every limit.
    Clear,
}

pub async fn limits(endpoint: &str, args: LimitsArgs, json: bool) -> anyhow::Result<u8> {
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let state = match args.action {
        None => client.get_limits(pb::GetLimitsRequest {}).await,
        Some(action) => {
            let limits_yaml = match action {
                LimitsAction::Clear => String::new(),
                LimitsAction::Set { file } if file.as_os_str() == "-" => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    text
                }
                LimitsAction::Set { file } => std::fs::read_to_string(&file).map_err(|e| {
                    crate::operator::UsageError(format!("cannot read {}: {e}", file.display()))
                })?,
            };
            client
                .set_limits(pb::SetLimitsRequest { limits_yaml })
                .await
        }
    }
    .map_err(anyhow::Error::new)?
    .into_inner();
    if json {
        let running: Vec<_> = state
            .running
            .iter()
            .map(|u| serde_json::json!({"rule": u.rule, "key": u.key, "running": u.running, "max": u.max}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"limits_yaml": state.limits_yaml, "concurrency_rules": state.concurrency_rules,
                "rate_rules": state.rate_rules, "running": running})
        );
        return Ok(EXIT_OK);
    }
    if state.limits_yaml.trim().is_empty() {
        println!("no limits");
        return Ok(EXIT_OK);
    }
    println!(
        "{} concurrency and {} rate limits:\n{}",
        state.concurrency_rules,
        state.rate_rules,
        state.limits_yaml.trim_end()
    );
    if !state.running.is_empty() {
        println!(
            "\n{:<32} {:<24} {:>8} {:>6}",
            "RULE", "KEY", "RUNNING", "MAX"
        );
        for usage in &state.running {
            println!(
                "{:<32} {:<24} {:>8} {:>6}",
                usage.rule, usage.key, usage.running, usage.max
            );
        }
    }
    Ok(EXIT_OK)
}
