//! The machine's CPU topology, read from sysfs (`/sys/devices/system/cpu/cpuN/topology/`,
//! `/sys/devices/system/node/nodeN/cpulist`), and the places workers are pinned to, ordered to
//! spread load: across NUMA nodes first, then across physical cores, hyperthread siblings last.
//! The root is a parameter, so tests read fake trees.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::cpu::cpuset::CpuSet;

/// What one pinned worker gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    /// One logical CPU.
    Cpu,
    /// One physical core: all its hyperthread siblings.
    Core,
    /// One NUMA node: all its CPUs.
    Node,
}

impl Granularity {
    /// The name of one place, for messages: "CPU", "core", "node".
    pub fn noun(self, plural: bool) -> &'static str {
        match (self, plural) {
            (Granularity::Cpu, false) => "CPU",
            (Granularity::Cpu, true) => "CPUs",
            (Granularity::Core, false) => "core",
            (Granularity::Core, true) => "cores",
            (Granularity::Node, false) => "node",
            (Granularity::Node, true) => "nodes",
        }
    }
}

/// One online CPU: its NUMA node and its physical core (package, core id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub cpu: usize,
    pub node: usize,
    pub package: u32,
    pub core: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub online: CpuSet,
    pub cpus: Vec<Cpu>,
}

impl Topology {
    /// Reads `root` (`/sys/devices/system` on a real machine). What is missing is guessed the
    /// simple way: every CPU its own core on node 0, all online.
    pub fn read(root: &Path) -> Topology {
        let read = |path: &Path| fs::read_to_string(path).ok();
        let online = Topology::read_online(root).online;
        let mut node_of = BTreeMap::new();
        if let Ok(entries) = fs::read_dir(root.join("node")) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(node) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let cpus: Option<CpuSet> =
                    read(&entry.path().join("cpulist")).and_then(|t| t.trim().parse().ok());
                for cpu in cpus.iter().flat_map(CpuSet::iter) {
                    node_of.insert(cpu, node);
                }
            }
        }
        let cpus = online
            .iter()
            .map(|cpu| {
                let topology = root.join(format!("cpu/cpu{cpu}/topology"));
                let number =
                    |name: &str| -> Option<u32> { read(&topology.join(name))?.trim().parse().ok() };
                Cpu {
                    cpu,
                    node: node_of.get(&cpu).copied().unwrap_or(0),
                    package: number("physical_package_id").unwrap_or(0),
                    core: number("core_id").unwrap_or(cpu as u32),
                }
            })
            .collect();
        Topology { online, cpus }
    }

    /// Only the online CPUs (one file): all recluster needs without `--pin` or `--plan`.
    pub fn read_online(root: &Path) -> Topology {
        let online = fs::read_to_string(root.join("cpu/online"))
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| CpuSet::of_this_process().unwrap_or_else(|| CpuSet::from_cpus([0])));
        Topology {
            online,
            cpus: Vec::new(),
        }
    }

    /// The places of `allowed` at `granularity`, in the order workers get them: `WORKER_ID` i
    /// gets place i mod P.
    pub fn places(&self, allowed: &CpuSet, granularity: Granularity) -> Vec<CpuSet> {
        // node → core → its allowed threads, all in ascending order.
        let mut nodes: BTreeMap<usize, BTreeMap<(u32, u32), Vec<usize>>> = BTreeMap::new();
        for cpu in self.cpus.iter().filter(|c| allowed.contains(c.cpu)) {
            nodes
                .entry(cpu.node)
                .or_default()
                .entry((cpu.package, cpu.core))
                .or_default()
                .push(cpu.cpu);
        }
        let nodes: Vec<Vec<Vec<usize>>> = nodes
            .into_values()
            .map(|cores| cores.into_values().collect())
            .collect();
        let most_cores = nodes.iter().map(Vec::len).max().unwrap_or(0);
        let most_threads = nodes.iter().flatten().map(Vec::len).max().unwrap_or(0);
        match granularity {
            Granularity::Node => nodes
                .iter()
                .map(|cores| CpuSet::from_cpus(cores.iter().flatten().copied()))
                .collect(),
            Granularity::Core => (0..most_cores)
                .flat_map(|k| nodes.iter().filter_map(move |cores| cores.get(k)))
                .map(|threads| CpuSet::from_cpus(threads.iter().copied()))
                .collect(),
            // First threads of every core, alternating nodes; then the second threads; ...
            Granularity::Cpu => (0..most_threads)
                .flat_map(|t| {
                    let nodes = &nodes;
                    (0..most_cores).flat_map(move |k| {
                        nodes
                            .iter()
                            .filter_map(move |cores| cores.get(k)?.get(t).copied())
                    })
                })
                .map(|cpu| CpuSet::from_cpus([cpu]))
                .collect(),
        }
    }

    /// "2 nodes, 8 cores, 16 CPUs" for the CPUs of `allowed`.
    pub fn describe(&self, allowed: &CpuSet) -> String {
        let cpus: Vec<&Cpu> = self
            .cpus
            .iter()
            .filter(|c| allowed.contains(c.cpu))
            .collect();
        let mut nodes: Vec<usize> = cpus.iter().map(|c| c.node).collect();
        nodes.dedup();
        nodes.sort_unstable();
        nodes.dedup();
        let mut cores: Vec<(u32, u32)> = cpus.iter().map(|c| (c.package, c.core)).collect();
        cores.sort_unstable();
        cores.dedup();
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{}, {}, {}",
            plural(nodes.len(), "node", "nodes"),
            plural(cores.len(), "core", "cores"),
            plural(cpus.len(), "CPU", "CPUs")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fake `/sys/devices/system`: `packages` × `cores` × `threads`, one NUMA node per
    /// package, CPUs numbered as Linux does on most x86 machines (all first threads, then all
    /// second threads); `offline` CPUs left out of `cpu/online`.
    pub(crate) fn fake_sysfs(
        name: &str,
        packages: usize,
        cores: usize,
        threads: usize,
        offline: &[usize],
    ) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("recluster-sysfs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let per_thread = packages * cores;
        let total = per_thread * threads;
        let mut node_cpus: Vec<Vec<usize>> = vec![Vec::new(); packages];
        for cpu in 0..total {
            let thread_index = cpu % per_thread;
            let (package, core) = (thread_index / cores, thread_index % cores);
            let dir = root.join(format!("cpu/cpu{cpu}/topology"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("physical_package_id"), format!("{package}\n")).unwrap();
            fs::write(dir.join("core_id"), format!("{core}\n")).unwrap();
            node_cpus[package].push(cpu);
        }
        let online = CpuSet::from_cpus((0..total).filter(|c| !offline.contains(c)));
        fs::write(root.join("cpu/online"), format!("{online}\n")).unwrap();
        for (node, cpus) in node_cpus.iter().enumerate() {
            let dir = root.join(format!("node/node{node}"));
            fs::create_dir_all(&dir).unwrap();
            let list = CpuSet::from_cpus(cpus.iter().copied());
            fs::write(dir.join("cpulist"), format!("{list}\n")).unwrap();
        }
        root
    }

    fn lists(places: &[CpuSet]) -> Vec<String> {
        places.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn two_sockets_of_four_cores_of_two_threads_spread_nodes_then_cores_then_siblings() {
        let root = fake_sysfs("2x4x2", 2, 4, 2, &[]);
        let topology = Topology::read(&root);
        let all = topology.online.clone();
        assert_eq!(all.to_string(), "0-15");
        // CPU 0-3: package 0 cores 0-3; 4-7: package 1; 8-15 their siblings.
        assert_eq!(
            lists(&topology.places(&all, Granularity::Cpu)),
            [
                "0", "4", "1", "5", "2", "6", "3", "7", "8", "12", "9", "13", "10", "14", "11",
                "15"
            ]
        );
        assert_eq!(
            lists(&topology.places(&all, Granularity::Core)),
            ["0,8", "4,12", "1,9", "5,13", "2,10", "6,14", "3,11", "7,15"]
        );
        assert_eq!(
            lists(&topology.places(&all, Granularity::Node)),
            ["0-3,8-11", "4-7,12-15"]
        );
        assert_eq!(topology.describe(&all), "2 nodes, 8 cores, 16 CPUs");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn offline_cpus_are_never_places() {
        let root = fake_sysfs("offline", 1, 4, 2, &[2, 6]);
        let topology = Topology::read(&root);
        assert_eq!(topology.online.to_string(), "0-1,3-5,7");
        let places = topology.places(&topology.online, Granularity::Cpu);
        assert_eq!(lists(&places), ["0", "1", "3", "4", "5", "7"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_container_cpuset_4_to_7_gets_places_4_to_7_not_0_to_3() {
        let root = fake_sysfs("cpuset", 1, 8, 1, &[]);
        let topology = Topology::read(&root);
        let allowed: CpuSet = "4-7".parse().unwrap();
        assert_eq!(
            lists(&topology.places(&allowed, Granularity::Cpu)),
            ["4", "5", "6", "7"]
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_machine_without_topology_files_has_a_core_per_cpu() {
        let root =
            std::env::temp_dir().join(format!("recluster-sysfs-bare-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("cpu")).unwrap();
        fs::write(root.join("cpu/online"), "0-2\n").unwrap();
        let topology = Topology::read(&root);
        assert_eq!(
            lists(&topology.places(&topology.online, Granularity::Core)),
            ["0", "1", "2"]
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
