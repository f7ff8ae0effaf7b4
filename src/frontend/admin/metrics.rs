//! `/metrics`: the cluster in the Prometheus text format (0.0.4), or OpenMetrics 1.0 when the
//! scraper asks for it in `Accept`. Base units (seconds, bytes), counters end in `_total`,
//! per-worker series are labelled by `worker_id` — never by pid, which would make a new series
//! at every respawn. Read when scraped, from the status snapshot and /proc; nothing is sampled in
//! the background. The standard `process_*` metrics describe recluster itself.

use std::fmt::Write as _;

use crate::supervisor::snapshot::{MessageCounts, Snapshot, WorkerRole, WorkerState};

pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.contains("application/openmetrics-text")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Info,
}

struct Writer {
    out: String,
    openmetrics: bool,
}

impl Writer {
    /// A metric family's HELP and TYPE lines. `name` is the sample name (with `_total` for a
    /// counter, `_info` for an info metric); OpenMetrics names the family without that suffix.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (family, kind_name) = match (kind, self.openmetrics) {
            (Kind::Counter, true) => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            (Kind::Counter, false) => (name, "counter"),
            (Kind::Info, true) => (name.strip_suffix("_info").unwrap_or(name), "info"),
            (Kind::Info, false) | (Kind::Gauge, _) => (name, "gauge"),
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind_name}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// What /proc says of recluster itself.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SelfProcess {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl SelfProcess {
    pub fn read() -> SelfProcess {
        let mut me = SelfProcess::default();
        // SAFETY: sysconf has no memory effects.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
                libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            )
        };
        // SAFETY: getpid has no memory effects.
        if let Some(stat) = crate::process::procfs::stat(unsafe { libc::getpid() }) {
            me.cpu_seconds = stat.cpu_ticks as f64 / ticks;
            me.virtual_bytes = stat.vsize_bytes;
            me.resident_bytes = stat.rss_pages * page;
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            if let Some(boot) = boot {
                me.start_time = boot as f64 + stat.start_ticks as f64 / ticks;
            }
        }
        me.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            me.max_fds = limit.rlim_cur;
        }
        me
    }
}

/// A slot's labels: `worker_id`, and `group` with Procfile groups.
fn labels_of<'a>(
    x: &'a crate::supervisor::snapshot::WorkerView,
    id: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("worker_id", id)];
    if let Some(group) = &x.group {
        labels.push(("group", group.as_str()));
    }
    labels
}

/// The exposition of `snapshot` (measured) and of recluster itself.
pub fn render(snapshot: &Snapshot, me: &SelfProcess, openmetrics: bool) -> String {
    let mut w = Writer {
        out: String::new(),
        openmetrics,
    };
    write_workers(&mut w, snapshot);
    write_slots(&mut w, snapshot);
    write_messages(&mut w, &snapshot.cluster.messages);
    write_reloads(&mut w, snapshot);
    write_process(&mut w, me);
    if openmetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// The workers alive by state, and the number of slots.
fn write_workers(w: &mut Writer, snapshot: &Snapshot) {
    let c = &snapshot.cluster;
    // The states a live process can be in.
    let states = [
        WorkerState::Spawning,
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Draining,
        WorkerState::Stopping,
    ];
    w.family(
        "recluster_workers",
        Kind::Gauge,
        "Worker processes alive, by state (new and old workers of a reload included).",
    );
    for state in states {
        let count = snapshot
            .workers
            .iter()
            .filter(|x| x.pid.is_some() && x.state == state)
            .count();
        w.sample(
            "recluster_workers",
            &[("state", state.name())],
            count as f64,
        );
    }
    w.family("recluster_worker_slots", Kind::Gauge, "Worker slots: N.");
    w.sample("recluster_worker_slots", &[], f64::from(c.workers));
}

/// One sample per slot for each per-worker family (labelled `worker_id`, and `group`).
fn write_slots(w: &mut Writer, snapshot: &Snapshot) {
    let slots: Vec<_> = snapshot
        .workers
        .iter()
        .filter(|x| x.role == WorkerRole::Slot)
        .collect();
    let ids: Vec<String> = slots.iter().map(|x| x.id.to_string()).collect();
    w.family(
        "recluster_worker_ready",
        Kind::Gauge,
        "1 if the slot's worker is ready, else 0.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        let ready = x.state == WorkerState::Ready;
        w.sample(
            "recluster_worker_ready",
            &labels_of(x, id),
            f64::from(u8::from(ready)),
        );
    }
    w.family(
        "recluster_worker_gave_up",
        Kind::Gauge,
        "1 if the slot gave up (--max-restarts) and the cluster went on without it, else 0.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        let gave_up = x.state == WorkerState::GaveUp;
        w.sample(
            "recluster_worker_gave_up",
            &labels_of(x, id),
            f64::from(u8::from(gave_up)),
        );
    }
    w.family(
        "recluster_worker_restarts_total",
        Kind::Counter,
        "Times the slot's worker was started again: after it ended, or by ctl restart.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        w.sample(
            "recluster_worker_restarts_total",
            &labels_of(x, id),
            x.restarts as f64,
        );
    }
    w.family(
        "recluster_worker_recycles_total",
        Kind::Counter,
        "Times the slot's worker was replaced for having run --max-age (not counted as restarts).",
    );
    for (x, id) in slots.iter().zip(&ids) {
        w.sample(
            "recluster_worker_recycles_total",
            &labels_of(x, id),
            x.recycles as f64,
        );
    }
    w.family(
        "recluster_worker_start_time_seconds",
        Kind::Gauge,
        "When the slot's current worker started, in Unix seconds.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        if let Some(started) = x.started_at {
            w.sample(
                "recluster_worker_start_time_seconds",
                &labels_of(x, id),
                started,
            );
        }
    }
    w.family(
        "recluster_worker_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time of the slot's workers, across respawns.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        w.sample(
            "recluster_worker_cpu_seconds_total",
            &labels_of(x, id),
            x.cpu_seconds,
        );
    }
    w.family(
        "recluster_worker_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the slot's worker's process group.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        if let Some(bytes) = x.rss_bytes {
            w.sample(
                "recluster_worker_resident_memory_bytes",
                &labels_of(x, id),
                bytes as f64,
            );
        }
    }
    w.family(
        "recluster_worker_guard_actions_total",
        Kind::Counter,
        "Times a guard acted on the slot's worker: memory (--max-memory), watchdog (--watchdog).",
    );
    for (x, id) in slots.iter().zip(&ids) {
        for (guard, count) in [("memory", x.guards.memory), ("watchdog", x.guards.watchdog)] {
            w.sample(
                "recluster_worker_guard_actions_total",
                &[labels_of(x, id), vec![("guard", guard)]].concat(),
                count as f64,
            );
        }
    }
    w.family(
        "recluster_worker_oom_kills_total",
        Kind::Counter,
        "Times the kernel's OOM killer ended the slot's worker in its cgroup (--cgroups, --memory-max).",
    );
    for (x, id) in slots.iter().zip(&ids) {
        w.sample(
            "recluster_worker_oom_kills_total",
            &labels_of(x, id),
            x.guards.oom_kills as f64,
        );
    }
    w.family(
        "recluster_worker_messages_dropped_total",
        Kind::Counter,
        "Messages for the slot's workers dropped because their queue was full.",
    );
    for (x, id) in slots.iter().zip(&ids) {
        w.sample(
            "recluster_worker_messages_dropped_total",
            &labels_of(x, id),
            x.messages_dropped as f64,
        );
    }
}

/// What the message thread dropped or throttled.
fn write_messages(w: &mut Writer, m: &MessageCounts) {
    w.family(
        "recluster_messages_dropped_total",
        Kind::Counter,
        "Lines from workers' message sockets not delivered, by reason: too_long, invalid, busy (an info while one is answered), queue_full (the target's queue).",
    );
    for (reason, count) in [
        ("too_long", m.too_long),
        ("invalid", m.invalid),
        ("busy", m.busy),
        ("queue_full", m.queue_full),
    ] {
        w.sample(
            "recluster_messages_dropped_total",
            &[("reason", reason)],
            count as f64,
        );
    }
    w.family(
        "recluster_messages_throttled_total",
        Kind::Counter,
        "Times a worker sent faster than its message budget and was not read until it earned it back.",
    );
    w.sample(
        "recluster_messages_throttled_total",
        &[],
        m.throttled as f64,
    );
}

/// The generation, the reloads by result, and the build.
fn write_reloads(w: &mut Writer, snapshot: &Snapshot) {
    let c = &snapshot.cluster;
    w.family(
        "recluster_generation",
        Kind::Gauge,
        "The generation of the last completed rolling reload (0 before any).",
    );
    w.sample("recluster_generation", &[], f64::from(c.generation));
    w.family(
        "recluster_reloads_total",
        Kind::Counter,
        "Rolling reloads that ended, by result.",
    );
    w.sample(
        "recluster_reloads_total",
        &[("result", "completed")],
        c.reloads_completed as f64,
    );
    w.sample(
        "recluster_reloads_total",
        &[("result", "abandoned")],
        c.reloads_abandoned as f64,
    );
    if !c.sockets.is_empty() {
        w.family(
            "recluster_socket_info",
            Kind::Info,
            "Each listening socket: its mode (per_worker, shared) and, per worker, how new connections are steered (hash, client, cpu).",
        );
        for socket in &c.sockets {
            w.sample(
                "recluster_socket_info",
                &[
                    ("name", &socket.name),
                    ("address", &socket.address),
                    ("mode", &socket.mode),
                    ("steering", socket.steering.as_deref().unwrap_or("none")),
                ],
                1.0,
            );
        }
    }
    w.family("recluster_build_info", Kind::Info, "The recluster build.");
    w.sample(
        "recluster_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("RECLUSTER_COMMIT_ID")),
            ("linking", env!("RECLUSTER_LINKING")),
        ],
        1.0,
    );
}

/// The standard `process_*` families, of recluster itself.
fn write_process(w: &mut Writer, me: &SelfProcess) {
    w.family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent by recluster in seconds.",
    );
    w.sample("process_cpu_seconds_total", &[], me.cpu_seconds);
    w.family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size of recluster in bytes.",
    );
    w.sample(
        "process_resident_memory_bytes",
        &[],
        me.resident_bytes as f64,
    );
    w.family(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size of recluster in bytes.",
    );
    w.sample("process_virtual_memory_bytes", &[], me.virtual_bytes as f64);
    w.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of recluster since the Unix epoch in seconds.",
    );
    w.sample("process_start_time_seconds", &[], me.start_time);
    w.family(
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors of recluster.",
    );
    w.sample("process_open_fds", &[], me.open_fds as f64);
    w.family(
        "process_max_fds",
        Kind::Gauge,
        "Maximum number of open file descriptors of recluster.",
    );
    w.sample("process_max_fds", &[], me.max_fds as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_each_format_wants() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "cluster": {"pid": 1, "name": null, "started_at": 0.0, "uptime_seconds": 1.0,
                "state": "running", "generation": 2, "reloading_to": null, "workers": 1,
                "ready": 1, "restarts": 3, "reloads_completed": 2, "reloads_abandoned": 1,
                "sockets": [], "control": null},
            "workers": [{"id": 0, "role": "slot", "pid": 5, "generation": 2, "state": "ready",
                "started_at": 10.5, "ready_at": 11.0, "restarts": 3, "recycles": 4, "last_exit": null,
                "cpu_seconds": 0.25, "rss_bytes": 4096, "cpus": null, "status": "a \"q\""}]
        }))
        .unwrap();
        let text = render(&snapshot, &SelfProcess::default(), false);
        assert!(
            text.contains("# TYPE recluster_worker_restarts_total counter"),
            "{text}"
        );
        assert!(
            text.contains("recluster_worker_restarts_total{worker_id=\"0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("recluster_worker_recycles_total{worker_id=\"0\"} 4"),
            "recycles apart from restarts: {text}"
        );
        assert!(
            text.contains("recluster_reloads_total{result=\"abandoned\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("recluster_workers{state=\"ready\"} 1"),
            "{text}"
        );
        assert!(!text.contains("pid=\""), "never labelled by pid");
        assert!(!text.contains("# EOF"));
        let open = render(&snapshot, &SelfProcess::default(), true);
        assert!(
            open.contains("# TYPE recluster_worker_restarts counter"),
            "{open}"
        );
        assert!(open.contains("# TYPE recluster_build info"), "{open}");
        assert!(open.ends_with("# EOF\n"));
    }
}
