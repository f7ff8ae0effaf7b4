//! Scaling with TTIN and TTOU: a new slot at the end, or the highest slot removed — its worker
//! stopped (with per-worker sockets, once it has served what waits in its queue: new
//! connections are steered away from it at once), a spawn or replacement not carried out yet
//! dropped. Groups scale one group at a time: `add_slot` and `remove_slot` take the slot the
//! group's layout names, and a slot in the middle is retired rather than removed.

use std::time::{Duration, Instant};

use super::worker::{Retire, State, StopReason, Worker, later};
use super::{Action, Cluster, Key, Occupant, Origin, Place, Report, Slot};

impl Cluster {
    pub(super) fn scale_up(&mut self, origin: Origin, now: Instant) -> Vec<Action> {
        if self.slots.len() >= crate::config::policy::MAX_WORKERS as usize {
            self.report(Report::TooManyWorkers {
                workers: self.slots.len(),
            });
            return Vec::new();
        }
        self.add_slot(self.slots.len() as u32, false, origin, now)
    }

    pub(super) fn scale_down(&mut self, now: Instant, origin: Origin) -> Vec<Action> {
        if self.slots.len() <= 1 {
            self.report(Report::LastWorkerKept);
            return Vec::new();
        }
        self.remove(self.slots.len() as u32 - 1, false, now, origin)
    }

    /// One worker more, in slot `id`: a new slot after the last, or (groups) a retired one back.
    /// With `held` (a group still waiting for `--after`), it starts when its group is released.
    pub fn add_slot(&mut self, id: u32, held: bool, origin: Origin, now: Instant) -> Vec<Action> {
        let index = id as usize;
        // The generation that last succeeded; a reload under way replaces it like the others.
        let mut slot = Slot::new(id, self.generation);
        slot.held = held;
        match self.slots.get(index) {
            None => {
                debug_assert_eq!(index, self.slots.len(), "slots are added in order");
                self.slots.push(slot);
            }
            Some(old) => {
                debug_assert_eq!(old.occupant, Occupant::Retired, "slot {id} is in use");
                self.slots[index] = slot;
                self.retired -= 1;
            }
        }
        self.report(Report::ScaledUp {
            origin,
            workers: self.workers(),
            id,
        });
        if held {
            return Vec::new();
        }
        if let Some(reload) = self.reload.as_mut().filter(|r| r.scope.contains(id)) {
            // During a reload the new slot's worker is the reload's to start, as the replacement
            // of a slot waiting to respawn: within N + K, at the generation the reload brings.
            // (Its wait has no deadline of its own; an abandoned reload lets it run.)
            reload.cursor = reload.cursor.min(index);
            self.put_occupant(index, Occupant::Waiting { at: now });
            return self.advance_reload(now);
        }
        vec![self.spawn_slot(index)]
    }

    /// Groups: one worker fewer, in slot `id`, which is retired (the group's layout keeps its
    /// place for when the group grows back).
    pub fn remove_slot(&mut self, id: u32, now: Instant, origin: Origin) -> Vec<Action> {
        self.remove(id, true, now, origin)
    }

    /// Slot `id`'s worker is stopped (with per-worker sockets, once it has served its queue)
    /// and anything on its way for the slot is dropped; the slot is retired, or else (the last
    /// one) removed.
    fn remove(&mut self, id: u32, retire: bool, now: Instant, origin: Origin) -> Vec<Action> {
        let index = id as usize;
        let occupant = self.take_occupant(index);
        let slot = if !retire {
            self.slots.pop().expect("slot id is the last")
        } else {
            let slot = std::mem::replace(&mut self.slots[index], Slot::new(id, self.generation));
            self.slots[index].occupant = Occupant::Retired;
            self.retired += 1;
            slot
        };
        self.steering_changed = true;
        self.report(Report::ScaledDown {
            origin,
            workers: self.workers(),
            id,
        });
        let mut actions = Vec::new();
        let mut draining = false;
        if let Occupant::Worker(worker) = occupant {
            match self.drain(worker, now) {
                Ok(()) => draining = true,
                Err(worker) => actions.extend(self.discard(worker, Retire::ScaledDown, now)),
            }
        }
        if let Some(worker) = slot.replacement {
            if let Some(reload) = self.reload.as_mut() {
                reload.in_flight -= 1;
            }
            actions.extend(self.discard(worker, Retire::NotNeeded, now));
        }
        if !draining {
            actions.push(Action::ReleaseSlot(slot.id));
        }
        // One slot fewer to replace, and N + K is one smaller.
        actions.extend(self.advance_reload(now));
        actions.extend(self.announce_if_all_ready());
        actions
    }

    /// A scaled-down slot's worker: with per-worker sockets, one that runs keeps serving what
    /// waits in its queue (new connections no longer reach it) and is stopped once that is empty.
    /// Any other is handed back, to be stopped now.
    fn drain(&mut self, worker: Worker, now: Instant) -> Result<(), Worker> {
        let (State::Starting { pid, started, .. } | State::Ready { pid, started, .. }) =
            worker.state
        else {
            return Err(worker);
        };
        if !self.policy.steered {
            return Err(worker);
        }
        let check_at = later(now, DRAIN_CHECK);
        let draining = Worker {
            state: State::Draining {
                pid,
                started,
                since: now,
                check_at: Some(check_at),
            },
            ..worker
        };
        self.places.insert(pid, Place::Leaving);
        self.leaving.insert(pid, draining);
        self.timers.push(check_at, Key::Worker(pid));
        self.report(Report::Draining {
            id: worker.id(),
            pid,
        });
        Ok(())
    }

    /// How many connections wait in the queue that the draining worker `pid` serves: once it is
    /// empty (and the steering has been in place for `DRAIN_GRACE`, so connections half-open when
    /// it changed have arrived), or `--kill-timeout` has passed, the worker is stopped.
    pub fn on_queue(&mut self, pid: i32, waiting: u32, now: Instant) -> Vec<Action> {
        let kill_timeout = self.policy.kill_timeout;
        let Some(worker) = self.leaving.get_mut(&pid) else {
            return Vec::new();
        };
        let State::Draining { since, .. } = worker.state else {
            return Vec::new();
        };
        let elapsed = now.saturating_duration_since(since);
        let done = waiting == 0 && elapsed >= DRAIN_GRACE;
        if !done && elapsed < kill_timeout {
            let check_at = later(now, DRAIN_CHECK);
            if let State::Draining { check_at: next, .. } = &mut worker.state {
                *next = Some(check_at);
            }
            self.timers.push(check_at, Key::Worker(pid));
            return Vec::new();
        }
        let id = worker.id();
        let (signal, kill_at) = (self.policy.stop_signal, later(now, kill_timeout));
        worker.stop(
            signal,
            StopReason::Retired(Retire::ScaledDown),
            Some(kill_at),
        );
        self.timers.push(kill_at, Key::Worker(pid));
        self.report(Report::Drained { id, pid, waiting });
        let mut actions = vec![Action::SignalGroup { pgid: pid, signal }];
        actions.extend(self.release_slot(id));
        actions
    }
}

/// How often a draining worker's queue is looked at.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// How long a drain lasts at least: a connection whose handshake began before the steering
/// changed still lands in the old queue (a round trip later).
const DRAIN_GRACE: Duration = Duration::from_millis(200);
