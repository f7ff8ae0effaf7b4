//! The rolling reload (SIGHUP), as decisions on the cluster's state. Slot by slot, at most
//! `--reload-batch` K at a time: start the new generation's worker beside the old one, wait until
//! it is ready, then stop the old one. Capacity never dips below N, and no new worker starts
//! while N + K are alive (old workers still draining count). A new worker that exits or misses
//! `--ready-timeout` abandons the reload: the other new workers are stopped, the old ones keep
//! serving, and the next SIGHUP tries again. A SIGHUP during a reload retargets it to the newest
//! generation; new workers of an older one that are not ready yet are stopped.

use std::collections::VecDeque;
use std::time::Instant;

use humantime::format_duration;
use log::{error, info};

use crate::status::ProcessStatus;

use super::{Action, Cluster, WorkerIdentity};

pub(super) struct Reload {
    /// The generation the reload brings every slot to.
    pub target: u32,
    /// Slots still to replace, in order.
    queue: VecDeque<u32>,
    /// The slot whose replacement is being spawned (between the `Spawn` and `spawned`).
    pub spawning: Option<u32>,
}

impl Cluster {
    pub(super) fn begin_reload(&mut self, now: Instant) -> Vec<Action> {
        self.last_generation += 1;
        let target = self.last_generation;
        let mut actions = Vec::new();
        if let Some(old) = self.reload.take() {
            info!(
                "received SIGHUP during the reload to generation {}: reloading to generation {target} instead",
                old.target
            );
        } else {
            info!(
                "received SIGHUP: reloading {} workers to generation {target}",
                self.slots.len()
            );
        }
        // New workers of an older target that are not ready yet will not be needed.
        for index in 0..self.slots.len() {
            if let Some(worker) = self.slots[index].replacement.take() {
                actions.push(self.retire(worker, now));
            }
        }
        let queue = self
            .slots
            .iter()
            .filter(|s| s.worker.is_some_and(|w| w.generation < target))
            .map(|s| s.id)
            .collect();
        self.reload = Some(Reload {
            target,
            queue,
            spawning: None,
        });
        actions.push(Action::NotifyReloading(format!(
            "reloading to generation {target}"
        )));
        actions.extend(self.advance_reload(now));
        actions
    }

    /// Starts as many replacements as the bounds allow; finishes the reload when all are done.
    pub(super) fn advance_reload(&mut self, _now: Instant) -> Vec<Action> {
        let n = self.slots.len();
        let k = self.policy.reload_batch as usize;
        let mut actions = Vec::new();
        loop {
            let Some(reload) = self.reload.as_mut() else {
                return actions;
            };
            let in_flight = self
                .slots
                .iter()
                .filter(|s| s.replacement.is_some())
                .count();
            let alive = self.slots.iter().filter(|s| s.worker.is_some()).count()
                + in_flight
                + self.leaving.len();
            if in_flight >= k || alive >= n + k {
                return actions;
            }
            let target = reload.target;
            if reload.queue.is_empty() {
                // Slots respawned on an older generation meanwhile still need replacing.
                reload.queue = self
                    .slots
                    .iter()
                    .filter(|s| {
                        s.replacement.is_none() && s.worker.is_some_and(|w| w.generation < target)
                    })
                    .map(|s| s.id)
                    .collect();
            }
            let Some(id) = reload.queue.pop_front() else {
                if in_flight > 0 {
                    return actions;
                }
                self.reload = None;
                self.generation = target;
                for slot in &mut self.slots {
                    slot.generation = target; // a slot waiting to respawn comes back on it
                }
                info!("reload to generation {target} complete: {n} workers");
                actions.push(Action::NotifyManager(format!(
                    "READY=1\nSTATUS={n} workers of generation {target}"
                )));
                return actions;
            };
            let Some(slot) = self.slots.get(id as usize) else {
                continue; // scaled down since
            };
            if slot.worker.is_none_or(|w| w.generation >= target) {
                continue; // respawned (or added) since, on the new generation or pending
            }
            reload.spawning = Some(id);
            actions.push(Action::Spawn(WorkerIdentity {
                id,
                count: n as u32,
                generation: target,
            }));
            // The executor spawns before the next action: `spawned` files it as the replacement.
            return actions;
        }
    }

    /// The slot's replacement is ready: it takes over, the old worker is stopped.
    pub(super) fn promote(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let slot = &mut self.slots[index];
        let Some(mut new) = slot.replacement.take() else {
            return Vec::new();
        };
        new.ready = true;
        slot.generation = new.generation;
        let old = slot.worker.replace(new);
        let mut actions = Vec::new();
        match old {
            Some(old) => {
                info!(
                    "worker {} of generation {} (pid {}) is ready: stopping pid {}",
                    new.id, new.generation, new.pid, old.pid
                );
                actions.push(self.retire(old, now));
            }
            None => info!(
                "worker {} of generation {} (pid {}) is ready",
                new.id, new.generation, new.pid
            ),
        }
        actions.extend(self.advance_reload(now));
        actions
    }

    /// A replacement ended before it was ready: the reload is abandoned.
    pub(super) fn replacement_ended(
        &mut self,
        index: usize,
        status: ProcessStatus,
        now: Instant,
    ) -> Vec<Action> {
        let worker = self.slots[index].replacement.take().expect("a replacement");
        if worker.stop_sent.is_some() {
            return Vec::new(); // stopped by recluster (a stop of the whole cluster)
        }
        let reason = format!(
            "worker {} of generation {} (pid {}) {status} before it was ready",
            worker.id, worker.generation, worker.pid
        );
        self.abandon_reload(&reason, now)
    }

    /// Replacement readiness: `started` after `--min-uptime`, `notify` bounded by `--ready-timeout`.
    pub(super) fn check_replacement_timers(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let policy = self.policy.clone();
        let Some(worker) = self.slots[index].replacement.as_mut() else {
            return Vec::new();
        };
        if worker.ready_at.is_some_and(|at| at <= now) {
            return self.promote(index, now);
        }
        if worker.ready_by.is_some_and(|at| at <= now) {
            let reason = format!(
                "worker {} of generation {} (pid {}) was not ready within {} (--ready-timeout)",
                worker.id,
                worker.generation,
                worker.pid,
                format_duration(policy.ready_timeout)
            );
            return self.abandon_reload(&reason, now);
        }
        // After the timeout check: a slow probe must never starve it.
        match super::probe(worker, &policy, now) {
            Some(action) => vec![action],
            None => Vec::new(),
        }
    }

    /// Stops every new worker; the old ones keep serving. The next SIGHUP tries again.
    pub(super) fn abandon_reload(&mut self, reason: &str, now: Instant) -> Vec<Action> {
        let Some(reload) = self.reload.take() else {
            return Vec::new();
        };
        error!(
            "reload to generation {} abandoned: {reason}; the current workers keep serving (send SIGHUP to try again)",
            reload.target
        );
        let mut actions = Vec::new();
        for index in 0..self.slots.len() {
            if let Some(worker) = self.slots[index].replacement.take() {
                actions.push(self.retire(worker, now));
            }
        }
        actions.push(Action::NotifyManager(format!(
            "READY=1\nSTATUS=reload to generation {} failed: {reason}",
            reload.target
        )));
        actions
    }
}
