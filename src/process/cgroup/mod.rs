//! Per-worker cgroups (`--cgroups`): each worker in a group of its own, so that its whole tree
//! can be killed and its usage read from the group. `hierarchy` finds the mounted hierarchies and
//! recluster's place in them (pure parsing); `tree` creates, joins, kills and removes the groups;
//! `threshold` wakes recluster when a worker's memory crosses `--max-memory` (a v1
//! threshold, or v2's `memory.high` seen in `memory.events`).

pub mod hierarchy;
pub mod threshold;
pub mod tree;
