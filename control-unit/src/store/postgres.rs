//! The shared store: PostgreSQL, for fleets where several control units share state.
//! One connection writes (the actor's group commits, one transaction each, rows sent as
//! arrays so a batch costs one round trip per table); another reads.

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{Batch, ListQuery, Pruned, Recovered, Store, StoreError, decode_snapshot, status_name};
use crate::model::WorkflowId;
use crate::scheduler::restore::Snapshot;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE specs (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
     CREATE TABLE workflows (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         spec_hash TEXT NOT NULL,
         status TEXT NOT NULL,
         terminal BOOLEAN NOT NULL,
         idempotency_key TEXT UNIQUE,
         fingerprint BIGINT NOT NULL,
         created_at BIGINT NOT NULL,
         updated_at BIGINT NOT NULL,
         snapshot BYTEA,
         snapshot_sequence BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX workflows_by_terminal ON workflows (terminal, updated_at);
     CREATE TABLE events (
         workflow_id TEXT NOT NULL,
         sequence BIGINT NOT NULL,
         at BIGINT NOT NULL,
         change BYTEA NOT NULL,
         PRIMARY KEY (workflow_id, sequence)
     );",
    // 2: the catalog's names: `name@version` names one spec content for good.
    "CREATE TABLE spec_refs (
         name TEXT NOT NULL,
         version BIGINT NOT NULL,
         hash TEXT NOT NULL,
         PRIMARY KEY (name, version)
     );",
    // 3: settings changed at run time (limits).
    "CREATE TABLE settings (
         name TEXT PRIMARY KEY,
         value TEXT NOT NULL,
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );",
    // 4: the audit log (docs/security.md); kept apart from workflow retention.
    "CREATE TABLE audit (
         sequence BIGSERIAL PRIMARY KEY,
         at BIGINT NOT NULL,
         actor TEXT NOT NULL,
         proof TEXT NOT NULL,
         role TEXT NOT NULL,
         origin TEXT NOT NULL,
         action TEXT NOT NULL,
         target TEXT NOT NULL,
         detail TEXT NOT NULL,
         outcome TEXT NOT NULL
     );
     CREATE INDEX audit_target ON audit (target);",
    // 5: several control units (docs/cluster.md): partition leases and members.
    "CREATE TABLE cluster_partitions (
         partition INT PRIMARY KEY,
         owner TEXT,
         epoch BIGINT NOT NULL DEFAULT 0,
         expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
     );
     CREATE TABLE cluster_members (
         name TEXT PRIMARY KEY,
         grpc_url TEXT NOT NULL,
         http_url TEXT NOT NULL DEFAULT '',
         started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
         heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );",
];

pub struct PostgresStore {
    url: String,
    writer: Mutex<Client>,
    reader: Client,
    connections: Vec<tokio::task::JoinHandle<()>>,
    /// The runtime it was opened on: a new writer connects there, so that its connection
    /// task runs beside the caller, not on the caller's runtime (the actor's has one
    /// thread, which would run the task only when the actor waits: a broken connection
    /// would not yet look closed when the failed commit checks).
    runtime: tokio::runtime::Handle,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for connection in &self.connections {
            connection.abort();
        }
    }
}

pub(crate) fn pg(error: tokio_postgres::Error) -> StoreError {
    // The server's own message ("relation ... does not exist") says more than "db error".
    match error.as_db_error() {
        Some(db) => StoreError::Postgres(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Postgres(error.to_string()),
    }
}

/// One group commit in one transaction (fenced by its partitions' epochs, in a cluster).
async fn write_batch(writer: &mut Client, batch: &Batch) -> Result<(), StoreError> {
    let transaction = writer.transaction().await.map_err(pg)?;
    if let Some((member, written)) = &batch.fence {
        let lost = crate::cluster::postgres::fence(&transaction, member, written).await?;
        if !lost.is_empty() {
            transaction.rollback().await.map_err(pg)?;
            return Err(StoreError::Fenced(lost));
        }
    }
    if !batch.specs.is_empty() {
        let hashes: Vec<&str> = batch.specs.iter().map(|s| s.hash.as_str()).collect();
        let texts: Vec<&str> = batch.specs.iter().map(|s| &*s.text).collect();
        let names: Vec<&str> = batch.specs.iter().map(|s| s.name.as_str()).collect();
        let versions: Vec<i64> = batch.specs.iter().map(|s| i64::from(s.version)).collect();
        transaction
            .execute("INSERT INTO specs (hash, text) SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING", &[&hashes, &texts])
            .await
            .map_err(pg)?;
        transaction
            .execute("INSERT INTO spec_refs (name, version, hash) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING", &[&names, &versions, &hashes])
            .await
            .map_err(pg)?;
    }
    if !batch.workflows.is_empty() {
        let w = &batch.workflows;
        let ids: Vec<String> = w.iter().map(|w| w.id.to_string()).collect();
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        let hashes: Vec<&str> = w.iter().map(|w| w.spec_hash.as_str()).collect();
        let statuses: Vec<&str> = w.iter().map(|w| status_name(w.status)).collect();
        let terminal: Vec<bool> = w.iter().map(|w| w.status.is_terminal()).collect();
        let keys: Vec<Option<&str>> = w.iter().map(|w| w.idempotency_key.as_deref()).collect();
        let fingerprints: Vec<i64> = w.iter().map(|w| w.fingerprint as i64).collect();
        let created: Vec<i64> = w.iter().map(|w| w.created_at as i64).collect();
        let updated: Vec<i64> = w.iter().map(|w| w.updated_at as i64).collect();
        let snapshots: Vec<Option<&[u8]>> = w
            .iter()
            .map(|w| w.snapshot.as_ref().map(|(b, _)| b.as_slice()))
            .collect();
        let sequences: Vec<Option<i64>> = w
            .iter()
            .map(|w| w.snapshot.as_ref().map(|(_, s)| *s as i64))
            .collect();
        // Rows of one workflow may repeat in a batch: keep the last per id.
        transaction
            .execute(
                "INSERT INTO workflows (id, name, spec_hash, status, terminal, idempotency_key, fingerprint, created_at, updated_at, snapshot, snapshot_sequence)
                 SELECT DISTINCT ON (id) id, name, spec_hash, status, terminal, key, fingerprint, created_at, updated_at, snapshot, COALESCE(sequence, 0)
                 FROM (SELECT *, row_number() OVER () AS position FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::bytea[], $11::int8[])
                       AS r(id, name, spec_hash, status, terminal, key, fingerprint, created_at, updated_at, snapshot, sequence)) rows
                 ORDER BY id, position DESC
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status,
                     terminal = excluded.terminal,
                     updated_at = excluded.updated_at,
                     snapshot = COALESCE(excluded.snapshot, workflows.snapshot),
                     snapshot_sequence = CASE WHEN excluded.snapshot IS NULL THEN workflows.snapshot_sequence ELSE excluded.snapshot_sequence END",
                &[&ids, &names, &hashes, &statuses, &terminal, &keys, &fingerprints, &created, &updated, &snapshots, &sequences],
            )
            .await
            .map_err(pg)?;
    }
    if !batch.events.is_empty() {
        let e = &batch.events;
        let ids: Vec<String> = e.iter().map(|e| e.workflow.to_string()).collect();
        let sequences: Vec<i64> = e.iter().map(|e| e.sequence as i64).collect();
        let at: Vec<i64> = e.iter().map(|e| e.at as i64).collect();
        let changes: Vec<&[u8]> = e.iter().map(|e| e.change.as_slice()).collect();
        transaction
            .execute(
                "INSERT INTO events (workflow_id, sequence, at, change) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::bytea[]) ON CONFLICT DO NOTHING",
                &[&ids, &sequences, &at, &changes],
            )
            .await
            .map_err(pg)?;
    }
    if !batch.audit.is_empty() {
        let a = &batch.audit;
        let at: Vec<i64> = a.iter().map(|r| r.at_ms as i64).collect();
        let column =
            |f: fn(&crate::audit::AuditRecord) -> &str| -> Vec<&str> { a.iter().map(f).collect() };
        // UNNEST keeps the order of the arrays: sequences follow the batch's order.
        transaction
            .execute(
                "INSERT INTO audit (at, actor, proof, role, origin, action, target, detail, outcome)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
                &[
                    &at,
                    &column(|r| &r.actor),
                    &column(|r| &r.proof),
                    &column(|r| &r.role),
                    &column(|r| &r.origin),
                    &column(|r| &r.action),
                    &column(|r| &r.target),
                    &column(|r| &r.detail),
                    &column(|r| &r.outcome),
                ],
            )
            .await
            .map_err(pg)?;
    }
    transaction.commit().await.map_err(pg)
}

/// The writer's connection. A group commit takes milliseconds: a writer that sits inside
/// one for a second is stalled (paused, partitioned), and PostgreSQL ends its transaction,
/// so the lease rows its fence locked are free for a takeover (docs/cluster.md). Its
/// connection task ends with the connection.
async fn writer_client(url: &str) -> Result<Client, StoreError> {
    let (writer, _task) = client(url).await?;
    writer
        .batch_execute("SET idle_in_transaction_session_timeout = 1000")
        .await
        .map_err(pg)?;
    Ok(writer)
}

pub(crate) async fn client(url: &str) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::error!(%error, "postgres connection ended");
        }
    });
    Ok((client, task))
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (mut writer, writer_task) = client(url).await?;
        let (reader, reader_task) = client(url).await?;
        migrate(&mut writer).await?;
        drop(writer);
        writer_task.abort();
        let writer = writer_client(url).await?;
        Ok(Self {
            url: url.to_owned(),
            writer: Mutex::new(writer),
            reader,
            connections: vec![reader_task],
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // One control unit migrates at a time, from the very first statement: control units
    // of a cluster starting together would otherwise race even on `CREATE TABLE IF NOT
    // EXISTS` (PostgreSQL answers one of them with a duplicate key in `pg_type`). The
    // advisory lock is held until the transaction ends.
    let transaction = client.transaction().await.map_err(pg)?;
    transaction
        .batch_execute(
            "SELECT pg_advisory_xact_lock(7364206);
             CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg)?;
    let current: i64 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version > current {
            transaction.batch_execute(migration).await.map_err(pg)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(pg)?;
        }
    }
    transaction.commit().await.map_err(pg)
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.lock().await;
        let result = write_batch(&mut writer, &batch).await;
        // Whether the server ended the connection: its task may not have seen the end yet
        // when the error arrives, so a failed commit asks once more on the connection.
        if result.is_err()
            && (writer.is_closed() || writer.batch_execute("ROLLBACK").await.is_err())
        {
            // The server ended the connection mid-commit (a stalled transaction past
            // `idle_in_transaction_session_timeout`, a restart): nothing was written.
            // With a new connection the control unit can start again from the store.
            let url = self.url.clone();
            let fresh = self
                .runtime
                .spawn(async move { writer_client(&url).await })
                .await;
            if let Ok(Ok(fresh)) = fresh {
                *writer = fresh;
                return Err(StoreError::Interrupted(
                    result.err().map(|e| e.to_string()).unwrap_or_default(),
                ));
            }
        }
        result
    }

    async fn audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        let before = query.before.map(|b| b as i64);
        let limit = query.limit as i64;
        let rows = self
            .reader
            .query(
                "SELECT sequence, at, actor, proof, role, origin, action, target, detail, outcome FROM audit
                 WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
                   AND ($3::text IS NULL OR target = $3) AND ($4::int8 IS NULL OR sequence < $4)
                 ORDER BY sequence DESC LIMIT $5",
                &[&query.actor, &query.action, &query.target, &before, &limit],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| crate::audit::AuditRecord {
                sequence: r.get::<_, i64>(0) as u64,
                at_ms: r.get::<_, i64>(1) as u64,
                actor: r.get(2),
                proof: r.get(3),
                role: r.get(4),
                origin: r.get(5),
                action: r.get(6),
                target: r.get(7),
                detail: r.get(8),
                outcome: r.get(9),
            })
            .collect())
    }

    async fn recover(&self, terminal_max: usize) -> Result<Recovered, StoreError> {
        let specs = self
            .reader
            .query("SELECT hash, text FROM specs", &[])
            .await
            .map_err(pg)?;
        let specs = specs
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let limit = terminal_max as i64;
        let rows = self
            .reader
            .query(
                "(SELECT id, snapshot, fingerprint, terminal FROM workflows WHERE NOT terminal AND snapshot IS NOT NULL)
                 UNION ALL
                 (SELECT id, snapshot, fingerprint, terminal FROM workflows WHERE terminal AND snapshot IS NOT NULL ORDER BY updated_at DESC LIMIT $1)",
                &[&limit],
            )
            .await
            .map_err(pg)?;
        let workflows = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, Vec<u8>>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, bool>(3),
                )
            })
            .collect();
        let rows = self
            .reader
            .query(
                "SELECT e.workflow_id, e.at, e.change FROM events e JOIN workflows w ON w.id = e.workflow_id
                 WHERE NOT w.terminal AND e.sequence > w.snapshot_sequence ORDER BY e.workflow_id, e.sequence",
                &[],
            )
            .await
            .map_err(pg)?;
        let events = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, Vec<u8>>(2),
                )
            })
            .collect();
        let rows = self
            .reader
            .query("SELECT idempotency_key, id, fingerprint FROM workflows WHERE idempotency_key IS NOT NULL", &[])
            .await
            .map_err(pg)?;
        let idempotency = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                )
            })
            .collect();
        let last: i64 = self
            .reader
            .query_one("SELECT GREATEST((SELECT COALESCE(MAX(sequence), 0) FROM events), (SELECT COALESCE(MAX(snapshot_sequence), 0) FROM workflows))", &[])
            .await
            .map_err(pg)?
            .get(0);
        super::sqlite::assemble((specs, workflows, events, idempotency, last))
    }

    async fn load(&self, id: WorkflowId) -> Result<Option<(Snapshot, String)>, StoreError> {
        let row = self
            .reader
            .query_opt(
                "SELECT w.snapshot, s.text FROM workflows w JOIN specs s ON s.hash = w.spec_hash WHERE w.id = $1 AND w.snapshot IS NOT NULL",
                &[&id.to_string()],
            )
            .await
            .map_err(pg)?;
        row.map(|r| {
            Ok((
                decode_snapshot(&r.get::<_, Vec<u8>>(0))?,
                r.get::<_, String>(1),
            ))
        })
        .transpose()
    }

    async fn spec(&self, name: &str, version: u32) -> Result<Option<(String, String)>, StoreError> {
        let row = self
            .reader
            .query_opt(
                "SELECT s.hash, s.text FROM spec_refs r JOIN specs s ON s.hash = r.hash WHERE r.name = $1 AND r.version = $2",
                &[&name, &i64::from(version)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .reader
            .query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, String>(0)))
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let writer = self.writer.lock().await;
        writer
            .execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()",
                &[&name, &value],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<Snapshot>, StoreError> {
        let after = query.after.map(|id| id.to_string()).unwrap_or_default();
        let status = query.status.map(status_name);
        let limit = query.limit as i64;
        let rows = self
            .reader
            .query(
                "SELECT snapshot FROM workflows WHERE id > $1 AND snapshot IS NOT NULL
                 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR name = $3) ORDER BY id LIMIT $4",
                &[&after, &status, &query.name, &limit],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| decode_snapshot(&r.get::<_, Vec<u8>>(0)))
            .collect()
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        let before = before_ms as i64;
        let mut writer = self.writer.lock().await;
        let transaction = writer.transaction().await.map_err(pg)?;
        let keys = transaction
            .query(
                "SELECT idempotency_key FROM workflows WHERE terminal AND updated_at < $1 AND idempotency_key IS NOT NULL",
                &[&before],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        transaction
            .execute("DELETE FROM events WHERE workflow_id IN (SELECT id FROM workflows WHERE terminal AND updated_at < $1)", &[&before])
            .await
            .map_err(pg)?;
        let pruned = transaction
            .execute(
                "DELETE FROM workflows WHERE terminal AND updated_at < $1",
                &[&before],
            )
            .await
            .map_err(pg)?;
        transaction.commit().await.map_err(pg)?;
        Ok(Pruned {
            workflows: pruned,
            keys,
        })
    }
}
