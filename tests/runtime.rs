//! The control unit's async runtime: how many worker threads it starts (docs/benchmarks.md,
//! "Issue 17, seventh step"), read from the running process's threads.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

/// Threads of the process named `name` (Linux: /proc/PID/task/*/comm).
fn threads_named(part: &Part, name: &str) -> usize {
    let tasks = format!("/proc/{}/task", part.child.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// With the embedded store the runtime leaves a core to the store's commit-log and SQLite
/// threads; `--worker-threads` overrides that; other stores take one thread per core.
#[test]
fn the_control_unit_sizes_its_runtime_by_store_and_flag() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = TempDir::new("runtime");
    let embedded = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("embedded"),
    ]);
    assert_eq!(
        threads_named(&embedded, "tokio-rt-worker"),
        cores.saturating_sub(1).max(1),
        "embedded store: one fewer than the {cores} cores"
    );
    assert_eq!(threads_named(&embedded, "paygrid-log"), 1);
    drop(embedded);

    let flagged = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("flagged"),
        "--worker-threads",
        "3",
    ]);
    assert_eq!(threads_named(&flagged, "tokio-rt-worker"), 3);
    drop(flagged);

    let memory = Part::start(&["control", "--listen", "127.0.0.1:0", "--store", "memory"]);
    assert_eq!(threads_named(&memory, "tokio-rt-worker"), cores);
}
