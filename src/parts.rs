//! The parts as processes: `control`, `exec`, `gateway-sim` (`dev`, all of them, is
//! in `dev.rs`).
//!
//! Every server prints one line `paygrid <part> listening on http://ADDR` on stdout once
//! it is bound, so scripts and tests can start it on port 0 and read the address. A
//! control unit serving HTTP (`--http`) prints `paygrid control http on URL: …` just
//! before it, once that listener is bound too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use paygrid_agents::gateway::GatewayAgent;
use paygrid_agents::gateway_sim::{self, Faults, SimConfig};
use paygrid_agents::ledger::LedgerAgent;
use paygrid_agents::risk::{RiskAgent, RiskRules};
use paygrid_agents::service::{NotifyAgent, SleepAgent, VerifyAgent};
use paygrid_control_unit::server;
use paygrid_execution_unit::{Agent, ExecutionUnit, ExecutionUnitConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::{EXIT_OK, parse_addr};

mod control_flags;
pub use control_flags::{AccessArgs, ControlArgs, StorageArgs};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Name shown in `paygrid agents` (default: exec-PID).
    #[arg(long)]
    pub name: Option<String>,
    /// A gateway to host an agent for, as NAME=URL or NAME=URL@COST_BPS.
    #[arg(long = "gateway", value_parser = parse_gateway)]
    pub gateways: Vec<GatewayArg>,
    /// Agents to host, comma-separated: gateway, risk, ledger, reconcile (needs ledger and
    /// the --gateway URLs), verify, notify, telemetry, remediate, sleep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gateway,risk,ledger,reconcile,verify,notify,telemetry,remediate"
    )]
    pub agents: Vec<String>,
    /// Concurrent tasks per gateway agent.
    #[arg(long, default_value_t = 64)]
    pub gateway_concurrency: u32,
    /// Concurrent tasks of the sleep (benchmark) agent.
    #[arg(long, default_value_t = 64)]
    pub sleep_concurrency: u32,
    /// Default sleep of the sleep agent, in milliseconds.
    #[arg(long, default_value_t = 1)]
    pub sleep_ms: u64,
    /// How long SIGTERM waits for in-flight tasks, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// Keep the ledger in DIR/ledger.sqlite3 (default: memory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_parser = parse_addr)]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct GatewayArg {
    pub name: String,
    pub url: String,
    pub cost_bps: u32,
}

fn parse_gateway(text: &str) -> Result<GatewayArg, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=URL[@COST_BPS]"))?;
    let (url, cost) = match rest.rsplit_once('@') {
        Some((url, cost)) => (
            url,
            cost.parse()
                .map_err(|_| format!("`{text}`: cost `{cost}` is not a number of basis points"))?,
        ),
        None => (rest, 0),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "`{text}`: the URL must start with http:// or https://"
        ));
    }
    Ok(GatewayArg {
        name: name.to_owned(),
        url: url.to_owned(),
        cost_bps: cost,
    })
}

/// `MIN-MAX` in milliseconds, MIN <= MAX.
fn parse_range_ms(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not MIN-MAX (milliseconds), e.g. 500-2000"))?;
    let parse = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|e| format!("`{part}` in `{text}`: {e}"))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(format!("`{text}`: MIN is greater than MAX"));
    }
    Ok((min, max))
}

#[derive(Debug, Args)]
pub struct GatewaySimArgs {
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub listen: SocketAddr,
    #[arg(long, default_value = "alpha")]
    pub name: String,
    #[arg(long, default_value_t = 25)]
    pub cost_bps: u32,
    /// A fixed fee per settlement batch and currency, in minor units (a `fee` row).
    #[arg(long, default_value_t = 0)]
    pub batch_fee_minor: i64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency of captures, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub capture_latency_ms: u64,
    /// Share of requests failing with 503 before their effect (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of requests that are slow (0 to 1), like a card network's long tail.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// Latency of a slow request, `MIN-MAX` milliseconds (uniform), e.g. `500-2000`.
    #[arg(long, default_value = "500-2000", value_parser = parse_range_ms)]
    pub slow_latency_ms: (u64, u64),
    /// Keep payments and idempotency records in DIR/gateway-NAME.sqlite3 (default: memory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The control unit's HTTP listener, bound, with the web console at `/` and MCP at
/// `/mcp`, both talking to the control unit's gRPC address `grpc`; says where it is.
/// `jaeger_url`: where the console's trace links point.
pub fn http_listener(
    http: SocketAddr,
    grpc: SocketAddr,
    security: &paygrid_control_unit::server::Security,
    jaeger_url: Option<String>,
) -> anyhow::Result<paygrid_control_unit::server::HttpConfig> {
    let listener =
        std::net::TcpListener::bind(http).with_context(|| format!("bind --http {http}"))?;
    let bound = listener.local_addr()?;
    // MCP is a client of the gRPC API: loopback when the control unit listens on all
    // addresses.
    let grpc_host = if grpc.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], grpc.port()))
    } else {
        grpc
    };
    // MCP calls the control unit with the caller's own token; its connection presents
    // no certificate of its own.
    let transport = crate::transport::get();
    let mcp_client = match &transport.tls {
        Some(tls) => paygrid_security::ClientSecurity::tls(
            tls,
            None,
            None,
            paygrid_security::client::ALPN_H2,
        )?,
        None => paygrid_security::ClientSecurity::insecure(),
    };
    let scheme = transport.scheme();
    let console = paygrid_console::router(
        &format!("{scheme}://{grpc_host}"),
        mcp_client.clone(),
        paygrid_console::ConsoleOptions {
            jaeger_url,
            require_token: !security.policy.is_insecure(),
        },
    )?;
    let routes = paygrid_mcp::router(
        &format!("{scheme}://{grpc_host}"),
        mcp_client,
        !security.policy.is_insecure(),
    )?
    .merge(console);
    println!(
        "paygrid control http on {scheme}://{bound}: console at {scheme}://{bound}/, /metrics, MCP at {scheme}://{bound}/mcp"
    );
    Ok(paygrid_control_unit::server::HttpConfig {
        listener: std::sync::Arc::new(listener),
        routes,
    })
}

fn announce(part: &str, addr: SocketAddr) {
    println!(
        "paygrid {part} listening on {}://{addr}",
        crate::transport::get().scheme()
    );
}

pub async fn control(args: ControlArgs) -> anyhow::Result<u8> {
    let (listener, addr) = server::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let (mut config, location) = args.storage.config().await?;
    tracing::info!(store = %location, "control unit state");
    config.runtime.scheduler.lease_ttl = Duration::from_millis(args.lease_ttl_ms);
    config.runtime.scheduler.workflows_active_max = args.workflows_active_max;
    config.runtime.scheduler.breaker = args.breaker.config()?;
    if let Some(path) = &args.remediation_rules {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::operator::UsageError(format!("cannot read {}: {e}", path.display()))
        })?;
        config.runtime.remediation = paygrid_control_unit::remediation::Rules::parse(&text)
            .map_err(|e| crate::operator::UsageError(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &args.limits {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::operator::UsageError(format!("cannot read {}: {e}", path.display()))
        })?;
        config.runtime.scheduler.limits =
            paygrid_control_unit::scheduler::limits::LimitRules::parse(&text)
                .map_err(|e| crate::operator::UsageError(format!("{}: {e}", path.display())))?;
        config.limits_given = true;
    }
    config.security = args.access.security()?;
    config.cluster = args.cluster.config(args.storage.store.as_deref())?;
    // Both listeners are bound before the part says it is ready: a port taken meanwhile
    // fails the start, never a part that already announced itself.
    if let Some(http_addr) = args.http {
        config.http = Some(http_listener(
            http_addr,
            addr,
            &config.security,
            args.jaeger_url.clone(),
        )?);
    }
    announce("control", addr);
    server::serve(listener, config, shutdown_signal()).await?;
    Ok(EXIT_OK)
}

pub async fn gateway_sim(args: GatewaySimArgs) -> anyhow::Result<u8> {
    // Mutual TLS: only parts with a certificate from the CA reach the gateway.
    let tls = crate::transport::get().server(
        "the gateway simulator",
        paygrid_security::ClientAuth::Required,
        paygrid_security::client::ALPN_HTTP1,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    announce("gateway-sim", listener.local_addr()?);
    let journal = args
        .data_dir
        .as_ref()
        .map(|dir| dir.join(format!("gateway-{}.sqlite3", args.name)));
    let config = SimConfig {
        name: args.name,
        journal,
        cost_bps: args.cost_bps,
        batch_fee_minor: args.batch_fee_minor,
        faults: Faults {
            latency_ms: args.latency_ms,
            capture_latency_ms: args.capture_latency_ms,
            fail_rate: args.fail_rate,
            slow_rate: args.slow_rate,
            slow_latency_min_ms: args.slow_latency_ms.0,
            slow_latency_max_ms: args.slow_latency_ms.1,
            ..Faults::default()
        },
        tls,
    };
    match gateway_sim::serve(listener, config, shutdown_signal()).await {
        Ok(()) => Ok(EXIT_OK),
        Err(error @ gateway_sim::ServeError::JournalFailed) => {
            Err(FatalError(error.to_string()).into())
        }
        Err(error) => Err(error.into()),
    }
}

/// The agents an execution unit hosts.
/// A failure after which a part must stop: its memory is ahead of its disk (a failed
/// commit or journal write). The binary exits with code 70; the restart recovers.
#[derive(Debug)]
pub struct FatalError(pub String);

impl std::fmt::Display for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FatalError {}

/// Fires when any of `tokens` does (a journal that broke).
pub async fn any_broken(tokens: Vec<CancellationToken>) {
    if tokens.is_empty() {
        return std::future::pending().await;
    }
    let waits: Vec<_> = tokens
        .into_iter()
        .map(|token| Box::pin(async move { token.cancelled().await }))
        .collect();
    futures_select_all(waits).await;
}

/// Waits for the first of several futures.
async fn futures_select_all<F: std::future::Future<Output = ()> + Unpin>(mut waits: Vec<F>) {
    std::future::poll_fn(|cx| {
        for wait in &mut waits {
            if std::pin::Pin::new(wait).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

/// The agents to host, and the journals whose failure must stop the process.
pub type Hosted = (Vec<Arc<dyn Agent>>, Vec<CancellationToken>);

pub fn build_agents(
    args: &ExecArgs,
    control: &str,
    health: &Arc<paygrid_execution_unit::HealthCollector>,
    identity: &str,
) -> anyhow::Result<Hosted> {
    let transport = crate::transport::get();
    let to_gateways = transport.part_http(identity)?.connector;
    let mut broken = Vec::new();
    let mut agents: Vec<Arc<dyn Agent>> = Vec::new();
    for name in &args.agents {
        match name.as_str() {
            "gateway" => {
                if args.gateways.is_empty() {
                    anyhow::bail!(crate::operator::UsageError(
                        "the gateway agent needs at least one --gateway NAME=URL".into()
                    ));
                }
                for gateway in &args.gateways {
                    agents.push(Arc::new(GatewayAgent::new(
                        &gateway.name,
                        &gateway.url,
                        gateway.cost_bps,
                        args.gateway_concurrency,
                        to_gateways.clone(),
                    )));
                }
            }
            "risk" => agents.push(Arc::new(RiskAgent::new(RiskRules::default()))),
            "ledger" => {
                let ledger = match &args.data_dir {
                    Some(dir) => LedgerAgent::open(&dir.join("ledger.sqlite3"))?,
                    None => LedgerAgent::new(),
                };
                broken.extend(ledger.broken());
                agents.push(Arc::new(ledger));
            }
            // Asks the ledger agent (in any execution unit) as a peer.
            "reconcile" => {
                let gateways = args
                    .gateways
                    .iter()
                    .map(|g| (g.name.clone(), g.url.clone()))
                    .collect();
                agents.push(Arc::new(paygrid_agents::reconcile::ReconcileAgent::new(
                    gateways,
                    to_gateways.clone(),
                )));
            }
            "verify" => agents.push(Arc::new(VerifyAgent)),
            "notify" => agents.push(Arc::new(NotifyAgent)),
            "telemetry" => agents.push(Arc::new(paygrid_agents::telemetry::TelemetryAgent::new(
                health.clone(),
            ))),
            "remediate" => agents.push(Arc::new(
                paygrid_agents::remediation::RemediationAgent::new(
                    control,
                    &transport.part_grpc(identity)?,
                )
                .map_err(|e| {
                    crate::operator::UsageError(format!("`{control}` is not an endpoint URL: {e}"))
                })?,
            )),
            "sleep" => agents.push(Arc::new(SleepAgent {
                default_sleep_ms: args.sleep_ms,
                max_concurrency: args.sleep_concurrency,
            })),
            other => anyhow::bail!(crate::operator::UsageError(format!(
                "unknown agent `{other}`: use gateway, risk, ledger, reconcile, verify, notify, telemetry, remediate or sleep"
            ))),
        }
    }
    Ok((agents, broken))
}

/// The client certificate an execution unit presents: `--cert-name`, else
/// `client.NAME.crt` for its name, else `client.exec.crt`.
fn exec_identity(name: &str) -> anyhow::Result<String> {
    let transport = crate::transport::get();
    if let Some(cert) = &transport.cert_name {
        return Ok(cert.clone());
    }
    let Some(tls) = &transport.tls else {
        return Ok(name.to_owned());
    };
    [name, "exec"]
        .into_iter()
        .find(|candidate| tls.has_client(candidate))
        .map(str::to_owned)
        .ok_or_else(|| {
            crate::operator::UsageError(format!(
                "no client certificate for execution unit {name}: {} has neither client.{name}.crt nor client.exec.crt; give --cert-name NAME",
                tls.dir().display()
            ))
            .into()
        })
}

pub async fn exec(args: ExecArgs, control: &str) -> anyhow::Result<u8> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("exec-{}", std::process::id()));
    let identity = exec_identity(&name)?;
    // Several control units (a cluster, docs/cluster.md): one session set to each, the
    // same agents serving all of them.
    let controls: Vec<&str> = control
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if controls.is_empty() {
        anyhow::bail!(crate::operator::UsageError(
            "--control names no control unit".into()
        ));
    }
    let first = controls[0];
    let mut config = ExecutionUnitConfig::new(name.clone(), first);
    config.security = crate::transport::get().part_grpc(&identity)?;
    let (agents, broken) = build_agents(&args, first, &config.health, &identity)?;
    config.drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics {addr}"))?;
        let tls = crate::transport::get().server(
            "the execution unit's metrics",
            paygrid_security::ClientAuth::Optional,
            paygrid_security::client::ALPN_HTTP1,
        )?;
        let routes = paygrid_telemetry::metrics::router(config.metrics.clone(), || async {});
        tokio::spawn(paygrid_security::net::serve_http(
            listener,
            tls,
            routes,
            std::future::pending(),
        ));
    }
    let shutdown = CancellationToken::new();
    let unit_for = |control: &str| {
        let mut each = ExecutionUnitConfig::new(name.clone(), control);
        each.security = config.security.clone();
        each.metrics = config.metrics.clone();
        each.health = config.health.clone();
        each.drain_timeout = config.drain_timeout;
        let mut unit = ExecutionUnit::new(each);
        for agent in &agents {
            unit = unit.host(agent.clone());
        }
        unit
    };
    let mut units = tokio::task::JoinSet::new();
    for control in &controls {
        units.spawn(unit_for(control).run(shutdown.clone()));
    }
    // In a cluster, the members the given ones name are served too, as they join.
    let (found, mut discovered) = tokio::sync::mpsc::channel(16);
    tokio::spawn(discover_members(
        controls.iter().map(|c| c.to_string()).collect(),
        config.security.clone(),
        found,
        shutdown.clone(),
    ));
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    println!("paygrid exec {name} started");
    let broken = any_broken(broken);
    tokio::pin!(broken);
    loop {
        tokio::select! {
            joined = units.join_next() => if joined.is_none() {
                return Ok(EXIT_OK);
            },
            Some(control) = discovered.recv() => {
                let control: String = control;
                tracing::info!(%control, "serving a newly discovered control unit");
                units.spawn(unit_for(&control).run(shutdown.clone()));
            }
            () = &mut broken => return Err(FatalError(
                "the ledger's journal failed: memory is ahead of disk; restart to replay it".into(),
            )
            .into()),
        }
    }
}

/// How often an execution unit asks the cluster for its members.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Asks the control units served (`known`, and those found since) for the members of
/// their cluster every [`DISCOVER_EVERY`], and sends each member not served yet to
/// `found`. Stops when a control unit answers that it is in no cluster, or at shutdown.
async fn discover_members(
    mut known: Vec<String>,
    security: paygrid_security::ClientSecurity,
    found: tokio::sync::mpsc::Sender<String>,
    shutdown: CancellationToken,
) {
    use paygrid_proto::v1::agent_hub_client::AgentHubClient;
    let normal = |url: &str| url.trim_end_matches('/').to_owned();
    let mut served: std::collections::HashSet<String> = known.iter().map(|u| normal(u)).collect();
    let mut turn = 0usize;
    loop {
        // One member answers per round, in turn: any of them knows the whole cluster.
        let url = known[turn % known.len()].clone();
        turn += 1;
        let answer = match security.endpoint(&url) {
            Ok(endpoint) => {
                let channel = security.authorize(security.channel_lazy(endpoint));
                let mut request =
                    tonic::Request::new(paygrid_proto::v1::ListMembersRequest::default());
                request.set_timeout(Duration::from_secs(5));
                AgentHubClient::new(channel).list_members(request).await
            }
            Err(error) => {
                tracing::warn!(%url, %error, "control unit URL");
                return;
            }
        };
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.answered_by.is_empty() {
                    // Not a cluster: nothing to discover.
                    return;
                }
                for member in answer.members {
                    if !member.url.is_empty() && served.insert(normal(&member.url)) {
                        known.push(member.url.clone());
                        if found.send(member.url).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(%url, %status, "asking for the cluster's members");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DISCOVER_EVERY) => {}
        }
    }
}
