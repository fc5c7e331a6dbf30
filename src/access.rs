//! `paygrid certs` and `paygrid token`: development certificates and bearer tokens.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use paygrid_security::Role;
use paygrid_security::token::{TokenKey, now_secs};

use crate::cli::EXIT_OK;
use crate::operator::UsageError;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A new CA with the node certificate (localhost, 127.0.0.1, ::1) and client
    /// certificates, for development and tests. Use your own CA in production.
    Create {
        #[arg(long)]
        dir: PathBuf,
        /// Client certificates to create (their common name is the identity).
        #[arg(long = "client", default_values_t = ["root".to_owned()])]
        clients: Vec<String>,
    },
    /// One more client certificate signed by the CA in DIR (its ca.key).
    AddClient {
        #[arg(long)]
        dir: PathBuf,
        name: String,
    },
}

pub fn certs(args: CertsArgs) -> anyhow::Result<u8> {
    match args.command {
        CertsCommand::Create { dir, clients } => {
            if dir.join("ca.crt").exists() {
                anyhow::bail!(UsageError(format!(
                    "{} already holds a CA (ca.crt); use add-client, or another directory",
                    dir.display()
                )));
            }
            let names: Vec<&str> = clients.iter().map(String::as_str).collect();
            paygrid_security::certs::create(&dir, &names)?;
            println!(
                "created in {}: ca.crt ca.key node.crt node.key{}",
                dir.display(),
                names
                    .iter()
                    .map(|n| format!(" client.{n}.crt client.{n}.key"))
                    .collect::<String>()
            );
        }
        CertsCommand::AddClient { dir, name } => {
            paygrid_security::certs::add_client(&dir, &name)?;
            println!(
                "created in {}: client.{name}.crt client.{name}.key",
                dir.display()
            );
        }
    }
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The key file the control unit reads with --token-key.
    #[arg(long)]
    pub key: PathBuf,
    /// Write a new random key to --key first (refused if the file exists).
    #[arg(long)]
    pub generate_key: bool,
    /// Who the token names (the audit log records it).
    #[arg(long, default_value = "operator")]
    pub subject: String,
    /// viewer, operator or admin.
    #[arg(long, default_value = "operator")]
    pub role: String,
    /// How long it is valid, e.g. 15m, 8h, 30d.
    #[arg(long, default_value = "8h")]
    pub ttl: String,
}

pub fn token(args: TokenArgs) -> anyhow::Result<u8> {
    let role: Role = args.role.parse().map_err(UsageError)?;
    let ttl = paygrid_control_unit::spec::duration::parse_duration(&args.ttl)
        .map_err(|e| UsageError(format!("--ttl: {e}")))?;
    let key = if args.generate_key {
        if args.key.exists() {
            anyhow::bail!(UsageError(format!(
                "{} exists; --generate-key never overwrites a key",
                args.key.display()
            )));
        }
        TokenKey::generate(&args.key)?
    } else {
        TokenKey::from_file(&args.key).map_err(|e| UsageError(e.to_string()))?
    };
    println!(
        "{}",
        key.mint(&args.subject, role, now_secs(), ttl.as_secs())
    );
    Ok(EXIT_OK)
}
