//! The supervisor: `cluster` holds the state and the pure decisions, `action` the vocabulary of
//! effects, `run` the loop that feeds events in and carries actions out. `event` is what the other
//! threads tell it, `requests` how it answers the front ends, `report` and `snapshot` what it shows,
//! `hooks` the commands it runs on events (`--on`), `formation` the groups' counts, `reloading`
//! how a reload begins (the env files read again).

pub mod action;
pub mod cluster;
pub mod event;
pub mod formation;
pub mod hooks;
pub mod reloading;
pub mod report;
pub mod requests;
pub mod run;
pub mod snapshot;

pub use run::run;
