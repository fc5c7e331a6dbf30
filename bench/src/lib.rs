//! Paygrid's benchmarks, kept out of the product: no control unit serves or lists their
//! protocol. The `paygrid` binary runs them as `paygrid bench` (with `paygrid bench-echo`
//! as the ceiling's echo process) and `paygrid store-bench`.
//!
//! - [`load`]: the load generator against real processes, next to the raw ceiling.
//! - [`allocation`]: limits, fairness and overflow scenarios (`burst`, `cost`).
//! - [`follow`]: following workflows to their ends (one `Follow` stream, or `Watch`es).
//! - [`hold`]: many workflows waiting: memory, accept time, recovery after a crash.
//! - [`ceiling`]: the raw gRPC stream ceiling (echo server and client).
//! - [`store`]: append throughput of a store.
//! - [`report`]: what a load run measured, and how it is printed.

pub mod allocation;
pub mod ceiling;
pub mod follow;
pub mod hold;
pub mod load;
pub mod machine;
pub mod report;
pub mod store;

/// The benchmark's own protocol (`paygrid.bench.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("paygrid.bench.v1");
}
