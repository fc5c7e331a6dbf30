//! Thread priority: a thread that computes little but that others wait on (the commit
//! log's) asks the kernel to run it ahead of the busy threads it shares a core with, so
//! that its wake-up is not queued behind their time slices (docs/durability.md, "The
//! actor's thread, and the commit log's priority").

use std::io;

/// The commit log thread's nice value unless configured otherwise (0 leaves it as the
/// process started it). While every commit passed through that thread, this lowered the
/// half-load hop's p99 by about a fifth on 2 cores (docs/benchmarks.md, "Issue 17,
/// eighth step"); the actor now commits on its own thread, and reads still wait for it.
pub const COMMIT_LOG_NICE: i32 = -10;

/// Sets the calling thread's nice value (−20 … 19: lower runs first). Below the
/// process's own value this needs `CAP_SYS_NICE` or a nice limit (`RLIMIT_NICE`,
/// systemd's `LimitNICE=`); without either the error is `PermissionDenied`.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to the thread: PRIO_PROCESS with a thread id.
        let thread = rustix::thread::gettid();
        rustix::process::setpriority_process(Some(thread), nice).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "per-thread priority is set on Linux only",
        ))
    }
}

/// The calling thread's nice value.
pub fn current_thread_nice() -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        rustix::process::getpriority_process(Some(thread)).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "per-thread priority is read on Linux only",
        ))
    }
}

/// Asks for `nice` on the calling thread (`what` names it in the log): raised, or left
/// as it was with the reason at `info` (an unprivileged process keeps running, only
/// without the head start). Returns the thread's nice value afterwards.
pub fn ask_for_thread_nice(what: &str, nice: i32) -> i32 {
    let before = current_thread_nice().unwrap_or(0);
    if nice == before {
        return before;
    }
    match set_current_thread_nice(nice) {
        Ok(()) => {
            tracing::debug!(thread = what, nice, "thread priority set");
            nice
        }
        Err(error) => {
            tracing::info!(
                thread = what,
                nice,
                %error,
                "thread priority left as it was: a nice value below the process's needs CAP_SYS_NICE or LimitNICE= (docs/durability.md)"
            );
            before
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sets_and_reads_its_own_nice_value_without_touching_the_others() {
        let main_before = current_thread_nice().expect("read");
        let lowered = std::thread::spawn(|| {
            // Raising the value (lower priority) needs no privilege.
            let before = current_thread_nice().expect("read");
            let wanted = (before + 3).min(19);
            set_current_thread_nice(wanted).expect("raise the nice value");
            (
                ask_for_thread_nice("test", wanted),
                current_thread_nice().expect("read"),
            )
        })
        .join()
        .expect("thread");
        assert_eq!(lowered.0, lowered.1);
        assert_eq!(current_thread_nice().expect("read"), main_before);
    }
}
