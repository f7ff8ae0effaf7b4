//! `--max-memory`: a worker whose process group uses more than the limit, in three samples in a
//! row, is replaced the way a one-slot reload does it — a new worker started beside it, the old
//! one stopped once the new one is ready — or, when N + K leaves no room, stopped first and
//! respawned. Only that worker is touched. The samples come every `--memory-interval`, only
//! while `--max-memory` is set — unless the workers' cgroups wake recluster when one crosses the
//! limit (`memory_by_events`: a v1 threshold, or v2's `memory.high` reached): then nothing is
//! sampled, and one crossing replaces the worker.

use std::time::Instant;

use super::worker::{Retire, State, Worker, later};
use super::{Action, Cluster, Key, Occupant, Place, Report, Role};

/// How many samples in a row over the limit make a worker be replaced.
const STRIKES: u32 = 3;

impl Cluster {
    /// Schedules the next memory sample, if `--max-memory` is set.
    pub(super) fn schedule_memory_sample(&mut self, now: Instant) {
        if self.memory_by_events {
            return;
        }
        if let Some((_, interval)) = self.policy.max_memory {
            let at = later(now, interval);
            self.memory_due = Some(at);
            self.timers.push(at, Key::Memory);
        }
    }

    /// The sample is due: the process groups of every slot's running worker.
    pub(super) fn memory_timer(&mut self) -> Vec<Action> {
        self.memory_due = None;
        let pids: Vec<i32> = self
            .slots
            .iter()
            .filter_map(|s| match s.occupant {
                Occupant::Worker(w) if matches!(w.state, State::Ready { .. }) => w.pid(),
                _ => None,
            })
            .collect();
        vec![Action::SampleMemory { pids }]
    }

    /// What the sample found, in bytes per process group.
    pub fn on_memory(&mut self, usage: &[(i32, u64)], now: Instant) -> Vec<Action> {
        let Some((limit, _)) = self.policy.max_memory else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for &(pid, bytes) in usage {
            if bytes <= limit {
                self.memory_strikes.remove(&pid);
                continue;
            }
            let strikes = self.memory_strikes.entry(pid).or_insert(0);
            *strikes += 1;
            if *strikes >= STRIKES {
                self.memory_strikes.remove(&pid);
                actions.extend(self.replace_for_memory(pid, bytes, limit, now));
            }
        }
        if self.is_running() {
            self.schedule_memory_sample(now);
        }
        actions
    }

    /// `--max-memory` is watched by the workers' cgroups (a threshold each): no sample is taken.
    /// Before `start`.
    pub fn memory_by_events(&mut self) {
        self.memory_by_events = true;
    }

    /// Worker `pid`'s group crossed the limit, and uses `bytes` now: above it, the worker is
    /// replaced at once (the group's usage is exact, and the kernel said it crossed).
    /// One that cannot be replaced yet (a new worker on its way, a reload, not yet a slot's own)
    /// is replaced once it can, unless it crosses back below first.
    pub fn on_memory_crossed(&mut self, pid: i32, bytes: u64, now: Instant) -> Vec<Action> {
        let Some((limit, _)) = self.policy.max_memory else {
            return Vec::new();
        };
        if bytes <= limit {
            self.memory_pending.remove(&pid);
            return Vec::new();
        }
        self.memory_pending.insert(pid, bytes);
        self.retry_memory(now)
    }

    /// Worker `pid`'s group reached `memory.high` (= the limit; v2), and uses `bytes` now: it is
    /// replaced as for a crossing, even where the kernel's reclaim has brought its usage back
    /// below the limit (it is throttled there, and would stay so).
    pub fn on_memory_high(&mut self, pid: i32, bytes: u64, now: Instant) -> Vec<Action> {
        if self.policy.max_memory.is_none() {
            return Vec::new();
        }
        self.memory_pending.insert(pid, bytes);
        self.retry_memory(now)
    }

    /// Replaces the workers over the limit that can be replaced now; forgets those gone.
    pub(super) fn retry_memory(&mut self, now: Instant) -> Vec<Action> {
        let Some((limit, _)) = self.policy.max_memory else {
            return Vec::new();
        };
        if !self.is_running() || self.reload.is_some() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let pending: Vec<(i32, u64)> = self.memory_pending.iter().map(|(p, b)| (*p, *b)).collect();
        for (pid, bytes) in pending {
            match self.places.get(&pid) {
                Some(&Place::Slot(id)) if self.slots[id as usize].replacement.is_none() => {
                    self.memory_pending.remove(&pid);
                    actions.extend(self.replace_for_memory(pid, bytes, limit, now));
                }
                Some(_) => {} // not yet
                None => {
                    self.memory_pending.remove(&pid);
                }
            }
        }
        actions
    }

    fn replace_for_memory(
        &mut self,
        pid: i32,
        bytes: u64,
        limit: u64,
        now: Instant,
    ) -> Vec<Action> {
        let Some(&Place::Slot(id)) = self.places.get(&pid) else {
            return Vec::new();
        };
        let index = id as usize;
        if self.slots[index].replacement.is_some() || self.reload.is_some() {
            return Vec::new(); // a new worker is on its way already
        }
        let room = self.room_for_one_more();
        self.slots[index].guard_actions.memory += 1;
        self.report(Report::OverMemory {
            id,
            pid,
            bytes,
            limit,
            stop_first: !room,
        });
        if room {
            let generation = self.slots[index].generation;
            let ticket = self.issue(id, Role::Replacement, generation);
            self.slots[index].replacement = Some(Worker::spawning(ticket));
            self.slots[index].replacing = Retire::Memory;
            return vec![Action::Spawn(ticket)];
        }
        let Occupant::Worker(old) = self.take_occupant(index) else {
            return Vec::new();
        };
        // Its respawn is due at once; the loop carries it out on its next pass.
        let actions = self.discard(old, Retire::Memory, now).into_iter().collect();
        self.schedule_spawn(index, now);
        actions
    }
}
