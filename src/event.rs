//! What the world tells the supervisor. Threads produce events; only the supervisor consumes them.

use crate::reaper::Exit;
use crate::signal::Sig;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A signal sent to recluster (never SIGCHLD, which the signal thread answers by reaping).
    Signal(Sig),
    /// Children that ended, and whether any child of recluster (worker or adopted) remains.
    Reaped {
        exits: Vec<Exit>,
        children_left: bool,
    },
    /// Messages wait on the workers' `NOTIFY_SOCKET`s: `WorkerSockets::take` has them (at most
    /// one such event waits at a time, however much the workers send).
    Notified,
    /// `--prefix`: every line of the worker `pid` has been written (its pipes are closed).
    OutputClosed { pid: i32 },
    /// A request on the control socket, from the client numbered `client`.
    Control {
        client: u64,
        request: crate::control::protocol::Request,
        frontend: crate::control::server::Frontend,
    },
    /// A control client went away before its request was answered in full.
    ControlGone { client: u64 },
}
