//! `--ready listening`: whether a process of a worker's process group owns a listening TCP
//! socket (on a given port, or any). Reads /proc: the socket inodes among each process's fds,
//! matched against the LISTEN entries of /proc/net/tcp and tcp6. Asked only while a worker is
//! still waiting to be ready.

use std::collections::HashSet;
use std::fs;

/// Whether the permission problem has been reported (once is enough).
static WARNED_DENIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when a process whose process group is `pgid` listens on `port` (any port for `None`).
pub fn group_listens(pgid: i32, port: Option<u16>) -> bool {
    let listening = listening_inodes(port);
    if listening.is_empty() {
        return false;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| crate::process::procfs::stat(pid).is_some_and(|s| s.pgrp == pgid))
        .any(|pid| {
            socket_inodes(pid)
                .iter()
                .any(|inode| listening.contains(inode))
        })
}

/// The inodes of TCP sockets in LISTEN state (on `port`, if given), IPv4 and IPv6.
fn listening_inodes(port: Option<u16>) -> HashSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| parse_listening(&text, port))
        .collect()
}

/// Rows of /proc/net/tcp: `sl local_address rem_address st ... inode`; LISTEN is state 0A.
fn parse_listening(table: &str, port: Option<u16>) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            // Cheap on tables of many thousand connections: skip non-LISTEN rows early.
            let mut fields = row.split_whitespace();
            let local = fields.nth(1)?;
            if fields.nth(1)? != "0A" {
                return None;
            }
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            if port.is_some_and(|p| p != local_port) {
                return None;
            }
            fields.nth(5)?.parse().ok()
        })
        .collect()
}

fn socket_inodes(pid: i32) -> Vec<u64> {
    let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !WARNED_DENIED.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                log::warn!(
                    "--ready listening cannot see the sockets of process {pid} (permission denied on /proc/{pid}/fd: it runs as another user?); such a worker is never seen ready: use --ready notify"
                );
            }
            return Vec::new();
        }
    };
    fds.filter_map(|fd| {
        let link = fs::read_link(fd.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listen_rows_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
   1: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(parse_listening(table, Some(3000)), [4242]);
        assert_eq!(parse_listening(table, None), [4242]);
        assert!(parse_listening(table, Some(80)).is_empty());
    }

    #[test]
    fn sees_a_listener_of_this_process_group() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: a plain query.
        let pgid = unsafe { libc::getpgrp() };
        assert!(group_listens(pgid, Some(port)));
        assert!(group_listens(pgid, None));
        drop(listener);
        assert!(!group_listens(pgid, Some(port)));
    }
}
