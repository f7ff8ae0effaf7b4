//! What Procfile groups (`-f`) ask of the flat cluster: slots held back until the loop releases
//! them (`--after`), slots whose worker runs once (`--once`), and whether a range of slots is
//! ready or finished — the loop's conditions for releasing the next group.

use std::time::Instant;

use super::{Action, Cluster, Occupant};

impl Cluster {
    /// Before `start`: the slots in `held` start only when released; those in `once` run once.
    pub fn configure_groups(&mut self, held: &[u32], once: &[u32]) {
        for &id in held {
            self.slots[id as usize].held = true;
        }
        for &id in once {
            self.slots[id as usize].once = true;
        }
    }

    /// Starts the held slots among `slots` now (nothing if the cluster is stopping).
    pub fn release(&mut self, slots: &[u32], now: Instant) -> Vec<Action> {
        if !self.is_running() {
            return Vec::new();
        }
        for &id in slots {
            let index = id as usize;
            if index < self.slots.len() && std::mem::take(&mut self.slots[index].held) {
                self.schedule_spawn(index, now);
            }
        }
        self.on_timer(now)
    }

    /// Whether every one of `slots` has its own worker ready.
    pub fn all_ready(&self, slots: &[u32]) -> bool {
        slots.iter().all(|&id| {
            self.slots
                .get(id as usize)
                .is_some_and(|s| matches!(s.occupant, Occupant::Worker(w) if w.is_ready()))
        })
    }

    /// Once every one of `slots` has ended for good: whether all ended cleanly. `None` while
    /// one still runs or is to run.
    pub fn all_finished(&self, slots: &[u32]) -> Option<bool> {
        let mut clean = true;
        for &id in slots {
            let slot = self.slots.get(id as usize)?;
            if slot.held || slot.occupant != Occupant::Done || slot.replacement.is_some() {
                return None;
            }
            clean &= slot.last_end.is_some_and(|e| e.clean);
        }
        Some(clean)
    }
}
