//! `paygrid`: the one binary. Parses the command line, starts telemetry, runs the part.

mod access;
mod chaos;
mod cli;
mod cluster;
mod dev;
mod devdb;
mod follow;
mod limits;
mod operations;
mod operator;
mod output;
mod parts;
mod reconcile;
mod tools;
mod transport;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, with its purging on background threads: glibc's malloc was ~15 % of the
/// control unit's CPU at C=100, and jemalloc cut the CPU per workflow by about a sixth
/// without the tails mimalloc brought (docs/benchmarks.md, "Issue 17, fourth step").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let service = cli.command.service_name();
    let format = if cli.log_json {
        paygrid_telemetry::LogFormat::Json
    } else {
        paygrid_telemetry::LogFormat::Human
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.command.worker_threads() {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    // The OTLP exporter's channel lives on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        paygrid_telemetry::init(
            service,
            format,
            cli.command.default_log_filter(),
            cli.otlp.as_deref(),
        )
    };
    let code = runtime.block_on(cli::run(cli));
    telemetry.shutdown();
    ExitCode::from(code)
}
