//! The cluster as `ctl status` shows it: every slot's worker (or its scheduled respawn), every
//! new worker of a reload or restart, every stopped worker not reaped yet — with the counts the
//! cluster keeps for them (restarts, CPU time of reaped workers, the last exit and why).

use std::time::{Instant, SystemTime};

use crate::reaper::Exit;
use crate::snapshot::{
    ClusterState, ClusterView, LastExit, Snapshot, WorkerRole, WorkerState, WorkerView,
};
use crate::status::ProcessStatus;

use super::stop::Phase;
use super::worker::{State, StopReason, Worker};
use super::{Cluster, ExitRecord, Occupant, Slot};

/// Converts the cluster's instants to Unix time, given one instant at which both are known.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn unix(&self, at: Instant) -> f64 {
        let wall = self
            .wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        wall - self.now.saturating_duration_since(at).as_secs_f64()
            + at.saturating_duration_since(self.now).as_secs_f64()
    }
}

impl Cluster {
    /// Counts a reaped worker's CPU time and exit for its slot (before its record goes).
    pub(super) fn note_exit(&mut self, exit: &Exit, now: Instant) {
        let Some(worker) = self.worker(exit.pid).copied() else {
            return;
        };
        let Some(slot) = self.slots.get_mut(worker.id() as usize) else {
            return; // a slot scaled away
        };
        slot.cpu += exit.cpu;
        slot.last_exit = Some(ExitRecord {
            pid: exit.pid,
            status: exit.status,
            reason: end_reason(&worker, exit.status),
            at: now,
        });
    }

    /// The state of the cluster and of each worker. `pid` is recluster's own.
    pub fn snapshot(&self, pid: u32, clock: Clock) -> Snapshot {
        let started = self.started.unwrap_or(clock.now);
        let state = match self.phase {
            Phase::Stopping(_) | Phase::Exited => ClusterState::Stopping,
            Phase::Running if self.reload.is_some() => ClusterState::Reloading,
            Phase::Running if !self.announced_ready => ClusterState::Starting,
            Phase::Running => ClusterState::Running,
        };
        let mut workers = Vec::with_capacity(self.slots.len() + self.leaving.len());
        for slot in self
            .slots
            .iter()
            .filter(|s| s.occupant != Occupant::Retired)
        {
            workers.push(slot_view(slot, &clock));
            if let Some(new) = &slot.replacement {
                workers.push(worker_view(new, WorkerRole::Replacement, &clock));
            }
        }
        let mut leaving: Vec<&Worker> = self.leaving.values().collect();
        leaving.sort_by_key(|w| (w.id(), w.pid()));
        workers.extend(
            leaving
                .into_iter()
                .map(|w| worker_view(w, WorkerRole::Leaving, &clock)),
        );
        Snapshot {
            cluster: ClusterView {
                pid,
                name: None,
                started_at: clock.unix(started),
                uptime_seconds: clock.now.saturating_duration_since(started).as_secs_f64(),
                state,
                generation: self.generation,
                reloading_to: self.reload.as_ref().map(|r| r.target),
                workers: self.workers() as u32,
                ready: self.ready as u32,
                restarts: self.slots.iter().map(|s| s.restart_count).sum(),
                reloads_completed: self.reloads.0,
                reloads_abandoned: self.reloads.1,
                sockets: Vec::new(),
                control: None,
                messages: Default::default(),
            },
            workers,
        }
    }
}

/// A slot's row: its own worker, or its scheduled respawn, or nothing.
fn slot_view(slot: &Slot, clock: &Clock) -> WorkerView {
    let mut view = match &slot.occupant {
        Occupant::Worker(worker) => worker_view(worker, WorkerRole::Slot, clock),
        Occupant::Waiting { .. } => WorkerView::new(
            slot.id,
            WorkerRole::Slot,
            slot.generation,
            WorkerState::Waiting,
        ),
        Occupant::Done | Occupant::Retired => WorkerView::new(
            slot.id,
            WorkerRole::Slot,
            slot.generation,
            WorkerState::Done,
        ),
    };
    view.restarts = slot.restart_count;
    view.guards = slot.guard_actions;
    view.cpu_seconds += slot.cpu.as_secs_f64();
    view.last_exit = slot.last_exit.map(|e| {
        let (code, signal) = match e.status {
            ProcessStatus::Exited(code) => (Some(code), None),
            ProcessStatus::Killed(sig) => (None, Some(sig.to_string())),
        };
        LastExit {
            pid: e.pid,
            code,
            signal,
            reason: e.reason.to_string(),
            at: clock.unix(e.at),
        }
    });
    view
}

fn worker_view(worker: &Worker, role: WorkerRole, clock: &Clock) -> WorkerView {
    let (state, ready_at) = match worker.state {
        State::Spawning => (WorkerState::Spawning, None),
        State::Starting { .. } => (WorkerState::Starting, None),
        State::Ready { since, .. } => (WorkerState::Ready, Some(since)),
        State::Draining { .. } => (WorkerState::Draining, None),
        State::Stopping { .. } => (WorkerState::Stopping, None),
    };
    WorkerView {
        pid: worker.pid(),
        started_at: worker.started().map(|t| clock.unix(t)),
        ready_at: ready_at.map(|t| clock.unix(t)),
        ..WorkerView::new(worker.id(), role, worker.generation(), state)
    }
}

/// Why a worker ended, from what recluster was doing with it.
fn end_reason(worker: &Worker, status: ProcessStatus) -> &'static str {
    match worker.state {
        State::Spawning => "could not be started",
        State::Starting { .. } => "ended before it was ready",
        State::Ready { .. } => "ended on its own",
        State::Stopping {
            reason: StopReason::MissedReadyTimeout,
            ..
        } => "stopped: missed --ready-timeout",
        State::Stopping {
            reason: StopReason::Watchdog,
            ..
        } => "stopped: missed --watchdog",
        State::Stopping { signal, .. }
            if status == ProcessStatus::Killed(crate::signal::Sig::KILL)
                && signal != crate::signal::Sig::KILL =>
        {
            "killed after --kill-timeout"
        }
        State::Stopping {
            reason: StopReason::ClusterStop,
            ..
        } => "stopped with the cluster",
        State::Stopping {
            reason: StopReason::Retired,
            ..
        }
        | State::Draining { .. } => "stopped by recluster (replaced or scaled down)",
    }
}
