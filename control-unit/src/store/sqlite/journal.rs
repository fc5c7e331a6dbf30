//! The embedded store's commit log. A commit is durable when its entry is in the log and
//! synced: a group of commits is written with one `write` ([`Writer::write`]) and synced
//! with one `fdatasync` of the segment, on the writer's thread or on a syncer's while the
//! writer goes on (`threads.rs`), and then answered and handed to the SQLite thread, which applies
//! them to the database file in transactions as large as its backlog
//! (`synchronous=NORMAL`, no fsync of their own). The database records the last entry it
//! applied in the same transaction as the entry's rows, so on open the entries after it
//! are applied again ([`read`]) and nothing acknowledged is lost, whether the process or
//! the machine stopped.
//!
//! The log is a directory of segment files of about [`SEGMENT_BYTES`], written in place
//! over bytes already on disk: an `fdatasync` that does not change the file's size costs
//! about two thirds of one that does (112 against 162 µs here), and does not wait for
//! the file system's journal (which other files' metadata also goes through). The first
//! segment is filled with zeros when created; when one is full, the log goes on in a
//! spare (a retired segment) or, if none is ready yet, in a new file. A full segment is retired once the SQLite
//! thread has applied its last entry and made that durable (a commit with
//! `synchronous=FULL`).
//!
//! An entry: the payload's length (u32 LE), the CRC-32 of its sequence and payload
//! (u32 LE), its sequence (u64 LE), the payload (a format byte, then a protobuf
//! [`LoggedBatch`]). Reading a segment stops at the first entry that is cut short, fails
//! its checksum or does not follow the one before it: a torn write that was never
//! acknowledged, or the old entries of a recycled segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::audit::AuditRecord;
use crate::model::WorkflowId;
use crate::store::records::{workflow_status, workflow_status_code};
use crate::store::{Batch, EventWrite, SpecWrite, StoreError, WorkflowWrite};

/// A segment's size before the log goes on in the next (a group larger than a whole
/// segment is written whole).
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;

/// Retired segments kept to be written again; more are deleted.
pub(super) const SPARES_MAX: usize = 2;

/// Length, checksum, sequence.
const HEADER: usize = 16;

/// The lock file in the log's directory, held while the store is open.
pub(super) const LOCK: &str = "lock";

/// The payload's first byte: a protobuf [`LoggedBatch`] follows.
const BATCH_PROTOBUF: u8 = 1;

/// The log's default directory, beside the database file: `control.sqlite3-commits`
/// (`--commit-log-dir` puts it elsewhere: `identity`).
pub(super) fn directory(database: &Path) -> PathBuf {
    beside(database, "-commits")
}

/// The path beside the database file named after it: `control.sqlite3{suffix}`.
pub(super) fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    database.with_file_name(name)
}

/// A segment file and where its next entry goes.
pub(super) struct Segment {
    pub path: PathBuf,
    /// Shared with the syncers while they sync it.
    file: std::sync::Arc<File>,
    offset: u64,
    /// The sequence of the last entry written to it.
    pub last: u64,
}

impl Segment {
    /// An existing segment, to be written again from its start.
    fn reuse(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(Self {
            path,
            file: std::sync::Arc::new(file),
            offset: 0,
            last: 0,
        })
    }
}

/// What one append did.
pub(super) struct Appended {
    /// The sequence of the group's last entry.
    pub last: u64,
    /// The segment the group did not fit in, to retire once its entries are durable in
    /// the database.
    pub retired: Option<Segment>,
}

/// The log's writing end, owned by the log's thread.
pub(super) struct Writer {
    dir: PathBuf,
    segment: Segment,
    next_sequence: u64,
    next_number: u64,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    spares: std::sync::mpsc::Receiver<Segment>,
    buffer: Vec<u8>,
    /// An exclusive lock on `lock` in the directory while the store is open: a second
    /// process (or a second open in this one) is refused instead of writing the same log.
    _lock: File,
}

impl Writer {
    /// Appends one entry per batch with one write and one `fdatasync`; durable when it
    /// returns (the tests' way; the store writes and leaves the sync to its syncers).
    #[cfg(test)]
    pub fn append(&mut self, batches: &[Batch]) -> io::Result<Appended> {
        let appended = self.write(batches)?;
        self.segment.file.sync_data()?;
        Ok(appended)
    }

    /// Appends one entry per batch with one write, not synced: durable once an
    /// `fdatasync` of [`Writer::file`] started after it returns. When the group does
    /// not fit in the segment, the segment is synced first, so that no later segment
    /// ever holds an entry the one before it may lack.
    pub fn write(&mut self, batches: &[Batch]) -> io::Result<Appended> {
        self.buffer.clear();
        let first = self.next_sequence;
        for (index, batch) in batches.iter().enumerate() {
            frame(&mut self.buffer, first + index as u64, batch);
        }
        let full = self.segment.offset + self.buffer.len() as u64 > self.segment_bytes;
        let retired = if full && self.segment.offset > 0 {
            self.segment.file.sync_data()?;
            Some(self.rotate()?)
        } else {
            None
        };
        self.segment
            .file
            .write_all_at(&self.buffer, self.segment.offset)?;
        self.segment.offset += self.buffer.len() as u64;
        self.next_sequence = first + batches.len() as u64;
        self.segment.last = self.next_sequence - 1;
        Ok(Appended {
            last: self.segment.last,
            retired,
        })
    }

    /// The segment being written, to sync.
    pub fn file(&self) -> std::sync::Arc<File> {
        self.segment.file.clone()
    }

    /// The sequence of the last entry written.
    pub fn last(&self) -> u64 {
        self.next_sequence - 1
    }

    fn rotate(&mut self) -> io::Result<Segment> {
        let next = match self.spares.try_recv() {
            Ok(mut spare) => {
                spare.offset = 0;
                spare.last = 0;
                spare
            }
            // No spare yet (the SQLite thread is a segment behind): a new file, not
            // filled first, so this commit does not wait for that.
            Err(_) => create(&self.dir, &mut self.next_number, 0)?,
        };
        Ok(std::mem::replace(&mut self.segment, next))
    }
}

/// A new segment file, `zeroed` bytes of zeros written and synced first (entries then
/// overwrite them in place, and reading stops at the first zero length), its name made
/// durable in the directory before anything is written to it.
fn create(dir: &Path, number: &mut u64, zeroed: u64) -> io::Result<Segment> {
    let path = dir.join(format!("segment-{:08}.log", *number));
    *number += 1;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    if zeroed > 0 {
        let zeros = vec![0; 1 << 20];
        let mut written = 0;
        while written < zeroed {
            let part = (zeroed - written).min(zeros.len() as u64);
            file.write_all_at(&zeros[..part as usize], written)?;
            written += part;
        }
        file.sync_all()?;
    }
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        path,
        file: std::sync::Arc::new(file),
        offset: 0,
        last: 0,
    })
}

/// The log as found on open: the entries after the database's last applied one, in
/// order, to apply again before anything else.
pub(super) struct Found {
    pub entries: Vec<(u64, Vec<u8>)>,
    segments: Vec<(u64, PathBuf)>,
    lock: File,
}

/// Takes an exclusive lock on `path` (creating the file) for as long as the returned
/// file is open: a second process, or a second open in this one, is refused.
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if let Err(error) = lock.try_lock() {
        return Err(StoreError::Io {
            path: path.display().to_string(),
            source: io::Error::other(format!(
                "the store is open in another process (or twice in this one): {error}"
            )),
        });
    }
    Ok(lock)
}

/// The segment files in `dir`, by number (none if `dir` does not exist).
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    };
    let items = match std::fs::read_dir(dir) {
        Ok(items) => items,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(error)),
    };
    let mut segments = Vec::new();
    for item in items {
        let path = item.map_err(io)?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("segment-")?.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Creates the log's directory, locks it and reads it ([`read_locked`]): the tests' way.
#[cfg(test)]
pub(super) fn read(dir: &Path, applied: u64) -> Result<Found, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    read_locked(dir, applied, lock(&dir.join(LOCK))?)
}

/// Reads every segment of the log in `dir`, whose [`LOCK`] the caller holds: the
/// entries after `applied` must follow it without a gap, or the log is damaged where an
/// acknowledged commit was.
pub(super) fn read_locked(dir: &Path, applied: u64, lock: File) -> Result<Found, StoreError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    let segments = segments(dir)?;
    let mut after: BTreeMap<u64, (Vec<u8>, usize)> = BTreeMap::new();
    for (index, (_, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io(path))?;
        for (sequence, payload) in entries(&bytes) {
            if sequence <= applied {
                continue;
            }
            if let Some((_, other)) = after.insert(sequence, (payload.to_vec(), index)) {
                return Err(StoreError::Corrupt(format!(
                    "commit log: entry {sequence} is in both {} and {}",
                    segments[other].1.display(),
                    path.display()
                )));
            }
        }
    }
    let mut found = Vec::with_capacity(after.len());
    let mut expected = applied + 1;
    while let Some((sequence, (payload, _))) = after.pop_first() {
        if sequence != expected {
            return Err(StoreError::Corrupt(format!(
                "commit log {}: entry {expected} is missing or damaged, but entries {sequence} to {} follow",
                dir.display(),
                after.last_key_value().map_or(sequence, |(last, _)| *last),
            )));
        }
        found.push((sequence, payload));
        expected += 1;
    }
    Ok(Found {
        entries: found,
        segments,
        lock,
    })
}

impl Found {
    /// The writer, once every entry found is applied and durable in the database: the
    /// segments found become its current one and spares (the rest are deleted), and its
    /// sequence goes on after `applied`. Segments take `segment_bytes` ([`SEGMENT_BYTES`]).
    pub fn writer(
        self,
        dir: &Path,
        applied: u64,
        segment_bytes: u64,
    ) -> Result<(Writer, std::sync::mpsc::SyncSender<Segment>), StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let mut next_number = self.segments.last().map_or(0, |(n, _)| n + 1);
        let (give, spares) = std::sync::mpsc::sync_channel(SPARES_MAX);
        let mut kept = self.segments.into_iter().map(|(_, path)| path);
        let segment = match kept.next() {
            Some(path) => Segment::reuse(path.clone()).map_err(io(&path))?,
            None => create(dir, &mut next_number, segment_bytes).map_err(io(dir))?,
        };
        for path in kept {
            let spare = Segment::reuse(path.clone()).map_err(io(&path))?;
            if let Err(std::sync::mpsc::TrySendError::Full(spare)) = give.try_send(spare) {
                std::fs::remove_file(&spare.path).map_err(io(&spare.path))?;
            }
        }
        let writer = Writer {
            dir: dir.to_owned(),
            segment,
            next_sequence: applied + 1,
            next_number,
            segment_bytes,
            spares,
            buffer: Vec::new(),
            _lock: self.lock,
        };
        Ok((writer, give))
    }
}

/// A segment's entries from its start, up to the first that is cut short, fails its
/// checksum or does not follow the one before.
fn entries(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut offset = 0;
    let mut previous: Option<u64> = None;
    std::iter::from_fn(move || {
        let header = bytes.get(offset..offset + HEADER)?;
        let length = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
        let checksum = u32::from_le_bytes(header[4..8].try_into().ok()?);
        let sequence = u64::from_le_bytes(header[8..16].try_into().ok()?);
        let end = (offset + HEADER).checked_add(length)?;
        if length == 0
            || previous.is_some_and(|p| p.checked_add(1) != Some(sequence))
            || crc32fast::hash(bytes.get(offset + 8..end)?) != checksum
        {
            return None;
        }
        let payload = &bytes[offset + HEADER..end];
        offset = end;
        previous = Some(sequence);
        Some((sequence, payload))
    })
}

/// Appends one entry: header, then the batch.
fn frame(out: &mut Vec<u8>, sequence: u64, batch: &Batch) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(BATCH_PROTOBUF);
    logged(batch)
        .encode(out)
        .expect("a Vec grows to take any entry");
    let length = u32::try_from(out.len() - start - HEADER).expect("an entry under 4 GiB");
    out[start + 8..start + 16].copy_from_slice(&sequence.to_le_bytes());
    let checksum = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// An entry's batch, as it was committed.
pub(super) fn decode(sequence: u64, payload: &[u8]) -> Result<Batch, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("commit log entry {sequence}: {e}"))
    };
    let Some((&BATCH_PROTOBUF, message)) = payload.split_first() else {
        return Err(corrupt(&format!("unknown format {:?}", payload.first())));
    };
    let logged = LoggedBatch::decode(message).map_err(|e| corrupt(&e))?;
    let id = |bytes: &[u8]| -> Result<WorkflowId, StoreError> {
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|_| corrupt(&format!("a workflow id of {} bytes", bytes.len())))?;
        Ok(WorkflowId(u128::from_be_bytes(bytes)))
    };
    Ok(Batch {
        specs: logged
            .specs
            .into_iter()
            .map(|s| SpecWrite {
                hash: s.hash,
                name: s.name,
                version: s.version,
                text: s.text.into(),
            })
            .collect(),
        workflows: logged
            .workflows
            .into_iter()
            .map(|w| {
                Ok(WorkflowWrite {
                    id: id(&w.id)?,
                    name: w.name,
                    spec_hash: w.spec_hash,
                    status: workflow_status(w.status).map_err(|e| corrupt(&e))?,
                    idempotency_key: w.idempotency_key,
                    fingerprint: w.fingerprint,
                    created_at: w.created_at,
                    updated_at: w.updated_at,
                    snapshot: w.snapshot.map(|s| (s, w.snapshot_sequence)),
                })
            })
            .collect::<Result<_, StoreError>>()?,
        events: logged
            .events
            .into_iter()
            .map(|e| {
                Ok(EventWrite {
                    workflow: id(&e.workflow)?,
                    sequence: e.sequence,
                    at: e.at,
                    change: e.change,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        audit: logged
            .audit
            .into_iter()
            .map(|a| AuditRecord {
                sequence: 0,
                at_ms: a.at,
                actor: a.actor,
                proof: a.proof,
                role: a.role,
                origin: a.origin,
                action: a.action,
                target: a.target,
                detail: a.detail,
                outcome: a.outcome,
            })
            .collect(),
        fence: None,
    })
}

fn logged(batch: &Batch) -> LoggedBatch {
    LoggedBatch {
        specs: batch
            .specs
            .iter()
            .map(|s| LoggedSpec {
                hash: s.hash.clone(),
                name: s.name.clone(),
                version: s.version,
                text: s.text.to_string(),
            })
            .collect(),
        workflows: batch
            .workflows
            .iter()
            .map(|w| LoggedWorkflow {
                id: w.id.0.to_be_bytes().to_vec(),
                name: w.name.clone(),
                spec_hash: w.spec_hash.clone(),
                status: workflow_status_code(w.status),
                idempotency_key: w.idempotency_key.clone(),
                fingerprint: w.fingerprint,
                created_at: w.created_at,
                updated_at: w.updated_at,
                snapshot: w.snapshot.as_ref().map(|(record, _)| record.clone()),
                snapshot_sequence: w.snapshot.as_ref().map_or(0, |(_, sequence)| *sequence),
            })
            .collect(),
        events: batch
            .events
            .iter()
            .map(|e| LoggedEvent {
                workflow: e.workflow.0.to_be_bytes().to_vec(),
                sequence: e.sequence,
                at: e.at,
                change: e.change.clone(),
            })
            .collect(),
        audit: batch
            .audit
            .iter()
            .map(|a| LoggedAudit {
                at: a.at_ms,
                actor: a.actor.clone(),
                proof: a.proof.clone(),
                role: a.role.clone(),
                origin: a.origin.clone(),
                action: a.action.clone(),
                target: a.target.clone(),
                detail: a.detail.clone(),
                outcome: a.outcome.clone(),
            })
            .collect(),
    }
}

// The entry's messages. Tags never change meaning; new fields take new tags.

#[derive(Clone, PartialEq, Message)]
struct LoggedBatch {
    #[prost(message, repeated, tag = "1")]
    specs: Vec<LoggedSpec>,
    #[prost(message, repeated, tag = "2")]
    workflows: Vec<LoggedWorkflow>,
    #[prost(message, repeated, tag = "3")]
    events: Vec<LoggedEvent>,
    #[prost(message, repeated, tag = "4")]
    audit: Vec<LoggedAudit>,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedSpec {
    #[prost(string, tag = "1")]
    hash: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(uint32, tag = "3")]
    version: u32,
    #[prost(string, tag = "4")]
    text: String,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedWorkflow {
    /// 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    spec_hash: String,
    /// The code `records` gives the status.
    #[prost(uint32, tag = "4")]
    status: u32,
    #[prost(string, optional, tag = "5")]
    idempotency_key: Option<String>,
    #[prost(fixed64, tag = "6")]
    fingerprint: u64,
    #[prost(uint64, tag = "7")]
    created_at: u64,
    #[prost(uint64, tag = "8")]
    updated_at: u64,
    /// The snapshot record, when one was taken.
    #[prost(bytes = "vec", optional, tag = "9")]
    snapshot: Option<Vec<u8>>,
    #[prost(uint64, tag = "10")]
    snapshot_sequence: u64,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedEvent {
    #[prost(bytes = "vec", tag = "1")]
    workflow: Vec<u8>,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(uint64, tag = "3")]
    at: u64,
    #[prost(bytes = "vec", tag = "4")]
    change: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedAudit {
    #[prost(uint64, tag = "1")]
    at: u64,
    #[prost(string, tag = "2")]
    actor: String,
    #[prost(string, tag = "3")]
    proof: String,
    #[prost(string, tag = "4")]
    role: String,
    #[prost(string, tag = "5")]
    origin: String,
    #[prost(string, tag = "6")]
    action: String,
    #[prost(string, tag = "7")]
    target: String,
    #[prost(string, tag = "8")]
    detail: String,
    #[prost(string, tag = "9")]
    outcome: String,
}

#[cfg(test)]
pub(super) mod tests;
