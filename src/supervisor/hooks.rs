//! `--on EVENT=COMMAND`: lifecycle hooks. COMMAND runs with `/bin/sh -c` beside the cluster when
//! the cluster reports EVENT, with `RECLUSTER_EVENT`, `WORKER_ID`, `WORKER_GROUP`, `WORKER_PID`,
//! `WORKER_GENERATION` and, for `exit`, `WORKER_EXIT` (`exit 3` or `signal 9`), in the environment
//! workers inherit (`process::environment`: nothing recluster's own service manager
//! addressed to recluster — `LISTEN_*`, `NOTIFY_SOCKET`, `WATCHDOG_*`, `EINHORN_*`). Hooks never block
//! or break the cluster: each runs in a process group of its own, `--hook-timeout` ends it, its
//! failure is logged, and at most `MAX_RUNNING` run at once (further events are dropped, and
//! counted; the `stop` hooks always run). When the cluster stops, running hooks get the stop signal; the `stop` hooks start
//! after that, and no other hook starts (the workers' exits during the stop start none).
//! recluster waits for the `stop` hooks (within `--kill-timeout`) before it exits.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::process::pidfd::{self, Pidfd};
use crate::process::reaper::{self, Exit};
use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;
use crate::supervisor::report::Report;

/// At most this many hooks run at once.
pub const MAX_RUNNING: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Spawn,
    Ready,
    Exit,
    ReloadStart,
    ReloadDone,
    ReloadAbandoned,
    Scale,
    Stop,
    /// A worker the kernel's OOM killer ended in its cgroup.
    Oom,
}

const EVENTS: [(&str, HookEvent); 9] = [
    ("spawn", HookEvent::Spawn),
    ("ready", HookEvent::Ready),
    ("exit", HookEvent::Exit),
    ("reload-start", HookEvent::ReloadStart),
    ("reload-done", HookEvent::ReloadDone),
    ("reload-abandoned", HookEvent::ReloadAbandoned),
    ("scale", HookEvent::Scale),
    ("stop", HookEvent::Stop),
    ("oom", HookEvent::Oom),
];

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = EVENTS
            .iter()
            .find(|(_, e)| e == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// One `--on EVENT=COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub event: HookEvent,
    pub command: String,
}

impl FromStr for HookSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<HookSpec, String> {
        let names: Vec<&str> = EVENTS.iter().map(|(n, _)| *n).collect();
        let (event, command) = text.split_once('=').ok_or_else(|| {
            format!(
                "'{text}': write EVENT=COMMAND (events: {})",
                names.join(", ")
            )
        })?;
        let event = EVENTS
            .iter()
            .find(|(n, _)| *n == event)
            .map(|(_, e)| *e)
            .ok_or_else(|| format!("'{event}' is not an event (events: {})", names.join(", ")))?;
        if command.trim().is_empty() {
            return Err(format!("'{text}': the command is empty"));
        }
        Ok(HookSpec {
            event,
            command: command.to_string(),
        })
    }
}

/// What a hook is told about the event, as environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Details {
    id: Option<u32>,
    /// With Procfile groups: the worker's group (and `id` is its id within it).
    group: Option<String>,
    pid: Option<i32>,
    generation: Option<u32>,
    exit: Option<String>,
}

/// The event a report stands for, if any, and what hooks are told about it.
fn event_of(report: &Report) -> Option<(HookEvent, Details)> {
    let worker = |id: u32, pid: Option<i32>, generation: Option<u32>| Details {
        id: Some(id),
        group: None,
        pid,
        generation,
        exit: None,
    };
    let exit_text = |status: &ProcessStatus| match status {
        ProcessStatus::Exited(code) => format!("exit {code}"),
        ProcessStatus::Killed(sig) => format!("signal {}", sig.number()),
    };
    Some(match report {
        Report::Started {
            id,
            pid,
            generation,
        } => (HookEvent::Spawn, worker(*id, Some(*pid), *generation)),
        Report::WorkerReady { id, pid } => (HookEvent::Ready, worker(*id, Some(*pid), None)),
        Report::ReplacementReady {
            id,
            generation,
            pid,
            ..
        } => (HookEvent::Ready, worker(*id, Some(*pid), Some(*generation))),
        Report::Ended {
            id, pid, status, ..
        } => (
            HookEvent::Exit,
            Details {
                exit: Some(exit_text(status)),
                ..worker(*id, *pid, None)
            },
        ),
        Report::Stopped { id, pid, status } => (
            HookEvent::Exit,
            Details {
                exit: Some(exit_text(status)),
                ..worker(*id, Some(*pid), None)
            },
        ),
        Report::ReloadBegun { target, .. } => (
            HookEvent::ReloadStart,
            Details {
                generation: Some(*target),
                ..Details::default()
            },
        ),
        Report::ReloadComplete { target, .. } => (
            HookEvent::ReloadDone,
            Details {
                generation: Some(*target),
                ..Details::default()
            },
        ),
        Report::ReloadAbandoned { target, .. } => (
            HookEvent::ReloadAbandoned,
            Details {
                generation: Some(*target),
                ..Details::default()
            },
        ),
        // The worker added, or removed.
        Report::ScaledUp { id, .. } | Report::ScaledDown { id, .. } => {
            (HookEvent::Scale, worker(*id, None, None))
        }
        Report::StopRequested { .. } | Report::Finished => (HookEvent::Stop, Details::default()),
        Report::OomKilled { id, pid } => (HookEvent::Oom, worker(*id, Some(*pid), None)),
        _ => return None,
    })
}

/// A hook that runs: what it is for, when `--hook-timeout` ends it, and its pidfd (which also
/// says when it has exited), through which its process group is signalled: never a group that
/// took its id after it was reaped (see `pidfd`).
struct Running {
    event: HookEvent,
    deadline: Instant,
    pidfd: Option<Pidfd>,
}

impl Running {
    /// Signals its process group (see `pidfd::signal_group`).
    fn signal_group(&self, pid: i32, signal: i32) {
        if let Err(e) = pidfd::signal_group(self.pidfd.as_ref(), pid, signal) {
            log::debug!("the {} hook (pid {pid}): cannot signal it: {e}", self.event);
        }
    }
}

/// Whether every one of these pidfds says its process has exited (a pidfd becomes readable),
/// waiting up to `timeout_ms` for them.
fn exited(pidfds: &[i32], timeout_ms: i32) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    let mut waiting: Vec<libc::pollfd> = pidfds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: a valid array of pollfd; the timeout bounds the wait.
        if unsafe { libc::poll(waiting.as_mut_ptr(), waiting.len() as libc::nfds_t, left) } < 0 {
            return false;
        }
        waiting.retain(|p| p.revents == 0);
        if waiting.is_empty() {
            return true;
        }
        if left == 0 {
            return false;
        }
    }
}

/// The hooks and those running.
pub struct Hooks {
    specs: Vec<HookSpec>,
    timeout: Duration,
    /// Running hooks by pid (also their process group).
    running: HashMap<i32, Running>,
    /// Once the cluster stops, only the `stop` hooks run.
    stopping: bool,
    dropped: u64,
    /// `-f`: to name a worker by its group and id within it.
    groups: Option<crate::config::groups::Groups>,
}

impl Hooks {
    pub fn with_groups(mut self, groups: Option<crate::config::groups::Groups>) -> Hooks {
        self.groups = groups;
        self
    }

    pub fn new(specs: Vec<HookSpec>, timeout: Duration) -> Hooks {
        Hooks {
            specs,
            groups: None,
            timeout,
            running: HashMap::new(),
            stopping: false,
            dropped: 0,
        }
    }

    /// Starts the hooks of the event `report` stands for. On a stop, running hooks get
    /// `stop_signal` first.
    pub fn fire(&mut self, report: &Report, stop_signal: Sig) {
        if self.specs.is_empty() {
            return;
        }
        let Some((event, mut details)) = event_of(report) else {
            return;
        };
        if let (Some(groups), Some(id)) = (&self.groups, details.id) {
            let (g, local) = groups.of_slot(id);
            details.group = Some(groups.groups[g].name.clone());
            details.id = Some(local);
        }
        if self.stopping {
            return; // the workers' exits during a stop start no hook
        }
        if event == HookEvent::Stop {
            self.stopping = true;
            for (&pid, hook) in &self.running {
                hook.signal_group(pid, stop_signal.number());
            }
        }
        let commands: Vec<String> = self
            .specs
            .iter()
            .filter(|s| s.event == event)
            .map(|s| s.command.clone())
            .collect();
        for command in commands {
            // The stop hooks are exempt: their number is the operator's (`--on stop=`), they run
            // once, and the hooks still counted here were just told to stop. A worker that kept
            // 8 exit hooks busy must not be able to skip the cluster's clean-up.
            if event != HookEvent::Stop && self.running.len() >= MAX_RUNNING {
                self.dropped += 1;
                log::warn!(
                    "too many hooks running ({MAX_RUNNING}): the {event} hook was not run ({} dropped so far)",
                    self.dropped
                );
                continue;
            }
            // The reaper held off from the spawn to the pidfd: the pid is still the hook's.
            let held = reaper::hold();
            let spawned =
                spawn_hook(&command, event, &details).map(|pid| (pid, Pidfd::open(pid).ok()));
            drop(held);
            match spawned {
                Ok((pid, pidfd)) => {
                    log::debug!("{event} hook started (pid {pid}): {command}");
                    let deadline = Instant::now() + self.timeout;
                    self.running.insert(
                        pid,
                        Running {
                            event,
                            deadline,
                            pidfd,
                        },
                    );
                }
                Err(e) => log::warn!("the {event} hook could not start: {e}"),
            }
        }
    }

    /// Whether `pid` is a hook that started with the stop (not to be sent the stop signal).
    pub fn is_stop_hook(&self, pid: i32) -> bool {
        self.running
            .get(&pid)
            .is_some_and(|hook| hook.event == HookEvent::Stop)
    }

    /// A reaped process: if it was a hook, log a failure; true if it was one.
    pub fn reaped(&mut self, exit: &Exit) -> bool {
        let Some(hook) = self.running.remove(&exit.pid) else {
            return false;
        };
        if exit.status.success() {
            log::debug!("{} hook (pid {}) {}", hook.event, exit.pid, exit.status);
        } else {
            log::warn!("the {} hook (pid {}) {}", hook.event, exit.pid, exit.status);
        }
        true
    }

    /// Before recluster exits: gives the hooks still running (the `stop` hooks) up to `limit` to
    /// end, then kills what is left, so no hook outlives recluster. The signal thread reaps them.
    pub fn finish(&mut self, limit: Duration) {
        let pidfds: Vec<i32> = self
            .running
            .values()
            .filter_map(|h| h.pidfd.as_ref().map(AsRawFd::as_raw_fd))
            .collect();
        if !pidfds.is_empty() {
            exited(&pidfds, limit.as_millis().min(i32::MAX as u128) as i32);
        }
        for (&pid, hook) in &self.running {
            hook.signal_group(pid, libc::SIGKILL);
        }
        self.running.clear();
    }

    /// When the next running hook runs out of `--hook-timeout`.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.running.values().map(|h| h.deadline).min()
    }

    /// Kills the process group of every hook past its deadline.
    pub fn expire(&mut self, now: Instant) {
        for (&pid, hook) in self.running.iter_mut() {
            if hook.deadline <= now {
                log::warn!(
                    "the {} hook (pid {pid}) ran longer than --hook-timeout: killing it",
                    hook.event
                );
                hook.signal_group(pid, libc::SIGKILL);
                hook.deadline = now + Duration::from_secs(3600); // reaped soon; never killed twice
            }
        }
    }
}

/// `/bin/sh -c COMMAND` in a process group of its own, with an empty signal mask and default
/// dispositions, through `posix_spawn` (which reports an exec failure itself: nothing here waits).
fn spawn_hook(command: &str, event: HookEvent, details: &Details) -> std::io::Result<i32> {
    let text = |s: String| CString::new(s).map_err(std::io::Error::other);
    let argv = [
        text("/bin/sh".into())?,
        text("-c".into())?,
        text(command.to_string())?,
    ];
    let mut env: Vec<CString> = Vec::new();
    let set = [
        "RECLUSTER_EVENT",
        "WORKER_ID",
        "WORKER_PID",
        "WORKER_GENERATION",
        "WORKER_EXIT",
        "WORKER_GROUP",
    ];
    // The environment workers inherit (nothing addressed to recluster by its own service
    // manager), without the variables set here.
    for (key, value) in crate::process::environment::inherited_environment() {
        if set.iter().any(|s| key == *s) {
            continue;
        }
        let mut entry = key.into_encoded_bytes();
        entry.push(b'=');
        entry.extend_from_slice(value.as_encoded_bytes());
        env.push(CString::new(entry).map_err(std::io::Error::other)?);
    }
    env.push(text(format!("RECLUSTER_EVENT={event}"))?);
    env.push(text(format!(
        "WORKER_GROUP={}",
        details.group.as_deref().unwrap_or("")
    ))?);
    if let Some(id) = details.id {
        env.push(text(format!("WORKER_ID={id}"))?);
    }
    if let Some(pid) = details.pid {
        env.push(text(format!("WORKER_PID={pid}"))?);
    }
    if let Some(generation) = details.generation {
        env.push(text(format!("WORKER_GENERATION={generation}"))?);
    }
    if let Some(exit) = &details.exit {
        env.push(text(format!("WORKER_EXIT={exit}"))?);
    }
    let argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let env_ptrs: Vec<*mut libc::c_char> = env
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    // SAFETY: the attribute object is initialised before use and destroyed after; the signal
    // sets are initialised by sigemptyset/sigfillset; argv and envp are NULL-terminated arrays
    // of NUL-terminated strings that outlive the call.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        libc::posix_spawnattr_setpgroup(&mut attr, 0);
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
        let mut pid: libc::pid_t = 0;
        let rc = libc::posix_spawn(
            &mut pid,
            argv[0].as_ptr(),
            std::ptr::null(),
            &attr,
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        );
        libc::posix_spawnattr_destroy(&mut attr);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::report::Then;

    #[test]
    fn parses_event_and_command_and_names_the_events_on_error() {
        let spec: HookSpec = "exit=echo gone".parse().unwrap();
        assert_eq!(spec.event, HookEvent::Exit);
        assert_eq!(spec.command, "echo gone");
        let reload: HookSpec = "reload-done=curl -X POST x".parse().unwrap();
        assert_eq!(reload.event, HookEvent::ReloadDone);
        let err = "crash=echo".parse::<HookSpec>().unwrap_err();
        assert!(err.contains("events: spawn, ready, exit"), "{err}");
        assert!("exit=".parse::<HookSpec>().is_err());
        assert!("exit".parse::<HookSpec>().is_err());
    }

    #[test]
    fn reports_map_to_events_with_their_details() {
        let (event, details) = event_of(&Report::Ended {
            id: 2,
            pid: Some(77),
            status: ProcessStatus::Killed(Sig::KILL),
            then: Then::Restarting {
                delay: Duration::ZERO,
            },
        })
        .unwrap();
        assert_eq!(event, HookEvent::Exit);
        assert_eq!(
            (details.id, details.pid, details.exit.as_deref()),
            (Some(2), Some(77), Some("signal 9"))
        );
        assert!(event_of(&Report::ReloadCancelled).is_none());
        let (event, details) = event_of(&Report::ScaledDown {
            origin: crate::supervisor::report::Origin::Signal,
            workers: 3,
            id: 3,
        })
        .unwrap();
        assert_eq!((event, details.id), (HookEvent::Scale, Some(3)));
    }
}
