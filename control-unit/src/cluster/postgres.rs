//! The protocol's tables in PostgreSQL (migration 5 of the store): `cluster_partitions`
//! (owner, epoch and expiry of each partition's lease) and `cluster_members` (heartbeats).
//! Every time is PostgreSQL's (`now()`): members' clocks decide nothing here.

use std::time::Duration;

use tokio_postgres::{Client, GenericClient};

use super::lease::Lease;
use crate::store::StoreError;
use crate::store::postgres::pg;

/// One member's connection to the lease tables.
pub struct PgLeases {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    pub name: String,
    pub ttl: Duration,
}

impl Drop for PgLeases {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// A member as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub grpc_url: String,
    pub http_url: String,
    pub heartbeat_age_ms: u64,
}

/// The leases, read at the table's time `now_ms`.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    pub leases: Vec<Lease>,
    pub now_ms: u64,
}

impl PgLeases {
    /// Connects as member `name` (migrating the store's schema when needed) and makes
    /// sure the cluster has its partitions: `partitions` if it has none yet.
    pub async fn connect(
        url: &str,
        name: &str,
        ttl: Duration,
        partitions: u32,
    ) -> Result<Self, StoreError> {
        let (mut client, connection) = crate::store::postgres::client(url).await?;
        crate::store::postgres::migrate(&mut client).await?;
        // The first member sizes the cluster; the count never changes after.
        client
            .execute(
                "INSERT INTO cluster_partitions (partition)
                 SELECT generate_series(0, $1 - 1)
                 WHERE NOT EXISTS (SELECT 1 FROM cluster_partitions)
                 ON CONFLICT DO NOTHING",
                &[&(partitions.max(1) as i32)],
            )
            .await
            .map_err(pg)?;
        // A lease statement never waits longer than a third of the lease for a row lock
        // (a stalled member's commit holding its fence): it fails, and is tried again at
        // the next round.
        client
            .batch_execute(&format!(
                "SET lock_timeout = {}",
                (ttl.as_millis() / 3).max(100)
            ))
            .await
            .map_err(pg)?;
        Ok(Self {
            client,
            connection,
            name: name.to_owned(),
            ttl,
        })
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    /// Every partition's lease, and the table's time.
    pub async fn read(&self) -> Result<LeaseTable, StoreError> {
        read(&self.client).await
    }

    /// Takes `partition` if its epoch is still `seen` and nobody holds it, the lease
    /// expired, or it was this member's before a restart (the new epoch fences the old
    /// incarnation); the new epoch when it did.
    pub async fn take(&self, partition: u32, seen: u64) -> Result<Option<u64>, StoreError> {
        let row = self
            .client
            .query_opt(
                "UPDATE cluster_partitions
                 SET owner = $1, epoch = epoch + 1, expires_at = now() + $4 * interval '1 millisecond'
                 WHERE partition = $2 AND epoch = $3
                   AND (owner IS NULL OR owner = $1 OR expires_at <= now())
                 RETURNING epoch",
                &[&self.name, &(partition as i32), &(seen as i64), &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    /// Extends the leases still held under these epochs (and not expired); the
    /// partitions renewed.
    pub async fn renew(&self, held: &[(u32, u64)]) -> Result<Vec<u32>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let partitions: Vec<i32> = held.iter().map(|(p, _)| *p as i32).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e as i64).collect();
        let rows = self
            .client
            .query(
                "UPDATE cluster_partitions c
                 SET expires_at = now() + $4 * interval '1 millisecond'
                 FROM UNNEST($2::int4[], $3::int8[]) AS r(partition, epoch)
                 WHERE c.partition = r.partition AND c.epoch = r.epoch AND c.owner = $1
                   AND c.expires_at > now()
                 RETURNING c.partition",
                &[&self.name, &partitions, &epochs, &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
    }

    /// Gives a partition back: its lease expires now, for another member to take.
    pub async fn give_back(&self, partition: u32, epoch: u64) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE cluster_partitions SET expires_at = 'epoch'
                 WHERE partition = $2 AND owner = $1 AND epoch = $3",
                &[&self.name, &(partition as i32), &(epoch as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Says this member is alive, and where it serves.
    pub async fn heartbeat(&self, grpc_url: &str, http_url: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO cluster_members (name, grpc_url, http_url) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET grpc_url = excluded.grpc_url,
                     http_url = excluded.http_url, heartbeat_at = now()",
                &[&self.name, &grpc_url, &http_url],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Members whose heartbeat is younger than the lease time.
    pub async fn live_members(&self) -> Result<Vec<MemberRow>, StoreError> {
        members(&self.client, Some(self.ttl)).await
    }
}

pub async fn read(client: &impl GenericClient) -> Result<LeaseTable, StoreError> {
    let rows = client
        .query(
            "SELECT partition, owner, epoch,
                    (extract(epoch from expires_at) * 1000)::int8,
                    (extract(epoch from now()) * 1000)::int8
             FROM cluster_partitions ORDER BY partition",
            &[],
        )
        .await
        .map_err(pg)?;
    let now_ms = rows.first().map_or(0, |r| r.get::<_, i64>(4).max(0) as u64);
    Ok(LeaseTable {
        leases: rows
            .iter()
            .map(|r| Lease {
                partition: r.get::<_, i32>(0) as u32,
                owner: r.get(1),
                epoch: r.get::<_, i64>(2) as u64,
                expires_at_ms: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect(),
        now_ms,
    })
}

/// Members, those heard from within `within` when given.
pub async fn members(
    client: &impl GenericClient,
    within: Option<Duration>,
) -> Result<Vec<MemberRow>, StoreError> {
    let within_ms = within.map(|d| d.as_millis() as f64);
    let rows = client
        .query(
            "SELECT name, grpc_url, http_url,
                    (extract(epoch from now() - heartbeat_at) * 1000)::int8
             FROM cluster_members
             WHERE $1::float8 IS NULL OR now() - heartbeat_at < $1 * interval '1 millisecond'
             ORDER BY name",
            &[&within_ms],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| MemberRow {
            name: r.get(0),
            grpc_url: r.get(1),
            http_url: r.get(2),
            heartbeat_age_ms: r.get::<_, i64>(3).max(0) as u64,
        })
        .collect())
}

/// The fence of a group commit, inside its transaction: the partitions of `written`
/// whose epoch `member` no longer holds. Their rows are locked (`FOR SHARE`) until the
/// transaction ends, so a takeover waits for the commit and a commit after a takeover
/// sees the new epoch. An empty answer: the commit may go on.
pub async fn fence(
    transaction: &tokio_postgres::Transaction<'_>,
    member: &str,
    written: &[(u32, u64)],
) -> Result<Vec<u32>, StoreError> {
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let partitions: Vec<i32> = written.iter().map(|(p, _)| *p as i32).collect();
    let epochs: Vec<i64> = written.iter().map(|(_, e)| *e as i64).collect();
    let rows = transaction
        .query(
            "SELECT c.partition FROM cluster_partitions c
             JOIN UNNEST($2::int4[], $3::int8[]) AS r(partition, epoch)
               ON c.partition = r.partition AND c.epoch = r.epoch
             WHERE c.owner = $1
             FOR SHARE OF c",
            &[&member, &partitions, &epochs],
        )
        .await
        .map_err(pg)?;
    let held: Vec<u32> = rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
    Ok(written
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !held.contains(p))
        .collect())
}

/// Members (all, with their heartbeat age) and leases, as `paygrid cluster` shows them.
pub async fn snapshot(url: &str) -> Result<(Vec<MemberRow>, LeaseTable), StoreError> {
    let (client, connection) = crate::store::postgres::client(url).await?;
    let result = async { Ok((members(&client, None).await?, read(&client).await?)) }.await;
    connection.abort();
    result
}
