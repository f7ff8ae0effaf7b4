//! recluster's children that are not workers — orphans it adopted as subreaper or PID 1 — found
//! and signalled so that stopping the cluster leaves nothing running. Used only while stopping.
//!
//! The children are listed from `/proc/self/task/*/children` (each thread's own; an adopted orphan
//! is the child of whichever thread the kernel chose), else by scanning `/proc`. A child is
//! signalled through a pidfd taken while it is still recluster's child: the signal thread reaps
//! concurrently, and a pid reaped and reused in between is never signalled.

use std::fs;
use std::io;

use crate::process::pidfd::{Delivery, Pidfd};
use crate::process::signal::Sig;

/// Sends `signal` to each child of recluster for which `wanted` holds; returns how many got it.
pub fn signal_children(signal: Sig, mut wanted: impl FnMut(i32) -> bool) -> usize {
    let me = std::process::id() as i32;
    let mut sent = 0;
    for pid in children() {
        if !wanted(pid) {
            continue;
        }
        match child_pidfd(pid, me) {
            Ok(Some(pidfd)) => {
                if pidfd.signal(signal.number()).ok() == Some(Delivery::Sent) {
                    sent += 1;
                }
            }
            Ok(None) => {} // gone already
            Err(_) => {
                // No pidfd here (kernels before 5.3, or a seccomp profile that forbids it): the
                // best that can be done.
                // SAFETY: kill has no memory effects; a vanished process gives ESRCH.
                if unsafe { libc::kill(pid, signal.number()) } == 0 {
                    sent += 1;
                }
            }
        }
    }
    sent
}

/// The pids of recluster's children.
pub fn children() -> Vec<i32> {
    match children_from_tasks() {
        Ok(children) => children,
        Err(_) => children_by_scanning(std::process::id() as i32),
    }
}

/// Every thread's `children` file (needs CONFIG_PROC_CHILDREN, which distributions enable).
fn children_from_tasks() -> io::Result<Vec<i32>> {
    let mut children = Vec::new();
    for task in fs::read_dir("/proc/self/task")? {
        let text = fs::read_to_string(task?.path().join("children"))?;
        children.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Ok(children)
}

/// The pids whose parent is `parent`, from /proc/*/stat. Empty when /proc is not mounted.
fn children_by_scanning(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// A pidfd for `pid` if it is still a child of `parent` (checked once the pidfd holds it, so a
/// pid reaped and reused meanwhile is not taken for it); `None` if it is gone. An error where
/// this kernel or a seccomp profile gives no pidfd.
fn child_pidfd(pid: i32, parent: i32) -> io::Result<Option<Pidfd>> {
    match Pidfd::open(pid) {
        Ok(pidfd) => Ok((parent_of(pid) == Some(parent)).then_some(pidfd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parent pid from /proc/PID/stat (the field after the state, past the `(comm)` that may hold
/// spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    crate::process::procfs::stat(pid).map(|s| s.ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_signals_a_child_of_this_process_and_no_other() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(children().contains(&pid));
        assert!(children_by_scanning(std::process::id() as i32).contains(&pid));
        assert_eq!(signal_children(Sig::KILL, |p| p == pid), 1);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert_eq!(signal_children(Sig::KILL, |p| p == pid), 0, "reaped: gone");
    }
}
