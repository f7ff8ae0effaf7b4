//! Where the cgroup hierarchies are mounted and which group recluster is in, in each: read from
//! /proc/self/mounts and /proc/self/cgroup, parsed here without touching the hierarchies. A host
//! may have the unified (v2) hierarchy alone, v1 controllers alone, or both (systemd's "hybrid"
//! layout: v1 controllers with a controller-less v2 beside them).

use std::path::{Path, PathBuf};

/// One hierarchy: where it is mounted, and recluster's group in it (relative, empty for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub mount: PathBuf,
    pub own: PathBuf,
}

impl Place {
    /// The directory of recluster's own group.
    pub fn dir(&self) -> PathBuf {
        self.mount.join(&self.own)
    }

    /// Whether recluster is in the hierarchy's root group.
    pub fn is_root(&self) -> bool {
        self.own.as_os_str().is_empty()
    }
}

/// The hierarchies recluster uses, those that are mounted and that it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// The unified (v2) hierarchy: a group's whole tree is killed through `cgroup.kill`, and
    /// `cgroup.events` says when it is empty.
    pub unified: Option<Place>,
    /// The v1 memory controller's hierarchy (thresholds, limits, OOM counts).
    pub memory: Option<Place>,
    /// v1's freezer hierarchy: where no v2 hierarchy is mounted, a worker's tree is frozen there
    /// to be killed whole.
    pub freezer: Option<Place>,
    /// v1's pids hierarchy (`--pids-max` where v2 has no pids controller).
    pub pids: Option<Place>,
    /// v1's cpuacct hierarchy: where no v2 hierarchy is mounted, a worker's CPU time is read
    /// from its group there (`cpuacct.usage`).
    pub cpuacct: Option<Place>,
    /// v1's cpu hierarchy (`--cpu-weight` as `cpu.shares` where v2 has no cpu controller).
    pub cpu: Option<Place>,
}

impl Hierarchies {
    /// This process's hierarchies (none where /proc cannot be read).
    pub fn of_self() -> Hierarchies {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Hierarchies::parse(&mounts, &groups)
    }

    /// From the text of /proc/self/mounts and /proc/self/cgroup.
    pub fn parse(mounts: &str, groups: &str) -> Hierarchies {
        let mut unified_mount = None;
        let mut memory_mount = None;
        let mut freezer_mount = None;
        let mut pids_mount = None;
        let mut cpuacct_mount = None;
        let mut cpu_mount = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount, fstype, options, ..] = fields[..] else {
                continue;
            };
            let mount = PathBuf::from(unescape_mount(mount));
            // Often mounted together with cpu (`cpu,cpuacct`): apart from the others.
            if fstype == "cgroup"
                && cpuacct_mount.is_none()
                && options.split(',').any(|o| o == "cpuacct")
            {
                cpuacct_mount = Some(mount.clone());
            }
            if fstype == "cgroup" && cpu_mount.is_none() && options.split(',').any(|o| o == "cpu") {
                cpu_mount = Some(mount.clone());
            }
            match fstype {
                "cgroup2" if unified_mount.is_none() => unified_mount = Some(mount),
                "cgroup" if memory_mount.is_none() && options.split(',').any(|o| o == "memory") => {
                    memory_mount = Some(mount)
                }
                "cgroup"
                    if freezer_mount.is_none() && options.split(',').any(|o| o == "freezer") =>
                {
                    freezer_mount = Some(mount)
                }
                "cgroup" if pids_mount.is_none() && options.split(',').any(|o| o == "pids") => {
                    pids_mount = Some(mount)
                }
                _ => {}
            }
        }
        let mut unified_own = None;
        let mut memory_own = None;
        let mut freezer_own = None;
        let mut pids_own = None;
        let mut cpuacct_own = None;
        let mut cpu_own = None;
        for line in groups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let own = relative(path);
            if id == "0" && controllers.is_empty() {
                unified_own = own;
            } else {
                if controllers.split(',').any(|c| c == "memory") {
                    memory_own = own.clone();
                }
                if controllers.split(',').any(|c| c == "freezer") {
                    freezer_own = own.clone();
                }
                if controllers.split(',').any(|c| c == "cpuacct") {
                    cpuacct_own = own.clone();
                }
                if controllers.split(',').any(|c| c == "cpu") {
                    cpu_own = own.clone();
                }
                if controllers.split(',').any(|c| c == "pids") {
                    pids_own = own;
                }
            }
        }
        let place = |mount: Option<PathBuf>, own: Option<PathBuf>| {
            Some(Place {
                mount: mount?,
                own: own?,
            })
        };
        Hierarchies {
            unified: place(unified_mount, unified_own),
            memory: place(memory_mount, memory_own),
            freezer: place(freezer_mount, freezer_own),
            pids: place(pids_mount, pids_own),
            cpuacct: place(cpuacct_mount, cpuacct_own),
            cpu: place(cpu_mount, cpu_own),
        }
    }
}

/// A group's path as /proc/self/cgroup gives it, relative to the hierarchy's mount; none for a
/// path outside recluster's cgroup namespace (`/..`), which it cannot reach.
fn relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path.strip_prefix('/')?);
    if path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(path.to_path_buf())
}

/// /proc/self/mounts writes a space, tab, newline or backslash in a path as `\NNN` (octal).
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn a_hybrid_host_gives_the_unified_hierarchy_and_v1_memory_with_recluster_s_groups() {
        let groups = "6:freezer:/\n4:memory:/sessions/abc\n1:cpu,cpuacct:/x\n0::/\n";
        let h = Hierarchies::parse(HYBRID_MOUNTS, groups);
        assert!(h.freezer.unwrap().is_root());
        assert_eq!(
            h.cpuacct.unwrap().dir(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/x")
        );
        assert_eq!(
            h.cpu.unwrap().dir(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/x")
        );
        let unified = h.unified.unwrap();
        assert_eq!(unified.mount, Path::new("/sys/fs/cgroup/unified"));
        assert!(unified.is_root());
        let memory = h.memory.unwrap();
        assert_eq!(
            memory.dir(),
            Path::new("/sys/fs/cgroup/memory/sessions/abc")
        );
        assert!(!memory.is_root());
    }

    #[test]
    fn a_pure_v2_host_has_no_v1_memory() {
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        let h = Hierarchies::parse(mounts, "0::/system.slice/app.service\n");
        assert_eq!(
            h.unified.unwrap().dir(),
            Path::new("/sys/fs/cgroup/system.slice/app.service")
        );
        assert_eq!(h.memory, None);
    }

    #[test]
    fn a_group_outside_the_namespace_or_a_missing_mount_gives_nothing() {
        let h = Hierarchies::parse(HYBRID_MOUNTS, "0::/../outside\n");
        assert_eq!(h.unified, None);
        let h = Hierarchies::parse("", "0::/\n4:memory:/\n");
        assert_eq!(h, Hierarchies::default());
    }

    #[test]
    fn escaped_mount_paths_are_unescaped() {
        assert_eq!(unescape_mount("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount("/plain\\"), "/plain\\");
    }
}
