//! The cluster's deadlines in one min-heap, so that finding the next one and those that are due
//! costs O(log n), whatever the number of workers. Entries are never removed when a deadline
//! changes: each names what it belongs to, and the cluster checks when it pops one whether that
//! still holds the deadline (a lazy heap). Whoever sets a deadline pushes it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    /// A slot's scheduled (re)spawn.
    Slot(u32),
    /// A worker's readiness or kill deadline, by pid.
    Worker(i32),
    /// A ready worker's watchdog (`--watchdog`), by pid.
    Watchdog(i32),
    /// The next memory sample (`--max-memory`).
    Memory,
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, key: Key) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry, still in the heap.
    pub fn peek(&self) -> Option<(Instant, Key)> {
        self.heap.peek().map(|Reverse(entry)| *entry)
    }

    pub fn pop(&mut self) -> Option<(Instant, Key)> {
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }
}
