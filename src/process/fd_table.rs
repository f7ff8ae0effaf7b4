//! A descriptor table of a thread's own. A thread that holds one descriptor per worker (the
//! notify sockets, the message sockets) unshares the process's table (`CLONE_FILES`) and keeps
//! only what it needs: recluster's main thread, which spawns every worker, then holds none of
//! those descriptors, so a spawn does not copy thousands of them and an exec does not close them
//! (that made a start of N workers cost O(N²)). Where `unshare` is forbidden (Docker's and
//! Kubernetes' default seccomp profiles allow it only with CAP_SYS_ADMIN), the thread shares the
//! process's table: everything works, and each spawn costs what it did before.

use std::io;
use std::os::fd::RawFd;

/// Makes the calling thread's table its own (if `private` and allowed), closing every copy but 0–2
/// and `keep`. `who` names the thread in the log. Returns whether the table is private.
pub fn make_private(keep: &[RawFd], private: bool, who: &str) -> bool {
    let unshared = if private {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES)
    } else {
        Err(nix::errno::Errno::ENOSYS)
    };
    match unshared {
        Ok(()) => {
            if let Err(e) = close_copies(keep) {
                log::debug!("the {who} thread could not close its copies of descriptors: {e}");
            }
            true
        }
        Err(e) => {
            log::debug!(
                "the {who} thread shares recluster's descriptor table (unshare: {e}); every spawn then copies one descriptor per worker"
            );
            false
        }
    }
}

/// In a private table, a copy of the process's: closes every copy from 3 up but `keep`, so that
/// a descriptor recluster closes is not held open here. Only ever called after a successful
/// unshare.
fn close_copies(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut first = 3u32;
    let mut ranges = Vec::new();
    for &fd in &keep {
        if fd >= first {
            if fd > first {
                ranges.push((first, fd - 1));
            }
            first = fd + 1;
        }
    }
    ranges.push((first, u32::MAX));
    for (first, last) in ranges {
        // SAFETY: close_range on this thread's own, private table.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } != 0 {
            // Kernels before 5.9: close each one listed (this thread's table, not the process's).
            let open: Vec<u32> = std::fs::read_dir("/proc/thread-self/fd")?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| (first..=last).contains(fd))
                .collect();
            for fd in open {
                // SAFETY: closing a copy in this thread's private table.
                unsafe { libc::close(fd as RawFd) };
            }
        }
    }
    Ok(())
}
