//! The one place that waits for children: `reap_children` collects every child that has exited —
//! workers and adopted orphans alike — with `wait4(-1, WNOHANG)`, and says whether any child is
//! left. Only the signal thread calls it, on SIGCHLD; nothing else in recluster waits. `wait4`
//! also gives the CPU time the child (and the descendants it waited for) used, for `ctl status`.
//!
//! `hold` keeps it from reaping for a moment: a child found unreaped while held stays so, and its
//! pid cannot go to another process, until the hold ends (see `pidfd`).

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use nix::errno::Errno;

use crate::process::status::ProcessStatus;

/// One child that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: ProcessStatus,
    /// User and system CPU time, from the reaped `rusage`.
    pub cpu: std::time::Duration,
    /// The kernel's OOM killer ended it in its cgroup (`--cgroups`; set by the loop, which looks
    /// at the group before it is removed).
    pub oom_killed: bool,
}

/// Taken for writing while reaping, for reading by `hold`.
static REAPING: RwLock<()> = RwLock::new(());

/// Keeps every child that is not reaped yet unreaped until the guard is dropped. Held only for a
/// few system calls (a check and a signal, a spawn and its `pidfd_open`).
pub fn hold() -> RwLockReadGuard<'static, ()> {
    REAPING.read().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps every exited child; the flag says whether children remain (alive, or not yet exited).
pub fn reap_children() -> (Vec<Exit>, bool) {
    let _reaping = REAPING.write().unwrap_or_else(PoisonError::into_inner);
    let mut exits = Vec::new();
    loop {
        let mut raw = 0;
        // SAFETY: an all-zero rusage is a valid value of that plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes the status into a valid i32 and the usage into a valid rusage.
        let pid = unsafe { libc::wait4(-1, &mut raw, libc::WNOHANG, &mut usage) };
        match pid {
            0 => return (exits, true),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return (exits, false), // ECHILD: no children at all
            pid => {
                if let Some(status) = ProcessStatus::from_wait_status(raw) {
                    exits.push(Exit {
                        pid,
                        status,
                        cpu: cpu_time(&usage),
                        oom_killed: false,
                    });
                }
            }
        }
    }
}

/// User plus system time of a reaped child.
fn cpu_time(usage: &libc::rusage) -> std::time::Duration {
    let micros = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}
