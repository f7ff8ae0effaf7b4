//! The one place that calls `waitpid`: `reap_children` collects every child that has exited —
//! workers and adopted orphans alike — with `waitpid(-1, WNOHANG)`, and says whether any child is
//! left. Only the signal thread calls it, on SIGCHLD; nothing else in recluster waits.

use nix::errno::Errno;

use crate::status::ProcessStatus;

/// One child that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: ProcessStatus,
}

/// Reaps every exited child; the flag says whether children remain (alive, or not yet exited).
pub fn reap_children() -> (Vec<Exit>, bool) {
    let mut exits = Vec::new();
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into a valid i32.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match pid {
            0 => return (exits, true),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return (exits, false), // ECHILD: no children at all
            pid => {
                if let Some(status) = ProcessStatus::from_wait_status(raw) {
                    exits.push(Exit { pid, status });
                }
            }
        }
    }
}
