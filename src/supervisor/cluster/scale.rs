//! Scaling with TTIN and TTOU: a new slot at the end, or the highest slot removed — its worker
//! stopped, its sockets released, a spawn or replacement not carried out yet dropped.

use std::time::Instant;

use super::{Action, Cluster, Occupant, Report, Slot};

impl Cluster {
    pub(super) fn scale_up(&mut self) -> Vec<Action> {
        if self.slots.len() >= crate::config::MAX_WORKERS as usize {
            self.report(Report::TooManyWorkers {
                workers: self.slots.len(),
            });
            return Vec::new();
        }
        let id = self.slots.len() as u32;
        // The generation that last succeeded; a reload under way replaces it like the others.
        self.slots.push(Slot::new(id, self.generation));
        self.report(Report::ScaledUp {
            workers: self.slots.len(),
        });
        vec![self.spawn_slot(id as usize)]
    }

    pub(super) fn scale_down(&mut self, now: Instant) -> Vec<Action> {
        if self.slots.len() <= 1 {
            self.report(Report::LastWorkerKept);
            return Vec::new();
        }
        let index = self.slots.len() - 1;
        let occupant = self.take_occupant(index);
        let slot = self.slots.pop().expect("more than one slot");
        self.report(Report::ScaledDown {
            workers: self.slots.len(),
        });
        let mut actions = Vec::new();
        if let Occupant::Worker(worker) = occupant {
            actions.extend(self.discard(worker, now));
        }
        if let Some(worker) = slot.replacement {
            if let Some(reload) = self.reload.as_mut() {
                reload.in_flight -= 1;
            }
            actions.extend(self.discard(worker, now));
        }
        actions.push(Action::ReleaseSlot(slot.id));
        // One slot fewer to replace, and N + K is one smaller.
        actions.extend(self.advance_reload(now));
        actions.extend(self.announce_if_all_ready());
        actions
    }
}
