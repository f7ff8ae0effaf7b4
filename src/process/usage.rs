//! What workers use, read from /proc when asked: the resident memory and CPU time of whole
//! process groups (`--max-memory`, `ctl status`, the metrics), and the kernel's count of
//! processes its OOM killer has killed.

use std::collections::HashMap;
use std::fs;

/// What the processes of one process group use now, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupUsage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// The resident memory and CPU time of each process group in `pgids` (every process whose group
/// it is, summed), in one pass over /proc whatever their number. Groups with no process left are
/// absent.
pub fn group_usage(pgids: &[i32]) -> HashMap<i32, GroupUsage> {
    let wanted: std::collections::HashSet<i32> = pgids.iter().copied().collect();
    let mut totals: HashMap<i32, GroupUsage> = HashMap::new();
    if wanted.is_empty() {
        return totals;
    }
    // SAFETY: sysconf has no memory effects.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
        )
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return totals;
    };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(stat) = crate::process::procfs::stat(pid) else {
            continue;
        };
        if wanted.contains(&stat.pgrp) {
            let total = totals.entry(stat.pgrp).or_default();
            total.rss_bytes += stat.rss_pages * page;
            total.cpu_seconds += stat.cpu_ticks as f64 / ticks;
        }
    }
    totals
}

/// The resident memory of each process group in `pgids`, in bytes (`--max-memory`), in their
/// order. Groups with no process left are absent.
pub fn group_memory(pgids: &[i32]) -> Vec<(i32, u64)> {
    let totals = group_usage(pgids);
    pgids
        .iter()
        .filter_map(|g| totals.get(g).map(|u| (*g, u.rss_bytes)))
        .collect()
}

/// How many processes the kernel's OOM killer has killed since boot (`oom_kill` in
/// /proc/vmstat, Linux 4.13 and later).
pub fn oom_kills() -> Option<u64> {
    let vmstat = fs::read_to_string("/proc/vmstat").ok()?;
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_group_uses_some_memory() {
        // SAFETY: getpgrp has no memory effects.
        let pgrp = unsafe { libc::getpgrp() };
        let found = group_memory(&[pgrp]);
        assert_eq!(found.len(), 1);
        assert!(found[0].1 > 1 << 20, "{found:?}");
        assert!(oom_kills().is_some());
    }
}
