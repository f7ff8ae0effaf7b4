//! The cluster's state and every decision about it, as pure functions of (state, event, now):
//! which slot to (re)spawn and when, readiness, the restart backoff, the crash-loop limit, scaling,
//! the graceful stop and its deadline, and the final exit status. No process is touched here — the
//! decisions come back as `Action`s — so all of it is unit-tested with a synthetic clock.
//!
//! Invariants: slot `i` holds `WORKER_ID` `i` (slots are `0..N`); a slot has at most one worker,
//! at most one replacement (during a reload) and at most one pending respawn; workers recluster
//! stopped that are no longer a slot's own (scale-down, the old ones after a reload, abandoned
//! replacements) are kept apart in `leaving` until reaped; once stopping, nothing is spawned again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use humantime::format_duration;
use log::{debug, error, info, warn};

use crate::cli::{ReadyMode, RestartMode};
use crate::config::Policy;
use crate::exit_code;
use crate::notify::Message;
use crate::reaper::Exit;
use crate::signal::Sig;
use crate::spawn::WorkerIdentity;
use crate::status::ProcessStatus;

use super::action::Action;

mod reload;

use reload::Reload;

pub struct Cluster {
    policy: Policy,
    slots: Vec<Slot>,
    /// Workers recluster stopped that are no longer a slot's own, until they are reaped.
    leaving: Vec<Worker>,
    phase: Phase,
    /// Whether recluster had any child left after the latest reaping.
    children_left: bool,
    /// The generation of the last completed reload: what a slot added by TTIN runs.
    generation: u32,
    /// Whether the service manager has been told that every worker is ready.
    announced_ready: bool,
    /// The rolling reload under way, if any.
    reload: Option<Reload>,
    /// The newest generation ever asked for (reloads that fail still use up their number).
    last_generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    Stopping(Stop),
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stop {
    signal: Sig,
    deadline: Instant,
    killed: bool,
    orphans_signaled: bool,
    outcome: Outcome,
}

/// Why the cluster is stopping; decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Requested,
    Finished,
    GaveUp(ProcessStatus),
}

struct Slot {
    id: u32,
    worker: Option<Worker>,
    /// During a reload: the new generation's worker, until it is ready and takes over.
    replacement: Option<Worker>,
    /// The generation a respawn of this slot runs (that of its current worker).
    generation: u32,
    respawn_at: Option<Instant>,
    /// Consecutive deaths before --min-uptime: the backoff exponent.
    early_deaths: u32,
    /// When this slot was restarted, within the crash-loop window.
    restarts: VecDeque<Instant>,
    last_end: Option<End>,
}

#[derive(Debug, Clone, Copy)]
struct Worker {
    id: u32,
    pid: i32,
    generation: u32,
    started: Instant,
    /// The signal recluster sent to stop this worker, if it did.
    stop_sent: Option<Sig>,
    /// When its process group gets SIGKILL (after recluster stopped it).
    kill_at: Option<Instant>,
    ready: bool,
    /// `--ready started`: when it will have been up for `--min-uptime`.
    ready_at: Option<Instant>,
    /// `--ready notify` and `listening`: when `--ready-timeout` runs out.
    ready_by: Option<Instant>,
    /// `--ready listening`: when to look for its listening socket next.
    probe_at: Option<Instant>,
    /// Stopped by recluster because it did not become ready in time: a failed start.
    failed_start: bool,
}

/// How a slot's worker (or an attempt to spawn one) ended.
struct Ended {
    pid: Option<i32>,
    status: ProcessStatus,
    stop_sent: Option<Sig>,
    uptime: Duration,
    failed_start: bool,
}

#[derive(Debug, Clone, Copy)]
struct End {
    status: ProcessStatus,
    /// Exit status 0, or death by the stop signal recluster sent.
    clean: bool,
}

impl Cluster {
    pub fn new(policy: Policy, workers: u32) -> Cluster {
        Cluster {
            policy,
            slots: (0..workers).map(Slot::new).collect(),
            leaving: Vec::new(),
            phase: Phase::Running,
            children_left: false,
            generation: 0,
            announced_ready: false,
            reload: None,
            last_generation: 0,
        }
    }

    /// Spawns every slot.
    pub fn start(&mut self) -> Vec<Action> {
        info!(
            "starting {} worker{}",
            self.slots.len(),
            if self.slots.len() == 1 { "" } else { "s" }
        );
        (0..self.slots.len())
            .map(|i| self.spawn_action(i))
            .collect()
    }

    /// Records a worker started for a `Spawn` action.
    pub fn spawned(&mut self, identity: WorkerIdentity, pid: i32, now: Instant) {
        self.children_left = true;
        if identity.id as usize >= self.slots.len() {
            return;
        }
        let ready_by = Some(later(now, self.policy.ready_timeout));
        let (ready_at, ready_by, probe_at) = match self.policy.ready {
            ReadyMode::Started => (Some(later(now, self.policy.min_uptime)), None, None),
            ReadyMode::Notify => (None, ready_by, None),
            ReadyMode::Listening(_) => (None, ready_by, Some(now)),
        };
        let worker = Worker {
            id: identity.id,
            pid,
            generation: identity.generation,
            started: now,
            stop_sent: None,
            kill_at: None,
            ready: false,
            ready_at,
            ready_by,
            probe_at,
            failed_start: false,
        };
        if self.take_spawning(identity.id) {
            info!(
                "worker {} of generation {} started (pid {pid})",
                identity.id, identity.generation
            );
            self.slots[identity.id as usize].replacement = Some(worker);
        } else {
            info!("worker {} started (pid {pid})", identity.id);
            let slot = &mut self.slots[identity.id as usize];
            slot.generation = identity.generation;
            slot.worker = Some(worker);
        }
    }

    /// A message a worker (or a process of its tree) sent on its notify socket.
    pub fn on_notified(&mut self, pid: i32, message: &Message, now: Instant) -> Vec<Action> {
        if let Some(status) = &message.status {
            let index = self.replacement_of(pid).or_else(|| self.slot_of(pid));
            if let Some(index) = index {
                debug!("worker {} (pid {pid}): {status}", self.slots[index].id);
            }
        }
        if message.ready {
            return self.on_ready(pid, now);
        }
        Vec::new()
    }

    /// `--ready listening`: what the probe of a worker's process group found, at `now` (after the
    /// probe, which may take a while on a busy machine): ready, or look again in a while.
    pub fn on_probed(&mut self, pid: i32, listening: bool, now: Instant) -> Vec<Action> {
        if listening {
            return self.on_ready(pid, now);
        }
        let slot = self.slots.iter_mut().find(|s| {
            s.worker.is_some_and(|w| w.pid == pid) || s.replacement.is_some_and(|w| w.pid == pid)
        });
        if let Some(slot) = slot {
            for worker in [slot.worker.as_mut(), slot.replacement.as_mut()]
                .into_iter()
                .flatten()
            {
                if worker.pid == pid {
                    worker.probe_at = Some(later(now, PROBE_INTERVAL));
                }
            }
        }
        Vec::new()
    }

    /// A worker (or a replacement) says, or shows, it is ready.
    fn on_ready(&mut self, pid: i32, now: Instant) -> Vec<Action> {
        if let Some(index) = self.replacement_of(pid) {
            return self.promote(index, now);
        }
        let Some(index) = self.slot_of(pid) else {
            return Vec::new();
        };
        let worker = self.slots[index].worker.expect("slot_of found a worker");
        if !worker.ready && worker.stop_sent.is_none() {
            return self.became_ready(index);
        }
        Vec::new()
    }

    /// A `Spawn` that produced no process: counts as a worker that ended at once with `status`.
    pub fn spawn_failed(
        &mut self,
        identity: WorkerIdentity,
        status: ProcessStatus,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.take_spawning(identity.id) {
            let reason = format!(
                "worker {} of the new generation could not be started",
                identity.id
            );
            let mut actions = self.abandon_reload(&reason, now);
            actions.extend(self.settle(now));
            return actions;
        }
        if let Some(index) = self.slots.iter().position(|s| s.id == identity.id) {
            let ended = Ended {
                pid: None,
                status,
                stop_sent: None,
                uptime: Duration::ZERO,
                failed_start: false,
            };
            self.slot_ended(index, ended, now, &mut actions);
        }
        actions.extend(self.settle(now));
        actions
    }

    pub fn on_signal(&mut self, sig: Sig, now: Instant) -> Vec<Action> {
        match (sig, self.phase) {
            (Sig::INT | Sig::TERM | Sig::QUIT, Phase::Running) => {
                info!(
                    "received {sig}: stopping {} (--kill-timeout {})",
                    self.describe_workers(),
                    format_duration(self.policy.kill_timeout)
                );
                self.begin_stop(sig, Outcome::Requested, now)
            }
            (Sig::INT | Sig::TERM | Sig::QUIT, Phase::Stopping(stop)) if !stop.killed => {
                warn!("received {sig} again while stopping: killing every worker now");
                self.kill_all()
            }
            (Sig::TTIN, Phase::Running) => self.scale_up(),
            (Sig::TTOU, Phase::Running) => self.scale_down(now),
            (Sig::HUP, Phase::Running) => self.begin_reload(now),
            (Sig::TTIN | Sig::TTOU | Sig::HUP, _) => {
                debug!("ignoring {sig} while stopping");
                Vec::new()
            }
            (Sig::TSTP, _) => {
                let mut actions = self.forward(sig);
                actions.push(Action::SuspendSelf);
                actions
            }
            _ => self.forward(sig),
        }
    }

    pub fn on_reaped(&mut self, exits: &[Exit], children_left: bool, now: Instant) -> Vec<Action> {
        self.children_left = children_left;
        let mut actions = Vec::new();
        for exit in exits {
            if let Some(index) = self.replacement_of(exit.pid) {
                actions.extend(self.replacement_ended(index, exit.status, now));
            } else if let Some(index) = self.slot_of(exit.pid) {
                let worker = self.slots[index]
                    .worker
                    .take()
                    .expect("slot_of found a worker");
                let ended = Ended {
                    pid: Some(worker.pid),
                    status: exit.status,
                    stop_sent: worker.stop_sent,
                    uptime: now.saturating_duration_since(worker.started),
                    failed_start: worker.failed_start,
                };
                self.slot_ended(index, ended, now, &mut actions);
            } else if let Some(position) = self.leaving.iter().position(|w| w.pid == exit.pid) {
                let worker = self.leaving.remove(position);
                let log_level = if exit.status == ProcessStatus::Killed(Sig::KILL) {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
                log::log!(
                    log_level,
                    "worker {} (pid {}) {} after being stopped",
                    worker.id,
                    worker.pid,
                    exit.status
                );
            } else {
                debug!("reaped adopted process {} ({})", exit.pid, exit.status);
            }
        }
        if self.reload.is_some() {
            // An old worker that finished draining makes room for the next replacement.
            actions.extend(self.advance_reload());
        }
        if let Phase::Stopping(stop) = self.phase
            && stop.killed
            && children_left
        {
            // Orphans of the killed groups were just reparented to recluster: kill them too.
            actions.push(Action::KillAll { groups: Vec::new() });
        }
        actions.extend(self.settle(now));
        actions
    }

    /// Carries out whatever is due at `now`: respawns, scale-down kills, the stop deadline.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.phase {
            Phase::Running => {
                for index in 0..self.slots.len() {
                    if self.slots[index].respawn_at.is_some_and(|at| at <= now) {
                        self.slots[index].respawn_at = None;
                        actions.push(self.spawn_action(index));
                    }
                    actions.extend(self.check_worker_timers(index, now));
                    actions.extend(self.check_replacement_timers(index, now));
                }
                let policy = &self.policy;
                actions.extend(
                    self.leaving
                        .iter_mut()
                        .filter_map(|worker| kill_if_due(worker, policy, now)),
                );
            }
            Phase::Stopping(stop) if !stop.killed && stop.deadline <= now => {
                warn!(
                    "{} still running {} after {}: sending SIGKILL (--kill-timeout)",
                    self.describe_remaining(),
                    format_duration(self.policy.kill_timeout),
                    stop.signal
                );
                actions = self.kill_all();
            }
            _ => {}
        }
        actions
    }

    /// The next moment `on_timer` has something to do; `None` when only an event can change things.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running => self
                .slots
                .iter()
                .filter_map(|s| s.respawn_at)
                .chain(
                    self.slots
                        .iter()
                        .filter_map(|s| s.worker.and_then(|w| w.next_timer())),
                )
                .chain(
                    self.slots
                        .iter()
                        .filter_map(|s| s.replacement.and_then(|w| w.next_timer())),
                )
                .chain(self.leaving.iter().filter_map(|w| w.kill_at))
                .min(),
            Phase::Stopping(stop) if !stop.killed => Some(stop.deadline),
            _ => None,
        }
    }

    /// The pids (and process groups) of every live worker, in slot order, then those leaving.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| s.worker.map(|w| w.pid))
            .chain(
                self.slots
                    .iter()
                    .filter_map(|s| s.replacement.map(|w| w.pid)),
            )
            .chain(self.leaving.iter().map(|w| w.pid))
            .collect()
    }

    fn spawn_action(&self, index: usize) -> Action {
        Action::Spawn(WorkerIdentity {
            id: self.slots[index].id,
            count: self.slots.len() as u32,
            generation: self.slots[index].generation,
        })
    }

    fn replacement_of(&self, pid: i32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.replacement.is_some_and(|w| w.pid == pid))
    }

    fn slot_of(&self, pid: i32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.worker.is_some_and(|w| w.pid == pid))
    }

    /// Readiness and stop timers of a slot's worker that are due at `now`.
    fn check_worker_timers(&mut self, index: usize, now: Instant) -> Vec<Action> {
        let policy = self.policy.clone();
        let Some(worker) = self.slots[index].worker.as_mut() else {
            return Vec::new();
        };
        if !worker.ready && worker.stop_sent.is_none() {
            if worker.ready_at.is_some_and(|at| at <= now) {
                return self.became_ready(index);
            }
            if worker.ready_by.is_some_and(|at| at <= now) {
                error!(
                    "worker {} (pid {}) was not ready within {}: stopping it as a failed start (--ready-timeout)",
                    worker.id,
                    worker.pid,
                    format_duration(policy.ready_timeout)
                );
                worker.failed_start = true;
                worker.stop_sent = Some(policy.stop_signal);
                worker.kill_at = Some(later(now, policy.kill_timeout));
                return vec![Action::SignalGroup {
                    pgid: worker.pid,
                    signal: policy.stop_signal,
                }];
            }
            // After the timeout check: a slow probe must never starve it.
            if let Some(action) = probe(worker, &policy, now) {
                return vec![action];
            }
        }
        kill_if_due(worker, &policy, now).into_iter().collect()
    }

    /// A slot's worker became ready; once all are, at start, the service manager hears of it.
    fn became_ready(&mut self, index: usize) -> Vec<Action> {
        let slot = &mut self.slots[index];
        let worker = slot.worker.as_mut().expect("a ready worker");
        worker.ready = true;
        debug!("worker {} (pid {}) is ready", worker.id, worker.pid);
        let all_ready = self.slots.iter().all(|s| s.worker.is_some_and(|w| w.ready));
        if self.announced_ready || !all_ready || self.phase != Phase::Running {
            return Vec::new();
        }
        self.announced_ready = true;
        let n = self.slots.len();
        info!("all {n} workers are ready");
        vec![Action::NotifyManager(format!(
            "READY=1\nSTATUS={n} workers ready"
        ))]
    }

    /// A slot's worker ended (or could not be spawned): record how, and decide about a restart.
    fn slot_ended(&mut self, index: usize, ended: Ended, now: Instant, actions: &mut Vec<Action>) {
        let Ended {
            pid,
            status,
            stop_sent,
            uptime,
            failed_start,
        } = ended;
        // The contract's rule, whatever the reason recluster stopped it (a failed start too).
        let clean =
            status.success() || matches!(status, ProcessStatus::Killed(s) if Some(s) == stop_sent);
        let policy = self.policy.clone();
        let slot = &mut self.slots[index];
        slot.last_end = Some(End { status, clean });
        let who = match pid {
            Some(pid) => format!("worker {} (pid {pid})", slot.id),
            None => format!("worker {}", slot.id),
        };
        if self.phase != Phase::Running {
            info!("{who} {status}");
            return;
        }
        if slot.replacement.is_some() {
            info!("{who} {status}; its replacement of the new generation takes over when ready");
            return;
        }
        let restart = if failed_start {
            policy.restart != RestartMode::Never
        } else {
            restarts_after(policy.restart, status)
        };
        if !restart {
            info!(
                "{who} {status}; not restarting it (--restart {})",
                restart_mode_name(policy.restart)
            );
            return;
        }
        let delay = if uptime >= policy.min_uptime && !failed_start {
            slot.early_deaths = 0;
            Duration::ZERO
        } else {
            slot.early_deaths = slot.early_deaths.saturating_add(1);
            backoff(&policy, slot.early_deaths)
        };
        if let Some(limit) = policy.crash_limit {
            while slot
                .restarts
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= limit.window)
            {
                slot.restarts.pop_front();
            }
            slot.restarts.push_back(now);
            if slot.restarts.len() > limit.max_restarts as usize {
                error!(
                    "{who} {status}; it needed more than {} restarts within {}: giving up (--max-restarts, --restart-window)",
                    limit.max_restarts,
                    format_duration(limit.window)
                );
                actions.extend(self.begin_stop(policy.stop_signal, Outcome::GaveUp(status), now));
                return;
            }
        }
        if delay.is_zero() {
            info!("{who} {status}, restarting it");
        } else {
            info!("{who} {status}, restarting in {}", format_duration(delay));
        }
        slot.respawn_at = Some(later(now, delay));
    }

    fn begin_stop(&mut self, signal: Sig, outcome: Outcome, now: Instant) -> Vec<Action> {
        for slot in &mut self.slots {
            slot.respawn_at = None;
        }
        let mut actions = Vec::new();
        if self.reload.take().is_some() {
            info!("the reload under way is cancelled");
        }
        for slot in &mut self.slots {
            for worker in [slot.worker.as_mut(), slot.replacement.as_mut()]
                .into_iter()
                .flatten()
            {
                worker.stop_sent = Some(signal);
                actions.push(Action::SignalGroup {
                    pgid: worker.pid,
                    signal,
                });
            }
        }
        // Workers already leaving got the stop signal and keep their own deadline until now.
        for worker in &mut self.leaving {
            worker.kill_at = None;
        }
        actions.push(Action::SignalOrphans {
            signal,
            workers: self.worker_pids(),
        });
        actions.push(Action::NotifyManager(format!(
            "STOPPING=1\nSTATUS=stopping ({signal})"
        )));
        self.phase = Phase::Stopping(Stop {
            signal,
            deadline: later(now, self.policy.kill_timeout),
            killed: false,
            orphans_signaled: false,
            outcome,
        });
        actions.extend(self.settle(now));
        actions
    }

    fn kill_all(&mut self) -> Vec<Action> {
        if let Phase::Stopping(stop) = &mut self.phase {
            stop.killed = true;
        }
        vec![Action::KillAll {
            groups: self.worker_pids(),
        }]
    }

    /// Moves on when nothing is left to wait for: a finished cluster begins to stop, a stopped one
    /// exits once no worker and no other child of recluster remains.
    fn settle(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running => {
                let idle = self.leaving.is_empty()
                    && self.slots.iter().all(|s| {
                        s.worker.is_none() && s.replacement.is_none() && s.respawn_at.is_none()
                    });
                if idle {
                    info!("every worker has ended and none is to be restarted");
                    return self.begin_stop(self.policy.stop_signal, Outcome::Finished, now);
                }
                Vec::new()
            }
            Phase::Stopping(stop) => {
                let workers_left = !self.leaving.is_empty()
                    || self
                        .slots
                        .iter()
                        .any(|s| s.worker.is_some() || s.replacement.is_some());
                if workers_left {
                    return Vec::new();
                }
                if self.children_left {
                    if stop.orphans_signaled || stop.killed {
                        return Vec::new();
                    }
                    self.phase = Phase::Stopping(Stop {
                        orphans_signaled: true,
                        ..stop
                    });
                    debug!("every worker has exited; waiting for the processes they left behind");
                    return vec![Action::SignalOrphans {
                        signal: stop.signal,
                        workers: Vec::new(),
                    }];
                }
                let code = self.exit_code(stop.outcome);
                self.phase = Phase::Exited;
                info!("exiting with status {code}");
                vec![Action::Exit(code)]
            }
            Phase::Exited => Vec::new(),
        }
    }

    /// 0 when every slot's last worker ended cleanly; else the lowest unclean slot's status; after a
    /// crash-loop give-up, the status of the worker that gave up.
    fn exit_code(&self, outcome: Outcome) -> i32 {
        if let Outcome::GaveUp(status) = outcome {
            return status.code();
        }
        self.slots
            .iter()
            .filter_map(|s| s.last_end)
            .find(|end| !end.clean)
            .map_or(exit_code::SUCCESS, |end| end.status.code())
    }

    fn scale_up(&mut self) -> Vec<Action> {
        if self.slots.len() >= crate::config::MAX_WORKERS as usize {
            warn!(
                "received SIGTTIN with {} workers, the most recluster runs: ignoring it",
                self.slots.len()
            );
            return Vec::new();
        }
        let id = self.slots.len() as u32;
        let mut slot = Slot::new(id);
        // During a reload a new slot starts on the new generation: nothing to replace later.
        slot.generation = self.reload.as_ref().map_or(self.generation, |r| r.target);
        self.slots.push(slot);
        info!(
            "received SIGTTIN: scaling up to {} workers",
            self.slots.len()
        );
        vec![self.spawn_action(id as usize)]
    }

    fn scale_down(&mut self, now: Instant) -> Vec<Action> {
        if self.slots.len() <= 1 {
            warn!(
                "received SIGTTOU with one worker left: keeping it (send TERM to stop the cluster)"
            );
            return Vec::new();
        }
        let slot = self.slots.pop().expect("more than one slot");
        info!(
            "received SIGTTOU: scaling down to {} workers",
            self.slots.len()
        );
        let mut actions: Vec<Action> = [slot.worker, slot.replacement]
            .into_iter()
            .flatten()
            .map(|worker| self.retire(worker, now))
            .collect();
        actions.push(Action::ReleaseSlot(slot.id));
        actions
    }

    /// Stops a worker that is no longer a slot's own: `--stop-signal` now, SIGKILL after
    /// `--kill-timeout`; it counts as alive (for the N + K bound) until it is reaped.
    fn retire(&mut self, mut worker: Worker, now: Instant) -> Action {
        worker.stop_sent = Some(self.policy.stop_signal);
        worker.kill_at = Some(later(now, self.policy.kill_timeout));
        self.leaving.push(worker);
        Action::SignalGroup {
            pgid: worker.pid,
            signal: self.policy.stop_signal,
        }
    }

    fn forward(&self, sig: Sig) -> Vec<Action> {
        let pids = self.worker_pids();
        debug!("forwarding {sig} to {} worker process groups", pids.len());
        pids.into_iter()
            .map(|pgid| Action::SignalGroup { pgid, signal: sig })
            .collect()
    }

    fn describe_workers(&self) -> String {
        let n = self.worker_pids().len();
        format!("{n} worker{}", if n == 1 { "" } else { "s" })
    }

    fn describe_remaining(&self) -> String {
        match self.worker_pids().len() {
            0 => "processes left behind by workers are".to_string(),
            1 => "1 worker is".to_string(),
            n => format!("{n} workers are"),
        }
    }
}

impl Worker {
    /// Its next readiness or stop deadline, if any.
    fn next_timer(self) -> Option<Instant> {
        let readiness = if self.ready || self.stop_sent.is_some() {
            None
        } else {
            [self.ready_at, self.ready_by, self.probe_at]
                .into_iter()
                .flatten()
                .min()
        };
        [readiness, self.kill_at].into_iter().flatten().min()
    }
}

impl Slot {
    fn new(id: u32) -> Slot {
        Slot {
            id,
            worker: None,
            replacement: None,
            generation: 0,
            respawn_at: None,
            early_deaths: 0,
            restarts: VecDeque::new(),
            last_end: None,
        }
    }
}

/// systemd's rule for Restart=on-failure: a clean end is status 0 or death by HUP, INT, TERM, PIPE.
fn restarts_after(mode: RestartMode, status: ProcessStatus) -> bool {
    match mode {
        RestartMode::Always => true,
        RestartMode::Never => false,
        RestartMode::OnFailure => match status {
            ProcessStatus::Exited(code) => code != 0,
            ProcessStatus::Killed(sig) => {
                ![Sig::HUP, Sig::INT, Sig::TERM].contains(&sig) && sig.number() != libc::SIGPIPE
            }
        },
    }
}

/// The flag's own spelling of a restart mode (`on-failure`), from the CLI definition.
fn restart_mode_name(mode: RestartMode) -> String {
    clap::ValueEnum::to_possible_value(&mode).map_or_else(String::new, |v| v.get_name().to_string())
}

/// SIGKILL for the process group of a worker recluster stopped, once `--kill-timeout` has run out.
fn kill_if_due(worker: &mut Worker, policy: &Policy, now: Instant) -> Option<Action> {
    if worker.kill_at.is_none_or(|at| at > now) {
        return None;
    }
    worker.kill_at = None;
    warn!(
        "worker {} (pid {}) still running {} after {}: sending SIGKILL to its process group (--kill-timeout)",
        worker.id,
        worker.pid,
        format_duration(policy.kill_timeout),
        policy.stop_signal
    );
    Some(Action::SignalGroup {
        pgid: worker.pid,
        signal: Sig::KILL,
    })
}

/// How often `--ready listening` looks for a worker's socket while it is not ready yet.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// `--ready listening`: the probe due for a worker that is not ready yet. `on_probed` schedules
/// the next one from the time the answer came back.
fn probe(worker: &mut Worker, policy: &Policy, now: Instant) -> Option<Action> {
    let ReadyMode::Listening(port) = policy.ready else {
        return None;
    };
    if worker.probe_at.is_none_or(|at| at > now) {
        return None;
    }
    worker.probe_at = None;
    Some(Action::ProbeListening {
        pgid: worker.pid,
        port,
    })
}

/// `now + duration`, saturating: a duration too long for the clock means "never" in practice.
fn later(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

/// `--restart-delay` doubled for each consecutive early death after the first, capped.
fn backoff(policy: &Policy, early_deaths: u32) -> Duration {
    let factor = 1u32 << early_deaths.saturating_sub(1).min(31);
    policy
        .restart_delay
        .saturating_mul(factor)
        .min(policy.restart_max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CrashLimit;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy {
            restart: RestartMode::Always,
            restart_delay: 100 * MS,
            restart_max_delay: 400 * MS,
            crash_limit: None,
            min_uptime: 1000 * MS,
            ready: ReadyMode::Started,
            ready_timeout: 3000 * MS,
            reload_batch: 1,
            stop_signal: Sig::TERM,
            kill_timeout: 5000 * MS,
        }
    }

    /// A cluster whose slots all run and are ready, with pids 100, 101, ...
    fn running(policy: Policy, workers: u32, now: Instant) -> Cluster {
        let mut cluster = starting(policy, workers, now);
        for slot in &mut cluster.slots {
            slot.worker.as_mut().unwrap().ready = true;
        }
        cluster.announced_ready = true;
        cluster
    }

    /// A cluster whose workers were all spawned at `now`, not ready yet.
    fn starting(policy: Policy, workers: u32, now: Instant) -> Cluster {
        let mut cluster = Cluster::new(policy, workers);
        for action in cluster.start() {
            let Action::Spawn(identity) = action else {
                panic!("{action:?}")
            };
            cluster.spawned(identity, 100 + identity.id as i32, now);
        }
        cluster
    }

    fn crash_limited(max_restarts: u32, window: Duration) -> Policy {
        Policy {
            crash_limit: Some(CrashLimit {
                max_restarts,
                window,
            }),
            ..policy()
        }
    }

    /// Runs the clock to the pending respawn of slot `id`, checks it, records it as `pid`.
    fn respawn_due(cluster: &mut Cluster, id: u32, pid: i32) -> Instant {
        let due = cluster.next_deadline().expect("a respawn is pending");
        assert_eq!(spawned_ids(&cluster.on_timer(due)), [id]);
        let count = cluster.slots.len() as u32;
        cluster.spawned(
            WorkerIdentity {
                id,
                count,
                generation: 0,
            },
            pid,
            due,
        );
        due
    }

    fn exit(pid: i32, status: ProcessStatus) -> Vec<Exit> {
        vec![Exit { pid, status }]
    }

    fn spawned_ids(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn(identity) => Some(identity.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn start_spawns_every_slot_with_its_identity() {
        let mut cluster = Cluster::new(policy(), 3);
        let actions = cluster.start();
        let expected: Vec<Action> = (0..3)
            .map(|id| {
                Action::Spawn(WorkerIdentity {
                    id,
                    count: 3,
                    generation: 0,
                })
            })
            .collect();
        assert_eq!(actions, expected);
    }

    #[test]
    fn nothing_wakes_the_supervisor_while_all_is_well() {
        let t0 = Instant::now();
        let cluster = running(policy(), 4, t0);
        assert_eq!(cluster.next_deadline(), None);
    }

    #[test]
    fn early_deaths_back_off_doubling_up_to_the_maximum() {
        let mut now = Instant::now();
        let mut cluster = running(policy(), 1, now);
        let mut pid = 100;
        let mut delays = Vec::new();
        for _ in 0..5 {
            now += 10 * MS;
            assert!(
                cluster
                    .on_reaped(&exit(pid, ProcessStatus::Exited(1)), false, now)
                    .is_empty()
            );
            let due = cluster.next_deadline().unwrap();
            delays.push(due - now);
            assert!(cluster.on_timer(due - MS).is_empty(), "not before its time");
            pid += 1;
            now = respawn_due(&mut cluster, 0, pid);
        }
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 400 * MS, 400 * MS]);
    }

    #[test]
    fn a_healthy_worker_is_replaced_at_once_and_resets_the_backoff() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 1, t0);
        cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), false, t0 + 10 * MS);
        let t1 = respawn_due(&mut cluster, 0, 101);
        let t2 = t1 + 2000 * MS; // ran longer than --min-uptime
        cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), false, t2);
        assert_eq!(cluster.next_deadline(), Some(t2));
        assert_eq!(spawned_ids(&cluster.on_timer(t2)), [0]);
        assert_eq!(cluster.slots[0].early_deaths, 0);
    }

    #[test]
    fn a_crash_loop_stops_the_others_and_exits_with_the_crashing_status() {
        let mut now = Instant::now();
        let mut cluster = running(crash_limited(1, 60_000 * MS), 2, now);
        now += MS;
        cluster.on_reaped(&exit(101, ProcessStatus::Exited(3)), true, now);
        now = respawn_due(&mut cluster, 1, 102) + MS;
        let actions = cluster.on_reaped(&exit(102, ProcessStatus::Exited(3)), true, now);
        assert!(
            actions.contains(&Action::SignalGroup {
                pgid: 100,
                signal: Sig::TERM
            }),
            "{actions:?}"
        );
        let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, now);
        assert_eq!(actions, [Action::Exit(3)]);
    }

    #[test]
    fn restarts_outside_the_window_do_not_count() {
        let mut now = Instant::now();
        let mut cluster = running(crash_limited(1, 1000 * MS), 1, now);
        for pid in 100..105 {
            now += 2000 * MS; // each crash far from the previous one
            let actions = cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), false, now);
            assert!(actions.is_empty(), "gave up at pid {pid}: {actions:?}");
            now = respawn_due(&mut cluster, 0, pid + 1);
        }
    }

    #[test]
    fn a_graceful_stop_signals_every_group_and_exits_when_all_are_gone() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        let actions = cluster.on_signal(Sig::INT, t0);
        assert_eq!(
            actions,
            [
                Action::SignalGroup {
                    pgid: 100,
                    signal: Sig::INT
                },
                Action::SignalGroup {
                    pgid: 101,
                    signal: Sig::INT
                },
                Action::SignalOrphans {
                    signal: Sig::INT,
                    workers: vec![100, 101]
                },
                Action::NotifyManager("STOPPING=1\nSTATUS=stopping (SIGINT)".to_string()),
            ]
        );
        assert_eq!(cluster.next_deadline(), Some(t0 + 5000 * MS));
        assert!(
            cluster
                .on_reaped(&exit(100, ProcessStatus::Killed(Sig::INT)), true, t0)
                .is_empty()
        );
        let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), false, t0);
        assert_eq!(actions, [Action::Exit(0)]);
    }

    #[test]
    fn the_stop_waits_for_processes_the_workers_left_behind() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 1, t0);
        cluster.on_signal(Sig::TERM, t0);
        let actions = cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
        assert_eq!(
            actions,
            [Action::SignalOrphans {
                signal: Sig::TERM,
                workers: vec![]
            }]
        );
        let actions = cluster.on_timer(t0 + 5000 * MS);
        assert_eq!(actions, [Action::KillAll { groups: vec![] }]);
        let actions = cluster.on_reaped(&exit(555, ProcessStatus::Killed(Sig::KILL)), false, t0);
        assert_eq!(
            actions,
            [Action::Exit(0)],
            "the workers' statuses decide, not the orphans'"
        );
    }

    #[test]
    fn the_kill_timeout_kills_what_remains_and_gives_137() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        cluster.on_signal(Sig::TERM, t0);
        cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
        assert!(cluster.on_timer(t0 + 4999 * MS).is_empty());
        let actions = cluster.on_timer(t0 + 5000 * MS);
        assert_eq!(actions, [Action::KillAll { groups: vec![101] }]);
        let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), false, t0);
        assert_eq!(actions, [Action::Exit(137)]);
    }

    #[test]
    fn a_second_stop_signal_kills_at_once() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 1, t0);
        cluster.on_signal(Sig::TERM, t0);
        assert_eq!(
            cluster.on_signal(Sig::INT, t0),
            [Action::KillAll { groups: vec![100] }]
        );
        assert_eq!(cluster.next_deadline(), None);
    }

    #[test]
    fn no_respawn_once_stopping() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0);
        cluster.on_signal(Sig::TERM, t0);
        assert!(spawned_ids(&cluster.on_timer(t0 + 60_000 * MS)).is_empty());
        let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), false, t0);
        assert_eq!(
            actions,
            [Action::Exit(1)],
            "slot 0's last worker exited with 1"
        );
    }

    #[test]
    fn scaling_down_stops_the_highest_slot_and_kills_it_after_the_timeout() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 3, t0);
        assert_eq!(
            cluster.on_signal(Sig::TTOU, t0),
            [
                Action::SignalGroup {
                    pgid: 102,
                    signal: Sig::TERM
                },
                Action::ReleaseSlot(2)
            ]
        );
        assert_eq!(cluster.next_deadline(), Some(t0 + 5000 * MS));
        assert_eq!(
            cluster.on_timer(t0 + 5000 * MS),
            [Action::SignalGroup {
                pgid: 102,
                signal: Sig::KILL
            }]
        );
        cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::KILL)), true, t0);
        assert_eq!(cluster.worker_pids(), [100, 101]);
        let actions = cluster.on_signal(Sig::TTIN, t0);
        assert_eq!(
            actions,
            [Action::Spawn(WorkerIdentity {
                id: 2,
                count: 3,
                generation: 0
            })]
        );
    }

    #[test]
    fn the_last_worker_is_never_scaled_away() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 1, t0);
        assert!(cluster.on_signal(Sig::TTOU, t0).is_empty());
        assert_eq!(cluster.worker_pids(), [100]);
    }

    #[test]
    fn other_signals_are_forwarded_to_every_worker() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        let usr1 = Sig::from_number(libc::SIGUSR1).unwrap();
        assert_eq!(
            cluster.on_signal(usr1, t0),
            [
                Action::SignalGroup {
                    pgid: 100,
                    signal: usr1
                },
                Action::SignalGroup {
                    pgid: 101,
                    signal: usr1
                },
            ]
        );
        let actions = cluster.on_signal(Sig::TSTP, t0);
        assert_eq!(actions.last(), Some(&Action::SuspendSelf));
    }

    #[test]
    fn with_restart_never_the_cluster_ends_with_the_lowest_failing_status() {
        let t0 = Instant::now();
        let mut cluster = running(
            Policy {
                restart: RestartMode::Never,
                ..policy()
            },
            3,
            t0,
        );
        cluster.on_reaped(&exit(102, ProcessStatus::Exited(5)), true, t0);
        cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
        let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(3)), false, t0);
        assert_eq!(
            actions,
            [
                Action::SignalOrphans {
                    signal: Sig::TERM,
                    workers: vec![]
                },
                Action::NotifyManager("STOPPING=1\nSTATUS=stopping (SIGTERM)".to_string()),
                Action::Exit(3)
            ]
        );
    }

    #[test]
    fn on_failure_follows_systemds_clean_exits() {
        for (status, restarts) in [
            (ProcessStatus::Exited(0), false),
            (ProcessStatus::Exited(1), true),
            (ProcessStatus::Killed(Sig::TERM), false),
            (ProcessStatus::Killed(Sig::INT), false),
            (ProcessStatus::Killed(Sig::KILL), true),
        ] {
            assert_eq!(
                restarts_after(RestartMode::OnFailure, status),
                restarts,
                "{status}"
            );
        }
    }

    #[test]
    fn an_enormous_kill_timeout_does_not_overflow_the_clock() {
        let t0 = Instant::now();
        let huge = Policy {
            kill_timeout: Duration::MAX,
            ..policy()
        };
        let mut cluster = running(huge, 1, t0);
        cluster.on_signal(Sig::TERM, t0);
        assert!(cluster.next_deadline().unwrap() > t0 + Duration::from_secs(86_400 * 365 * 100));
    }

    #[test]
    fn started_workers_are_ready_after_min_uptime_and_the_manager_hears_it_once() {
        let t0 = Instant::now();
        let mut cluster = starting(policy(), 2, t0);
        assert_eq!(cluster.next_deadline(), Some(t0 + 1000 * MS));
        assert!(cluster.on_timer(t0 + 999 * MS).is_empty());
        let actions = cluster.on_timer(t0 + 1000 * MS);
        assert_eq!(
            actions,
            [Action::NotifyManager(
                "READY=1\nSTATUS=2 workers ready".to_string()
            )]
        );
        assert_eq!(cluster.next_deadline(), None, "no timer once all are ready");
    }

    #[test]
    fn notify_workers_are_ready_on_ready_1_only() {
        let t0 = Instant::now();
        let notify = Policy {
            ready: ReadyMode::Notify,
            ..policy()
        };
        let mut cluster = starting(notify, 1, t0);
        let status = Message {
            status: Some("loading".into()),
            ..Message::default()
        };
        assert!(cluster.on_notified(100, &status, t0).is_empty());
        let ready = Message {
            ready: true,
            ..Message::default()
        };
        assert_eq!(
            cluster.on_notified(100, &ready, t0),
            [Action::NotifyManager(
                "READY=1\nSTATUS=1 workers ready".to_string()
            )]
        );
        assert!(
            cluster.on_notified(100, &ready, t0).is_empty(),
            "announced once"
        );
    }

    #[test]
    fn a_worker_that_never_becomes_ready_is_stopped_and_restarted_as_a_failed_start() {
        let t0 = Instant::now();
        let notify = Policy {
            ready: ReadyMode::Notify,
            ..policy()
        };
        let mut cluster = starting(notify, 1, t0);
        assert_eq!(cluster.next_deadline(), Some(t0 + 3000 * MS));
        let t1 = t0 + 3000 * MS;
        assert_eq!(
            cluster.on_timer(t1),
            [Action::SignalGroup {
                pgid: 100,
                signal: Sig::TERM
            }]
        );
        // It dies of the stop signal: still a failure, restarted with backoff.
        cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, t1);
        assert_eq!(cluster.next_deadline(), Some(t1 + 100 * MS));
    }

    fn identity(id: u32, count: u32, generation: u32) -> WorkerIdentity {
        WorkerIdentity {
            id,
            count,
            generation,
        }
    }

    fn reloading(generation: u32) -> Action {
        Action::NotifyReloading(format!("reloading to generation {generation}"))
    }

    #[test]
    fn a_reload_starts_each_new_worker_before_stopping_the_old_one() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        assert_eq!(
            cluster.on_signal(Sig::HUP, t0),
            [reloading(1), Action::Spawn(identity(0, 2, 1))]
        );
        cluster.spawned(identity(0, 2, 1), 200, t0);
        assert_eq!(cluster.worker_pids().len(), 3, "N + K alive");
        // Ready after --min-uptime: only then is the old worker stopped.
        assert!(cluster.on_timer(t0 + 999 * MS).is_empty());
        let t1 = t0 + 1000 * MS;
        assert_eq!(
            cluster.on_timer(t1),
            [Action::SignalGroup {
                pgid: 100,
                signal: Sig::TERM
            }]
        );
        // The next slot waits until the old worker is gone: never more than N + K alive.
        assert_eq!(
            cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, t1),
            [Action::Spawn(identity(1, 2, 1))]
        );
        cluster.spawned(identity(1, 2, 1), 201, t1);
        let t2 = t1 + 1000 * MS;
        assert_eq!(
            cluster.on_timer(t2),
            [Action::SignalGroup {
                pgid: 101,
                signal: Sig::TERM
            }]
        );
        assert_eq!(
            cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), true, t2),
            [Action::NotifyManager(
                "READY=1\nSTATUS=2 workers of generation 1".to_string()
            )]
        );
        assert_eq!(cluster.worker_pids(), [200, 201]);
        // The stopped old workers count as clean, whatever the new ones do later.
        cluster.on_signal(Sig::TERM, t2);
        cluster.on_reaped(&exit(200, ProcessStatus::Exited(0)), true, t2);
        let actions = cluster.on_reaped(&exit(201, ProcessStatus::Exited(0)), false, t2);
        assert_eq!(actions, [Action::Exit(0)]);
    }

    #[test]
    fn a_new_worker_that_exits_abandons_the_reload_and_the_old_one_keeps_serving() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        cluster.on_signal(Sig::HUP, t0);
        cluster.spawned(identity(0, 2, 1), 200, t0);
        let actions = cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, t0 + MS);
        assert!(
            matches!(actions.as_slice(), [Action::NotifyManager(text)] if text.starts_with("READY=1\nSTATUS=reload to generation 1 failed")),
            "{actions:?}"
        );
        assert_eq!(cluster.worker_pids(), [100, 101]);
        assert_eq!(
            cluster.next_deadline(),
            None,
            "no respawn of the failed release"
        );
        // The next SIGHUP tries again, with the next generation.
        assert_eq!(
            cluster.on_signal(Sig::HUP, t0 + 2 * MS),
            [reloading(2), Action::Spawn(identity(0, 2, 2))]
        );
    }

    #[test]
    fn a_hup_during_a_reload_retargets_it_without_piling_up_workers() {
        let t0 = Instant::now();
        let mut cluster = running(policy(), 2, t0);
        cluster.on_signal(Sig::HUP, t0);
        cluster.spawned(identity(0, 2, 1), 200, t0);
        // The generation-1 worker is not ready: it is stopped, and generation 2 waits for it.
        assert_eq!(
            cluster.on_signal(Sig::HUP, t0 + MS),
            [
                Action::SignalGroup {
                    pgid: 200,
                    signal: Sig::TERM
                },
                reloading(2)
            ]
        );
        assert_eq!(
            cluster.on_reaped(
                &exit(200, ProcessStatus::Killed(Sig::TERM)),
                true,
                t0 + 2 * MS
            ),
            [Action::Spawn(identity(0, 2, 2))]
        );
    }

    #[test]
    fn a_new_worker_that_never_notifies_abandons_the_reload() {
        let t0 = Instant::now();
        let notify = Policy {
            ready: ReadyMode::Notify,
            ..policy()
        };
        let mut cluster = running(notify, 1, t0);
        cluster.on_signal(Sig::HUP, t0);
        cluster.spawned(identity(0, 1, 1), 200, t0);
        assert_eq!(cluster.next_deadline(), Some(t0 + 3000 * MS));
        let actions = cluster.on_timer(t0 + 3000 * MS);
        assert_eq!(
            actions[0],
            Action::SignalGroup {
                pgid: 200,
                signal: Sig::TERM
            }
        );
        assert_eq!(
            cluster.worker_pids(),
            [100, 200],
            "the new one is leaving, the old one serves"
        );
    }

    #[test]
    fn a_slow_listening_probe_never_starves_the_ready_timeout() {
        let t0 = Instant::now();
        let listening = Policy {
            ready: ReadyMode::Listening(Some(3000)),
            ..policy()
        };
        let mut cluster = starting(listening, 1, t0);
        let probe = Action::ProbeListening {
            pgid: 100,
            port: Some(3000),
        };
        assert_eq!(cluster.on_timer(t0), std::slice::from_ref(&probe));
        // Each probe takes longer than the interval: the next is scheduled from its answer.
        let mut now = t0;
        while now < t0 + 3000 * MS {
            now += 150 * MS;
            assert!(cluster.on_probed(100, false, now).is_empty());
            assert_eq!(cluster.next_deadline(), Some(now + 100 * MS));
            now += 100 * MS;
            let actions = cluster.on_timer(now);
            if now >= t0 + 3000 * MS {
                assert_eq!(
                    actions,
                    [Action::SignalGroup {
                        pgid: 100,
                        signal: Sig::TERM
                    }]
                );
                return;
            }
            assert_eq!(actions, std::slice::from_ref(&probe));
        }
        panic!("the ready timeout never fired");
    }

    #[test]
    fn a_failed_spawn_backs_off_like_an_early_death() {
        let t0 = Instant::now();
        let mut cluster = Cluster::new(policy(), 1);
        cluster.start();
        let identity = WorkerIdentity {
            id: 0,
            count: 1,
            generation: 0,
        };
        assert!(
            cluster
                .spawn_failed(identity, ProcessStatus::Exited(127), t0)
                .is_empty()
        );
        assert_eq!(cluster.next_deadline(), Some(t0 + 100 * MS));
    }
}
