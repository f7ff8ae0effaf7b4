//! One integration-test binary: every module starts the real `recluster` with the example worker
//! and asserts on what can be observed — lines printed, signals received, pids alive, exit status.

mod harness;

mod admin;
mod control;
mod docs;
mod exit_status;
mod groups;
mod hooks;
mod interop;
mod limits;
mod logging;
mod messages;
mod output;
mod pinning;
mod readiness;
mod reaping;
mod reload;
mod respawn;
mod robustness;
mod signals;
mod sockets;
mod stopping;
mod trust_admin;
mod workers;
