//! When the cluster ends because of its workers (`--exit-on`, `--critical`), beside the stop
//! itself (`stop`): `any-exit` is decided where a slot's worker ends (`restart`); here, whether a
//! crash-loop give-up ends the cluster or only its slot (and, with Procfile groups, the rest of
//! its group), and `below:K`, checked whenever a slot ends for good: fewer than K slots that can
//! run (a worker ready or starting, a restart scheduled within its backoff, a group still held
//! for `--after`) stops the cluster with the status of the worker whose end made it so.

use std::time::Instant;

use crate::config::policy::ExitOn;
use crate::process::status::ProcessStatus;

use super::stop::Outcome;
use super::worker::Retire;
use super::{Action, Cluster, Occupant, Report};

impl Cluster {
    /// Groups: slot `id` belongs to group `group` (for `--critical`); set for every slot before
    /// the start and for each slot a group grows by.
    pub fn assign_group(&mut self, id: u32, group: u32) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.group = Some(group);
        }
    }

    /// Whether a crash-loop give-up of slot `index` ends the cluster: under `give-up`, unless
    /// `--critical` names groups and the slot's is not one of them; under `below:K`, only in a
    /// critical group.
    pub(super) fn give_up_ends_cluster(&self, index: usize) -> bool {
        let critical = &self.policy.critical;
        let group = self.slots[index].group;
        match self.policy.exit_on {
            ExitOn::AnyExit | ExitOn::GiveUp => {
                critical.is_empty() || group.is_none_or(|g| critical.contains(&g))
            }
            ExitOn::Below(_) => group.is_some_and(|g| critical.contains(&g)),
        }
    }

    /// A give-up that does not end the cluster: the slot stays ended, and so does the rest of
    /// its group (their workers are stopped); then `below:K` is looked at.
    pub(super) fn give_up_alone(
        &mut self,
        index: usize,
        status: ProcessStatus,
        now: Instant,
    ) -> Vec<Action> {
        self.slots[index].given_up = true;
        let mut actions = Vec::new();
        if let Some(group) = self.slots[index].group {
            let others: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    i != index
                        && self.slots[i].group == Some(group)
                        && self.slots[i].occupant != Occupant::Retired
                })
                .collect();
            let mut stopped = 0;
            for i in others {
                self.slots[i].given_up = true;
                self.slots[i].held = false;
                self.restart_queue.retain(|&id| id as usize != i);
                actions.extend(self.drop_replacement(i, None, now));
                if let Occupant::Worker(worker) = self.take_occupant(i) {
                    stopped += usize::from(worker.pid().is_some());
                    actions.extend(self.discard(worker, Retire::NotNeeded, now));
                }
            }
            self.report(Report::GroupGivenUp {
                id: self.slots[index].id,
                stopped,
            });
        }
        actions.extend(self.check_below(status, now));
        actions.extend(self.announce_if_all_ready());
        actions.extend(self.settle(now));
        actions
    }

    /// Slots that gave up while the cluster went on.
    pub(super) fn given_up_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.given_up && s.occupant == Occupant::Done)
            .count()
    }

    /// `--exit-on below:K`: after a slot ended for good with `status`, stops the cluster if fewer
    /// than K slots can still run.
    pub(super) fn check_below(&mut self, status: ProcessStatus, now: Instant) -> Vec<Action> {
        let ExitOn::Below(minimum) = self.policy.exit_on else {
            return Vec::new();
        };
        if !self.is_running() {
            return Vec::new();
        }
        let able = self.slots_that_can_run();
        if able >= minimum as usize {
            return Vec::new();
        }
        self.report(Report::BelowMinimum { able, minimum });
        self.begin_stop(self.policy.stop_signal, Outcome::DecidedBy(status), now)
    }

    /// Slots with a worker (ready, starting, or on its way), a restart scheduled, or held back
    /// for `--after`: not those that ended for good, gave up or were scaled away.
    pub(super) fn slots_that_can_run(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.held
                    || s.replacement.is_some()
                    || matches!(s.occupant, Occupant::Worker(_) | Occupant::Waiting { .. })
            })
            .count()
    }
}
