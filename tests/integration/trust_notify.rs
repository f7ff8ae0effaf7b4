//! The notify sockets as a hostile worker sees them (`examples/notify_attacker.rs`): a worker under
//! `--user nobody` racing symlinks in and around its notify directory must never make root chown
//! a file or bind and unlink in a directory of its choosing (nor, moving the application's
//! directory away, make root remove the control and admin sockets elsewhere at exit); a worker
//! flooding `WATCHDOG_USEC=` or
//! `STATUS=` must not grow recluster nor keep `ctl status` from answering. Each run is bounded in
//! time, and recluster is killed if its memory passes `RSS_KILL`, so a regression cannot take the
//! machine down.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Launch, Scratch, recluster_bin};

/// Past this, the test kills recluster (a flood that grows it would otherwise go on).
const RSS_KILL: u64 = 64 << 20;

fn attacker_bin() -> PathBuf {
    let path = recluster_bin()
        .parent()
        .unwrap()
        .join("examples/notify_attacker");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples`",
        path.display()
    );
    path
}

fn is_root() -> bool {
    // SAFETY: geteuid has no memory effects.
    unsafe { libc::geteuid() == 0 }
}

/// A directory's modification time: it changes whenever a name is created or removed in it.
fn changed_at(dir: &Path) -> (i64, i64) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    (meta.mtime(), meta.mtime_nsec())
}

#[test]
fn a_worker_swapping_symlinks_around_its_notify_socket_never_makes_root_chown_or_bind_elsewhere() {
    if !is_root() {
        return; // --user needs root
    }
    let scratch = Scratch::new("trust-notify-race", 0o755);
    // Where recluster makes the notify directory: world-writable and sticky, as /tmp.
    let base = scratch.dir("base", 0o1777);
    // Root's own files, which the worker must not reach.
    let keep = scratch.dir("keep", 0o755);
    let target = keep.join("target");
    std::fs::write(&target, "root's file\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bait = keep.join("bait");
    std::fs::create_dir(&bait).unwrap();
    let bait_before = changed_at(&bait);
    let attacker = attacker_bin();
    let args = [
        "-n",
        "4",
        "--user",
        "nobody",
        "--ready",
        "notify",
        "--restart-delay",
        "1ms",
        "--restart-max-delay",
        "5ms",
        "--",
    ];
    let mut launch = Launch::new(args.iter().map(|a| a.to_string()).chain([
        attacker.display().to_string(),
        "race".to_string(),
        target.display().to_string(),
        bait.display().to_string(),
        "15".to_string(),
    ]))
    .env("TMPDIR", &base);
    launch.command().env_remove("XDG_RUNTIME_DIR");
    let mut cluster = launch.start();
    let outcome = cluster.expect("the attack to end", |l| {
        l.is_worker("attack") && (l.text == "attack done")
    });
    let lines: Vec<String> = cluster
        .seen(|l| l.is_worker("attack"))
        .iter()
        .map(|l| l.text.clone())
        .collect();
    let meta = std::fs::symlink_metadata(&target).unwrap();
    let bait_after = changed_at(&bait);
    let in_bait = std::fs::read_dir(&bait).unwrap().count();
    cluster.send(libc::SIGTERM);
    cluster.finish();
    assert_eq!(outcome.text, "attack done");
    let mut broken = Vec::new();
    if (meta.uid(), meta.gid(), meta.mode() & 0o7777) != (0, 0, 0o644) {
        broken.push(format!(
            "root's file became {}:{} mode {:04o}",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        ));
    }
    if (bait_after, in_bait) != (bait_before, 0) {
        broken.push(format!(
            "root created or removed names in the worker's chosen directory ({in_bait} there now)"
        ));
    }
    if !lines.iter().any(|l| l.starts_with("attack not-moved")) {
        broken.push("the worker moved its notify directory away".to_string());
    }
    assert!(broken.is_empty(), "{broken:?}, attacker said {lines:?}");
}

#[test]
fn a_worker_moving_the_socket_directory_away_never_makes_root_unlink_in_the_one_it_chose() {
    if !is_root() {
        return; // --user needs root
    }
    let scratch = Scratch::new("trust-socket-paths", 0o755);
    // The application's directory, its user's: root binds the control and admin sockets there.
    let shared = scratch.dir("shared", 0o755);
    let app = shared.join("app");
    std::fs::create_dir(&app).unwrap();
    for dir in [&shared, &app] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let bait = scratch.dir("bait", 0o755);
    for name in ["c.sock", "a.sock"] {
        std::fs::write(bait.join(name), "root's file\n").unwrap();
    }
    let control = app.join("c.sock").display().to_string();
    let admin = format!("unix:{}", app.join("a.sock").display());
    let swap = format!(
        "cd {} && mv app moved && ln -s {} app && echo swapped && exec sleep 1000",
        shared.display(),
        bait.display()
    );
    let args = [
        "-n",
        "1",
        "--user",
        "nobody",
        "--control",
        &control,
        "--admin",
        &admin,
        "--",
        "sh",
        "-c",
        &swap,
    ];
    let mut cluster = Launch::new(args).start();
    cluster.expect("the worker's swap", |l| l.is_worker("swapped"));
    cluster.send(libc::SIGTERM);
    cluster.finish();
    for name in ["c.sock", "a.sock"] {
        assert_eq!(
            std::fs::read_to_string(bait.join(name)).ok().as_deref(),
            Some("root's file\n"),
            "root removed {name} in the directory the worker chose"
        );
        assert!(
            !shared.join("moved").join(name).exists(),
            "{name} is removed where it was bound"
        );
    }
}

/// recluster's resident memory, from /proc.
fn rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// How recluster fared while its worker flooded: its largest RSS, and the slowest `ctl status`.
struct Fared {
    idle: u64,
    peak: u64,
    slowest: Duration,
    answers: usize,
}

/// Runs recluster with one worker flooding `what` for FLOOD, and watches it: RSS every 50 ms
/// (killing recluster past `RSS_KILL`) and `ctl status` answered all along.
fn flood(what: &str) -> Fared {
    const FLOOD: &str = "6";
    let attacker = attacker_bin().display().to_string();
    let args = [
        "-n",
        "2",
        "--ready",
        "notify",
        "--watchdog",
        "60s",
        "--",
        &attacker,
        "flood",
        what,
        FLOOD,
    ];
    let mut cluster = Launch::new(args).start();
    cluster.expect_log("all 2 workers are ready");
    let idle = rss(cluster.pid).unwrap();
    cluster.expect("the flood", |l| l.text == "attack flooding");
    let started = Instant::now();
    let mut fared = Fared {
        idle,
        peak: idle,
        slowest: Duration::ZERO,
        answers: 0,
    };
    let pid = cluster.pid;
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    // The watchdog on recluster's memory: samples every 50 ms, kills it past the bound.
    let watch = std::thread::spawn(move || {
        let mut peak = 0;
        while stopped.recv_timeout(Duration::from_millis(50)).is_err() {
            let Some(now) = rss(pid) else { break };
            peak = peak.max(now);
            if now > RSS_KILL {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
        }
        peak
    });
    while started.elapsed() < Duration::from_secs(5) {
        let asked = Instant::now();
        let (code, _, _) = crate::harness::ctl(pid, &["status", "--json"]);
        if code != 0 {
            break;
        }
        fared.answers += 1;
        fared.slowest = fared.slowest.max(asked.elapsed());
    }
    let _ = stop.send(());
    fared.peak = fared.peak.max(watch.join().unwrap());
    cluster.send(libc::SIGTERM);
    cluster.finish();
    fared
}

/// How much a flood may add to recluster's idle RSS (about 8 MiB in a debug build, 3 in a
/// release one): the datagrams in flight are the kernel's, recluster holds one pending message per
/// worker (a `STATUS=` of at most 256 bytes) and one watchdog deadline, so what remains is the
/// allocator's slack. Before the fix, a queue entry per datagram grew it by 33 MiB (`STATUS=`)
/// and past the 64 MiB kill bound (`WATCHDOG_USEC=`) within the 5 s measured.
const RSS_GROWTH: u64 = 4 << 20;

fn assert_fared(what: &str, fared: &Fared) {
    eprintln!(
        "{what} flood: RSS {} KiB idle, {} KiB at most; ctl status answered {} times, the slowest in {:?}",
        fared.idle >> 10,
        fared.peak >> 10,
        fared.answers,
        fared.slowest
    );
    assert!(
        fared.peak <= fared.idle + RSS_GROWTH,
        "{what} flood: recluster grew from {} KiB to {} KiB",
        fared.idle >> 10,
        fared.peak >> 10
    );
    assert!(
        fared.answers >= 3 && fared.slowest < Duration::from_secs(2),
        "{what} flood: ctl status answered {} times, the slowest in {:?}",
        fared.answers,
        fared.slowest
    );
}

#[test]
fn a_worker_flooding_watchdog_usec_neither_grows_recluster_nor_delays_ctl_status() {
    let fared = flood("watchdog");
    assert_fared("WATCHDOG_USEC=", &fared);
}

#[test]
fn a_worker_flooding_status_neither_grows_recluster_nor_delays_ctl_status() {
    let fared = flood("status");
    assert_fared("STATUS=", &fared);
}
