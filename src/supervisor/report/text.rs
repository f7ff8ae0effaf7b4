//! How a `Report` reads in the log: one function per family of reports (workers starting, a
//! worker's end, the stop, scaling, reloads and restarts), the worker named by its label (`web.3`
//! with groups).

use std::fmt;

use humantime::format_duration;

use super::{Origin, Report, Then};
use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;

impl Report {
    /// The log line, with the worker named by `label` (`web.3` with groups) instead of its slot.
    pub fn line(&self, label: impl Fn(u32) -> String) -> String {
        Labelled {
            report: self,
            label: &label,
        }
        .to_string()
    }
}

impl Origin {
    /// `received SIGHUP`, or what was requested on the control socket.
    fn describe(self, signal: &str, requested: &str) -> String {
        match self {
            Origin::Signal => format!("received {signal}"),
            Origin::Control => requested.to_string(),
            Origin::Watch => "files changed (--watch)".to_string(),
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
    /// The text, the worker named by `label` (its slot, or `web.3` with groups): one function per
    /// family of reports.
    fn render(&self, f: &mut fmt::Formatter<'_>, label: &dyn Fn(u32) -> String) -> fmt::Result {
        match self {
            Report::Starting { .. }
            | Report::Started { .. }
            | Report::StaleSpawn { .. }
            | Report::WorkerStatus { .. }
            | Report::WorkerReady { .. }
            | Report::AllReady { .. }
            | Report::MissedReadyTimeout { .. } => self.render_start(f, label),
            Report::OverMemory { .. }
            | Report::WatchdogFailed { .. }
            | Report::KillTimeout { .. }
            | Report::Ended { .. }
            | Report::GroupGivenUp { .. }
            | Report::Stopped { .. }
            | Report::AdoptedReaped { .. }
            | Report::OomKilled { .. } => self.render_end(f, label),
            Report::StopRequested { .. }
            | Report::BelowMinimum { .. }
            | Report::StopDelayed { .. }
            | Report::StopDelaySkipped { .. }
            | Report::SecondStopSignal { .. }
            | Report::RepeatedStopSignal { .. }
            | Report::IgnoredWhileStopping { .. }
            | Report::Forwarding { .. }
            | Report::StopTimeout { .. }
            | Report::Finished
            | Report::WaitingForLeftBehind
            | Report::Exiting { .. } => self.render_stop(f),
            Report::TooManyWorkers { .. }
            | Report::ScaledUp { .. }
            | Report::LastWorkerKept
            | Report::ScaledDown { .. }
            | Report::Draining { .. }
            | Report::Drained { .. } => self.render_scale(f, label),
            Report::ReloadCancelled
            | Report::ReloadBegun { .. }
            | Report::ReplacementReady { .. }
            | Report::ReloadComplete { .. }
            | Report::ReloadAbandoned { .. }
            | Report::RestartBegun { .. }
            | Report::Recycling { .. }
            | Report::ReloadQueued { .. }
            | Report::ReplacementFailed { .. } => self.render_reload(f, label),
        }
    }

    /// Reports about workers starting and becoming ready.
    fn render_start(
        &self,
        f: &mut fmt::Formatter<'_>,
        label: &dyn Fn(u32) -> String,
    ) -> fmt::Result {
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
            _ => unreachable!("render sends only these reports here"),
        }
    }

    /// Reports about a worker's limits and its end.
    fn render_end(&self, f: &mut fmt::Formatter<'_>, label: &dyn Fn(u32) -> String) -> fmt::Result {
        match self {
            Report::OverMemory {
                id,
                pid,
                bytes,
                limit,
                stop_first,
            } => {
                let id = label(*id);
                // At or below the limit only where its v2 group reached memory.high (= the
                // limit), and the kernel's reclaim brought it back.
                let over = if bytes > limit {
                    "above"
                } else {
                    "after reaching"
                };
                write!(
                    f,
                    "worker {id} (pid {pid}) uses {} MiB, {over} --max-memory {} MiB: {}",
                    bytes >> 20,
                    limit >> 20,
                    if *stop_first {
                        "stopping it, then starting a new one (no room for both)"
                    } else {
                        "replacing it"
                    }
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
                    Then::EndsCluster => write!(
                        f,
                        "; stopping the cluster with its status (--exit-on any-exit)"
                    ),
                    Then::GivingUp {
                        max_restarts,
                        window,
                        ends_cluster,
                    } => write!(
                        f,
                        "; it needed more than {} within {}: giving up (--max-restarts, --restart-window){}",
                        plural(*max_restarts as usize, "restart", "restarts"),
                        format_duration(*window),
                        if *ends_cluster {
                            ""
                        } else {
                            " on this worker only; the rest serves on"
                        }
                    ),
                }
            }
            Report::GroupGivenUp { id, stopped } => write!(
                f,
                "worker {} gave up outside the --critical groups: its group stays stopped ({} stopped), the rest serves on",
                label(*id),
                plural(*stopped, "other worker", "other workers")
            ),
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
            Report::OomKilled { id, pid } => write!(
                f,
                "worker {} (pid {pid}) was oom-killed: the kernel's OOM killer ended it in its cgroup, at its memory limit",
                label(*id)
            ),
            Report::AdoptedReaped { pid, status } => {
                write!(f, "reaped adopted process {pid} ({status})")
            }
            _ => unreachable!("render sends only these reports here"),
        }
    }

    /// Reports about the stop, the signals that ask for it, and the exit.
    fn render_stop(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
                    Origin::Control | Origin::Watch => {
                        format!("stop requested ({signal} to the workers)")
                    }
                },
                plural(*workers, "worker", "workers"),
                format_duration(*timeout)
            ),
            Report::BelowMinimum { able, minimum } => write!(
                f,
                "only {} can run, fewer than {minimum} (--exit-on below:{minimum}): stopping the cluster",
                plural(*able, "worker slot", "worker slots")
            ),
            Report::StopDelayed { delay } => write!(
                f,
                "/readyz answers 503 now; every worker keeps serving for {} (--stop-delay) before it is stopped",
                format_duration(*delay)
            ),
            Report::StopDelaySkipped {
                signal: Some(signal),
            } => write!(
                f,
                "received {signal} again during --stop-delay: stopping the workers now"
            ),
            Report::StopDelaySkipped { signal: None } => {
                write!(f, "ctl stop during --stop-delay: stopping the workers now")
            }
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
            _ => unreachable!("render sends only these reports here"),
        }
    }

    /// Reports about scaling: workers added, slots drained and released.
    fn render_scale(
        &self,
        f: &mut fmt::Formatter<'_>,
        label: &dyn Fn(u32) -> String,
    ) -> fmt::Result {
        match self {
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
            _ => unreachable!("render sends only these reports here"),
        }
    }

    /// Reports about rolling reloads and restarts on request.
    fn render_reload(
        &self,
        f: &mut fmt::Formatter<'_>,
        label: &dyn Fn(u32) -> String,
    ) -> fmt::Result {
        match self {
            Report::ReplacementFailed { id, reason } => {
                let id = label(*id);
                write!(
                    f,
                    "the new worker {id} failed ({reason}); the old one keeps serving"
                )
            }
            Report::ReloadCancelled => write!(f, "the reload under way is cancelled"),
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
            Report::ReloadQueued { target } => write!(
                f,
                "files changed (--watch) during the reload to generation {target}: one more reload follows it"
            ),
            Report::Recycling { id, pid, ran } => {
                let id = label(*id);
                // Whole seconds (below one, whole milliseconds): the figure, not the noise.
                let ran = if ran.as_secs() > 0 {
                    std::time::Duration::from_secs(ran.as_secs())
                } else {
                    std::time::Duration::from_millis(ran.as_millis() as u64)
                };
                write!(
                    f,
                    "worker {id} (pid {pid}) has run for {} (--max-age): recycling it, a new worker starts beside it",
                    format_duration(ran)
                )
            }
            _ => unreachable!("render sends only these reports here"),
        }
    }
}
