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

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let service = cli.command.service_name();
    let format = if cli.log_json {
        paygrid_telemetry::LogFormat::Json
    } else {
        paygrid_telemetry::LogFormat::Human
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
