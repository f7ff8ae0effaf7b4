//! The default number of workers: the CPUs this process may run on (its affinity mask), bounded by
//! the cgroup v2 `cpu.max` quota of its cgroup and every ancestor, rounded up. A container limited
//! to `--cpus 1.5` gets 2 workers; one pinned with `taskset -c 0` gets 1.

use std::fs;
use std::path::{Path, PathBuf};

/// The number of workers to run when `-n` is not given; at least 1.
pub fn available() -> u32 {
    let affinity = affinity_cpus()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let quota = cgroup_v2_dir().and_then(|dir| quota_cpus(&dir));
    quota.map_or(affinity, |q| q.min(affinity)).max(1)
}

fn affinity_cpus() -> Option<u32> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let count = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .count();
    (count > 0).then_some(count as u32)
}

/// This process's cgroup v2 directory: the `0::` line of /proc/self/cgroup under the cgroup2 mount.
fn cgroup_v2_dir() -> Option<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let relative = cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount_point) = cgroup2_mount(&mountinfo)?;
    let relative = relative.strip_prefix(root.as_str()).unwrap_or(relative);
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

/// The (root, mount point) of the first cgroup2 mount in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (fields, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = fields.split_whitespace().skip(3);
        Some((fields.next()?.to_string(), fields.next()?.to_string()))
    })
}

/// The smallest `cpu.max` quota from `dir` up to the mount's root, in whole CPUs rounded up.
fn quota_cpus(dir: &Path) -> Option<u32> {
    dir.ancestors()
        .filter_map(|d| fs::read_to_string(d.join("cpu.max")).ok())
        .filter_map(|text| parse_cpu_max(&text))
        .min()
}

/// `"150000 100000"` → 2; `"max 100000"` → no limit.
fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok().filter(|&p| p > 0)?;
    Some(quota.div_ceil(period).max(1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_rounded_up() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("100000 100000"), Some(1));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("max 100000"), None);
    }

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_hosts() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/".to_string(), "/sys/fs/cgroup/unified".to_string()))
        );
    }

    #[test]
    fn quota_is_the_smallest_among_ancestors() {
        let root = std::env::temp_dir().join(format!("recluster-cpus-{}", std::process::id()));
        let leaf = root.join("a/b");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(root.join("a/cpu.max"), "100000 100000").unwrap();
        fs::write(leaf.join("cpu.max"), "max 100000").unwrap();
        assert_eq!(quota_cpus(&leaf), Some(1));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn there_is_always_at_least_one_worker() {
        assert!(available() >= 1);
    }
}
