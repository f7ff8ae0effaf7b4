//! Readiness (`--ready started|notify|listening`) and the deadlines of each worker: when a
//! starting worker counts as ready, what a missed `--ready-timeout` does, the `listening` probes,
//! and SIGKILL for a stopped worker that outlives `--kill-timeout`. A replacement that becomes
//! ready takes over its slot (`reload`); a slot's own worker that becomes ready may complete the
//! start, which the service manager then hears of.

use std::time::Instant;

use crate::config::policy::ReadyMode;
use crate::process::signal::Sig;

use super::worker::{PROBE_INTERVAL, State, StopReason, Wait, later};
use super::{Action, Cluster, Key, Occupant, Place, Report};

impl Cluster {
    /// `--ready listening`: what the probe of a worker's process group found, at `now` (after the
    /// probe, which may take a while on a busy machine): ready, or look again in a while.
    pub fn on_probed(&mut self, pid: i32, listening: bool, now: Instant) -> Vec<Action> {
        if listening {
            return self.on_ready(pid, now);
        }
        let next = later(now, PROBE_INTERVAL);
        if let Some(worker) = self.worker_mut(pid)
            && let State::Starting {
                wait: Wait::Listening { probe_at, .. },
                ..
            } = &mut worker.state
        {
            *probe_at = Some(next);
            self.timers.push(next, Key::Worker(pid));
        }
        Vec::new()
    }

    /// A worker (or a replacement) says, or shows, it is ready.
    pub(super) fn on_ready(&mut self, pid: i32, now: Instant) -> Vec<Action> {
        match self.places.get(&pid) {
            Some(&Place::Slot(id)) => self.became_ready(id as usize, now),
            Some(&Place::Replacement(id)) => self.promote(id as usize, now),
            _ => Vec::new(),
        }
    }

    /// A slot's own worker is ready; once all are, at start, the service manager hears of it.
    fn became_ready(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let Occupant::Worker(worker) = &mut self.slots[index].occupant else {
            return Vec::new();
        };
        if !worker.become_ready(now) {
            return Vec::new(); // already ready, or being stopped
        }
        let (id, pid) = (worker.id(), worker.pid().unwrap_or_default());
        self.report(Report::WorkerReady { id, pid });
        self.arm_watchdog(pid, now);
        self.ready += 1;
        self.steering_changed = true;
        self.arm_recycle(index);
        self.announce_if_all_ready()
    }

    /// `READY=1` for the service manager, once, when every slot's worker is first ready.
    /// Slots that gave up while the cluster went on (`exit_policy`) are not waited for.
    pub(super) fn announce_if_all_ready(&mut self) -> Vec<Action> {
        let n = self.workers() - self.given_up_slots();
        if self.announced_ready || self.ready < n || !self.is_running() {
            return Vec::new();
        }
        self.announced_ready = true;
        self.report(Report::AllReady { workers: n });
        vec![Action::NotifyManager(format!(
            "READY=1\nSTATUS={} ready",
            crate::text::plural::plural(n as u64, "worker", "workers")
        ))]
    }

    /// What is due at `now` for the worker `pid`, whose deadline `at` came up.
    pub(super) fn worker_timer(&mut self, pid: i32, at: Instant, now: Instant) -> Vec<Action> {
        if !self.holds(at, Key::Worker(pid)) {
            return Vec::new();
        }
        let place = self.places[&pid];
        let worker = *self.worker(pid).expect("holds found it");
        match worker.state {
            State::Starting { wait, .. } => {
                let (ready_at, ready_by, probe_at) = match wait {
                    Wait::Uptime { ready_at } => (Some(ready_at), None, None),
                    Wait::Notify { ready_by } => (None, Some(ready_by), None),
                    Wait::Listening { ready_by, probe_at } => (None, Some(ready_by), probe_at),
                };
                if ready_at.is_some_and(|t| t <= now) {
                    return self.on_ready(pid, now);
                }
                if ready_by.is_some_and(|t| t <= now) {
                    return self.missed_ready_timeout(pid, place, now);
                }
                // After the timeout check: a slow probe must never starve it.
                if probe_at.is_some_and(|t| t <= now) {
                    return self.probe(pid);
                }
                Vec::new()
            }
            State::Stopping {
                kill_at: Some(kill_at),
                ..
            } if kill_at <= now => self.kill_now(pid),
            State::Draining {
                check_at: Some(check_at),
                ..
            } if check_at <= now => {
                if let Some(worker) = self.worker_mut(pid)
                    && let State::Draining { check_at, .. } = &mut worker.state
                {
                    *check_at = None;
                }
                vec![Action::CheckQueue {
                    slot: worker.id(),
                    pid,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A starting worker's `--ready-timeout` ran out: a slot's own worker is stopped as a failed
    /// start (restarted with backoff once it is gone); a replacement abandons the reload.
    fn missed_ready_timeout(&mut self, pid: i32, place: Place, now: Instant) -> Vec<Action> {
        let timeout = self.policy.ready_timeout;
        if let Place::Replacement(id) = place {
            let generation = self.slots[id as usize]
                .replacement
                .map_or(0, |w| w.generation());
            let reason = format!(
                "worker {id} of generation {generation} (pid {pid}) was not ready within {} (--ready-timeout)",
                humantime::format_duration(timeout)
            );
            return self.replacement_failed(id as usize, &reason, now);
        }
        let (signal, kill_at) = (
            self.policy.stop_signal,
            later(now, self.policy.kill_timeout),
        );
        let worker = self.worker_mut(pid).expect("a starting worker");
        worker.stop(signal, StopReason::MissedReadyTimeout, Some(kill_at));
        let id = worker.id();
        self.report(Report::MissedReadyTimeout { id, pid, timeout });
        self.timers.push(kill_at, Key::Worker(pid));
        vec![Action::SignalGroup { pgid: pid, signal }]
    }

    /// `--ready listening`: look for the worker's socket now; `on_probed` schedules the next look.
    fn probe(&mut self, pid: i32) -> Vec<Action> {
        let ReadyMode::Listening(port) = self.policy.ready else {
            return Vec::new();
        };
        if let Some(worker) = self.worker_mut(pid)
            && let State::Starting {
                wait: Wait::Listening { probe_at, .. },
                ..
            } = &mut worker.state
        {
            *probe_at = None;
        }
        vec![Action::ProbeListening { pgid: pid, port }]
    }

    /// SIGKILL for the process group of a worker recluster stopped, once `--kill-timeout` has run
    /// out.
    fn kill_now(&mut self, pid: i32) -> Vec<Action> {
        let (timeout, signal) = (self.policy.kill_timeout, self.policy.stop_signal);
        let Some(worker) = self.worker_mut(pid) else {
            return Vec::new();
        };
        if let State::Stopping { kill_at, .. } = &mut worker.state {
            *kill_at = None;
        }
        let id = worker.id();
        self.report(Report::KillTimeout {
            id,
            pid,
            signal,
            timeout,
        });
        vec![Action::SignalGroup {
            pgid: pid,
            signal: Sig::KILL,
        }]
    }
}
