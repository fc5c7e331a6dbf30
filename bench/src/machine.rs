//! What the machine and the benchmark's processes report about themselves, from `/proc`:
//! a process's CPU time and memory, and the CPU time the hypervisor took.

/// CPU seconds (user + system) of a process.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// The machine's CPU time so far, in ticks: (stolen by the hypervisor, all).
pub(crate) fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    (ticks.get(7).copied().unwrap_or(0), ticks.iter().sum())
}

/// The share of the machine's CPU time the hypervisor took since `before` (percent): on
/// a shared virtual machine, figures taken while it is high are not comparable.
pub(crate) fn steal_percent(before: (u64, u64)) -> f64 {
    let after = machine_ticks();
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0) as f64 / total as f64
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's ticks are read from `/proc/stat` (steal is one of them), and the
    /// stolen share is a percentage.
    #[test]
    fn the_stolen_share_is_read_from_proc_stat() {
        let (steal, total) = machine_ticks();
        assert!(total > 0, "no CPU ticks read from /proc/stat");
        assert!(steal <= total);
        let share = steal_percent((steal, total));
        assert!((0.0..=100.0).contains(&share), "{share}");
    }
}
