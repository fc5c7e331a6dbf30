//! `paygrid pause | resume | retry | redrive | bulk`: operations on accepted work
//! (docs/operations.md).

use clap::{Args, ValueEnum};
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;

use crate::cli::EXIT_OK;
use crate::operator::connect;
use crate::output;

#[derive(Debug, Args)]
pub struct OperateArgs {
    pub workflow_id: String,
    /// Why (kept in the audit log and shown with the workflow).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// What to pause or resume dispatch of.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct HoldArgs {
    /// A skill (e.g. gateway.capture).
    #[arg(long)]
    pub skill: Option<String>,
    /// A gateway (e.g. alpha).
    #[arg(long)]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BulkOperation {
    Pause,
    Resume,
    Retry,
    Cancel,
    Redrive,
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    pub operation: BulkOperation,
    /// Only workflows in this status (running, failed, succeeded, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only workflows of this spec name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workflows with this label (KEY=VALUE; repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only workflows with an unfinished task of this skill.
    #[arg(long)]
    pub skill: Option<String>,
    /// Only workflows with an unfinished task at (or waiting for) this gateway.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Redrive: the checkpoint; retry: the task (default: whichever failed).
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// At most this many workflows.
    #[arg(long, default_value_t = 1_000)]
    pub limit: u32,
    /// Apply it. Without it, only the count of matching workflows is shown (a dry run).
    #[arg(long)]
    pub yes: bool,
}

/// One operation on one workflow: `pause`, `resume`, `retry` (`task`), `redrive`
/// (`task`: the checkpoint).
pub async fn operate(
    endpoint: &str,
    method: &str,
    args: OperateArgs,
    task: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let request = pb::OperateRequest {
        workflow_id: args.workflow_id.clone(),
        task_id: task.unwrap_or_default(),
        reason: args.reason,
    };
    let answer = match method {
        "pause" => client.pause(request).await,
        "resume" => client.resume(request).await,
        "retry" => client.retry_task(request).await,
        _ => client.redrive(request).await,
    }
    .map_err(anyhow::Error::new)?
    .into_inner();
    let status = output::status_name(answer.status);
    if json {
        println!(
            "{}",
            serde_json::json!({"workflow_id": args.workflow_id, "status": status, "paused": answer.paused, "tasks": answer.tasks})
        );
    } else {
        let done = match method {
            "pause" => "paused: nothing new is dispatched until `paygrid resume`".to_owned(),
            "resume" => "resumed".to_owned(),
            _ => format!("{status}, running again: {}", answer.tasks.join(", ")),
        };
        println!("workflow {}: {done}", args.workflow_id);
    }
    Ok(EXIT_OK)
}

/// `paygrid pause-dispatch` / `resume-dispatch`: prints the holds in force after.
pub async fn hold(
    endpoint: &str,
    args: HoldArgs,
    reason: String,
    pause: bool,
    json: bool,
) -> anyhow::Result<u8> {
    use paygrid_proto::v1::agent_hub_client::AgentHubClient;
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let request = pb::DispatchHoldRequest {
        skill: args.skill.unwrap_or_default(),
        gateway: args.gateway.unwrap_or_default(),
        reason,
    };
    let holds = if pause {
        client.pause_dispatch(request).await
    } else {
        client.resume_dispatch(request).await
    }
    .map_err(anyhow::Error::new)?
    .into_inner();
    if json {
        println!(
            "{}",
            serde_json::json!({"skills": holds.skills, "gateways": holds.gateways})
        );
    } else {
        print!("{}", holds_text(&holds));
    }
    Ok(EXIT_OK)
}

/// The dispatch holds, one line each (or that there are none).
pub fn holds_text(holds: &pb::DispatchHolds) -> String {
    let mut lines: Vec<String> = holds
        .skills
        .iter()
        .map(|(skill, why)| format!("dispatch of skill {skill} paused: {why}\n"))
        .chain(
            holds
                .gateways
                .iter()
                .map(|(gateway, why)| format!("dispatch to gateway {gateway} paused: {why}\n")),
        )
        .collect();
    lines.sort();
    if lines.is_empty() {
        "no dispatch is paused\n".to_owned()
    } else {
        lines.concat()
    }
}

pub async fn bulk(endpoint: &str, args: BulkArgs, json: bool) -> anyhow::Result<u8> {
    let status = match &args.status {
        None => pb::WorkflowStatus::Unspecified,
        Some(name) => pb::WorkflowStatus::from_str_name(&format!(
            "WORKFLOW_STATUS_{}",
            name.to_ascii_uppercase()
        ))
        .ok_or_else(|| {
            crate::operator::UsageError(format!(
                "--status {name}: use pending, running, succeeded, failed, compensating, compensated or cancelled"
            ))
        })?,
    };
    let mut labels = std::collections::HashMap::new();
    for label in &args.labels {
        let (key, value) = label.split_once('=').ok_or_else(|| {
            crate::operator::UsageError(format!("--label {label}: use KEY=VALUE"))
        })?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let operation = match args.operation {
        BulkOperation::Pause => pb::Operation::Pause,
        BulkOperation::Resume => pb::Operation::Resume,
        BulkOperation::Retry => pb::Operation::Retry,
        BulkOperation::Cancel => pb::Operation::Cancel,
        BulkOperation::Redrive => pb::Operation::Redrive,
    };
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let answer = client
        .bulk_operate(pb::BulkOperateRequest {
            operation: operation.into(),
            status: status.into(),
            name: args.name.unwrap_or_default(),
            labels,
            skill: args.skill.unwrap_or_default(),
            gateway: args.gateway.unwrap_or_default(),
            dry_run: !args.yes,
            reason: args.reason,
            task_id: args.task.unwrap_or_default(),
            limit: args.limit,
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::json!({"dry_run": answer.dry_run, "matched": answer.matched, "workflow_ids": answer.workflow_ids, "applied": answer.applied, "refused": answer.refused})
        );
        return Ok(EXIT_OK);
    }
    let name = format!("{:?}", args.operation).to_ascii_lowercase();
    if answer.dry_run {
        println!(
            "{} workflows match; run again with --yes to {name} them",
            answer.matched
        );
        for id in answer.workflow_ids.iter().take(20) {
            println!("  {id}");
        }
    } else {
        println!(
            "{name}: {} matched, {} done, {} refused",
            answer.matched,
            answer.applied,
            answer.refused.len()
        );
        for refused in &answer.refused {
            println!("  refused {refused}");
        }
    }
    Ok(EXIT_OK)
}
