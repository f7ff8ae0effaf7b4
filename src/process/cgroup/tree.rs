//! recluster's cgroup subtree and each worker's group in it: created, joined, killed, removed.
//!
//! Everything recluster creates is under a directory named `recluster-PID-START` (START: its
//! start time, in clock ticks since boot, so that the name tells whether its recluster still
//! runs), shortened to `recluster-PID` below, made inside the
//! group recluster itself runs in (so every limit its caller set keeps applying to the workers),
//! in the unified (v2) hierarchy — or, where none is mounted, v1's freezer hierarchy — and, where
//! it is mounted and writable, in v1's memory hierarchy — and, without v2, in v1's cpuacct
//! hierarchy, where each worker's CPU time is read.
//! On v2, where recluster is not in the root group, it first moves itself (and nothing else)
//! into the leaf `recluster-PID/supervisor`: the no-internal-process rule lets a group with
//! processes have no controllers for its children. At exit it moves back and removes everything
//! it made. A tree left by a recluster killed by SIGKILL (which cannot clean up) is removed by
//! the next recluster that starts there, if no process PID started at START (PID 1 of a pid
//! namespace above all) and its groups are empty; a name taken all the same gets a suffix.
//!
//! A worker's group is `recluster-PID/wN-K` (slot N, its Kth spawn). The parent opens its
//! `cgroup.procs` in each hierarchy before the clone; the child writes `0` (itself) into each
//! before exec — one `write`, async-signal-safe — so everything the worker starts is in it.
//! Once the worker's exit is reported (when it is reaped; with `--prefix`, after its last lines),
//! its group is killed whole (`cgroup.kill`: every process in it,
//! including one that double-forked out of the process group; on v1's freezer: frozen, each
//! process in `cgroup.procs` killed, thawed) and removed as soon as `cgroup.events` says
//! `populated 0` (on v1: `cgroup.procs` is empty).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::hierarchy::{Hierarchies, Place};
use super::threshold::{Watch, Watcher};
use crate::config::policy::CgroupMode;

/// recluster's subtree.
#[derive(Debug)]
pub struct Tree {
    /// `recluster-PID` in the hierarchy that holds every worker's tree: the unified (v2) one, or
    /// v1's freezer where no v2 hierarchy is mounted.
    main: PathBuf,
    /// `main` is v1's freezer: a tree is killed frozen, and no v2 file is there.
    freezer: bool,
    /// `recluster-PID` in v1's memory hierarchy, where recluster could make it.
    memory: Option<PathBuf>,
    /// Where recluster was before it moved into its leaf (v2), to go back to at exit.
    moved_from: Option<PathBuf>,
    /// Its name, `recluster-PID-START`, the same in every hierarchy.
    name: String,
    /// Spawns so far: each worker group's name is unique.
    spawns: u64,
    /// `--memory-max`: each worker group's hard memory limit, in bytes.
    memory_max: Option<u64>,
    /// Whether the unified hierarchy's groups have the memory controller (`memory.max`,
    /// `memory.events`).
    unified_memory: bool,
    /// `--max-memory`: the threshold each v1 memory group gets, or the `memory.high` of each v2
    /// group with the memory controller, and who waits for crossings.
    threshold: Option<(u64, Watcher)>,
    /// `--pids-max`: the most processes in each worker group, and where it is kept: v2's pids
    /// controller (`unified_pids`) or `recluster-PID` in v1's pids hierarchy.
    pids_max: Option<u32>,
    unified_pids: bool,
    pids: Option<PathBuf>,
    /// `recluster-PID` in v1's cpuacct hierarchy, where `main` is v1's freezer (v2 groups have
    /// `cpu.stat`) and recluster could make it.
    cpuacct: Option<PathBuf>,
    /// `--cpu-weight`: each worker group's CPU weight (v2's scale), and where it is kept: v2's
    /// cpu controller (`unified_cpu`) or `recluster-PID` in v1's cpu hierarchy (`cpu`; the same
    /// directory as `cpuacct` where the two are mounted together).
    cpu_weight: Option<u32>,
    unified_cpu: bool,
    cpu: Option<PathBuf>,
}

/// The limits each worker group gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `--memory-max`, in bytes.
    pub memory_max: Option<u64>,
    /// `--pids-max`.
    pub pids_max: Option<u32>,
    /// `--cpu-weight`.
    pub cpu_weight: Option<u32>,
}

/// What `make` found: the tree, or why there is none (said once at start and by `--plan`).
#[derive(Debug)]
pub enum Setup {
    Off,
    Tree(Box<Tree>),
    /// `auto` where recluster may not create cgroups: the reason.
    Fallback(String),
}

/// How `--plan` and the start describe a fallback: what the workers do without their groups.
pub const FALLBACK_MEANS: &str = "workers run in recluster's own cgroup: they are signalled by process group, and --max-memory samples /proc";

impl Setup {
    /// Sets up recluster's subtree as `--cgroups` says. With `on`, a hierarchy or a permission
    /// that is missing is an error naming the path.
    /// `--memory-max` needs a memory controller: without one, `on` is an error, `auto` a warning.
    /// So does `--pids-max` the pids controller, and `--cpu-weight` the cpu controller.
    pub fn make(mode: CgroupMode, limits: Limits) -> Result<Setup, io::Error> {
        if mode == CgroupMode::Off {
            return Ok(Setup::Off);
        }
        let hierarchies = Hierarchies::of_self();
        let Limits {
            memory_max,
            pids_max,
            cpu_weight,
        } = limits;
        match Tree::create(&hierarchies, std::process::id()) {
            Ok(mut tree) => {
                if pids_max.is_some() {
                    tree.unified_pids = !tree.freezer && enable_controller(&tree.main, "pids");
                    if !tree.unified_pids
                        && let Some(pids) = &hierarchies.pids
                    {
                        let dir = pids.dir().join(&tree.name);
                        match fs::create_dir(&dir) {
                            Ok(()) => tree.pids = Some(dir),
                            Err(e) => log::debug!("mkdir {}: {e}", dir.display()),
                        }
                    }
                    if !tree.unified_pids && tree.pids.is_none() {
                        tree = without_controller(tree, "--pids-max", "pids", mode)?;
                    }
                    tree.pids_max = pids_max;
                }
                if cpu_weight.is_some() {
                    tree.unified_cpu = !tree.freezer && enable_controller(&tree.main, "cpu");
                    if !tree.unified_cpu
                        && let Some(cpu) = &hierarchies.cpu
                    {
                        let together = hierarchies
                            .cpuacct
                            .as_ref()
                            .is_some_and(|c| c.mount == cpu.mount);
                        if together && tree.cpuacct.is_some() {
                            tree.cpu = tree.cpuacct.clone();
                        } else {
                            sweep_stale(&cpu.dir());
                            let dir = cpu.dir().join(&tree.name);
                            match fs::create_dir(&dir) {
                                Ok(()) => tree.cpu = Some(dir),
                                Err(e) => log::debug!("mkdir {}: {e}", dir.display()),
                            }
                        }
                    }
                    if !tree.unified_cpu && tree.cpu.is_none() {
                        tree = without_controller(tree, "--cpu-weight", "cpu", mode)?;
                    }
                    tree.cpu_weight = cpu_weight;
                }
                if memory_max.is_some() && tree.memory.is_none() && !tree.unified_memory {
                    tree = without_controller(tree, "--memory-max", "memory", mode)?;
                }
                tree.memory_max = memory_max;
                Ok(Setup::Tree(Box::new(tree)))
            }
            Err(e) if mode == CgroupMode::On => Err(e),
            Err(e) => Ok(Setup::Fallback(e.to_string())),
        }
    }

    /// What `--plan` says, without creating anything: where the groups would go, or why not.
    pub fn plan(mode: CgroupMode) -> String {
        if mode == CgroupMode::Off {
            return "off (--cgroups off)".to_string();
        }
        let hierarchies = Hierarchies::of_self();
        let Some(main) = hierarchies
            .unified
            .as_ref()
            .or(hierarchies.freezer.as_ref())
        else {
            let why = "neither a cgroup v2 hierarchy nor v1's freezer is mounted";
            return match mode {
                CgroupMode::On => format!("error: {why}"),
                _ => format!("none ({why}): {FALLBACK_MEANS}"),
            };
        };
        let dir = main.dir();
        if !writable(&dir) {
            return match mode {
                CgroupMode::On => format!("error: {} is not writable", dir.display()),
                _ => format!("none ({} is not writable): {FALLBACK_MEANS}", dir.display()),
            };
        }
        let mut line = format!(
            "one per worker under {}",
            dir.join("recluster-PID-START").display()
        );
        match &hierarchies.memory {
            Some(memory) if writable(&memory.dir()) => line.push_str(&format!(
                ", and under {} (v1 memory)",
                memory.dir().join("recluster-PID-START").display()
            )),
            _ => {}
        }
        line
    }
}

/// Whether this process may create a group in `dir`.
fn writable(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path and has no other memory effects.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// Names the path an error happened at: `mkdir /sys/fs/cgroup/x: Permission denied`.
/// Writes a limit (`pids.max`, `memory.max`, `cpu.shares`, …); the error names the file.
fn write_limit(file: &Path, value: impl ToString) -> io::Result<()> {
    fs::write(file, value.to_string()).map_err(|e| at("write to", file, e))
}

fn at(doing: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

impl Tree {
    /// Creates recluster's subtree (for recluster `pid`) and moves recluster into its leaf.
    fn create(hierarchies: &Hierarchies, pid: u32) -> Result<Tree, io::Error> {
        let (main, freezer) = match (&hierarchies.unified, &hierarchies.freezer) {
            (Some(unified), _) => (unified, false),
            (None, Some(freezer)) => (freezer, true),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "neither a cgroup v2 hierarchy nor v1's freezer is mounted",
                ));
            }
        };
        sweep_stale(&main.dir());
        if let Some(memory) = &hierarchies.memory {
            sweep_stale(&memory.dir());
        }
        if let (true, Some(cpuacct)) = (freezer, &hierarchies.cpuacct) {
            sweep_stale(&cpuacct.dir());
        }
        let (name, base) = make_base(&main.dir(), pid)?;
        let mut tree = Tree {
            main: base,
            freezer,
            memory: None,
            moved_from: None,
            name: name.clone(),
            spawns: 0,
            memory_max: None,
            unified_memory: false,
            threshold: None,
            pids_max: None,
            unified_pids: false,
            pids: None,
            cpuacct: None,
            cpu_weight: None,
            unified_cpu: false,
            cpu: None,
        };
        if !freezer && !main.is_root() {
            let leaf = tree.main.join("supervisor");
            let moved = fs::create_dir(&leaf)
                .map_err(|e| at("mkdir", &leaf, e))
                .and_then(|()| join(&leaf, pid));
            if let Err(e) = moved {
                tree.remove_created();
                return Err(e);
            }
            tree.moved_from = Some(main.dir());
        }
        tree.unified_memory = !freezer && enable_controller(&tree.main, "memory");
        if let Some(memory) = &hierarchies.memory
            && !tree.unified_memory
        {
            tree.memory = make_memory_base(memory, &name);
        }
        if let (true, Some(cpuacct)) = (freezer, &hierarchies.cpuacct) {
            let dir = cpuacct.dir().join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => tree.cpuacct = Some(dir),
                Err(e) => log::info!(
                    "no per-worker cpuacct groups (mkdir {}: {e}); CPU time is read from /proc",
                    dir.display()
                ),
            }
        }
        Ok(tree)
    }

    /// Where the workers' groups are (for the start's log line).
    pub fn describe(&self) -> String {
        match &self.memory {
            Some(memory) => format!("{} and {}", self.main.display(), memory.display()),
            None => self.main.display().to_string(),
        }
    }

    /// Makes the group of a worker of slot `id`, ready for its child to join.
    pub fn worker(&mut self, id: u32) -> io::Result<WorkerGroup> {
        self.spawns += 1;
        let name = format!("w{id}-{}", self.spawns);
        let mut group = WorkerGroup {
            main: self.main.join(&name),
            freezer: self.freezer,
            memory: None,
            procs: Vec::new(),
            serial: self.spawns,
            watch: None,
            over_high: 0,
            pids: None,
            cpuacct: None,
            cpu: None,
        };
        fs::create_dir(&group.main).map_err(|e| at("mkdir", &group.main, e))?;
        match self.furnish(id, &mut group) {
            Ok(()) => Ok(group),
            Err(e) => {
                let _ = group.remove(); // best effort: nothing joined it
                Err(e)
            }
        }
    }

    /// Gives worker `id`'s new group (its main directory made) its other hierarchies' groups,
    /// its limits, its memory watch and the open `cgroup.procs` its child joins through.
    fn furnish(&self, id: u32, group: &mut WorkerGroup) -> io::Result<()> {
        let name = group
            .main
            .file_name()
            .expect("a worker group has a name")
            .to_owned();
        if let Some(memory) = &self.memory {
            let dir = memory.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => group.memory = Some(dir),
                Err(e) => log::debug!("worker {id}: no memory group: mkdir {}: {e}", dir.display()),
            }
        }
        if let Some(cpuacct) = &self.cpuacct {
            let dir = cpuacct.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => group.cpuacct = Some(dir),
                Err(e) => log::debug!(
                    "worker {id}: no cpuacct group: mkdir {}: {e}",
                    dir.display()
                ),
            }
        }
        // Its v1 cpu group, unless that is its cpuacct group (mounted together).
        if let Some(cpu) = self
            .cpu
            .as_ref()
            .filter(|c| Some(*c) != self.cpuacct.as_ref())
        {
            let dir = cpu.join(&name);
            fs::create_dir(&dir).map_err(|e| at("mkdir", &dir, e))?;
            group.cpu = Some(dir);
        }
        if let Some(weight) = self.cpu_weight {
            if self.unified_cpu {
                write_limit(&group.main.join("cpu.weight"), u64::from(weight))?;
            } else {
                let v1 = match &group.cpu {
                    Some(dir) => Some(dir),
                    None if self.cpu.is_some() => group.cpuacct.as_ref(),
                    None => None,
                };
                if let Some(dir) = v1 {
                    write_limit(&dir.join("cpu.shares"), shares(weight))?;
                }
            }
        }
        if let Some(pids) = &self.pids {
            let dir = pids.join(&name);
            fs::create_dir(&dir).map_err(|e| at("mkdir", &dir, e))?;
            group.pids = Some(dir);
        }
        if let Some(most) = self.pids_max {
            match &group.pids {
                Some(dir) => write_limit(&dir.join("pids.max"), most)?,
                None if self.unified_pids => write_limit(&group.main.join("pids.max"), most)?,
                None => {}
            }
        }
        if let Some(bytes) = self.memory_max {
            match &group.memory {
                Some(dir) => write_limit(&dir.join("memory.limit_in_bytes"), bytes)?,
                None if self.unified_memory => write_limit(&group.main.join("memory.max"), bytes)?,
                None => {}
            }
        }
        // Before the worker joins: a threshold registered above the usage fires when crossed;
        // on v2, `memory.high` set and `memory.events` watched before anything is charged.
        if let Some((bytes, watcher)) = &self.threshold {
            group.watch = match &group.memory {
                Some(dir) => Some(watcher.watch(dir, *bytes, group.serial)?),
                None if self.unified_memory => {
                    write_limit(&group.main.join("memory.high"), *bytes)?;
                    Some(watcher.watch_events(&group.main, group.serial)?)
                }
                None => None,
            };
        }
        let dirs: Vec<PathBuf> = group.dirs().cloned().collect();
        for dir in dirs {
            let procs = dir.join("cgroup.procs");
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| at("open", &procs, e))?;
            group.procs.push(OwnedFd::from(file));
        }
        Ok(())
    }

    /// At exit: every worker group left is killed and removed, recluster moves back to where it
    /// was, and its subtree goes. What cannot be removed is named.
    pub fn finish(self, left: Vec<WorkerGroup>) {
        for group in &left {
            group.kill();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for group in left {
            while !group.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if let Err(e) = group.remove() {
                log::warn!("{e}");
            }
        }
        if let Some(back) = &self.moved_from
            && let Err(e) = join(back, std::process::id())
        {
            log::warn!("cannot move back out of its cgroup leaf: {e}");
        }
        self.remove_created();
    }

    /// Removes the directories recluster made (the leaf, then the bases).
    fn remove_created(&self) {
        let leaf = self.main.join("supervisor");
        for dir in [
            Some(&leaf),
            Some(&self.main),
            self.memory.as_ref(),
            self.pids.as_ref(),
            self.cpuacct.as_ref(),
            self.cpu.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove its cgroup {}: {e}", dir.display()),
            }
        }
    }
}

/// Makes `recluster-PID-START` in `dir`; `recluster-PID-START-N` where that name is taken (a
/// recluster of the same pid started in the same clock tick in another pid namespace). Its name
/// and path.
fn make_base(dir: &Path, pid: u32) -> io::Result<(String, PathBuf)> {
    let start = start_time(pid as i32).unwrap_or(0);
    let mut name = format!("recluster-{pid}-{start}");
    for n in 2..=64 {
        let base = dir.join(&name);
        match fs::create_dir(&base) {
            Ok(()) => return Ok((name, base)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                name = format!("recluster-{pid}-{start}-{n}");
            }
            Err(e) => return Err(at("mkdir", &base, e)),
        }
    }
    let base = dir.join(&name);
    fs::create_dir(&base)
        .map(|()| (name, base.clone()))
        .map_err(|e| at("mkdir", &base, e))
}

/// When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Removes the trees in `dir` that a recluster killed by SIGKILL (which could not remove its
/// own) left behind: `recluster-PID-START[-N]` where no process PID started at START, and only
/// their empty groups (the kernel refuses to remove a group with a process in it).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let mut parts = name
            .to_str()
            .and_then(|n| n.strip_prefix("recluster-"))
            .into_iter()
            .flat_map(|rest| rest.split('-'))
            .map(|p| p.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        if pid <= 0 || start_time(pid) == Some(start) {
            continue;
        }
        let tree = entry.path();
        if let Ok(groups) = fs::read_dir(&tree) {
            for group in groups.filter_map(|e| e.ok()) {
                if group.path().is_dir() {
                    let _ = fs::remove_dir(group.path());
                }
            }
        }
        match fs::remove_dir(&tree) {
            Ok(()) => log::debug!(
                "removed {}, left by a recluster that is gone",
                tree.display()
            ),
            Err(e) => log::debug!("cannot remove the stale {}: {e}", tree.display()),
        }
    }
}

/// Hands `controller` to the workers' groups under `base` (v2), where recluster's own group hands
/// it to `base`; whether they have it.
fn enable_controller(base: &Path, controller: &str) -> bool {
    let listed = fs::read_to_string(base.join("cgroup.controllers"))
        .is_ok_and(|list| list.split_whitespace().any(|c| c == controller));
    if !listed {
        return false;
    }
    match fs::write(
        base.join("cgroup.subtree_control"),
        format!("+{controller}"),
    ) {
        Ok(()) => true,
        Err(e) => {
            log::debug!(
                "no {controller} controller for the workers' groups: +{controller} in {}/cgroup.subtree_control: {e}",
                base.display()
            );
            false
        }
    }
}

/// v1's `cpu.shares` for `--cpu-weight` (v2's `cpu.weight`, 1 to 10000, 100 the default): the
/// same proportion of v1's default, 1024 (at least v1's 2).
fn shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

/// `recluster-PID` in v1's memory hierarchy, or none where recluster may not make it.
fn make_memory_base(memory: &Place, name: &str) -> Option<PathBuf> {
    let dir = memory.dir().join(name);
    match fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            log::info!(
                "no per-worker memory groups (mkdir {}: {e}); --max-memory samples /proc",
                dir.display()
            );
            None
        }
    }
}

/// Moves process `pid` into the group at `dir`.
fn join(dir: &Path, pid: u32) -> io::Result<()> {
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).map_err(|e| at("write to", &procs, e))
}

/// One worker's group, in each hierarchy recluster uses.
#[derive(Debug)]
pub struct WorkerGroup {
    /// Its group in the tree's main hierarchy (v2, or v1's freezer).
    main: PathBuf,
    /// `main` is in v1's freezer hierarchy.
    freezer: bool,
    memory: Option<PathBuf>,
    /// Each group's `cgroup.procs`, open for writing until the child has joined.
    procs: Vec<OwnedFd>,
    /// Its number among the tree's groups (the token of its memory threshold's wake-ups).
    serial: u64,
    /// `--max-memory`: its threshold's registration (v1), or its `memory.events` watch (v2).
    watch: Option<Watch>,
    /// v2: the `high` and `max` counts of its `memory.events` so far (a rise is a crossing).
    over_high: u64,
    /// `--pids-max` on v1: its group in the pids hierarchy.
    pids: Option<PathBuf>,
    /// Without v2: its group in v1's cpuacct hierarchy.
    cpuacct: Option<PathBuf>,
    /// `--cpu-weight` on v1: its group in the cpu hierarchy (none where that is `cpuacct`).
    cpu: Option<PathBuf>,
}

impl WorkerGroup {
    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.main)
            .chain(self.memory.as_ref())
            .chain(self.pids.as_ref())
            .chain(self.cpuacct.as_ref())
            .chain(self.cpu.as_ref())
    }

    /// The open `cgroup.procs` the child writes itself into, before exec.
    pub fn procs(&self) -> &[OwnedFd] {
        &self.procs
    }

    /// The child has joined (or failed to): the descriptors go.
    pub fn joined(&mut self) {
        self.procs.clear();
    }

    /// Its directory in the main hierarchy.
    pub fn path(&self) -> &Path {
        &self.main
    }

    /// The memory its processes use now, children included (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`), if it has a memory controller.
    pub fn memory_usage(&self) -> Option<u64> {
        let file = match &self.memory {
            Some(dir) => dir.join("memory.usage_in_bytes"),
            None if !self.freezer => self.main.join("memory.current"),
            None => return None,
        };
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// v2, `--max-memory`: whether the group reached `memory.high` (or `memory.max`) since last
    /// asked — the `high` or `max` count in its `memory.events` went up. A change of another
    /// line (`low`, `oom`, `oom_kill`) is not a crossing.
    pub fn reached_high(&mut self) -> bool {
        let Ok(events) = fs::read_to_string(self.main.join("memory.events")) else {
            return false;
        };
        let count: u64 = events
            .lines()
            .filter_map(|l| {
                let (key, value) = l.split_once(' ')?;
                matches!(key, "high" | "max")
                    .then(|| value.trim().parse::<u64>().ok())
                    .flatten()
            })
            .sum();
        let rose = count > self.over_high;
        self.over_high = self.over_high.max(count);
        rose
    }

    /// Where its usage is read (`ctl status`, `/status`, `/metrics`): its memory, and its CPU time.
    pub fn usage_files(&self) -> UsageFiles {
        UsageFiles {
            memory: match &self.memory {
                Some(dir) => Some(dir.join("memory.usage_in_bytes")),
                None => Some(self.main.join("memory.current")).filter(|f| f.exists()),
            },
            cpu_stat: (!self.freezer).then(|| self.main.join("cpu.stat")),
            cpuacct: self.cpuacct.as_ref().map(|dir| dir.join("cpuacct.usage")),
        }
    }

    /// How many processes the kernel's OOM killer has killed in the group (`oom_kill` in v1's
    /// `memory.oom_control` or v2's `memory.events`); 0 without a memory controller.
    pub fn oom_kills(&self) -> u64 {
        let file = match &self.memory {
            Some(dir) => dir.join("memory.oom_control"),
            None => self.main.join("memory.events"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Whether the group has a memory controller that counts OOM kills.
    pub fn counts_oom_kills(&self) -> bool {
        self.memory.is_some() || self.main.join("memory.events").exists()
    }

    /// SIGKILL to every process in the group (`cgroup.kill`, Linux 5.14).
    /// On v1's freezer: the group is frozen (none of its processes can fork or exit, so no pid
    /// in `cgroup.procs` is recycled meanwhile), each process gets SIGKILL, then it is thawed.
    pub fn kill(&self) {
        let killed = if self.freezer {
            self.kill_frozen()
        } else {
            fs::write(self.main.join("cgroup.kill"), "1")
        };
        if let Err(e) = killed {
            log::warn!("cannot kill what is left in {}: {e}", self.main.display());
        }
    }

    fn kill_frozen(&self) -> io::Result<()> {
        let state = self.main.join("freezer.state");
        fs::write(&state, "FROZEN")?;
        // Freezing takes a moment: FREEZING until every process is frozen (bounded: a process
        // stuck in the kernel is killed all the same, and thawed).
        let deadline = Instant::now() + Duration::from_millis(500);
        while fs::read_to_string(&state)?.trim() != "FROZEN" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for pid in fs::read_to_string(self.main.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: kill has no memory effects; the process is frozen in this group.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        fs::write(&state, "THAWED")
    }

    /// Whether no process is left in it (`populated 0` in `cgroup.events`; zombies do not count).
    /// On v1, where there is no `cgroup.events`: no process listed in `cgroup.procs`.
    pub fn is_empty(&self) -> bool {
        let (file, empty): (&str, fn(&str) -> bool) = if self.freezer {
            ("cgroup.procs", |procs| procs.trim().is_empty())
        } else {
            ("cgroup.events", |events| {
                events.lines().any(|l| l == "populated 0")
            })
        };
        match fs::read_to_string(self.main.join(file)) {
            Ok(text) => empty(&text),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Removes the group from each hierarchy; `Err` naming the path while processes are left.
    pub fn remove(&self) -> io::Result<()> {
        for dir in self.dirs() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at("rmdir", dir, e)),
            }
        }
        Ok(())
    }
}

/// A worker's group woke recluster about its memory (`Groups::crossing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// v1: its usage crossed the threshold, either way; `bytes` is its usage now.
    Usage { pid: i32, bytes: u64 },
    /// v2: it reached `memory.high` (the kernel reclaims and throttles it there, so its usage
    /// now, `bytes`, may be back below the limit).
    High { pid: i32, bytes: u64 },
}

/// Where a worker group's usage is read, by whichever thread measures a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFiles {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2), with a memory controller.
    memory: Option<PathBuf>,
    /// v2 `cpu.stat`, whose `usage_usec` every group has (none on v1's freezer).
    cpu_stat: Option<PathBuf>,
    /// Without v2: v1's `cpuacct.usage` (nanoseconds), where the worker has a cpuacct group.
    cpuacct: Option<PathBuf>,
}

impl UsageFiles {
    /// Whether both its memory and its CPU time can be read from the group.
    pub fn complete(&self) -> bool {
        self.memory.is_some() && (self.cpu_stat.is_some() || self.cpuacct.is_some())
    }

    /// The group's memory now (its processes, children included, page cache included), in
    /// bytes, and the CPU time its processes have used (those that ended included), in seconds;
    /// each `None` where it cannot be read (the group is gone).
    pub fn read(&self) -> (Option<u64>, Option<f64>) {
        let memory = self
            .memory
            .as_ref()
            .and_then(|f| fs::read_to_string(f).ok()?.trim().parse().ok());
        let cpu = self.cpu_stat.as_ref().and_then(|file| {
            let stat = fs::read_to_string(file).ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                .map(|usec| usec as f64 / 1e6)
        });
        let cpu = cpu.or_else(|| {
            let nsec: u64 = fs::read_to_string(self.cpuacct.as_ref()?)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(nsec as f64 / 1e9)
        });
        (memory, cpu)
    }
}

/// The tree and the worker groups in it: those whose worker runs, by pid, and those whose worker
/// was reaped and that wait to be empty before they are removed.
#[derive(Debug)]
pub struct Groups {
    tree: Tree,
    live: HashMap<i32, WorkerGroup>,
    /// The pid of each live group's worker, by the group's serial number.
    pids: HashMap<u64, i32>,
    emptying: Vec<Emptying>,
}

/// A killed group not yet empty (a process in it has yet to die): tried again, sooner first.
#[derive(Debug)]
struct Emptying {
    group: WorkerGroup,
    next: Instant,
    delay: Duration,
    since: Instant,
}

/// How long a killed group is waited for before it is left (a process stuck in the kernel).
const GIVE_UP: Duration = Duration::from_secs(60);

impl Groups {
    pub fn new(tree: Tree) -> Groups {
        Groups {
            tree,
            live: HashMap::new(),
            pids: HashMap::new(),
            emptying: Vec::new(),
        }
    }

    /// Where the groups are.
    pub fn describe(&self) -> String {
        self.tree.describe()
    }

    /// A new worker group for slot `id` (see `Tree::worker`).
    pub fn make(&mut self, id: u32) -> io::Result<WorkerGroup> {
        self.tree.worker(id)
    }

    /// Worker `pid` runs in `group`.
    pub fn started(&mut self, pid: i32, mut group: WorkerGroup) {
        group.joined();
        self.pids.insert(group.serial, pid);
        self.live.insert(pid, group);
    }

    /// A group whose worker never started: removed.
    pub fn abandon(&mut self, group: WorkerGroup) {
        self.reap_group(group, Instant::now());
    }

    /// Process `pid` was reaped: if it was a worker, what is left in its group is killed and the
    /// group removed (now, or once it is empty).
    pub fn reaped(&mut self, pid: i32, now: Instant) {
        if let Some(mut group) = self.live.remove(&pid) {
            self.pids.remove(&group.serial);
            group.watch = None; // its threshold goes before the group
            self.reap_group(group, now);
        }
    }

    fn reap_group(&mut self, group: WorkerGroup, now: Instant) {
        if group.is_empty() && group.remove().is_ok() {
            return;
        }
        group.kill();
        if group.is_empty() && group.remove().is_ok() {
            return;
        }
        let delay = Duration::from_millis(2);
        self.emptying.push(Emptying {
            group,
            next: now + delay,
            delay,
            since: now,
        });
    }

    /// SIGKILL to every process in every worker's group (recluster's stop timed out).
    pub fn kill_all(&self) {
        for group in self.live.values() {
            group.kill();
        }
    }

    /// `--max-memory` without polling, where the workers have v1 memory groups (a threshold at
    /// `bytes` on each) or v2 groups with the memory controller (`memory.high` = `bytes`, and
    /// `memory.events` watched), and `crossed(token)` called on a thread when one is crossed
    /// (the token is `crossing`'s). Whether it is so.
    pub fn watch_memory(
        &mut self,
        bytes: u64,
        crossed: Box<dyn Fn(u64) -> bool + Send>,
    ) -> io::Result<bool> {
        if self.tree.memory.is_none() && !self.tree.unified_memory {
            return Ok(false);
        }
        self.tree.threshold = Some((bytes, Watcher::start(crossed)?));
        Ok(true)
    }

    /// What the wake-up with `token` means: the worker whose group it is (while it runs), and
    /// whether it crossed the limit — none for a group removed since, or a change of its v2
    /// `memory.events` that is no crossing.
    pub fn crossing(&mut self, token: u64) -> Option<Crossing> {
        let pid = *self.pids.get(&token)?;
        let group = self.live.get_mut(&pid)?;
        if group.memory.is_some() {
            let bytes = group.memory_usage()?;
            return Some(Crossing::Usage { pid, bytes });
        }
        if !group.reached_high() {
            return None;
        }
        let bytes = group.memory_usage()?;
        Some(Crossing::High { pid, bytes })
    }

    /// The group worker `pid` runs in.
    pub fn of(&self, pid: i32) -> Option<&WorkerGroup> {
        self.live.get(&pid)
    }

    /// When a killed group is next looked at, if one waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.emptying.iter().map(|e| e.next).min()
    }

    /// Removes the killed groups that are empty by now.
    pub fn retry(&mut self, now: Instant) {
        self.emptying.retain_mut(|e| {
            if e.next > now {
                return true;
            }
            if e.group.is_empty() && e.group.remove().is_ok() {
                return false;
            }
            if now.duration_since(e.since) > GIVE_UP {
                log::warn!(
                    "leaving the cgroup {}: processes are still in it {}s after it was killed",
                    e.group.path().display(),
                    GIVE_UP.as_secs()
                );
                return false;
            }
            e.group.kill();
            e.delay = (e.delay * 2).min(Duration::from_secs(1));
            e.next = now + e.delay;
            true
        });
    }

    /// At exit: every group is killed and removed, and the tree goes (see `Tree::finish`).
    pub fn finish(self) {
        let left = self
            .live
            .into_values()
            .chain(self.emptying.into_iter().map(|e| e.group))
            .collect();
        self.tree.finish(left);
    }
}

/// A limit asked for (`flag`) where recluster may write no hierarchy with its `controller`: under
/// `--cgroups on` an error (and the tree undone); otherwise a warning, and the limit not applied.
fn without_controller(
    tree: Tree,
    flag: &str,
    controller: &str,
    mode: CgroupMode,
) -> io::Result<Tree> {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{flag} needs the {controller} controller, which {} does not have (and no v1 {controller} hierarchy is writable)",
            tree.main.display()
        ),
    );
    if mode == CgroupMode::On {
        tree.finish(Vec::new());
        return Err(e);
    }
    log::warn!("{e}: it is not applied");
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's v2 hierarchy has no memory controller: regular files in a directory stand in
    /// for a worker group's `memory.events` and `memory.current`, changed in place as the
    /// kernel changes them (a write gives IN_MODIFY, as the kernel's change of the cgroup file).
    #[test]
    fn a_v2_group_reaching_memory_high_wakes_with_its_worker_and_its_usage() {
        use std::io::Write;
        let base = std::env::temp_dir().join(format!("recluster-high-{}", std::process::id()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = Watcher::start(Box::new(move |token| tx.send(token).is_ok())).unwrap();
        let tree = Tree {
            main: base.clone(),
            freezer: false,
            memory: None,
            moved_from: None,
            name: "recluster-test".to_string(),
            spawns: 2,
            memory_max: None,
            unified_memory: true,
            threshold: Some((50 << 20, watcher.clone())),
            pids_max: None,
            unified_pids: false,
            pids: None,
            cpuacct: None,
            cpu_weight: None,
            unified_cpu: false,
            cpu: None,
        };
        let mut groups = Groups::new(tree);
        let write = |dir: &Path, name: &str, text: &str| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        for serial in [1, 2] {
            let dir = base.join(format!("w{}-{serial}", serial - 1));
            fs::create_dir_all(&dir).unwrap();
            write(
                &dir,
                "memory.events",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            );
            write(&dir, "memory.current", "1048576\n");
            let group = WorkerGroup {
                main: dir.clone(),
                freezer: false,
                memory: None,
                procs: Vec::new(),
                serial,
                watch: Some(watcher.watch_events(&dir, serial).unwrap()),
                over_high: 0,
                pids: None,
                cpuacct: None,
                cpu: None,
            };
            groups.started(100 + serial as i32, group);
        }
        let wait = Duration::from_secs(10);
        let w1 = base.join("w1-2");
        // A change that is no crossing (`low` went up) wakes, and is told apart.
        write(
            &w1,
            "memory.events",
            "low 1\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        let token = rx.recv_timeout(wait).unwrap();
        assert_eq!(token, 2);
        assert_eq!(groups.crossing(token), None);
        // `high 1`: worker 102 reached memory.high; its usage is read from memory.current.
        write(&w1, "memory.current", "52428000\n");
        write(
            &w1,
            "memory.events",
            "low 1\nhigh 1\nmax 0\noom 0\noom_kill 0\n",
        );
        let token = rx.recv_timeout(wait).unwrap();
        assert_eq!(
            groups.crossing(token),
            Some(Crossing::High {
                pid: 102,
                bytes: 52428000
            })
        );
        // Read again without a new rise: nothing; `max` going up is one.
        assert_eq!(groups.crossing(2), None);
        let w0 = base.join("w0-1");
        write(
            &w0,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n",
        );
        let token = rx.recv_timeout(wait).unwrap();
        assert_eq!(
            groups.crossing(token),
            Some(Crossing::High {
                pid: 101,
                bytes: 1048576
            })
        );
        // Once its worker is reaped, its group's wake-ups are nobody's.
        groups.live.remove(&101);
        groups.pids.remove(&1);
        assert_eq!(groups.crossing(1), None);
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn cpu_weight_maps_to_v1_shares_in_proportion_to_the_defaults() {
        assert_eq!(shares(100), 1024);
        assert_eq!(shares(50), 512);
        assert_eq!(shares(10_000), 102_400);
        assert_eq!(shares(1), 10);
    }
}
