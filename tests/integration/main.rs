//! One integration-test binary: every module starts the real `recluster` with the example worker
//! and asserts on what can be observed — lines printed, signals received, pids alive, exit status.

mod harness;

mod admin;
mod cgroups;
mod control;
mod day_one;
mod docs;
mod env_file;
mod exit_policy;
mod exit_status;
mod groups;
mod hooks;
mod interop;
mod limits;
mod logging;
mod messages;
mod newcomer;
mod output;
mod pinning;
mod readiness;
mod reaping;
mod recycling;
mod reload;
mod respawn;
mod restart_count;
mod robustness;
mod signals;
mod sockets;
mod static_binary;
mod steering;
mod stop_delay;
mod stopping;
mod trust_admin;
mod trust_ctl;
mod trust_env_file;
mod trust_floods;
mod trust_hook_env;
mod trust_notify;
mod trust_pids;
mod trust_spawn;
mod trust_watch;
mod watching;
mod workers;
