//! The CPU budget that bounds the default number of workers: the CPU quota of recluster's cgroup
//! and every ancestor up to the cgroup mount, rounded up — cgroup v2's `cpu.max`, or cgroup v1's
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us` (hybrid hosts and older container runtimes) — and the
//! cgroup's cpuset, for `--plan`. A container limited to `--cpus 1.5` gets 2 workers. Every file
//! read is kept with its value, so `--plan` can show how the figure was derived.

use std::fs;
use std::path::{Path, PathBuf};

/// The tightest CPU quota, in whole CPUs, and every file read to find it, with its value.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Budget {
    pub quota: Option<u32>,
    pub sources: Vec<(PathBuf, String)>,
}

/// The CPU quota that applies to this process, from cgroup v2 and v1 alike.
pub fn budget() -> Budget {
    let mut budget = Budget::default();
    let (Ok(cgroups), Ok(mountinfo)) = (
        fs::read_to_string("/proc/self/cgroup"),
        fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return budget;
    };
    let mounts = parse_mounts(&mountinfo);
    if let Some((dir, root)) = cgroup_dir(&cgroups, &mounts, Hierarchy::V2) {
        let found = smallest(
            &dir,
            &root,
            &["cpu.max"],
            parse_cpu_max,
            &mut budget.sources,
        );
        budget.quota = found;
    }
    if let Some((dir, root)) = cgroup_dir(&cgroups, &mounts, Hierarchy::V1Cpu) {
        let found = smallest(
            &dir,
            &root,
            &["cpu.cfs_quota_us", "cpu.cfs_period_us"],
            parse_cfs_quota,
            &mut budget.sources,
        );
        budget.quota = [budget.quota, found].into_iter().flatten().min();
    }
    budget
}

/// The effective cpuset of this process's cgroup (v2 `cpuset.cpus.effective`, or v1
/// `cpuset.effective_cpus`), as read.
pub fn cgroup_cpuset() -> Option<(PathBuf, String)> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = parse_mounts(&fs::read_to_string("/proc/self/mountinfo").ok()?);
    [
        (Hierarchy::V2, "cpuset.cpus.effective"),
        (Hierarchy::V1Cpuset, "cpuset.effective_cpus"),
    ]
    .into_iter()
    .find_map(|(hierarchy, file)| {
        let (dir, _) = cgroup_dir(&cgroups, &mounts, hierarchy)?;
        let path = dir.join(file);
        let text = fs::read_to_string(&path).ok()?;
        Some((path, text.trim().to_string()))
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Hierarchy {
    /// The unified hierarchy (`0::/path`, file system `cgroup2`).
    V2,
    /// The v1 hierarchy with the `cpu` controller (`N:cpu,cpuacct:/path`).
    V1Cpu,
    /// The v1 hierarchy with the `cpuset` controller.
    V1Cpuset,
}

/// One cgroup mount: its hierarchy, the root of it that is mounted, and where.
#[derive(Debug, PartialEq)]
struct Mount {
    hierarchy: Hierarchy,
    root: String,
    mount_point: String,
}

/// The cgroup mounts of a mountinfo text (v2, and v1 mounts that carry the `cpu` controller).
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, after) = line.split_once(" - ")?;
            let mut after = after.split_whitespace();
            let fs_type = after.next()?;
            let options = after.nth(1).unwrap_or("");
            let hierarchy = match fs_type {
                "cgroup2" => Hierarchy::V2,
                "cgroup" if options.split(',').any(|o| o == "cpu") => Hierarchy::V1Cpu,
                "cgroup" if options.split(',').any(|o| o == "cpuset") => Hierarchy::V1Cpuset,
                _ => return None,
            };
            let mut fields = fields.split_whitespace().skip(3);
            Some(Mount {
                hierarchy,
                root: unescape(fields.next()?),
                mount_point: unescape(fields.next()?),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup directory in `hierarchy`, and the mount point it may not go above.
fn cgroup_dir(cgroups: &str, mounts: &[Mount], hierarchy: Hierarchy) -> Option<(PathBuf, PathBuf)> {
    let relative = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match hierarchy {
            Hierarchy::V2 => id == "0" && controllers.is_empty(),
            Hierarchy::V1Cpu => controllers.split(',').any(|c| c == "cpu"),
            Hierarchy::V1Cpuset => controllers.split(',').any(|c| c == "cpuset"),
        };
        wanted.then_some(path)
    })?;
    let mount = mounts.iter().find(|m| m.hierarchy == hierarchy)?;
    // Inside a cgroup namespace the path is relative to the mounted root already.
    let relative = relative
        .strip_prefix(mount.root.as_str())
        .filter(|_| mount.root != "/")
        .unwrap_or(relative);
    let mount_point = PathBuf::from(&mount.mount_point);
    Some((
        mount_point.join(relative.trim_start_matches('/')),
        mount_point,
    ))
}

/// The smallest quota `parse` finds in `files` from `dir` up to `root` (never above the mount);
/// each file read goes into `sources` with its value.
fn smallest(
    dir: &Path,
    root: &Path,
    files: &[&str],
    parse: fn(&[String]) -> Option<u32>,
    sources: &mut Vec<(PathBuf, String)>,
) -> Option<u32> {
    let mut found = None;
    for d in dir.ancestors().take_while(|d| d.starts_with(root)) {
        let mut texts = Vec::new();
        for file in files {
            let path = d.join(file);
            let Ok(text) = fs::read_to_string(&path) else {
                break;
            };
            sources.push((path, text.trim().to_string()));
            texts.push(text);
        }
        if texts.len() == files.len()
            && let Some(cpus) = parse(&texts)
        {
            found = Some(found.map_or(cpus, |f: u32| f.min(cpus)));
        }
    }
    found
}

/// cgroup v2: `cpu.max` is `"150000 100000"` (2 CPUs, rounded up) or `"max 100000"` (none).
fn parse_cpu_max(texts: &[String]) -> Option<u32> {
    let mut parts = texts.first()?.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    cpus_of(quota, period)
}

/// cgroup v1: `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.
fn parse_cfs_quota(texts: &[String]) -> Option<u32> {
    let quota: i64 = texts.first()?.trim().parse().ok()?;
    let period: i64 = texts.get(1)?.trim().parse().ok()?;
    cpus_of(u64::try_from(quota).ok()?, u64::try_from(period).ok()?) // -1 fails: no quota
}

/// Whole CPUs, rounded up, at least 1; an absurd quota saturates instead of wrapping.
fn cpus_of(quota: u64, period: u64) -> Option<u32> {
    if period == 0 {
        return None;
    }
    Some(
        u32::try_from(quota.div_ceil(period))
            .unwrap_or(u32::MAX)
            .max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("recluster-cpus-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn quotas_are_rounded_up_and_saturate() {
        assert_eq!(cpus_of(150_000, 100_000), Some(2));
        assert_eq!(cpus_of(100_000, 100_000), Some(1));
        assert_eq!(cpus_of(50_000, 100_000), Some(1));
        assert_eq!(cpus_of(u64::MAX, 1), Some(u32::MAX));
        assert_eq!(cpus_of(1, 0), None);
    }

    #[test]
    fn finds_v2_and_v1_cpu_mounts_and_decodes_escapes() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                         33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
        let mounts = parse_mounts(mountinfo);
        assert_eq!(
            mounts,
            [
                Mount {
                    hierarchy: Hierarchy::V1Cpu,
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into()
                },
                Mount {
                    hierarchy: Hierarchy::V2,
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/uni fied".into()
                },
            ]
        );
        let cgroups = "4:cpu,cpuacct:/docker/abc\n0::/system.slice/x.service\n";
        assert_eq!(
            cgroup_dir(cgroups, &mounts, Hierarchy::V1Cpu).unwrap().0,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/abc")
        );
        assert_eq!(
            cgroup_dir(cgroups, &mounts, Hierarchy::V2).unwrap().0,
            PathBuf::from("/sys/fs/cgroup/uni fied/system.slice/x.service")
        );
    }

    #[test]
    fn the_smallest_quota_up_to_the_mount_counts_and_nothing_above_it() {
        let root = scratch("v2");
        let mount = root.join("mnt");
        let leaf = mount.join("a/b");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(root.join("cpu.max"), "100000 100000").unwrap(); // above the mount: ignored
        fs::write(mount.join("a/cpu.max"), "300000 100000").unwrap();
        fs::write(leaf.join("cpu.max"), "max 100000").unwrap();
        let mut sources = Vec::new();
        assert_eq!(
            smallest(&leaf, &mount, &["cpu.max"], parse_cpu_max, &mut sources),
            Some(3)
        );
        assert_eq!(sources.len(), 2, "each file read is kept: {sources:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_v1_quota_of_minus_one_is_no_quota() {
        let texts = |q: &str| [q.to_string(), "100000\n".to_string()];
        assert_eq!(parse_cfs_quota(&texts("-1\n")), None);
        assert_eq!(parse_cfs_quota(&texts("250000\n")), Some(3));
    }
}
