//! The supervisor loop: block on the event channels until the cluster's next deadline, hand each
//! event to the `Cluster`, carry out the actions it returns. This is the only place that spawns or
//! signals processes, and it runs on the main thread (see `spawn` on the parent-death signal).
//! It writes the cluster's reports to the log. It also owns the plumbing the cluster need not
//! know: each worker's notify socket and pidfd (by pid; its group is signalled through the pidfd,
//! see `pidfd`) and recluster's own service manager.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::time::Instant;

use log::{debug, error, warn};

use crate::exit_code;
use crate::net::listening;
use crate::process::descendants;
use crate::process::pidfd::{self, Delivery, Pidfd};
use crate::process::reaper::Exit;
use crate::process::signal::Sig;
use crate::process::spawn::{SpawnError, Spawner};
use crate::process::startup;
use crate::process::status::ProcessStatus;
use crate::supervisor::event::{Event, Inbox};
use crate::supervisor::hooks::Hooks;
use crate::worker_io::messages::Messages;
use crate::worker_io::notify::{Manager, WorkerSockets};

use super::action::{Action, Ticket};
use super::cluster::Cluster;
use super::formation::Formation;
use super::report::Origin;
use super::requests::Control;
use crate::frontend::request::ScaleBy;

/// What the loop works with besides the cluster.
pub struct Plumbing<'a> {
    pub spawner: &'a mut Spawner,
    /// With `--ready notify`: the workers' notify sockets.
    pub notify: Option<WorkerSockets>,
    /// recluster's own service manager, if it gave recluster a `NOTIFY_SOCKET`.
    pub manager: Option<Manager>,
    /// `--on`: the lifecycle hooks.
    pub hooks: &'a mut Hooks,
    /// `--stop-signal`, for hooks still running when the cluster stops.
    pub stop_signal: Sig,
    /// The control socket's requests, if it runs.
    pub control: Option<Control>,
    /// Messages between workers, unless `--no-messages`.
    pub messages: Option<Messages>,
    /// `-f`: the Procfile's groups, and which have started.
    pub formation: Option<Formation>,
}

/// Runs the cluster until it ends; returns recluster's exit status.
pub fn run(mut cluster: Cluster, plumbing: Plumbing, inbox: &Inbox) -> i32 {
    let mut executor = Executor {
        plumbing,
        orphans_signaled: HashSet::new(),
        token_of: HashMap::new(),
        pid_of: HashMap::new(),
        pidfds: HashMap::new(),
        output_open: HashSet::new(),
        oom_kills: crate::process::usage::oom_kills(),
        held: Vec::new(),
        children_left: true,
        slot_of: HashMap::new(),
    };
    let mut actions = cluster.start(Instant::now());
    loop {
        if let Some(code) = executor.execute(&mut cluster, actions) {
            return code;
        }
        let deadline = [
            cluster.next_deadline(),
            executor.held.iter().map(|(_, at)| *at).min(),
            executor.plumbing.hooks.next_deadline(),
            executor
                .plumbing
                .spawner
                .cgroups()
                .and_then(|g| g.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        let Ok(event) = inbox.recv(deadline) else {
            return lost_signal_thread();
        };
        let now = Instant::now();
        if let Some(groups) = executor.plumbing.spawner.cgroups() {
            groups.retry(now);
        }
        // -vv: every event the loop takes and every action it carries out.
        match &event {
            Some(event) => log::trace!("event: {event:?}"),
            None => log::trace!("event: a deadline passed"),
        }
        actions = executor.handle(&mut cluster, event, now);
        actions.extend(cluster.on_timer(now));
        if executor.plumbing.formation.is_some() {
            // What happened is logged before the groups it lets start.
            log_reports(&mut cluster, &mut executor.plumbing);
            if let Some(formation) = executor.plumbing.formation.as_mut() {
                actions.extend(formation.advance(&mut cluster, now));
            }
        }
    }
}

/// How long a worker's exit waits for its last lines (`--prefix`): a process it left behind may
/// hold its pipes open for much longer.
const HOLD_OUTPUT: std::time::Duration = std::time::Duration::from_millis(200);

/// Removes the held exits `release` picks, in the order they came.
fn take_held(
    held: &mut Vec<(Exit, Instant)>,
    release: impl Fn(&Exit, Instant) -> bool,
) -> Vec<Exit> {
    let mut released = Vec::new();
    held.retain(|(exit, at)| {
        if release(exit, *at) {
            released.push(*exit);
            false
        } else {
            true
        }
    });
    released
}

/// Writes what the cluster reported, each at its level, starts the hooks of those events and
/// tells the control socket's waits and subscribers.
fn log_reports(cluster: &mut Cluster, plumbing: &mut Plumbing) {
    // New connections follow the ready workers before anything that changed them is reported
    // or carried out: whoever hears that a worker is ready may connect at once, and a connection
    // steered to a worker that has died waits for its replacement.
    if let Some(slots) = cluster.take_steering() {
        plumbing.spawner.steer(&slots, &cluster.members());
    }
    let reports = cluster.take_reports();
    for report in reports {
        match &plumbing.formation {
            Some(formation) => log::log!(
                report.level(),
                "{}",
                report.line(|id| formation.groups.label(id))
            ),
            None => log::log!(report.level(), "{report}"),
        }
        plumbing.hooks.fire(&report, plumbing.stop_signal);
        if let Some(control) = plumbing.control.as_mut() {
            control.observe(&report);
        }
    }
}

fn lost_signal_thread() -> i32 {
    error!("the signal thread has stopped; exiting");
    exit_code::FAILURE
}

struct Executor<'a> {
    plumbing: Plumbing<'a>,
    /// Adopted processes already sent the stop signal: each gets it once.
    orphans_signaled: HashSet<i32>,
    /// Notify socket tokens by worker pid, and back.
    token_of: HashMap<i32, u64>,
    pid_of: HashMap<u64, i32>,
    /// Each worker's pidfd, by pid, until the cluster is told of its exit (see `pidfd`): its
    /// group is signalled through it.
    pidfds: HashMap<i32, Pidfd>,
    /// `--prefix`: workers whose output is still being relayed.
    output_open: HashSet<i32>,
    /// The kernel's OOM-kill count when last looked at.
    oom_kills: Option<u64>,
    /// `--prefix`: exits held back until the worker's last lines are written (or HOLD_OUTPUT).
    held: Vec<(Exit, Instant)>,
    /// Whether recluster had children left at the last reaping.
    children_left: bool,
    /// The slot of each live worker (whose process holds that slot's sockets).
    slot_of: HashMap<i32, u32>,
}

impl Executor<'_> {
    /// Hands one event (or a deadline that passed: `None`) to the cluster, and to the plumbing
    /// that must see it first; the actions that follow.
    fn handle(&mut self, cluster: &mut Cluster, event: Option<Event>, now: Instant) -> Vec<Action> {
        match event {
            Some(Event::Signal(sig))
                if self.plumbing.formation.is_some() && (sig == Sig::TTIN || sig == Sig::TTOU) =>
            {
                let formation = self.plumbing.formation.as_mut().expect("checked");
                let by = if sig == Sig::TTIN {
                    ScaleBy::Up(1)
                } else {
                    ScaleBy::Down(1)
                };
                match formation.scale(cluster, None, by, Origin::Signal, now) {
                    Ok((_, actions)) => actions,
                    Err(reason) => {
                        warn!("received {sig}: {reason}; ignoring it");
                        Vec::new()
                    }
                }
            }
            Some(Event::Signal(Sig::HUP)) if cluster.accepts_changes().is_ok() => {
                let spawner = &mut *self.plumbing.spawner;
                match super::reloading::begin_reload(cluster, spawner, Origin::Signal, now) {
                    Ok((_, actions)) => actions,
                    // Logged where it was refused.
                    Err(_) => Vec::new(),
                }
            }
            Some(Event::Signal(sig)) => cluster.on_signal(sig, now),
            Some(Event::Reaped {
                exits,
                children_left: left,
            }) => {
                self.children_left = left;
                let hooks = &mut *self.plumbing.hooks;
                let exits: Vec<Exit> = exits.into_iter().filter(|e| !hooks.reaped(e)).collect();
                for exit in &exits {
                    self.forget_worker(exit.pid);
                    self.slot_may_be_empty(exit.pid, cluster.is_running());
                }
                self.note_oom_kills(&exits);
                // A worker whose output is still being written is reported once it is.
                let (hold, mut report): (Vec<Exit>, Vec<Exit>) = exits
                    .into_iter()
                    .partition(|e| self.output_open.contains(&e.pid));
                for exit in &hold {
                    self.plumbing.spawner.output_outlived(exit.pid);
                }
                self.held
                    .extend(hold.into_iter().map(|e| (e, now + HOLD_OUTPUT)));
                self.reported(&mut report);
                cluster.on_reaped(&report, self.children_left, now)
            }
            Some(Event::OutputClosed { pid }) => {
                self.output_open.remove(&pid);
                let mut released = take_held(&mut self.held, |e, _| e.pid == pid);
                self.reported(&mut released);
                cluster.on_reaped(&released, self.children_left, now)
            }
            Some(Event::Notified) => {
                let messages = self.plumbing.notify.as_ref().map(WorkerSockets::take);
                let mut actions = Vec::new();
                for (token, message) in messages.unwrap_or_default() {
                    // A socket whose worker has ended since is forgotten.
                    if let Some(&pid) = self.pid_of.get(&token) {
                        actions.extend(cluster.on_notified(pid, &message, now));
                    }
                }
                actions
            }
            Some(Event::Control {
                client,
                request,
                frontend,
            }) => {
                let plumbing = &mut self.plumbing;
                match plumbing.control.as_mut() {
                    Some(control) => control.handle(
                        (client, frontend),
                        request,
                        cluster,
                        plumbing.formation.as_mut(),
                        &mut *plumbing.spawner,
                        now,
                    ),
                    None => Vec::new(),
                }
            }
            Some(Event::FilesChanged { paths, more, roots }) => {
                // Names whoever can write the watched tree chose: escaped, so that none can
                // forge a log line or act on the terminal.
                let mut named: Vec<String> = paths
                    .iter()
                    .map(|p| crate::text::escape::controls(&p.display().to_string()).into_owned())
                    .collect();
                if more > 0 {
                    named.push(format!("{more} more changes"));
                }
                log::info!("--watch: changed: {}", named.join(", "));
                let scope = match &self.plumbing.formation {
                    Some(formation) => {
                        let scope = formation.scope_of_change(&roots);
                        if scope != super::cluster::Scope::All {
                            log::info!(
                                "--watch: reloading the groups whose command lies there: {}",
                                formation.names_in(&scope).join(", ")
                            );
                        }
                        scope
                    }
                    None => super::cluster::Scope::All,
                };
                super::reloading::reload_for_changes(cluster, self.plumbing.spawner, scope, now)
            }
            Some(Event::MemoryCrossed { token }) => {
                use crate::process::cgroup::tree::Crossing;
                let Some(groups) = self.plumbing.spawner.cgroups() else {
                    return Vec::new();
                };
                // A group removed since (the kernel signals that too) has no worker.
                match groups.crossing(token) {
                    Some(Crossing::Usage { pid, bytes }) => {
                        cluster.on_memory_crossed(pid, bytes, now)
                    }
                    Some(Crossing::High { pid, bytes }) => cluster.on_memory_high(pid, bytes, now),
                    None => Vec::new(),
                }
            }
            Some(Event::ControlGone { client }) => {
                if let Some(control) = self.plumbing.control.as_mut() {
                    control.forget(client);
                }
                Vec::new()
            }
            None => {
                self.plumbing.hooks.expire(now);
                // Output held open past HOLD_OUTPUT (a process the worker left holds its pipe).
                let mut released = take_held(&mut self.held, |_, at| at <= now);
                if released.is_empty() {
                    Vec::new()
                } else {
                    self.reported(&mut released);
                    cluster.on_reaped(&released, self.children_left, now)
                }
            }
        }
    }

    /// Carries out actions (and those they lead to); `Some(code)` when recluster is to exit.
    fn execute(&mut self, cluster: &mut Cluster, actions: Vec<Action>) -> Option<i32> {
        log_reports(cluster, &mut self.plumbing);
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            log_reports(cluster, &mut self.plumbing);
            log::trace!("action: {action:?}");
            match action {
                Action::Spawn(ticket) => {
                    if !cluster.is_current(&ticket) {
                        debug!(
                            "worker {}: not spawned, the decision no longer stands",
                            ticket.identity.id
                        );
                        continue;
                    }
                    queue.extend(self.spawn(cluster, ticket));
                }
                Action::SignalGroup { pgid, signal } => self.signal_group(pgid, signal),
                Action::ReleaseSlot(id) => self.plumbing.spawner.release_slot(id),
                Action::SampleMemory { pids } => {
                    let usage = crate::process::usage::group_memory(&pids);
                    queue.extend(cluster.on_memory(&usage, Instant::now()));
                }
                Action::CheckQueue { slot, pid } => {
                    let waiting = self.plumbing.spawner.queue_len(slot);
                    queue.extend(cluster.on_queue(pid, waiting, Instant::now()));
                }
                Action::SignalOrphans { signal, workers } => {
                    let workers: HashSet<i32> = workers.into_iter().collect();
                    let signaled = &mut self.orphans_signaled;
                    let hooks = &self.plumbing.hooks;
                    let sent = descendants::signal_children(signal, |pid| {
                        !workers.contains(&pid) && !hooks.is_stop_hook(pid) && signaled.insert(pid)
                    });
                    if sent > 0 {
                        debug!("sent {signal} to {sent} adopted processes");
                    }
                }
                Action::KillAll { groups } => {
                    for pgid in groups {
                        self.signal_group(pgid, Sig::KILL);
                    }
                    if let Some(cgroups) = self.plumbing.spawner.cgroups() {
                        cgroups.kill_all();
                    }
                    descendants::signal_children(Sig::KILL, |_| true);
                }
                Action::SuspendSelf => {
                    if startup::is_pid1() {
                        debug!("not stopping itself: PID 1 cannot be stopped");
                    } else {
                        signal_process(std::process::id() as i32, Sig::STOP);
                    }
                }
                Action::ProbeListening { pgid, port } => {
                    // --port-per-worker: the worker's own port, where no port was named.
                    let own = self.slot_of.get(&pgid).copied();
                    let port =
                        port.or_else(|| own.and_then(|id| self.plumbing.spawner.worker_port(id)));
                    let found = listening::group_listens(pgid, port);
                    queue.extend(cluster.on_probed(pgid, found, Instant::now()));
                }
                Action::NotifyManager(text) => {
                    if let Some(manager) = &self.plumbing.manager {
                        manager.send(&text);
                    }
                }
                Action::NotifyReloading(status) => {
                    if let Some(manager) = &self.plumbing.manager {
                        manager.send(&format!(
                            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
                            monotonic_usec()
                        ));
                    }
                }
                Action::Exit(code) => {
                    log_reports(cluster, &mut self.plumbing);
                    if let Some(control) = self.plumbing.control.as_mut() {
                        control.exiting(code);
                    }
                    return Some(code);
                }
            }
        }
        log_reports(cluster, &mut self.plumbing);
        None
    }

    /// Starts the worker a ticket stands for (with its own notify socket, if readiness is
    /// `notify`); what the cluster decides about the result.
    fn spawn(&mut self, cluster: &mut Cluster, ticket: Ticket) -> Vec<Action> {
        let identity = ticket.identity;
        let socket = match self.plumbing.notify.as_mut().map(WorkerSockets::open) {
            Some(Ok((token, path))) => Some((token, path)),
            Some(Err(e)) => {
                error!(
                    "worker {}: failed to create its notify socket: {e}",
                    identity.id
                );
                return cluster.spawn_failed(
                    ticket,
                    ProcessStatus::Exited(exit_code::FAILURE),
                    Instant::now(),
                );
            }
            None => None,
        };
        let path = socket.as_ref().map(|(_, path)| path.as_path());
        // Messages between workers: the worker's end of its pair, closed here once it has it.
        let channel = match self.plumbing.messages.as_ref().map(Messages::open) {
            Some(Ok(pair)) => Some(pair),
            Some(Err(e)) => {
                error!(
                    "worker {}: failed to create its message socket: {e}",
                    identity.id
                );
                None
            }
            None => None,
        };
        let message_fd = channel.as_ref().map(|pair| pair.theirs.as_raw_fd());
        let result = self.plumbing.spawner.spawn(identity, path, message_fd);
        // Spawned: recluster's end goes to the message thread; not: the pair just closes.
        if let (Some(pair), Some(messages), Ok(spawned)) =
            (channel, self.plumbing.messages.as_mut(), &result)
        {
            messages.spawned(pair, identity.id, spawned.pid);
        }
        match result {
            Ok(mut spawned) => {
                if let Some(pidfd) = spawned.pidfd.take() {
                    self.pidfds.insert(spawned.pid, pidfd);
                }
                if let Some(e) = &spawned.exec_error {
                    error!(
                        "worker {} (pid {}): failed to execute {}: {e}",
                        identity.id,
                        spawned.pid,
                        self.plumbing.spawner.describe_program(identity.id)
                    );
                }
                if let Some((token, _)) = socket {
                    self.token_of.insert(spawned.pid, token);
                    self.pid_of.insert(token, spawned.pid);
                }
                if spawned.relayed {
                    self.output_open.insert(spawned.pid);
                }
                self.slot_of.insert(spawned.pid, identity.id);
                cluster.spawned(ticket, spawned.pid, Instant::now())
            }
            Err(e) => {
                error!("worker {}: {e}", identity.id);
                if let (Some((token, _)), Some(notify)) = (socket, self.plumbing.notify.as_mut()) {
                    notify.close(token);
                }
                let status = match &e {
                    SpawnError::Command(c) => ProcessStatus::Exited(c.exit_code()),
                    SpawnError::Bind(_) | SpawnError::Fork(_) | SpawnError::System(..) => {
                        ProcessStatus::Exited(exit_code::FAILURE)
                    }
                };
                cluster.spawn_failed(ticket, status, Instant::now())
            }
        }
    }

    /// A process killed by SIGKILL while the kernel's OOM-kill count went up was most likely its
    /// victim: say so beside the exit recluster reports (unless its cgroup counts OOM kills: that
    /// is exact, see `reported`).
    fn note_oom_kills(&mut self, exits: &[Exit]) {
        if !exits
            .iter()
            .any(|e| e.status == ProcessStatus::Killed(Sig::KILL))
        {
            return;
        }
        let now = crate::process::usage::oom_kills();
        if let (Some(before), Some(after)) = (self.oom_kills, now)
            && after > before
        {
            let groups = self.plumbing.spawner.cgroups();
            let exact = |pid: i32| {
                groups
                    .as_ref()
                    .and_then(|g| g.of(pid))
                    .is_some_and(|g| g.counts_oom_kills())
            };
            for exit in exits
                .iter()
                .filter(|e| e.status == ProcessStatus::Killed(Sig::KILL) && !exact(e.pid))
            {
                warn!(
                    "process {} was killed by the kernel's OOM killer (out of memory: {} OOM kill{} since)",
                    exit.pid,
                    after - before,
                    if after - before == 1 { "" } else { "s" }
                );
            }
        }
        self.oom_kills = now;
    }

    /// The cluster is told of these exits (and forgets those workers): their pidfds go; with
    /// `--cgroups`, what is left in a worker's group is killed and the group removed (after its
    /// last lines with `--prefix`, as its exit is reported then).
    /// A worker killed by SIGKILL while its group counts an OOM kill is marked `oom_killed`.
    fn reported(&mut self, exits: &mut [Exit]) {
        let mut groups = self.plumbing.spawner.cgroups();
        for exit in exits {
            self.pidfds.remove(&exit.pid);
            if let Some(groups) = groups.as_mut() {
                exit.oom_killed = exit.status == ProcessStatus::Killed(Sig::KILL)
                    && groups.of(exit.pid).is_some_and(|g| g.oom_kills() > 0);
                groups.reaped(exit.pid, Instant::now());
            }
        }
    }

    /// Signals a worker's process group: through its pidfd, so never a group that took its id
    /// after it was reaped (see `pidfd`); with `killpg` where the kernel gave no pidfd.
    fn signal_group(&self, pgid: i32, signal: Sig) {
        match pidfd::signal_group(self.pidfds.get(&pgid), pgid, signal.number()) {
            Ok(Delivery::Sent) => {}
            Ok(Delivery::Gone) => debug!("{signal} not sent: process group {pgid} is gone"),
            Err(e) => warn!("failed to send {signal} to process group {pgid}: {e}"),
        }
    }

    /// A worker ended: where no other worker of its slot runs (a reload's) and nothing is left of
    /// its process group, nobody holds the slot's sockets any more (`Spawner::slot_emptied`).
    /// While the cluster stops, the sockets are left as they are.
    fn slot_may_be_empty(&mut self, pid: i32, running: bool) {
        let Some(slot) = self.slot_of.remove(&pid) else {
            return;
        };
        if !running || self.slot_of.values().any(|&s| s == slot) {
            return;
        }
        // SAFETY: signal 0 to a process group checks that it exists; nothing is sent.
        let gone = unsafe { libc::kill(-pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            self.plumbing.spawner.slot_emptied(slot);
        }
    }

    /// A process ended: if it was a worker with a notify socket, close the socket.
    fn forget_worker(&mut self, pid: i32) {
        if let Some(messages) = &self.plumbing.messages {
            messages.forget(pid);
        }
        if let Some(token) = self.token_of.remove(&pid) {
            self.pid_of.remove(&token);
            if let Some(notify) = self.plumbing.notify.as_mut() {
                notify.close(token);
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

fn signal_process(pid: i32, signal: Sig) {
    // SAFETY: kill has no memory effects; a vanished process gives ESRCH.
    if unsafe { libc::kill(pid, signal.number()) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            warn!("failed to send {signal} to process {pid}: {e}");
        }
    }
}
