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

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only actions of this caller (certificate name or token subject).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action: submit, cancel, approve, set_limits.
    #[arg(long)]
    pub action: Option<String>,
    /// Only actions on this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Records older than this sequence (the next page).
    #[arg(long)]
    pub before: Option<u64>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `2026-12-02 06:31:07.123` (UTC) of unix milliseconds.
fn utc(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    let day = paygrid_agents::dates::Day(i32::try_from(ms / 86_400_000).unwrap_or(i32::MAX));
    let of_day = ms % 86_400_000;
    format!(
        "{day} {:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

pub async fn audit(control: &str, args: AuditArgs, json: bool) -> anyhow::Result<u8> {
    use paygrid_proto::v1 as pb;
    let mut client =
        pb::workflows_client::WorkflowsClient::new(crate::operator::connect(control).await?);
    let entries = client
        .list_audit(pb::ListAuditRequest {
            actor: args.actor.unwrap_or_default(),
            action: args.action.unwrap_or_default(),
            target: args.workflow.unwrap_or_default(),
            before_sequence: args.before.unwrap_or(0),
            limit: args.limit,
        })
        .await?
        .into_inner()
        .entries;
    if json {
        for e in &entries {
            println!(
                "{}",
                serde_json::json!({
                    "sequence": e.sequence, "at": utc(e.at_unix_ms), "actor": e.actor,
                    "proof": e.proof, "role": e.role, "origin": e.origin, "action": e.action,
                    "target": e.target, "detail": e.detail, "outcome": e.outcome,
                })
            );
        }
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        println!("no audit records");
        return Ok(EXIT_OK);
    }
    for e in &entries {
        let role = if e.role.is_empty() {
            String::new()
        } else {
            format!(", {}", e.role)
        };
        println!(
            "#{:<6} {}  {} ({}{role}) from {}  {} {}  -> {}\n        {}",
            e.sequence,
            utc(e.at_unix_ms),
            e.actor,
            e.proof,
            if e.origin.is_empty() { "-" } else { &e.origin },
            e.action,
            if e.target.is_empty() { "-" } else { &e.target },
            e.outcome,
            e.detail
        );
    }
    if let Some(last) = entries.last()
        && entries.len() == args.limit as usize
    {
        println!("more: paygrid audit --before {}", last.sequence);
    }
    Ok(EXIT_OK)
}
