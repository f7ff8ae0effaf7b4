//! Processes held by pidfd, so that no signal meant for one of recluster's children reaches a
//! process that got its pid (or its process group id) later.
//!
//! What is at risk: a pid is reused only once its process has been reaped, and only recluster
//! reaps its children (the signal thread's `reaper`, the one `wait4(-1)`). The supervisor hears of
//! a reap later, through the event channel — and with `--prefix` only once the worker's output is
//! written, up to 200 ms later. In between, the cluster may still signal the worker's process
//! group (a stop, a reload, a timeout, a forwarded signal), and a plain `killpg(pid)` reaches
//! whichever group has that id by then. A group id is as recyclable as a pid once its leader is
//! reaped and its last member gone. Each worker therefore keeps a pidfd (`clone(CLONE_PIDFD)`, see
//! `spawn`), held by the supervisor until the cluster has been told of its exit (one per live
//! worker), and its group is signalled through it:
//!
//! - Linux 6.9 and later: `pidfd_send_signal(PIDFD_SIGNAL_PROCESS_GROUP)` signals the group of the
//!   process the pidfd holds: the kernel's own record of that process, not its number. What is
//!   left of a worker's group after its leader was reaped still gets the signal; a process that
//!   got the number later never does.
//! - Linux 5.3 to 6.8 (the flag is refused with `EINVAL`): `killpg`, but only while the pidfd says
//!   the leader is not reaped yet (`pidfd_send_signal` with signal 0 succeeds on a zombie, fails
//!   with `ESRCH` once reaped), and with the reaper held off (`reaper::hold`) from that check to the
//!   signal, so the pid, and the group id with it, cannot be freed in between. A group whose leader
//!   is already reaped is not signalled: the members it left are recluster's orphans (it is a
//!   subreaper) or theirs, which a stop reaches through `descendants`.
//! - Without pidfds (kernels before 5.3, or a seccomp profile that refuses them): `killpg`, as
//!   before.
//!
//! Hooks are held the same way: their pidfd is taken with `pidfd_open` while the reaper is held
//! off, so the pid still names the hook.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::process::reaper;

/// `PIDFD_SIGNAL_PROCESS_GROUP` (linux/pidfd.h, Linux 6.9).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 4;

/// A pidfd: a reference to one process that no other process can ever take over.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

/// Whether a signal reached anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The process (or its group) is gone: nothing was signalled.
    Gone,
}

/// How a group is signalled through a pidfd (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupSignal {
    /// `PIDFD_SIGNAL_PROCESS_GROUP`.
    ByPidfd,
    /// `killpg` while the leader is provably not reaped.
    WhileUnreaped,
}

/// Set once the kernel has refused `PIDFD_SIGNAL_PROCESS_GROUP` (before Linux 6.9).
static GROUP_FLAG_REFUSED: AtomicBool = AtomicBool::new(false);

impl Pidfd {
    /// A pidfd for `pid` (`pidfd_open`). The caller makes sure that `pid` still names the process
    /// it means (its unreaped child, with the reaper held off).
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created and owned by nothing else.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Takes ownership of a pidfd the kernel returned (`CLONE_PIDFD`).
    pub fn from_owned(fd: OwnedFd) -> Pidfd {
        Pidfd(fd)
    }

    /// Signals the process itself.
    pub fn signal(&self, signal: i32) -> io::Result<Delivery> {
        self.send(signal, 0)
    }

    /// Signals the process group this process leads (`pgid`, its pid), as the kernel allows (see
    /// the module doc).
    pub fn signal_group(&self, pgid: i32, signal: i32) -> io::Result<Delivery> {
        if GROUP_FLAG_REFUSED.load(Ordering::Relaxed) {
            return self.signal_group_as(GroupSignal::WhileUnreaped, pgid, signal);
        }
        match self.signal_group_as(GroupSignal::ByPidfd, pgid, signal) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                GROUP_FLAG_REFUSED.store(true, Ordering::Relaxed);
                log::debug!(
                    "this kernel has no PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9): groups are signalled while their leader is not reaped"
                );
                self.signal_group_as(GroupSignal::WhileUnreaped, pgid, signal)
            }
            result => result,
        }
    }

    fn signal_group_as(&self, how: GroupSignal, pgid: i32, signal: i32) -> io::Result<Delivery> {
        match how {
            GroupSignal::ByPidfd => self.send(signal, PIDFD_SIGNAL_PROCESS_GROUP),
            GroupSignal::WhileUnreaped => {
                let _held = reaper::hold();
                if self.send(0, 0)? == Delivery::Gone {
                    return Ok(Delivery::Gone); // reaped: the id may be anyone's now
                }
                // The leader is not reaped and cannot be until `_held` goes: `pgid` is still its.
                killpg(pgid, signal)
            }
        }
    }

    /// `pidfd_send_signal`; `ESRCH` (reaped, or an empty group) is `Gone`.
    fn send(&self, signal: i32, flags: libc::c_uint) -> io::Result<Delivery> {
        // SAFETY: pidfd_send_signal with a pidfd this value owns, no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        if rc == 0 {
            return Ok(Delivery::Sent);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(Delivery::Gone);
        }
        Err(e)
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Signals the process group `pgid` of one of recluster's children: through its pidfd if it has
/// one, else (no pidfds on this system) with `killpg`.
pub fn signal_group(pidfd: Option<&Pidfd>, pgid: i32, signal: i32) -> io::Result<Delivery> {
    match pidfd {
        Some(pidfd) => pidfd.signal_group(pgid, signal),
        None => killpg(pgid, signal),
    }
}

fn killpg(pgid: i32, signal: i32) -> io::Result<Delivery> {
    // SAFETY: killpg has no memory effects.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(Delivery::Sent);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(Delivery::Gone);
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const MODES: [GroupSignal; 2] = [GroupSignal::ByPidfd, GroupSignal::WhileUnreaped];

    /// A child in a process group of its own, and its pidfd, taken while the test still holds it
    /// unreaped (only `Child::wait` reaps it, by its pid).
    fn group_leader(command: &mut Command) -> (Child, Pidfd) {
        let child = command.process_group(0).spawn().unwrap();
        let pidfd = Pidfd::open(child.id() as i32).unwrap();
        (child, pidfd)
    }

    /// Whether this kernel refuses `PIDFD_SIGNAL_PROCESS_GROUP` (before Linux 6.9).
    fn refused(how: GroupSignal, result: &io::Result<Delivery>) -> bool {
        let refused = how == GroupSignal::ByPidfd
            && matches!(result, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
        if refused {
            eprintln!("PIDFD_SIGNAL_PROCESS_GROUP refused by this kernel: that mode is not tested");
        }
        refused
    }

    /// Gone, or a zombie its new parent has not reaped yet.
    fn ended(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s[s.rfind(')')? + 2..].chars().next());
            if matches!(state, None | Some('Z') | Some('X')) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_live_group_gets_the_signal_either_way() {
        for how in MODES {
            let (mut child, pidfd) = group_leader(Command::new("sleep").arg("30"));
            let pid = child.id() as i32;
            let result = pidfd.signal_group_as(how, pid, libc::SIGKILL);
            if refused(how, &result) {
                child.kill().unwrap();
                child.wait().unwrap();
                continue;
            }
            assert_eq!(result.unwrap(), Delivery::Sent, "{how:?}");
            assert_eq!(
                child.wait().unwrap().signal(),
                Some(libc::SIGKILL),
                "{how:?}"
            );
        }
    }

    /// `clone3` with `set_tid`: a child that gets exactly the pid `pid`, makes itself the leader
    /// of group `pid` (as a worker, a shell's job or a daemon does), says so on a pipe and waits to
    /// be killed. `Err` where the kernel refuses to choose pids (no CAP_SYS_ADMIN over this pid
    /// namespace, before Linux 5.5) or the pid is taken.
    fn process_with_pid(pid: i32) -> io::Result<i32> {
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        let mut pipe = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        let made = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(made, 0);
        let wanted = [pid as libc::pid_t];
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: wanted.as_ptr() as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 as fork (no CLONE_VM): the child runs on a copy of this memory and makes
        // only async-signal-safe calls below, never returning into the test.
        let got = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if got == 0 {
            // SAFETY: the child: setpgid, write and pause are async-signal-safe.
            unsafe {
                libc::setpgid(0, 0);
                libc::write(pipe[1], b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let result = if got < 0 {
            Err(io::Error::last_os_error())
        } else {
            let mut byte = 0u8;
            // SAFETY: close and read on the pipe's own descriptors, into a valid byte.
            unsafe {
                libc::close(pipe[1]);
                assert_eq!(libc::read(pipe[0], (&raw mut byte).cast(), 1), 1);
            }
            Ok(got as i32)
        };
        // SAFETY: closing the pipe this function made (the write end twice at worst: EBADF).
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        result
    }

    #[test]
    fn a_reaped_worker_whose_pid_and_group_id_went_to_another_process_is_never_signalled() {
        for _try in 0..5 {
            let (mut child, pidfd) = group_leader(Command::new("sleep").arg("30"));
            let pid = child.id() as i32;
            pidfd.signal(libc::SIGKILL).unwrap();
            child.wait().unwrap(); // reaped: the pid is free
            let reused = match process_with_pid(pid) {
                Ok(reused) => reused,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue, // taken meanwhile
                Err(e) => {
                    eprintln!("cannot give a process a chosen pid here ({e}): not tested");
                    return;
                }
            };
            assert_eq!(reused, pid);
            // What `killpg(pid)` would reach now: the other process's group.
            // SAFETY: signal 0 only checks that the group exists.
            let exists = unsafe { libc::killpg(pid, 0) };
            assert_eq!(exists, 0, "group {pid} is another's now");
            for how in MODES {
                let result = pidfd.signal_group_as(how, pid, libc::SIGKILL);
                if refused(how, &result) {
                    continue;
                }
                assert_eq!(result.unwrap(), Delivery::Gone, "{how:?}");
            }
            assert_eq!(
                signal_group(Some(&pidfd), pid, libc::SIGKILL).unwrap(),
                Delivery::Gone
            );
            assert_eq!(pidfd.signal(libc::SIGKILL).unwrap(), Delivery::Gone);
            let mut status = 0;
            // SAFETY: waitpid on this test's own child, without blocking.
            let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert_eq!(waited, 0, "the process that took pid {pid} was signalled");
            // SAFETY: killing and reaping this test's own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        panic!("pid kept being taken by other processes");
    }

    #[test]
    fn what_is_left_of_a_group_after_its_leader_is_reaped_is_signalled_by_pidfd_only() {
        // The leader starts a member of its group and exits at once.
        let (mut child, pidfd) = group_leader(
            Command::new("sh")
                .args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"])
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let member: i32 = line.trim().parse().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        // Without the flag, a reaped leader's group is left alone (its id could be anyone's).
        let result = pidfd.signal_group_as(GroupSignal::WhileUnreaped, pid, libc::SIGKILL);
        assert_eq!(result.unwrap(), Delivery::Gone);
        assert!(!ended_now(member), "the member was signalled");
        let result = pidfd.signal_group_as(GroupSignal::ByPidfd, pid, libc::SIGKILL);
        if refused(GroupSignal::ByPidfd, &result) {
            // SAFETY: killing the sleep this test started.
            unsafe { libc::kill(member, libc::SIGKILL) };
            return;
        }
        assert_eq!(result.unwrap(), Delivery::Sent);
        assert!(ended(member), "the member of the group got no SIGKILL");
    }

    fn ended_now(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s[s.rfind(')')? + 2..].chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X')
    }
}
