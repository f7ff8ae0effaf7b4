//! The control socket and `recluster ctl`: a UNIX stream socket, readable and writable only by
//! recluster's own user (and root), speaking one JSON object per line. `location` decides where it
//! lives, binds it, and finds it again; `protocol` is the wire format both sides share; `server` is
//! the thread that accepts clients and turns their requests into events for the supervisor;
//! `replies` carries the supervisor's answers to it (and to the admin and message threads); `waits`
//! follows a request with `--wait` (and `events`) through the cluster's reports; `client` is
//! `recluster ctl`, which finds a socket through `discovery`, talks only to directories and
//! servers `trust` accepts and reads their answers through `answers` (bounded in size and time).

pub mod answers;
pub mod client;
pub mod discovery;
pub mod location;
pub mod protocol;
pub mod replies;
pub mod server;
pub mod trust;
pub mod waits;
