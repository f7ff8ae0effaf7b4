//! The channels between recluster and its workers besides signals. `notify` and `notify_dir` are
//! the sd_notify sockets (`--ready notify`, `--watchdog`); `messages` is the message channel
//! between workers (`RECLUSTER_MSG_FD`), whose peers `budget` limits; `output` carries the
//! workers' stdout and stderr, prefixed.

pub mod budget;
pub mod messages;
pub mod notify;
pub mod notify_dir;
pub mod output;
