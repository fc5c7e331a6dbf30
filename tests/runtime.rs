//! The control unit's async runtime: how many worker threads it starts
//! (`--worker-threads`, docs/benchmarks.md "Issue 17, seventh step"), read from the
//! running process's threads.

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

/// One worker per core unless `--worker-threads` says otherwise; the embedded store's
/// commit-log thread runs beside them.
#[test]
fn the_control_unit_sizes_its_runtime_by_its_flag() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = TempDir::new("runtime");
    let default = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("default"),
    ]);
    assert_eq!(threads_named(&default, "tokio-rt-worker"), cores);
    assert_eq!(threads_named(&default, "paygrid-log"), 1);
    drop(default);

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
}
