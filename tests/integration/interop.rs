//! Programs nobody here wrote take recluster's sockets and serve: Python, Node, a C program using
//! libsystemd, and gunicorn. `scripts/install-test-deps` installs them.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Launch, Line, answered_by};

/// The `ready pid=` line the test programs print once they accept.
fn prints_ready(line: &Line) -> bool {
    line.is_worker("ready")
}

pub(crate) fn program(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
        .display()
        .to_string()
}

/// The Python interpreter itself, not a version manager's shim in front of it (pyenv's shims are
/// bash scripts): the test is about Python taking fd 3, nothing else.
pub(crate) fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is not installed: run scripts/install-test-deps");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run scripts/install-test-deps"
    );
}

/// `recluster -n 2 --listen 127.0.0.1:0 -- COMMAND`: once both workers say they are ready (a
/// line that `ready` recognises), two different processes must answer.
fn serves_with_two_workers(command: &[&str], ready: impl Fn(&Line) -> bool) {
    let mut args = vec!["-n", "2", "--listen", "127.0.0.1:0", "--"];
    args.extend_from_slice(command);
    let mut cluster = Launch::new(&args).start();
    let address = cluster.listening(1).remove(0);
    for _ in 0..2 {
        cluster.expect("a worker ready to accept", &ready);
    }
    let pids = answered_by(&address, "pid", 2);
    assert_eq!(pids.len(), 2, "{command:?}: answered by {pids:?}");
    cluster.send(libc::SIGTERM);
    // Each exits 0 on TERM or dies of it: both count as clean.
    assert_eq!(cluster.exit_code(), 0, "{command:?}");
}

#[test]
fn python_takes_fd_3() {
    serves_with_two_workers(&[python(), &program("fd3_server.py")], prints_ready);
}

#[test]
fn node_listens_on_fd_3() {
    require("node");
    serves_with_two_workers(&["node", &program("fd3_server.js")], prints_ready);
}

#[test]
fn a_libsystemd_program_accepts_the_sockets() {
    require("gcc");
    let binary = crate::harness::c_program("sd_listen_server", &["-lsystemd"]);
    serves_with_two_workers(&[binary.as_str()], prints_ready);
}

#[test]
fn gunicorn_serves_through_its_systemd_support() {
    let found = Command::new(python())
        .args(["-c", "import gunicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "gunicorn is not installed: run scripts/install-test-deps"
    );
    let dir = program("");
    serves_with_two_workers(
        &[
            python(),
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--chdir",
            &dir,
            "wsgi_app:app",
        ],
        // gunicorn's own worker logs this once it accepts.
        |line| line.is_log("Booting worker with pid"),
    );
}

#[test]
fn keep_alive_connections_opened_at_once_reach_every_worker_of_an_event_loop_server() {
    // The load one shared queue serves worst: an epoll server accepts until EAGAIN, and the
    // worker woken first takes the whole burst. By default each worker has its own queue.
    use std::io::{Read, Write};
    let server = program("evloop_server.py");
    let args = ["-n", "4", "--ready", "notify", "--listen", "127.0.0.1:0"];
    let mut cluster = Launch::new(args.iter().map(|s| s.to_string()).chain([
        "--".to_string(),
        python().to_string(),
        server,
    ]))
    .start();
    let address = cluster.listening(1).remove(0);
    cluster.expect_log("all 4 workers are ready");
    let mut connections: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    let mut served: std::collections::HashMap<String, usize> = Default::default();
    for connection in &mut connections {
        connection
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        connection
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
    }
    for connection in &mut connections {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !answer.ends_with(b"\n") || !answer.windows(4).any(|w| w == b"pid=") {
            let n = connection.read(&mut chunk).unwrap();
            assert!(n > 0, "the connection closed before the answer");
            answer.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        let pid = text.split("pid=").nth(1).unwrap().trim().to_string();
        *served.entry(pid).or_default() += 1;
    }
    assert_eq!(
        served.len(),
        4,
        "every worker serves some of the 64 connections: {served:?}"
    );
    drop(connections);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
