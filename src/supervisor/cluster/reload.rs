//! The rolling reload (SIGHUP), as decisions on the cluster's state. Slot by slot, up to
//! `--reload-batch` K at once: start the new generation's worker beside the old one, wait until it
//! is ready, then stop the old one. Capacity never dips below N, and no new worker starts while
//! N + K are alive (old workers still draining count). A new worker that exits, cannot be spawned
//! or misses `--ready-timeout` abandons the reload: the other new workers are stopped, the old ones
//! keep serving, and the next SIGHUP tries again. A SIGHUP during a reload retargets it to the
//! newest generation; new workers of an older one that are not ready yet are stopped.
//!
//! A reload started by `--watch` with Procfile groups may replace only the slots of some groups
//! (its `Scope`); the others keep their workers and their generation. A change during a reload
//! queues one more (of the scopes of every change meanwhile), never more.
//!
//! A slot whose old worker died during the reload gets a replacement like any other (it starts
//! into an empty slot); its own respawn stays scheduled and runs, at the slot's last generation,
//! if the reload is abandoned or superseded before the replacement is ready.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::process::status::ProcessStatus;

use super::worker::{Retire, State, StopReason, Worker};
use super::{Action, Cluster, Key, Occupant, Origin, Place, Report, Role};

pub(super) struct Reload {
    /// The generation the reload brings every slot of its scope to.
    pub target: u32,
    /// The slots it replaces.
    pub scope: Scope,
    /// Slots before this one have had their replacement started (or needed none).
    pub cursor: usize,
    /// Replacements decided and not yet ready.
    pub in_flight: usize,
}

/// Which slots a reload replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// With Procfile groups: the slots of the groups whose command lies under a changed path.
    Slots(BTreeSet<u32>),
}

impl Scope {
    pub fn contains(&self, id: u32) -> bool {
        match self {
            Scope::All => true,
            Scope::Slots(slots) => slots.contains(&id),
        }
    }

    /// Both scopes.
    fn join(self, other: Scope) -> Scope {
        match (self, other) {
            (Scope::Slots(mut a), Scope::Slots(b)) => {
                a.extend(b);
                Scope::Slots(a)
            }
            _ => Scope::All,
        }
    }
}

impl Cluster {
    /// `--watch`: files changed. A reload of `scope` starts, or, while one runs, one more is
    /// queued to follow it (however many changes come meanwhile: the next reload reads them all).
    pub fn reload_for_changes(&mut self, scope: Scope, now: Instant) -> Vec<Action> {
        if !self.is_running() {
            return Vec::new();
        }
        match &self.reload {
            Some(reload) => {
                let target = reload.target;
                match self.reload_queued.take() {
                    Some(queued) => self.reload_queued = Some(queued.join(scope)),
                    None => {
                        self.reload_queued = Some(scope);
                        self.report(Report::ReloadQueued { target });
                    }
                }
                Vec::new()
            }
            None => self.begin_reload_of(scope, now, Origin::Watch),
        }
    }

    /// The reload queued by `--watch` during the one that just ended, if any.
    fn begin_queued_reload(&mut self, now: Instant) -> Vec<Action> {
        match self.reload_queued.take() {
            Some(scope) if self.is_running() => self.begin_reload_of(scope, now, Origin::Watch),
            _ => Vec::new(),
        }
    }

    pub(super) fn begin_reload(&mut self, now: Instant, origin: Origin) -> Vec<Action> {
        self.begin_reload_of(Scope::All, now, origin)
    }

    fn begin_reload_of(&mut self, scope: Scope, now: Instant, origin: Origin) -> Vec<Action> {
        self.last_generation += 1;
        let target = self.last_generation;
        let mut actions = Vec::new();
        let superseding = self.reload.take().map(|old| old.target);
        // A reload of every slot reads whatever changed under --watch so far.
        if scope == Scope::All {
            self.reload_queued = None;
        }
        let workers = (0..self.slots.len())
            .filter(|&index| {
                scope.contains(self.slots[index].id)
                    && self.slots[index].occupant != Occupant::Retired
            })
            .count();
        self.report(Report::ReloadBegun {
            origin,
            target,
            workers,
            superseding,
        });
        // In place before the replacements are dropped, which ask it what it replaces.
        self.reload = Some(Reload {
            target,
            scope,
            cursor: 0,
            in_flight: 0,
        });
        // New workers not ready yet — of an older target, or a --max-memory replacement running
        // the old generation — will not be needed: the reload replaces their slots.
        actions.extend(self.drop_replacements(Some(target), now));
        // Restarts still queued (`ctl restart`) are part of the reload now.
        self.restart_queue.clear();
        actions.push(Action::NotifyReloading(format!(
            "reloading to generation {target}"
        )));
        actions.extend(self.advance_reload(now));
        actions
    }

    /// Starts replacements while the bounds allow (up to K in flight, N + K alive); finishes the
    /// reload when every slot has been replaced and the old workers are gone.
    pub(super) fn advance_reload(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(reload) = self.reload.as_ref() else {
            return actions;
        };
        let (target, mut cursor, mut in_flight) = (reload.target, reload.cursor, reload.in_flight);
        let k = self.policy.reload_batch as usize;
        let slots = self.slots.len();
        while in_flight < k && self.room_for_one_more() {
            while cursor < slots && !self.needs_replacement(cursor, target) {
                cursor += 1;
            }
            if cursor >= slots {
                break;
            }
            let id = self.slots[cursor].id;
            let ticket = self.issue(id, Role::Replacement, target);
            self.slots[cursor].replacing = Retire::Reload;
            self.slots[cursor].replacement = Some(Worker::spawning(ticket));
            actions.push(Action::Spawn(ticket));
            in_flight += 1;
            cursor += 1;
        }
        let reload = self.reload.as_mut().expect("checked above");
        reload.cursor = cursor;
        reload.in_flight = in_flight;
        // Complete once the old workers have drained too.
        if in_flight > 0 || cursor < slots || !self.leaving.is_empty() {
            return actions;
        }
        let scope = self.reload.take().expect("checked above").scope;
        self.generation = target;
        for slot in &mut self.slots {
            if scope.contains(slot.id) {
                slot.generation = target; // a slot that ended for good would come back on it
            }
        }
        self.reloads.0 += 1;
        let n = self.workers();
        self.report(Report::ReloadComplete { target, workers: n });
        actions.push(Action::NotifyManager(format!(
            "READY=1\nSTATUS={} of generation {target}",
            crate::text::plural::plural(n as u64, "worker", "workers")
        )));
        actions.extend(self.begin_queued_reload(now));
        actions.extend(self.advance_recycles(now));
        actions
    }

    /// Whether slot `index` is in the scope of the reload under way and still runs (or is about
    /// to respawn) an older generation.
    fn needs_replacement(&self, index: usize, target: u32) -> bool {
        let slot = &self.slots[index];
        self.reload
            .as_ref()
            .is_some_and(|reload| reload.scope.contains(slot.id))
            && slot.replacement.is_none()
            && slot.generation < target
            && !slot.once
            && !matches!(slot.occupant, Occupant::Done | Occupant::Retired)
    }

    /// The slot's replacement is ready: it takes over, the old worker is stopped.
    pub(super) fn promote(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let Some(mut new) = self.slots[index].replacement.take() else {
            return Vec::new();
        };
        if !new.become_ready(now) {
            self.slots[index].replacement = Some(new);
            return Vec::new();
        }
        if let Some(reload) = self.reload.as_mut() {
            reload.in_flight -= 1;
        }
        let pid = new.pid().expect("a ready worker has a pid");
        self.places.insert(pid, Place::Slot(new.id()));
        self.slots[index].generation = new.generation();
        let mut actions = Vec::new();
        let old = match self.put_occupant(index, Occupant::Worker(new)) {
            Occupant::Worker(old) => Some(old),
            Occupant::Waiting { .. } | Occupant::Done | Occupant::Retired => None,
        };
        self.arm_watchdog(pid, now);
        self.arm_recycle(index);
        self.report(Report::ReplacementReady {
            id: new.id(),
            generation: new.generation(),
            pid,
            old: old.and_then(|w| w.pid()),
        });
        if let Some(old) = old {
            let why = self.slots[index].replacing;
            if why == Retire::Restart {
                // `ctl restart` took effect: the slot's worker was started again.
                self.slots[index].restart_count += 1;
            }
            self.recycled(index, why);
            actions.extend(self.discard(old, why, now));
        }
        actions.extend(self.announce_if_all_ready());
        actions.extend(self.advance_reload(now));
        actions
    }

    /// A replacement ended (its record already taken out): before it was ready, unless the
    /// whole cluster is stopping, that abandons the reload.
    pub(super) fn replacement_ended(
        &mut self,
        worker: Worker,
        status: ProcessStatus,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(reload) = self.reload.as_mut() {
            reload.in_flight -= 1;
        }
        if matches!(
            worker.state,
            State::Stopping {
                reason: StopReason::ClusterStop,
                ..
            }
        ) {
            return Vec::new();
        }
        let reason = format!(
            "worker {} of generation {} (pid {}) {status} before it was ready",
            worker.id(),
            worker.generation(),
            worker.pid().unwrap_or_default()
        );
        self.replacement_failed(worker.id() as usize, &reason, now)
    }

    /// Slot `index`'s new worker failed before it was ready (exited, timed out, could not be
    /// spawned). In a reload, that abandons the reload; outside one (`--max-memory`), only this
    /// replacement goes. Either way the old worker keeps serving, and a respawn held back for the
    /// replacement (the old worker died meanwhile) runs.
    pub(super) fn replacement_failed(
        &mut self,
        index: usize,
        reason: &str,
        now: Instant,
    ) -> Vec<Action> {
        if self.reload.is_some() {
            return self.abandon_reload(reason, now);
        }
        self.report(Report::ReplacementFailed {
            id: self.slots[index].id,
            reason: reason.to_string(),
        });
        let action = self.drop_replacement(index, None, now);
        self.recycle_after_failure(index, self.slots[index].replacing, now);
        action.into_iter().collect()
    }

    /// Stops every new worker; the old ones keep serving, and a slot whose old worker died
    /// meanwhile is respawned as scheduled. The next SIGHUP tries again.
    pub(super) fn abandon_reload(&mut self, reason: &str, now: Instant) -> Vec<Action> {
        let Some(reload) = self.reload.take() else {
            return Vec::new();
        };
        self.reloads.1 += 1;
        self.report(Report::ReloadAbandoned {
            target: reload.target,
            reason: reason.to_string(),
        });
        let mut actions = self.drop_replacements(None, now);
        actions.push(Action::NotifyManager(format!(
            "READY=1\nSTATUS=reload to generation {} failed: {reason}",
            reload.target
        )));
        actions.extend(self.begin_queued_reload(now));
        actions.extend(self.advance_recycles(now));
        actions
    }

    /// Stops (or forgets, if not spawned yet) every replacement, and lets every respawn that was
    /// held back for one run — except, when a new reload to `superseded_by` takes over, those
    /// it will replace: it starts them within its N + K.
    pub(super) fn drop_replacements(
        &mut self,
        superseded_by: Option<u32>,
        now: Instant,
    ) -> Vec<Action> {
        (0..self.slots.len())
            .filter_map(|index| self.drop_replacement(index, superseded_by, now))
            .collect()
    }

    /// Stops (or forgets) slot `index`'s replacement, if it still has one, and lets a respawn
    /// held back for it run (its deadline may have been dropped from the heap meanwhile) unless
    /// a reload to `superseded_by` is to replace it.
    pub(super) fn drop_replacement(
        &mut self,
        index: usize,
        superseded_by: Option<u32>,
        now: Instant,
    ) -> Option<Action> {
        let slot = &self.slots[index];
        if superseded_by.is_some()
            && slot.replacement.is_some()
            && slot.replacing == Retire::Age
            && !self.recycle_queue.contains(&slot.id)
        {
            // Still due after the reload if it leaves this slot alone (a reload of some groups).
            self.recycle_queue.push_front(slot.id);
        }
        let action = self.slots[index]
            .replacement
            .take()
            .and_then(|worker| self.discard(worker, Retire::NotNeeded, now));
        if let Occupant::Waiting { at } = self.slots[index].occupant
            && superseded_by.is_none_or(|target| !self.needs_replacement(index, target))
        {
            self.timers.push(at, Key::Slot(self.slots[index].id));
        }
        action
    }
}
