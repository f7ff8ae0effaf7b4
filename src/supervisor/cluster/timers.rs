//! The cluster's deadlines, so that finding the next one and those that are due costs O(log n),
//! whatever the number of workers. Most live in a min-heap whose entries are never removed when a
//! deadline changes: each names what it belongs to, and the cluster checks when it pops one
//! whether that still holds the deadline (a lazy heap); whoever sets such a deadline pushes it.
//! A deadline a worker can move at will (its watchdog: every `WATCHDOG=1` moves it) is `set`
//! instead: one entry per key, replaced in place, so no number of pings grows the timers.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Instant;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Key {
    /// A slot's scheduled (re)spawn.
    Slot(u32),
    /// A worker's readiness or kill deadline, by pid.
    Worker(i32),
    /// A ready worker's watchdog (`--watchdog`), by pid: `set`, never pushed.
    Watchdog(i32),
    /// The next memory sample (`--max-memory`).
    Memory,
    /// A slot's worker is due to be replaced for its age (`--max-age`), by slot.
    Recycle(u32),
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
    /// The deadlines that are `set`: at most one per key, in order, and each key's.
    set: BTreeSet<(Instant, Key)>,
    set_at: HashMap<Key, Instant>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, key: Key) {
        self.heap.push(Reverse((at, key)));
    }

    /// Makes `at` the one deadline of `key`, replacing the one it had.
    pub fn set(&mut self, at: Instant, key: Key) {
        if let Some(old) = self.set_at.insert(key, at) {
            self.set.remove(&(old, key));
        }
        self.set.insert((at, key));
    }

    /// Drops the deadline `key` was `set` to, if any.
    pub fn cancel(&mut self, key: Key) {
        if let Some(old) = self.set_at.remove(&key) {
            self.set.remove(&(old, key));
        }
    }

    /// The earliest entry, still in the timers.
    pub fn peek(&self) -> Option<(Instant, Key)> {
        let pushed = self.heap.peek().map(|Reverse(entry)| *entry);
        let set = self.set.first().copied();
        pushed.into_iter().chain(set).min()
    }

    pub fn pop(&mut self) -> Option<(Instant, Key)> {
        let earliest = self.peek()?;
        if self.set.first() == Some(&earliest) {
            self.set.pop_first();
            self.set_at.remove(&earliest.1);
        } else {
            self.heap.pop();
        }
        Some(earliest)
    }

    pub fn clear(&mut self) {
        self.heap.clear();
        self.set.clear();
        self.set_at.clear();
    }

    /// How many entries the timers hold (stale ones of the heap included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len() + self.set.len()
    }
}
