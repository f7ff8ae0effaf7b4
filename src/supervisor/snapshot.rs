//! What `recluster ctl status` shows: the cluster and each of its workers at one instant, as plain
//! data. The cluster fills in what it decides (`Cluster::snapshot`), the supervisor loop adds what
//! its plumbing knows (sockets, CPUs, `STATUS=` lines), and `measure` adds what only /proc knows
//! (resident memory and the CPU time of live processes) — read when asked, never sampled in the
//! background. Serialized as the control protocol's status answer (schema in the README) and
//! rendered as a table that fits 100 columns, where what workers wrote is escaped. Numbers are in base units: bytes, seconds.
//! Nothing from a worker's environment or argv is here.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub cluster: ClusterView,
    pub workers: Vec<WorkerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub pid: u32,
    /// `--name`, if given.
    pub name: Option<String>,
    /// Unix time, in seconds.
    pub started_at: f64,
    pub uptime_seconds: f64,
    pub state: ClusterState,
    /// The generation of the last completed reload (0 before any).
    pub generation: u32,
    /// During a reload: the generation it brings the workers to.
    pub reloading_to: Option<u32>,
    /// N: the worker slots.
    pub workers: u32,
    /// Slots whose own worker is ready.
    pub ready: u32,
    /// Restarts of every slot, summed.
    pub restarts: u64,
    /// `--max-age` replacements of every slot, summed.
    #[serde(default)]
    pub recycles: u64,
    /// Rolling reloads that completed, and that were abandoned, since the start.
    pub reloads_completed: u64,
    pub reloads_abandoned: u64,
    pub sockets: Vec<SocketView>,
    /// The control socket's path.
    pub control: Option<String>,
    /// What the message thread refused, by reason, since the start.
    #[serde(default)]
    pub messages: MessageCounts,
    /// `--env-file`, on the control socket only: for each generation a worker runs, the SHA-256
    /// of the env files' bytes that generation was started with.
    #[serde(default)]
    pub env_files: Vec<EnvFilesView>,
}

/// Which content of the env files a generation's workers have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFilesView {
    pub generation: u32,
    pub sha256: String,
}

/// What the message thread refused since the start, every worker together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    /// Lines longer than a message may be.
    pub too_long: u64,
    /// Lines that were not a message (answered with the error).
    pub invalid: u64,
    /// `info` requests made while one of the same worker's was being answered.
    pub busy: u64,
    /// Messages for a worker whose queue was full (the sum of every slot's `messages_dropped`).
    pub queue_full: u64,
    /// Times a worker spent its budget and was not read for a while.
    pub throttled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Not every worker has been ready yet since the start.
    Starting,
    Running,
    Reloading,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketView {
    pub name: String,
    pub address: String,
    /// `per_worker` (a socket per slot, steered) or `shared`.
    #[serde(default)]
    pub mode: String,
    /// Per worker: how connections are steered (`--steer`: `hash`, `client`, `cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// `WORKER_ID`: the slot, or with groups the id within its group.
    pub id: u32,
    /// `WORKER_GROUP`, with Procfile groups.
    #[serde(default)]
    pub group: Option<String>,
    /// What this row is: the slot's own worker (or the slot itself, while it has none), a reload's
    /// or restart's new worker not ready yet, or a worker recluster stopped that has not exited.
    pub role: WorkerRole,
    pub pid: Option<i32>,
    pub generation: u32,
    pub state: WorkerState,
    /// Unix time, in seconds.
    pub started_at: Option<f64>,
    pub ready_at: Option<f64>,
    /// How many times this slot's worker was started again: after it ended, or by `ctl restart`.
    pub restarts: u64,
    /// How many times this slot's worker was replaced for its age (`--max-age`).
    #[serde(default)]
    pub recycles: u64,
    pub last_exit: Option<LastExit>,
    /// CPU time (user + system): of the slot's workers that ended (from the reaped `rusage`) and
    /// of the processes of this one's group now.
    pub cpu_seconds: f64,
    /// Resident memory of its process group, in bytes; with `--cgroups` and a memory controller,
    /// the memory of its cgroup (its processes, children included, page cache included).
    pub rss_bytes: Option<u64>,
    /// The CPUs it is bound to (`--pin`, `--cpus`), as a list (`0-3,8`).
    pub cpus: Option<String>,
    /// The last `STATUS=` line it sent on its notify socket.
    pub status: Option<String>,
    /// How often the guards acted on this slot's worker.
    #[serde(default)]
    pub guards: GuardActions,
    /// Messages for this slot's workers dropped because their queue was full.
    #[serde(default)]
    pub messages_dropped: u64,
    /// With `--cgroups`: where `measure` reads its usage from its group instead of /proc.
    #[serde(skip)]
    pub cgroup: Option<crate::process::cgroup::tree::UsageFiles>,
}

/// How often each guard acted on a slot's worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardActions {
    /// Replaced (or stopped first) for using more than `--max-memory`.
    pub memory: u64,
    /// Stopped with SIGABRT for a missed or triggered `--watchdog`.
    pub watchdog: u64,
    /// Ended by the kernel's OOM killer in its cgroup (`--memory-max`).
    #[serde(default)]
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerRole {
    Slot,
    Replacement,
    Leaving,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Decided, not forked yet.
    Spawning,
    Starting,
    Ready,
    /// Serving what waits in its scaled-down slot's queue before it stops.
    Draining,
    Stopping,
    /// The slot's respawn is scheduled (backoff).
    Waiting,
    /// The slot's worker ended and `--restart` keeps it ended.
    Done,
    /// The slot's worker, or another of its group, gave up (`--max-restarts`) and the cluster
    /// went on without it (`--exit-on below:K`, `--critical`).
    #[serde(rename = "gave_up")]
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    pub pid: i32,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it (`SIGKILL`), if one did.
    pub signal: Option<String>,
    /// Why it ended, as recluster knows it.
    pub reason: String,
    /// The short form `ctl status` and the page show: `exit 0`, `SIGSEGV`, `replaced: reload`,
    /// `replaced: restart`, `replaced: memory`, `scaled down`, `SIGKILL, outside` (a signal
    /// recluster did not send).
    #[serde(default)]
    pub what: String,
    /// Unix time, in seconds.
    pub at: f64,
}

impl LastExit {
    /// The short form: `what`, or from the status where an older server sent none.
    pub fn short(&self) -> String {
        if !self.what.is_empty() {
            return self.what.clone();
        }
        match (&self.code, &self.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => signal.clone(),
            (None, None) => "?".to_string(),
        }
    }
}

impl Snapshot {
    /// Adds what /proc says now: each live worker's resident memory and the CPU time its group's
    /// processes have used so far — or, for a worker in a cgroup of its own, what its group says
    /// (exact, children included, without walking /proc).
    pub fn measure(&mut self) {
        let pgids: Vec<i32> = self
            .workers
            .iter()
            .filter(|w| w.cgroup.as_ref().is_none_or(|files| !files.complete()))
            .filter_map(|w| w.pid)
            .collect();
        let found = crate::process::usage::group_usage(&pgids);
        for worker in &mut self.workers {
            if let (Some(files), Some(_)) = (&worker.cgroup, worker.pid)
                && files.complete()
            {
                let (memory, cpu) = files.read();
                worker.rss_bytes = memory;
                worker.cpu_seconds += cpu.unwrap_or(0.0);
                continue;
            }
            if let Some(usage) = worker.pid.and_then(|pid| found.get(&pid)) {
                worker.rss_bytes = Some(usage.rss_bytes);
                worker.cpu_seconds += usage.cpu_seconds;
            }
        }
    }

    /// The table `ctl status` prints for a person, with control characters escaped.
    pub fn table(&self) -> String {
        let c = &self.cluster;
        let mut out = String::new();
        let name = c
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" ({n})"));
        let generation = match c.reloading_to {
            Some(to) => format!("generation {} → {to}", c.generation),
            None => format!("generation {}", c.generation),
        };
        // Recycles (--max-age) beside restarts, once there are any.
        let recycles = match c.recycles {
            0 => String::new(),
            n => format!(
                ", {}",
                crate::text::plural::plural(n, "recycle", "recycles")
            ),
        };
        let _ = writeln!(
            out,
            "recluster pid {}{name}: {}, {generation}, {}/{} ready, {}{recycles}, up {}",
            c.pid,
            c.state.name(),
            c.ready,
            c.workers,
            crate::text::plural::plural(c.restarts, "restart", "restarts"),
            short_duration(c.uptime_seconds)
        );
        for socket in &c.sockets {
            let _ = writeln!(
                out,
                "listening on {} ({}, {}{})",
                socket.address,
                socket.name,
                socket.mode.replace('_', "-"),
                socket
                    .steering
                    .as_ref()
                    .map(|s| format!(", steered by {s}"))
                    .unwrap_or_default()
            );
        }
        if let Some(control) = &c.control {
            let _ = writeln!(out, "control socket {control}");
        }
        for env in &c.env_files {
            let _ = writeln!(
                out,
                "env files of generation {}: sha256 {}",
                env.generation, env.sha256
            );
        }
        let now = c.started_at + c.uptime_seconds;
        let _ = writeln!(
            out,
            "\n{:>4} {:>7} {:>4} {:<9} {:>6} {:>5} {:<21} {:>7} {:>7} {:<7} STATUS",
            "ID", "PID", "GEN", "STATE", "UPTIME", "RSTRT", "LAST EXIT", "CPU s", "RSS MiB", "CPUS"
        );
        for w in &self.workers {
            let pid = w.pid.map_or("-".to_string(), |p| p.to_string());
            let state = match w.role {
                WorkerRole::Slot => w.state.name().to_string(),
                WorkerRole::Replacement => format!("new:{}", w.state.name()),
                WorkerRole::Leaving => format!("old:{}", w.state.name()),
            };
            let uptime = w
                .started_at
                .map_or("-".to_string(), |s| short_duration(now - s));
            let last = w.last_exit.as_ref().map_or("-".to_string(), |e| {
                format!("{} {}", e.short(), coarse_age(now - e.at))
            });
            let rss = w
                .rss_bytes
                .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
            let status = crate::text::escape::controls(w.status.as_deref().unwrap_or(""));
            let id = match &w.group {
                Some(group) => truncate(&format!("{group}.{}", w.id), 10),
                None => w.id.to_string(),
            };
            let line = format!(
                "{:>4} {:>7} {:>4} {:<9} {:>6} {:>5} {:<21} {:>7.2} {:>7} {:<7} {status}",
                id,
                pid,
                w.generation,
                state,
                uptime,
                w.restarts,
                truncate(&last, 21),
                w.cpu_seconds,
                rss,
                truncate(w.cpus.as_deref().unwrap_or("any"), 7),
            );
            let _ = writeln!(out, "{}", truncate(line.trim_end(), 100));
        }
        // What a worker or a server wrote (STATUS= texts, names, addresses) must not act on the
        // terminal: every line escaped, the STATUS already before it was cut to width.
        let mut safe = String::with_capacity(out.len());
        for line in out.lines() {
            safe.push_str(&crate::text::escape::controls(line));
            safe.push('\n');
        }
        safe
    }
}

impl ClusterState {
    /// Its name, as the JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClusterState::Starting => "starting",
            ClusterState::Running => "running",
            ClusterState::Reloading => "reloading",
            ClusterState::Stopping => "stopping",
        }
    }
}

impl WorkerState {
    /// Its name, as the JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Spawning => "spawning",
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Stopping => "stopping",
            WorkerState::Waiting => "waiting",
            WorkerState::Done => "done",
            WorkerState::GaveUp => "gave_up",
        }
    }
}

impl WorkerView {
    /// A row with nothing measured or counted yet.
    pub fn new(id: u32, role: WorkerRole, generation: u32, state: WorkerState) -> WorkerView {
        WorkerView {
            id,
            group: None,
            role,
            pid: None,
            generation,
            state,
            started_at: None,
            ready_at: None,
            restarts: 0,
            recycles: 0,
            last_exit: None,
            cpu_seconds: 0.0,
            rss_bytes: None,
            cpus: None,
            status: None,
            guards: GuardActions::default(),
            messages_dropped: 0,
            cgroup: None,
        }
    }
}

/// `45s`, `12m3s`, `3h5m`, `2d4h`: how long, in a table or on the page.
pub fn short_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// How long ago, in its largest unit only (`12s`, `5m`, `3h`, `2d`): the LAST EXIT column.
fn coarse_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// At most `width` characters, with `…` where it was cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cluster of one worker, for the tests of those who read snapshots.
    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            cluster: ClusterView {
                pid: 4242,
                name: None,
                started_at: 1_000.0,
                uptime_seconds: 3_725.0,
                state: ClusterState::Running,
                generation: 2,
                reloading_to: None,
                workers: 2,
                ready: 2,
                restarts: 1,
                recycles: 0,
                reloads_completed: 0,
                reloads_abandoned: 0,
                env_files: Vec::new(),
                sockets: vec![SocketView {
                    name: "listen".to_string(),
                    address: "127.0.0.1:3000".to_string(),
                    mode: "per_worker".to_string(),
                    steering: Some("client".to_string()),
                }],
                control: Some("/run/recluster/4242.sock".to_string()),
                messages: MessageCounts::default(),
            },
            workers: vec![WorkerView {
                id: 0,
                group: None,
                role: WorkerRole::Slot,
                pid: Some(4243),
                generation: 2,
                state: WorkerState::Ready,
                started_at: Some(4_000.0),
                ready_at: Some(4_001.0),
                restarts: 1,
                recycles: 0,
                last_exit: Some(LastExit {
                    pid: 4200,
                    code: None,
                    signal: Some("SIGKILL".to_string()),
                    reason: "killed by a signal recluster did not send".to_string(),
                    what: "SIGKILL, outside".to_string(),
                    at: 3_999.0,
                }),
                cpu_seconds: 1.5,
                rss_bytes: Some(10 << 20),
                cpus: Some("0-1".to_string()),
                status: Some("x".repeat(200)),
                guards: GuardActions::default(),
                messages_dropped: 0,
                cgroup: None,
            }],
        }
    }

    #[test]
    fn the_table_fits_100_columns_and_shows_each_worker() {
        let table = sample().table();
        assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
        assert!(table.contains("4243"), "{table}");
        assert!(table.contains("SIGKILL, outside 12m"), "{table}");
        assert!(table.contains("1h2m"), "{table}");
    }

    #[test]
    fn recycles_show_beside_restarts_once_there_are_any() {
        let mut snapshot = sample();
        assert!(!snapshot.table().contains("recycle"), "none yet");
        snapshot.cluster.recycles = 3;
        let table = snapshot.table();
        assert!(table.contains("1 restart, 3 recycles, up"), "{table}");
    }

    #[test]
    fn a_status_text_cannot_act_on_the_terminal() {
        let mut snapshot = sample();
        snapshot.workers[0].status = Some("\u{1b}]0;owned\u{7}\u{1b}[1A\u{1b}[2K\rfine".into());
        snapshot.cluster.name = Some("n\u{9b}2J".into());
        let table = snapshot.table();
        assert!(
            !table
                .chars()
                .any(|c| c != '\n' && crate::text::escape::acts_on_terminal(c)),
            "{table:?}"
        );
        assert!(table.contains("\\x1b]0;owned"), "{table}");
        assert!(table.contains("(n\\x9b2J)"), "{table}");
        assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    }

    #[test]
    fn the_json_uses_base_units_and_lowercase_states() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["workers"][0]["rss_bytes"], 10 << 20);
        assert_eq!(json["workers"][0]["state"], "ready");
        assert_eq!(json["cluster"]["state"], "running");
        assert_eq!(json["workers"][0]["last_exit"]["signal"], "SIGKILL");
    }
}
