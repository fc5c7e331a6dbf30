//! Several control units on one PostgreSQL (docs/cluster.md): workflows spread over a
//! fixed number of partitions, each owned by one control unit at a time through a lease
//! with an epoch, every commit fenced by the epochs it writes under.
//!
//! - [`lease`]: the member's side of the protocol as a state machine (what it believes it
//!   owns, when to renew, what to take or give back), shared by the real lease table and
//!   the simulation that checks it.
//! - `postgres`: the lease and member tables, and their statements.
//! - `membership`: the member's background task and what it owns now.
//! - [`forward`]: calls about another member's workflows, sent to their owner.

pub mod forward;
pub mod lease;
pub mod membership;
pub mod postgres;

/// Partitions of a new cluster, unless the first member says otherwise.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// FNV-1a, 64 bits: a hash fixed by its definition, the same in every release and every
/// member, so a workflow's partition never moves.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The partition of a workflow id (its 16 bytes).
pub fn partition_of(id: &crate::model::WorkflowId, partitions: u32) -> u32 {
    (fnv1a(&id.0.to_be_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The partition of an idempotency key: a keyed workflow gets an id in it, so one owner
/// checks the key.
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    (fnv1a(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_fixed_by_definition_and_spread() {
        // FNV-1a test vectors: the function must never change.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0u32; 8];
        for n in 0..8_000u32 {
            counts[partition_of_key(&format!("order-{n}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (800..1_200).contains(c)),
            "{counts:?}"
        );
    }
}
