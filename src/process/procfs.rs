//! The few fields recluster reads from `/proc/PID/stat`, parsed in one place: past the `(comm)`
//! that may hold spaces and parentheses, by proc(5)'s numbering.

use std::fs;

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub pgrp: i32,
    /// Resident set size, in pages.
    pub rss_pages: u64,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
    /// Virtual memory size, in bytes.
    pub vsize_bytes: u64,
}

/// The stat of `pid`, or `None` when it is gone (or /proc is not mounted).
pub fn stat(pid: i32) -> Option<Stat> {
    parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// After `(comm)`: state is field 3, ppid 4, pgrp 5, utime 14, stime 15, starttime 22, vsize 23,
/// rss 24.
pub fn parse(stat: &str) -> Option<Stat> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let number = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        rss_pages: number(21),
        cpu_ticks: number(11) + number(12),
        start_ticks: number(19),
        vsize_bytes: number(20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_past_an_awkward_command_name() {
        let stat = "42 (a) b (c) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 99 12345678 2048 18446744073709551615";
        assert_eq!(
            parse(stat),
            Some(Stat {
                ppid: 7,
                pgrp: 42,
                rss_pages: 2048,
                cpu_ticks: 3,
                start_ticks: 99,
                vsize_bytes: 12345678,
            })
        );
        assert_eq!(
            parse("42 (a) S 7 42").map(|s| s.pgrp),
            Some(42),
            "short lines: no rss"
        );
    }
}
