//! How operators talk to a running recluster: `control` is the control socket and `recluster
//! ctl`, `admin` the HTTP endpoint (`--admin`); both serve from threads that run `reactor`'s loop
//! and turn requests into events for the supervisor. `request` is the vocabulary they (and the
//! message thread) share with the supervisor, and imports none of them.

pub mod admin;
pub mod control;
pub mod reactor;
pub mod request;
