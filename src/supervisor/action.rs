//! What the cluster decides to do. `run` carries these out; the cluster never touches a process.

use crate::process::signal::Sig;
use crate::process::spawn::WorkerIdentity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker for this ticket — unless `Cluster::is_current` says it went stale since
    /// (the stop began, the slot was scaled away, the reload was abandoned). The result goes back
    /// through `Cluster::spawned` or `spawn_failed`.
    Spawn(Ticket),
    /// Per-worker sockets: a scaled-down slot's worker has been stopped. Its sockets stay
    /// bound where steering keeps connections away from them; where the kernel refused steering,
    /// they are closed (what waits in their queues is reset, or moved where
    /// `net.ipv4.tcp_migrate_req` is 1), or new connections would go on arriving there.
    ReleaseSlot(u32),
    /// Per-worker sockets: how many connections wait in slot `slot`'s queue, where its worker
    /// `pid` drains it before being stopped? The answer goes back through `Cluster::on_queue`.
    CheckQueue { slot: u32, pid: i32 },
    /// Send a signal to a worker's process group (its pid).
    SignalGroup { pgid: i32, signal: Sig },
    /// Send a signal, once, to each child of recluster that is not one of `workers` (adopted orphans).
    SignalOrphans { signal: Sig, workers: Vec<i32> },
    /// SIGKILL every group in `groups` and every child of recluster.
    KillAll { groups: Vec<i32> },
    /// Stop recluster itself (after forwarding SIGTSTP), as a shell's job control expects.
    SuspendSelf,
    /// `--ready listening`: does the process group `pgid` listen (on `port`)? The answer goes back
    /// through `Cluster::on_probed`.
    ProbeListening { pgid: i32, port: Option<u16> },
    /// Tell recluster's own service manager (`NOTIFY_SOCKET`), if it has one.
    NotifyManager(String),
    /// Tell it `RELOADING=1` with `MONOTONIC_USEC=` (the clock is read when it is sent), and this
    /// `STATUS=`.
    NotifyReloading(String),
    /// `--max-memory`: how much memory each of these process groups uses? The answer goes back
    /// through `Cluster::on_memory`.
    SampleMemory { pids: Vec<i32> },
    /// End recluster with this status.
    Exit(i32),
}

/// A decision to start one worker, issued by the cluster when it decides: which slot, in which
/// role, of which generation, and a serial number no other ticket has. Carried out later, it is
/// recognised as stale instead of guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub identity: WorkerIdentity,
    pub role: Role,
    pub serial: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The slot's own worker (first start, respawn, scale-up).
    Slot,
    /// A new generation's worker started beside the slot's own during a reload.
    Replacement,
}
