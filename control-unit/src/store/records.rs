//! The stored format of snapshots and changes: protobuf messages (encoded by prost), the
//! record's first byte naming its format, so that rows of every earlier format still read
//! and no migration rewrites them.
//!
//! | first byte | format | written by |
//! |---|---|---|
//! | `{` | JSON of [`Snapshot`] / [`Change`] | changes before format 2; PostgreSQL snapshots before format 2 |
//! | 1 ([`SNAPSHOT_LZ4`]) | an LZ4 block of the snapshot's JSON, its length first (4 bytes, LE) | embedded snapshots, migration 5 to format 2 |
//! | 2 ([`PROTOBUF`]) | the messages below | both stores now |
//!
//! A seq3 workflow's two snapshots took ~1.4 KB as compressed JSON and take ~0.5 KB here;
//! a task change ~140 B of JSON and ~20–110 B here (docs/benchmarks.md). Timestamps
//! inside a snapshot are stored relative to its `created_at`, a few bytes each.
//!
//! The numbers below are the stored format: a field's tag and an enum's code never
//! change meaning. New fields take new tags; new enum values take the next code.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::StoreError;
use crate::model::{AgentId, Priority, TaskStatus, WorkflowId, WorkflowStatus};
use crate::scheduler::Change;
use crate::scheduler::operations::Reset;
use crate::scheduler::restore::Snapshot;
use crate::scheduler::state::{AttemptOutcome, AttemptRecord, Execution, TaskState, Workflow};

/// An LZ4 block of a snapshot's JSON (format 1).
pub const SNAPSHOT_LZ4: u8 = 1;
/// A protobuf record (format 2).
pub const PROTOBUF: u8 = 2;

/// The workflow's snapshot as a record.
pub fn encode_snapshot(workflow: &Workflow) -> Vec<u8> {
    let base = workflow.created_at;
    let record = SnapshotRecord {
        id: workflow.id.0.to_be_bytes().to_vec(),
        spec_hash: workflow.spec.hash.clone(),
        name: workflow.spec.name.clone(),
        version: workflow.spec.version,
        input_json: serde_json::to_string(&*workflow.input)
            .expect("a JSON value always serialises"),
        priority: priority_code(workflow.priority),
        labels: workflow.labels.clone(),
        idempotency_key: workflow.idempotency_key.clone(),
        traceparent: workflow.traceparent.clone(),
        trace_parent_span: workflow.trace_parent_span.clone(),
        tracestate: workflow.tracestate.clone(),
        status: code(&WORKFLOW_STATUSES, workflow.status),
        error: workflow.error.clone(),
        created_at: workflow.created_at,
        updated_at: relative(base, workflow.updated_at),
        cancel_requested: workflow.cancel_requested,
        paused: workflow.paused.clone(),
        compensation_failures: workflow.compensation_failures,
        compensation_stack: workflow.compensation_stack.clone(),
        compensating: workflow.compensating,
        tasks: workflow
            .tasks
            .iter()
            .map(|task| TaskRecord {
                run: Some(execution_record(base, &task.run)),
                pending_needs: task.pending_needs,
                compensation: task
                    .compensation
                    .as_deref()
                    .map(|c| execution_record(base, c)),
            })
            .collect(),
    };
    encoded(&record)
}

/// The change as a record.
pub fn encode_change(change: &Change) -> Vec<u8> {
    let kind = match change {
        Change::Created => ChangeKind::Created(()),
        Change::Workflow { status, detail } => ChangeKind::Workflow(WorkflowChange {
            status: code(&WORKFLOW_STATUSES, *status),
            detail: detail.clone(),
        }),
        Change::Task {
            task,
            compensation,
            status,
            attempt,
            agent,
            detail,
            output,
            retry_at,
            deadline,
            outcome,
            lookups,
            settling,
        } => ChangeKind::Task(TaskChange {
            task: *task,
            compensation: *compensation,
            status: code(&TASK_STATUSES, *status),
            attempt: *attempt,
            agent: agent.as_ref().map(|a| a.0.to_string()),
            detail: detail.clone(),
            output: output.as_deref().map(str::to_owned),
            retry_at: *retry_at,
            deadline: *deadline,
            outcome: outcome.map(|o| code(&ATTEMPT_OUTCOMES, o)),
            lookups: *lookups,
            settling: *settling,
        }),
        Change::CancelRequested { reason } => ChangeKind::CancelRequested(reason.clone()),
        Change::Paused { reason } => ChangeKind::Paused(reason.clone()),
        Change::Resumed => ChangeKind::Resumed(()),
        Change::Reopened(reset) => ChangeKind::Reopened(ResetRecord {
            tasks: reset.tasks.clone(),
            new_keys: reset.new_keys.clone(),
        }),
    };
    encoded(&ChangeRecord { kind: Some(kind) })
}

/// The format byte, then the message, in one allocation.
fn encoded(record: &impl Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(PROTOBUF);
    record
        .encode(&mut out)
        .expect("a Vec grows to take any record");
    out
}

/// A stored snapshot, in any format.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("snapshot: {e}"));
    match bytes.first() {
        Some(&PROTOBUF) => {
            let record = SnapshotRecord::decode(&bytes[1..]).map_err(|e| corrupt(&e))?;
            snapshot_from(record).map_err(|e| corrupt(&e))
        }
        Some(&SNAPSHOT_LZ4) => {
            let json =
                lz4_flex::block::decompress_size_prepended(&bytes[1..]).map_err(|e| corrupt(&e))?;
            serde_json::from_slice(&json).map_err(|e| corrupt(&e))
        }
        _ => serde_json::from_slice(bytes).map_err(|e| corrupt(&e)),
    }
}

/// A stored change, in any format.
pub fn decode_change(bytes: &[u8]) -> Result<Change, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("change: {e}"));
    match bytes.first() {
        Some(&PROTOBUF) => {
            let record = ChangeRecord::decode(&bytes[1..]).map_err(|e| corrupt(&e))?;
            change_from(record).map_err(|e| corrupt(&e))
        }
        _ => serde_json::from_slice(bytes).map_err(|e| corrupt(&e)),
    }
}

/// A snapshot's JSON as format 1 (what the embedded store wrote from migration 5 until
/// format 2), for tests of older files.
#[cfg(test)]
pub fn compress_snapshot_json(json: &[u8]) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_LZ4];
    out.extend_from_slice(&lz4_flex::block::compress_prepend_size(json));
    out
}

// The codes of the enums, by position. Append only.
const WORKFLOW_STATUSES: [WorkflowStatus; 7] = [
    WorkflowStatus::Pending,
    WorkflowStatus::Running,
    WorkflowStatus::Succeeded,
    WorkflowStatus::Failed,
    WorkflowStatus::Compensating,
    WorkflowStatus::Compensated,
    WorkflowStatus::Cancelled,
];
const TASK_STATUSES: [TaskStatus; 10] = [
    TaskStatus::Blocked,
    TaskStatus::Ready,
    TaskStatus::Backoff,
    TaskStatus::Dispatched,
    TaskStatus::Running,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Skipped,
    TaskStatus::Compensated,
    TaskStatus::Cancelled,
];
const ATTEMPT_OUTCOMES: [AttemptOutcome; 9] = [
    AttemptOutcome::Succeeded,
    AttemptOutcome::Retryable,
    AttemptOutcome::Permanent,
    AttemptOutcome::Timeout,
    AttemptOutcome::LeaseExpired,
    AttemptOutcome::AgentLost,
    AttemptOutcome::Cancelled,
    AttemptOutcome::Interrupted,
    AttemptOutcome::Unknown,
];

/// A workflow status's stored code (shared by the embedded store's commit log).
pub(crate) fn workflow_status_code(status: WorkflowStatus) -> u32 {
    code(&WORKFLOW_STATUSES, status)
}

/// The workflow status a stored code names.
pub(crate) fn workflow_status(code: u32) -> Result<WorkflowStatus, String> {
    value(&WORKFLOW_STATUSES, code, "workflow status")
}

fn code<T: PartialEq + Copy>(all: &[T], value: T) -> u32 {
    all.iter()
        .position(|v| *v == value)
        .expect("every value has a code") as u32
}

fn value<T: Copy>(all: &[T], code: u32, what: &str) -> Result<T, String> {
    all.get(code as usize)
        .copied()
        .ok_or_else(|| format!("{what} code {code} is unknown"))
}

fn priority_code(priority: Priority) -> u32 {
    priority as u32
}

fn priority(code: u32) -> Result<Priority, String> {
    value(&Priority::ALL, code, "priority")
}

/// A timestamp relative to `base` (zigzag, so a few bytes either side of it); none for
/// 0, which stands for "not yet" in the scheduler's state.
fn relative(base: u64, at: u64) -> Option<u64> {
    if at == 0 {
        return None;
    }
    let delta = at.wrapping_sub(base) as i64;
    Some(((delta << 1) ^ (delta >> 63)) as u64)
}

fn absolute(base: u64, stored: Option<u64>) -> u64 {
    let Some(zigzag) = stored else {
        return 0;
    };
    let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
    base.wrapping_add(delta as u64)
}

fn execution_record(base: u64, run: &Execution) -> ExecutionRecord {
    ExecutionRecord {
        status: code(&TASK_STATUSES, run.status),
        attempt: run.attempt,
        lookups: run.lookups,
        attempts_before: run.attempts_before,
        generation: run.generation,
        settling: run.settling,
        attempt_open: run.attempt_open,
        agent: run.agent.as_ref().map(|a| a.0.to_string()),
        started_at: relative(base, run.started_at),
        finished_at: relative(base, run.finished_at),
        attempt_started_at: relative(base, run.attempt_started_at),
        ready_at: relative(base, run.ready_at),
        deadline: relative(base, run.deadline),
        lease_until: relative(base, run.lease_until),
        retry_at: relative(base, run.retry_at),
        output: run.output.as_deref().map(str::to_owned),
        error: run.error.clone(),
        history: run
            .history
            .iter()
            .map(|h| HistoryRecord {
                attempt: h.attempt,
                agent: h.agent.as_ref().map(|a| a.0.to_string()),
                started_at: relative(base, h.started_at),
                finished_at: relative(base, h.finished_at),
                outcome: code(&ATTEMPT_OUTCOMES, h.outcome),
                error: h.error.clone(),
                lookup: h.lookup,
            })
            .collect(),
    }
}

fn agent(name: Option<String>) -> Option<AgentId> {
    name.map(|n| AgentId(Arc::from(n)))
}

fn execution_from(base: u64, record: ExecutionRecord) -> Result<Execution, String> {
    let mut history = Vec::with_capacity(record.history.len());
    for h in record.history {
        history.push(AttemptRecord {
            attempt: h.attempt,
            agent: agent(h.agent),
            started_at: absolute(base, h.started_at),
            finished_at: absolute(base, h.finished_at),
            outcome: value(&ATTEMPT_OUTCOMES, h.outcome, "attempt outcome")?,
            error: h.error,
            lookup: h.lookup,
        });
    }
    Ok(Execution {
        status: value(&TASK_STATUSES, record.status, "task status")?,
        attempt: record.attempt,
        lookups: record.lookups,
        attempts_before: record.attempts_before,
        generation: record.generation,
        settling: record.settling,
        attempt_open: record.attempt_open,
        agent: agent(record.agent),
        started_at: absolute(base, record.started_at),
        finished_at: absolute(base, record.finished_at),
        attempt_started_at: absolute(base, record.attempt_started_at),
        ready_at: absolute(base, record.ready_at),
        deadline: absolute(base, record.deadline),
        lease_until: absolute(base, record.lease_until),
        retry_at: absolute(base, record.retry_at),
        output: record.output.map(Arc::from),
        error: record.error,
        history,
    })
}

fn snapshot_from(record: SnapshotRecord) -> Result<Snapshot, String> {
    let id: [u8; 16] = record
        .id
        .as_slice()
        .try_into()
        .map_err(|_| format!("a workflow id of {} bytes", record.id.len()))?;
    let base = record.created_at;
    let input = serde_json::from_str(&record.input_json).map_err(|e| format!("input: {e}"))?;
    let mut tasks = Vec::with_capacity(record.tasks.len());
    for (index, task) in record.tasks.into_iter().enumerate() {
        let run = task
            .run
            .ok_or_else(|| format!("task {index} has no state"))?;
        tasks.push(TaskState {
            run: execution_from(base, run)?,
            pending_needs: task.pending_needs,
            compensation: match task.compensation {
                Some(c) => Some(Box::new(execution_from(base, c)?)),
                None => None,
            },
        });
    }
    Ok(Snapshot {
        id: WorkflowId(u128::from_be_bytes(id)).to_string(),
        spec_hash: record.spec_hash,
        name: record.name,
        version: record.version,
        input,
        priority: priority(record.priority)?,
        labels: record.labels,
        idempotency_key: record.idempotency_key,
        traceparent: record.traceparent,
        trace_parent_span: record.trace_parent_span,
        tracestate: record.tracestate,
        status: value(&WORKFLOW_STATUSES, record.status, "workflow status")?,
        error: record.error,
        created_at: record.created_at,
        updated_at: absolute(base, record.updated_at),
        cancel_requested: record.cancel_requested,
        paused: record.paused,
        compensation_failures: record.compensation_failures,
        compensation_stack: record.compensation_stack,
        compensating: record.compensating,
        tasks,
    })
}

fn change_from(record: ChangeRecord) -> Result<Change, String> {
    Ok(match record.kind.ok_or("a change of no kind")? {
        ChangeKind::Created(()) => Change::Created,
        ChangeKind::Workflow(w) => Change::Workflow {
            status: value(&WORKFLOW_STATUSES, w.status, "workflow status")?,
            detail: w.detail,
        },
        ChangeKind::Task(t) => Change::Task {
            task: t.task,
            compensation: t.compensation,
            status: value(&TASK_STATUSES, t.status, "task status")?,
            attempt: t.attempt,
            agent: agent(t.agent),
            detail: t.detail,
            output: t.output.map(Arc::from),
            retry_at: t.retry_at,
            deadline: t.deadline,
            outcome: match t.outcome {
                Some(code) => Some(value(&ATTEMPT_OUTCOMES, code, "attempt outcome")?),
                None => None,
            },
            lookups: t.lookups,
            settling: t.settling,
        },
        ChangeKind::CancelRequested(reason) => Change::CancelRequested { reason },
        ChangeKind::Paused(reason) => Change::Paused { reason },
        ChangeKind::Resumed(()) => Change::Resumed,
        ChangeKind::Reopened(r) => Change::Reopened(Reset {
            tasks: r.tasks,
            new_keys: r.new_keys,
        }),
    })
}

/// A workflow (format 2). Timestamps other than `created_at` are relative to it.
#[derive(Clone, PartialEq, Message)]
struct SnapshotRecord {
    /// The workflow id's 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, tag = "2")]
    spec_hash: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(uint32, tag = "4")]
    version: u32,
    #[prost(string, tag = "5")]
    input_json: String,
    #[prost(uint32, tag = "6")]
    priority: u32,
    #[prost(btree_map = "string, string", tag = "7")]
    labels: BTreeMap<String, String>,
    #[prost(string, optional, tag = "8")]
    idempotency_key: Option<String>,
    #[prost(string, tag = "9")]
    traceparent: String,
    #[prost(string, tag = "10")]
    trace_parent_span: String,
    #[prost(string, tag = "11")]
    tracestate: String,
    #[prost(uint32, tag = "12")]
    status: u32,
    #[prost(string, optional, tag = "13")]
    error: Option<String>,
    #[prost(uint64, tag = "14")]
    created_at: u64,
    #[prost(uint64, optional, tag = "15")]
    updated_at: Option<u64>,
    #[prost(bool, tag = "16")]
    cancel_requested: bool,
    #[prost(string, optional, tag = "17")]
    paused: Option<String>,
    #[prost(uint32, tag = "18")]
    compensation_failures: u32,
    #[prost(uint32, repeated, tag = "19")]
    compensation_stack: Vec<u32>,
    #[prost(uint32, optional, tag = "20")]
    compensating: Option<u32>,
    #[prost(message, repeated, tag = "21")]
    tasks: Vec<TaskRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct TaskRecord {
    #[prost(message, optional, tag = "1")]
    run: Option<ExecutionRecord>,
    #[prost(uint32, tag = "2")]
    pending_needs: u32,
    #[prost(message, optional, tag = "3")]
    compensation: Option<ExecutionRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct ExecutionRecord {
    #[prost(uint32, tag = "1")]
    status: u32,
    #[prost(uint32, tag = "2")]
    attempt: u32,
    #[prost(uint32, tag = "3")]
    lookups: u32,
    #[prost(uint32, tag = "4")]
    attempts_before: u32,
    #[prost(uint32, tag = "5")]
    generation: u32,
    #[prost(bool, tag = "6")]
    settling: bool,
    #[prost(bool, tag = "7")]
    attempt_open: bool,
    #[prost(string, optional, tag = "8")]
    agent: Option<String>,
    #[prost(uint64, optional, tag = "9")]
    started_at: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    finished_at: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    attempt_started_at: Option<u64>,
    #[prost(uint64, optional, tag = "12")]
    ready_at: Option<u64>,
    #[prost(uint64, optional, tag = "13")]
    deadline: Option<u64>,
    #[prost(uint64, optional, tag = "14")]
    lease_until: Option<u64>,
    #[prost(uint64, optional, tag = "15")]
    retry_at: Option<u64>,
    #[prost(string, optional, tag = "16")]
    output: Option<String>,
    #[prost(string, optional, tag = "17")]
    error: Option<String>,
    #[prost(message, repeated, tag = "18")]
    history: Vec<HistoryRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct HistoryRecord {
    #[prost(uint32, tag = "1")]
    attempt: u32,
    #[prost(string, optional, tag = "2")]
    agent: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    started_at: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    finished_at: Option<u64>,
    #[prost(uint32, tag = "5")]
    outcome: u32,
    #[prost(string, optional, tag = "6")]
    error: Option<String>,
    #[prost(bool, tag = "7")]
    lookup: bool,
}

/// A change (format 2). Its timestamps are absolute (unix ms).
#[derive(Clone, PartialEq, Message)]
struct ChangeRecord {
    #[prost(oneof = "ChangeKind", tags = "1, 2, 3, 4, 5, 6, 7")]
    kind: Option<ChangeKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ChangeKind {
    #[prost(message, tag = "1")]
    Created(()),
    #[prost(message, tag = "2")]
    Workflow(WorkflowChange),
    #[prost(message, tag = "3")]
    Task(TaskChange),
    #[prost(string, tag = "4")]
    CancelRequested(String),
    #[prost(string, tag = "5")]
    Paused(String),
    #[prost(message, tag = "6")]
    Resumed(()),
    #[prost(message, tag = "7")]
    Reopened(ResetRecord),
}

#[derive(Clone, PartialEq, Message)]
struct WorkflowChange {
    #[prost(uint32, tag = "1")]
    status: u32,
    #[prost(string, optional, tag = "2")]
    detail: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TaskChange {
    #[prost(uint32, tag = "1")]
    task: u32,
    #[prost(bool, tag = "2")]
    compensation: bool,
    #[prost(uint32, tag = "3")]
    status: u32,
    #[prost(uint32, tag = "4")]
    attempt: u32,
    #[prost(string, optional, tag = "5")]
    agent: Option<String>,
    #[prost(string, optional, tag = "6")]
    detail: Option<String>,
    #[prost(string, optional, tag = "7")]
    output: Option<String>,
    #[prost(uint64, optional, tag = "8")]
    retry_at: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    deadline: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    outcome: Option<u32>,
    #[prost(uint32, tag = "11")]
    lookups: u32,
    #[prost(bool, tag = "12")]
    settling: bool,
}

#[derive(Clone, PartialEq, Message)]
struct ResetRecord {
    #[prost(uint32, repeated, tag = "1")]
    tasks: Vec<u32>,
    #[prost(uint32, repeated, tag = "2")]
    new_keys: Vec<u32>,
}

#[cfg(test)]
mod tests;
