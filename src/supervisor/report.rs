//! What happened, as the cluster reports it: values, not text. The cluster decides and records
//! `Report`s; the loop turns each into one log line at its level. Tests assert on the values.

use std::fmt;
use std::time::Duration;

use humantime::format_duration;
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
    /// row; it is replaced (`stop_first`: stopped, then respawned, with no room for both).
    OverMemory {
        id: u32,
        pid: i32,
        bytes: u64,
        limit: u64,
        stop_first: bool,
    },
    /// A new worker started outside a reload (`--max-memory`) did not become ready; the old one
    /// keeps serving.
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
    StopRequested {
        origin: Origin,
        signal: Sig,
        workers: usize,
        timeout: Duration,
    },
    SecondStopSignal {
        signal: Sig,
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
    /// More than `max_restarts` within `window`: the cluster stops.
    GivingUp {
        max_restarts: u32,
        window: Duration,
    },
}

impl Report {
    /// The log line, with the worker named by `label` (`web.3` with groups) instead of its slot.
    pub fn line(&self, label: impl Fn(u32) -> String) -> String {
        Labelled {
            report: self,
            label: &label,
        }
        .to_string()
    }

    pub fn level(&self) -> Level {
        match self {
            Report::MissedReadyTimeout { .. }
            | Report::WatchdogFailed { .. }
            | Report::ReloadAbandoned { .. }
            | Report::Ended {
                then: Then::GivingUp { .. },
                ..
            } => Level::Error,
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

impl Origin {
    /// `received SIGHUP`, or what was requested on the control socket.
    fn describe(self, signal: &str, requested: &str) -> String {
        match self {
            Origin::Signal => format!("received {signal}"),
            Origin::Control => requested.to_string(),
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    crate::text::plural::plural(n as u64, one, many)
}

fn workers(n: usize) -> String {
    plural(n, "worker", "workers")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, &|id| id.to_string())
    }
}

/// A report written with its worker named by a label (`web.3`).
struct Labelled<'a> {
    report: &'a Report,
    label: &'a dyn Fn(u32) -> String,
}

impl fmt::Display for Labelled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.render(f, self.label)
    }
}

impl Report {
    /// The text, the worker named by `label` (its slot, or `web.3` with groups).
    fn render(&self, f: &mut fmt::Formatter<'_>, label: &dyn Fn(u32) -> String) -> fmt::Result {
        match self {
            Report::Starting { workers } => {
                write!(f, "starting {}", plural(*workers, "worker", "workers"))
            }
            Report::Started {
                id,
                pid,
                generation: None,
            } => {
                let id = label(*id);
                write!(f, "worker {id} started (pid {pid})")
            }
            Report::Started {
                id,
                pid,
                generation: Some(g),
            } => {
                let id = label(*id);
                write!(f, "worker {id} of generation {g} started (pid {pid})")
            }
            Report::StaleSpawn { id, pid } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) was started for a decision that no longer stands: stopping it"
                )
            }
            Report::WorkerStatus { id, pid, status } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}): {}",
                    crate::text::escape::controls(status)
                )
            }
            Report::WorkerReady { id, pid } => {
                let id = label(*id);
                write!(f, "worker {id} (pid {pid}) is ready")
            }
            Report::AllReady { workers: 1 } => write!(f, "the only worker is ready"),
            Report::AllReady { workers } => write!(f, "all {workers} workers are ready"),
            Report::MissedReadyTimeout { id, pid, timeout } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) was not ready within {}: stopping it as a failed start (--ready-timeout)",
                    format_duration(*timeout)
                )
            }
            Report::OverMemory {
                id,
                pid,
                bytes,
                limit,
                stop_first,
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) uses {} MiB, above --max-memory {} MiB: {}",
                    bytes >> 20,
                    limit >> 20,
                    if *stop_first {
                        "stopping it, then starting a new one (no room for both)"
                    } else {
                        "replacing it"
                    }
                )
            }
            Report::ReplacementFailed { id, reason } => {
                let id = label(*id);
                write!(
                    f,
                    "the new worker {id} failed ({reason}); the old one keeps serving"
                )
            }
            Report::WatchdogFailed {
                id,
                pid,
                triggered: true,
                ..
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) triggered its watchdog: sending SIGABRT, restarting it as a failure"
                )
            }
            Report::WatchdogFailed {
                id, pid, interval, ..
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) sent no WATCHDOG=1 for {}: sending SIGABRT, restarting it as a failure (--watchdog)",
                    format_duration(*interval)
                )
            }
            Report::KillTimeout {
                id,
                pid,
                signal,
                timeout,
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) still running {} after {signal}: sending SIGKILL to its process group (--kill-timeout)",
                    format_duration(*timeout)
                )
            }
            Report::Ended {
                id,
                pid,
                status,
                then,
            } => {
                let id = label(*id);
                match pid {
                    Some(pid) => write!(f, "worker {id} (pid {pid}) {status}")?,
                    None => write!(f, "worker {id} {status}")?,
                }
                match then {
                    Then::Nothing => Ok(()),
                    Then::ReplacementTakesOver { generation } => write!(
                        f,
                        "; its replacement of generation {generation} takes over when ready"
                    ),
                    Then::NotRestarted { mode } => {
                        write!(f, "; not restarting it (--restart {mode})")
                    }
                    Then::Restarting { delay } if delay.is_zero() => write!(f, ", restarting it"),
                    Then::Restarting { delay } => {
                        write!(f, ", restarting in {}", format_duration(*delay))
                    }
                    Then::GivingUp {
                        max_restarts,
                        window,
                    } => write!(
                        f,
                        "; it needed more than {} within {}: giving up (--max-restarts, --restart-window)",
                        plural(*max_restarts as usize, "restart", "restarts"),
                        format_duration(*window)
                    ),
                }
            }
            Report::Stopped { id, pid, status } => {
                let id = label(*id);
                write!(f, "worker {id} (pid {pid}) {status} after being stopped")?;
                if *status == ProcessStatus::Killed(Sig::KILL) {
                    // The exit status is that of each slot's last worker: this one was replaced
                    // (reload, restart, --max-memory) or its slot removed.
                    write!(
                        f,
                        " (it had been replaced or removed, so recluster's exit status does not count it)"
                    )?;
                }
                Ok(())
            }
            Report::AdoptedReaped { pid, status } => {
                write!(f, "reaped adopted process {pid} ({status})")
            }
            Report::StopRequested {
                origin,
                signal,
                workers,
                timeout,
            } => write!(
                f,
                "{}: stopping {} (--kill-timeout {})",
                match origin {
                    Origin::Signal => format!("received {signal}"),
                    Origin::Control => format!("stop requested ({signal} to the workers)"),
                },
                plural(*workers, "worker", "workers"),
                format_duration(*timeout)
            ),
            Report::SecondStopSignal { signal } => write!(
                f,
                "received {signal} again while stopping: killing every worker now"
            ),
            Report::RepeatedStopSignal { signal, window } => write!(
                f,
                "received {signal} again within {} of the first: the same stop request (another {signal} later kills every worker at once)",
                format_duration(*window)
            ),
            Report::IgnoredWhileStopping { signal } => {
                write!(f, "ignoring {signal} while stopping")
            }
            Report::Forwarding { signal, groups } => {
                write!(f, "forwarding {signal} to {groups} worker process groups")
            }
            Report::ReloadCancelled => write!(f, "the reload under way is cancelled"),
            Report::StopTimeout {
                workers,
                signal,
                timeout,
            } => {
                let remaining = match workers {
                    0 => "processes left behind by workers are".to_string(),
                    1 => "1 worker is".to_string(),
                    n => format!("{n} workers are"),
                };
                write!(
                    f,
                    "{remaining} still running {} after {signal}: sending SIGKILL (--kill-timeout)",
                    format_duration(*timeout)
                )
            }
            Report::Finished => write!(f, "every worker has ended and none is to be restarted"),
            Report::WaitingForLeftBehind => write!(
                f,
                "every worker has exited; waiting for the processes they left behind"
            ),
            Report::Exiting { code } => write!(f, "exiting with status {code}"),
            Report::TooManyWorkers { workers } => write!(
                f,
                "received SIGTTIN with {workers} workers, the most recluster runs: ignoring it"
            ),
            Report::ScaledUp {
                origin,
                workers,
                id,
            } => write!(
                f,
                "{}: scaling up to {} (worker {} added)",
                origin.describe("SIGTTIN", "scale requested"),
                self::workers(*workers),
                label(*id)
            ),
            Report::LastWorkerKept => write!(
                f,
                "received SIGTTOU with one worker left: keeping it (send TERM to stop the cluster)"
            ),
            Report::ScaledDown {
                origin,
                workers,
                id,
            } => write!(
                f,
                "{}: scaling down to {} (worker {} removed)",
                origin.describe("SIGTTOU", "scale requested"),
                self::workers(*workers),
                label(*id)
            ),
            Report::Draining { id, pid } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) serves the connections waiting in its queue before it stops; new ones go to the other workers"
                )
            }
            Report::Drained {
                id,
                pid,
                waiting: 0,
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) has served its queue: stopping it"
                )
            }
            Report::Drained { id, pid, waiting } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} (pid {pid}) still has {waiting} connections waiting after --kill-timeout: stopping it anyway (they wait for a worker of this slot)"
                )
            }
            Report::ReloadBegun {
                origin,
                target,
                workers,
                superseding: None,
            } => write!(
                f,
                "{}: reloading {} to generation {target}",
                origin.describe("SIGHUP", "reload requested"),
                self::workers(*workers)
            ),
            Report::ReloadBegun {
                origin,
                target,
                superseding: Some(old),
                ..
            } => write!(
                f,
                "{} during the reload to generation {old}: reloading to generation {target} instead",
                origin.describe("SIGHUP", "reload requested")
            ),
            Report::ReplacementReady {
                id,
                generation,
                pid,
                old: Some(old),
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} of generation {generation} (pid {pid}) is ready: stopping pid {old}"
                )
            }
            Report::ReplacementReady {
                id,
                generation,
                pid,
                old: None,
            } => {
                let id = label(*id);
                write!(
                    f,
                    "worker {id} of generation {generation} (pid {pid}) is ready"
                )
            }
            Report::ReloadComplete { target, workers } => {
                write!(
                    f,
                    "reload to generation {target} complete: {}",
                    self::workers(*workers)
                )
            }
            Report::ReloadAbandoned { target, reason } => write!(
                f,
                "reload to generation {target} abandoned: {reason}; the current workers keep serving (send SIGHUP to try again)"
            ),
            Report::RestartBegun { id, pid: Some(pid) } => {
                let id = label(*id);
                write!(
                    f,
                    "restarting worker {id} (pid {pid}) on request: a new worker starts beside it"
                )
            }
            Report::RestartBegun { id, pid: None } => {
                let id = label(*id);
                write!(f, "restarting worker {id} on request")
            }
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
