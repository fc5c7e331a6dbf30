//! The member's side of the ownership protocol, as a state machine with no I/O: what it
//! believes it owns and until when (by its own monotonic clock), which leases to renew,
//! take and give back. The lease table decides (`postgres.rs`; the simulation's table in
//! the tests below); this decides what to ask and what to believe of the answers.
//!
//! Safety does not rest on belief: every commit is fenced by the epochs it writes under.
//! Belief keeps a member from *working* on a partition (dispatching its tasks) after its
//! lease may have passed to another: it ends at the time the last successful renewal was
//! *sent*, plus the lease time, minus a margin for clock drift.

use std::collections::BTreeMap;

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a lease lasts after a renewal, by the table's clock.
    pub ttl_ms: u64,
    /// Subtracted from the belief: the most two clocks may drift apart during one lease.
    pub margin_ms: u64,
    /// How often held leases are renewed (a third of the lease time by default).
    pub renew_every_ms: u64,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            ttl_ms: 10_000,
            margin_ms: 1_000,
            renew_every_ms: 3_333,
        }
    }
}

/// A partition's lease as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub partition: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    /// By the table's clock (unix ms).
    pub expires_at_ms: u64,
}

/// A partition this member holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    /// Local monotonic time after which the member no longer believes it owns it.
    pub believe_until: u64,
}

/// What to ask the table for, at one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (partition, epoch) to renew: all held ones, when due.
    pub renew: Vec<(u32, u64)>,
    /// (partition, epoch seen) to take: free or expired, up to the fair share.
    pub take: Vec<(u32, u64)>,
    /// (partition, epoch) to give back: above the fair share.
    pub give_back: Vec<(u32, u64)>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub timing: LeaseTiming,
    held: BTreeMap<u32, Held>,
    last_renewal: Option<u64>,
}

impl Member {
    pub fn new(name: impl Into<String>, timing: LeaseTiming) -> Self {
        Self {
            name: name.into(),
            timing,
            held: BTreeMap::new(),
            last_renewal: None,
        }
    }

    /// The epoch of `partition` if this member believes it owns it at local time `now`.
    pub fn owns(&self, partition: u32, now: u64) -> Option<u64> {
        self.held
            .get(&partition)
            .filter(|held| now < held.believe_until)
            .map(|held| held.epoch)
    }

    /// Every partition believed owned at `now`, with its epoch.
    pub fn owned(&self, now: u64) -> Vec<(u32, u64)> {
        self.held
            .iter()
            .filter(|(_, held)| now < held.believe_until)
            .map(|(partition, held)| (*partition, held.epoch))
            .collect()
    }

    /// Forgets beliefs that ran out (the lease may be another's by now); returns them.
    pub fn expire(&mut self, now: u64) -> Vec<u32> {
        let lapsed: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, held)| now >= held.believe_until)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in &lapsed {
            self.held.remove(partition);
        }
        lapsed
    }

    /// What to ask at local time `now`, given the table as last read (at table time
    /// `table_now`) and how many members are live.
    pub fn plan(&self, now: u64, table: &[Lease], table_now: u64, live_members: usize) -> Plan {
        let mut plan = Plan::default();
        let due = self
            .last_renewal
            .is_none_or(|at| now.saturating_sub(at) >= self.timing.renew_every_ms);
        if due {
            plan.renew = self.owned(now);
        }
        let partitions = table.len();
        let share = partitions.div_ceil(live_members.max(1));
        let mine = self.owned(now).len();
        if mine < share {
            plan.take = table
                .iter()
                .filter(|lease| {
                    !self.held.contains_key(&lease.partition)
                        && (lease.owner.is_none()
                            // Held under this name before a restart: take it back now.
                            || lease.owner.as_deref() == Some(self.name.as_str())
                            || lease.expires_at_ms <= table_now)
                })
                .take(share - mine)
                .map(|lease| (lease.partition, lease.epoch))
                .collect();
        } else if mine > share {
            // The highest partitions go back first: a stable choice, so members agree.
            plan.give_back = self
                .owned(now)
                .into_iter()
                .rev()
                .take(mine - share)
                .collect();
        }
        plan
    }

    /// Renewals sent at local time `sent_at` came back: `renewed` those the table
    /// extended; the others are lost.
    pub fn renewed(&mut self, sent_at: u64, asked: &[(u32, u64)], renewed: &[u32]) {
        self.last_renewal = Some(sent_at);
        let believe_until = self.believe_from(sent_at);
        for (partition, epoch) in asked {
            if renewed.contains(partition) {
                if let Some(held) = self.held.get_mut(partition)
                    && held.epoch == *epoch
                {
                    held.believe_until = believe_until;
                }
            } else {
                self.held.remove(partition);
            }
        }
    }

    /// A take sent at `sent_at` won `partition` at `epoch`.
    pub fn took(&mut self, sent_at: u64, partition: u32, epoch: u64) {
        self.held.insert(
            partition,
            Held {
                epoch,
                believe_until: self.believe_from(sent_at),
            },
        );
    }

    /// Gives `partition` up (given back, or a commit found a newer epoch).
    pub fn drop_partition(&mut self, partition: u32) {
        self.held.remove(&partition);
    }

    /// Belief from a request sent at `sent_at`: the table set the expiry no earlier than
    /// it received the request, so the lease lasts at least `ttl` from the sending.
    fn believe_from(&self, sent_at: u64) -> u64 {
        sent_at + self.timing.ttl_ms.saturating_sub(self.timing.margin_ms)
    }
}

#[cfg(test)]
mod simulation {
    //! The protocol against a simulated table, members with drifting clocks, random
    //! delays, pauses past the lease, crashes and restarts. Checked at every step:
    //! no two members believe they own one partition at the same real time, and no
    //! commit is accepted under an epoch older than the partition's newest.

    use super::*;
    use proptest::prelude::*;

    /// The table, by real time (its clock is the reference).
    struct Table {
        leases: Vec<Lease>,
        ttl_ms: u64,
    }

    impl Table {
        fn take(&mut self, now: u64, who: &str, partition: u32, seen: u64) -> Option<u64> {
            let lease = &mut self.leases[partition as usize];
            let free = lease.owner.is_none()
                || lease.owner.as_deref() == Some(who)
                || lease.expires_at_ms <= now;
            if lease.epoch != seen || !free {
                return None;
            }
            lease.epoch += 1;
            lease.owner = Some(who.to_owned());
            lease.expires_at_ms = now + self.ttl_ms;
            Some(lease.epoch)
        }

        fn renew(&mut self, now: u64, who: &str, partition: u32, epoch: u64) -> bool {
            let lease = &mut self.leases[partition as usize];
            let ok = lease.owner.as_deref() == Some(who)
                && lease.epoch == epoch
                && lease.expires_at_ms > now;
            if ok {
                lease.expires_at_ms = now + self.ttl_ms;
            }
            ok
        }

        fn give_back(&mut self, who: &str, partition: u32, epoch: u64) {
            let lease = &mut self.leases[partition as usize];
            if lease.owner.as_deref() == Some(who) && lease.epoch == epoch {
                lease.expires_at_ms = 0;
            }
        }

        /// The fenced commit: accepted only under the partition's current epoch.
        fn commit(&self, who: &str, partition: u32, epoch: u64) -> bool {
            let lease = &self.leases[partition as usize];
            lease.owner.as_deref() == Some(who) && lease.epoch == epoch
        }
    }

    /// A request in flight: applied at the table at `arrives`, answered at `answers`.
    enum Request {
        Renew(Vec<(u32, u64)>),
        Take(u32, u64),
        GiveBack(u32, u64),
        Commit(u32, u64),
    }

    struct Node {
        member: Member,
        /// Local clock = real * (1 + drift) + offset, in parts per million.
        drift_ppm: i64,
        offset: u64,
        paused_until: u64,
        down_until: u64,
        /// (sent at local, arrives real, answers real, request, answer)
        inflight: Vec<(u64, u64, u64, Request, Option<u64>)>,
    }

    impl Node {
        fn local(&self, real: u64) -> u64 {
            let drift = (real as i128 * i128::from(self.drift_ppm)) / 1_000_000;
            (real as i128 + drift) as u64 + self.offset
        }
    }

    /// What a run saw: commits accepted, and refused (a stale owner's, fenced).
    #[derive(Debug)]
    struct Seen {
        accepted: u32,
        refused: u32,
    }

    /// One run: three members, eight partitions, a minute of simulated time, clocks that
    /// drift up to `drift_ppm` apart from real time, and `margin_ms` of safety.
    fn simulate(seed: u64, drift_ppm: i64, margin_ms: u64) -> Result<Seen, String> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let timing = LeaseTiming {
            ttl_ms: 1_000,
            margin_ms,
            renew_every_ms: 333,
        };
        let partitions = 8u32;
        let mut table = Table {
            leases: (0..partitions)
                .map(|partition| Lease {
                    partition,
                    owner: None,
                    epoch: 0,
                    expires_at_ms: 0,
                })
                .collect(),
            ttl_ms: timing.ttl_ms,
        };
        let mut nodes: Vec<Node> = (0..3)
            .map(|n| Node {
                member: Member::new(format!("cu-{n}"), timing),
                drift_ppm: rng.i64(-drift_ppm..=drift_ppm),
                offset: rng.u64(0..100_000),
                paused_until: 0,
                down_until: 0,
                inflight: Vec::new(),
            })
            .collect();
        let mut seen = Seen {
            accepted: 0,
            refused: 0,
        };
        for real in (0..60_000u64).step_by(5) {
            // Requests reach the table and come back.
            for node in &mut nodes {
                let name = node.member.name.clone();
                let mut still = Vec::new();
                for (sent, arrives, answers, request, mut answer) in
                    std::mem::take(&mut node.inflight)
                {
                    if arrives == real {
                        match &request {
                            Request::Take(p, epoch_seen) => {
                                answer = table.take(real, &name, *p, *epoch_seen);
                            }
                            Request::Renew(asked) => {
                                let mut bits = 0u64;
                                for (i, (p, e)) in asked.iter().enumerate() {
                                    if table.renew(real, &name, *p, *e) {
                                        bits |= 1 << i;
                                    }
                                }
                                answer = Some(bits);
                            }
                            Request::GiveBack(p, e) => table.give_back(&name, *p, *e),
                            Request::Commit(p, e) => {
                                if table.commit(&name, *p, *e) {
                                    seen.accepted += 1;
                                } else {
                                    seen.refused += 1;
                                }
                            }
                        }
                    }
                    if answers == real {
                        // A crashed or paused member reads its answers when it is back.
                        if node.down_until > real {
                            continue;
                        }
                        if node.paused_until > real {
                            still.push((sent, arrives, real + 5, request, answer));
                            continue;
                        }
                        match request {
                            Request::Take(p, _) => {
                                if let Some(epoch) = answer {
                                    node.member.took(sent, p, epoch);
                                }
                            }
                            Request::Renew(asked) => {
                                let bits = answer.unwrap_or(0);
                                let renewed: Vec<u32> = asked
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, _)| bits & (1 << i) != 0)
                                    .map(|(_, (p, _))| *p)
                                    .collect();
                                node.member.renewed(sent, &asked, &renewed);
                            }
                            Request::GiveBack(..) | Request::Commit(..) => {}
                        }
                    } else {
                        still.push((sent, arrives, answers, request, answer));
                    }
                }
                node.inflight.append(&mut still);
            }
            // Exclusion by belief, at this real instant.
            for p in 0..partitions {
                let believers: Vec<&str> = nodes
                    .iter()
                    .filter(|node| node.down_until <= real)
                    .filter(|node| node.member.owns(p, node.local(real)).is_some())
                    .map(|node| node.member.name.as_str())
                    .collect();
                if believers.len() > 1 {
                    return Err(format!(
                        "seed {seed}: at {real} ms {believers:?} all own {p}"
                    ));
                }
            }
            // Each live member acts now and then; some pause or crash.
            for node in &mut nodes {
                if node.down_until > real || node.paused_until > real {
                    continue;
                }
                match rng.u32(0..10_000) {
                    0..=9 => {
                        // Paused past the lease: it keeps its beliefs, its clock runs on.
                        node.paused_until = real + rng.u64(500..3_000);
                        continue;
                    }
                    10..=14 => {
                        // Crashed: it forgets everything and comes back later.
                        node.down_until = real + rng.u64(200..3_000);
                        node.member = Member::new(node.member.name.clone(), timing);
                        node.inflight.clear();
                        continue;
                    }
                    _ => {}
                }
                if real % 25 != 0 {
                    continue;
                }
                let local = node.local(real);
                node.member.expire(local);
                let live = 3;
                let plan = node.member.plan(local, &table.leases, real, live);
                let mut send = |request: Request, rng: &mut fastrand::Rng| {
                    let arrives = real + 5 * rng.u64(1..20);
                    let answers = arrives + 5 * rng.u64(1..20);
                    node.inflight.push((local, arrives, answers, request, None));
                };
                if !plan.renew.is_empty() {
                    send(Request::Renew(plan.renew), &mut rng);
                }
                for (p, epoch_seen) in plan.take {
                    send(Request::Take(p, epoch_seen), &mut rng);
                }
                for (p, e) in plan.give_back {
                    node.member.drop_partition(p);
                    send(Request::GiveBack(p, e), &mut rng);
                }
                // Work: a commit for each partition it believes it owns.
                for (p, e) in node.member.owned(local) {
                    send(Request::Commit(p, e), &mut rng);
                }
            }
        }
        if seen.accepted == 0 {
            return Err(format!("seed {seed}: nothing was ever committed"));
        }
        Ok(seen)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Clocks drift up to 5 % (50 ms over a 1 s lease) against a 100 ms margin.
        #[test]
        fn two_members_never_own_one_partition(seed in any::<u64>()) {
            simulate(seed, 50_000, 100).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn stale_owners_commit_and_are_fenced() {
        // Over many runs, members paused past their lease come back and try to commit;
        // the fence refuses them while the new owners' commits go through.
        let (mut accepted, mut refused) = (0, 0);
        for seed in 0..16 {
            let seen = simulate(seed, 50_000, 100).unwrap();
            accepted += seen.accepted;
            refused += seen.refused;
        }
        assert!(
            accepted > 1_000 && refused > 0,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn the_check_catches_clocks_that_drift_past_the_margin() {
        // 20 % drift and no margin: a slow clock believes past the lease and another
        // member takes the partition meanwhile. The exclusion check must see it.
        let caught = (0..32)
            .filter(|seed| simulate(*seed, 200_000, 0).is_err())
            .count();
        assert!(caught > 0, "no run caught two owners");
    }
}
