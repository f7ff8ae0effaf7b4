//! `--watchdog`: systemd's watchdog, per worker. A ready worker must send `WATCHDOG=1` at least
//! every interval (`WATCHDOG_USEC=` changes it, `WATCHDOG=trigger` fails it at once); one that
//! misses it gets SIGABRT (systemd's WatchdogSignal, so it can dump core), SIGKILL after
//! `--kill-timeout`, and is restarted as a failure. Each watched worker has one deadline in the
//! timers, `set` (replaced) by each ping, so a worker that pings without pause costs nothing
//! more than one that pings once; `WATCHDOG_USEC=` is taken within `INTERVAL_MIN..=INTERVAL_MAX`.

use std::time::{Duration, Instant};

use crate::process::signal::Sig;
use crate::worker_io::notify::Watchdog;

use super::worker::{self, later};
use super::{Action, Cluster, Key, Occupant, Place, Report};

/// The shortest interval `WATCHDOG_USEC=` may set: finer than the loop can honour anyway.
pub const INTERVAL_MIN: Duration = Duration::from_millis(1);
/// The longest: a day (a watchdog that need not hear from the worker for longer is not watching).
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);

impl Cluster {
    /// `--watchdog`: a ready worker starts its watchdog (`WATCHDOG_USEC` from the policy).
    pub(super) fn arm_watchdog(&mut self, pid: i32, now: Instant) {
        if let Some(interval) = self.policy.watchdog {
            let due = later(now, interval);
            self.watchdogs.insert(pid, (due, interval));
            self.timers.set(due, Key::Watchdog(pid));
        }
    }

    /// A worker's `WATCHDOG=1`, `WATCHDOG_USEC=` or `WATCHDOG=trigger`.
    pub(super) fn on_watchdog(&mut self, pid: i32, message: Watchdog, now: Instant) -> Vec<Action> {
        let Some(&(_, interval)) = self.watchdogs.get(&pid) else {
            return Vec::new(); // no watchdog, or not ready yet
        };
        let interval = match message {
            Watchdog::Trigger => return self.fail_watchdog(pid, true, now),
            Watchdog::Ping => interval,
            Watchdog::Interval(usec) => {
                Duration::from_micros(usec).clamp(INTERVAL_MIN, INTERVAL_MAX)
            }
        };
        let due = later(now, interval);
        self.watchdogs.insert(pid, (due, interval));
        self.timers.set(due, Key::Watchdog(pid));
        Vec::new()
    }

    /// A worker that ended: its watchdog goes.
    pub(super) fn disarm_watchdog(&mut self, pid: i32) {
        if self.watchdogs.remove(&pid).is_some() {
            self.timers.cancel(Key::Watchdog(pid));
        }
    }

    /// A watchdog deadline came up.
    pub(super) fn watchdog_timer(&mut self, pid: i32, at: Instant, now: Instant) -> Vec<Action> {
        if !self.holds(at, Key::Watchdog(pid)) {
            return Vec::new();
        }
        self.fail_watchdog(pid, false, now)
    }

    /// SIGABRT (systemd's WatchdogSignal, so it can dump core), SIGKILL after `--kill-timeout`;
    /// once it is gone, it is restarted as a failure.
    fn fail_watchdog(&mut self, pid: i32, triggered: bool, now: Instant) -> Vec<Action> {
        let Some((_, interval)) = self.watchdogs.remove(&pid) else {
            return Vec::new();
        };
        self.timers.cancel(Key::Watchdog(pid));
        // Only a slot's own ready worker has a watchdog that counts (a retired one is leaving).
        let Some(&Place::Slot(id)) = self.places.get(&pid) else {
            return Vec::new();
        };
        let index = id as usize;
        // Taken out and put back, so the count of ready slots and the steering follow.
        let Occupant::Worker(mut worker) = self.take_occupant(index) else {
            unreachable!("a slot's pid has its worker");
        };
        let kill_at = later(now, self.policy.kill_timeout);
        let stopped = worker.is_ready()
            && worker
                .stop(Sig::ABRT, worker::StopReason::Watchdog, Some(kill_at))
                .is_some();
        self.put_occupant(index, Occupant::Worker(worker));
        if !stopped {
            return Vec::new();
        }
        self.timers.push(kill_at, Key::Worker(pid));
        self.slots[index].guard_actions.watchdog += 1;
        self.report(Report::WatchdogFailed {
            id,
            pid,
            interval,
            triggered,
        });
        vec![Action::SignalGroup {
            pgid: pid,
            signal: Sig::ABRT,
        }]
    }
}
