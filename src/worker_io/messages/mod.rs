//! Messages between workers, with no broker. Every worker inherits one end of a UNIX stream socket
//! pair (its fd number in `RECLUSTER_MSG_FD`); recluster holds the other end in a thread of its
//! own, which routes what each worker sends. A stream socket, one JSON object per line, because
//! every runtime can use it as it is (Node's `net.Socket({fd})` refuses a `SOCK_SEQPACKET` one):
//!
//! - a message is one line holding one JSON object, `{"to": TARGET, "data": ANY}`, at most
//!   `MAX_MESSAGE` bytes;
//!   TARGET is `all`, `others`, `worker:ID`, `group:NAME`, `worker:GROUP.ID` or `recluster`;
//! - the targets receive `{"from": {"id": ID, "group": null, "pid": PID}, "data": ANY}`, the `from`
//!   stamped here from the socket the message came in on (whatever the sender wrote is ignored);
//! - `{"to": "recluster", "data": {"cmd": "info"}}` is answered with the cluster's read-only info;
//! - a mistake is answered with `{"from": {"recluster": true}, "error": "…"}`;
//! - `recluster ctl send` delivers from outside, with `"from": {"ctl": true}`.
//!
//! Bounded: what waits for a worker beyond its socket's buffer is at most `QUEUE_BYTES`; a message
//! that does not fit is dropped whole (never cut) and counted for that worker (shown in status and
//! metrics), so a worker that does not read never blocks recluster or the senders. What a worker
//! sends is bounded too, so that no worker can grow recluster or starve the others:
//! - each wake-up reads at most `READ_TURN` bytes from one worker (and stops once what it read
//!   went to `TURN_DELIVERIES` workers), so every worker gets its turn;
//! - each worker has a budget (`MESSAGES_PER_SECOND`, `BYTES_PER_SECOND`, see `budget`); one
//!   that spends it is not read again until it has earned it back: its writes wait in its
//!   socket (the kernel's buffer), nothing is lost and nothing piles up here;
//! - a worker has at most one `info` waiting: another one is answered with the error "busy" (so
//!   each request gets exactly one line back); and at most one question is with the supervisor
//!   at a time, whose answer (one snapshot, written once) serves every worker that asked
//!   meanwhile, so a flood from every worker costs what one costs;
//! - the thread never waits for the supervisor: an `info` that finds the event channel full is
//!   answered "busy" too.
//!
//! What is refused is counted by reason (`Counters`, in status and metrics). The sockets
//! live in the thread's own descriptor table (`fd_table`), handed over with `SCM_RIGHTS`, so the
//! spawning thread never holds one per worker.
//!
//! In three files: `handle` (the spawning side: `Messages`, `Pair`, `Courier`), which starts
//! `thread` (the routing thread: reading, budgets, queues, `info`); both use `wire` (what they
//! share: a worker's line (`parse`), the control socket's records, the counters).

mod handle;
mod thread;
mod wire;

pub use handle::{Courier, Messages, Pair};
pub use thread::{BYTES_PER_SECOND, MESSAGES_PER_SECOND};
pub use wire::{Counters, Drops, MAX_MESSAGE, parse};
