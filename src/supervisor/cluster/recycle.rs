//! `--max-age`: a worker that has run long enough is replaced the way a rolling reload replaces
//! it — a new worker beside it, the old one stopped once the new one is ready — so a program that
//! leaks is renewed without a moment of lower capacity.
//!
//! Each slot's own worker gets its deadline when it becomes ready: its start plus `--max-age`
//! plus its own share of `--max-age-jitter` (from its ticket's serial and the run's seed), so
//! slots started together fall due apart. A due slot joins a queue; the queue starts a new worker
//! only while N + K (`--reload-batch`) leaves room, never during a reload (which replaces the
//! worker anyway; if the reload is abandoned, the old worker is still due and the queue goes on),
//! and never for a slot whose worker is not ready or already has a new worker on its way. A new
//! worker that fails before it is ready leaves the old one serving; it is tried again after the
//! restart backoff (`--restart-delay` doubling up to `--restart-max-delay`), which never counts
//! toward the crash-loop limit. One deadline per worker in the timer heap: nothing is polled.

use std::time::{Duration, Instant};

use crate::config::validated::MaxAge;

use super::worker::{Retire, State, Worker, later};
use super::{Action, Cluster, Key, Occupant, Report, Role, backoff};

impl Cluster {
    /// Slot `index`'s own worker has just become ready (its first start, a respawn, or a new
    /// worker that took over): its `--max-age` deadline.
    pub(super) fn arm_recycle(&mut self, index: usize) {
        let Some(max_age) = self.policy.max_age else {
            return;
        };
        let slot = &self.slots[index];
        let Occupant::Worker(worker) = slot.occupant else {
            return;
        };
        let (Some(pid), Some(started)) = (worker.pid(), worker.started()) else {
            return;
        };
        if slot.once {
            return; // a one-shot group's worker runs to its end
        }
        let at = later(
            later(started, max_age.age),
            share(max_age, worker.ticket.serial),
        );
        let id = slot.id;
        self.slots[index].recycle = Some((pid, at));
        self.timers.push(at, Key::Recycle(id));
    }

    /// Whether `at` is still slot `id`'s recycle deadline: set for the worker it runs now, which
    /// is ready.
    pub(super) fn recycle_holds(&self, id: u32, at: Instant) -> bool {
        self.slots.get(id as usize).is_some_and(|slot| {
            matches!(slot.recycle, Some((pid, due)) if due == at
                && matches!(slot.occupant, Occupant::Worker(w) if w.pid() == Some(pid) && w.is_ready()))
        })
    }

    /// Slot `id`'s worker is due: it joins the queue, which starts what room allows.
    pub(super) fn recycle_timer(&mut self, id: u32, now: Instant) -> Vec<Action> {
        if !self.recycle_queue.contains(&id) {
            self.recycle_queue.push_back(id);
        }
        self.advance_recycles(now)
    }

    /// Starts new workers for the due slots, in the order they fell due, while N + K leaves room
    /// and no reload runs.
    pub(super) fn advance_recycles(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.is_running() {
            self.recycle_queue.clear();
            return actions;
        }
        if self.reload.is_some() {
            return actions; // it replaces them; if it is abandoned, they are still due
        }
        while let Some(&id) = self.recycle_queue.front() {
            let index = id as usize;
            let Some((pid, started)) = self.due_for_recycle(index, now) else {
                // Its worker ended, was replaced or scaled away: a new one has its own deadline.
                self.recycle_queue.pop_front();
                continue;
            };
            if self.slots[index].replacement.is_some() {
                // A new worker is on its way already (--max-memory, ctl restart): it renews the
                // slot, and if it fails the deadline is looked at again (`recycle_after_failure`).
                self.recycle_queue.pop_front();
                continue;
            }
            if !self.room_for_one_more() {
                break; // the next one starts once an old worker has gone
            }
            self.recycle_queue.pop_front();
            self.report(Report::Recycling {
                id,
                pid,
                ran: now.saturating_duration_since(started),
            });
            let generation = self.slots[index].generation;
            let ticket = self.issue(id, Role::Replacement, generation);
            self.slots[index].replacement = Some(Worker::spawning(ticket));
            self.slots[index].replacing = Retire::Age;
            actions.push(Action::Spawn(ticket));
        }
        actions
    }

    /// Slot `index`'s worker, by pid and start, if it is ready and past its recycle deadline.
    fn due_for_recycle(&self, index: usize, now: Instant) -> Option<(i32, Instant)> {
        let slot = self.slots.get(index)?;
        let (pid, due) = slot.recycle?;
        match slot.occupant {
            Occupant::Worker(Worker {
                state: State::Ready {
                    pid: own, started, ..
                },
                ..
            }) if own == pid && due <= now => Some((pid, started)),
            _ => None,
        }
    }

    /// Slot `index`'s new worker, started outside a reload, failed before it was ready, and the
    /// old one keeps serving. If that one is past its age, it is due again after the backoff —
    /// doubling with each failed recycle in a row, so a release that cannot start is not
    /// hammered.
    pub(super) fn recycle_after_failure(&mut self, index: usize, why: Retire, now: Instant) {
        let slot = &mut self.slots[index];
        if why == Retire::Age {
            slot.recycle_failures = slot.recycle_failures.saturating_add(1);
        }
        let Some((pid, due)) = slot.recycle else {
            return;
        };
        if due > now {
            return; // not due yet: its deadline is still in the heap
        }
        let delay = backoff(&self.policy, slot.recycle_failures.max(1));
        let at = later(now, delay);
        let id = slot.id;
        slot.recycle = Some((pid, at));
        self.timers.push(at, Key::Recycle(id));
    }

    /// A new worker took slot `index` over from `why`'s replacement: a recycle is counted.
    pub(super) fn recycled(&mut self, index: usize, why: Retire) {
        if why == Retire::Age {
            let slot = &mut self.slots[index];
            slot.recycle_count += 1;
            slot.recycle_failures = 0;
        }
    }
}

/// A worker's own part of the jitter, from its ticket's serial and the run's seed: spread evenly
/// over `[0, jitter)`, different for each worker, the same for the same inputs (so tests on a
/// synthetic clock can reproduce it).
pub(super) fn share(max_age: MaxAge, serial: u64) -> Duration {
    // splitmix64: a well-mixed 64-bit value from consecutive inputs.
    let mut x = max_age
        .seed
        .wrapping_add(serial.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
    max_age.jitter.mul_f64(fraction)
}
