//! The embedded store's layout, versioned: each migration runs once, in order, in its
//! own transaction, and `schema_migrations` records it.

use rusqlite::{Connection, params};

/// Versioned migrations, applied in order on open.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: specs, workflows, the change log.
    "CREATE TABLE specs (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
     CREATE TABLE workflows (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         spec_hash TEXT NOT NULL,
         status TEXT NOT NULL,
         terminal INTEGER NOT NULL,
         idempotency_key TEXT UNIQUE,
         fingerprint INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         snapshot BLOB,
         snapshot_sequence INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX workflows_by_terminal ON workflows (terminal, updated_at);
     CREATE TABLE events (
         workflow_id TEXT NOT NULL,
         sequence INTEGER NOT NULL,
         at INTEGER NOT NULL,
         change BLOB NOT NULL,
         PRIMARY KEY (workflow_id, sequence)
     ) WITHOUT ROWID;",
    // 2: the catalog's names: `name@version` names one spec content for good.
    "CREATE TABLE spec_refs (
         name TEXT NOT NULL,
         version INTEGER NOT NULL,
         hash TEXT NOT NULL,
         PRIMARY KEY (name, version)
     ) WITHOUT ROWID;",
    // 3: settings changed at run time (limits).
    "CREATE TABLE settings (
         name TEXT PRIMARY KEY,
         value TEXT NOT NULL,
         updated_at INTEGER NOT NULL
     );",
    // 4: the audit log (docs/security.md); kept apart from workflow retention.
    "CREATE TABLE audit (
         sequence INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
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
    // 5: the layout for the commit's pages: snapshots and changes append-only by
    // position, the workflow rows small and keyed by id, an index of the active ones'
    // snapshot sequences (where the log may be cut). Existing data is carried over.
    "CREATE TABLE snapshots (
         position INTEGER PRIMARY KEY,
         workflow_id TEXT NOT NULL,
         sequence INTEGER NOT NULL,
         body BLOB NOT NULL
     );
     INSERT INTO snapshots (workflow_id, sequence, body)
         SELECT id, snapshot_sequence, snapshot FROM workflows WHERE snapshot IS NOT NULL
         ORDER BY snapshot_sequence, id;
     CREATE INDEX snapshots_by_workflow ON snapshots (workflow_id);
     CREATE TABLE workflows_v5 (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         spec_hash TEXT NOT NULL,
         status TEXT NOT NULL,
         terminal INTEGER NOT NULL,
         idempotency_key TEXT,
         fingerprint INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         snapshot_position INTEGER,
         snapshot_sequence INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     INSERT INTO workflows_v5
         SELECT w.id, w.name, w.spec_hash, w.status, w.terminal, w.idempotency_key, w.fingerprint,
                w.created_at, w.updated_at, s.position, w.snapshot_sequence
         FROM workflows w LEFT JOIN snapshots s ON s.workflow_id = w.id;
     CREATE TABLE changes (
         sequence INTEGER PRIMARY KEY,
         workflow_id TEXT NOT NULL,
         at INTEGER NOT NULL,
         change BLOB NOT NULL
     );
     INSERT OR IGNORE INTO changes (sequence, workflow_id, at, change)
         SELECT e.sequence, e.workflow_id, e.at, e.change FROM events e JOIN workflows w ON w.id = e.workflow_id
         WHERE w.terminal = 0 AND e.sequence > w.snapshot_sequence ORDER BY e.sequence;
     DROP TABLE events;
     DROP TABLE workflows;
     ALTER TABLE workflows_v5 RENAME TO workflows;
     CREATE UNIQUE INDEX workflows_by_key ON workflows (idempotency_key) WHERE idempotency_key IS NOT NULL;
     CREATE INDEX workflows_ended ON workflows (updated_at) WHERE terminal = 1;
     CREATE INDEX workflows_active ON workflows (snapshot_sequence) WHERE terminal = 0;",
    // 6: the audit log without AUTOINCREMENT. Its rows are never deleted, so the next
    // sequence is still one past the highest ever used, and a commit no longer rewrites
    // `sqlite_sequence`'s page as well.
    "CREATE TABLE audit_v6 (
         sequence INTEGER PRIMARY KEY,
         at INTEGER NOT NULL,
         actor TEXT NOT NULL,
         proof TEXT NOT NULL,
         role TEXT NOT NULL,
         origin TEXT NOT NULL,
         action TEXT NOT NULL,
         target TEXT NOT NULL,
         detail TEXT NOT NULL,
         outcome TEXT NOT NULL
     );
     INSERT INTO audit_v6 SELECT sequence, at, actor, proof, role, origin, action, target, detail, outcome FROM audit;
     DROP TABLE audit;
     ALTER TABLE audit_v6 RENAME TO audit;
     CREATE INDEX audit_target ON audit (target);",
    // 7: a workflow row lists its superseded snapshots (creation, checkpoints), so a prune
    // deletes them by position and no index of snapshots by workflow is kept: that index
    // took about 3 of a commit's ~26 WAL pages (an end snapshot's entry lands beside its
    // creation's, not at the index's end).
    "ALTER TABLE workflows ADD COLUMN superseded TEXT NOT NULL DEFAULT '';
     UPDATE workflows SET superseded = COALESCE(
         (SELECT group_concat(s.position, ' ') FROM snapshots s
          WHERE s.workflow_id = workflows.id AND s.position IS NOT workflows.snapshot_position),
         '');
     DROP INDEX snapshots_by_workflow;",
    // 8: the commit log (`journal`): the last entry applied, written with the entry's
    // rows, and a counter the retiring of a segment bumps in a durable commit.
    "CREATE TABLE commit_log (
         id INTEGER PRIMARY KEY CHECK (id = 0),
         applied INTEGER NOT NULL,
         retired INTEGER NOT NULL
     );
     INSERT INTO commit_log (id, applied, retired) VALUES (0, 0, 0);",
    // 9: which log is the database's (`identity`): its id, the directory it was last
    // in, and whether the store stopped cleanly (every logged commit applied, durable).
    "ALTER TABLE commit_log ADD COLUMN log_id TEXT;
     ALTER TABLE commit_log ADD COLUMN log_dir TEXT;
     ALTER TABLE commit_log ADD COLUMN clean INTEGER NOT NULL DEFAULT 0;",
];

pub(super) fn migrate(connection: &mut Connection) -> Result<(), rusqlite::Error> {
    connection.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
    let current: i64 = connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
            params![version],
        )?;
        transaction.commit()?;
    }
    Ok(())
}
