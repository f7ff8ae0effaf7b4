//! The rolling reload (SIGHUP), as decisions on the cluster's state. Slot by slot, at most
//! `--reload-batch` K at a time: start the new generation's worker beside the old one, wait until
//! it is ready, then stop the old one. Capacity never dips below N, and no new worker starts
//! while N + K are alive (old workers still draining count). A new worker that exits or misses
//! `--ready-timeout` abandons the reload: the other new workers are stopped, the old ones keep
//! serving, and the next SIGHUP tries again. A SIGHUP during a reload retargets it to the newest
//! generation; new workers of an older one that are not ready yet are stopped.

use std::time::Instant;

use humantime::format_duration;
use log::{error, info};

use crate::status::ProcessStatus;

use super::{Action, Cluster, WorkerIdentity};

pub(super) struct Reload {
    /// The generation the reload brings every slot to.
    pub target: u32,
    /// The slot whose replacement is being spawned (between the `Spawn` and `spawned`).
    spawning: Option<u32>,
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
        self.reload = Some(Reload {
            target,
            spawning: None,
        });
        actions.push(Action::NotifyReloading(format!(
            "reloading to generation {target}"
        )));
        actions.extend(self.advance_reload());
        actions
    }

    /// Starts the next replacement if the bounds allow; finishes the reload when all are done.
    /// The slots still to replace are always those, in id order, whose worker runs an older
    /// generation and that have no replacement yet (respawns and scaling included).
    pub(super) fn advance_reload(&mut self) -> Vec<Action> {
        let Some(reload) = self.reload.as_mut() else {
            return Vec::new();
        };
        let target = reload.target;
        let (n, k) = (self.slots.len(), self.policy.reload_batch as usize);
        let in_flight = self
            .slots
            .iter()
            .filter(|s| s.replacement.is_some())
            .count();
        let alive = self.slots.iter().filter(|s| s.worker.is_some()).count()
            + in_flight
            + self.leaving.len();
        if in_flight >= k || alive >= n + k {
            return Vec::new();
        }
        let next = self
            .slots
            .iter()
            .find(|s| s.replacement.is_none() && s.worker.is_some_and(|w| w.generation < target));
        if let Some(slot) = next {
            reload.spawning = Some(slot.id);
            // The executor spawns before the next event: `spawned` files it as the replacement.
            return vec![Action::Spawn(WorkerIdentity {
                id: slot.id,
                count: n as u32,
                generation: target,
            })];
        }
        if in_flight > 0 {
            return Vec::new();
        }
        self.reload = None;
        self.generation = target;
        for slot in &mut self.slots {
            slot.generation = target; // a slot waiting to respawn comes back on it
        }
        info!("reload to generation {target} complete: {n} workers");
        vec![Action::NotifyManager(format!(
            "READY=1\nSTATUS={n} workers of generation {target}"
        ))]
    }

    /// Whether `id` is the slot whose replacement was just spawned (clearing the mark if so).
    pub(super) fn take_spawning(&mut self, id: u32) -> bool {
        match self.reload.as_mut() {
            Some(reload) if reload.spawning == Some(id) => {
                reload.spawning = None;
                true
            }
            _ => false,
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
        actions.extend(self.advance_reload());
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
