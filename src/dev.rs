//! `paygrid dev`: every part on loopback in one process — a control unit (or a cluster of
//! them on a PostgreSQL it starts), two simulated gateways, one execution unit with every
//! agent — then the example workflows, the day's settlement and reconciliation.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use paygrid_agents::gateway_sim::{self, Faults, SimConfig};
use paygrid_control_unit::cluster::lease::LeaseTiming;
use paygrid_control_unit::server::{self, ClusterConfig};
use paygrid_execution_unit::{ExecutionUnit, ExecutionUnitConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::{EXIT_FAILED, EXIT_OK, parse_addr};
use crate::devdb::DevPostgres;
use crate::parts::{
    AccessArgs, ExecArgs, GatewayArg, StorageArgs, any_broken, build_agents, http_listener,
    shutdown_signal,
};

/// The partition lease of dev's cluster: a stopped member's partitions move after it.
const DEV_LEASE_MS: u64 = 5_000;

#[derive(Debug, Args)]
pub struct DevArgs {
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// The control unit's HTTP listener (/metrics, MCP at /mcp); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub http: SocketAddr,
    /// Exit when the example workflows finish instead of staying up until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Card payments to submit.
    #[arg(long, default_value_t = 3)]
    pub payments: u32,
    /// Where dev keeps the control unit's store, the ledger and the gateways' records.
    #[arg(long, env = "PAYGRID_DATA_DIR", default_value = ".paygrid/dev")]
    pub data_dir: std::path::PathBuf,
    /// Start from an empty data dir.
    #[arg(long)]
    pub fresh: bool,
    /// After the examples, make gateway alpha fail: watch its circuit breaker open,
    /// payments go to beta, remediation drain, probe and reopen it (demo thresholds:
    /// 3 requests in a 3 s window open the breaker; it half-opens after 5 s).
    #[arg(long)]
    pub chaos: bool,
    /// Run this many control units as a cluster (docs/cluster.md) on a PostgreSQL that dev
    /// starts under the data dir (Debian's server binaries: initdb, pg_ctl); their gRPC
    /// ports follow --listen's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub control_units: u16,
    /// Jaeger's UI (e.g. http://localhost:16686): the console links each workflow's trace.
    #[arg(long, env = "PAYGRID_JAEGER_URL")]
    pub jaeger_url: Option<String>,
}

/// The two simulated gateways of `paygrid dev`, journaled under `data_dir`, stopped
/// with `stop`.
async fn dev_gateways(
    data_dir: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<GatewayArg>> {
    let mut gateways = Vec::new();
    for (name, cost_bps) in [("alpha", 25), ("beta", 30)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "{}://{}",
            crate::transport::get().scheme(),
            listener.local_addr()?
        );
        let sim_stop = stop.clone();
        let config = SimConfig {
            journal: Some(data_dir.join(format!("gateway-{name}.sqlite3"))),
            name: name.into(),
            cost_bps,
            batch_fee_minor: 50,
            faults: Faults {
                latency_ms: 20,
                ..Faults::default()
            },
            tls: crate::transport::get().server(
                "the gateway simulator",
                paygrid_security::ClientAuth::Required,
                paygrid_security::client::ALPN_HTTP1,
            )?,
        };
        tokio::spawn(gateway_sim::serve(listener, config, async move {
            sim_stop.cancelled().await
        }));
        gateways.push(GatewayArg {
            name: name.into(),
            url,
            cost_bps,
        });
    }
    Ok(gateways)
}

const DEV_ACCESS: &str = "access.yaml";
const DEV_TOKEN_KEY: &str = "token.key";

/// Before `paygrid dev` starts: `--fresh` empties the data dir; unless `--insecure` or
/// `--certs-dir` is given, a throwaway CA with certificates for every part, a token key
/// and an access policy are created there (once). Returns the certificates directory.
pub fn prepare_dev(
    args: &DevArgs,
    certs_dir: Option<std::path::PathBuf>,
    insecure: bool,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("remove {}", args.data_dir.display()))?;
    }
    if insecure || certs_dir.is_some() {
        return Ok(certs_dir);
    }
    let dir = args.data_dir.join("certs");
    if !dir.join("ca.crt").exists() {
        paygrid_security::certs::create(&dir, &["root", "dev-exec"])?;
    }
    let key = args.data_dir.join(DEV_TOKEN_KEY);
    if !key.exists() {
        paygrid_security::token::TokenKey::generate(&key)?;
    }
    let access = args.data_dir.join(DEV_ACCESS);
    if !access.exists() {
        std::fs::write(
            &access,
            "# Who may do what in `paygrid dev` (docs/security.md).\n\
             identities:\n  \
               root: { role: admin }\n  \
               # The execution unit: every shipped agent, and operator for its remediation agent.\n  \
               dev-exec:\n    \
                 role: operator\n    \
                 skills: [\"gateway.*\", \"risk.*\", \"ledger.*\", \"reconcile.*\", \"verify.*\", \"notify.*\", \"telemetry.*\", \"remediate.*\", \"sleep.*\"]\n",
        )
        .with_context(|| format!("write {}", access.display()))?;
    }
    Ok(Some(dir))
}

/// Everything on loopback: control unit (or a cluster of them), two gateways, one
/// execution unit, examples.
pub async fn dev(args: DevArgs) -> anyhow::Result<u8> {
    let stop = CancellationToken::new();
    let transport = crate::transport::get();
    // A cluster keeps its workflows in PostgreSQL: dev starts one under its data dir.
    let postgres = if args.control_units > 1 {
        Some(DevPostgres::start(&args.data_dir.join("postgres"))?)
    } else {
        None
    };
    let mut controls = Vec::new();
    let mut endpoints = Vec::new();
    let mut location = String::new();
    for n in 0..args.control_units {
        let listen = match args.listen.port() {
            0 => args.listen,
            port => SocketAddr::new(args.listen.ip(), port.saturating_add(n)),
        };
        let (listener, addr) = server::bind(listen).await.with_context(|| {
            format!("bind {listen} (is another paygrid running? use --listen 127.0.0.1:0)")
        })?;
        let storage = StorageArgs {
            data_dir: args.data_dir.join("control"),
            store: postgres.as_ref().map(|p| p.url.clone()),
            retention: "7d".into(),
            commit_batch_max: 1024,
            flush_interval_ms: 0,
            retained_max: 100_000,
            commit_log_nice: paygrid_control_unit::priority::COMMIT_LOG_NICE,
            commit_log_dir: None,
        };
        let (mut config, shown) = storage.config().await?;
        location = shown;
        config.security = if transport.tls.is_some() {
            AccessArgs {
                access: Some(args.data_dir.join(DEV_ACCESS)),
                token_key: Some(args.data_dir.join(DEV_TOKEN_KEY)),
            }
        } else {
            AccessArgs::default()
        }
        .security()?;
        // The first member's HTTP listener is --http; the others pick a port.
        let http = if n == 0 {
            args.http
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        config.http = Some(http_listener(
            http,
            addr,
            &config.security,
            args.jaeger_url.clone(),
        )?);
        if args.chaos {
            let breaker = &mut config.runtime.scheduler.breaker;
            breaker.min_requests = 3;
            breaker.window = Duration::from_secs(3);
            breaker.open_for = Duration::from_secs(5);
        }
        if let Some(postgres) = &postgres {
            config.cluster = Some(ClusterConfig {
                member: format!("cu-{}", n + 1),
                store_url: postgres.url.clone(),
                partitions: paygrid_control_unit::cluster::DEFAULT_PARTITIONS,
                timing: LeaseTiming {
                    ttl_ms: DEV_LEASE_MS,
                    margin_ms: DEV_LEASE_MS / 10,
                    renew_every_ms: DEV_LEASE_MS / 3,
                },
                peers: transport.member()?,
                advertise_url: None,
            });
        }
        let control_stop = stop.clone();
        controls.push(tokio::spawn(server::serve(listener, config, async move {
            control_stop.cancelled().await
        })));
        endpoints.push(format!("{}://{addr}", transport.scheme()));
    }
    println!(
        "paygrid dev: data dir {} (control unit store: {location}); --fresh starts empty",
        args.data_dir.display()
    );
    if postgres.is_some() {
        println!(
            "paygrid dev: {} control units in a cluster (docs/cluster.md): {}; see them with paygrid cluster --store {location}",
            endpoints.len(),
            endpoints.join(", ")
        );
    }
    let endpoint = endpoints[0].clone();
    let gateways = dev_gateways(&args.data_dir, &stop).await?;
    println!(
        "paygrid dev: control unit on {endpoint}; gateways {}",
        gateways
            .iter()
            .map(|g| format!("{}={} ({} bps)", g.name, g.url, g.cost_bps))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &transport.tls {
        Some(tls) => {
            println!(
                "             try: paygrid --certs-dir {} --control {endpoint} list    (Ctrl-C to stop)",
                tls.dir().display()
            );
            println!(
                "             a token for MCP/A2A clients: paygrid token --key {} --role operator",
                args.data_dir.join(DEV_TOKEN_KEY).display()
            );
        }
        None => println!(
            "             try: paygrid --insecure --control {endpoint} list    (Ctrl-C to stop)"
        ),
    }
    let alpha_url = gateways.first().map(|g| g.url.clone());
    let gateway_names: Vec<String> = gateways.iter().map(|g| g.name.clone()).collect();
    let exec_args = ExecArgs {
        name: Some("dev-exec".into()),
        gateways,
        agents: [
            "gateway",
            "risk",
            "ledger",
            "reconcile",
            "verify",
            "notify",
            "telemetry",
            "remediate",
        ]
        .map(String::from)
        .to_vec(),
        gateway_concurrency: 64,
        sleep_concurrency: 64,
        sleep_ms: 1,
        drain_timeout_ms: 10_000,
        metrics_addr: None,
        data_dir: Some(args.data_dir.join("exec")),
    };
    let mut dev_config = ExecutionUnitConfig::new("dev-exec", endpoint.clone());
    dev_config.security = transport.part_grpc("dev-exec")?;
    let (agents, broken) = build_agents(&exec_args, &endpoint, &dev_config.health, "dev-exec")?;
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            any_broken(broken).await;
            eprintln!("error: the ledger's journal failed; stopping (restart to replay it)");
            stop.cancel();
        });
    }
    // One execution unit serving every control unit with the same agents.
    let mut units = Vec::new();
    for control in &endpoints {
        let mut each = ExecutionUnitConfig::new("dev-exec", control.clone());
        each.security = dev_config.security.clone();
        each.metrics = dev_config.metrics.clone();
        each.health = dev_config.health.clone();
        let mut unit = ExecutionUnit::new(each);
        for agent in &agents {
            unit = unit.host(agent.clone());
        }
        let exec_stop = stop.clone();
        units.push(tokio::spawn(async move { unit.run(exec_stop).await }));
    }
    let mut outcome = crate::operator::run_examples(&endpoint, args.payments).await;
    if matches!(outcome, Ok(true)) {
        // Settle the day: close each gateway's batch and reconcile it against the ledger.
        if let Err(error) = crate::reconcile::settle_day(&endpoint, &gateway_names).await {
            eprintln!("warning: reconciliation did not run: {error:#}");
        }
    }
    if args.chaos
        && matches!(outcome, Ok(true))
        && let Some(alpha) = &alpha_url
    {
        outcome = crate::chaos::chaos(&endpoint, alpha).await;
    }
    let code = match &outcome {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_FAILED,
        Err(error) => {
            eprintln!("error: {error:#}");
            EXIT_FAILED
        }
    };
    if !args.exit {
        println!("paygrid dev: examples done; still serving on {endpoint} until Ctrl-C");
        shutdown_signal().await;
    }
    stop.cancel();
    for unit in units {
        let _ = unit.await;
    }
    for control in controls {
        let _ = control.await;
    }
    // The database stops last, when the control units have.
    drop(postgres);
    Ok(code)
}
