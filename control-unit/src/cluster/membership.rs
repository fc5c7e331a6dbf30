//! A control unit as a cluster member: a background task that heartbeats, reads the lease
//! table, and takes, renews and gives back partitions as [`super::lease::Member`] plans,
//! publishing what the member owns ([`Ownership`]). When the owned set changes, the
//! runtime restarts its actor from the store (the same recovery as after a crash), and
//! every commit is fenced by the epochs of the partitions it writes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::lease::{LeaseTiming, Member};
use super::postgres::PgLeases;

/// What this member owns now: partition → epoch; and a generation that changes with it.
#[derive(Debug)]
pub struct Ownership {
    pub member: String,
    pub partitions: u32,
    owned: RwLock<BTreeMap<u32, u64>>,
    /// Every partition's owner (member name) and every live member's gRPC address, as of
    /// the last lease round: where to send a call about another member's workflow.
    directory: RwLock<(BTreeMap<u32, String>, BTreeMap<String, String>)>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Ownership {
    pub fn new(member: impl Into<String>, partitions: u32) -> Arc<Self> {
        Arc::new(Self {
            member: member.into(),
            partitions: partitions.max(1),
            owned: RwLock::new(BTreeMap::new()),
            directory: RwLock::new((BTreeMap::new(), BTreeMap::new())),
            generation: tokio::sync::watch::channel(0).0,
        })
    }

    /// The epoch of `partition`, if owned.
    pub fn epoch(&self, partition: u32) -> Option<u64> {
        self.owned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .copied()
    }

    pub fn owned(&self) -> BTreeMap<u32, u64> {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn owns_workflow(&self, id: &crate::model::WorkflowId) -> bool {
        self.epoch(super::partition_of(id, self.partitions))
            .is_some()
    }

    /// The live members as of the last lease round: name, gRPC address, partitions held.
    pub fn members(&self) -> Vec<(String, String, u32)> {
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        directory
            .1
            .iter()
            .map(|(name, url)| {
                let held = directory.0.values().filter(|owner| *owner == name).count();
                (name.clone(), url.clone(), held as u32)
            })
            .collect()
    }

    /// Where a call about workflow `id` is served.
    pub fn place_of(&self, id: &crate::model::WorkflowId) -> Place {
        let partition = super::partition_of(id, self.partitions);
        self.place(partition, || {
            format!("workflow {id} is in partition {partition}")
        })
    }

    /// Where a submission with idempotency key `key` is served (one member checks each
    /// key: the owner of its partition).
    pub fn place_of_key(&self, key: &str) -> Place {
        let partition = super::partition_of_key(key, self.partitions);
        self.place(partition, || {
            format!("this idempotency key belongs to partition {partition}")
        })
    }

    fn place(&self, partition: u32, what: impl Fn() -> String) -> Place {
        if self.epoch(partition).is_some() {
            return Place::Here;
        }
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        match directory.0.get(&partition) {
            Some(owner) if owner != &self.member => match directory.1.get(owner) {
                Some(url) => Place::Member {
                    name: owner.clone(),
                    url: url.clone(),
                },
                None => Place::Nobody(format!(
                    "{}, owned by control unit {owner}, whose address is unknown: retry shortly",
                    what()
                )),
            },
            _ => Place::Nobody(format!(
                "{}, which no control unit owns right now (partitions are moving): retry shortly",
                what()
            )),
        }
    }

    fn record_directory(
        &self,
        table: &super::postgres::LeaseTable,
        members: &[super::postgres::MemberRow],
    ) {
        let owners = table
            .leases
            .iter()
            .filter(|l| l.expires_at_ms > table.now_ms)
            .filter_map(|l| l.owner.clone().map(|owner| (l.partition, owner)))
            .collect();
        let addresses = members
            .iter()
            .map(|m| (m.name.clone(), m.grpc_url.clone()))
            .collect();
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = (owners, addresses);
    }

    /// A new workflow id in a partition this member owns: the idempotency key's partition
    /// when there is a key (one owner checks each key), else any owned one.
    pub fn new_id(
        &self,
        now_ms: u64,
        key: Option<&str>,
    ) -> Result<crate::model::WorkflowId, String> {
        let owned = self.owned();
        let target = match key {
            Some(key) => {
                let partition = super::partition_of_key(key, self.partitions);
                if !owned.contains_key(&partition) {
                    return Err(format!(
                        "this idempotency key belongs to partition {partition}, which control unit {} does not own: submit to its owner (paygrid cluster shows it)",
                        self.member
                    ));
                }
                partition
            }
            None => {
                let partitions: Vec<u32> = owned.keys().copied().collect();
                if partitions.is_empty() {
                    return Err(format!(
                        "control unit {} owns no partitions yet: retry, or submit to another member",
                        self.member
                    ));
                }
                partitions[fastrand::usize(..partitions.len())]
            }
        };
        // One id in `partitions` lands in the target on average.
        for _ in 0..(self.partitions as usize * 1_000) {
            let id = crate::model::WorkflowId::generate(now_ms);
            if super::partition_of(&id, self.partitions) == target {
                return Ok(id);
            }
        }
        Err(format!("no workflow id found in partition {target}"))
    }

    /// Changes when the owned set does.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn publish(&self, owned: BTreeMap<u32, u64>) -> bool {
        let mut current = self.owned.write().unwrap_or_else(|e| e.into_inner());
        if *current == owned {
            return false;
        }
        *current = owned;
        drop(current);
        self.generation.send_modify(|g| *g += 1);
        true
    }
}

/// Where a call about a workflow is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This member owns the workflow's partition.
    Here,
    /// Another member does, at `url`.
    Member { name: String, url: String },
    /// Nobody does as far as this member knows (a takeover under way): why.
    Nobody(String),
}

/// Runs the member until `stop`: every renewal period, heartbeat, read, plan, act.
pub async fn run(
    leases: PgLeases,
    ownership: Arc<Ownership>,
    timing: LeaseTiming,
    grpc_url: String,
    metrics: Arc<paygrid_telemetry::metrics::Registry>,
    stop: tokio_util::sync::CancellationToken,
) {
    let started = Instant::now();
    let local = || started.elapsed().as_millis() as u64;
    let mut member = Member::new(ownership.member.clone(), timing);
    let mut every = tokio::time::interval(Duration::from_millis(timing.renew_every_ms.max(50)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(error) = step(&leases, &ownership, &mut member, &grpc_url, &local).await {
            tracing::warn!(%error, "cluster lease round failed; beliefs lapse at their deadline");
        }
        member.expire(local());
        let owned: BTreeMap<u32, u64> = member.owned(local()).into_iter().collect();
        let before = ownership.owned();
        let gained = owned.keys().filter(|p| !before.contains_key(p)).count();
        let lost = before.keys().filter(|p| !owned.contains_key(p)).count();
        if ownership.publish(owned.clone()) {
            tracing::info!(member = %ownership.member, owned = owned.len(), gained, lost, "partitions changed");
            metrics.count(
                &crate::metric_names::PARTITION_CHANGES,
                &[("change", "gained")],
                gained as u64,
            );
            metrics.count(
                &crate::metric_names::PARTITION_CHANGES,
                &[("change", "lost")],
                lost as u64,
            );
        }
        metrics.gauge(
            &crate::metric_names::PARTITIONS_OWNED,
            &[],
            owned.len() as i64,
        );
    }
}

async fn step(
    leases: &PgLeases,
    ownership: &Ownership,
    member: &mut Member,
    grpc_url: &str,
    local: &impl Fn() -> u64,
) -> Result<(), crate::store::StoreError> {
    leases.heartbeat(grpc_url, "").await?;
    let members = leases.live_members().await?;
    let live = members.len().max(1);
    let table = leases.read().await?;
    ownership.record_directory(&table, &members);
    let now = local();
    member.expire(now);
    let plan = member.plan(now, &table.leases, table.now_ms, live);
    if !plan.renew.is_empty() {
        let sent = local();
        let renewed = leases.renew(&plan.renew).await?;
        member.renewed(sent, &plan.renew, &renewed);
    }
    for (partition, epoch) in plan.give_back {
        member.drop_partition(partition);
        leases.give_back(partition, epoch).await?;
    }
    for (partition, seen) in plan.take {
        let sent = local();
        if let Some(epoch) = leases.take(partition, seen).await? {
            member.took(sent, partition, epoch);
        }
    }
    Ok(())
}
