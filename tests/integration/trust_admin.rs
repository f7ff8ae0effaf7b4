//! `--admin` under attack, as a hostile host or local user would make it: thousands of idle
//! connections and a slowloris from other addresses (127.0.0.2 and up are other peers on
//! loopback) while a kubelet asks `/livez` from 127.0.0.1; scrapers hammering `/metrics` of a
//! cluster of 200 workers; the unix socket under `umask 000`, and planted files at its path.
//! Every attack is bounded in count and time, and recluster is killed should its memory grow
//! past a bound, so a regression fails the test instead of taking the machine down.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::harness::{Cluster, Launch, Scratch, cluster_args, eventually, run_to_end};

/// How long a probe may take under attack (a kubelet's default timeoutSeconds is 1).
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// recluster is killed past this resident size.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The address in recluster's "admin endpoint at http://ADDR/" line.
fn admin_address(cluster: &mut Cluster) -> SocketAddr {
    let line = cluster.expect_log("admin endpoint at http://");
    line.text
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| cluster.fail("no address in the admin line"))
}

/// A TCP connection to `target` from the local address `source`.
fn connect_from(source: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source.into(), 0).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(1))?;
    Ok(socket.into())
}

/// One `GET path` from 127.0.0.1: the status (0 for no answer) and how long it took.
fn ask(target: SocketAddr, path: &str) -> (u16, Duration) {
    ask_from(Ipv4Addr::LOCALHOST, target, path)
}

/// One `GET path` from `source`: the status (0 for no answer) and how long it took.
fn ask_from(source: Ipv4Addr, target: SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = (|| -> io::Result<u16> {
        let mut stream = connect_from(source, target)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        Ok(text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    })()
    .unwrap_or(0);
    (status, started.elapsed())
}

/// Raises this test process's soft open-files limit to `want` (at most the hard limit); the
/// limit it has then.
fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// recluster's resident size in KiB, from /proc.
fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kills recluster should it grow past `RSS_LIMIT_KIB`, until dropped; notes the most it used.
struct MemoryGuard {
    stop: Arc<AtomicBool>,
    tripped: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl MemoryGuard {
    fn watch(pid: i32) -> MemoryGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let tripped = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, t, p) = (stop.clone(), tripped.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let rss = rss_kib(pid);
                p.fetch_max(rss.unwrap_or(0), Ordering::Relaxed);
                if let Some(kib) = rss.filter(|&k| k > RSS_LIMIT_KIB) {
                    t.store(kib, Ordering::Relaxed);
                    // SAFETY: kill has no memory effects; the pid is this test's recluster.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        MemoryGuard {
            stop,
            tripped,
            peak,
            thread: Some(thread),
        }
    }

    /// The most recluster was seen to use, in KiB.
    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The RSS (KiB) at which recluster was killed, if it was.
    fn tripped(&self) -> Option<u64> {
        Some(self.tripped.load(Ordering::Relaxed)).filter(|&k| k > 0)
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the server closed `stream` (or answered on it, which it does only before closing).
fn closed(stream: &mut TcpStream) -> bool {
    let mut scratch = [0u8; 512];
    match stream.read(&mut scratch) {
        // End of stream, or the 503 that comes before it.
        Ok(0..) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// The attacker: `idle` connections that never send a byte and `slow` ones that send 7,000
/// bytes of a head at once and then one byte a second, spread over `sources`, each reopened when the server closes it, until
/// `stop`. Counts every connection it opened in `opened`.
fn attack(
    target: SocketAddr,
    sources: Vec<Ipv4Addr>,
    idle: usize,
    slow: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) -> Vec<thread::JoinHandle<()>> {
    let source = move |i: usize| sources[i % sources.len()];
    let open = {
        let opened = opened.clone();
        move |i: usize| -> Option<TcpStream> {
            let stream = connect_from(source(i), target).ok()?;
            stream.set_nonblocking(true).ok()?;
            opened.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
    };
    let idle_open = open.clone();
    let idle_stop = stop.clone();
    let idler = thread::spawn(move || {
        let mut held: Vec<Option<TcpStream>> = Vec::with_capacity(idle);
        for i in 0..idle {
            if idle_stop.load(Ordering::Relaxed) {
                return;
            }
            held.push(idle_open(i));
        }
        // Keep them open: reopen what the server closed, at most 200 a round.
        while !idle_stop.load(Ordering::Relaxed) {
            let mut reopened = 0;
            for (i, slot) in held.iter_mut().enumerate() {
                if reopened >= 200 || idle_stop.load(Ordering::Relaxed) {
                    break;
                }
                if slot.as_mut().is_none_or(closed) {
                    *slot = idle_open(i);
                    reopened += 1;
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let slowloris = thread::spawn(move || {
        // Most of a head at once (what the server must hold), then a byte a second.
        let head = format!(
            "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}",
            "a".repeat(8000)
        );
        let head = head.as_bytes();
        let mut held: Vec<(Option<TcpStream>, usize)> = (0..slow).map(|i| (open(i), 0)).collect();
        while !stop.load(Ordering::Relaxed) {
            for (i, (slot, sent)) in held.iter_mut().enumerate() {
                let chunk = if *sent == 0 { 7000 } else { 1 };
                let alive = match slot.as_mut() {
                    Some(stream) => {
                        !closed(stream)
                            && *sent + chunk <= head.len()
                            && stream.write_all(&head[*sent..*sent + chunk]).is_ok()
                    }
                    None => false,
                };
                *sent += chunk;
                if !alive {
                    *slot = open(i);
                    *sent = 0;
                }
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    vec![idler, slowloris]
}

/// Asks `/livez` from 127.0.0.1 `count` times, `every` apart; the answers and their times.
fn probe(target: SocketAddr, count: usize, every: Duration) -> Vec<(u16, Duration)> {
    (0..count)
        .map(|_| {
            let answer = ask(target, "/livez");
            thread::sleep(every);
            answer
        })
        .collect()
}

fn summary(answers: &[(u16, Duration)]) -> String {
    let mut times: Vec<u128> = answers.iter().map(|(_, t)| t.as_millis()).collect();
    times.sort_unstable();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    format!(
        "{ok} of {} answered 200; median {} ms, max {} ms",
        answers.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    )
}

/// 2,000 idle connections and 200 slowloris ones from `sources` while a probe asks `/livez`
/// from 127.0.0.1: every probe answered 200 within `PROBE_LIMIT`.
fn livez_holds_under_connection_flood(sources: Vec<Ipv4Addr>) {
    let slow = 200;
    let fds = raise_fd_limit(8192);
    let idle = 2000.min(fds.saturating_sub(slow as u64 + 512) as usize);
    assert!(idle >= 1100, "only {fds} open files allowed here");
    let mut cluster = Cluster::start(&["-n", "1", "--admin", "127.0.0.1:0"], &[]);
    let target = admin_address(&mut cluster);
    cluster.ready(1);
    let guard = MemoryGuard::watch(cluster.pid);
    let idle_probes = probe(target, 8, Duration::from_millis(50));

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let attackers = attack(target, sources, idle, slow, stop.clone(), opened.clone());
    let held = eventually(|| opened.load(Ordering::Relaxed) >= (idle + slow) as u64);
    // The slowloris has sent a few bytes on each connection by the end of this.
    let attacked = probe(target, 16, Duration::from_millis(250));
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        let _ = attacker.join();
    }
    eprintln!(
        "livez idle: {}; under {idle} idle + {slow} slowloris connections ({} opened): {}; recluster's RSS at most {} KiB",
        summary(&idle_probes),
        opened.load(Ordering::Relaxed),
        summary(&attacked),
        guard.peak()
    );
    if let Some(kib) = guard.tripped() {
        cluster.fail(&format!("recluster grew to {kib} KiB under the flood"));
    }
    drop(guard);
    assert!(held, "the attacker never opened its connections");
    for (status, took) in &attacked {
        assert_eq!(
            *status,
            200,
            "/livez under the flood: {}",
            summary(&attacked)
        );
        assert!(
            *took < PROBE_LIMIT,
            "/livez took {took:?} under the flood: {}",
            summary(&attacked)
        );
    }
    // And it still serves once the attacker is gone.
    assert_eq!(ask(target, "/livez").0, 200);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn idle_connections_and_a_slowloris_from_one_host_leave_livez_answering_for_another() {
    livez_holds_under_connection_flood(vec![Ipv4Addr::new(127, 0, 0, 2)]);
}

#[test]
fn idle_connections_from_forty_hosts_leave_livez_answering_for_another() {
    livez_holds_under_connection_flood((2..42).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect());
}

/// 128 scrapers from 127.0.0.2-5 ask `/metrics` of 200 workers without pause while a probe asks
/// `/livez` from 127.0.0.1: the probe is not kept waiting behind them.
#[test]
fn metrics_scrapers_of_200_workers_do_not_slow_livez() {
    let args = ["-n", "200", "--admin", "127.0.0.1:0", "--", "sleep", "1000"];
    let mut cluster = Launch::new(args).start();
    let target = admin_address(&mut cluster);
    if !eventually(|| {
        let mut stream = TcpStream::connect(target).unwrap();
        write!(
            stream,
            "GET /readyz?verbose HTTP/1.1\r\nHost: {target}\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.contains("200 of 200 workers ready")
    }) {
        cluster.fail("the 200 workers never were ready");
    }
    let guard = MemoryGuard::watch(cluster.pid);
    let idle_probes = probe(target, 8, Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let scraped = Arc::new(AtomicU64::new(0));
    let scrapers: Vec<_> = (0..128)
        .map(|i| {
            let (stop, scraped) = (stop.clone(), scraped.clone());
            // Four hosts, each within its share of connections: every scrape is served.
            let source = Ipv4Addr::new(127, 0, 0, 2 + i % 4);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if ask_from(source, target, "/metrics").0 == 200 {
                        scraped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let busy = eventually(|| scraped.load(Ordering::Relaxed) >= 128);
    let attacked = probe(target, 16, Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for scraper in scrapers {
        let _ = scraper.join();
    }
    eprintln!(
        "livez idle: {}; under 128 /metrics scrapers ({} scrapes): {}; recluster's RSS at most {} KiB",
        summary(&idle_probes),
        scraped.load(Ordering::Relaxed),
        summary(&attacked),
        guard.peak()
    );
    if let Some(kib) = guard.tripped() {
        cluster.fail(&format!("recluster grew to {kib} KiB under the scrapers"));
    }
    drop(guard);
    assert!(busy, "the scrapers never got answers");
    // Behind the scrapers (before), probes waited for whole /metrics walks, seconds each; now
    // none waits for one. On a loaded 2-core machine the 128 scraper threads of this test alone
    // can keep a probe off a CPU for a while, so one probe of 16 may be slow; none past 2 s.
    let slow = attacked
        .iter()
        .filter(|(_, took)| *took >= Duration::from_millis(500))
        .count();
    for (status, took) in &attacked {
        assert_eq!(
            *status,
            200,
            "/livez under scrapers: {}",
            summary(&attacked)
        );
        assert!(
            *took < Duration::from_secs(2),
            "/livez took {took:?} under scrapers: {}",
            summary(&attacked)
        );
    }
    assert!(
        slow <= 1,
        "{slow} probes took 500 ms or more under scrapers: {}",
        summary(&attacked)
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn an_admin_unix_socket_is_0600_under_umask_000() {
    let scratch = Scratch::new("admin-umask", 0o755);
    let dir = scratch.0.clone();
    let path = dir.join("admin.sock");
    let admin = format!("unix:{}", path.display());
    let mut cluster = Launch::wrapped(
        &["sh", "-c", "umask 000; exec \"$0\" \"$@\""],
        cluster_args(&["-n", "1", "--admin", &admin], &[]),
    )
    .start();
    cluster.expect_log("admin endpoint at");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "the admin socket's mode under umask 000"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_socket_another_user_left_at_the_admin_path_is_neither_removed_nor_used() {
    let scratch = Scratch::new("admin-planted", 0o755);
    let dir = scratch.0.clone();
    let path = dir.join("admin.sock");
    // Another user's socket, nobody listening on it (stale).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
    let admin = format!("unix:{}", path.display());
    let (code, _, stderr) = run_to_end(&["--restart", "never", "--admin", &admin, "--", "true"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket(), "left in place");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);

    // A symlink planted there is not followed: refused, its target untouched.
    std::fs::remove_file(&path).unwrap();
    let target = dir.join("target");
    std::fs::write(&target, "root's file\n").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let (code, _, stderr) = run_to_end(&["--restart", "never", "--admin", &admin, "--", "true"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's file\n");
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// `curl` run as nobody:nogroup on the unix socket at `path`: its exit code and output.
fn curl_as_nobody(path: &std::path::Path, url: &str) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(path)
        .arg(url)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn another_user_reaches_the_admin_socket_only_through_a_group_given_by_admin_mode() {
    use std::os::unix::fs::MetadataExt;
    // A directory for the group nogroup, set-group-ID: what is made in it is nogroup's.
    let scratch = Scratch::new("admin-group", 0o755);
    let dir = scratch.0.clone();
    std::os::unix::fs::chown(&dir, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let path = dir.join("admin.sock");
    let admin = format!("unix:{}", path.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["-n", "1", "--admin", &admin];
        args.extend_from_slice(extra);
        let mut cluster = Launch::wrapped(
            &["sh", "-c", "umask 077; exec \"$0\" \"$@\""],
            cluster_args(&args, &[]),
        )
        .start();
        cluster.expect_log("admin endpoint at");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let answer = curl_as_nobody(&path, "http://localhost/status");
        cluster.send(libc::SIGTERM);
        assert_eq!(cluster.exit_code(), 0);
        (meta.mode() & 0o7777, meta.gid(), answer)
    };

    let (mode, _, (code, out)) = run(&[]);
    assert_eq!(mode, 0o600);
    assert_eq!(code, 7, "nobody connected to a 0600 socket: {out}");

    let (mode, group, (code, out)) = run(&["--admin-mode", "0660"]);
    assert_eq!(
        (mode, group),
        (0o660, 65534),
        "0660 whatever the umask (077)"
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"workers\""), "{out}");

    let (code, _, stderr) = run_to_end(&[
        "--admin",
        "127.0.0.1:0",
        "--admin-mode",
        "0660",
        "--",
        "true",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--admin-mode"), "{stderr}");
}
