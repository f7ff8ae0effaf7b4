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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
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
