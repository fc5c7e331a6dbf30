//! Resource-allocation scenarios of `paygrid bench` (docs/limits.md), each on its own
//! processes so that its control unit's limits and its gateways' latencies are its own:
//!
//! - `burst`: one merchant floods (a closed loop of 512 in flight on 8 slots) while
//!   another sends a payment every 20 ms; the small merchant's latency, FIFO against
//!   fairness by merchant.
//! - `slowdown`: card payments at 48 in flight with 1 s task timeouts; halfway the
//!   gateway starts slowing down under load (each request 25 ms longer per request in
//!   flight, as a queue in front of a fixed capacity): timeouts and throughput with a
//!   static configuration and with an adaptive limit on the gateway.
//! - `cost`: card payments at 8 and at 64 in flight against two gateways (alpha 25 bps,
//!   limited to 16 at once; beta 30 bps), each call taking 20 ms: throughput and fees per
//!   1,000 payments when routes overflow (cheapest-healthy), always take the cheapest
//!   (pinned to alpha), or spread by free slots (least-loaded, a round robin by load).

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::load::{BenchArgs, InputFn, Process, load, percentile, wait_for_skill};

/// The scenarios this module runs.
pub const SCENARIOS: [&str; 3] = ["burst", "slowdown", "cost"];

/// A control unit (with `limits`, if any), gateways and one execution unit.
struct Fleet {
    _execs: Vec<Process>,
    _control: Process,
    gateways: Vec<Process>,
    channel: Channel,
    dir: std::path::PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fleet(
    args: &BenchArgs,
    name: &str,
    limits: &str,
    gateways: &[(&str, u32)],
    exec_args: &[&str],
) -> anyhow::Result<Fleet> {
    let dir = std::env::temp_dir().join(format!("paygrid-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let limits_path = dir.join("limits.yaml");
    std::fs::write(&limits_path, limits)?;
    let control_dir = dir.join("control").display().to_string();
    let limits_arg = limits_path.display().to_string();
    let mut control_args = vec![
        "control",
        "--listen",
        "127.0.0.1:0",
        "--limits",
        &limits_arg,
    ];
    let log_dir = crate::load::log_dir(args, name);
    if args.store == "memory" {
        control_args.extend(["--store", "memory"]);
    } else {
        control_args.extend(["--data-dir", &control_dir]);
        if let Some(log_dir) = &log_dir {
            control_args.extend(["--commit-log-dir", log_dir]);
        }
    }
    let control = Process::start(&control_args)?;
    let mut parts = Vec::new();
    let mut gateway_args = Vec::new();
    for (gateway, bps) in gateways {
        let part = Process::start(&["gateway-sim", "--listen", "127.0.0.1:0", "--name", gateway])?;
        gateway_args.push(format!("{gateway}={}@{bps}", part.url));
        parts.push(part);
    }
    let mut exec = vec!["--control", &control.url, "exec", "--name", "bench-alloc"];
    for gateway in &gateway_args {
        exec.extend(["--gateway", gateway.as_str()]);
    }
    exec.extend(exec_args);
    let execs = vec![Process::start(&exec)?];
    let channel = crate::load::connect(&control.url).await?;
    Ok(Fleet {
        _execs: execs,
        _control: control,
        gateways: parts,
        channel,
        dir,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const CHARGE: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: bench-charge\nversion: 1\ninputs:\n  merchant: { type: string }\ntasks:\n  - id: charge\n    skill: bench.sleep\n    with: { sleep_ms: 5 }\n";

/// `burst`: the small merchant's latency under the big one's flood, FIFO and fair.
async fn burst(args: &BenchArgs) -> anyhow::Result<Value> {
    let small_count = if args.quick { 50 } else { 200 };
    let mut modes = Vec::new();
    for (mode, limits) in [
        ("fifo", ""),
        ("fair", "fairness: { key: \"{{ inputs.merchant }}\" }\n"),
    ] {
        let fleet = fleet(
            args,
            &format!("burst-{mode}"),
            limits,
            &[("alpha", 25)],
            &["--agents", "sleep", "--sleep-concurrency", "8"],
        )
        .await?;
        wait_for_skill(fleet.channel.clone(), "bench.sleep").await?;
        let spec = Arc::new(CHARGE.to_owned());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The flood: 512 of the big merchant's payments in flight until the small ones end.
        let flood = {
            let (channel, spec, stop) = (fleet.channel.clone(), spec.clone(), stop.clone());
            tokio::spawn(async move {
                let big: InputFn =
                    Arc::new(|_| (json!({"merchant": "big"}).to_string(), pb::Priority::Normal));
                let mut done = 0usize;
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (samples, _) =
                        load(channel.clone(), spec.clone(), 2_048, 512, None, big.clone()).await?;
                    done += samples.len();
                }
                Ok::<_, anyhow::Error>((done, started.elapsed()))
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let small: InputFn = Arc::new(|_| {
            (
                json!({"merchant": "small"}).to_string(),
                pb::Priority::Normal,
            )
        });
        let (samples, _) = load(
            fleet.channel.clone(),
            spec,
            small_count,
            1,
            Some(50.0),
            small,
        )
        .await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (big_done, big_elapsed) = flood.await??;
        let mut latencies: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
        latencies.sort_by(f64::total_cmp);
        modes.push(json!({
            "mode": mode,
            "small_payments": samples.len(),
            "small_p50_ms": percentile(&latencies, 50.0),
            "small_p99_ms": percentile(&latencies, 99.0),
            "big_workflows_per_s": big_done as f64 / big_elapsed.as_secs_f64(),
        }));
    }
    Ok(json!({"scenario": "burst", "modes": modes}))
}

/// The card payment with its authorization routed as `route`.
fn card_with_route(route: &str) -> String {
    let text = include_str!("../../examples/specs/card-payment.yaml");
    text.replace("route: { policy: cheapest-healthy, fallback: true }", route)
}

/// `cost`: throughput and fees per 1,000 payments by routing policy.
async fn cost(args: &BenchArgs) -> anyhow::Result<Value> {
    let count = if args.quick { 300 } else { 1_000 };
    let mut policies = Vec::new();
    let runs = [8, 64].into_iter().flat_map(|concurrency| {
        [
            (
                "overflow",
                "route: { policy: cheapest-healthy, fallback: true }",
            ),
            ("always-cheapest", "route: { labels: { gateway: alpha } }"),
            ("round-robin", "route: { policy: least-loaded }"),
        ]
        .map(|(policy, route)| (concurrency, policy, route))
    });
    for (concurrency, policy, route) in runs {
        let fleet = fleet(
            args,
            &format!("cost-{policy}-{concurrency}"),
            "concurrency:\n  - { gateway: alpha, max: 16 }\n",
            &[("alpha", 25), ("beta", 30)],
            &["--agents", "gateway,risk,ledger,verify,notify"],
        )
        .await?;
        for gateway in &fleet.gateways {
            put_latency(&gateway.url, 20).await?;
        }
        for skill in ["gateway.authorize", "ledger.post", "verify.amounts"] {
            wait_for_skill(fleet.channel.clone(), skill).await?;
        }
        let spec = Arc::new(card_with_route(route));
        let input: InputFn = Arc::new(|i| {
            (
                json!({"amount_minor": 1_000 + (i % 5_000), "currency": "EUR", "card_token": format!("tok_bench_{i}")}).to_string(),
                pb::Priority::Normal,
            )
        });
        let (samples, elapsed) =
            load(fleet.channel.clone(), spec, count, concurrency, None, input).await?;
        let mut client = WorkflowsClient::new(fleet.channel.clone());
        let (mut fees, mut on_beta, mut failed) = (0i64, 0usize, 0usize);
        for sample in &samples {
            if !sample.succeeded {
                failed += 1;
                continue;
            }
            let workflow = client
                .get(pb::GetWorkflowRequest {
                    workflow_id: sample.id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let Some(capture) = workflow.tasks.iter().find(|t| t.task_id == "capture") else {
                continue;
            };
            let output: Value = serde_json::from_str(&capture.output_json).unwrap_or_default();
            let amount = output["amount_minor"].as_i64().unwrap_or(0);
            let bps = if output["gateway"] == "beta" {
                on_beta += 1;
                30
            } else {
                25
            };
            fees += amount * bps / 10_000;
        }
        let mut latencies: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
        latencies.sort_by(f64::total_cmp);
        let paid = samples.len() - failed;
        policies.push(json!({
            "policy": policy,
            "concurrency": concurrency,
            "payments": paid,
            "failed": failed,
            "payments_per_s": samples.len() as f64 / elapsed.as_secs_f64(),
            "p99_ms": percentile(&latencies, 99.0),
            "share_beta": on_beta as f64 / paid.max(1) as f64,
            "fees_per_1000_minor": fees as f64 * 1_000.0 / paid.max(1) as f64,
        }));
    }
    Ok(json!({"scenario": "cost", "policies": policies}))
}

/// `slowdown`: a gateway that slows down under load, with and without adaptive limits.
async fn slowdown(args: &BenchArgs) -> anyhow::Result<Value> {
    let half = if args.quick { 300 } else { 1_000 };
    let mut modes = Vec::new();
    for (mode, limits) in [
        ("static", ""),
        (
            "adaptive",
            "adaptive:\n  - { gateway: alpha, initial: 16, min: 2, max: 64, latency_target_ms: 250 }\n",
        ),
    ] {
        let fleet = fleet(
            args,
            &format!("slowdown-{mode}"),
            limits,
            &[("alpha", 25)],
            &["--agents", "gateway,risk,ledger,verify,notify"],
        )
        .await?;
        for skill in ["gateway.authorize", "ledger.post", "verify.amounts"] {
            wait_for_skill(fleet.channel.clone(), skill).await?;
        }
        let spec = Arc::new(
            card_with_route("route: { policy: cheapest-healthy, fallback: true }")
                .replace("  timeout: 10s", "  timeout: 1s"),
        );
        let gateway = fleet.gateways[0].url.clone();
        let mut phases = Vec::new();
        for (phase, faults) in [
            ("fast", "{\"latency_ms\": 5}"),
            (
                "slowing",
                "{\"latency_ms\": 5, \"latency_per_in_flight_ms\": 25}",
            ),
        ] {
            put_faults(&gateway, faults).await?;
            let offset = phases.len() * half;
            let input: InputFn = Arc::new(move |i| {
                let i = i + offset;
                (
                    json!({"amount_minor": 1_000 + (i % 5_000), "currency": "EUR", "card_token": format!("tok_bench_{i}")}).to_string(),
                    pb::Priority::Normal,
                )
            });
            let (samples, elapsed) =
                load(fleet.channel.clone(), spec.clone(), half, 48, None, input).await?;
            let mut client = WorkflowsClient::new(fleet.channel.clone());
            let (mut timeouts, mut failed) = (0usize, 0usize);
            for sample in &samples {
                failed += usize::from(!sample.succeeded);
                let workflow = client
                    .get(pb::GetWorkflowRequest {
                        workflow_id: sample.id.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                timeouts += workflow
                    .tasks
                    .iter()
                    .flat_map(|t| &t.history)
                    .filter(|a| a.outcome == "timeout")
                    .count();
            }
            let mut latencies: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
            latencies.sort_by(f64::total_cmp);
            // What governed dispatch: the adaptive limit and the breaker, at the end.
            let health = pb::agent_hub_client::AgentHubClient::new(fleet.channel.clone())
                .health(pb::HealthRequest {})
                .await?
                .into_inner();
            let limit = health.adaptive.first().map(|a| a.limit);
            let breaker_opened = health
                .breakers
                .iter()
                .flat_map(|b| &b.transitions)
                .filter(|t| t.to == "open")
                .count();
            phases.push(json!({
                "adaptive_limit": limit,
                "breaker_opened": breaker_opened,
                "phase": phase,
                "payments_per_s": samples.len() as f64 / elapsed.as_secs_f64(),
                "p99_ms": percentile(&latencies, 99.0),
                "timeouts": timeouts,
                "failed": failed,
            }));
        }
        modes.push(json!({"mode": mode, "phases": phases}));
    }
    Ok(json!({"scenario": "slowdown", "modes": modes}))
}

/// Sets a simulator's latency for every call.
async fn put_latency(url: &str, latency_ms: u64) -> anyhow::Result<()> {
    put_faults(url, &format!("{{\"latency_ms\": {latency_ms}}}")).await
}

/// Replaces a simulator's faults.
async fn put_faults(url: &str, body: &str) -> anyhow::Result<()> {
    let address = url.trim_start_matches("http://").to_owned();
    let body = body.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address)?;
        write!(
            stream,
            "PUT /v1/admin/faults HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "faults: {answer}");
        Ok(())
    })
    .await?
}

/// Runs the allocation scenarios asked for; their results and a printed table.
pub async fn run(args: &BenchArgs, names: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut results = Vec::new();
    for name in names {
        let result = match *name {
            "burst" => burst(args).await?,
            "slowdown" => slowdown(args).await?,
            "cost" => cost(args).await?,
            other => anyhow::bail!("unknown allocation scenario {other}"),
        };
        print(&result);
        results.push(result);
    }
    Ok(results)
}

fn print(result: &Value) {
    match result["scenario"].as_str() {
        Some("burst") => {
            println!("burst: a small merchant's payments while a big one floods 8 slots");
            println!(
                "  {:<6} {:>14} {:>14} {:>16}",
                "mode", "small p50 ms", "small p99 ms", "big wf/s"
            );
            for mode in result["modes"].as_array().into_iter().flatten() {
                println!(
                    "  {:<6} {:>14.1} {:>14.1} {:>16.0}",
                    mode["mode"].as_str().unwrap_or(""),
                    mode["small_p50_ms"].as_f64().unwrap_or(0.0),
                    mode["small_p99_ms"].as_f64().unwrap_or(0.0),
                    mode["big_workflows_per_s"].as_f64().unwrap_or(0.0)
                );
            }
        }
        Some("slowdown") => {
            println!(
                "slowdown: card payments at 48 in flight, 1 s timeouts; then alpha slows 25 ms per request in flight"
            );
            println!(
                "  {:<9} {:<8} {:>8} {:>10} {:>10} {:>8} {:>7} {:>8}",
                "mode", "phase", "wf/s", "p99 ms", "timeouts", "failed", "limit", "opened"
            );
            for mode in result["modes"].as_array().into_iter().flatten() {
                for phase in mode["phases"].as_array().into_iter().flatten() {
                    let limit = phase["adaptive_limit"]
                        .as_f64()
                        .map_or("-".to_owned(), |l| format!("{l:.0}"));
                    println!(
                        "  {:<9} {:<8} {:>8.0} {:>10.0} {:>10} {:>8} {:>7} {:>8}",
                        mode["mode"].as_str().unwrap_or(""),
                        phase["phase"].as_str().unwrap_or(""),
                        phase["payments_per_s"].as_f64().unwrap_or(0.0),
                        phase["p99_ms"].as_f64().unwrap_or(0.0),
                        phase["timeouts"].as_u64().unwrap_or(0),
                        phase["failed"].as_u64().unwrap_or(0),
                        limit,
                        phase["breaker_opened"].as_u64().unwrap_or(0)
                    );
                }
            }
        }
        Some("cost") => {
            println!("cost: card payments, alpha 25 bps (16 at once) and beta 30 bps, 20 ms calls");
            println!(
                "  {:<16} {:>4} {:>8} {:>10} {:>10} {:>10} {:>16}",
                "policy", "C", "paid", "wf/s", "p99 ms", "on beta", "fees per 1000"
            );
            for policy in result["policies"].as_array().into_iter().flatten() {
                println!(
                    "  {:<16} {:>4} {:>8} {:>10.0} {:>10.0} {:>9.0}% {:>16.0}",
                    policy["policy"].as_str().unwrap_or(""),
                    policy["concurrency"].as_u64().unwrap_or(0),
                    policy["payments"].as_u64().unwrap_or(0),
                    policy["payments_per_s"].as_f64().unwrap_or(0.0),
                    policy["p99_ms"].as_f64().unwrap_or(0.0),
                    policy["share_beta"].as_f64().unwrap_or(0.0) * 100.0,
                    policy["fees_per_1000_minor"].as_f64().unwrap_or(0.0)
                );
            }
        }
        _ => {}
    }
}
