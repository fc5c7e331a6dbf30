//! The control unit's threads, read from the running process: how many async workers
//! it starts (`--worker-threads`, docs/benchmarks.md "Issue 17, seventh step") and the
//! commit log thread's priority (`--commit-log-nice`, "Issue 17, eighth step").

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

/// The `stat` line of each of the process's threads named `name` (Linux:
/// /proc/PID/task/*/comm and stat).
fn threads_stat(part: &Part, name: &str) -> Vec<String> {
    let tasks = format!("/proc/{}/task", part.child.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            (comm.trim_end() == name).then(|| std::fs::read_to_string(path.join("stat")).ok())?
        })
        .collect()
}

/// How many of the process's threads are named `name`.
fn threads_named(part: &Part, name: &str) -> usize {
    threads_stat(part, name).len()
}

/// Nice values of the process's threads named `name` (field 19 of their stat).
fn nice_of(part: &Part, name: &str) -> Vec<i32> {
    threads_stat(part, name)
        .iter()
        .filter_map(|stat| {
            // Fields after the command's closing parenthesis start at field 3.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().nth(16)?.parse().ok()
        })
        .collect()
}

/// `read()` once it gives `wanted`, or what it gives after 30 s: a thread the part
/// started is not scheduled at once on a busy machine (polled, then asserted).
fn settled<T: PartialEq>(read: impl Fn() -> T, wanted: T) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = read();
        if now == wanted || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One worker per core unless `--worker-threads` says otherwise; the actor's thread and
/// the embedded store's commit-log thread run beside them, not as workers.
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
    // A thread the store started may not have run (and named itself) yet.
    assert_eq!(settled(|| threads_named(&default, "paygrid-log"), 1), 1);
    assert_eq!(settled(|| threads_named(&default, "paygrid-actor"), 1), 1);
    // The log's syncers: a batch written while one syncs is synced by the other.
    for syncer in ["paygrid-sync-0", "paygrid-sync-1"] {
        assert_eq!(
            settled(|| threads_named(&default, syncer), 1),
            1,
            "{syncer}"
        );
    }
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

/// The commit log's threads (its thread and its syncers) run at `--commit-log-nice` when
/// the process may lower a nice value (and at the process's own otherwise); a value out
/// of range is refused.
#[test]
fn the_commit_log_thread_runs_at_the_priority_its_flag_asks_for() {
    // Whether a process of this user may lower a nice value: tried on a scratch thread
    // of this one (the control unit runs as the same user).
    let permitted =
        std::thread::spawn(|| paygrid_control_unit::priority::set_current_thread_nice(-4).is_ok())
            .join()
            .unwrap();
    let dir = TempDir::new("nice");
    let part = Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("flagged"),
        "--commit-log-nice",
        "-4",
    ]);
    // The thread sets its priority as the first thing it does, which may come after
    // the part answers (polled).
    let own = paygrid_control_unit::priority::current_thread_nice().unwrap();
    let expected = if permitted { -4 } else { own };
    let log = settled(|| nice_of(&part, "paygrid-log"), vec![expected]);
    assert_eq!(log, vec![expected]);
    // And the syncers, whose wake-ups every commit waits for.
    for syncer in ["paygrid-sync-0", "paygrid-sync-1"] {
        let nice = settled(|| nice_of(&part, syncer), vec![expected]);
        assert_eq!(nice, vec![expected], "{syncer}");
    }
    // Only that thread: the workers keep the process's priority.
    let workers = nice_of(&part, "tokio-rt-worker");
    assert!(
        !workers.is_empty() && workers.iter().all(|nice| *nice == own),
        "{workers:?}"
    );
    drop(part);

    let refused = paygrid()
        .args([
            "control",
            "--listen",
            "127.0.0.1:0",
            "--commit-log-nice",
            "40",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--commit-log-nice"), "{stderr}");
    assert!(stderr.contains("40"), "{stderr}");
}
