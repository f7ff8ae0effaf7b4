//! Starting one worker process: a clean child, then exec. Everything the child needs (paths, argv,
//! envp, the /dev/null fd) is built before the child exists. The child is made as `posix_spawn`
//! makes it: `clone(CLONE_VM | CLONE_VFORK)`, on a stack of its own, sharing recluster's memory
//! while the spawning thread waits for its exec — so no page table is copied and no page faults
//! after the clone, whatever recluster's size. `CLONE_PIDFD` gives recluster a pidfd for it, made
//! close-on-exec and after the child's copy of the fd table, so the child never holds it (see
//! `pidfd` for what it guards; a kernel or seccomp profile without it leaves the worker without
//! one). Until exec the child makes only async-signal-safe system calls, in this order:
//!
//! 0. with `--cgroups`, `0` written to each `cgroup.procs` of its group, opened by recluster before
//!    the clone (see `cgroup::tree`): the worker and all it starts are in its group from here;
//! 1. `setpgid(0, 0)`: its own process group, so a terminal's Ctrl-C reaches recluster alone and
//!    recluster can signal the worker's whole tree;
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then a check that recluster is still its parent: if recluster
//!    dies, even by SIGKILL, the worker dies too (spawns happen on the main thread only, since the
//!    death signal follows the thread that created the child);
//! 3. its CPU affinity, with `--pin` or `--cpus` (`sched_setaffinity`: no `taskset`, no privilege);
//! 4. default dispositions for the signals recluster ignored itself, and an empty signal mask;
//! 5. stdin from /dev/null, every fd from 3 up close-on-exec;
//! 6. the listening sockets moved to fds 3, 4, … and the message socket after them — each first
//!    duplicated above that range, so no source and target collide, then `dup2`ed into place,
//!    which clears close-on-exec — and the child's own pid written into `LISTEN_PID` (libsystemd
//!    ignores the fds unless it matches);
//! 7. the open-files limit recluster was started with, if it raised its own (last, since
//!    recluster's descriptors may lie above it);
//! 8. `execve`, and `/bin/sh FILE ARGS…` for an executable without a `#!` line (as `execvp` does).
//!
//! Every step is checked: a failure of any of them is a failed start, as an exec failure is. The
//! child writes the step and its errno into the memory it shares with recluster, so the log names
//! the cause (`setpgid before exec: …`), and exits 127 (not found), 126 (exec refused, or the drop
//! to `--user`) or 1 (a setup step). One exception: `close_range(CLOSE_RANGE_CLOEXEC)` missing from
//! the kernel (before 5.11: `ENOSYS` or `EINVAL`) is not a failure, since recluster marked every
//! descriptor it inherited close-on-exec at start (`startup::close_inherited_fds_on_exec`) and
//! opens its own that way; any other error of it is.
//!
//! Rust's `Command` is not used: on an exec failure it calls `waitpid` on the child, which would race
//! recluster's single `waitpid(-1)` reaper.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::config::env_file::{EnvFiles, EnvHistory, EnvLayer};
use crate::config::groups::{socket_goes_to, steering_targets};
use crate::config::validated::Config;
use crate::cpu::cpuset::CpuSet;
use crate::cpu::placement::Placement;
use crate::exit_code;
use crate::net::socket::{BindError, Sockets};
use crate::net::steering::Targets;
use crate::process::cgroup::tree::Groups;
use crate::process::command::{self, CommandError};
use crate::process::pidfd::Pidfd;
use crate::process::startup::Inherited;
use crate::process::user::Identity;
use crate::worker_io::output::{Pipes, Relay};

/// The identity a worker is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerIdentity {
    pub id: u32,
    pub count: u32,
    pub generation: u32,
}

/// A started worker: its pid (also its process group id), its pidfd (none where the kernel gives
/// none: see `pidfd`), the exec error if exec failed, and whether its output is relayed
/// (`--prefix`: an `Event::OutputClosed` will follow).
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub pidfd: Option<Pidfd>,
    pub exec_error: Option<io::Error>,
    pub relayed: bool,
}

#[derive(Debug)]
pub enum SpawnError {
    /// The command is no longer found or executable.
    Command(CommandError),
    /// A new slot's own listening socket could not be bound (per-worker sockets).
    Bind(BindError),
    /// The child could not be created (`EAGAIN`: a limit on processes).
    Fork(io::Error),
    /// A pipe or a conversion failed.
    System(&'static str, io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Command(e) => e.fmt(f),
            SpawnError::Bind(e) => write!(f, "failed to bind its socket {e}"),
            SpawnError::Fork(e) if e.raw_os_error() == Some(libc::EAGAIN) => write!(
                f,
                "failed to start a process: {e} (a limit on processes is reached: pids.max of recluster's cgroup, kernel.pid_max, or RLIMIT_NPROC, ulimit -u)"
            ),
            SpawnError::Fork(e) => write!(f, "failed to start a process: {e}"),
            SpawnError::System(doing, e) => write!(f, "failed to {doing}: {e}"),
        }
    }
}

/// Everything that stays the same from one spawn to the next.
pub struct Spawner {
    command: Vec<OsString>,
    path_var: Option<OsString>,
    environment: Vec<(OsString, OsString)>,
    devnull: File,
    signals_to_reset: Vec<i32>,
    fd_limit: Option<libc::rlimit>,
    recluster_pid: i32,
    sockets: Sockets,
    /// `LISTEN_FDNAMES`: the names, in fd order.
    socket_names: String,
    /// The stack each child runs on until it execs.
    child_stack: Vec<u8>,
    /// Which CPUs each worker gets.
    placement: Placement,
    /// Whether workers sharing a place have been warned about.
    warned_sharing: bool,
    /// Whether a worker started without a pidfd has been warned about.
    warned_no_pidfd: bool,
    /// With `--prefix`: the relays of the workers' output.
    relay: Option<Relay>,
    /// With `--user`: the identity workers run as.
    user: Option<Identity>,
    /// With `--watchdog`: the interval workers are told (`WATCHDOG_USEC`).
    watchdog: Option<std::time::Duration>,
    /// With `-f`: the Procfile's groups (each slot's command, name and id within its group).
    groups: Option<crate::config::groups::Groups>,
    /// The slots last steered to, and the members then (per-worker sockets): steered to again
    /// when a socket is closed and the group's order changes.
    last_steer: Option<(Vec<u32>, Vec<u32>)>,
    /// `--env-file`: the files, and what they held for each generation from which their content
    /// changed (a worker of generation G gets the entry of the greatest generation up to G).
    env_files: EnvFiles,
    env_layers: EnvHistory,
    /// `--port-per-worker`: worker i gets `PORT=BASE+i`.
    port_base: Option<u16>,
    /// With `--cgroups`: each worker's cgroup.
    cgroups: Option<Groups>,
}

/// `LISTEN_PID=` and room for a pid, NUL-filled: the child writes its own pid in.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";

impl Spawner {
    /// Everything a spawn needs from the validated command line (`config`), what startup
    /// learned, the sockets, and the output relay (`--prefix`).
    pub fn new(
        config: &Config,
        inherited: &Inherited,
        sockets: Sockets,
        relay: Option<Relay>,
    ) -> io::Result<Spawner> {
        let mut environment = crate::process::environment::inherited_environment();
        if config.port_per_worker.is_some() {
            // Each worker gets its own.
            environment.retain(|(key, _)| key != "PORT");
        }
        Ok(Spawner {
            command: config.command.clone(),
            path_var: std::env::var_os("PATH"),
            environment,
            devnull: File::open("/dev/null")?,
            signals_to_reset: inherited.signals_to_reset.clone(),
            fd_limit: inherited.fd_limit,
            recluster_pid: std::process::id() as i32,
            socket_names: sockets
                .listeners()
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(":"),
            sockets,
            child_stack: vec![0; CHILD_STACK],
            placement: config.placement.clone(),
            warned_sharing: false,
            warned_no_pidfd: false,
            relay,
            user: config.user.clone(),
            watchdog: config.policy.watchdog,
            groups: config.groups.clone(),
            last_steer: None,
            env_files: config.env_files.clone(),
            env_layers: EnvHistory::new(config.env.clone()),
            port_base: config.port_per_worker,
            cgroups: None,
        })
    }

    /// `--env-file`: reads the files again, for a reload about to begin (nothing changes yet:
    /// see `adopt_env`). The error names the file and line.
    pub fn reread_env_files(&self) -> Result<Option<EnvLayer>, String> {
        if self.env_files.is_empty() {
            return Ok(None);
        }
        self.env_files.read().map(Some)
    }

    /// Workers of `generation` and later get `layer` (what `reread_env_files` read for the reload
    /// to that generation).
    pub fn adopt_env(&mut self, generation: u32, layer: EnvLayer) {
        self.env_layers.adopt(generation, layer);
    }

    /// Forgets the env files' contents that no worker of `generation` or later would get.
    pub fn forget_env_before(&mut self, generation: u32) {
        self.env_layers.forget_before(generation);
    }

    /// The env files' variables and digest for a worker of `generation`.
    pub fn env_of(&self, generation: u32) -> &Arc<EnvLayer> {
        self.env_layers.of(generation)
    }

    /// Whether `--env-file` was given.
    pub fn has_env_files(&self) -> bool {
        !self.env_files.is_empty()
    }

    /// Each worker runs in a cgroup of its own, made in `groups`.
    pub fn with_cgroups(mut self, groups: Option<Groups>) -> Spawner {
        self.cgroups = groups;
        self
    }

    /// The workers' cgroups, with `--cgroups` where recluster could make them.
    pub fn cgroups(&mut self) -> Option<&mut Groups> {
        self.cgroups.as_mut()
    }

    /// The workers' cgroups, to look at.
    pub fn worker_cgroups(&self) -> Option<&Groups> {
        self.cgroups.as_ref()
    }

    /// At exit: the workers' cgroups are killed and removed, and recluster's subtree.
    pub fn finish_cgroups(&mut self) {
        if let Some(groups) = self.cgroups.take() {
            groups.finish();
        }
    }

    /// How a failed exec names what failed: the program, and the user with `--user`.
    pub fn describe_program(&self, id: u32) -> String {
        let program = self.command_of(id)[0].to_string_lossy().into_owned();
        match &self.user {
            Some(user) => format!("{program} as user {}", user.name),
            None => program,
        }
    }

    /// The command slot `id` runs: its group's line, or the command.
    fn command_of(&self, id: u32) -> &[OsString] {
        match &self.groups {
            Some(groups) => &groups.groups[groups.of_slot(id).0].command,
            None => &self.command,
        }
    }

    /// Whether the listening socket named `name` goes to slot `id` (see `groups::socket_goes_to`).
    fn socket_goes_to(&self, name: &str, id: u32) -> bool {
        socket_goes_to(self.groups.as_ref(), name, id)
    }

    /// `LISTEN_FDNAMES` for slot `id`.
    fn socket_names_of(&self, id: u32) -> String {
        if self.groups.is_none() {
            return self.socket_names.clone();
        }
        self.sockets
            .listeners()
            .iter()
            .filter(|l| self.socket_goes_to(&l.name, id))
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// `--port-per-worker`: the port slot `id` binds (none past 65535).
    pub fn worker_port(&self, id: u32) -> Option<u16> {
        let base = self.port_base?;
        u16::try_from(u32::from(base) + id).ok()
    }

    /// The CPUs worker `id` is bound to, if recluster binds it (`--pin`, `--cpus`).
    pub fn worker_binding(&self, id: u32) -> Option<&CpuSet> {
        self.placement.binding(id)
    }

    /// Steers new connections to the sockets of these slots (per-worker sockets): on each
    /// listener, to those of them that take it. With groups, where none of them does (the group
    /// has no ready worker), to every worker of the group, ready or not, so that no connection
    /// waits in a socket that no worker of the group will ever accept from.
    /// `members` are the slots that exist, ready or not (`--steer client` keeps their share).
    pub fn steer(&mut self, slots: &[u32], members: &[u32]) {
        self.last_steer = Some((slots.to_vec(), members.to_vec()));
        let groups = self.groups.as_ref();
        let placement = &self.placement;
        self.sockets.steer(
            |listener| Targets {
                ready: steering_targets(groups, slots, &listener.name),
                members: steering_targets(groups, members, &listener.name),
            },
            |slot| {
                placement
                    .binding(slot)
                    .map(|cpus| cpus.iter().collect())
                    .unwrap_or_default()
            },
        );
    }

    /// A scaled-down slot's worker is gone (per-worker sockets): see `Sockets::release_slot`.
    pub fn release_slot(&mut self, id: u32) {
        if self.sockets.release_slot(id) {
            self.steer_again(id);
        }
    }

    /// Slot `id`'s worker is gone and so is its process group (per-worker sockets): where
    /// `net.ipv4.tcp_migrate_req` is 1, the connections waiting in its sockets go to the other
    /// workers, and its next worker gets fresh ones (`Sockets::recycle_slot`).
    pub fn slot_emptied(&mut self, id: u32) {
        // A slot scaled away: `release_slot` has its sockets.
        if self
            .last_steer
            .as_ref()
            .is_some_and(|(_, members)| !members.contains(&id))
        {
            return;
        }
        if self.sockets.recycle_slot(id) {
            log::info!(
                "worker {id}: the connections waiting for it were handed to the other workers (net.ipv4.tcp_migrate_req=1); its next worker gets a fresh socket"
            );
            self.steer_again(id);
        }
    }

    /// The last steering again, but for slot `id`, after the group's order changed.
    fn steer_again(&mut self, id: u32) {
        let Some((slots, members)) = self.last_steer.clone() else {
            return;
        };
        let mut ready: Vec<u32> = slots.into_iter().filter(|&s| s != id).collect();
        if ready.is_empty() {
            ready = members.clone();
        }
        self.steer(&ready, &members);
    }

    /// With `--prefix`: waits, for at most `limit`, until every worker's output has been written.
    pub fn drain_output(&mut self, limit: std::time::Duration) {
        if let Some(relay) = self.relay.as_mut() {
            relay.drain(limit);
        }
    }

    /// With `--prefix`: worker `pid` has ended while a process it left holds its output (see
    /// `Relay::outlived`).
    pub fn output_outlived(&mut self, pid: i32) {
        if let Some(relay) = self.relay.as_mut() {
            relay.outlived(pid);
        }
    }

    /// How many connections wait in slot `id`'s own queues (per-worker sockets).
    pub fn queue_len(&self, id: u32) -> u32 {
        self.sockets.queue_len(id)
    }

    /// Starts one worker. Must be called from the main thread (see the module doc).
    /// With `notify_socket`, the worker gets `NOTIFY_SOCKET` set to it; with `message_fd`, that
    /// socket after its listening sockets, and `RECLUSTER_MSG_FD` naming it.
    pub fn spawn(
        &mut self,
        identity: WorkerIdentity,
        notify_socket: Option<&std::path::Path>,
        message_fd: Option<i32>,
    ) -> Result<Spawned, SpawnError> {
        let program = command::resolve(&self.command_of(identity.id)[0], self.path_var.as_deref())
            .map_err(SpawnError::Command)?;
        let (id, groups) = (identity.id, self.groups.as_ref());
        let listen_fds = self
            .sockets
            .for_slot(id, |listener| socket_goes_to(groups, &listener.name, id))
            .map_err(SpawnError::Bind)?;
        if !self.warned_sharing
            && let Some(warning) = self.placement.sharing(identity.id, identity.count)
        {
            self.warned_sharing = true;
            log::warn!("{warning}");
        }
        let pipes = match self.relay {
            Some(_) => Some(Pipes::new().map_err(|e| SpawnError::System("create a pipe", e))?),
            None => None,
        };
        let mut prepared = self.prepare(
            program.as_os_str(),
            identity,
            listen_fds,
            notify_socket,
            message_fd,
        )?;
        if let Some(pipes) = &pipes {
            prepared.output = [pipes.stdout.1.as_raw_fd(), pipes.stderr.1.as_raw_fd()];
        }
        let cgroup = match self.cgroups.as_mut().map(|g| g.make(identity.id)) {
            Some(Ok(group)) => Some(group),
            Some(Err(e)) => return Err(SpawnError::System("create its cgroup", e)),
            None => None,
        };
        if let Some(group) = &cgroup {
            prepared.cgroup_procs = group.procs().iter().map(|fd| fd.as_raw_fd()).collect();
        }
        let stack_top = child_stack_top(&mut self.child_stack);
        // The kernel writes the child's pidfd here (CLONE_PIDFD, Linux 5.2; older kernels ignore
        // the flag and leave -1).
        let mut pidfd: libc::c_int = -1;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
        let pid = loop {
            // SAFETY: the child runs `child_entry` on its own stack, sharing recluster's memory
            // (CLONE_VM) while this thread is suspended (CLONE_VFORK) until it has exec'd or
            // exited; it makes only async-signal-safe calls on `prepared`, built above, and never
            // returns. With CLONE_PIDFD the parent_tid argument is where the close-on-exec pidfd
            // goes.
            let pid = unsafe {
                libc::clone(
                    child_entry,
                    stack_top,
                    flags,
                    (&raw mut prepared).cast(),
                    &raw mut pidfd,
                )
            };
            if pid >= 0 {
                break pid;
            }
            let e = io::Error::last_os_error();
            // A seccomp profile that refuses the flag, or no descriptor left for the pidfd: the
            // worker goes without one (its group is signalled with killpg, see `pidfd`).
            if flags & libc::CLONE_PIDFD != 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EPERM | libc::ENOSYS | libc::EMFILE | libc::ENFILE)
                )
            {
                if !self.warned_no_pidfd {
                    self.warned_no_pidfd = true;
                    log::warn!(
                        "worker {}: no pidfd for it ({e}); a worker without one has its process group signalled with killpg",
                        identity.id
                    );
                }
                flags &= !libc::CLONE_PIDFD;
                continue;
            }
            if let (Some(group), Some(groups)) = (cgroup, self.cgroups.as_mut()) {
                groups.abandon(group);
            }
            return Err(SpawnError::Fork(e));
        };
        if let (Some(group), Some(groups)) = (cgroup, self.cgroups.as_mut()) {
            groups.started(pid, group);
        }
        // SAFETY: a descriptor the kernel just created for this thread, owned by nothing else.
        let pidfd = (pidfd >= 0).then(|| Pidfd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) }));
        // SAFETY: the child has exec'd or exited: nothing writes the fields any more.
        let (errno, step) = unsafe {
            (
                std::ptr::read_volatile(&raw const prepared.exec_errno),
                std::ptr::read_volatile(&raw const prepared.failed_step),
            )
        };
        let mut relayed = false;
        if let (Some(pipes), Some(relay)) = (pipes, self.relay.as_mut()) {
            // The child has its own copies of the write ends: ours go, so EOF comes with its end.
            let Pipes { stdout, stderr } = pipes;
            let (label, group) = match &self.groups {
                Some(groups) => {
                    let (g, local) = groups.of_slot(identity.id);
                    (
                        groups.label(identity.id),
                        Some((groups.groups[g].name.clone(), local)),
                    )
                }
                None => (identity.id.to_string(), None),
            };
            match relay.start(identity.id, label, group, pid, stdout.0, stderr.0) {
                Ok(()) => relayed = true,
                Err(e) => log::error!("worker {}: cannot relay its output: {e}", identity.id),
            }
        }
        Ok(Spawned {
            pid,
            pidfd,
            exec_error: (errno != 0).then(|| step.error(errno)),
            relayed,
        })
    }

    fn prepare(
        &self,
        program: &OsStr,
        identity: WorkerIdentity,
        mut listen_fds: Vec<i32>,
        notify_socket: Option<&std::path::Path>,
        message_fd: Option<i32>,
    ) -> Result<Prepared, SpawnError> {
        let c = |text: &[u8]| {
            CString::new(text)
                .map_err(|e| SpawnError::System("pass an argument with a NUL byte", e.into()))
        };
        let path = c(program.as_bytes())?;
        let command = self.command_of(identity.id);
        let mut argv = Vec::with_capacity(command.len());
        for arg in command {
            argv.push(c(arg.as_bytes())?);
        }
        // For an executable without #!: /bin/sh FILE ARG..., as execvp does.
        let mut sh_argv = vec![c(b"/bin/sh")?, path.clone()];
        sh_argv.extend(argv.iter().skip(1).cloned());

        // recluster's environment, with the env files' variables on top (none of them is one
        // recluster sets below: the parser refuses those; but `PORT`, which only
        // --port-per-worker sets, and then its value wins).
        let layer = self.env_of(identity.generation);
        let mut envp = Vec::with_capacity(self.environment.len() + layer.vars.len() + 8);
        let inherited = self
            .environment
            .iter()
            .filter(|(key, _)| !layer.vars.contains_key(key))
            .map(|(key, value)| (key, value));
        let own_port = self.port_base.is_some();
        for (key, value) in inherited
            .chain(layer.vars.iter())
            .filter(|(key, _)| !(own_port && key.as_os_str() == "PORT"))
        {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c(&entry)?);
        }
        // With groups, a worker's id and count are its group's.
        let (worker_id, worker_count) = match &self.groups {
            Some(groups) => {
                let (g, local) = groups.of_slot(identity.id);
                let group = &groups.groups[g];
                envp.push(c(format!("WORKER_GROUP={}", group.name).as_bytes())?);
                (local, groups.size(g))
            }
            None => (identity.id, identity.count),
        };
        for (key, value) in [
            ("WORKER_ID", worker_id.to_string()),
            ("WORKER_COUNT", worker_count.to_string()),
            ("WORKER_GENERATION", identity.generation.to_string()),
            ("RECLUSTER_PID", self.recluster_pid.to_string()),
            (
                "WORKER_CPUS",
                self.placement.worker_cpus(identity.id).to_string(),
            ),
        ] {
            envp.push(c(format!("{key}={value}").as_bytes())?);
        }
        if self.port_base.is_some() {
            let port = self.worker_port(identity.id).ok_or_else(|| {
                SpawnError::System(
                    "give the worker a port (--port-per-worker: past 65535)",
                    io::Error::from_raw_os_error(libc::ERANGE),
                )
            })?;
            envp.push(c(format!("PORT={port}").as_bytes())?);
        }
        if let Some(path) = notify_socket {
            let mut entry = b"NOTIFY_SOCKET=".to_vec();
            entry.extend_from_slice(path.as_os_str().as_bytes());
            envp.push(c(&entry)?);
        }
        let mut listen_pid = Vec::new();
        if !listen_fds.is_empty() {
            let count = listen_fds.len();
            envp.push(c(format!("LISTEN_FDS={count}").as_bytes())?);
            envp.push(c(format!(
                "LISTEN_FDNAMES={}",
                self.socket_names_of(identity.id)
            )
            .as_bytes())?);
            envp.push(c(format!("EINHORN_FD_COUNT={count}").as_bytes())?);
            for i in 0..count {
                envp.push(c(format!("EINHORN_FD_{i}={}", 3 + i).as_bytes())?);
            }
            listen_pid = LISTEN_PID_PREFIX.to_vec();
            listen_pid.resize(LISTEN_PID_PREFIX.len() + 12, 0);
        }
        // `WATCHDOG_PID=` and room for the pid, like `LISTEN_PID`.
        let mut watchdog_pid = Vec::new();
        if let Some(interval) = self.watchdog {
            envp.push(c(
                format!("WATCHDOG_USEC={}", interval.as_micros()).as_bytes()
            )?);
            watchdog_pid = WATCHDOG_PID_PREFIX.to_vec();
            watchdog_pid.resize(WATCHDOG_PID_PREFIX.len() + 12, 0);
        }
        // The message socket goes right after the listening sockets (placed with them, but not
        // counted in LISTEN_FDS).
        if let Some(fd) = message_fd {
            envp.push(c(
                format!("RECLUSTER_MSG_FD={}", 3 + listen_fds.len()).as_bytes()
            )?);
            listen_fds.push(fd);
        }
        let mut envp_ptrs = null_terminated(&envp);
        for own_pid in [&listen_pid, &watchdog_pid] {
            if !own_pid.is_empty() {
                envp_ptrs.insert(envp_ptrs.len() - 1, own_pid.as_ptr().cast());
            }
        }
        Ok(Prepared {
            argv_ptrs: null_terminated(&argv),
            sh_argv_ptrs: null_terminated(&sh_argv),
            envp_ptrs,
            scratch_fds: vec![-1; listen_fds.len()],
            listen_fds,
            listen_pid,
            watchdog_pid,
            path,
            _argv: argv,
            _sh_argv: sh_argv,
            _envp: envp,
            devnull: self.devnull.as_raw_fd(),
            signals_to_reset: self.signals_to_reset.clone(),
            fd_limit: self.fd_limit,
            recluster_pid: self.recluster_pid,
            output: [-1, -1],
            credentials: self.user.as_ref().map(|u| (u.uid, u.gid, u.groups.clone())),
            affinity: self.placement.binding(identity.id).map(CpuSet::to_libc),
            cgroup_procs: Vec::new(),
            exec_errno: 0,
            failed_step: Step::Exec,
        })
    }
}

/// The child's data, owned by the parent, shared with the child until it execs.
struct Prepared {
    path: CString,
    argv_ptrs: Vec<*const libc::c_char>,
    sh_argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// The sockets to place at fds 3.., and room to move them out of the way first.
    listen_fds: Vec<i32>,
    scratch_fds: Vec<i32>,
    /// `LISTEN_PID=` plus NULs (empty without sockets); `envp_ptrs` points into it.
    listen_pid: Vec<u8>,
    /// `WATCHDOG_PID=` plus NULs (empty without `--watchdog`), filled in the same way.
    watchdog_pid: Vec<u8>,
    _argv: Vec<CString>,
    _sh_argv: Vec<CString>,
    _envp: Vec<CString>,
    devnull: i32,
    signals_to_reset: Vec<i32>,
    fd_limit: Option<libc::rlimit>,
    recluster_pid: i32,
    /// With `--prefix`: the write ends of its stdout and stderr pipes, -1 without.
    output: [i32; 2],
    /// With `--user`: (uid, gid, supplementary groups) to drop to.
    credentials: Option<(u32, u32, Vec<libc::gid_t>)>,
    /// The CPUs it is bound to, if recluster binds it (`--pin`, `--cpus`).
    affinity: Option<libc::cpu_set_t>,
    /// With `--cgroups`: its group's `cgroup.procs` in each hierarchy, open for writing.
    cgroup_procs: Vec<i32>,
    /// Written by the child when it cannot exec (it shares this memory): why, and at which step.
    exec_errno: i32,
    failed_step: Step,
}

/// The step of the child's setup that failed (see the module doc), reported with its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Exec,
    Cgroup,
    ProcessGroup,
    User,
    DeathSignal,
    Affinity,
    Signals,
    Stdio,
    CloseOnExec,
    Sockets,
    FdLimit,
}

impl Step {
    /// The error the parent reports: the errno alone for `execve`, else with the step named.
    fn error(self, errno: i32) -> io::Error {
        let os = io::Error::from_raw_os_error(errno);
        let step = match self {
            Step::Exec => return os,
            Step::Cgroup => "joining its cgroup",
            Step::ProcessGroup => "setpgid",
            Step::User => "the drop to --user",
            Step::DeathSignal => "PR_SET_PDEATHSIG",
            Step::Affinity => "sched_setaffinity",
            Step::Signals => "resetting the signal dispositions and mask",
            Step::Stdio => "dup2 of stdin, stdout or stderr",
            Step::CloseOnExec => "close_range",
            Step::Sockets => "placing the sockets at fd 3 and up",
            Step::FdLimit => "setrlimit(RLIMIT_NOFILE)",
        };
        io::Error::new(os.kind(), format!("{step} before exec: {os}"))
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The child's stack: its size, allocated once.
const CHILD_STACK: usize = 128 * 1024;

/// The top of the child's stack (stacks grow down), aligned as the ABI wants.
fn child_stack_top(stack: &mut [u8]) -> *mut libc::c_void {
    let end = stack.as_mut_ptr_range().end as usize;
    (end & !15) as *mut libc::c_void
}

/// Where the child starts (on its own stack, in recluster's memory).
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` that `spawn` passed to clone, alive and not touched by the
    // suspended parent until this child has exec'd or exited.
    unsafe { exec_child(&mut *arg.cast::<Prepared>()) }
}

/// The child's side of the spawn. Only async-signal-safe calls; never returns.
///
/// # Safety
/// Must be called only in the child of `clone`, with `prepared` built before it.
unsafe fn exec_child(prepared: &mut Prepared) -> ! {
    // SAFETY: each call is async-signal-safe and takes pointers into `prepared`, which the child
    // shares while the parent waits; nothing allocates, locks or unwinds.
    unsafe {
        let errno = || *libc::__errno_location();
        for i in 0..prepared.cgroup_procs.len() {
            // "0" is the writer itself.
            if libc::write(prepared.cgroup_procs[i], b"0".as_ptr().cast(), 1) != 1 {
                report_and_exit(prepared, Step::Cgroup, errno(), exit_code::FAILURE);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            report_and_exit(prepared, Step::ProcessGroup, errno(), exit_code::FAILURE);
        }
        if let Some((uid, gid, groups)) = &prepared.credentials {
            let (uid, gid, groups) = (*uid, *gid, (groups.as_ptr(), groups.len()));
            drop_privileges(prepared, uid, gid, groups);
        }
        // After the drop: changing credentials clears the parent-death signal.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            report_and_exit(prepared, Step::DeathSignal, errno(), exit_code::FAILURE);
        }
        if libc::getppid() != prepared.recluster_pid {
            libc::_exit(exit_code::FAILURE); // recluster died before the death signal was armed
        }
        if let Some(set) = &prepared.affinity
            && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
        {
            report_and_exit(prepared, Step::Affinity, errno(), exit_code::FAILURE);
        }
        for i in 0..prepared.signals_to_reset.len() {
            if libc::signal(prepared.signals_to_reset[i], libc::SIG_DFL) == libc::SIG_ERR {
                report_and_exit(prepared, Step::Signals, errno(), exit_code::FAILURE);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let failed = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if failed != 0 {
            report_and_exit(prepared, Step::Signals, failed, exit_code::FAILURE);
        }
        if libc::dup2(prepared.devnull, 0) < 0
            || (prepared.output[0] >= 0
                && (libc::dup2(prepared.output[0], 1) < 0 || libc::dup2(prepared.output[1], 2) < 0))
        {
            report_and_exit(prepared, Step::Stdio, errno(), exit_code::FAILURE);
        }
        let marked = libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        // ENOSYS, EINVAL: a kernel before 5.11 (see the module doc).
        if marked != 0 && errno() != libc::ENOSYS && errno() != libc::EINVAL {
            report_and_exit(prepared, Step::CloseOnExec, errno(), exit_code::FAILURE);
        }
        place_listen_fds(prepared);
        if !prepared.watchdog_pid.is_empty() {
            write_own_pid(&mut prepared.watchdog_pid, WATCHDOG_PID_PREFIX.len());
        }
        if let Some(limit) = &prepared.fd_limit
            // Last, once no descriptor is to be created: recluster's own fds may lie above it.
            && libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0
        {
            report_and_exit(prepared, Step::FdLimit, errno(), exit_code::FAILURE);
        }
        libc::execve(
            prepared.path.as_ptr(),
            prepared.argv_ptrs.as_ptr(),
            prepared.envp_ptrs.as_ptr(),
        );
        let mut errno = *libc::__errno_location();
        if errno == libc::ENOEXEC {
            libc::execve(
                prepared.sh_argv_ptrs[0],
                prepared.sh_argv_ptrs.as_ptr(),
                prepared.envp_ptrs.as_ptr(),
            );
            errno = *libc::__errno_location();
        }
        let code = if errno == libc::ENOENT || errno == libc::ENOTDIR {
            exit_code::NOT_FOUND
        } else {
            exit_code::CANNOT_EXECUTE
        };
        report_and_exit(prepared, Step::Exec, errno, code)
    }
}

/// `--user`: supplementary groups, then the group, then the user — raw system calls, since glibc's
/// wrappers would try to change every thread of recluster, whose memory this child shares — and a
/// check that the drop holds; exit 126 otherwise.
///
/// # Safety
/// Only in the child of `clone` (see `exec_child`).
unsafe fn drop_privileges(
    prepared: &mut Prepared,
    uid: u32,
    gid: u32,
    groups: (*const libc::gid_t, usize),
) {
    // SAFETY: plain system calls on values prepared before the clone (`groups` points into
    // `prepared`, alive); nothing allocates.
    unsafe {
        let failed = libc::syscall(libc::SYS_setgroups, groups.1, groups.0) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0;
        if failed {
            report_and_exit(
                prepared,
                Step::User,
                *libc::__errno_location(),
                exit_code::CANNOT_EXECUTE,
            );
        }
        let (mut r, mut e, mut s) = (0u32, 0u32, 0u32);
        libc::syscall(libc::SYS_getresuid, &mut r, &mut e, &mut s);
        let (mut gr, mut ge, mut gs) = (0u32, 0u32, 0u32);
        libc::syscall(libc::SYS_getresgid, &mut gr, &mut ge, &mut gs);
        // A drop that holds: back to root is refused (unless the target is root).
        let regained = uid != 0 && libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) == 0;
        if [r, e, s] != [uid; 3] || [gr, ge, gs] != [gid; 3] || regained {
            report_and_exit(prepared, Step::User, libc::EPERM, exit_code::CANNOT_EXECUTE);
        }
    }
}

/// Moves the sockets (and the message socket after them) to fds 3.. and fills in `LISTEN_PID`
/// if there are listening sockets.
///
/// # Safety
/// Only in the child of `clone` (see `exec_child`).
unsafe fn place_listen_fds(prepared: &mut Prepared) {
    let count = prepared.listen_fds.len();
    if count == 0 {
        return;
    }
    let floor = 3 + count as i32;
    // SAFETY: async-signal-safe fcntl/dup2/getpid on descriptors this process holds; writes stay
    // within `scratch_fds` and `listen_pid`, both sized before the clone.
    unsafe {
        for i in 0..count {
            let moved = libc::fcntl(prepared.listen_fds[i], libc::F_DUPFD_CLOEXEC, floor);
            if moved < 0 {
                report_and_exit(
                    prepared,
                    Step::Sockets,
                    *libc::__errno_location(),
                    exit_code::FAILURE,
                );
            }
            prepared.scratch_fds[i] = moved;
        }
        for i in 0..count {
            if libc::dup2(prepared.scratch_fds[i], 3 + i as i32) < 0 {
                report_and_exit(
                    prepared,
                    Step::Sockets,
                    *libc::__errno_location(),
                    exit_code::FAILURE,
                );
            }
        }
        if !prepared.listen_pid.is_empty() {
            write_own_pid(&mut prepared.listen_pid, LISTEN_PID_PREFIX.len());
        }
    }
}

/// Writes this process's pid, in decimal and NUL-terminated, into `buffer` after its prefix.
/// Async-signal-safe: no allocation, the buffer was sized before the clone.
fn write_own_pid(buffer: &mut [u8], start: usize) {
    // SAFETY: getpid has no memory effects.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..n {
        buffer[start + i] = digits[n - 1 - i];
    }
    buffer[start + n] = 0;
}

/// Tells the parent why the exec did not happen (in the memory it shares), and exits.
///
/// # Safety
/// Only in the child of `clone` (see `exec_child`).
unsafe fn report_and_exit(prepared: &mut Prepared, step: Step, errno: i32, code: i32) -> ! {
    // SAFETY: writes into the shared `Prepared`, read by the parent only once this child has
    // exited; _exit is async-signal-safe.
    unsafe {
        std::ptr::write_volatile(&raw mut prepared.failed_step, step);
        std::ptr::write_volatile(&raw mut prepared.exec_errno, errno);
        libc::_exit(code)
    }
}
