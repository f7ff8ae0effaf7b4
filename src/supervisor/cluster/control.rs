//! What `recluster ctl` asks of the cluster: scale to a count, restart chosen slots, reload,
//! stop, signal chosen slots. Each request is either refused with the reason (nothing changes)
//! or carried out with the same decisions a signal would take. `ctl restart` replaces a slot's
//! worker the way a one-slot reload does: a new worker beside the old one, the old one stopped
//! once the new one is ready; slots wait in a queue while N + K workers are alive. A restart
//! counts in the slot's restart counter once its new worker has taken over (or, for a slot that
//! had ended for good, once it is started again).

use std::time::Instant;

use crate::process::signal::Sig;

use super::worker::{Retire, State, Worker};
use super::{Action, Cluster, Occupant, Origin, Report, Role};

/// What a scale request changed: the slots it added, and the pids of the workers it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scaled {
    pub added: Vec<u32>,
    pub removed: Vec<i32>,
}

impl Cluster {
    /// The number of workers now (N): the slots less those retired.
    pub fn workers(&self) -> usize {
        self.slots.len() - self.retired
    }

    /// Scales to `target` slots, one step at a time as TTIN and TTOU do.
    pub fn scale_to(&mut self, target: u32, now: Instant) -> Result<(Scaled, Vec<Action>), String> {
        self.refuse_unless_running()?;
        let max = crate::config::policy::MAX_WORKERS;
        if target == 0 || target > max {
            return Err(format!(
                "cannot scale to {target} workers: the count must be between 1 and {max}"
            ));
        }
        let mut scaled = Scaled::default();
        let mut actions = Vec::new();
        while self.slots.len() < target as usize {
            scaled.added.push(self.slots.len() as u32);
            actions.extend(self.scale_up(Origin::Control, now));
        }
        while self.slots.len() > target as usize {
            scaled
                .removed
                .extend(self.slot_pids(self.slots.len() as u32 - 1));
            actions.extend(self.scale_down(now, Origin::Control));
        }
        Ok((scaled, actions))
    }

    /// The pids of slot `id`'s worker and its replacement, those that have been forked.
    pub fn slot_pids(&self, id: u32) -> Vec<i32> {
        let Some(slot) = self.slots.get(id as usize) else {
            return Vec::new();
        };
        let own = match &slot.occupant {
            Occupant::Worker(w) => w.pid(),
            _ => None,
        };
        own.into_iter()
            .chain(slot.replacement.and_then(|w| w.pid()))
            .collect()
    }

    /// Refuses a change once the cluster is stopping.
    /// The oldest generation a worker runs (a slot's own, a leaving one) or a respawn would: env
    /// file contents of older generations are needed no more.
    pub fn oldest_generation(&self) -> u32 {
        self.slots
            .iter()
            .map(|slot| slot.generation)
            .chain(self.leaving.values().map(|worker| worker.generation()))
            .min()
            .unwrap_or(self.last_generation)
    }

    /// The generation the next reload will bring the workers to.
    pub fn next_generation(&self) -> u32 {
        self.last_generation + 1
    }

    pub fn accepts_changes(&self) -> Result<(), String> {
        self.refuse_unless_running()
    }

    /// A rolling reload (SIGHUP, `ctl reload`); returns the generation it brings the workers to.
    pub fn request_reload(
        &mut self,
        origin: Origin,
        now: Instant,
    ) -> Result<(u32, Vec<Action>), String> {
        self.refuse_unless_running()?;
        let actions = self.begin_reload(now, origin);
        Ok((self.last_generation, actions))
    }

    /// A graceful stop, as SIGTERM starts it, with `--stop-signal` for the workers. During
    /// `--stop-delay` it is a second request, which ends the delay (as a second stop signal
    /// does); a stop already under way goes on.
    pub fn request_stop(&mut self, now: Instant) -> Vec<Action> {
        if matches!(self.phase, super::Phase::Delaying(_)) {
            self.report(Report::StopDelaySkipped { signal: None });
            return self.end_delay(now);
        }
        if !self.is_running() {
            return Vec::new();
        }
        let signal = self.policy.stop_signal;
        self.report(Report::StopRequested {
            origin: Origin::Control,
            signal,
            workers: self.places.len(),
            timeout: self.policy.kill_timeout,
        });
        self.stop_requested(signal, None, now)
    }

    /// Sends `signal` to the process groups of the workers of `ids` (their own workers and new
    /// workers on their way), or of every worker.
    pub fn signal_workers(&mut self, signal: Sig, ids: &[u32]) -> Result<Vec<Action>, String> {
        if ids.is_empty() {
            return Ok(self.forward(signal));
        }
        self.check_ids(ids)?;
        let mut pgids = Vec::new();
        for &id in ids {
            let slot = &mut self.slots[id as usize];
            slot.relayed = Some(signal);
            if let Occupant::Worker(w) = &slot.occupant {
                pgids.extend(w.pid());
            }
            pgids.extend(slot.replacement.and_then(|w| w.pid()));
        }
        self.report(Report::Forwarding {
            signal,
            groups: pgids.len(),
        });
        Ok(pgids
            .into_iter()
            .map(|pgid| Action::SignalGroup { pgid, signal })
            .collect())
    }

    /// Queues the slots `ids` for a restart; they start as room allows.
    pub fn request_restart(&mut self, ids: &[u32], now: Instant) -> Result<Vec<Action>, String> {
        self.refuse_unless_running()?;
        self.check_ids(ids)?;
        if let Some(reload) = &self.reload {
            return Err(format!(
                "a reload to generation {} is under way and replaces every worker; wait for it (recluster ctl reload --wait)",
                reload.target
            ));
        }
        if ids.iter().any(|&id| self.slots[id as usize].held) {
            return Err(
                "that worker has not started yet: its group waits for another (--after, --once)"
                    .to_string(),
            );
        }
        for &id in ids {
            if !self.restart_queue.contains(&id) {
                self.restart_queue.push_back(id);
            }
        }
        Ok(self.advance_restarts(now))
    }

    /// Starts the queued restarts while N + K leaves room.
    pub(super) fn advance_restarts(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.reload.is_some() || !self.is_running() {
            self.restart_queue.clear();
            return actions;
        }
        while let Some(&id) = self.restart_queue.front() {
            let index = id as usize;
            let Some(slot) = self
                .slots
                .get(index)
                .filter(|s| s.occupant != Occupant::Retired)
            else {
                self.restart_queue.pop_front(); // scaled away meanwhile
                continue;
            };
            if slot.replacement.is_some() {
                // Already being replaced (`--max-memory`): that replacement is the restart.
                let pid = match slot.occupant {
                    Occupant::Worker(w) => w.pid(),
                    _ => None,
                };
                self.restart_queue.pop_front();
                self.report(Report::RestartBegun { id, pid });
                continue;
            }
            let occupant = slot.occupant;
            match occupant {
                Occupant::Worker(Worker {
                    state: State::Starting { pid, .. } | State::Ready { pid, .. },
                    ..
                }) => {
                    if !self.room_for_one_more() {
                        break; // the next one starts when one of those ends
                    }
                    self.restart_queue.pop_front();
                    self.report(Report::RestartBegun { id, pid: Some(pid) });
                    let generation = self.slots[index].generation;
                    let ticket = self.issue(id, Role::Replacement, generation);
                    self.slots[index].replacement = Some(Worker::spawning(ticket));
                    self.slots[index].replacing = Retire::Restart;
                    actions.push(Action::Spawn(ticket));
                }
                Occupant::Waiting { .. } | Occupant::Done => {
                    self.restart_queue.pop_front();
                    self.report(Report::RestartBegun { id, pid: None });
                    self.slots[index].early_deaths = 0;
                    // A slot that ended for good starts again; one waiting for its respawn
                    // counted it when its worker ended.
                    if occupant == Occupant::Done {
                        self.slots[index].restart_count += 1;
                    }
                    self.schedule_spawn(index, now);
                }
                Occupant::Retired => unreachable!("filtered above"),
                Occupant::Worker(_) => {
                    // Not forked yet, or already leaving: what starts next is new anyway.
                    self.restart_queue.pop_front();
                    self.report(Report::RestartBegun { id, pid: None });
                }
            }
        }
        actions
    }

    fn refuse_unless_running(&self) -> Result<(), String> {
        if self.is_running() {
            Ok(())
        } else {
            Err("the cluster is stopping".to_string())
        }
    }

    /// Whether slot `id` holds a worker now (started or starting), not a wait or an end.
    pub(crate) fn has_worker(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| matches!(s.occupant, Occupant::Worker(_)))
    }

    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<(), String> {
        let n = self.slots.len() as u32;
        let gone = |id: u32| id >= n || self.slots[id as usize].occupant == Occupant::Retired;
        match ids.iter().find(|&&id| gone(id)) {
            Some(id) => Err(format!(
                "there is no worker {id}: WORKER_ID goes from 0 to {}",
                n - 1
            )),
            None => Ok(()),
        }
    }
}
