//! Operator commands over the `Workflows` and `AgentHub` gRPC services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::AuthChannel as Channel;
use serde_json::Value;
use tracing::Instrument;

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::output::{self, Progress};

mod local;
pub use local::{graph, ledger, validate};

/// A mistake in how the command was called: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Spec file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// critical, high, normal or low (default: the spec's).
    #[arg(long)]
    pub priority: Option<String>,
    /// A label, KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Submitting again with the same key returns the same workflow.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the workflow until it ends; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this status (running, succeeded, failed, compensated, cancelled, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this spec name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workflows carrying this label, KEY=VALUE (repeatable: all must match).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    pub workflow_id: String,
    /// The approval task (default: the one the workflow waits for).
    pub task_id: Option<String>,
    /// approve or reject.
    #[arg(long)]
    pub decision: String,
    /// Why: kept with the decision.
    #[arg(long, default_value = "")]
    pub note: String,
    /// Who decides (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Spec file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
}

/// A workflow input given on the command line.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// An input value, KEY=VALUE; VALUE is read as JSON when it parses (1250, true), else as a string.
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A JSON file with the input object (merged under --input values).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
}

impl InputArgs {
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.input_file.is_none()
    }

    /// The input object these flags describe.
    pub fn build(&self) -> anyhow::Result<Value> {
        build_input(&self.inputs, self.input_file.as_deref())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// A channel to the control unit with this process's credentials (`--certs-dir`,
/// `--cert-name`, `--token`).
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let security = crate::transport::get().operator()?;
    let endpoint_ = security
        .endpoint(endpoint)
        .map_err(|e| UsageError(format!("`{endpoint}` is not an endpoint URL: {e}")))?;
    let hint = if security.is_tls() {
        ""
    } else {
        "; if it serves TLS, give --certs-dir"
    };
    security
        .auth_channel(endpoint_)
        .await
        .with_context(|| format!("cannot reach the control unit at {endpoint} (is `paygrid control` or `paygrid dev` running?{hint})"))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())).into())
}

/// Builds the input object from `--input-file` and `--input` pairs.
pub fn build_input(pairs: &[String], file: Option<&Path>) -> anyhow::Result<Value> {
    let mut input = match file {
        Some(path) => serde_json::from_str(&read(path)?)
            .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())))?,
        None => Value::Object(serde_json::Map::new()),
    };
    let Some(object) = input.as_object_mut() else {
        anyhow::bail!(UsageError("the input file must hold a JSON object".into()));
    };
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--input `{pair}`: expected KEY=VALUE")))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        object.insert(key.to_owned(), value);
    }
    Ok(input)
}

fn key_values(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| UsageError(format!("--{what} `{pair}`: expected KEY=VALUE")).into())
        })
        .collect()
}

fn priority(text: Option<&str>) -> anyhow::Result<pb::Priority> {
    Ok(match text {
        None => pb::Priority::Unspecified,
        Some("critical") => pb::Priority::Critical,
        Some("high") => pb::Priority::High,
        Some("normal") => pb::Priority::Normal,
        Some("low") => pb::Priority::Low,
        Some(other) => anyhow::bail!(UsageError(format!(
            "unknown priority `{other}`: use critical, high, normal or low"
        ))),
    })
}

pub async fn submit(endpoint: &str, args: SubmitArgs, json: bool) -> anyhow::Result<u8> {
    let text = read(&args.file)?;
    let input = args.input.build()?;
    let request = pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(text)),
        input_json: input.to_string(),
        priority: priority(args.priority.as_deref())?.into(),
        labels: key_values(&args.labels, "label")?.into_iter().collect(),
        idempotency_key: args.idempotency_key.unwrap_or_default(),
    };
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    // With --otlp this call is a span, and the workflow's root span becomes its child.
    let span = if paygrid_telemetry::otel::exporting() {
        tracing::info_span!(target: "paygrid::cli", "submit", otel.kind = "client")
    } else {
        tracing::Span::none()
    };
    let mut request = tonic::Request::new(request);
    if let Some((traceparent, tracestate)) = paygrid_telemetry::context::outgoing(&span) {
        let metadata = request.metadata_mut();
        if let Ok(value) = traceparent.parse() {
            metadata.insert("traceparent", value);
        }
        if let Ok(value) = tracestate.parse()
            && !tracestate.is_empty()
        {
            metadata.insert("tracestate", value);
        }
    }
    let response = client
        .submit(request)
        .instrument(span)
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::json!({"workflow_id": response.workflow_id, "created": response.created})
        );
    } else {
        let verb = if response.created {
            "submitted"
        } else {
            "already submitted (same idempotency key)"
        };
        println!("workflow {} {verb}", response.workflow_id);
    }
    if !args.watch {
        return Ok(EXIT_OK);
    }
    follow(&mut client, &response.workflow_id, json).await
}

/// Streams a workflow's events until it ends; exit code by final status.
pub async fn follow(
    client: &mut WorkflowsClient<Channel>,
    id: &str,
    json: bool,
) -> anyhow::Result<u8> {
    let mut stream = client
        .watch(pb::WatchWorkflowRequest {
            workflow_id: id.to_owned(),
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let mut progress = Progress::new(json);
    let mut last_status = pb::WorkflowStatus::Unspecified;
    while let Some(event) = stream.message().await.map_err(anyhow::Error::new)? {
        if let Some(status) = progress.event(&event) {
            last_status = status;
        }
    }
    // The stream ends at the terminal event; confirm from the source of truth.
    let workflow = client
        .get(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let status = pb::WorkflowStatus::try_from(workflow.status).unwrap_or(last_status);
    progress.finish(&workflow);
    Ok(if status == pb::WorkflowStatus::Succeeded {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

pub async fn watch_command(endpoint: &str, id: &str, json: bool) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    follow(&mut client, id, json).await
}

pub async fn status(endpoint: &str, id: &str, json: bool) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let workflow = client
        .get(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        println!("{}", output::workflow_json(&workflow));
    } else {
        print!("{}", output::workflow_text(&workflow));
    }
    Ok(EXIT_OK)
}

pub async fn list(endpoint: &str, args: ListArgs, json: bool) -> anyhow::Result<u8> {
    let status = match args.status.as_deref() {
        None => pb::WorkflowStatus::Unspecified,
        Some(text) => {
            pb::WorkflowStatus::from_str_name(&format!("WORKFLOW_STATUS_{}", text.to_uppercase()))
                .ok_or_else(|| UsageError(format!("unknown status `{text}`")))?
        }
    };
    let labels = args
        .labels
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| UsageError(format!("--label `{pair}` is not KEY=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let response = client
        .list(pb::ListWorkflowsRequest {
            status: status.into(),
            name: args.name.unwrap_or_default(),
            labels,
            page_size: args.limit,
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        let items: Vec<Value> = response
            .workflows
            .iter()
            .map(output::summary_json)
            .collect();
        println!("{}", Value::Array(items));
    } else {
        println!(
            "{:<36}  {:<20}  {:<12}  {:<8}  tasks",
            "WORKFLOW", "NAME", "STATUS", "PRIORITY"
        );
        for w in &response.workflows {
            println!(
                "{:<36}  {:<20}  {:<12}  {:<8}  {}/{}",
                w.workflow_id,
                format!("{}@{}", w.name, w.version),
                output::status_name(w.status),
                output::priority_name(w.priority),
                w.tasks_done,
                w.tasks_total
            );
        }
    }
    Ok(EXIT_OK)
}

pub async fn cancel(endpoint: &str, id: &str, reason: &str, json: bool) -> anyhow::Result<u8> {
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let response = client
        .cancel(pb::CancelWorkflowRequest {
            workflow_id: id.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let status = output::status_name(response.status);
    if json {
        println!(
            "{}",
            serde_json::json!({"workflow_id": id, "status": status})
        );
    } else {
        println!("workflow {id}: {status}");
    }
    Ok(EXIT_OK)
}

pub async fn approve(endpoint: &str, args: ApproveArgs, json: bool) -> anyhow::Result<u8> {
    let decision = match args.decision.to_ascii_lowercase().as_str() {
        "approve" | "approved" => pb::Decision::Approve,
        "reject" | "rejected" => pb::Decision::Reject,
        other => anyhow::bail!("--decision `{other}`: use approve or reject"),
    };
    let by = args
        .by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "operator".to_owned());
    let mut client = WorkflowsClient::new(connect(endpoint).await?);
    let mut request = tonic::Request::new(pb::ApproveRequest {
        workflow_id: args.workflow_id.clone(),
        task_id: args.task_id.unwrap_or_default(),
        decision: decision.into(),
        note: args.note,
        decided_by: by.clone(),
    });
    request.metadata_mut().insert(
        "paygrid-client",
        tonic::metadata::MetadataValue::from_static("cli"),
    );
    let response = client
        .approve(request)
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let status = output::status_name(response.status);
    // The control unit records the authenticated caller, whatever --by said.
    let by = if response.decided_by.is_empty() {
        by
    } else {
        response.decided_by
    };
    let decided = if decision == pb::Decision::Approve {
        "approved"
    } else {
        "rejected"
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"workflow_id": args.workflow_id, "task_id": response.task_id,
                "decision": decided, "decided_by": by, "status": status})
        );
    } else {
        println!(
            "workflow {}: task {} {decided} by {by}; workflow {status}",
            args.workflow_id, response.task_id
        );
    }
    Ok(EXIT_OK)
}

pub async fn agents(endpoint: &str, skill: Option<String>, json: bool) -> anyhow::Result<u8> {
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let response = client
        .list_agents(pb::ListAgentsRequest {
            skill: skill.unwrap_or_default(),
        })
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    if json {
        let items: Vec<Value> = response.agents.iter().map(output::agent_json).collect();
        println!("{}", Value::Array(items));
        return Ok(EXIT_OK);
    }
    println!(
        "{:<22}  {:<14}  {:<9}  {:>8}  {:>7}  {:>9}  {:>6}  {:>7}  {:>5}  skills / labels",
        "AGENT", "EXEC UNIT", "STATE", "INFLIGHT", "CREDITS", "COMPLETED", "ERR%", "P99 MS", "SAT"
    );
    for agent in &response.agents {
        let card = agent.card.clone().unwrap_or_default();
        let skills: Vec<&str> = card.skills.iter().map(|s| s.name.as_str()).collect();
        let labels: Vec<String> = card
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let state = if agent.draining {
            "draining"
        } else if agent.connected {
            "connected"
        } else {
            "idle"
        };
        // Health over the telemetry agent's last window; `-` before its first report.
        let (errors, p99, saturation) = match agent.health.as_ref().and_then(|h| {
            h.report
                .as_ref()
                .map(|r| (h.error_rate, r.latency_p99_ms, r.saturation))
        }) {
            Some((rate, p99, saturation)) => (
                format!("{:.1}", rate * 100.0),
                p99.to_string(),
                format!("{:.0}%", saturation * 100.0),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<22}  {:<14}  {:<9}  {:>8}  {:>7}  {:>9}  {:>6}  {:>7}  {:>5}  {} {}",
            agent.agent_id,
            agent.execution_unit,
            state,
            agent.inflight,
            agent.credits,
            agent.tasks_completed,
            errors,
            p99,
            saturation,
            skills.join(","),
            labels.join(",")
        );
    }
    Ok(EXIT_OK)
}

use paygrid_examples::{CARD_PAYMENT, MARKETPLACE_SPLIT as MARKETPLACE, REFUND};

/// `paygrid dev`: submits the examples and shows their progress; true when all succeeded.
pub async fn run_examples(endpoint: &str, payments: u32) -> anyhow::Result<bool> {
    let channel = connect(endpoint).await?;
    let mut client = WorkflowsClient::new(channel);
    let submit = |spec: &str, input: Value| pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(spec.to_owned())),
        input_json: input.to_string(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for n in 0..payments {
        // A card per payment, as real traffic has (the risk agent reviews a card used more
        // than 20 times a minute).
        let input = serde_json::json!({"amount_minor": 1250 + i64::from(n) * 100, "currency": "EUR", "card_token": format!("tok_dev_{n}")});
        ids.push(
            client
                .submit(submit(CARD_PAYMENT, input))
                .await
                .map_err(anyhow::Error::new)?
                .into_inner()
                .workflow_id,
        );
    }
    let input = serde_json::json!({"amount_minor": 9000, "currency": "EUR", "card_token": "tok_visa", "batch": "dev", "seller_a_minor": 3000, "seller_b_minor": 2500, "seller_c_minor": 2000, "platform_fee_minor": 1500});
    ids.push(
        client
            .submit(submit(MARKETPLACE, input))
            .await
            .map_err(anyhow::Error::new)?
            .into_inner()
            .workflow_id,
    );
    let mut all_ok = true;
    let mut refund_source = None;
    let mut watchers = Vec::new();
    for id in &ids {
        let mut client = client.clone();
        let id = id.clone();
        watchers.push(tokio::spawn(async move {
            follow(&mut client, &id, false).await.map(|code| (id, code))
        }));
    }
    for watcher in watchers {
        let (id, code) = watcher.await??;
        all_ok &= code == EXIT_OK;
        if code == EXIT_OK && refund_source.is_none() {
            refund_source = Some(id);
        }
    }
    // Refund the first successful card payment's capture.
    if let Some(id) = refund_source.filter(|_| payments > 0) {
        let workflow = client
            .get(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
                ..Default::default()
            })
            .await
            .map_err(anyhow::Error::new)?
            .into_inner();
        if let Some(capture) = workflow.tasks.iter().find(|t| t.task_id == "capture") {
            let output: Value = serde_json::from_str(&capture.output_json).unwrap_or(Value::Null);
            let input = serde_json::json!({
                "capture_id": output["capture_id"], "gateway": output["gateway"], "payment_id": id,
                "amount_minor": output["amount_minor"], "currency": output["currency"],
            });
            let refund = client
                .submit(submit(REFUND, input))
                .await
                .map_err(anyhow::Error::new)?
                .into_inner()
                .workflow_id;
            all_ok &= follow(&mut client, &refund, false).await? == EXIT_OK;
        }
    }
    println!(
        "paygrid dev: {} example workflows {}",
        ids.len() + 1,
        if all_ok {
            "succeeded"
        } else {
            "finished, some failed"
        }
    );
    Ok(all_ok)
}

/// `paygrid health`: the control unit's live health view and circuit breakers.
pub async fn health(endpoint: &str, json: bool) -> anyhow::Result<u8> {
    let mut client = AgentHubClient::new(connect(endpoint).await?);
    let response = client
        .health(pb::HealthRequest {})
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    let holds = response.holds.unwrap_or_default();
    let (entries, breakers, adaptive) = (response.entries, response.breakers, response.adaptive);
    if json {
        let mut items: Vec<Value> = entries
            .iter()
            .map(|e| {
                let r = e.report.clone().unwrap_or_default();
                serde_json::json!({"kind": r.kind, "subject": r.subject, "requests": r.requests, "errors": r.errors, "error_rate": e.error_rate, "latency_p50_ms": r.latency_p50_ms, "latency_p99_ms": r.latency_p99_ms, "saturation": r.saturation, "skills": r.skills, "reported_by": e.reported_by, "updated_at_ms": e.updated_at_ms})
            })
            .collect();
        items.extend(breakers.iter().map(|b| {
            let transitions: Vec<Value> = b
                .transitions
                .iter()
                .map(|t| serde_json::json!({"at_ms": t.at_ms, "from": t.from, "to": t.to, "reason": t.reason}))
                .collect();
            serde_json::json!({"kind": "breaker", "subject": b.gateway, "state": b.state, "requests": b.requests, "errors": b.errors, "slow": b.slow, "open_until_ms": b.open_until_ms, "trials_in_flight": b.trials_in_flight, "transitions": transitions})
        }));
        items.extend(adaptive.iter().map(|a| {
            serde_json::json!({"kind": "adaptive_limit", "subject": a.gateway, "limit": a.limit, "running": a.running, "min": a.min, "max": a.max, "latency_target_ms": a.latency_target_ms})
        }));
        items.extend(holds.skills.iter().map(|(skill, why)| {
            serde_json::json!({"kind": "dispatch_paused", "subject": format!("skill {skill}"), "reason": why})
        }));
        items.extend(holds.gateways.iter().map(|(gateway, why)| {
            serde_json::json!({"kind": "dispatch_paused", "subject": format!("gateway {gateway}"), "reason": why})
        }));
        println!("{}", Value::Array(items));
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        println!(
            "no health reports yet (is a telemetry agent running? `paygrid exec` hosts one by default)"
        );
    } else {
        print_health_entries(&entries);
    }
    if !breakers.is_empty() {
        println!();
        println!(
            "{:<8} {:<10} {:>8} {:>7} {:>6}  last transition",
            "BREAKER", "STATE", "REQUESTS", "ERRORS", "SLOW"
        );
        for b in &breakers {
            let last = b.transitions.last().map_or(String::new(), |t| {
                format!("{} → {}: {}", t.from, t.to, t.reason)
            });
            println!(
                "{:<8} {:<10} {:>8} {:>7} {:>6}  {}",
                b.gateway, b.state, b.requests, b.errors, b.slow, last
            );
        }
    }
    if !holds.skills.is_empty() || !holds.gateways.is_empty() {
        println!();
        print!("{}", crate::operations::holds_text(&holds));
    }
    if !adaptive.is_empty() {
        println!();
        println!(
            "{:<8} {:>6} {:>8} {:>6} {:>6}  latency target",
            "ADAPTIVE", "LIMIT", "RUNNING", "MIN", "MAX"
        );
        for a in &adaptive {
            println!(
                "{:<8} {:>6.0} {:>8} {:>6} {:>6}  {} ms",
                a.gateway,
                a.limit.floor(),
                a.running,
                a.min,
                a.max,
                a.latency_target_ms
            );
        }
    }
    Ok(EXIT_OK)
}

fn print_health_entries(entries: &[pb::HealthEntry]) {
    println!(
        "{:<8} {:<18} {:>8} {:>7} {:>8} {:>8} {:>8} {:>6}  reported by",
        "KIND", "SUBJECT", "REQUESTS", "ERRORS", "ERR RATE", "P50 MS", "P99 MS", "SAT"
    );
    for entry in entries {
        let r = entry.report.clone().unwrap_or_default();
        // Several agents may offer a skill: no single saturation for it.
        let saturation = if r.kind == "skill" {
            "-".to_owned()
        } else {
            format!("{:.0}%", r.saturation * 100.0)
        };
        println!(
            "{:<8} {:<18} {:>8} {:>7} {:>7.1}% {:>8} {:>8} {:>6}  {}",
            r.kind,
            r.subject,
            r.requests,
            r.errors,
            entry.error_rate * 100.0,
            r.latency_p50_ms,
            r.latency_p99_ms,
            saturation,
            entry.reported_by
        );
    }
}
