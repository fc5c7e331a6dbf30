//! `paygrid bench`: Paygrid's full path measured against the raw gRPC ceiling.
//!
//! Separate processes: a control unit (durable store with its real fsync policy, or
//! `--store memory`), execution units hosting the benchmark sleep agent and the shipped
//! agents, a zero-latency gateway simulator, and a ping-pong echo server for the ceiling.
//! This process is the load generator: it submits through the public gRPC API, closed
//! loop at concurrency C (or open loop at rate R), and follows the workflows to their ends
//! on one `Follow` stream per door (or one `Watch` each, `--follow watch`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::ceiling::ceiling;
use crate::follow::{Completions, FollowMode};
use crate::machine::{cpu_seconds, machine_ticks, status_kb, steal_percent};
use crate::report::{
    Overheads, assignment_and_result_sizes, hop_overheads, print_report, print_row, summarize,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated: seq3, card, fanout, priority; and burst, slowdown, cost
    /// (resource allocation, each on its own processes: docs/limits.md).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "seq3,card,fanout,priority",
        value_parser = ["seq3", "card", "fanout", "priority", "burst", "slowdown", "cost"]
    )]
    pub scenarios: Vec<String>,
    /// Workflows per scenario (default depends on the scenario and --quick).
    #[arg(long)]
    pub workflows: Option<usize>,
    /// Closed loop: workflows in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Open loop instead: workflows submitted per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long each benchmark task sleeps, in milliseconds.
    #[arg(long, default_value_t = 1)]
    pub task_ms: u64,
    /// Execution units.
    #[arg(long, default_value_t = 1)]
    pub execs: usize,
    /// `durable` (the embedded store, real fsync), `memory`, or `postgres://...` (the
    /// control units then run as a cluster, docs/cluster.md).
    #[arg(long, default_value = "durable")]
    pub store: String,
    /// Control units, members of one cluster on the --store PostgreSQL; the load is spread
    /// over them (each workflow submitted and followed at one member).
    #[arg(long, default_value_t = 1)]
    pub control_units: usize,
    /// Workflows held in flight for the memory measurement (0 skips it).
    #[arg(long)]
    pub inflight: Option<usize>,
    /// Finish in under a minute (smaller runs).
    #[arg(long)]
    pub quick: bool,
    /// How the load generator learns of each workflow's end: one `Follow` stream for all
    /// (`stream`) or one `Watch` per workflow (`watch`).
    #[arg(long, value_enum, default_value = "stream")]
    pub follow: FollowMode,
    /// Where to write the JSON report (default: target/paygrid-bench/bench-UNIXTIME.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Each control unit on the embedded store keeps its commit log in a new directory
    /// under this one (on the device to measure: docs/durability.md, "Where the commit
    /// log lives"), removed afterwards; default: beside its database.
    #[arg(long)]
    pub commit_log_dir: Option<PathBuf>,
}

/// The `--commit-log-dir` for the control unit called `name`: a directory of its own
/// under the benchmark's `--commit-log-dir` (each control unit starts a new database,
/// and a log directory holding another database's log is refused).
pub(crate) fn log_dir(args: &BenchArgs, name: &str) -> Option<String> {
    args.commit_log_dir
        .as_ref()
        .map(|root| logs_root(root).join(name).display().to_string())
}

fn logs_root(root: &std::path::Path) -> PathBuf {
    root.join(format!("paygrid-bench-{}", std::process::id()))
}

/// Removes the benchmark's commit log directories when the run ends.
struct LogsRemoved(Option<PathBuf>);

impl Drop for LogsRemoved {
    fn drop(&mut self) {
        if let Some(root) = &self.0 {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// A part started as its own process, killed on drop.
pub(crate) struct Process {
    child: Child,
    pub(crate) url: String,
}

impl Process {
    pub(crate) fn start(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locate the paygrid binary")?;
        // The benchmark measures the engine, in plaintext on loopback: its figures stay
        // comparable with earlier runs and with the peers measured the same way.
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("PAYGRID_INSECURE", "true")
            .env_remove("PAYGRID_CERTS_DIR")
            // Each control unit gets its own (`--commit-log-dir` of the benchmark).
            .env_remove("PAYGRID_COMMIT_LOG_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start paygrid {args:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        anyhow::ensure!(
            !line.is_empty(),
            "paygrid {args:?} exited before it was ready"
        );
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_default()
            .to_owned();
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = reader.read_to_string(&mut sink);
        });
        Ok(Self { child, url })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel to a part, without Nagle's delay.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn seq3_spec(task_ms: u64) -> String {
    format!(
        "apiVersion: paygrid/v1\nkind: Workflow\nname: bench-seq3\nversion: 1\ntasks:\n  - id: a\n    skill: bench.sleep\n    with: {{ sleep_ms: {task_ms} }}\n  - id: b\n    skill: bench.sleep\n    needs: [a]\n    with: {{ sleep_ms: {task_ms} }}\n  - id: c\n    skill: bench.sleep\n    needs: [b]\n    with: {{ sleep_ms: {task_ms} }}\n"
    )
}

fn fanout_spec(task_ms: u64) -> String {
    let mut text = format!(
        "apiVersion: paygrid/v1\nkind: Workflow\nname: bench-fanout\nversion: 1\ntasks:\n  - id: head\n    skill: bench.sleep\n    with: {{ sleep_ms: {task_ms} }}\n"
    );
    for i in 0..50 {
        text.push_str(&format!("  - id: p{i}\n    skill: bench.sleep\n    needs: [head]\n    with: {{ sleep_ms: {task_ms} }}\n"));
    }
    let all: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    text.push_str(&format!("  - id: tail\n    skill: bench.sleep\n    needs: [{}]\n    with: {{ sleep_ms: {task_ms} }}\n", all.join(", ")));
    text
}

/// One finished workflow as the client saw it.
pub(crate) struct Sample {
    pub(crate) id: String,
    pub(crate) latency: Duration,
    pub(crate) succeeded: bool,
    pub(crate) critical: bool,
}

pub(crate) type InputFn = Arc<dyn Fn(usize) -> (String, pb::Priority) + Send + Sync>;

/// Closed loop at `concurrency`, or open loop at `rate`; returns every sample.
pub(crate) async fn load(
    channel: Channel,
    spec: Arc<String>,
    count: usize,
    concurrency: usize,
    rate: Option<f64>,
    input: InputFn,
) -> anyhow::Result<(Vec<Sample>, Duration)> {
    load_doors(
        vec![channel],
        spec,
        count,
        concurrency,
        rate,
        input,
        FollowMode::Stream,
    )
    .await
}

/// As [`load`], workflow `i` submitted and followed at door `i % doors`.
async fn load_doors(
    doors: Vec<Channel>,
    spec: Arc<String>,
    count: usize,
    concurrency: usize,
    rate: Option<f64>,
    input: InputFn,
    follow: FollowMode,
) -> anyhow::Result<(Vec<Sample>, Duration)> {
    let mut completions = Vec::new();
    if follow == FollowMode::Stream {
        for door in &doors {
            completions.push(Completions::open(door.clone()).await?);
        }
    }
    let completions: Arc<[Completions]> = completions.into();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let doors: Arc<[Channel]> = doors.into();
    let one = move |i: usize, doors: Arc<[Channel]>, spec: Arc<String>, input: InputFn| {
        let completions = completions.clone();
        async move {
            let mut client = WorkflowsClient::new(doors[i % doors.len()].clone());
            let (input_json, priority) = input(i);
            let t0 = Instant::now();
            let id = client
                .submit(pb::SubmitRequest {
                    spec: Some(pb::submit_request::Spec::SpecText((*spec).clone())),
                    input_json,
                    priority: priority.into(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .workflow_id;
            let succeeded = match completions.get(i % doors.len()) {
                Some(completions) => completions.ended(&id).await?,
                None => crate::follow::watch(&mut client, &id).await?,
            };
            Ok::<_, anyhow::Error>(Sample {
                id,
                latency: t0.elapsed(),
                succeeded,
                critical: priority == pb::Priority::Critical,
            })
        }
    };
    let mut samples = Vec::with_capacity(count);
    match rate {
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..concurrency.max(1) {
                let (next, doors, spec, input, one) = (
                    next.clone(),
                    doors.clone(),
                    spec.clone(),
                    input.clone(),
                    one.clone(),
                );
                workers.spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok::<_, anyhow::Error>(mine);
                        }
                        mine.push(one(i, doors.clone(), spec.clone(), input.clone()).await?);
                    }
                });
            }
            while let Some(result) = workers.join_next().await {
                samples.extend(result??);
            }
        }
        Some(rate) => {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
            let mut running = tokio::task::JoinSet::new();
            for i in 0..count {
                ticker.tick().await;
                let (doors, spec, input) = (doors.clone(), spec.clone(), input.clone());
                running.spawn(one(i, doors, spec, input));
                // Reap as we go so the set stays bounded by what is in flight.
                while let Some(done) = running.try_join_next() {
                    samples.push(done??);
                }
            }
            while let Some(done) = running.join_next().await {
                samples.push(done??);
            }
        }
    }
    Ok((samples, started.elapsed()))
}

pub(crate) async fn wait_for_skill(channel: Channel, skill: &str) -> anyhow::Result<()> {
    let mut client = pb::agent_hub_client::AgentHubClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = client
            .list_agents(pb::ListAgentsRequest {
                skill: skill.into(),
            })
            .await?
            .into_inner()
            .agents;
        if agents.iter().any(|a| a.connected) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no agent for {skill} connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start_execs(
    control: &str,
    gateway: &str,
    count: usize,
    agents: &str,
    sleep_concurrency: u32,
    task_ms: u64,
) -> anyhow::Result<Vec<Process>> {
    (0..count)
        .map(|n| {
            Process::start(&[
                "--control",
                control,
                "exec",
                "--name",
                &format!("bench-{n}"),
                "--gateway",
                &format!("alpha={gateway}@25"),
                "--agents",
                agents,
                "--sleep-concurrency",
                &sleep_concurrency.to_string(),
                "--gateway-concurrency",
                "512",
                "--sleep-ms",
                &task_ms.to_string(),
            ])
        })
        .collect()
}

/// The parts a benchmark run starts, each its own process.
/// Dropped (killed) in this order: execution units first.
struct Parts {
    execs: Vec<Process>,
    control: Process,
    /// The other members of a cluster.
    members: Vec<Process>,
    /// A channel to each control unit.
    doors: Vec<Channel>,
    gateway: Process,
    echo: Process,
    channel: Channel,
    dir: PathBuf,
}

/// Waits until `members` cluster members each hold their share of the partitions, so the
/// load does not start in the middle of a rebalance.
async fn wait_for_spread(store: &str, members: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (live, table) = paygrid_control_unit::cluster::postgres::snapshot(store).await?;
        let share = table.leases.len().div_ceil(members.max(1));
        let held = |name: &str| {
            table
                .leases
                .iter()
                .filter(|l| l.owner.as_deref() == Some(name) && l.expires_at_ms > table.now_ms)
                .count()
        };
        let spread = (0..members)
            .map(|k| held(&format!("bench-cu-{k}")))
            .collect::<Vec<_>>();
        if spread.iter().all(|h| *h > 0 && *h <= share)
            && spread.iter().sum::<usize>() == table.leases.len()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "partitions never spread over {members} members: {spread:?} ({} live)",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Parts {
    /// CPU seconds of every control unit.
    fn control_cpu(&self) -> f64 {
        std::iter::once(&self.control)
            .chain(&self.members)
            .map(|c| cpu_seconds(c.pid()))
            .sum()
    }
}

async fn start_parts(args: &BenchArgs) -> anyhow::Result<Parts> {
    let dir = std::env::temp_dir().join(format!("paygrid-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let control_dir = dir.join("control").display().to_string();
    let cluster = args.store.starts_with("postgres");
    anyhow::ensure!(
        cluster || args.control_units == 1,
        "--control-units {} needs --store postgres://...: members share one PostgreSQL",
        args.control_units
    );
    let store_args: Vec<&str> = if args.store == "memory" {
        vec!["--store", "memory"]
    } else if cluster {
        vec!["--store", &args.store]
    } else {
        vec!["--data-dir", &control_dir]
    };
    let log_dir = log_dir(args, "load").filter(|_| store_args[0] == "--data-dir");
    let mut controls = Vec::new();
    for k in 0..args.control_units.max(1) {
        let name = format!("bench-cu-{k}");
        let mut control_args = vec!["control", "--listen", "127.0.0.1:0"];
        control_args.extend(store_args.iter().copied());
        if let Some(log_dir) = &log_dir {
            control_args.extend(["--commit-log-dir", log_dir]);
        }
        if cluster {
            control_args.extend(["--cluster-member", &name]);
        }
        controls.push(Process::start(&control_args)?);
    }
    let control = controls.remove(0);
    let members = controls;
    let all: Vec<String> = std::iter::once(&control)
        .chain(&members)
        .map(|c| c.url.clone())
        .collect();
    let all = all.join(",");
    let gateway = Process::start(&["gateway-sim", "--listen", "127.0.0.1:0", "--name", "alpha"])?;
    let echo = Process::start(&["bench-echo", "--listen", "127.0.0.1:0"])?;
    let execs = start_execs(
        &all,
        &gateway.url,
        args.execs,
        "sleep,gateway,risk,ledger,verify,notify",
        1024,
        args.task_ms,
    )?;
    if cluster {
        wait_for_spread(&args.store, args.control_units).await?;
    }
    let mut doors = Vec::new();
    for url in all.split(',') {
        doors.push(connect(url).await?);
    }
    let channel = doors[0].clone();
    for skill in ["bench.sleep", "gateway.authorize", "ledger.post"] {
        wait_for_skill(channel.clone(), skill).await?;
    }
    Ok(Parts {
        execs,
        control,
        members,
        doors,
        gateway,
        echo,
        channel,
        dir,
    })
}

/// One scenario's workload.
struct Scenario {
    spec: String,
    count: usize,
    tasks: usize,
    concurrency: usize,
    input: InputFn,
}

/// The workload a scenario names; `priority` first replaces the execution units with
/// one of 16 slots, so that work queues.
async fn scenario(name: &str, args: &BenchArgs, parts: &mut Parts) -> anyhow::Result<Scenario> {
    let count = |full: usize, quick: usize| {
        args.workflows
            .unwrap_or(if args.quick { quick } else { full })
    };
    let plain: InputFn = Arc::new(|_| ("{}".into(), pb::Priority::Normal));
    Ok(match name {
        "seq3" => Scenario {
            spec: seq3_spec(args.task_ms),
            count: count(30_000, 5_000),
            tasks: 3,
            concurrency: args.concurrency,
            input: plain,
        },
        "fanout" => Scenario {
            spec: fanout_spec(args.task_ms),
            count: count(1_000, 200),
            tasks: 52,
            concurrency: 20.min(args.concurrency),
            input: plain,
        },
        "card" => Scenario {
            spec: paygrid_examples::CARD_PAYMENT.to_owned(),
            count: count(10_000, 2_000),
            tasks: 7,
            concurrency: args.concurrency,
            input: Arc::new(|i| {
                (json!({"amount_minor": 1000 + i % 5000, "currency": "EUR", "card_token": format!("tok_bench_{i}")}).to_string(), pb::Priority::Unspecified)
            }),
        },
        "priority" => {
            // Saturate: fewer slots than workflows in flight.
            drop(std::mem::take(&mut parts.execs));
            parts.execs = start_execs(
                &parts.control.url,
                &parts.gateway.url,
                1,
                "sleep",
                16,
                args.task_ms,
            )?;
            wait_for_skill(parts.channel.clone(), "bench.sleep").await?;
            Scenario {
                spec: seq3_spec(args.task_ms),
                count: count(10_000, 2_000),
                tasks: 3,
                concurrency: args.concurrency,
                input: Arc::new(|i| {
                    let priority = if i % 2 == 0 {
                        pb::Priority::Critical
                    } else {
                        pb::Priority::Low
                    };
                    ("{}".into(), priority)
                }),
            }
        }
        other => anyhow::bail!("unknown scenario `{other}`: use seq3, card, fanout or priority"),
    })
}

/// Runs one scenario and prints its row.
async fn measure(name: &str, args: &BenchArgs, parts: &mut Parts) -> anyhow::Result<Value> {
    let cpu_before = parts.control_cpu();
    let plan = scenario(name, args, parts).await?;
    let machine_before = machine_ticks();
    let (samples, elapsed) = load_doors(
        parts.doors.clone(),
        Arc::new(plan.spec),
        plan.count,
        plan.concurrency,
        args.rate,
        plan.input,
        args.follow,
    )
    .await?;
    let steal = steal_percent(machine_before);
    let hops = if matches!(name, "seq3" | "fanout") {
        hop_overheads(parts.channel.clone(), &samples, name == "fanout").await
    } else {
        Overheads::default()
    };
    let mut summary = summarize(
        name,
        &samples,
        elapsed,
        plan.tasks,
        parts.control_cpu() - cpu_before,
        &hops,
    );
    summary["cpu_steal_percent"] = json!(steal);
    print_row(&summary);
    Ok(summary)
}

/// seq3 at half of its peak rate, open loop: the scheduling overhead off peak.
async fn half_load(peak: f64, args: &BenchArgs, parts: &Parts) -> anyhow::Result<Value> {
    let half = (peak / 2.0).max(1.0);
    let count = ((half * if args.quick { 4.0 } else { 10.0 }) as usize).max(100);
    let cpu_before = parts.control_cpu();
    let machine_before = machine_ticks();
    let (samples, elapsed) = load_doors(
        parts.doors.clone(),
        Arc::new(seq3_spec(args.task_ms)),
        count,
        0,
        Some(half),
        Arc::new(|_| ("{}".into(), pb::Priority::Normal)),
        args.follow,
    )
    .await?;
    let steal = steal_percent(machine_before);
    let hops = hop_overheads(parts.channel.clone(), &samples, false).await;
    let mut summary = summarize(
        "seq3-half-load",
        &samples,
        elapsed,
        3,
        parts.control_cpu() - cpu_before,
        &hops,
    );
    summary["rate_per_s"] = json!(half);
    summary["cpu_steal_percent"] = json!(steal);
    print_row(&summary);
    Ok(summary)
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    let _logs = LogsRemoved(args.commit_log_dir.as_deref().map(logs_root));
    let allocation: Vec<&str> = crate::allocation::SCENARIOS
        .into_iter()
        .filter(|s| args.scenarios.iter().any(|a| a == s))
        .collect();
    if !allocation.is_empty() {
        let results = crate::allocation::run(&args, &allocation).await?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let out = PathBuf::from(format!("target/paygrid-bench/allocation-{secs}.json"));
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(
            &out,
            serde_json::to_string_pretty(&json!({"scenarios": results}))?,
        )?;
        println!("report: {}", out.display());
        args.scenarios
            .retain(|s| !crate::allocation::SCENARIOS.contains(&s.as_str()));
        if args.scenarios.is_empty() {
            return Ok(());
        }
    }
    let mut parts = start_parts(&args).await?;
    println!(
        "paygrid bench: {} control unit(s) at {} (store: {}), {} execution unit(s), tasks sleep {} ms",
        1 + parts.members.len(),
        parts.control.url,
        args.store,
        args.execs,
        args.task_ms
    );
    let mut results = Vec::new();
    for name in &args.scenarios {
        let summary = measure(name, &args, &mut parts).await?;
        let peak = summary["workflows_per_s"].as_f64().unwrap_or(100.0);
        results.push(summary);
        if name == "seq3" && args.rate.is_none() {
            results.push(half_load(peak, &args, &parts).await?);
        }
    }
    // Memory per in-flight workflow: workflows waiting on a skill no agent offers.
    let inflight = args
        .inflight
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    let memory = if inflight > 0 {
        let log_dir = log_dir(&args, "hold").filter(|_| args.store != "memory");
        Some(
            crate::hold::hold(
                &parts.dir,
                args.store == "memory",
                log_dir.as_deref(),
                inflight,
            )
            .await?,
        )
    } else {
        None
    };
    let (assignment_bytes, result_bytes) = assignment_and_result_sizes(args.task_ms);
    let ceiling_rate = ceiling(
        &parts.echo.url,
        assignment_bytes,
        result_bytes,
        256,
        Duration::from_secs(if args.quick { 2 } else { 5 }),
    )
    .await?;
    let peak_rss_kb = status_kb(parts.control.pid(), "VmHWM:");
    let best_tasks = results
        .iter()
        .filter_map(|r| r["tasks_per_s"].as_f64())
        .fold(0.0, f64::max);
    let report = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "settings": {"concurrency": args.concurrency, "rate": args.rate, "task_ms": args.task_ms, "execs": args.execs, "store": args.store, "quick": args.quick, "follow": format!("{:?}", args.follow).to_lowercase()},
        "scenarios": results,
        "control_unit": {"peak_rss_kb": peak_rss_kb, "memory_per_inflight_workflow": memory},
        "ceiling": {"round_trips_per_s": ceiling_rate, "assignment_bytes": assignment_bytes, "result_bytes": result_bytes, "window": 256,
                     "best_tasks_per_s": best_tasks, "ratio": if ceiling_rate > 0.0 { best_tasks / ceiling_rate } else { 0.0 }},
    });
    print_report(&report);
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("target/paygrid-bench/bench-{secs}.json"))
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", out.display());
    let dir = parts.dir.clone();
    drop(parts);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
