//! The listening sockets workers share, and how a connection reaches one of them. `listen` parses
//! the `--listen` addresses; `socket` binds them (shared, or one per worker with `SO_REUSEPORT`);
//! `steering` decides which worker's socket a connection is steered to; `listening` checks that a
//! worker listens (`--ready listening`); `socket_file` owns the unix sockets recluster binds at a
//! path and removes them.

pub mod listen;
pub mod listening;
pub mod socket;
pub mod socket_file;
pub mod steering;
