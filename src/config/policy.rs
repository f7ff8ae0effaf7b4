//! The plain vocabulary of a configuration that the command line (`cli`), the validated `Config`
//! and the rest of recluster (the cluster's policy above all) share: modes as enums and the limits.
//! It imports nothing of theirs, so each of them can depend on it.

use clap::ValueEnum;

/// The most workers one recluster runs (far above any machine's cores; it bounds memory).
pub const MAX_WORKERS: u32 = 65536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyMode {
    Started,
    Notify,
    /// A listening TCP socket in the worker's process group, on this port or any.
    Listening(Option<u16>),
}

/// How `--plan` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

/// `--exit-on`: when the cluster ends by itself because of its workers' ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitOn {
    /// The first slot's worker to end ends the cluster, with its status.
    AnyExit,
    /// A crash-loop give-up (`--max-restarts`) ends the cluster (with Procfile groups and
    /// `--critical`: a give-up in a critical group; elsewhere it stops that group).
    GiveUp,
    /// Fewer than K slots can run (a give-up stops its slot, or its group, only).
    Below(u32),
}

impl std::fmt::Display for ExitOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitOn::AnyExit => f.write_str("any-exit"),
            ExitOn::GiveUp => f.write_str("give-up"),
            ExitOn::Below(k) => write!(f, "below:{k}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
}

/// `--steer`: how a new connection picks among the per-worker sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Steer {
    /// By the connection's hash (its addresses and ports): spread evenly.
    #[default]
    Hash,
    /// By the client's address (not its port): one client, one worker, while that worker lives.
    Client,
    /// To the ready worker pinned to the CPU that handles the connection (`--pin`).
    Cpu,
}

impl Steer {
    pub fn name(self) -> &'static str {
        match self {
            Steer::Hash => "hash",
            Steer::Client => "client",
            Steer::Cpu => "cpu",
        }
    }
}

/// `--cgroups`: whether each worker runs in a cgroup of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CgroupMode {
    /// Where recluster may create cgroups; today's behaviour (said once) where it may not.
    Auto,
    /// Never.
    Off,
    /// Always: a cgroup recluster cannot create is an error naming the path.
    On,
}
