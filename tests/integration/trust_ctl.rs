//! What `recluster ctl` trusts, tried as an attacker would: a control directory planted by
//! another user where ctl looks without `XDG_RUNTIME_DIR`, a server of another user, a server
//! whose answer never ends or never finishes, an answer naming a key twice, a worker whose
//! `STATUS=` holds terminal escapes, and a request naming `cmd` twice; and recluster itself
//! refusing a planted directory for its socket. The fake servers are
//! `tests/programs/fake_control.py`, which records everything it receives. A ctl that misbehaves
//! is killed once its memory passes 64 MiB or after `DEADLINE`, so a regression fails the test
//! instead of taking the machine down.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    DEADLINE, Launch, Scratch, ctl, ctl_status, eventually, is_running, recluster_bin,
};

const FAKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/programs/fake_control.py"
);
/// The memory past which a ctl under test is killed.
const RSS_GUARD_KIB: u64 = 64 * 1024;

/// A fake control server at `socket`, run as `nobody` or as this user; what it received is in
/// `record`.
struct Fake {
    child: Child,
    record: PathBuf,
}

impl Fake {
    fn start(socket: &Path, mode: &str, as_nobody: bool, record: &Path) -> Fake {
        let mut command = if as_nobody {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg("/usr/bin/python3");
            command
        } else {
            Command::new("/usr/bin/python3")
        };
        let mut child = command
            .arg(FAKE)
            .arg(socket)
            .arg(mode)
            .arg(record)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake control server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the fake server did not start");
        Fake {
            child,
            record: record.to_path_buf(),
        }
    }

    /// What ctl sent it, beyond connecting.
    fn received(&self) -> String {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .replace("connected\n", "")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Guarded {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
    killed: Option<&'static str>,
    took: Duration,
}

/// Runs `command` to its end, killing it if its resident memory passes `RSS_GUARD_KIB` or it
/// outlives `DEADLINE`.
fn run_guarded(command: &mut Command) -> Guarded {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut peak_rss_kib = 0;
    let mut killed = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(rss);
        if rss > RSS_GUARD_KIB {
            killed = Some("its memory passed 64 MiB");
        } else if started.elapsed() > DEADLINE {
            killed = Some("it ran past the deadline");
        }
        if killed.is_some() {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Guarded {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        peak_rss_kib,
        killed,
        took: started.elapsed(),
    }
}

/// `recluster ctl ARGS` as root with `TMPDIR` at `tmp`, no `XDG_RUNTIME_DIR`, and a `/run` of
/// its own (empty), so the planted directory is the only place it can look.
fn ctl_without_runtime_dir(tmp: &Path, args: &[&str]) -> Guarded {
    run_guarded(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs none /run || exit 9; exec \"$@\"")
            .arg("sh")
            .arg(recluster_bin())
            .arg("ctl")
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", tmp),
    )
}

fn only_line(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {text:?}");
    lines[0]
}

#[test]
fn a_control_directory_planted_by_another_user_is_refused_and_told_nothing() {
    assert_eq!(
        // SAFETY: geteuid has no memory effects.
        unsafe { libc::geteuid() },
        0,
        "this test plays root against nobody"
    );
    let tmp = Scratch::new("planted", 0o1777);
    let planted = tmp.0.join("recluster-0");
    let record = tmp.0.join("record");
    let fake = Fake::start(&planted.join("4242.sock"), "hello", true, &record);
    for args in [
        &["stop"][..],
        &["status"],
        &["--pid", "4242", "status"],
        &["--name", "4242", "stop"],
    ] {
        let out = ctl_without_runtime_dir(&tmp.0, args);
        assert_eq!(out.killed, None, "{args:?}: {}", out.stderr);
        assert_eq!(out.code, Some(3), "{args:?}: {} {}", out.stdout, out.stderr);
        let line = only_line(&out.stderr);
        assert!(line.contains(&planted.display().to_string()), "{line}");
        assert!(line.contains("uid 65534 (nobody)"), "{line}");
        assert_eq!(fake.received(), "", "{args:?}: ctl told the planted server");
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(&record).unwrap_or_default(),
        "",
        "ctl never even connected"
    );
}

#[test]
fn a_server_running_as_another_user_is_refused_before_anything_is_sent() {
    let tmp = Scratch::new("foreign-server", 0o1777);
    let socket = tmp.0.join("theirs").join("c.sock");
    let fake = Fake::start(&socket, "hello", true, &tmp.0.join("record"));
    let out = run_guarded(Command::new(recluster_bin()).args([
        "ctl",
        "--control",
        &socket.display().to_string(),
        "stop",
    ]));
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let line = only_line(&out.stderr);
    assert!(
        line.contains(&socket.display().to_string()) && line.contains("uid 65534 (nobody)"),
        "{line}"
    );
    assert_eq!(fake.received(), "", "the request was sent");
}

#[test]
fn an_answer_line_that_never_ends_stops_ctl_at_the_limit_with_bounded_memory() {
    let tmp = Scratch::new("endless", 0o1777);
    let socket = tmp.0.join("c.sock");
    let fake = Fake::start(&socket, "endless", false, &tmp.0.join("record"));
    let out = run_guarded(Command::new(recluster_bin()).args([
        "ctl",
        "--control",
        &socket.display().to_string(),
        "status",
    ]));
    assert_eq!(
        out.killed, None,
        "peak {} KiB, {:?}",
        out.peak_rss_kib, out.took
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        only_line(&out.stderr).contains("more than 8 MiB"),
        "{}",
        out.stderr
    );
    eprintln!(
        "ctl read an endless line: stopped after {:?}, peak RSS {} KiB",
        out.took, out.peak_rss_kib
    );
    assert!(fake.received().contains("\"status\""));
}

#[test]
fn an_answer_that_trickles_in_stops_ctl_after_the_time_limit() {
    let tmp = Scratch::new("trickle", 0o1777);
    let socket = tmp.0.join("c.sock");
    let _fake = Fake::start(&socket, "trickle", false, &tmp.0.join("record"));
    let out = run_guarded(Command::new(recluster_bin()).args([
        "ctl",
        "--control",
        &socket.display().to_string(),
        "status",
    ]));
    assert_eq!(out.killed, None, "after {:?}", out.took);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        only_line(&out.stderr).contains("did not answer within 10s"),
        "{}",
        out.stderr
    );
    assert!(out.took >= Duration::from_secs(10), "{:?}", out.took);
}

#[test]
fn an_answer_naming_a_key_twice_is_refused() {
    let tmp = Scratch::new("twice", 0o1777);
    let socket = tmp.0.join("c.sock");
    let _fake = Fake::start(&socket, "twice", false, &tmp.0.join("record"));
    let out = run_guarded(Command::new(recluster_bin()).args([
        "ctl",
        "--control",
        &socket.display().to_string(),
        "stop",
    ]));
    assert_eq!(out.code, Some(1), "{} {}", out.stdout, out.stderr);
    assert!(
        only_line(&out.stderr).contains("\"ok\" appears twice"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn ctl_send_asks_again_while_the_message_thread_is_busy_and_gives_up_after_five_seconds() {
    let tmp = Scratch::new("busy", 0o700);
    let send = |socket: &Path| {
        run_guarded(Command::new(recluster_bin()).args([
            "ctl",
            "--control",
            &socket.display().to_string(),
            "send",
            "all",
            "{}",
        ]))
    };
    // Busy three times, then taken: a script's `ctl send` succeeds.
    let socket = tmp.0.join("three.sock");
    let fake = Fake::start(&socket, "busy:3", false, &tmp.0.join("three"));
    let out = send(&socket);
    assert_eq!(out.code, Some(0), "{} {}", out.stdout, out.stderr);
    assert_eq!(out.stderr, "", "a retry that succeeded is not an error");
    assert_eq!(fake.received().matches("\"send\"").count(), 4);
    // Busy for ever: one error line, status 1, after about five seconds.
    let socket = tmp.0.join("always.sock");
    let fake = Fake::start(&socket, "busy:-1", false, &tmp.0.join("always"));
    let out = send(&socket);
    assert_eq!(out.code, Some(1), "{} {}", out.stdout, out.stderr);
    assert!(
        only_line(&out.stderr).contains("the message thread is busy"),
        "{}",
        out.stderr
    );
    assert!(
        out.took >= Duration::from_secs(4) && out.took < Duration::from_secs(20),
        "gave up after {:?}",
        out.took
    );
    let tries = fake.received().matches("\"send\"").count();
    assert!(
        (10..=100).contains(&tries),
        "{tries} tries in {:?}",
        out.took
    );
}

/// Characters a terminal would act on: controls (but the newlines between lines) and the
/// bidirectional overrides and isolates.
fn acting(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

#[test]
fn a_status_text_with_terminal_escapes_is_shown_escaped() {
    let status = "\u{1b}]0;pwned\u{7}\u{1b}[2A\u{1b}[2K\u{9b}8mhidden\u{202e}live";
    let script = format!(
        "import os, socket, signal
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = os.environ['NOTIFY_SOCKET']
a = '\\0' + a[1:] if a.startswith('@') else a
s.sendto({}.encode(), a)
signal.pause()",
        // A JSON string is a Python string literal too.
        Value::from(format!("READY=1\nSTATUS={status}"))
    );
    let mut cluster = Launch::new([
        "-n",
        "1",
        "--ready",
        "notify",
        "--",
        "/usr/bin/python3",
        "-c",
        &script,
    ])
    .start();
    assert!(
        eventually(|| {
            let (code, json, _) = ctl(cluster.pid, &["status", "--json"]);
            code == 0
                && serde_json::from_str::<Value>(&json)
                    .is_ok_and(|s| s["workers"][0]["status"].is_string())
        }),
        "the worker's STATUS= never arrived"
    );
    let (code, table, stderr) = ctl(cluster.pid, &["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(acting(&table), [] as [char; 0], "{table:?}");
    assert!(table.contains("\\x1b]0;pwned"), "{table}");
    let (code, json, stderr) = ctl(cluster.pid, &["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(acting(&json), [] as [char; 0], "{json:?}");
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        parsed["workers"][0]["status"], status,
        "JSON keeps the text"
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

#[test]
fn a_request_naming_cmd_twice_is_refused_and_the_cluster_keeps_running() {
    let mut cluster = Launch::new(crate::harness::cluster_args(&["-n", "1"], &[])).start();
    cluster.ready(1);
    let control = ctl_status(cluster.pid)["cluster"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = UnixStream::connect(&control).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"{\"v\":1,\"cmd\":\"status\",\"cmd\":\"stop\"}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("\"cmd\" appears twice"),
        "{answer}"
    );
    let status = ctl_status(cluster.pid);
    assert_ne!(status["cluster"]["state"], "stopping", "{status}");
    assert!(is_running(cluster.pid));
    assert!(
        cluster.seen(|l| l.is_log("stop")).is_empty(),
        "{:?}",
        cluster.history
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn recluster_itself_binds_no_socket_in_a_directory_planted_by_another_user() {
    let tmp = Scratch::new("planted-server", 0o1777);
    let planted = tmp.0.join("recluster-0");
    let made = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["mkdir", "-m", "0777"])
        .arg(&planted)
        .status()
        .unwrap();
    assert!(made.success());
    // A read-only /run of its own, so the planted directory is where it would go.
    let mut launch = Launch::wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o ro none /run || exit 9; exec \"$@\"",
            "sh",
        ],
        crate::harness::cluster_args(&["-n", "1"], &[]),
    )
    .env("TMPDIR", &tmp.0);
    launch.command().env_remove("XDG_RUNTIME_DIR");
    let mut cluster = launch.start();
    let warning = cluster.expect_log("no control socket");
    assert!(
        warning.text.contains(&planted.display().to_string())
            && warning.text.contains("belongs to uid 65534"),
        "{}",
        warning.text
    );
    cluster.ready(1);
    assert_eq!(
        std::fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing was made there"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
