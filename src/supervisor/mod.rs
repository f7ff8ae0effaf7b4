//! The supervisor: `cluster` holds the state and the pure decisions, `action` the vocabulary of
//! effects, `run` the loop that feeds events in and carries actions out.

pub mod action;
pub mod cluster;
pub mod formation;
pub mod report;
pub mod requests;
pub mod run;

pub use run::run;
