//! What happened, as the cluster reports it: values, not text. The cluster decides and records
//! `Report`s; the loop turns each into one log line at its level (`text` writes it). Tests assert
//! on the values.

mod text;

use std::time::Duration;

use log::Level;

use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;

#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Starting {
        workers: usize,
    },
    /// A worker process started (`generation` for a reload's new worker).
    Started {
        id: u32,
        pid: i32,
        generation: Option<u32>,
    },
    /// A process started for a decision that no longer stood: stopped at once.
    StaleSpawn {
        id: u32,
        pid: i32,
    },
    /// `STATUS=` from a worker's notify socket.
    WorkerStatus {
        id: u32,
        pid: i32,
        status: String,
    },
    WorkerReady {
        id: u32,
        pid: i32,
    },
    AllReady {
        workers: usize,
    },
    MissedReadyTimeout {
        id: u32,
        pid: i32,
        timeout: Duration,
    },
    /// `--max-memory`: a worker's process group used `bytes`, over `limit`, three samples in a
    /// row (or its cgroup crossed `limit` once; on v2, reached it as `memory.high`); it is replaced (`stop_first`: stopped, then respawned, with no room for both).
    OverMemory {
        id: u32,
        pid: i32,
        bytes: u64,
        limit: u64,
        stop_first: bool,
    },
    /// `--watch`: files changed during the reload to `target`; one more reload follows it.
    ReloadQueued {
        target: u32,
    },
    /// `--max-age`: slot `id`'s worker `pid` has run for `ran`; a new worker starts beside it.
    Recycling {
        id: u32,
        pid: i32,
        ran: Duration,
    },
    /// A new worker started outside a reload (`--max-memory`, `--max-age`, `ctl restart`) did
    /// not become ready; the old one keeps serving.
    ReplacementFailed {
        id: u32,
        reason: String,
    },
    /// A ready worker missed its watchdog (`interval`), or triggered it.
    WatchdogFailed {
        id: u32,
        pid: i32,
        interval: Duration,
        triggered: bool,
    },
    /// SIGKILL for a stopped worker's group after `--kill-timeout`.
    KillTimeout {
        id: u32,
        pid: i32,
        signal: Sig,
        timeout: Duration,
    },
    /// A slot's own worker ended, and what follows.
    Ended {
        id: u32,
        pid: Option<i32>,
        status: ProcessStatus,
        then: Then,
    },
    /// A worker recluster had stopped (no longer a slot's own) was reaped.
    Stopped {
        id: u32,
        pid: i32,
        status: ProcessStatus,
    },
    AdoptedReaped {
        pid: i32,
        status: ProcessStatus,
    },
    /// The kernel's OOM killer ended a worker in its cgroup (`--memory-max`); its end follows.
    OomKilled {
        id: u32,
        pid: i32,
    },
    StopRequested {
        origin: Origin,
        signal: Sig,
        workers: usize,
        timeout: Duration,
    },
    SecondStopSignal {
        signal: Sig,
    },
    /// Slot `id` gave up outside a `--critical` group: the `stopped` other workers of its group
    /// are stopped, and the rest of the cluster serves on.
    GroupGivenUp {
        id: u32,
        stopped: usize,
    },
    /// `--exit-on below:K`: only `able` slots can run, fewer than `minimum`.
    BelowMinimum {
        able: usize,
        minimum: u32,
    },
    /// `--stop-delay`: the workers keep serving this long before they get the stop signal.
    StopDelayed {
        delay: Duration,
    },
    /// A second stop signal during `--stop-delay` ended it early.
    StopDelaySkipped {
        /// The signal that asked again; none: `ctl stop`.
        signal: Option<Sig>,
    },
    /// The stop signal again within `window` of the one that began the stop: the same request.
    RepeatedStopSignal {
        signal: Sig,
        window: Duration,
    },
    IgnoredWhileStopping {
        signal: Sig,
    },
    Forwarding {
        signal: Sig,
        groups: usize,
    },
    ReloadCancelled,
    /// `--kill-timeout` ran out while stopping; `workers` still run (0: only what they left).
    StopTimeout {
        workers: usize,
        signal: Sig,
        timeout: Duration,
    },
    Finished,
    WaitingForLeftBehind,
    Exiting {
        code: i32,
    },
    TooManyWorkers {
        workers: usize,
    },
    /// Slot `id` was added (or, with groups, given back).
    ScaledUp {
        origin: Origin,
        workers: usize,
        id: u32,
    },
    LastWorkerKept,
    /// Slot `id` was removed (or, with groups, retired).
    ScaledDown {
        origin: Origin,
        workers: usize,
        id: u32,
    },
    /// A scaled-down slot's worker serves what waits in its queue before it is stopped.
    Draining {
        id: u32,
        pid: i32,
    },
    /// Its queue is empty (or `--kill-timeout` ran out with `waiting` connections left).
    Drained {
        id: u32,
        pid: i32,
        waiting: u32,
    },
    ReloadBegun {
        origin: Origin,
        target: u32,
        workers: usize,
        /// The generation of the reload this one supersedes.
        superseding: Option<u32>,
    },
    /// A reload's new worker is ready and takes its slot (`old`: the worker it stops).
    ReplacementReady {
        id: u32,
        generation: u32,
        pid: i32,
        old: Option<i32>,
    },
    ReloadComplete {
        target: u32,
        workers: usize,
    },
    ReloadAbandoned {
        target: u32,
        reason: String,
    },
    /// `ctl restart`: slot `id`'s worker `pid` is replaced (a new worker starts beside it), or,
    /// without one, the slot's worker is started now.
    RestartBegun {
        id: u32,
        pid: Option<i32>,
    },
}

/// Who asked for a change: a signal to recluster, or a request on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Signal,
    Control,
    /// Files changed under `--watch`.
    Watch,
}

/// What follows a slot's worker's end.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// The cluster is stopping: nothing.
    Nothing,
    /// A reload's new worker takes the slot over when it is ready.
    ReplacementTakesOver {
        generation: u32,
    },
    /// `--restart` says no.
    NotRestarted {
        mode: String,
    },
    Restarting {
        delay: Duration,
    },
    /// `--exit-on any-exit`: this end stops the cluster, with its status.
    EndsCluster,
    /// More than `max_restarts` within `window`: the cluster stops (`ends_cluster`), or only this
    /// slot, and with groups its group, stays ended (`--exit-on below:K`, `--critical`).
    GivingUp {
        max_restarts: u32,
        window: Duration,
        ends_cluster: bool,
    },
}

impl Report {
    pub fn level(&self) -> Level {
        match self {
            Report::MissedReadyTimeout { .. }
            | Report::WatchdogFailed { .. }
            | Report::ReloadAbandoned { .. }
            | Report::Ended {
                then: Then::GivingUp { .. } | Then::EndsCluster,
                ..
            }
            | Report::BelowMinimum { .. } => Level::Error,
            Report::GroupGivenUp { .. } => Level::Warn,
            Report::Drained { waiting, .. } if *waiting > 0 => Level::Warn,
            Report::OverMemory { .. } | Report::ReplacementFailed { .. } => Level::Warn,
            Report::StaleSpawn { .. }
            | Report::KillTimeout { .. }
            | Report::SecondStopSignal { .. }
            | Report::StopTimeout { .. }
            | Report::TooManyWorkers { .. }
            | Report::LastWorkerKept => Level::Warn,
            Report::Stopped { status, .. } if *status == ProcessStatus::Killed(Sig::KILL) => {
                Level::Warn
            }
            Report::WorkerStatus { .. }
            | Report::WorkerReady { .. }
            | Report::AdoptedReaped { .. }
            | Report::IgnoredWhileStopping { .. }
            | Report::Forwarding { .. }
            | Report::WaitingForLeftBehind => Level::Debug,
            _ => Level::Info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_worker_by_its_label_wherever_the_text_does() {
        let report = Report::ReplacementFailed {
            id: 12,
            reason: "it exited".to_string(),
        };
        assert_eq!(
            report.line(|id| format!("web.{}", id - 10)),
            "the new worker web.2 failed (it exited); the old one keeps serving"
        );
        assert_eq!(report.line(|id| id.to_string()), report.to_string());
    }

    #[test]
    fn a_worker_s_status_is_logged_with_its_control_characters_escaped() {
        let report = Report::WorkerStatus {
            id: 1,
            pid: 42,
            status: "ok\x1b]0;owned\x07\nrecluster: worker 2 died\u{202e}x\u{9b}".to_string(),
        };
        assert_eq!(
            report.to_string(),
            "worker 1 (pid 42): ok\\x1b]0;owned\\x07\\nrecluster: worker 2 died\\u{202e}x\\x9b"
        );
    }
}
