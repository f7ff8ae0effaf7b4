//! What recluster's children inherit of its environment, workers and hooks alike: everything but
//! the variables addressed to recluster itself and those it sets for each worker. The variables
//! of `--env-file` go on top of it (`Spawner`), never one of those (`reserved`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Variables recluster sets itself for each worker: one inherited from recluster's own
/// environment (a recluster started by another one) would be a second, wrong value.
const SET_FOR_WORKERS: [&str; 7] = [
    "WORKER_ID",
    "WORKER_COUNT",
    "WORKER_GENERATION",
    "WORKER_GROUP",
    "RECLUSTER_PID",
    "WORKER_CPUS",
    "RECLUSTER_MSG_FD",
];

/// Variables that describe recluster's own relation to a service manager (systemd's socket
/// activation, sd_notify and watchdog), addressed to recluster alone — plus every `EINHORN_*`
/// (`EINHORN_FD_*`, `EINHORN_SOCK_PATH`, `EINHORN_MASTER_PID`, …) by prefix.
const ADDRESSED_TO_RECLUSTER: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// recluster's environment as its children inherit it — workers and hooks alike: without the
/// variables addressed to recluster by its own service manager (`ADDRESSED_TO_RECLUSTER`,
/// `EINHORN_*`) and those recluster sets for each worker. Values are passed byte for byte.
pub fn inherited_environment() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| passed_on(key))
        .collect()
}

/// Whether the variable `key` of recluster's environment reaches its children.
fn passed_on(key: &OsStr) -> bool {
    !reserved(key)
}

/// Whether recluster sets `key` for each worker itself, or it is addressed to recluster by its
/// service manager: never inherited, and an `--env-file` may not set it either (the worker
/// would get recluster's value, or a second one, never the file's).
pub fn reserved(key: &OsStr) -> bool {
    ADDRESSED_TO_RECLUSTER
        .iter()
        .chain(SET_FOR_WORKERS.iter())
        .any(|name| key == *name)
        || key.as_bytes().starts_with(b"EINHORN_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_inherit_nothing_addressed_to_recluster_nor_what_it_sets_itself() {
        for name in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "EINHORN_FD_COUNT",
            "EINHORN_FD_0",
            "EINHORN_SOCK_PATH",
            "WORKER_ID",
            "WORKER_GROUP",
            "RECLUSTER_MSG_FD",
        ] {
            assert!(!passed_on(OsStr::new(name)), "{name} is passed on");
        }
        for name in [
            "PATH",
            "HOME",
            "LISTEN_ADDR",
            "NOTIFY",
            "WATCHDOG",
            "EINHORN",
        ] {
            assert!(passed_on(OsStr::new(name)), "{name} is dropped");
        }
    }
}
