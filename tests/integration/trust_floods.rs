//! Workers that flood recluster, written as the attacker would (tests/programs/flood.py): `info`
//! requests in a loop, messages to every other worker, output without end, and a stderr nobody
//! reads. recluster's resident memory is watched through /proc during each flood and recluster
//! is killed past `KILL_AT`, so a regression fails the test instead of taking the machine down.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, Launch, recluster_bin};

/// recluster is killed if its resident memory passes this.
const KILL_AT: u64 = 64 * 1024 * 1024;
/// What a flood may add to recluster's resident memory, over what it used idle.
const MAY_GROW: u64 = 4 * 1024 * 1024;
/// How long `ctl status` may take during a flood (a loaded 2-core machine included).
const CTL_LIMIT: Duration = Duration::from_secs(2);
/// How long each flood runs.
const FLOOD: Duration = Duration::from_secs(3);

fn flood_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/flood.py").to_string()
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Watches recluster's resident memory until dropped: the highest seen, and SIGKILL past
/// `KILL_AT`.
struct MemoryGuard {
    peak: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl MemoryGuard {
    fn watch(pid: i32) -> MemoryGuard {
        let peak = Arc::new(AtomicU64::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, k, s) = (peak.clone(), killed.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(bytes) = rss(pid) else { return };
                p.fetch_max(bytes, Ordering::Relaxed);
                if bytes > KILL_AT {
                    k.store(true, Ordering::Relaxed);
                    // SAFETY: kill has no memory effects; the pid is the recluster we started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        MemoryGuard { peak, killed, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `recluster ctl --pid PID ARGS`, killed after `limit`: its exit code (None if it was
/// killed) and how long it took.
fn timed_ctl(pid: i32, args: &[&str], limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(recluster_bin())
        .args(["ctl", "--pid", &pid.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run recluster ctl");
    let deadline = started + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for ctl") {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out);
            return (status.code(), out, started.elapsed());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new(), started.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Asks `ctl status` every 200 ms for `FLOOD`; the slowest answer (`CTL_LIMIT` plus a little
/// if one never came).
fn status_latency_during_flood(pid: i32) -> Duration {
    let end = Instant::now() + FLOOD;
    let mut slowest = Duration::ZERO;
    while Instant::now() < end {
        let (code, _, took) = timed_ctl(pid, &["status"], CTL_LIMIT * 2);
        slowest = slowest.max(match code {
            Some(0) => took,
            _ => CTL_LIMIT * 2,
        });
        thread::sleep(Duration::from_millis(200));
    }
    slowest
}

/// CLOCK_MONOTONIC in ms, as flood.py's `t_ms`.
fn monotonic_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// The first `stats` line the flooding worker printed after now.
fn stats_now(cluster: &mut Cluster) -> crate::harness::Line {
    let now = monotonic_ms();
    cluster.expect("a stats line from now", |l| {
        l.kind() == "stats" && l.field("t_ms").and_then(|t| t.parse::<u64>().ok()) >= Some(now)
    })
}

fn field(line: &crate::harness::Line, key: &str) -> u64 {
    line.field(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Starts `recluster ARGS -- python3 flood.py ROLE` and waits for its `n` workers.
fn start(args: &[&str], role: &str, n: usize) -> Cluster {
    let flood = flood_py();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "python3", &flood, role]);
    let mut cluster = Launch::new(all).start();
    for _ in 0..n {
        cluster.expect("a flooding worker ready", |l| l.kind() == "ready");
    }
    cluster
}

/// Notes recluster's idle memory, starts watching it, and tells the workers `to` to begin
/// (`{"go":1}` through `ctl send`).
fn start_the_flood(cluster: &Cluster, to: &str) -> (u64, MemoryGuard) {
    let idle = rss(cluster.pid).expect("recluster's VmRSS");
    let guard = MemoryGuard::watch(cluster.pid);
    let (code, _, _) = timed_ctl(
        cluster.pid,
        &["send", to, r#"{"go":1}"#],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "ctl send go");
    (idle, guard)
}

#[test]
fn an_info_flood_from_a_worker_neither_grows_recluster_nor_slows_ctl() {
    let mut cluster = start(&["-n", "2"], "info", 2);
    let (idle, guard) = start_the_flood(&cluster, "worker:0");
    cluster.expect("the flood under way", |l| {
        l.kind() == "stats" && l.field("sent").is_some_and(|s| s != "0")
    });
    let slowest = status_latency_during_flood(cluster.pid);
    let peak = guard.peak();
    assert!(
        !guard.killed(),
        "recluster passed {KILL_AT} bytes and was killed (idle {idle})"
    );
    let status = crate::harness::ctl_status(cluster.pid);
    let stats = stats_now(&mut cluster);
    let (sent, answers, busy) = (
        field(&stats, "sent"),
        field(&stats, "answers"),
        field(&stats, "busy"),
    );
    eprintln!(
        "info flood: idle {idle} B, peak {peak} B, slowest ctl status {slowest:?}, sent {sent}, answers {answers}, busy {busy}"
    );
    assert!(
        peak <= idle + MAY_GROW,
        "recluster grew from {idle} to {peak} bytes under the flood"
    );
    assert!(slowest < CTL_LIMIT, "ctl status took {slowest:?}");
    // Answered too: an answer reaches it, or, when its own flood of "busy" lines has filled what
    // recluster holds for it (a worker that reads slowly: this Python one under load), the answer
    // is dropped and counted for it, never held without bound.
    let dropped = status["workers"][0]["messages_dropped"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        answers > 0 || dropped > 0,
        "the flooding worker was neither answered nor counted as losing answers: {}",
        status["workers"][0]
    );
    let refused = &status["cluster"]["messages"]["busy"];
    assert!(
        refused.as_u64().is_some_and(|b| b > 0),
        "busy refusals counted: {}",
        status["cluster"]
    );
    cluster.send(libc::SIGKILL);
}

#[test]
fn an_info_flood_from_every_worker_costs_one_snapshot_not_one_per_worker() {
    // 200 workers, each a shell writing `info` requests without end and reading nothing: with a
    // snapshot of all 200 per waiting request, recluster grew by tens of MiB.
    let flood = r#"
        read go <&"$RECLUSTER_MSG_FD"
        while :; do printf '{"to":"recluster","data":{"cmd":"info"}}\n'; done >&"$RECLUSTER_MSG_FD"
    "#;
    let mut cluster = Launch::new(["-n", "200", "--", "sh", "-c", flood]).start();
    cluster.expect_log("all 200 workers are ready");
    let (idle, guard) = start_the_flood(&cluster, "all");
    let slowest = status_latency_during_flood(cluster.pid);
    let peak = guard.peak();
    assert!(
        !guard.killed(),
        "recluster passed {KILL_AT} bytes and was killed (idle {idle})"
    );
    let status = crate::harness::ctl_status(cluster.pid);
    eprintln!(
        "info flood from 200 workers: idle {idle} B, peak {peak} B, slowest ctl status {slowest:?}, {}",
        status["cluster"]["messages"]
    );
    assert!(
        status["cluster"]["messages"]["busy"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "the flood was under way: {}",
        status["cluster"]
    );
    assert!(
        peak <= idle + MAY_GROW,
        "recluster grew from {idle} to {peak} bytes under the flood"
    );
    assert!(slowest < CTL_LIMIT, "ctl status took {slowest:?}");
    cluster.send(libc::SIGKILL);
}

#[test]
fn a_worker_flooding_the_others_leaves_room_for_everyone_elses_messages() {
    let mut cluster = start(&["-n", "3"], "others", 3);
    let (idle, guard) = start_the_flood(&cluster, "all");
    cluster.expect("the flood under way", |l| {
        l.kind() == "stats" && l.field("sent").is_some_and(|s| s != "0")
    });
    let slowest = status_latency_during_flood(cluster.pid);
    // Another worker's pings (one every 50 ms) still arrive, and soon, while the flood goes
    // on: the first 40 of them (2 s) are looked for.
    let mut pings = 0;
    let mut oldest = 0;
    loop {
        let ping = cluster.expect("a ping through the flood", |l| l.kind() == "ping");
        pings += 1;
        oldest = oldest.max(field(&ping, "age_ms"));
        if field(&ping, "n") >= 39 {
            break;
        }
    }
    let sent = field(&stats_now(&mut cluster), "sent");
    let peak = guard.peak();
    assert!(!guard.killed(), "recluster passed {KILL_AT} bytes");
    eprintln!(
        "message flood: idle {idle} B, peak {peak} B, slowest ctl status {slowest:?}, sent {sent}, {pings} of 40 pings, the slowest in {oldest} ms"
    );
    assert!(
        peak <= idle + MAY_GROW,
        "recluster grew from {idle} to {peak} bytes under the flood"
    );
    assert!(slowest < CTL_LIMIT, "ctl status took {slowest:?}");
    assert!(sent > 1000, "the flood was under way");
    assert!(
        pings >= 20,
        "only {pings} of 40 pings reached worker 2 during the flood"
    );
    assert!(oldest < 1000, "a ping took {oldest} ms through the flood");
    cluster.send(libc::SIGKILL);
}

/// recluster run by hand, for what the harness does not do: its own pipes, its whole group
/// killed when dropped.
struct Run {
    pid: i32,
    child: std::process::Child,
    /// Its stderr, if nobody reads it: held open.
    _unread: Option<std::process::ChildStderr>,
}

impl Drop for Run {
    fn drop(&mut self) {
        // SAFETY: killpg has no memory effects; the group is the one recluster leads.
        unsafe { libc::killpg(self.pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts `recluster ARGS -- python3 flood.py ROLE`, its stdout read by a thread (`lines`: each
/// line's length, 0 at the end), its stderr read and dropped, or with `unread_stderr` a pipe
/// that nobody reads.
fn run(
    args: &[&str],
    role: &str,
    unread_stderr: bool,
) -> (Run, crossbeam_channel::Receiver<usize>) {
    let flood = flood_py();
    let mut child = Command::new(recluster_bin())
        .args(args)
        .args(["--", "python3", &flood, role])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start recluster");
    let (sender, lines) = crossbeam_channel::bounded(1024);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    thread::spawn(move || {
        let mut line = Vec::new();
        while out.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if sender.send(line.len()).is_err() {
                return;
            }
            line.clear();
        }
        let _ = sender.send(0);
    });
    let stderr = child.stderr.take().unwrap();
    let unread = if unread_stderr {
        Some(stderr)
    } else {
        thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
        None
    };
    let pid = child.id() as i32;
    let run = Run {
        pid,
        child,
        _unread: unread,
    };
    (run, lines)
}

/// Output floods through `--prefix`: recluster's memory stays bounded while its stdout is read.
fn output_flood(format: &str, role: &str) {
    let prefix = format!("--prefix={format}");
    let (run, lines) = run(&["-n", "4", &prefix], role, false);
    // The four `ready` lines come first; then the flood.
    for _ in 0..4 {
        let n = lines
            .recv_timeout(crate::harness::DEADLINE)
            .expect("a worker's ready line");
        assert!(n > 0, "recluster's output ended");
    }
    let idle = rss(run.pid).expect("recluster's VmRSS");
    let guard = MemoryGuard::watch(run.pid);
    let deadline = Instant::now() + FLOOD;
    let (mut count, mut bytes) = (0u64, 0u64);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count += 1;
                bytes += n as u64;
            }
        }
    }
    let peak = guard.peak();
    assert!(!guard.killed(), "recluster passed {KILL_AT} bytes");
    eprintln!(
        "{role} (--prefix={format}): idle {idle} B, peak {peak} B, {count} lines ({bytes} bytes) read"
    );
    assert!(count > 100, "the workers' output was relayed");
    assert!(
        peak <= idle + MAY_GROW,
        "recluster grew from {idle} to {peak} bytes relaying {role}"
    );
}

#[test]
fn a_line_that_never_ends_is_relayed_in_bounded_pieces() {
    output_flood("text", "endless");
}

#[test]
fn empty_lines_as_fast_as_a_worker_writes_them_are_relayed_in_bounded_batches() {
    output_flood("json", "newlines");
}

#[test]
fn a_stderr_nobody_reads_stops_the_workers_that_write_to_it_not_recluster() {
    for args in [&["-n", "1", "--prefix"][..], &["-n", "1"]] {
        let prefix = args.len() == 3;
        let (mut run, lines) = run(args, "stderr", true);
        let ready = |what: &str| {
            let n = lines.recv_timeout(crate::harness::DEADLINE);
            assert!(n.is_ok_and(|n| n > 0), "{what} (prefix: {prefix})");
        };
        ready("the worker started");
        let guard = MemoryGuard::watch(run.pid);
        // The pipe is full once the worker blocks on it; then recluster must still act (and
        // log): a restart is waited for, status answered, and a stop ends it.
        let (code, _, took) = timed_ctl(
            run.pid,
            &["restart", "0", "--wait"],
            Duration::from_secs(15),
        );
        assert_eq!(
            code,
            Some(0),
            "ctl restart --wait with stderr unread (prefix: {prefix}) took {took:?}"
        );
        ready("the new worker started");
        let (code, _, took) = timed_ctl(run.pid, &["status"], CTL_LIMIT * 2);
        assert_eq!(code, Some(0), "ctl status (prefix: {prefix})");
        assert!(took < CTL_LIMIT, "ctl status took {took:?}");
        // SAFETY: kill has no memory effects; the pid is the recluster we started.
        unsafe { libc::kill(run.pid, libc::SIGTERM) };
        let stopped = Instant::now();
        let mut exited = None;
        while stopped.elapsed() < Duration::from_secs(20) {
            if let Some(status) = run.child.try_wait().expect("wait for recluster") {
                exited = Some(status);
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            exited.is_some(),
            "recluster did not exit within 20 s of SIGTERM with stderr unread (prefix: {prefix})"
        );
        assert!(!guard.killed(), "recluster passed {KILL_AT} bytes");
        eprintln!(
            "stderr unread (prefix: {prefix}): stopped in {:?}, peak {} B",
            stopped.elapsed(),
            guard.peak()
        );
    }
}
