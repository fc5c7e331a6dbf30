//! Serving the control unit: the actor plus both gRPC services, health and reflection.

use std::net::SocketAddr;
use std::sync::Arc;

use paygrid_proto::v1::agent_hub_server::AgentHubServer;
use paygrid_proto::v1::workflows_server::WorkflowsServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::Catalog;
use crate::runtime::{self, RuntimeConfig};
use crate::service::{AgentHubService, WorkflowsService};
use crate::spec::SpecLimits;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Recovery at start failed, or a group commit failed while serving: memory would be
    /// ahead of disk. The binary exits with code 70; the next start recovers from the last
    /// good commit.
    #[error("{0}")]
    Control(#[from] crate::error::ControlError),
    #[error("HTTP listener: {0}")]
    Http(std::io::Error),
}

/// Control unit settings.
#[derive(Clone, Default)]
pub struct ControlConfig {
    pub runtime: RuntimeConfig,
    pub limits: SpecLimits,
    /// Where workflows are kept; `None` keeps them in memory only (tests, benchmarks).
    pub store: Option<Arc<dyn crate::store::Store>>,
    /// Terminal workflows older than this are pruned from the store.
    pub retention: Option<std::time::Duration>,
    /// The HTTP listener: `GET /metrics`, and the routes given (MCP, ...).
    pub http: Option<HttpConfig>,
    /// The limits in `runtime.scheduler.limits` were given at start (`--limits FILE`):
    /// they replace the stored ones. Otherwise the limits last set at run time (kept in
    /// the store) apply.
    pub limits_given: bool,
    /// TLS and who may call what; the default serves plaintext to everyone (tests, and
    /// `--insecure`).
    pub security: Security,
    /// Member of a cluster of control units on one PostgreSQL (docs/cluster.md).
    pub cluster: Option<ClusterConfig>,
}

/// A control unit's place in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This member's name, unique in the cluster.
    pub member: String,
    /// The cluster's PostgreSQL (the store's).
    pub store_url: String,
    /// Partitions, if this member is the first (the count is fixed after).
    pub partitions: u32,
    pub timing: crate::cluster::lease::LeaseTiming,
    /// How this member reaches the others to forward calls: TLS presenting the node
    /// certificate, or plaintext (`--insecure`).
    pub peers: paygrid_security::ClientSecurity,
    /// The gRPC address other members and execution units reach this one at; `None`:
    /// the listen address (loopback for an unspecified one).
    pub advertise_url: Option<String>,
}

/// How the control unit is secured (docs/security.md).
#[derive(Clone)]
pub struct Security {
    /// The gRPC listener's TLS (client certificates verified when given).
    pub grpc_tls: Option<Arc<rustls::ServerConfig>>,
    /// The HTTP listener's TLS.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    pub policy: Arc<paygrid_security::Policy>,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            grpc_tls: None,
            http_tls: None,
            policy: Arc::new(paygrid_security::Policy::insecure(None)),
        }
    }
}

/// The control unit's one HTTP listener (bound by the caller, so it can say where) and
/// the routes served beside `/metrics`.
#[derive(Clone)]
pub struct HttpConfig {
    pub listener: Arc<std::net::TcpListener>,
    pub routes: axum::Router,
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: ControlConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut config = config;
    load_limits(&mut config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let membership = join_cluster(&listener, &mut config, &stop).await?;
    let catalog = Arc::new(Catalog::new(config.limits.clone(), config.store.clone()));
    register_remediation_specs(&catalog, &config.runtime.remediation).await;
    let (handle, actor) = runtime::start(
        config.runtime.clone(),
        config.store.clone(),
        catalog.clone(),
        stop.clone(),
    )
    .await?;
    let workflows =
        WorkflowsService::new(handle.clone(), catalog.clone(), config.runtime.watch_buffer)
            .with_cluster(
                config
                    .cluster
                    .as_ref()
                    .zip(config.runtime.ownership.clone())
                    .map(|(cluster, ownership)| {
                        Arc::new(crate::cluster::forward::Forwarder::new(
                            ownership,
                            cluster.peers.clone(),
                        ))
                    }),
            );
    let tools = crate::service::tools::ToolsService::new(handle.clone(), workflows.clone());
    let grpc_url = listen_url(&listener, &config)?;
    let metrics_server = match &config.http {
        Some(http) => Some(serve_http(
            http,
            &config,
            handle.clone(),
            card_router(handle.clone(), catalog.clone(), grpc_url),
        )?),
        None => None,
    };
    let pruner = match (config.store.clone(), config.retention) {
        (Some(store), Some(retention)) => Some(tokio::spawn(prune_forever(
            store,
            handle.clone(),
            retention,
        ))),
        _ => None,
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WorkflowsServer<WorkflowsService>>()
        .await;
    health_reporter
        .set_serving::<AgentHubServer<AgentHubService>>()
        .await;
    // Reflection v1 and v1alpha: older clients (grpcio-reflection, Postman, evans) only
    // speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(paygrid_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(paygrid_proto::A2A_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
    let a2a = crate::service::a2a::A2aService::new(workflows.clone(), tools);
    let access = crate::service::access::AccessLayer::new(
        config.security.policy.clone(),
        config.runtime.metrics.clone(),
    );
    let incoming = paygrid_security::net::incoming(listener, config.security.grpc_tls.clone());
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .layer(access)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(WorkflowsServer::new(workflows.clone()))
        .add_service(paygrid_proto::a2a::a2a_service_server::A2aServiceServer::new(a2a))
        .add_service(AgentHubServer::new(AgentHubService::new(
            handle,
            catalog,
            config.runtime,
            workflows,
            config.store.clone(),
        )))
        .serve_with_incoming_shutdown(incoming, {
            // The actor cancels `stop` when it cannot go on (a failed commit).
            let failed = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = failed.cancelled() => {}
                }
            }
        })
        .await;
    stop.cancel();
    let stopped = actor
        .await
        .map_err(|e| crate::error::ControlError::Internal(format!("the actor panicked: {e}")));
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    if let Some(membership) = membership {
        // Its leases run out by themselves; the others take the partitions then.
        membership.abort();
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    stopped??;
    Ok(result?)
}

/// `https://HOST:PORT` (or `http://`) of the gRPC listener; loopback for an unspecified
/// address.
fn listen_url(listener: &TcpListener, config: &ControlConfig) -> Result<String, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let scheme = if config.security.grpc_tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}"))
}

/// Joins the cluster, when configured: starts the member's lease task and waits for its
/// first share of partitions (at most one lease time: a dead member's partitions free up
/// by then) before the actor recovers them.
async fn join_cluster(
    listener: &TcpListener,
    config: &mut ControlConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    use crate::cluster::membership::{self, Ownership};
    let Some(cluster) = config.cluster.clone() else {
        return Ok(None);
    };
    let timing = cluster.timing;
    let leases = crate::cluster::postgres::PgLeases::connect(
        &cluster.store_url,
        &cluster.member,
        std::time::Duration::from_millis(timing.ttl_ms),
        cluster.partitions,
    )
    .await
    .map_err(|e| ServeError::Control(e.into()))?;
    let partitions = leases
        .read()
        .await
        .map_err(|e| ServeError::Control(e.into()))?
        .leases
        .len() as u32;
    let ownership = Ownership::new(cluster.member.clone(), partitions);
    let mut first = ownership.watch();
    let url = match cluster.advertise_url.clone() {
        Some(url) => url,
        None => listen_url(listener, config)?,
    };
    let task = tokio::spawn(membership::run(
        leases,
        ownership.clone(),
        timing,
        url,
        config.runtime.metrics.clone(),
        stop.clone(),
    ));
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(timing.ttl_ms),
        first.changed(),
    )
    .await;
    tracing::info!(member = %cluster.member, owned = ownership.owned().len(), partitions, "joined the cluster");
    config.runtime.ownership = Some(ownership);
    Ok(Some(task))
}

/// The shipped remediation workflows go into the catalog, and the specs the rules start
/// are looked up (from the store too), so the actor finds them without waiting.
async fn register_remediation_specs(catalog: &Catalog, rules: &crate::remediation::Rules) {
    for text in crate::remediation::SHIPPED_SPECS {
        match catalog.compile(text).await {
            Ok(spec) => catalog.accepted(&spec),
            Err(error) => tracing::warn!(%error, "shipped remediation spec not registered"),
        }
    }
    for rule in &rules.rules {
        if let Err(error) = catalog.by_ref(&rule.start).await {
            tracing::warn!(rule = %rule.name, %error, "remediation rule's workflow is unknown; submit its spec");
        }
    }
}

/// Serves `GET /metrics` at `addr`; gauges computed on demand are refreshed by the actor
/// before each scrape.
/// `GET /.well-known/agent-card.json`: the A2A agent card, built on each request from
/// the connected agents' skills and the known specs.
fn card_router(
    handle: crate::runtime::Handle,
    catalog: Arc<Catalog>,
    grpc_url: String,
) -> axum::Router {
    axum::Router::new().route(
        "/.well-known/agent-card.json",
        axum::routing::get(move || {
            let (handle, catalog, grpc_url) = (handle.clone(), catalog.clone(), grpc_url.clone());
            async move {
                let agents = handle
                    .ask(|reply| crate::runtime::Input::ListAgents { skill: None, reply })
                    .await
                    .unwrap_or_default();
                let card = crate::service::a2a::agent_card(
                    &grpc_url,
                    &catalog.known_specs(),
                    &crate::tools::tools(&agents),
                );
                axum::Json(card)
            }
        }),
    )
}

fn serve_http(
    http: &HttpConfig,
    config: &ControlConfig,
    handle: crate::runtime::Handle,
    card: axum::Router,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    let listener = http
        .listener
        .try_clone()
        .and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        })
        .map_err(ServeError::Http)?;
    let refresh = move || {
        let handle = handle.clone();
        async move {
            let _ = handle
                .ask(|reply| crate::runtime::Input::Metrics { reply })
                .await;
        }
    };
    let app = paygrid_telemetry::metrics::router(config.runtime.metrics.clone(), refresh)
        .merge(card)
        .merge(http.routes.clone());
    let tls = config.security.http_tls.clone();
    Ok(tokio::spawn(async move {
        paygrid_security::net::serve_http(listener, tls, app, std::future::pending()).await;
        Ok(())
    }))
}

/// Deletes terminal workflows past their retention, once a minute.
async fn prune_forever(
    store: Arc<dyn crate::store::Store>,
    handle: crate::runtime::Handle,
    retention: std::time::Duration,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        let before = crate::runtime::now_ms().saturating_sub(retention.as_millis() as u64);
        match store.prune(before).await {
            Ok(pruned) if pruned.workflows == 0 => {}
            Ok(pruned) => {
                tracing::info!(pruned = pruned.workflows, "pruned workflows past retention");
                // Their idempotency keys go too, so the key map stays bounded by retention.
                let _ = handle
                    .send(crate::runtime::Input::ForgetKeys(pruned.keys))
                    .await;
            }
            Err(error) => tracing::warn!(%error, "pruning failed"),
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Accepted connections with `TCP_NODELAY`: task frames are small and latency-bound, and
/// Nagle's algorithm with delayed ACKs would hold them back by tens of milliseconds.
pub fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    })
}

/// Limits given at start are stored (they replace what was set at run time); without
/// them, the stored ones apply.
async fn load_limits(config: &mut ControlConfig) -> Result<(), ServeError> {
    use crate::scheduler::limits::{LimitRules, SETTING};
    let Some(store) = &config.store else {
        return Ok(());
    };
    let store_error = |e: crate::store::StoreError| ServeError::Control(e.into());
    if config.limits_given {
        let text = &config.runtime.scheduler.limits.source;
        store
            .put_setting(SETTING, text)
            .await
            .map_err(store_error)?;
    } else if let Some(text) = store.setting(SETTING).await.map_err(store_error)? {
        config.runtime.scheduler.limits = LimitRules::parse(&text).map_err(|e| {
            ServeError::Control(crate::error::ControlError::Internal(format!(
                "the stored limits no longer parse ({e}); start with --limits FILE to replace them"
            )))
        })?;
    }
    Ok(())
}
