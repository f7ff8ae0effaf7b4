//! The cluster's state and every decision about it, as pure functions of (state, event, now). No
//! process is touched here: decisions come back as `Action`s, so all of it is unit-tested with a
//! synthetic clock. This file holds the state, its bookkeeping and the entry points; the policies
//! live beside it by concept: `worker` (one worker's lifecycle), `readiness`, `restart` (backoff,
//! crash loops), `exit_policy` (`--exit-on`, `--critical`), `scale`, `stop` (the graceful stop,
//! `--stop-delay` and the exit status), `reload`, `memory` (`--max-memory`), `recycle`
//! (`--max-age`), `watchdog` (`--watchdog`), and `timers`.
//!
//! Invariants:
//! - slot `i` holds `WORKER_ID` `i` (slots are `0..N`); each slot has one occupant — a worker, a
//!   scheduled (re)spawn, or nothing when `--restart` said so — and, during a reload, at most one
//!   replacement. While the cluster runs, a slot is never left without a worker or a scheduled
//!   spawn unless `--restart` decided it, or it gave up and the cluster went on (`exit_policy`).
//! - every spawn is decided with a `Ticket` and recorded at once (`State::Spawning`); the loop
//!   carries it out only while `is_current` says it still stands, so a decision overtaken by
//!   another (a stop, a scale-down, an abandoned reload) never starts a process, and no process is
//!   ever started that no record tracks;
//! - once stopping, nothing is spawned; during a reload at most N + K workers are alive (those
//!   being spawned and those still draining count);
//! - every live worker process is in `places` by pid, and every deadline is in `timers`: the cost
//!   of an event does not grow with N.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::validated::Policy;
use crate::process::reaper::Exit;
use crate::process::signal::Sig;
use crate::process::spawn::WorkerIdentity;
use crate::process::status::ProcessStatus;
use crate::worker_io::notify::Message;

use super::action::{Action, Role, Ticket};
use super::report::{Origin, Report, Then};

mod control;
mod exit_policy;
mod groups;
mod memory;
mod readiness;
mod recycle;
mod reload;
mod restart;
mod scale;
mod snapshot;
mod stop;
mod timers;
pub(crate) mod watchdog;
mod worker;

#[cfg(test)]
mod tests;

pub use control::Scaled;
use reload::Reload;
pub use reload::Scope;
pub use snapshot::Clock;
use stop::Phase;
use timers::{Key, Timers};
use worker::{State, Worker, later};

/// At most this many slots are spawned per pass of the loop, so that signals and exits are
/// handled in between while thousands of workers start.
const SPAWN_BATCH: usize = 32;

pub struct Cluster {
    policy: Policy,
    slots: Vec<Slot>,
    /// Where each live worker process's record is, by pid.
    places: HashMap<i32, Place>,
    /// Workers recluster stopped that are no longer a slot's own, until they are reaped.
    leaving: HashMap<i32, Worker>,
    timers: Timers,
    phase: Phase,
    /// Whether recluster had any child left after the latest reaping.
    children_left: bool,
    /// The generation of the last completed reload.
    generation: u32,
    /// The newest generation ever asked for (reloads that fail still use up their number).
    last_generation: u32,
    /// Whether the service manager has been told that every worker is ready.
    announced_ready: bool,
    /// The rolling reload under way, if any.
    reload: Option<Reload>,
    /// The serial number of the next ticket.
    next_serial: u64,
    /// Spawns decided and not yet carried out.
    spawning: usize,
    /// Slots whose own worker is ready.
    ready: usize,
    /// Slots whose (re)spawn is scheduled: a reload keeps room for them within N + K.
    waiting: usize,
    /// What happened since the loop last asked (`take_reports`).
    reports: Vec<Report>,
    /// Whether the set of ready slots changed since the loop last asked (`take_steering`).
    steering_changed: bool,
    /// `--watchdog`: each ready worker's deadline and interval, by pid.
    watchdogs: HashMap<i32, (Instant, Duration)>,
    /// `--max-memory`: when the next sample is due, and samples over the limit in a row by pid.
    memory_due: Option<Instant>,
    memory_strikes: HashMap<i32, u32>,
    /// `--max-memory` is watched by the workers' cgroups, not sampled.
    memory_by_events: bool,
    /// Workers whose group crossed the limit when they could not be replaced yet (a new worker
    /// on its way, a reload), with the usage then: a crossing is told once, so it is kept.
    memory_pending: HashMap<i32, u64>,
    /// When `start` was called.
    started: Option<Instant>,
    /// `ctl restart`: slots whose worker is to be replaced, in order, as room allows.
    restart_queue: VecDeque<u32>,
    /// Reloads completed and abandoned, for the metrics.
    reloads: (u64, u64),
    /// Slots `Retired` (groups only): N is the slots less these.
    retired: usize,
    /// `--max-age`: slots whose worker is due to be replaced, in the order they fell due.
    recycle_queue: VecDeque<u32>,
    /// `--watch`: files changed during the reload under way; one more follows it, of this scope.
    reload_queued: Option<reload::Scope>,
}

/// Where a worker's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Slot(u32),
    Replacement(u32),
    Leaving,
}

struct Slot {
    id: u32,
    occupant: Occupant,
    /// During a reload: the new generation's worker, until it is ready and takes over.
    replacement: Option<Worker>,
    /// The generation the slot's own worker runs, and a respawn of it.
    generation: u32,
    /// Consecutive deaths before --min-uptime: the backoff exponent.
    early_deaths: u32,
    /// When this slot was restarted, within the crash-loop window.
    restarts: VecDeque<Instant>,
    last_end: Option<End>,
    /// What `ctl status` shows: how often the slot's worker was started again (after it ended,
    /// or by `ctl restart`), the CPU time of its workers that were reaped, and the last one
    /// that ended.
    restart_count: u64,
    cpu: Duration,
    last_exit: Option<ExitRecord>,
    /// Why the slot's worker is being replaced, while it has a replacement on its way.
    replacing: worker::Retire,
    /// The last signal recluster relayed to the slot's workers (forwarded, or `ctl signal`), so
    /// that a death by it is not taken for a kill from outside.
    relayed: Option<crate::process::signal::Sig>,
    /// How often a guard acted on the slot's worker (`--max-memory`, `--watchdog`).
    guard_actions: crate::supervisor::snapshot::GuardActions,
    /// Groups (`-f`): not started until the loop releases it (`--after`).
    held: bool,
    /// Groups: its worker runs once and is never restarted (`--once`).
    once: bool,
    /// `--max-age`: the slot's own worker (by pid) and when it is due to be replaced; how often
    /// one was, and how many new workers in a row failed to take over.
    recycle: Option<(i32, Instant)>,
    recycle_count: u64,
    recycle_failures: u32,
    /// Groups: the index of its group (`--critical`).
    group: Option<u32>,
    /// Its worker gave up (`--max-restarts`), or another of its group did, and the cluster went
    /// on without it (`--exit-on below:K`, `--critical`): it stays ended.
    given_up: bool,
}

/// A worker of a slot that ended, as `ctl status` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ExitRecord {
    pid: i32,
    status: ProcessStatus,
    cause: snapshot::Cause,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Occupant {
    Worker(Worker),
    /// A (re)spawn is due at `at` (held back while a replacement is on its way: that takes over).
    Waiting {
        at: Instant,
    },
    /// Its worker ended and `--restart` says it stays ended.
    Done,
    /// Groups: the slot's group was scaled down past its id. It is not one of the N workers
    /// until its group grows back to that id (slot numbers are never reused for another worker).
    Retired,
}

#[derive(Debug, Clone, Copy)]
struct End {
    status: ProcessStatus,
    /// Exit status 0, or death by the stop signal recluster sent (never after a missed
    /// `--ready-timeout`).
    clean: bool,
}

impl Cluster {
    pub fn new(policy: Policy, workers: u32) -> Cluster {
        Cluster {
            policy,
            slots: (0..workers).map(|id| Slot::new(id, 0)).collect(),
            places: HashMap::new(),
            leaving: HashMap::new(),
            timers: Timers::default(),
            phase: Phase::Running,
            children_left: false,
            generation: 0,
            last_generation: 0,
            announced_ready: false,
            reload: None,
            next_serial: 0,
            spawning: 0,
            ready: 0,
            waiting: 0,
            reports: Vec::new(),
            steering_changed: false,
            watchdogs: HashMap::new(),
            memory_due: None,
            memory_strikes: HashMap::new(),
            memory_by_events: false,
            memory_pending: HashMap::new(),
            started: None,
            restart_queue: VecDeque::new(),
            reloads: (0, 0),
            retired: 0,
            recycle_queue: VecDeque::new(),
            reload_queued: None,
        }
    }

    /// Schedules every slot's first spawn now; returns the first batch of them.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let n = self.slots.len();
        self.started = Some(now);
        self.report(Report::Starting { workers: n });
        for index in 0..n {
            if !self.slots[index].held {
                self.schedule_spawn(index, now);
            }
        }
        self.schedule_memory_sample(now);
        self.on_timer(now)
    }

    /// The slots that exist (ready or not; not retired): those `--steer client` gives a share.
    pub fn members(&self) -> Vec<u32> {
        let slots = self.slots.iter();
        slots
            .filter(|s| s.occupant != Occupant::Retired)
            .map(|s| s.id)
            .collect()
    }

    /// With per-worker sockets: the slots new connections should go to, if that changed since
    /// the last call — those whose worker is ready, or every slot while none is.
    pub fn take_steering(&mut self) -> Option<Vec<u32>> {
        if !self.policy.steered || !std::mem::take(&mut self.steering_changed) {
            return None;
        }
        let ready: Vec<u32> = self
            .slots
            .iter()
            .filter(|s| matches!(s.occupant, Occupant::Worker(w) if w.is_ready()))
            .map(|s| s.id)
            .collect();
        if ready.is_empty() {
            let slots = self
                .slots
                .iter()
                .filter(|s| s.occupant != Occupant::Retired);
            return Some(slots.map(|s| s.id).collect());
        }
        Some(ready)
    }

    /// What happened since the last call, for the log.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    fn report(&mut self, report: Report) {
        self.reports.push(report);
    }

    /// Whether a `Spawn` ticket still stands: the loop spawns nothing else.
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.spawning_record(ticket).is_some()
    }

    /// Records the process started for `ticket`. One whose ticket went stale meanwhile is stopped
    /// at once (the loop checks `is_current` first, so that never happens in practice).
    pub fn spawned(&mut self, ticket: Ticket, pid: i32, now: Instant) -> Vec<Action> {
        let policy = self.policy.clone();
        let Some(worker) = self.spawning_record_mut(&ticket) else {
            self.report(Report::StaleSpawn {
                id: ticket.identity.id,
                pid,
            });
            let mut worker = Worker::spawning(ticket);
            worker.start(pid, now, &policy);
            return self
                .discard(worker, worker::Retire::NotNeeded, now)
                .into_iter()
                .collect();
        };
        worker.start(pid, now, &policy);
        let worker = *worker;
        self.spawning -= 1;
        let id = ticket.identity.id;
        let (place, generation) = match ticket.role {
            Role::Slot => (Place::Slot(id), None),
            Role::Replacement => (Place::Replacement(id), Some(ticket.identity.generation)),
        };
        self.report(Report::Started {
            id,
            pid,
            generation,
        });
        self.places.insert(pid, place);
        self.arm(&worker);
        Vec::new()
    }

    /// A `Spawn` that produced no process: counts as a worker that ended at once with `status`.
    pub fn spawn_failed(
        &mut self,
        ticket: Ticket,
        status: ProcessStatus,
        now: Instant,
    ) -> Vec<Action> {
        if !self.is_current(&ticket) {
            return Vec::new();
        }
        self.spawning -= 1;
        let index = ticket.identity.id as usize;
        let mut actions = Vec::new();
        match ticket.role {
            Role::Replacement => {
                self.slots[index].replacement = None;
                let reason = format!(
                    "worker {} of the new generation could not be started",
                    ticket.identity.id
                );
                actions.extend(self.replacement_failed(index, &reason, now));
            }
            Role::Slot => {
                let Occupant::Worker(worker) = self.take_occupant(index) else {
                    unreachable!("a current ticket has its record");
                };
                self.slot_ended(index, worker, status, now, &mut actions);
            }
        }
        actions.extend(self.settle(now));
        actions
    }

    /// A message a worker (or a process of its tree) sent on its notify socket.
    pub fn on_notified(&mut self, pid: i32, message: &Message, now: Instant) -> Vec<Action> {
        if let Some(status) = &message.status
            && let Some(worker) = self.worker(pid)
        {
            let id = worker.id();
            self.report(Report::WorkerStatus {
                id,
                pid,
                status: status.clone(),
            });
        }
        let mut actions = Vec::new();
        if message.ready {
            actions.extend(self.on_ready(pid, now));
        }
        if let Some(watchdog) = message.watchdog {
            actions.extend(self.on_watchdog(pid, watchdog, now));
        }
        actions
    }

    pub fn on_signal(&mut self, sig: Sig, now: Instant) -> Vec<Action> {
        match (sig, self.phase) {
            (Sig::INT | Sig::TERM | Sig::QUIT, Phase::Running) => {
                self.report(Report::StopRequested {
                    origin: Origin::Signal,
                    signal: sig,
                    workers: self.places.len(),
                    timeout: self.policy.kill_timeout,
                });
                self.stop_requested(sig, Some(sig), now)
            }
            (Sig::INT | Sig::TERM | Sig::QUIT, Phase::Delaying(_)) => {
                self.stop_signal_while_delaying(sig, now)
            }
            (Sig::INT | Sig::TERM | Sig::QUIT, Phase::Stopping(stop)) if !stop.killed => {
                self.stop_signal_again(sig, now)
            }
            (Sig::TTIN, Phase::Running) => self.scale_up(Origin::Signal, now),
            (Sig::TTOU, Phase::Running) => self.scale_down(now, Origin::Signal),
            (Sig::HUP, Phase::Running) => self.begin_reload(now, Origin::Signal),
            (Sig::TTIN | Sig::TTOU | Sig::HUP, _) => {
                self.report(Report::IgnoredWhileStopping { signal: sig });
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
            self.note_exit(exit, now);
            self.disarm_watchdog(exit.pid);
            self.memory_strikes.remove(&exit.pid);
            self.memory_pending.remove(&exit.pid);
            match self.places.remove(&exit.pid) {
                Some(Place::Slot(id)) => {
                    let index = id as usize;
                    let Occupant::Worker(worker) = self.take_occupant(index) else {
                        unreachable!("a slot's pid has its worker");
                    };
                    self.slot_ended(index, worker, exit.status, now, &mut actions);
                }
                Some(Place::Replacement(id)) => {
                    let worker = self.slots[id as usize]
                        .replacement
                        .take()
                        .expect("a replacement's pid has its worker");
                    actions.extend(self.replacement_ended(worker, exit.status, now));
                }
                Some(Place::Leaving) => {
                    let worker = self.leaving.remove(&exit.pid).expect("a leaving worker");
                    self.report(Report::Stopped {
                        id: worker.id(),
                        pid: exit.pid,
                        status: exit.status,
                    });
                    // A worker that ended while draining its scaled-down slot's queue.
                    if matches!(worker.state, State::Draining { .. }) {
                        actions.extend(self.release_slot(worker.id()));
                    }
                }
                None => self.report(Report::AdoptedReaped {
                    pid: exit.pid,
                    status: exit.status,
                }),
            }
        }
        // A worker that finished draining makes room for the next replacement or restart.
        actions.extend(self.advance_reload(now));
        if !self.restart_queue.is_empty() {
            actions.extend(self.advance_restarts(now));
        }
        if !self.recycle_queue.is_empty() {
            actions.extend(self.advance_recycles(now));
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

    /// Carries out whatever is due at `now`: (re)spawns, a batch at a time, readiness and kill
    /// deadlines, the stop deadline.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.phase {
            Phase::Running => {
                if !self.restart_queue.is_empty() {
                    actions.extend(self.advance_restarts(now));
                }
                if !self.memory_pending.is_empty() {
                    actions.extend(self.retry_memory(now));
                }
            }
            Phase::Delaying(delay) => {
                // Only workers already leaving have deadlines now (see `stop_requested`).
                while let Some((at, key)) = self.timers.peek() {
                    if at > now {
                        break;
                    }
                    self.timers.pop();
                    if let Key::Worker(pid) = key {
                        actions.extend(self.worker_timer(pid, at, now));
                    }
                }
                if delay.until <= now {
                    actions.extend(self.end_delay(now));
                }
                return actions;
            }
            Phase::Stopping(stop) => {
                if !stop.killed && stop.deadline <= now {
                    actions.extend(self.stop_deadline_passed());
                }
                return actions;
            }
            Phase::Exited => return actions,
        }
        let mut spawns = 0;
        while let Some((at, key)) = self.timers.peek() {
            if at > now || (matches!(key, Key::Slot(_)) && spawns >= SPAWN_BATCH) {
                break;
            }
            self.timers.pop();
            match key {
                Key::Slot(id) => {
                    if let Some(action) = self.spawn_if_due(id, at) {
                        spawns += 1;
                        actions.push(action);
                    }
                }
                Key::Worker(pid) => actions.extend(self.worker_timer(pid, at, now)),
                Key::Watchdog(pid) => actions.extend(self.watchdog_timer(pid, at, now)),
                Key::Recycle(id) => {
                    if self.recycle_holds(id, at) {
                        actions.extend(self.recycle_timer(id, now));
                    }
                }
                Key::Memory => {
                    if self.holds(at, Key::Memory) {
                        actions.extend(self.memory_timer());
                    }
                }
            }
            if self.phase != Phase::Running {
                break;
            }
        }
        actions
    }

    /// The next moment `on_timer` has something to do; `None` when only an event can change
    /// things. Drops deadlines that no longer hold on the way.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        match self.phase {
            Phase::Running => loop {
                let (at, key) = self.timers.peek()?;
                if self.holds(at, key) {
                    return Some(at);
                }
                self.timers.pop();
            },
            Phase::Delaying(delay) => {
                let leaving = loop {
                    let Some((at, key)) = self.timers.peek() else {
                        break None;
                    };
                    if self.holds(at, key) {
                        break Some(at);
                    }
                    self.timers.pop();
                };
                Some(leaving.map_or(delay.until, |at| at.min(delay.until)))
            }
            Phase::Stopping(stop) if !stop.killed => Some(stop.deadline),
            _ => None,
        }
    }

    /// The pids (and process groups) of every live worker: slots in order, their replacements,
    /// then those leaving.
    pub fn worker_pids(&self) -> Vec<i32> {
        let own = self.slots.iter().filter_map(|s| match &s.occupant {
            Occupant::Worker(w) => w.pid(),
            _ => None,
        });
        let replacements = self
            .slots
            .iter()
            .filter_map(|s| s.replacement.and_then(|w| w.pid()));
        let mut leaving: Vec<i32> = self.leaving.keys().copied().collect();
        leaving.sort_unstable();
        own.chain(replacements).chain(leaving).collect()
    }

    // ----- bookkeeping -----

    /// A new ticket for a worker of slot `id`.
    fn issue(&mut self, id: u32, role: Role, generation: u32) -> Ticket {
        self.next_serial += 1;
        self.spawning += 1;
        Ticket {
            identity: WorkerIdentity {
                id,
                count: self.workers() as u32,
                generation,
            },
            role,
            serial: self.next_serial,
        }
    }

    /// Decides to spawn slot `index`'s own worker now.
    fn spawn_slot(&mut self, index: usize) -> Action {
        let (id, generation) = (self.slots[index].id, self.slots[index].generation);
        let ticket = self.issue(id, Role::Slot, generation);
        self.put_occupant(index, Occupant::Worker(Worker::spawning(ticket)));
        Action::Spawn(ticket)
    }

    /// Schedules slot `index`'s (re)spawn at `at`.
    fn schedule_spawn(&mut self, index: usize, at: Instant) {
        self.put_occupant(index, Occupant::Waiting { at });
        self.timers.push(at, Key::Slot(self.slots[index].id));
    }

    /// A slot's due spawn, unless the deadline no longer holds or a replacement is on its way.
    fn spawn_if_due(&mut self, id: u32, at: Instant) -> Option<Action> {
        if !self.holds(at, Key::Slot(id)) {
            return None;
        }
        Some(self.spawn_slot(id as usize))
    }

    /// Whether the deadline `at` of `key` is still one of its deadlines.
    fn holds(&self, at: Instant, key: Key) -> bool {
        match key {
            Key::Slot(id) => self.slots.get(id as usize).is_some_and(|slot| {
                slot.replacement.is_none() && slot.occupant == Occupant::Waiting { at }
            }),
            Key::Worker(pid) => self
                .worker(pid)
                .is_some_and(|w| w.timers().contains(&Some(at))),
            Key::Memory => self.memory_due == Some(at),
            Key::Recycle(id) => self.recycle_holds(id, at),
            Key::Watchdog(pid) => {
                self.watchdogs.get(&pid).is_some_and(|&(due, _)| due == at)
                    && self.worker(pid).is_some_and(Worker::is_ready)
            }
        }
    }

    /// Pushes every deadline `worker` has now.
    fn arm(&mut self, worker: &Worker) {
        if let Some(pid) = worker.pid() {
            for at in worker.timers().into_iter().flatten() {
                self.timers.push(at, Key::Worker(pid));
            }
        }
    }

    /// The worker with this pid, wherever its record is.
    fn worker(&self, pid: i32) -> Option<&Worker> {
        match self.places.get(&pid)? {
            Place::Slot(id) => match &self.slots[*id as usize].occupant {
                Occupant::Worker(w) => Some(w),
                _ => None,
            },
            Place::Replacement(id) => self.slots[*id as usize].replacement.as_ref(),
            Place::Leaving => self.leaving.get(&pid),
        }
    }

    fn worker_mut(&mut self, pid: i32) -> Option<&mut Worker> {
        match *self.places.get(&pid)? {
            Place::Slot(id) => match &mut self.slots[id as usize].occupant {
                Occupant::Worker(w) => Some(w),
                _ => None,
            },
            Place::Replacement(id) => self.slots[id as usize].replacement.as_mut(),
            Place::Leaving => self.leaving.get_mut(&pid),
        }
    }

    /// The not-yet-spawned record a ticket stands for, if it still stands.
    fn spawning_record(&self, ticket: &Ticket) -> Option<&Worker> {
        if self.phase != Phase::Running {
            return None;
        }
        let slot = self.slots.get(ticket.identity.id as usize)?;
        let record = match ticket.role {
            Role::Slot => match &slot.occupant {
                Occupant::Worker(w) => Some(w),
                _ => None,
            },
            Role::Replacement => slot.replacement.as_ref(),
        }?;
        (record.ticket == *ticket && record.state == State::Spawning).then_some(record)
    }

    fn spawning_record_mut(&mut self, ticket: &Ticket) -> Option<&mut Worker> {
        self.spawning_record(ticket)?;
        let slot = &mut self.slots[ticket.identity.id as usize];
        match ticket.role {
            Role::Slot => match &mut slot.occupant {
                Occupant::Worker(w) => Some(w),
                _ => None,
            },
            Role::Replacement => slot.replacement.as_mut(),
        }
    }

    /// Takes a slot's occupant out (leaving `Done`), keeping the counts of ready and waiting
    /// slots.
    fn take_occupant(&mut self, index: usize) -> Occupant {
        let old = std::mem::replace(&mut self.slots[index].occupant, Occupant::Done);
        match old {
            Occupant::Worker(w) if w.is_ready() => {
                self.ready -= 1;
                self.steering_changed = true;
            }
            Occupant::Waiting { .. } => self.waiting -= 1,
            _ => {}
        }
        old
    }

    /// Puts an occupant in a slot; returns the one it replaces.
    fn put_occupant(&mut self, index: usize, occupant: Occupant) -> Occupant {
        let old = self.take_occupant(index);
        match occupant {
            Occupant::Worker(w) if w.is_ready() => {
                self.ready += 1;
                self.steering_changed = true;
            }
            Occupant::Waiting { .. } => self.waiting += 1,
            _ => {}
        }
        self.slots[index].occupant = occupant;
        old
    }

    /// A worker that is no longer wanted where it was: one not forked yet is forgotten (its ticket
    /// goes stale); one already stopping keeps its deadline; any other gets `--stop-signal` now
    /// and SIGKILL after `--kill-timeout`. Until reaped it is `leaving`, and counts as alive.
    fn discard(&mut self, mut worker: Worker, why: worker::Retire, now: Instant) -> Option<Action> {
        let pid = match worker.state {
            State::Spawning => {
                self.spawning -= 1;
                return None;
            }
            State::Stopping { pid, .. } | State::Draining { pid, .. } => {
                self.places.insert(pid, Place::Leaving);
                self.leaving.insert(pid, worker);
                return None;
            }
            State::Starting { pid, .. } | State::Ready { pid, .. } => pid,
        };
        let signal = self.policy.stop_signal;
        let kill_at = match self.phase {
            Phase::Running => Some(later(now, self.policy.kill_timeout)),
            _ => None, // the stop's own deadline applies
        };
        worker.stop(signal, worker::StopReason::Retired(why), kill_at);
        self.places.insert(pid, Place::Leaving);
        self.leaving.insert(pid, worker);
        self.arm(&worker);
        Some(Action::SignalGroup { pgid: pid, signal })
    }

    /// Whether one more worker may start beside those alive, on their way, or due to respawn:
    /// at most N + K (`--reload-batch`) at once. Slots waiting to respawn keep their room, so a
    /// dead worker is replaced before a live one.
    fn room_for_one_more(&self) -> bool {
        let (n, k) = (self.workers(), self.policy.reload_batch as usize);
        self.places.len() + self.spawning + self.waiting < n + k
    }

    /// A scaled-down slot's sockets may go, unless a `TTIN` has brought the slot back since.
    fn release_slot(&self, id: u32) -> Option<Action> {
        let gone = self
            .slots
            .get(id as usize)
            .is_none_or(|s| s.occupant == Occupant::Retired);
        gone.then_some(Action::ReleaseSlot(id))
    }

    fn forward(&mut self, sig: Sig) -> Vec<Action> {
        for slot in &mut self.slots {
            slot.relayed = Some(sig);
        }
        let pids = self.worker_pids();
        self.report(Report::Forwarding {
            signal: sig,
            groups: pids.len(),
        });
        pids.into_iter()
            .map(|pgid| Action::SignalGroup { pgid, signal: sig })
            .collect()
    }
}

impl Slot {
    fn new(id: u32, generation: u32) -> Slot {
        Slot {
            id,
            occupant: Occupant::Done,
            replacement: None,
            generation,
            early_deaths: 0,
            restarts: VecDeque::new(),
            last_end: None,
            restart_count: 0,
            cpu: Duration::ZERO,
            last_exit: None,
            replacing: worker::Retire::Reload,
            relayed: None,
            guard_actions: crate::supervisor::snapshot::GuardActions::default(),
            held: false,
            once: false,
            recycle: None,
            recycle_count: 0,
            recycle_failures: 0,
            group: None,
            given_up: false,
        }
    }
}

/// `--restart-delay` doubled for each consecutive early death after the first, capped.
fn backoff(policy: &Policy, early_deaths: u32) -> Duration {
    let factor = 1u32 << early_deaths.saturating_sub(1).min(31);
    policy
        .restart_delay
        .saturating_mul(factor)
        .min(policy.restart_max_delay)
}
