//! How a process ended, as `waitpid` reports it, and the exit code that stands for it
//! (its own code, or 128+n for signal n, as shells do).

use std::fmt;

use crate::process::signal::Sig;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProcessStatus {
    Exited(i32),
    Killed(Sig),
}

impl ProcessStatus {
    /// Decodes a raw `waitpid` status; `None` for stops and continues.
    pub fn from_wait_status(raw: i32) -> Option<ProcessStatus> {
        if libc::WIFEXITED(raw) {
            Some(ProcessStatus::Exited(libc::WEXITSTATUS(raw)))
        } else if libc::WIFSIGNALED(raw) {
            Sig::from_number(libc::WTERMSIG(raw)).map(ProcessStatus::Killed)
        } else {
            None
        }
    }

    pub fn success(self) -> bool {
        self == ProcessStatus::Exited(0)
    }

    /// The exit code a shell would show for this status.
    pub fn code(self) -> i32 {
        match self {
            ProcessStatus::Exited(code) => code,
            ProcessStatus::Killed(sig) => 128 + sig.number(),
        }
    }
}

impl fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessStatus::Exited(code) => write!(f, "exited with status {code}"),
            ProcessStatus::Killed(sig) => write!(f, "was killed by {sig}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_shell_convention() {
        assert_eq!(ProcessStatus::Exited(3).code(), 3);
        assert_eq!(ProcessStatus::Killed(Sig::KILL).code(), 137);
        assert_eq!(ProcessStatus::Killed(Sig::TERM).code(), 143);
    }
}
