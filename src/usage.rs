//! What workers use, read from /proc when asked: the resident memory of whole process groups
//! (`--max-memory`), and the kernel's count of processes its OOM killer has killed.

use std::collections::HashMap;
use std::fs;

/// The resident memory of each process group in `pgids`, in bytes (every process whose group it
/// is, summed). Groups with no process left are absent.
pub fn group_memory(pgids: &[i32]) -> Vec<(i32, u64)> {
    let wanted: std::collections::HashSet<i32> = pgids.iter().copied().collect();
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let mut totals: HashMap<i32, u64> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(stat) = crate::procfs::stat(pid) else {
            continue;
        };
        if wanted.contains(&stat.pgrp) {
            *totals.entry(stat.pgrp).or_insert(0) += stat.rss_pages * page;
        }
    }
    pgids
        .iter()
        .filter_map(|g| totals.get(g).map(|&bytes| (*g, bytes)))
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
