//! `paygrid reconcile`: reconciliation runs and their mismatches, read from the control
//! unit (a run is a `reconcile.gateway` task; its output is the result), and a new run
//! started on demand (`--start GATEWAY`).

use clap::Args;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::AuthChannel as Channel;
use serde_json::{Value, json};

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::operator::{UsageError, connect};

/// The workflows whose tasks reconcile: the shipped run, and the settlement batch.
const RUN_SPECS: [&str; 3] = [
    "reconcile-gateway",
    "close-and-reconcile",
    "settlement-batch",
];
const SKILL: &str = "reconcile.gateway";
use paygrid_control_unit::reconciliation::MISMATCH_KINDS as KINDS;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// A run (its workflow id): list its mismatches. Exit 1 when it found any.
    pub run: Option<String>,
    /// Start a run for this gateway now (`reconcile-gateway@1`), wait for it and show it.
    #[arg(long, value_name = "GATEWAY")]
    pub start: Option<String>,
    /// With --start: reconcile the reports and bookings up to this date (YYYY-MM-DD;
    /// default today, UTC).
    #[arg(long, requires = "start")]
    pub as_of: Option<String>,
    /// With --start: close the gateway's open settlement batch first (value date: --as-of,
    /// default today), and reconcile up to its value date (`close-and-reconcile@1`).
    #[arg(long, requires = "start")]
    pub close_batch: bool,
    /// With --start: days after booking a movement is due in a report.
    #[arg(long, requires = "start", default_value_t = 2)]
    pub settlement_days: u32,
    /// Without RUN: only runs of this gateway.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Without RUN: the newest this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// One run's result: the workflow, and the task's output.
struct Run {
    workflow_id: String,
    workflow: String,
    output: Value,
}

pub async fn reconcile(endpoint: &str, args: ReconcileArgs, json: bool) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    if let Some(gateway) = &args.start {
        let id = start(&mut client, gateway, &args).await?;
        return show(&mut client, &id, json).await;
    }
    if let Some(id) = &args.run {
        return show(&mut client, id, json).await;
    }
    // Pages run oldest first: follow them all (runs are few), keep the newest.
    let mut ids = Vec::new();
    for name in RUN_SPECS {
        let mut token = String::new();
        loop {
            let page = client
                .list(pb::ListWorkflowsRequest {
                    name: name.to_owned(),
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .map_err(anyhow::Error::new)?
                .into_inner();
            ids.extend(page.workflows.into_iter().map(|w| w.workflow_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    // Workflow ids are time-ordered (UUIDv7): the newest last.
    ids.sort();
    let newest = ids.len().saturating_sub(args.limit as usize);
    let mut runs = Vec::new();
    for id in &ids[newest..] {
        runs.extend(runs_of(&mut client, id).await?);
    }
    if let Some(gateway) = &args.gateway {
        runs.retain(|run| run.output["gateway"] == gateway.as_str());
    }
    if json {
        let items: Vec<Value> = runs.iter().map(summary_json).collect();
        println!("{}", Value::Array(items));
        return Ok(EXIT_OK);
    }
    if runs.is_empty() {
        println!("no reconciliation runs yet (start one with `paygrid reconcile --start GATEWAY`)");
        return Ok(EXIT_OK);
    }
    println!(
        "{:<36}  {:<8}  {:<10}  {:>6}  {:>7}  {:>7}  {:>10}  mismatches",
        "RUN", "GATEWAY", "AS OF", "ROWS", "MATCHED", "PENDING", "MISMATCHES"
    );
    for run in &runs {
        let o = &run.output;
        println!(
            "{:<36}  {:<8}  {:<10}  {:>6}  {:>7}  {:>7}  {:>10}  {}",
            run.workflow_id,
            o["gateway"].as_str().unwrap_or(""),
            o["as_of"].as_str().unwrap_or(""),
            o["report_rows"].as_u64().unwrap_or(0),
            o["matched"].as_u64().unwrap_or(0),
            o["pending"].as_u64().unwrap_or(0),
            o["mismatch_count"].as_u64().unwrap_or(0),
            kinds_found(o)
        );
    }
    Ok(EXIT_OK)
}

/// `late=1 duplicate=2`, or `-`.
fn kinds_found(output: &Value) -> String {
    let found: Vec<String> = KINDS
        .iter()
        .filter_map(|kind| {
            let n = output["counts"][kind].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{kind}={n}"))
        })
        .collect();
    if found.is_empty() {
        "-".into()
    } else {
        found.join(" ")
    }
}

fn summary_json(run: &Run) -> Value {
    let o = &run.output;
    json!({
        "run": run.workflow_id,
        "workflow": run.workflow,
        "gateway": o["gateway"],
        "as_of": o["as_of"],
        "batches": o["batches"],
        "report_rows": o["report_rows"],
        "matched": o["matched"],
        "pending": o["pending"],
        "mismatch_count": o["mismatch_count"],
        "counts": o["counts"],
        "fees": o["fees"],
    })
}

/// The reconciliation tasks of one workflow that succeeded.
async fn runs_of(client: &mut WorkflowsClient<Channel>, id: &str) -> anyhow::Result<Vec<Run>> {
    let workflow = client
        .get(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    Ok(workflow
        .tasks
        .iter()
        .filter(|task| task.skill == SKILL && task.status == i32::from(pb::TaskStatus::Succeeded))
        .filter_map(|task| serde_json::from_str(&task.output_json).ok())
        .map(|output| Run {
            workflow_id: workflow.workflow_id.clone(),
            workflow: format!("{}@{}", workflow.name, workflow.version),
            output,
        })
        .collect())
}

async fn show(client: &mut WorkflowsClient<Channel>, id: &str, json: bool) -> anyhow::Result<u8> {
    let runs = runs_of(client, id).await?;
    let Some(run) = runs.last() else {
        return Err(UsageError(format!(
            "workflow {id} has no finished reconciliation (`{SKILL}`) task; see `paygrid status {id}`"
        ))
        .into());
    };
    let o = &run.output;
    if json {
        let mut full = o.clone();
        full["run"] = json!(run.workflow_id);
        println!("{full}");
    } else {
        println!(
            "run {} ({}): gateway {} as of {}, batches {}",
            run.workflow_id,
            run.workflow,
            o["gateway"].as_str().unwrap_or(""),
            o["as_of"].as_str().unwrap_or(""),
            o["batches"]
                .as_array()
                .map(|b| b
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        println!(
            "  {} report rows, {} ledger entries: {} matched, {} pending (not due), {} mismatches {}",
            o["report_rows"].as_u64().unwrap_or(0),
            o["expected"].as_u64().unwrap_or(0),
            o["matched"].as_u64().unwrap_or(0),
            o["pending"].as_u64().unwrap_or(0),
            o["mismatch_count"].as_u64().unwrap_or(0),
            kinds_found(o)
        );
        if let Some(fees) = o["fees"].as_object().filter(|f| !f.is_empty()) {
            let fees: Vec<String> = fees.iter().map(|(c, v)| format!("{v} {c}")).collect();
            println!("  batch fees: {}", fees.join(", "));
        }
        let mismatches = o["mismatches"].as_array().cloned().unwrap_or_default();
        if !mismatches.is_empty() {
            println!(
                "\n  {:<18}  {:<22}  {:<38}  {:<22}  detail",
                "KIND", "PSP REFERENCE", "MERCHANT REFERENCE", "BATCH"
            );
            for m in &mismatches {
                println!(
                    "  {:<18}  {:<22}  {:<38}  {:<22}  {}",
                    m["kind"].as_str().unwrap_or(""),
                    m["psp_reference"].as_str().unwrap_or(""),
                    m["merchant_reference"].as_str().unwrap_or(""),
                    m["batch_id"].as_str().unwrap_or(""),
                    m["detail"].as_str().unwrap_or("")
                );
            }
            let total = o["mismatch_count"].as_u64().unwrap_or(0);
            if total > mismatches.len() as u64 {
                println!(
                    "  ... {} more (counted above)",
                    total - mismatches.len() as u64
                );
            }
        }
    }
    Ok(if o["mismatch_count"].as_u64().unwrap_or(0) == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// `paygrid dev`'s end of day: each gateway's batch closed and reconciled, one line each.
pub async fn settle_day(endpoint: &str, gateways: &[String]) -> anyhow::Result<()> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    for gateway in gateways {
        let args = ReconcileArgs {
            run: None,
            start: Some(gateway.clone()),
            as_of: None,
            close_batch: true,
            settlement_days: 2,
            gateway: None,
            limit: 1,
        };
        let id = start(&mut client, gateway, &args).await?;
        let Some(run) = runs_of(&mut client, &id).await?.pop() else {
            continue;
        };
        let o = &run.output;
        println!(
            "paygrid dev: settlement batch {} closed and reconciled: {} rows, {} matched, {} pending, mismatches: {}  (paygrid reconcile {id})",
            o["batches"]
                .as_array()
                .and_then(|b| b.last())
                .and_then(Value::as_str)
                .unwrap_or(gateway),
            o["report_rows"].as_u64().unwrap_or(0),
            o["matched"].as_u64().unwrap_or(0),
            o["pending"].as_u64().unwrap_or(0),
            kinds_found(o),
        );
    }
    Ok(())
}

/// Submits `reconcile-gateway@1` (or `close-and-reconcile@1`) and waits for it to end;
/// its id.
async fn start(
    client: &mut WorkflowsClient<Channel>,
    gateway: &str,
    args: &ReconcileArgs,
) -> anyhow::Result<String> {
    let (spec, input) = if args.close_batch {
        (
            "close-and-reconcile@1",
            json!({"gateway": gateway, "value_date": args.as_of.clone().unwrap_or_default(), "settlement_days": args.settlement_days}),
        )
    } else {
        (
            "reconcile-gateway@1",
            json!({"gateway": gateway, "as_of": args.as_of.clone().unwrap_or_default(), "settlement_days": args.settlement_days}),
        )
    };
    let submitted = client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecRef(spec.into())),
            input_json: input.to_string(),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let mut stream = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: submitted.workflow_id.clone(),
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    while stream
        .message()
        .await
        .map_err(anyhow::Error::new)?
        .is_some()
    {}
    let workflow = client
        .get(pb::GetWorkflowRequest {
            workflow_id: submitted.workflow_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if workflow.status != i32::from(pb::WorkflowStatus::Succeeded) {
        let errors: Vec<&str> = workflow
            .tasks
            .iter()
            .filter(|t| !t.error.is_empty())
            .map(|t| t.error.as_str())
            .collect();
        anyhow::bail!(
            "reconciliation run {} ended {}: {}",
            submitted.workflow_id,
            crate::output::status_name(workflow.status),
            errors.join("; ")
        );
    }
    Ok(submitted.workflow_id)
}
