//! The cluster as `ctl status` shows it: every slot's worker (or its scheduled respawn), every
//! new worker of a reload or restart, every stopped worker not reaped yet — with the counts the
//! cluster keeps for them (restarts, CPU time of reaped workers, the last exit and why: ended on
//! its own, crashed, killed by a signal recluster did not send, or replaced and by what).

use std::time::{Instant, SystemTime};

use crate::process::reaper::Exit;
use crate::process::status::ProcessStatus;
use crate::supervisor::report::Report;
use crate::supervisor::snapshot::{
    ClusterState, ClusterView, LastExit, Snapshot, WorkerRole, WorkerState, WorkerView,
};

use super::stop::Phase;
use super::worker::{Retire, State, StopReason, Worker};
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
        let relayed = slot.relayed.take();
        let cause = if exit.oom_killed {
            slot.guard_actions.oom_kills += 1;
            Cause::OomKilled
        } else {
            cause(&worker, exit.status, relayed)
        };
        slot.last_exit = Some(ExitRecord {
            pid: exit.pid,
            status: exit.status,
            cause,
            at: now,
        });
        if exit.oom_killed {
            self.report(Report::OomKilled {
                id: worker.id(),
                pid: exit.pid,
            });
        }
    }

    /// The state of the cluster and of each worker. `pid` is recluster's own.
    pub fn snapshot(&self, pid: u32, clock: Clock) -> Snapshot {
        let started = self.started.unwrap_or(clock.now);
        let state = match self.phase {
            Phase::Delaying(_) | Phase::Stopping(_) | Phase::Exited => ClusterState::Stopping,
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
                recycles: self.slots.iter().map(|s| s.recycle_count).sum(),
                reloads_completed: self.reloads.0,
                reloads_abandoned: self.reloads.1,
                env_files: Vec::new(),
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
        Occupant::Done if slot.given_up => WorkerView::new(
            slot.id,
            WorkerRole::Slot,
            slot.generation,
            WorkerState::GaveUp,
        ),
        Occupant::Done | Occupant::Retired => WorkerView::new(
            slot.id,
            WorkerRole::Slot,
            slot.generation,
            WorkerState::Done,
        ),
    };
    view.restarts = slot.restart_count;
    view.recycles = slot.recycle_count;
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
            reason: e.cause.reason().to_string(),
            what: e.cause.what(e.status),
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

/// Why a worker ended, from what recluster was doing with it and what it died of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    CouldNotStart,
    /// It ended before it was ready (exit, or a crash).
    EndedStarting,
    /// It exited, or died of a signal it raised or that its own code caused (SIGSEGV, SIGABRT…).
    OnItsOwn,
    /// A signal recluster relayed to it (forwarded, or `ctl signal`).
    Relayed,
    /// A signal recluster did not send and the program did not bring on itself: `kill` from
    /// another process, or the kernel's OOM killer.
    Outside,
    MissedReadyTimeout,
    Watchdog,
    KilledAfterTimeout,
    ClusterStop,
    Retired(Retire),
    /// The kernel's OOM killer, in its cgroup (`--memory-max`).
    OomKilled,
}

/// The signals a program's own fault brings (a crash), as opposed to one another process sends.
fn is_crash(sig: crate::process::signal::Sig) -> bool {
    [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGABRT,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGXCPU,
        libc::SIGXFSZ,
    ]
    .contains(&sig.number())
}

impl Cause {
    /// Why, in words (`ctl status --json`'s `reason`, the page's tooltip).
    pub(super) fn reason(self) -> &'static str {
        match self {
            Cause::CouldNotStart => "could not be started",
            Cause::EndedStarting => "ended before it was ready",
            Cause::OnItsOwn => "ended on its own",
            Cause::Relayed => "killed by a signal recluster relayed (forwarded, or ctl signal)",
            Cause::Outside => {
                "killed by a signal recluster did not send (kill from another process, or the kernel's OOM killer)"
            }
            Cause::MissedReadyTimeout => "stopped: missed --ready-timeout",
            Cause::Watchdog => "stopped: missed --watchdog",
            Cause::KilledAfterTimeout => "killed after --kill-timeout",
            Cause::ClusterStop => "stopped with the cluster",
            Cause::OomKilled => "killed by the kernel's OOM killer in its cgroup (--memory-max)",
            Cause::Retired(Retire::Reload) => "replaced by recluster: a rolling reload",
            Cause::Retired(Retire::Restart) => "replaced by recluster: ctl restart",
            Cause::Retired(Retire::Memory) => "replaced by recluster: above --max-memory",
            Cause::Retired(Retire::Age) => "replaced by recluster: it had run for --max-age",
            Cause::Retired(Retire::ScaledDown) => "stopped by recluster: its slot was scaled down",
            Cause::Retired(Retire::NotNeeded) => {
                "stopped by recluster: its reload was abandoned or superseded"
            }
        }
    }

    /// The short form for the LAST EXIT column ("exit 1", "SIGSEGV", "replaced: reload",
    /// "SIGKILL, outside").
    pub(super) fn what(self, status: ProcessStatus) -> String {
        let status_text = match status {
            ProcessStatus::Exited(code) => format!("exit {code}"),
            ProcessStatus::Killed(sig) => sig.to_string(),
        };
        match self {
            Cause::Retired(Retire::Reload) => "replaced: reload".to_string(),
            Cause::Retired(Retire::Restart) => "replaced: restart".to_string(),
            Cause::Retired(Retire::Memory) => "replaced: memory".to_string(),
            Cause::Retired(Retire::Age) => "replaced: age".to_string(),
            Cause::Retired(Retire::ScaledDown) => "scaled down".to_string(),
            Cause::Retired(Retire::NotNeeded) => "not needed".to_string(),
            Cause::Outside => format!("{status_text}, outside"),
            Cause::OomKilled => "oom-killed".to_string(),
            _ => status_text,
        }
    }
}

fn cause(
    worker: &Worker,
    status: ProcessStatus,
    relayed: Option<crate::process::signal::Sig>,
) -> Cause {
    let by_signal = match status {
        ProcessStatus::Killed(sig) => Some(sig),
        ProcessStatus::Exited(_) => None,
    };
    let own_end = |otherwise: Cause| match by_signal {
        Some(sig) if relayed == Some(sig) => Cause::Relayed,
        Some(sig) if !is_crash(sig) => Cause::Outside,
        _ => otherwise,
    };
    match worker.state {
        State::Spawning => Cause::CouldNotStart,
        State::Starting { .. } => own_end(Cause::EndedStarting),
        State::Ready { .. } => own_end(Cause::OnItsOwn),
        State::Stopping {
            reason: StopReason::MissedReadyTimeout,
            ..
        } => Cause::MissedReadyTimeout,
        State::Stopping {
            reason: StopReason::Watchdog,
            ..
        } => Cause::Watchdog,
        State::Stopping { signal, .. }
            if status == ProcessStatus::Killed(crate::process::signal::Sig::KILL)
                && signal != crate::process::signal::Sig::KILL =>
        {
            Cause::KilledAfterTimeout
        }
        State::Stopping {
            reason: StopReason::ClusterStop,
            ..
        } => Cause::ClusterStop,
        State::Stopping {
            reason: StopReason::Retired(why),
            ..
        } => Cause::Retired(why),
        State::Draining { .. } => Cause::Retired(Retire::ScaledDown),
    }
}
