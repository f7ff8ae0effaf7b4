//! How operators talk to a running recluster: `control` is the control socket and `recluster
//! ctl`, `admin` the HTTP endpoint (`--admin`); both serve from threads that run `reactor`'s loop
//! and turn requests into events for the supervisor.

pub mod admin;
pub mod control;
pub mod reactor;
