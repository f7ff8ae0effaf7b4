//! The exit codes of recluster itself (CONTRACT.md, "Exit status"). A worker's own status passes
//! through as `ProcessStatus::code`.

/// The cluster ended and every worker ended cleanly.
pub const SUCCESS: i32 = 0;
/// recluster itself failed at run time (the message says what).
pub const FAILURE: i32 = 1;
/// A bad flag, a bad value or a missing command.
pub const USAGE: i32 = 2;
/// The command exists but cannot be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;
