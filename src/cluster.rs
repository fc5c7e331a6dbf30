//! `paygrid cluster`: the members of a cluster of control units on one PostgreSQL, their
//! partitions, epochs and lease expiry (docs/cluster.md).

use std::collections::BTreeMap;

use clap::Args;

use crate::cli::EXIT_OK;
use crate::operator::UsageError;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster's PostgreSQL: postgres://user@host:port/db.
    #[arg(long, env = "PAYGRID_STORE")]
    pub store: String,
    /// Every partition, one per line.
    #[arg(long)]
    pub partitions: bool,
}

pub async fn cluster(args: ClusterArgs, json: bool) -> anyhow::Result<u8> {
    if !args.store.starts_with("postgres") {
        anyhow::bail!(UsageError(
            "--store must be postgres://...: clusters of control units share a PostgreSQL".into()
        ));
    }
    let (members, table) = paygrid_control_unit::cluster::postgres::snapshot(&args.store)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (has a control unit run on this database?)"))?;
    let mut per_owner: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unowned = 0;
    for lease in &table.leases {
        match &lease.owner {
            Some(owner) if lease.expires_at_ms > table.now_ms => {
                *per_owner.entry(owner.as_str()).or_default() += 1;
            }
            _ => unowned += 1,
        }
    }
    if json {
        let leases: Vec<serde_json::Value> = table
            .leases
            .iter()
            .map(|l| {
                serde_json::json!({"partition": l.partition, "owner": l.owner, "epoch": l.epoch,
                    "expires_in_ms": l.expires_at_ms as i64 - table.now_ms as i64})
            })
            .collect();
        let members: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                serde_json::json!({"name": m.name, "grpc_url": m.grpc_url, "http_url": m.http_url,
                    "heartbeat_age_ms": m.heartbeat_age_ms,
                    "partitions": per_owner.get(m.name.as_str()).copied().unwrap_or(0)})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"members": members, "partitions": leases, "unowned": unowned})
        );
        return Ok(EXIT_OK);
    }
    println!("members ({}):", members.len());
    for m in &members {
        println!(
            "  {:<16} {:>3} partitions  {}  heartbeat {} ms ago",
            m.name,
            per_owner.get(m.name.as_str()).copied().unwrap_or(0),
            m.grpc_url,
            m.heartbeat_age_ms
        );
    }
    println!(
        "partitions: {} ({} unowned or expired)",
        table.leases.len(),
        unowned
    );
    if args.partitions {
        for l in &table.leases {
            let left = l.expires_at_ms as i64 - table.now_ms as i64;
            println!(
                "  {:>4}  {:<16} epoch {:<6} {}",
                l.partition,
                l.owner.as_deref().unwrap_or("-"),
                l.epoch,
                if left > 0 {
                    format!("expires in {:.1} s", left as f64 / 1000.0)
                } else {
                    "expired".to_owned()
                }
            );
        }
    }
    Ok(EXIT_OK)
}
