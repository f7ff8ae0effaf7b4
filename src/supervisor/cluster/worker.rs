//! One worker's lifecycle as a state machine: decided (`Spawning`, until the loop forks it), then
//! `Starting` (waiting to count as ready, with that wait's own timers), `Ready`, and `Stopping`
//! (with why and when its group gets SIGKILL). Each variant carries only the timers that mean
//! something in it, so `next_timer` is a match and no impossible combination can be written.

use std::time::{Duration, Instant};

use crate::config::policy::ReadyMode;
use crate::config::validated::Policy;
use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;

use super::super::action::Ticket;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Worker {
    /// What the cluster decided to start; the loop must present it back (`Cluster::spawned`).
    pub ticket: Ticket,
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum State {
    /// Decided; the loop has not forked it yet.
    Spawning,
    /// Running, not yet ready.
    Starting {
        pid: i32,
        started: Instant,
        wait: Wait,
    },
    Ready {
        pid: i32,
        started: Instant,
        /// When it became ready.
        since: Instant,
    },
    /// Its slot was scaled away (per-worker sockets): no new connection reaches it, and it
    /// goes on serving until its queue is empty; recluster looks at the queue at `check_at` (none
    /// while a look is out). Then it is stopped.
    Draining {
        pid: i32,
        started: Instant,
        since: Instant,
        check_at: Option<Instant>,
    },
    /// recluster sent it `signal`; SIGKILL for its group at `kill_at` (none while the whole cluster
    /// stops: the stop's own deadline applies).
    Stopping {
        pid: i32,
        started: Instant,
        signal: Sig,
        kill_at: Option<Instant>,
        reason: StopReason,
    },
}

/// What a starting worker waits for (`--ready`), with the deadlines of that wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Wait {
    /// `started`: ready once it has been up for `--min-uptime`.
    Uptime { ready_at: Instant },
    /// `notify`: READY=1, by `--ready-timeout`.
    Notify { ready_by: Instant },
    /// `listening`: a listening socket in its group, by `--ready-timeout`; the next look at
    /// `probe_at` (none while a probe is out).
    Listening {
        ready_by: Instant,
        probe_at: Option<Instant>,
    },
}

/// Why recluster stopped a worker: decides whether its end counts as clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    /// The cluster is stopping (a signal, a crash-loop give-up, or nothing left to run).
    ClusterStop,
    /// No longer needed: an old worker after its replacement became ready, a scaled-down slot, a
    /// new worker of an abandoned or superseded reload.
    Retired(Retire),
    /// It did not become ready within `--ready-timeout`: a failed start.
    MissedReadyTimeout,
    /// It missed its `--watchdog` (or triggered it): a failure.
    Watchdog,
}

/// Why a worker was no longer needed, for `ctl status` and the page ("replaced: reload").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// A rolling reload's new worker took over its slot.
    Reload,
    /// `ctl restart`'s new worker took over its slot.
    Restart,
    /// It used more than `--max-memory`.
    Memory,
    /// It had run for `--max-age`.
    Age,
    /// Its slot was scaled down.
    ScaledDown,
    /// A new worker whose reload was abandoned or superseded, or whose decision went stale.
    NotNeeded,
}

/// How long `--ready listening` waits between two looks at a starting worker.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

impl Worker {
    pub fn spawning(ticket: Ticket) -> Worker {
        Worker {
            ticket,
            state: State::Spawning,
        }
    }

    pub fn id(&self) -> u32 {
        self.ticket.identity.id
    }

    pub fn generation(&self) -> u32 {
        self.ticket.identity.generation
    }

    /// Its pid (and process group), once forked.
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Spawning => None,
            State::Starting { pid, .. }
            | State::Ready { pid, .. }
            | State::Draining { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
        }
    }

    pub fn started(&self) -> Option<Instant> {
        match self.state {
            State::Spawning => None,
            State::Starting { started, .. }
            | State::Ready { started, .. }
            | State::Draining { started, .. }
            | State::Stopping { started, .. } => Some(started),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// The forked process, now waiting to be ready as `--ready` says.
    pub fn start(&mut self, pid: i32, now: Instant, policy: &Policy) {
        let ready_by = later(now, policy.ready_timeout);
        let wait = match policy.ready {
            ReadyMode::Started => Wait::Uptime {
                ready_at: later(now, policy.min_uptime),
            },
            ReadyMode::Notify => Wait::Notify { ready_by },
            ReadyMode::Listening(_) => Wait::Listening {
                ready_by,
                probe_at: Some(now),
            },
        };
        self.state = State::Starting {
            pid,
            started: now,
            wait,
        };
    }

    /// Starting → Ready; false if it was not starting.
    pub fn become_ready(&mut self, now: Instant) -> bool {
        match self.state {
            State::Starting { pid, started, .. } => {
                self.state = State::Ready {
                    pid,
                    started,
                    since: now,
                };
                true
            }
            _ => false,
        }
    }

    /// Marks it stopped with `signal`; `kill_after` arms SIGKILL. Returns the pid to signal (none
    /// if it was never forked).
    pub fn stop(
        &mut self,
        signal: Sig,
        reason: StopReason,
        kill_at: Option<Instant>,
    ) -> Option<i32> {
        let (pid, started) = (self.pid()?, self.started()?);
        self.state = State::Stopping {
            pid,
            started,
            signal,
            kill_at,
            reason,
        };
        Some(pid)
    }

    /// Every deadline it has now; the timer heap holds each of them.
    pub fn timers(&self) -> [Option<Instant>; 2] {
        match self.state {
            State::Spawning | State::Ready { .. } => [None, None],
            State::Starting { wait, .. } => match wait {
                Wait::Uptime { ready_at } => [Some(ready_at), None],
                Wait::Notify { ready_by } => [Some(ready_by), None],
                Wait::Listening { ready_by, probe_at } => [Some(ready_by), probe_at],
            },
            State::Draining { check_at, .. } => [check_at, None],
            State::Stopping { kill_at, .. } => [kill_at, None],
        }
    }

    /// Whether it ended cleanly with `status`: exit 0, or death by the stop signal recluster sent
    /// it — except after a missed `--ready-timeout`, which is a failure whatever it died of.
    pub fn ended_cleanly(&self, status: ProcessStatus) -> bool {
        match self.state {
            State::Stopping {
                reason: StopReason::MissedReadyTimeout | StopReason::Watchdog,
                ..
            } => false,
            State::Stopping { signal, .. } => {
                status.success() || status == ProcessStatus::Killed(signal)
            }
            _ => status.success(),
        }
    }

    /// Stopped by recluster as a failure: a missed `--ready-timeout` or `--watchdog`.
    pub fn failed(&self) -> bool {
        matches!(
            self.state,
            State::Stopping {
                reason: StopReason::MissedReadyTimeout | StopReason::Watchdog,
                ..
            }
        )
    }
}

/// `now + duration`, saturating: a duration too long for the clock means "never" in practice.
pub(super) fn later(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}
