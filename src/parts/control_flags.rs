//! The control unit's flags (`paygrid control`): where it listens and serves HTTP, its
//! cluster membership, who may do what, its breakers and its store; each group turned
//! into the control unit's configuration here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use paygrid_control_unit::server::ControlConfig;

use crate::cli::parse_addr;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Lease of a dispatched task without heartbeats, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// Workflows not yet ended this control unit holds at once; a submission beyond it
    /// is refused with RESOURCE_EXHAUSTED and a retry-after. Each takes about 1 KiB of
    /// memory (docs/benchmarks.md).
    #[arg(long, default_value_t = 200_000)]
    pub workflows_active_max: usize,
    /// Serve HTTP at ADDR: the web console at /, Prometheus metrics at /metrics, MCP
    /// (streamable HTTP) at /mcp.
    #[arg(long = "http", alias = "metrics-addr", value_parser = parse_addr)]
    pub http: Option<SocketAddr>,
    /// Jaeger's UI (e.g. http://localhost:16686): the console links each workflow's trace.
    #[arg(long, env = "PAYGRID_JAEGER_URL")]
    pub jaeger_url: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub breaker: BreakerArgs,
    /// Remediation rules (YAML; docs/remediation.md). Default: the shipped rules.
    #[arg(long)]
    pub remediation_rules: Option<std::path::PathBuf>,
    /// Concurrency and rate limits per skill, gateway and key (YAML; docs/limits.md).
    #[arg(long)]
    pub limits: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Threads of the async runtime (gRPC, the scheduler). Default: one per core (or
    /// `TOKIO_WORKER_THREADS`). Fewer can help on a host shared with other busy
    /// processes; measure (docs/benchmarks.md, "Issue 17, seventh step").
    #[arg(long, env = "PAYGRID_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

/// Several control units on one PostgreSQL (docs/cluster.md).
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Join the cluster on --store postgres://... as this member (a name unique in it):
    /// the control unit owns a share of the workflows' partitions.
    #[arg(long, value_name = "NAME")]
    pub cluster_member: Option<String>,
    /// Partitions of a new cluster (fixed once the first member started).
    #[arg(long, default_value_t = paygrid_control_unit::cluster::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Partition lease time, in milliseconds: a dead member's partitions are taken over
    /// after it.
    #[arg(long, default_value_t = 10_000)]
    pub partition_lease_ms: u64,
    /// The gRPC URL other members and execution units reach this member at
    /// (`https://HOST:PORT`); default: the listen address.
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
}

impl ClusterArgs {
    pub(super) fn config(
        &self,
        store: Option<&str>,
    ) -> anyhow::Result<Option<paygrid_control_unit::server::ClusterConfig>> {
        let Some(member) = &self.cluster_member else {
            return Ok(None);
        };
        let Some(url) = store.filter(|s| s.starts_with("postgres")) else {
            anyhow::bail!(crate::operator::UsageError(
                "--cluster-member needs --store postgres://...: members share one PostgreSQL"
                    .into()
            ));
        };
        if self.partition_lease_ms < 300 {
            anyhow::bail!(crate::operator::UsageError(
                "--partition-lease-ms must be at least 300".into()
            ));
        }
        let ttl = self.partition_lease_ms;
        Ok(Some(paygrid_control_unit::server::ClusterConfig {
            member: member.clone(),
            store_url: url.to_owned(),
            partitions: self.partitions.max(1),
            timing: paygrid_control_unit::cluster::lease::LeaseTiming {
                ttl_ms: ttl,
                margin_ms: ttl / 10,
                renew_every_ms: ttl / 3,
            },
            peers: crate::transport::get().member()?,
            advertise_url: self.advertise_url.clone(),
        }))
    }
}

/// Who may do what (docs/security.md).
#[derive(Debug, Args, Default)]
pub struct AccessArgs {
    /// The access policy (YAML): roles of identities and the skills each agent identity
    /// may offer. Without it, every certificate the CA signed may do everything.
    #[arg(long, value_name = "FILE")]
    pub access: Option<std::path::PathBuf>,
    /// The key bearer tokens are signed with (`paygrid token --key FILE`); without it,
    /// tokens are refused.
    #[arg(long, value_name = "FILE")]
    pub token_key: Option<std::path::PathBuf>,
}

impl AccessArgs {
    /// The control unit's security: TLS on both listeners (from the global flags) and
    /// the policy.
    pub fn security(&self) -> anyhow::Result<paygrid_control_unit::server::Security> {
        use paygrid_security::client::{ALPN_H2, ALPN_HTTP1};
        use paygrid_security::{ClientAuth, Policy};
        let transport = crate::transport::get();
        let tokens = match &self.token_key {
            Some(path) => Some(
                paygrid_security::token::TokenKey::from_file(path)
                    .map_err(|e| crate::operator::UsageError(e.to_string()))?,
            ),
            None => None,
        };
        let grpc_tls = transport.server("the control unit", ClientAuth::Optional, ALPN_H2)?;
        let http_tls = transport.server(
            "the control unit's HTTP listener",
            ClientAuth::Optional,
            ALPN_HTTP1,
        )?;
        let policy = match (&self.access, grpc_tls.is_some()) {
            (_, false) => Policy::insecure(tokens),
            (Some(path), true) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    crate::operator::UsageError(format!("cannot read {}: {e}", path.display()))
                })?;
                Policy::parse(&text, tokens)
                    .map_err(|e| crate::operator::UsageError(format!("{}: {e}", path.display())))?
            }
            (None, true) => {
                tracing::warn!(
                    "no --access policy: every certificate signed by the CA may do everything and offer any skill"
                );
                Policy::trust_ca(tokens)
            }
        };
        Ok(paygrid_control_unit::server::Security {
            grpc_tls,
            http_tls,
            policy: Arc::new(policy),
        })
    }
}

/// Circuit breakers per gateway (docs/breakers.md).
#[derive(Debug, Args)]
pub struct BreakerArgs {
    /// Share of failed requests in the window that opens a gateway's breaker.
    #[arg(long, default_value_t = 0.5)]
    pub breaker_error_rate: f64,
    /// Requests in the window before the breaker may open.
    #[arg(long, default_value_t = 10)]
    pub breaker_min_requests: u32,
    /// The sliding window, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub breaker_window_ms: u64,
    /// A request this slow (milliseconds) counts as slow; 80 % slow opens the breaker.
    #[arg(long, default_value_t = 5_000)]
    pub breaker_slow_ms: u64,
    /// How long an open breaker stays open before trial tasks, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub breaker_open_ms: u64,
    /// Trial tasks while half-open; as many successes close it.
    #[arg(long, default_value_t = 3)]
    pub breaker_trials: u32,
}

impl BreakerArgs {
    pub fn config(
        &self,
    ) -> anyhow::Result<paygrid_control_unit::scheduler::breaker::BreakerConfig> {
        if !(self.breaker_error_rate > 0.0 && self.breaker_error_rate <= 1.0) {
            anyhow::bail!(crate::operator::UsageError(format!(
                "--breaker-error-rate {} must be above 0 and at most 1",
                self.breaker_error_rate
            )));
        }
        if self.breaker_trials == 0 || self.breaker_window_ms < 10 {
            anyhow::bail!(crate::operator::UsageError(
                "--breaker-trials must be at least 1 and --breaker-window-ms at least 10".into()
            ));
        }
        Ok(paygrid_control_unit::scheduler::breaker::BreakerConfig {
            window: Duration::from_millis(self.breaker_window_ms),
            min_requests: self.breaker_min_requests,
            error_rate: self.breaker_error_rate,
            slow_call: Duration::from_millis(self.breaker_slow_ms),
            slow_rate: 0.8,
            open_for: Duration::from_millis(self.breaker_open_ms),
            trials: self.breaker_trials,
        })
    }
}

/// Where the control unit keeps its state.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Directory of the embedded store (`control.sqlite3` inside).
    #[arg(long, env = "PAYGRID_DATA_DIR", default_value = ".paygrid/control")]
    pub data_dir: std::path::PathBuf,
    /// Store location instead of --data-dir: `postgres://user@host:port/db` for a shared
    /// PostgreSQL, or `memory` to keep nothing across restarts.
    #[arg(long)]
    pub store: Option<String>,
    /// Terminal workflows older than this are pruned (e.g. 7d, 12h).
    #[arg(long, default_value = "7d")]
    pub retention: String,
    /// Inputs taken per group commit at most.
    #[arg(long, default_value_t = 1024)]
    pub commit_batch_max: usize,
    /// Extra wait for more inputs before a group commit, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub flush_interval_ms: u64,
    /// Terminal workflows kept in memory for Get and List (older ones are read from the store).
    #[arg(long, default_value_t = 100_000)]
    pub retained_max: usize,
    /// Nice value of the embedded store's commit-log thread (-20..19; 0 leaves it be), which
    /// orders reads after commits (the actor commits on its own thread), and of its
    /// syncers, which sync the actor's batches while it goes on. Below 0 it needs
    /// CAP_SYS_NICE or LimitNICE=; without, it keeps the process's and says so
    /// (docs/durability.md, "The actor's thread, and the commit log's priority").
    #[arg(
        long,
        env = "PAYGRID_COMMIT_LOG_NICE",
        default_value_t = paygrid_control_unit::priority::COMMIT_LOG_NICE,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-20..=19)
    )]
    pub commit_log_nice: i32,
    /// Directory of the embedded store's commit log, e.g. on a device of its own (default:
    /// `control.sqlite3-commits` beside the database). The database records which log is
    /// its own and refuses to start with another, or with none while commits may be
    /// waiting in it (docs/durability.md, "Where the commit log lives").
    #[arg(long, env = "PAYGRID_COMMIT_LOG_DIR")]
    pub commit_log_dir: Option<std::path::PathBuf>,
}

impl StorageArgs {
    /// The control unit configuration these flags describe, with the store opened.
    pub async fn config(&self) -> anyhow::Result<(ControlConfig, String)> {
        let mut config = ControlConfig::default();
        config.runtime.batch_max = self.commit_batch_max.max(1);
        config.runtime.flush_interval = Duration::from_millis(self.flush_interval_ms);
        config.runtime.scheduler.workflows_retained_max = self.retained_max.max(1);
        config.retention = Some(
            paygrid_control_unit::spec::duration::parse_duration(&self.retention)
                .map_err(|e| crate::operator::UsageError(format!("--retention: {e}")))?,
        );
        let location = match &self.store {
            Some(store) => store.clone(),
            None => self.data_dir.display().to_string(),
        };
        if location == "memory"
            && let Some(dir) = &self.commit_log_dir
        {
            return Err(crate::operator::UsageError(format!(
                "--commit-log-dir {} needs a store that keeps something: the embedded one",
                dir.display()
            ))
            .into());
        }
        if location != "memory" {
            let options = paygrid_control_unit::store::StoreOptions {
                commit_log_nice: self.commit_log_nice,
                commit_log_dir: self.commit_log_dir.clone(),
            };
            let store = paygrid_control_unit::store::open_with(&location, &options)
                .await
                .with_context(|| format!("open store {location}"))?;
            config.store = Some(store);
        }
        let shown = if location.starts_with("postgres") {
            redact_url(&location)
        } else {
            location
        };
        Ok((config, shown))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
            let colon = scheme + 3 + url[scheme + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_owned(),
    }
}
