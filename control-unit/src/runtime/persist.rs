//! Persistence: what one group commit writes (every change, each changed workflow's
//! row, snapshots at creation, checkpoints and the end), and recovery at start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::IdempotencyIndex;
use super::actor::Actor;
use crate::error::ControlError;
use crate::model::{TaskStatus, WorkflowId};
use crate::scheduler::{Change, Record, Scheduler};
use crate::spec::CompiledSpec;
use crate::store::{Batch, EventWrite, RecoveryPage, SpecWrite, Store, StoreError, WorkflowWrite};

pub(super) struct Persistence {
    store: Option<Arc<dyn Store>>,
    /// In a cluster: what this member owns, to fence commits with.
    ownership: Option<Arc<crate::cluster::membership::Ownership>>,
    /// Spec hashes already in the store.
    stored_specs: HashSet<String>,
    /// The store's committer on the calling thread, once the actor runs on a thread of
    /// its own ([`Persistence::commit_here`]).
    here: Option<Arc<dyn crate::store::CommitHere>>,
}

impl Persistence {
    pub(super) fn new(
        store: Option<Arc<dyn Store>>,
        ownership: Option<Arc<crate::cluster::membership::Ownership>>,
    ) -> Self {
        Self {
            store,
            ownership,
            stored_specs: HashSet::new(),
            here: None,
        }
    }

    /// Commits on the calling thread from now on, where the store can: the caller is a
    /// thread of its own, which nothing else waits on while it syncs.
    pub(super) fn commit_here(&mut self) {
        self.here = self.store.as_ref().and_then(|store| store.committer());
    }

    pub(super) fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// Writes `batch`: `None` once it is durable (a store without syncers of its own,
    /// or none), or the number [`Persistence::durable`] reaches when it is (the
    /// embedded store on the actor's thread). With inputs waiting (`busy`) the embedded
    /// store leaves the sync to its syncers and the actor goes on deciding the next
    /// batch; with none, the actor syncs on its own thread, which saves the syncer's
    /// wake-up and the actor's (docs/benchmarks.md, "Issue 17, eleventh step").
    pub(super) async fn write(&self, batch: Batch, busy: bool) -> Result<Option<u64>, StoreError> {
        match (&self.here, &self.store) {
            (Some(here), _) => here.write_here(batch, !busy).map(Some),
            (None, Some(store)) => store.commit(batch).await.map(|()| None),
            (None, None) => Ok(None),
        }
    }

    /// Through which number every batch [`Persistence::write`] wrote is durable.
    pub(super) fn durable(&self) -> Result<u64, StoreError> {
        match &self.here {
            Some(here) => here.durable(),
            None => Ok(u64::MAX),
        }
    }

    /// Changes when [`Persistence::durable`] does; `None` when every write is durable
    /// as it returns.
    pub(super) fn durable_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.here.as_ref().map(|here| here.durable_changes())
    }

    /// Blocks until the batch numbered `written` is durable.
    pub(super) fn wait(&self, written: u64) -> Result<(), StoreError> {
        match &self.here {
            Some(here) => here.wait_here(written),
            None => Ok(()),
        }
    }

    /// What the store must hold for these records.
    pub(super) fn batch(
        &mut self,
        core: &Scheduler,
        idempotency: &IdempotencyIndex,
        records: &[(u64, Record)],
        last_sequence: u64,
    ) -> Batch {
        let mut batch = Batch::default();
        // Workflows whose row changes, in first-seen order, and whether with a snapshot.
        let mut rows: Vec<(WorkflowId, bool)> = Vec::new();
        let mut row_of: HashMap<WorkflowId, usize> = HashMap::new();
        for (_, record) in records {
            let snapshot = match &record.change {
                Change::Created => true,
                Change::Workflow { status, .. } => status.is_terminal(),
                Change::Task {
                    task,
                    compensation: false,
                    status: TaskStatus::Succeeded,
                    ..
                } => core
                    .workflow(record.workflow)
                    .is_some_and(|w| w.spec.tasks[*task as usize].is_checkpoint()),
                _ => false,
            };
            let is_row_change = snapshot || matches!(record.change, Change::Workflow { .. });
            if is_row_change {
                match row_of.get(&record.workflow) {
                    Some(&row) => rows[row].1 |= snapshot,
                    None => {
                        row_of.insert(record.workflow, rows.len());
                        rows.push((record.workflow, snapshot));
                    }
                }
            }
        }
        // Workflows snapshotted by this batch: the snapshot holds every change of theirs
        // up to `last_sequence`, and recovery reads only the changes after a workflow's
        // snapshot, so their changes in this batch are not written at all (a payment
        // created, or ended, in this commit costs one snapshot instead of a row per
        // change as well).
        let mut snapshotted: HashSet<WorkflowId> = HashSet::new();
        for (id, snapshot) in rows {
            let Some(workflow) = core.workflow(id) else {
                continue;
            };
            if self.stored_specs.insert(workflow.spec.hash.clone()) {
                batch.specs.push(spec_write(&workflow.spec));
            }
            if snapshot {
                snapshotted.insert(id);
            }
            batch.workflows.push(WorkflowWrite {
                id,
                name: workflow.spec.name.clone(),
                spec_hash: workflow.spec.hash.clone(),
                status: workflow.status,
                idempotency_key: workflow.idempotency_key.clone(),
                // Only keyed submissions have a fingerprint to keep.
                fingerprint: workflow
                    .idempotency_key
                    .as_ref()
                    .and_then(|key| idempotency.get(key))
                    .map_or(0, |(_, fingerprint)| *fingerprint),
                created_at: workflow.created_at,
                updated_at: workflow.updated_at,
                snapshot: snapshot.then(|| {
                    (
                        crate::store::records::encode_snapshot(workflow),
                        last_sequence,
                    )
                }),
            });
        }
        for (sequence, record) in records {
            if snapshotted.contains(&record.workflow) {
                continue;
            }
            batch.events.push(EventWrite {
                workflow: record.workflow,
                sequence: *sequence,
                at: record.at,
                change: crate::store::records::encode_change(&record.change),
            });
        }
        batch.fence = self.fence(&batch);
        batch
    }

    /// In a cluster: the (partition, epoch) of every workflow the batch writes; a
    /// partition no longer owned goes with epoch 0, which no lease has, so the whole
    /// commit is refused.
    fn fence(&self, batch: &Batch) -> Option<(String, Vec<(u32, u64)>)> {
        let ownership = self.ownership.as_ref()?;
        let mut written: Vec<(u32, u64)> = batch
            .workflows
            .iter()
            .map(|w| w.id)
            .chain(batch.events.iter().map(|e| e.workflow))
            .map(|id| {
                let partition = crate::cluster::partition_of(&id, ownership.partitions);
                (partition, ownership.epoch(partition).unwrap_or(0))
            })
            .collect();
        written.sort_unstable();
        written.dedup();
        Some((ownership.member.clone(), written))
    }
}

fn spec_write(spec: &CompiledSpec) -> SpecWrite {
    SpecWrite {
        hash: spec.hash.clone(),
        name: spec.name.clone(),
        version: spec.version,
        text: spec.text.clone(),
    }
}

impl Actor {
    /// The dispatch holds and the limits kept in the store (limits given at start were
    /// stored before the actor started, so the store's are the ones in force).
    async fn recover_settings(&mut self, store: &dyn Store) -> Result<(), ControlError> {
        use crate::scheduler::limits::{LimitRules, SETTING};
        use crate::scheduler::operations::{HOLDS_SETTING, Holds};
        let now = super::now_ms();
        if let Some(text) = store.setting(HOLDS_SETTING).await? {
            match serde_json::from_str::<Holds>(&text) {
                Ok(holds) => self.core.set_holds(now, holds),
                Err(error) => {
                    return Err(ControlError::Internal(format!(
                        "the stored dispatch holds do not parse: {error}"
                    )));
                }
            }
        }
        if let Some(text) = store.setting(SETTING).await?
            && let Ok(rules) = LimitRules::parse(&text)
        {
            self.core.set_limits(now, rules);
        }
        Ok(())
    }

    /// Restores one stored workflow: `Some(true)` if it is active, `Some(false)` if it
    /// ended (or is another cluster member's), `None` if it cannot be restored (logged).
    fn restore_one(
        &mut self,
        now: u64,
        workflow: crate::store::RecoveredWorkflow,
        specs: &HashMap<String, Arc<CompiledSpec>>,
        out: &mut Vec<crate::scheduler::Command>,
    ) -> Option<bool> {
        let id = workflow.snapshot.id.clone();
        // In a cluster, the workflows of other members' partitions are theirs.
        if let Some(ownership) = &self.persistence.ownership
            && let Ok(parsed) = id.parse::<WorkflowId>()
            && !ownership.owns_workflow(&parsed)
        {
            return Some(false);
        }
        let Some(spec) = specs.get(&workflow.snapshot.spec_hash).cloned() else {
            tracing::error!(workflow = %id, "spec of stored workflow is missing");
            return None;
        };
        let terminal = workflow.snapshot.status.is_terminal() && workflow.changes.is_empty();
        match self
            .core
            .restore(now, workflow.snapshot, spec, &workflow.changes, out)
        {
            Ok(id) if !terminal => {
                if let Some(workflow) = self.core.workflow(id) {
                    self.spans.restored(workflow);
                }
                Some(true)
            }
            Ok(_) => Some(false),
            Err(error) => {
                tracing::error!(workflow = %id, %error, "cannot restore workflow");
                None
            }
        }
    }

    /// Rebuilds the scheduler and the catalog from the store.
    pub(super) async fn recover(&mut self) -> Result<(), ControlError> {
        let Some(store) = self.persistence.store.clone() else {
            return Ok(());
        };
        // Settings changed at run time (here or by another cluster member) before any
        // workflow is back, so nothing is dispatched past a hold.
        self.recover_settings(store.as_ref()).await?;
        // Read a page at a time and restore each while the next is read: a start holds
        // one page of decoded snapshots besides what it restored, never every stored row.
        let (sender, mut pages) = tokio::sync::mpsc::channel(1);
        let reading = store.recover_pages(
            self.config.scheduler.workflows_retained_max,
            crate::store::RECOVERY_PAGE,
            sender,
        );
        let mut specs: HashMap<String, Arc<CompiledSpec>> = HashMap::new();
        // Specs stored before the catalog kept names get theirs now (idempotent), once
        // the reading is done (it holds the store meanwhile).
        let mut names = Batch::default();
        let now = super::now_ms();
        let (mut active, mut failed) = (0, 0);
        let mut out = std::mem::take(&mut self.out);
        let restoring = async {
            while let Some(page) = pages.recv().await {
                match page? {
                    RecoveryPage::Specs(texts) => {
                        for (hash, text) in &texts {
                            match self.catalog.compile_stored(text) {
                                Ok(spec) => {
                                    let spec = Arc::new(spec);
                                    names.specs.push(spec_write(&spec));
                                    self.catalog.recovered(spec.clone());
                                    specs.insert(hash.clone(), spec);
                                }
                                Err(error) => tracing::error!(spec = %hash, %error, "stored spec"),
                            }
                            self.persistence.stored_specs.insert(hash.clone());
                        }
                    }
                    RecoveryPage::Workflows(workflows) => {
                        for workflow in workflows {
                            match self.restore_one(now, workflow, &specs, &mut out) {
                                Some(true) => active += 1,
                                Some(false) => {}
                                None => failed += 1,
                            }
                        }
                    }
                }
            }
            Ok::<(), StoreError>(())
        };
        let (recovered, restored) = tokio::join!(reading, restoring);
        restored?;
        let recovered = recovered?;
        if !names.specs.is_empty() {
            store.commit(names).await?;
        }
        // Every workflow is back: waits count what they see now.
        self.core.recount_waits(&mut out);
        self.out = out;
        for (key, id, fingerprint) in recovered.idempotency {
            self.idempotency.insert(key, (id, fingerprint));
        }
        self.sequence = recovered.last_sequence;
        self.remediation.recover(&self.core);
        tracing::info!(
            active,
            failed,
            sequence = self.sequence,
            "recovered workflows from the store"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{AgentId, Priority};
    use crate::scheduler::{Command, NewWorkflow, SchedulerConfig};
    use crate::spec::{SpecLimits, compile};

    const SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: two\nversion: 1\ntasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    needs: [a]\n";

    fn records(out: Vec<Command>, sequence: &mut u64) -> Vec<(u64, Record)> {
        out.into_iter()
            .filter_map(|command| match command {
                Command::Record(record) => {
                    *sequence += 1;
                    Some((*sequence, record))
                }
                _ => None,
            })
            .collect()
    }

    /// A workflow snapshotted by a batch has no change rows in it (its snapshot holds
    /// them); a workflow changed without a snapshot, or no longer in memory, keeps them.
    #[test]
    fn a_batch_writes_the_changes_its_snapshots_do_not_hold() {
        let spec = Arc::new(compile(SPEC, &SpecLimits::default()).unwrap());
        let mut core = Scheduler::new(SchedulerConfig::default());
        let id = WorkflowId(7);
        let mut out = Vec::new();
        core.submit(
            1_000,
            NewWorkflow {
                id,
                spec,
                input: serde_json::json!({}),
                priority: Priority::Normal,
                labels: Default::default(),
                idempotency_key: None,
                traceparent: String::new(),
                trace_parent_span: String::new(),
                tracestate: String::new(),
            },
            &mut out,
        )
        .unwrap();
        let mut sequence = 0;
        let created = records(out, &mut sequence);
        assert!(created.len() >= 2, "created and its first task ready");
        let mut persistence = Persistence::new(None, None);
        let index = IdempotencyIndex::new();

        let batch = persistence.batch(&core, &index, &created, sequence);
        assert!(batch.events.is_empty(), "held by the creation snapshot");
        assert_eq!(batch.workflows.len(), 1);
        let (_, at) = batch.workflows[0].snapshot.as_ref().expect("a snapshot");
        assert_eq!(
            *at, sequence,
            "the snapshot covers every change of the batch"
        );
        assert_eq!(batch.specs.len(), 1);

        let running = Record {
            workflow: id,
            at: 1_001,
            change: Change::task(
                0,
                false,
                TaskStatus::Running,
                1,
                Some(AgentId("agent".into())),
                None,
            ),
        };
        let elsewhere = Record {
            workflow: WorkflowId(8),
            ..running.clone()
        };
        let later = vec![(sequence + 1, running), (sequence + 2, elsewhere)];
        let batch = persistence.batch(&core, &index, &later, sequence + 2);
        assert!(batch.workflows.is_empty());
        assert!(batch.specs.is_empty(), "the spec is stored once");
        let written: Vec<(WorkflowId, u64)> = batch
            .events
            .iter()
            .map(|e| (e.workflow, e.sequence))
            .collect();
        assert_eq!(
            written,
            vec![(id, sequence + 1), (WorkflowId(8), sequence + 2)]
        );
    }
}
