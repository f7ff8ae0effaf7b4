//! `--watch`: files that change start a rolling reload. `ignore` says which names do not count
//! (`--watch-ignore` and the defaults), `tree` keeps the inotify watches of the watched paths and
//! tells which events are changes, `thread` waits for them (never polling), folds a burst into
//! one (`--watch-delay`) and tells the supervisor loop.

pub mod ignore;
pub mod thread;
pub mod tree;
