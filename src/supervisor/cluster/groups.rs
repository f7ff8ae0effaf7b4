//! What Procfile groups (`-f`) ask of the flat cluster: slots held back until the loop releases
//! them (`--after`), slots whose worker runs once (`--once`), and whether a range of slots is
//! ready or finished — the loop's conditions for releasing the next group.

use std::ops::Range;
use std::time::Instant;

use super::{Action, Cluster, Occupant};

impl Cluster {
    /// Before `start`: the slots in `held` start only when released; those in `once` run once.
    pub fn configure_groups(&mut self, held: &[Range<u32>], once: &[Range<u32>]) {
        for range in held {
            for id in range.clone() {
                self.slots[id as usize].held = true;
            }
        }
        for range in once {
            for id in range.clone() {
                self.slots[id as usize].once = true;
            }
        }
    }

    /// Starts the held slots of `range` now (nothing if the cluster is stopping).
    pub fn release(&mut self, range: Range<u32>, now: Instant) -> Vec<Action> {
        if !self.is_running() {
            return Vec::new();
        }
        for id in range {
            let index = id as usize;
            if index < self.slots.len() && std::mem::take(&mut self.slots[index].held) {
                self.schedule_spawn(index, now);
            }
        }
        self.on_timer(now)
    }

    /// Whether every slot of `range` has its own worker ready.
    pub fn range_ready(&self, range: Range<u32>) -> bool {
        range.clone().all(|id| {
            self.slots
                .get(id as usize)
                .is_some_and(|s| matches!(s.occupant, Occupant::Worker(w) if w.is_ready()))
        })
    }

    /// Once every slot of `range` has ended for good: whether all ended cleanly. `None` while
    /// one still runs or is to run.
    pub fn range_finished(&self, range: Range<u32>) -> Option<bool> {
        let mut clean = true;
        for id in range {
            let slot = self.slots.get(id as usize)?;
            if slot.held || slot.occupant != Occupant::Done || slot.replacement.is_some() {
                return None;
            }
            clean &= slot.last_end.is_some_and(|e| e.clean);
        }
        Some(clean)
    }
}
