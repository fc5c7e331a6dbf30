//! Command-line definitions and dispatch. Exit codes: 0 success, 1 a workflow failed (or
//! the command could not complete), 2 usage or validation error.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{operator, parts};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// A part stopped because its memory would be ahead of its disk (a failed commit or
/// journal write); restarting it recovers from the last durable state.
pub const EXIT_FATAL: u8 = 70;

#[derive(Debug, Parser)]
#[command(
    name = "paygrid",
    version,
    about = "Durable payment workflows scheduled across agents over gRPC"
)]
pub struct Cli {
    /// Control unit endpoint for operator commands.
    #[arg(
        long,
        global = true,
        env = "PAYGRID_CONTROL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub control: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Logs on stderr as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// Export spans over OTLP/gRPC to this endpoint (e.g. Jaeger v2 at
    /// http://127.0.0.1:4317). Off when unset.
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp: Option<String>,
    /// TLS: a directory with ca.crt, node.crt/node.key (what servers present) and
    /// client.NAME.crt/.key (what clients present). See docs/security.md.
    #[arg(long, global = true, env = "PAYGRID_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The client certificate to present: client.NAME.crt in --certs-dir (default:
    /// `root` for operator commands, `exec` for execution units, when present).
    #[arg(long, global = true, env = "PAYGRID_CERT_NAME", value_name = "NAME")]
    pub cert_name: Option<String>,
    /// A bearer token (`paygrid token`) sent with every call.
    #[arg(long, global = true, env = "PAYGRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve and connect in plaintext without authentication, for loopback experiments.
    #[arg(long, global = true, env = "PAYGRID_INSECURE")]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Control unit + execution unit with every agent + two simulated gateways, on
    /// loopback; submits the example workflows and shows their progress.
    Dev(crate::dev::DevArgs),
    /// Run a control unit.
    Control(Box<parts::ControlArgs>),
    /// Run an execution unit hosting agents.
    Exec(parts::ExecArgs),
    /// Run a simulated payment gateway (HTTP).
    GatewaySim(parts::GatewaySimArgs),
    /// Submit a workflow spec.
    Submit(operator::SubmitArgs),
    /// Show a workflow and its tasks.
    Status { workflow_id: String },
    /// List workflows.
    List(operator::ListArgs),
    /// Follow a workflow until it ends (its changes as they happen); given several, follow
    /// them all on one stream and print each one's end.
    Watch {
        #[arg(required = true)]
        workflow_ids: Vec<String>,
    },
    /// Cancel a workflow (running tasks are cancelled, finished ones compensated).
    Cancel {
        workflow_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pause a workflow: nothing new of it is dispatched until `resume`; running tasks
    /// finish.
    Pause(crate::operations::OperateArgs),
    /// Resume a paused workflow.
    Resume(crate::operations::OperateArgs),
    /// Run a failed workflow again from its failed task (refused once anything was
    /// compensated).
    Retry {
        #[command(flatten)]
        args: crate::operations::OperateArgs,
        /// The failed task (default: whichever failed).
        #[arg(long)]
        task: Option<String>,
    },
    /// Run a failed or succeeded workflow again from a checkpoint it passed; effects
    /// already taken keep their idempotency keys (docs/operations.md).
    Redrive {
        #[command(flatten)]
        args: crate::operations::OperateArgs,
        /// The checkpoint.
        #[arg(long = "from", value_name = "CHECKPOINT")]
        checkpoint: String,
    },
    /// Pause all dispatch of a skill or to a gateway (maintenance): its tasks wait,
    /// running ones finish; kept until `resume-dispatch`, across restarts.
    PauseDispatch {
        #[command(flatten)]
        on: crate::operations::HoldArgs,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume dispatch of a skill or to a gateway.
    ResumeDispatch {
        #[command(flatten)]
        on: crate::operations::HoldArgs,
    },
    /// One operation over every workflow a filter matches; a dry run (the count) unless
    /// --yes.
    Bulk(crate::operations::BulkArgs),
    /// Decide an approval task that waits for a person: approve continues the workflow,
    /// reject fails the task (the workflow compensates).
    Approve(crate::operator::ApproveArgs),
    /// List connected agents.
    Agents {
        /// Only agents offering this skill.
        #[arg(long)]
        skill: Option<String>,
    },
    /// The live health of gateways and agents, as telemetry agents report it.
    Health,
    /// Every skill a connected agent offers, as a tool (MCP-style).
    Tools,
    /// Serve MCP over stdin/stdout (for desktop clients that spawn it), talking to the
    /// control unit at --control.
    Mcp,
    /// Run one tool once, outside any workflow (a durable one-task call).
    Call(crate::tools::CallArgs),
    /// Validate a spec file (and optionally an input) without a control unit.
    Validate(operator::ValidateArgs),
    /// Reconciliation runs (ledger against the gateways' settlement reports): the runs,
    /// one run's mismatches, or a new run (`--start GATEWAY`).
    Reconcile(crate::reconcile::ReconcileArgs),
    /// The concurrency and rate limits in force and what they count now; `set FILE`
    /// replaces them (kept across restarts), `clear` removes them.
    Limits(crate::limits::LimitsArgs),
    /// Audit a ledger kept by an execution unit: balances, transfers, debits = credits.
    Ledger {
        /// The execution unit's --data-dir (holding ledger.sqlite3).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Measure a store's append throughput: events per second with group commit and with
    /// one commit (fsync) per event.
    StoreBench {
        /// A data directory (embedded SQLite) or postgres://...
        #[arg(long)]
        store: String,
        /// Events to append per run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Events per commit for the group-commit run.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Events for the one-commit-per-event run (fsyncs are slow).
        #[arg(long, default_value_t = 500)]
        single_events: usize,
    },
    /// Benchmark the full path against the raw gRPC ceiling (separate processes).
    Bench(paygrid_bench::load::BenchArgs),
    /// The echo server of the benchmark's gRPC ceiling.
    #[command(hide = true)]
    BenchEcho {
        #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
        listen: SocketAddr,
    },
    /// Development certificates: a CA, the node certificate, client certificates.
    Certs(crate::access::CertsArgs),
    /// Mint a bearer token signed with the control unit's --token-key.
    Token(crate::access::TokenArgs),
    /// A cluster of control units on one PostgreSQL: members, partitions, epochs, leases.
    Cluster(crate::cluster::ClusterArgs),
    /// The audit log: who submitted, cancelled, approved or changed limits, when, from
    /// where, and what came of it (newest first; needs the admin role).
    Audit(crate::access::AuditArgs),
    /// Print a spec's task graph as Graphviz DOT or Mermaid.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: operator::GraphFormat,
    },
}

impl Command {
    pub fn service_name(&self) -> &'static str {
        match self {
            Self::Dev(_) => "paygrid-dev",
            Self::Control(_) => "paygrid-control",
            Self::Exec(_) => "paygrid-exec",
            Self::GatewaySim(_) => "paygrid-gateway-sim",
            _ => "paygrid-cli",
        }
    }

    /// The async runtime's worker threads, when the command sets them.
    pub fn worker_threads(&self) -> Option<usize> {
        match self {
            Self::Control(args) => args.worker_threads.map(|threads| threads.max(1)),
            _ => None,
        }
    }

    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Self::Dev(_) => "warn",
            Self::Control(_) | Self::Exec(_) | Self::GatewaySim(_) => "info",
            _ => "warn",
        }
    }
}

pub async fn run(cli: Cli) -> u8 {
    let json = cli.json;
    let control = cli.control;
    let certs_dir = match &cli.command {
        Command::Dev(args) => crate::dev::prepare_dev(args, cli.certs_dir, cli.insecure),
        _ => Ok(cli.certs_dir),
    };
    let result = match certs_dir
        .and_then(|dir| crate::transport::init(dir, cli.cert_name, cli.token, cli.insecure))
    {
        Err(error) => Err(error),
        Ok(()) => run_command(cli.command, &control, json).await,
    };
    finish(result)
}

async fn run_command(command: Command, control: &str, json: bool) -> anyhow::Result<u8> {
    let control = control.to_owned();
    match command {
        Command::Dev(args) => crate::dev::dev(args).await,
        Command::Control(args) => parts::control(*args).await,
        Command::Exec(args) => parts::exec(args, &control).await,
        Command::GatewaySim(args) => parts::gateway_sim(args).await,
        Command::Submit(args) => operator::submit(&control, args, json).await,
        Command::Status { workflow_id } => operator::status(&control, &workflow_id, json).await,
        Command::List(args) => operator::list(&control, args, json).await,
        Command::Watch { workflow_ids } => match &workflow_ids[..] {
            [one] => operator::watch_command(&control, one, json).await,
            many => crate::follow::watch_many(&control, many, json).await,
        },
        Command::Cancel {
            workflow_id,
            reason,
        } => operator::cancel(&control, &workflow_id, &reason, json).await,
        Command::Approve(args) => operator::approve(&control, args, json).await,
        Command::Pause(args) => {
            crate::operations::operate(&control, "pause", args, None, json).await
        }
        Command::Resume(args) => {
            crate::operations::operate(&control, "resume", args, None, json).await
        }
        Command::Retry { args, task } => {
            crate::operations::operate(&control, "retry", args, task, json).await
        }
        Command::Redrive { args, checkpoint } => {
            crate::operations::operate(&control, "redrive", args, Some(checkpoint), json).await
        }
        Command::Bulk(args) => crate::operations::bulk(&control, args, json).await,
        Command::PauseDispatch { on, reason } => {
            crate::operations::hold(&control, on, reason, true, json).await
        }
        Command::ResumeDispatch { on } => {
            crate::operations::hold(&control, on, String::new(), false, json).await
        }
        Command::Agents { skill } => operator::agents(&control, skill, json).await,
        Command::Validate(args) => operator::validate(args, json),
        Command::Health => operator::health(&control, json).await,
        Command::Tools => crate::tools::list(&control, json).await,
        Command::Mcp => match crate::transport::get().operator() {
            Ok(security) => paygrid_mcp::serve_stdio(&control, security)
                .await
                .map(|()| EXIT_OK),
            Err(error) => Err(error),
        },
        Command::Call(args) => crate::tools::call(&control, args, json).await,
        Command::Graph { file, format } => operator::graph(&file, format),
        Command::Ledger { data_dir } => operator::ledger(&data_dir, json),
        Command::Reconcile(args) => crate::reconcile::reconcile(&control, args, json).await,
        Command::Limits(args) => crate::limits::limits(&control, args, json).await,
        Command::Bench(args) => paygrid_bench::load::run(args).await.map(|()| EXIT_OK),
        Command::BenchEcho { listen } => {
            paygrid_bench::ceiling::echo_server(listen, crate::parts::shutdown_signal())
                .await
                .map(|()| EXIT_OK)
        }
        Command::StoreBench {
            store,
            events,
            batch,
            single_events,
        } => paygrid_bench::store::run(&store, events, batch, single_events, json)
            .await
            .map(|()| EXIT_OK),
        Command::Certs(args) => crate::access::certs(args),
        Command::Token(args) => crate::access::token(args),
        Command::Audit(args) => crate::access::audit(&control, args, json).await,
        Command::Cluster(args) => crate::cluster::cluster(args, json).await,
    }
}

/// The exit code of a command's result, its error printed.
fn finish(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<operator::UsageError>().is_some() {
                return EXIT_USAGE;
            }
            if error.downcast_ref::<crate::parts::FatalError>().is_some()
                || matches!(
                    error.downcast_ref::<paygrid_control_unit::server::ServeError>(),
                    Some(paygrid_control_unit::server::ServeError::Control(_))
                )
            {
                return EXIT_FATAL;
            }
            if let Some(status) = error.downcast_ref::<tonic::Status>()
                && matches!(
                    status.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::AlreadyExists
                        | tonic::Code::NotFound
                )
            {
                return EXIT_USAGE;
            }
            EXIT_FAILED
        }
    }
}

/// Parses `127.0.0.1:50051`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("`{text}` is not an address like 127.0.0.1:50051: {e}"))
}
