//! Runs the real recluster binary with the example worker and watches what happens. Every wait has a
//! deadline that only decides when a test fails; nothing sleeps to synchronise. A `Cluster` that is
//! dropped unfinished kills what it started, and only that; a failing expectation prints the whole
//! history of the run.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};

/// How long any expected event may take on a loaded machine before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn recluster_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_recluster"))
}

/// The example worker, which `cargo test` builds beside the binaries.
pub fn worker_bin() -> PathBuf {
    let path = recluster_bin().parent().unwrap().join("examples/worker");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples`",
        path.display()
    );
    path
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

impl Line {
    /// For worker lines `kind key=value ...`: the kind.
    pub fn kind(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or("")
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.text
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn num(&self, key: &str) -> i32 {
        self.field(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {key}= in {:?}", self.text))
    }

    pub fn is_worker(&self, kind: &str) -> bool {
        self.stream == Stream::Stdout && self.kind() == kind
    }

    pub fn is_log(&self, fragment: &str) -> bool {
        self.stream == Stream::Stderr && self.text.contains(fragment)
    }
}

enum Output {
    Line(Line),
    Eof,
}

pub struct Cluster {
    pub pid: i32,
    output: Receiver<Output>,
    exit: Receiver<ExitStatus>,
    pub history: Vec<Line>,
    /// Per stream, the index in `history` after the last line an `expect` matched: order holds
    /// within a stream, never across stdout and stderr (two pipes).
    cursors: [usize; 2],
    status: Option<ExitStatus>,
    open_streams: usize,
}

/// How to start recluster: its arguments, extra environment, a wrapper command (e.g. `unshare`).
pub struct Launch {
    command: Command,
}

impl Launch {
    pub fn new<I, S>(args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(recluster_bin());
        command.args(args);
        Launch { command }
    }

    /// Runs recluster under another program: `wrapper[0] wrapper[1..] recluster args`.
    pub fn wrapped<I, S>(wrapper: &[&str], args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(recluster_bin()).args(args);
        Launch { command }
    }

    /// Runs `program args` as the recluster under test: another build of it, or a wrapper that
    /// names its own recluster (`chroot ROOT /recluster …`).
    pub fn program<I, S>(program: impl AsRef<OsStr>, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args);
        Launch { command }
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.command.env(key, value);
        self
    }

    pub fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    pub fn start(mut self) -> Cluster {
        // Its own process group, as a shell's foreground job: signalling the group is what a
        // terminal's Ctrl-C does.
        self.command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("start recluster");
        let (sender, output) = unbounded();
        read_lines(child.stdout.take().unwrap(), Stream::Stdout, sender.clone());
        read_lines(child.stderr.take().unwrap(), Stream::Stderr, sender);
        let (exit_sender, exit) = unbounded();
        let pid = child.id() as i32;
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_sender.send(status);
            }
        });
        Cluster {
            pid,
            output,
            exit,
            history: Vec::new(),
            cursors: [0, 0],
            status: None,
            open_streams: 2,
        }
    }
}

fn read_lines(stream: impl Read + Send + 'static, which: Stream, sender: Sender<Output>) {
    thread::spawn(move || {
        for text in BufReader::new(stream).lines() {
            let Ok(text) = text else { break };
            if sender
                .send(Output::Line(Line {
                    stream: which,
                    text,
                }))
                .is_err()
            {
                return;
            }
        }
        let _ = sender.send(Output::Eof);
    });
}

impl Cluster {
    /// Starts `recluster ARGS -- worker WORKER_ARGS`.
    pub fn start(args: &[&str], worker_args: &[&str]) -> Cluster {
        Launch::new(cluster_args(args, worker_args)).start()
    }

    /// Waits for the next line of its stream, after the last one matched there, that matches.
    pub fn expect(&mut self, what: &str, matches: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + DEADLINE;
        let mut checked = self.cursors[0].min(self.cursors[1]);
        loop {
            while checked < self.history.len() {
                let line = &self.history[checked];
                let stream = line.stream as usize;
                if checked >= self.cursors[stream] && matches(line) {
                    self.cursors[stream] = checked + 1;
                    return line.clone();
                }
                checked += 1;
            }
            match self.output.recv_deadline(deadline) {
                Ok(Output::Line(line)) => self.history.push(line),
                Ok(Output::Eof) => {
                    self.open_streams -= 1;
                    if self.open_streams == 0 {
                        self.fail(&format!("output ended while waiting for {what}"));
                    }
                }
                Err(_) => self.fail(&format!("timed out waiting for {what}")),
            }
        }
    }

    /// Waits for a recluster log line containing `fragment`.
    pub fn expect_log(&mut self, fragment: &str) -> Line {
        self.expect(&format!("log {fragment:?}"), |l| l.is_log(fragment))
    }

    /// Waits for `n` `ready` lines; returns them ordered by WORKER_ID.
    pub fn ready(&mut self, n: usize) -> Vec<Line> {
        let mut ready: Vec<Line> = (0..n)
            .map(|i| {
                self.expect(&format!("ready line {} of {n}", i + 1), |l| {
                    l.is_worker("ready")
                })
            })
            .collect();
        ready.sort_by_key(|l| l.num("id"));
        ready
    }

    /// Sends a signal to recluster itself.
    pub fn send(&self, signal: i32) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.pid, signal) };
    }

    /// Sends a signal to recluster's process group, as a terminal does for Ctrl-C.
    pub fn send_to_group(&self, signal: i32) {
        // SAFETY: killpg has no memory effects.
        unsafe { libc::killpg(self.pid, signal) };
    }

    /// Waits until recluster exits and both its output streams are closed (every process that
    /// shared them is gone); returns its exit status.
    pub fn finish(&mut self) -> ExitStatus {
        let status = match self.exit.recv_timeout(DEADLINE) {
            Ok(status) => status,
            Err(_) => self.fail("recluster did not exit"),
        };
        self.status = Some(status);
        let deadline = Instant::now() + DEADLINE;
        while self.open_streams > 0 {
            match self.output.recv_deadline(deadline) {
                Ok(Output::Line(line)) => self.history.push(line),
                Ok(Output::Eof) => self.open_streams -= 1,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail("recluster exited but a process it started still holds its output")
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        status
    }

    /// `finish`, then the exit code (a test that expects a code must not see a signal).
    pub fn exit_code(&mut self) -> i32 {
        let status = self.finish();
        status.code().unwrap_or_else(|| {
            self.fail(&format!(
                "recluster was killed by signal {:?}",
                status.signal()
            ))
        })
    }

    /// Lines seen so far for which `matches` holds.
    pub fn seen(&self, matches: impl Fn(&Line) -> bool) -> Vec<&Line> {
        self.history.iter().filter(|l| matches(l)).collect()
    }

    /// Panics with everything recluster and its workers printed.
    pub fn fail(&self, why: &str) -> ! {
        let history: Vec<String> = self
            .history
            .iter()
            .map(|l| {
                format!(
                    "  {} {}",
                    if l.stream == Stream::Stdout {
                        "out"
                    } else {
                        "err"
                    },
                    l.text
                )
            })
            .collect();
        panic!(
            "{why}\n--- recluster (pid {}) so far:\n{}",
            self.pid,
            history.join("\n")
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Only what this test started: recluster (or its wrapper) is not reaped yet, so its pid
        // is still its own. Freeze it (no respawns), kill its descendants and every process that
        // carries its RECLUSTER_PID (daemons that left the tree), then kill it.
        self.send(libc::SIGSTOP);
        let mut victims = descendants(self.pid);
        for pid in &victims.clone() {
            victims.extend(carrying_recluster_pid(*pid));
        }
        victims.extend(carrying_recluster_pid(self.pid));
        for pid in victims {
            // SAFETY: signalling processes this test started (see above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.send(libc::SIGKILL);
        let _ = self.exit.recv_timeout(DEADLINE);
    }
}

/// Every process below `pid`, from the kernel's children lists.
fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Processes whose environment says `RECLUSTER_PID=recluster` (workers and what they started).
fn carrying_recluster_pid(recluster: i32) -> Vec<i32> {
    let wanted = format!("RECLUSTER_PID={recluster}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .collect()
}

pub fn cluster_args(args: &[&str], worker_args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--".to_string());
    all.push(worker_bin().display().to_string());
    all.extend(worker_args.iter().map(|s| s.to_string()));
    all
}

/// Runs recluster to completion with no input; returns (exit code, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(recluster_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run recluster");
    (
        out.status.code().expect("recluster exited by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process's state letter from /proc (R, S, Z, ...), or `None` when it no longer exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Running, sleeping or stopped: anything but gone or a zombie.
pub fn is_running(pid: i32) -> bool {
    !matches!(process_state(pid), None | Some('Z') | Some('X'))
}

/// Waits (polling /proc, with a deadline) until `condition` holds; false if it never did.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // After the comm: state is field 3 of stat, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One `GET /` on a new connection (`HOST:PORT` or `unix:PATH`); the body of a 200 answer.
pub fn http_get(target: &str) -> Result<String, String> {
    use std::io::Write;
    let request = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let timeout = Some(Duration::from_secs(10));
    let mut response = Vec::new();
    let result = if let Some(path) = target.strip_prefix("unix:") {
        std::os::unix::net::UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut response)
        })
    } else {
        std::net::TcpStream::connect(target).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut response)
        })
    };
    result.map_err(|e| format!("{target}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{target}: no complete answer: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("{target}: {head}"));
    }
    Ok(body.to_string())
}

/// The value of `key=` in an answer body such as `id=0 pid=12 ...`.
pub fn body_field(body: &str, key: &str) -> String {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_default()
        .to_string()
}

/// Sends requests until `distinct` different values of `key` have answered (at most 500).
pub fn answered_by(target: &str, key: &str, distinct: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..500 {
        let body = http_get(target).unwrap_or_else(|e| panic!("request failed: {e}"));
        let value = body_field(&body, key);
        if !seen.contains(&value) {
            seen.push(value);
        }
        if seen.len() >= distinct {
            break;
        }
    }
    seen
}

/// Steady load: client threads each sending requests on new connections, until stopped, or
/// 100,000 requests, or 60 s in all.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(target: &str, clients: usize) -> Load {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, target) = (Arc::clone(&stop), Arc::clone(&ok), target.to_string());
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..100_000 / clients {
                        if stop.load(Ordering::SeqCst)
                            || started.elapsed() > Duration::from_secs(60)
                        {
                            break;
                        }
                        match http_get(&target) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    pub fn succeeded(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `more` further requests have succeeded.
    pub fn wait_for(&self, more: u64) {
        let goal = self.succeeded() + more;
        assert!(
            eventually(|| self.succeeded() >= goal),
            "the load stalled below {goal}"
        );
    }

    /// Stops the clients; returns (successes, failures).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.ok.load(std::sync::atomic::Ordering::SeqCst), failures)
    }
}

impl Cluster {
    /// The addresses recluster logged as listening, in fd order (waits for `n` of them).
    pub fn listening(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let line = self.expect_log("recluster: listening on ");
                let rest = line.text.split("listening on ").nth(1).unwrap();
                rest.split_whitespace().next().unwrap().to_string()
            })
            .collect()
    }
}

/// A service manager's `NOTIFY_SOCKET` for recluster to report to: a datagram socket the test
/// reads, removed when dropped.
pub struct FakeManager {
    socket: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
}

impl FakeManager {
    pub fn new(name: &str) -> FakeManager {
        let path = std::env::temp_dir().join(format!(
            "recluster-manager-{name}-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        FakeManager { socket, path }
    }

    /// The next notification (fails the test after the deadline).
    pub fn next(&self) -> String {
        let mut buffer = [0u8; 1024];
        let n = self.socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    /// Whether nothing more arrives within a moment.
    pub fn is_quiet(&self) -> bool {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buffer = [0u8; 1024];
        self.socket.recv(&mut buffer).is_err()
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Builds tests/programs/NAME.c with gcc (and `libs`), once per test run, under the build's
/// scratch directory; the binary's path.
pub fn c_program(name: &str, libs: &[&str]) -> String {
    static BUILT: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let source = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/programs/{name}.c"));
    let binary = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let status = std::process::Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .args(libs)
        .status()
        .expect("gcc is not installed: run scripts/install-test-deps");
    assert!(
        status.success(),
        "gcc failed on {}: are its libraries installed? (scripts/install-test-deps)",
        source.display()
    );
    let path = binary.display().to_string();
    built.push((name.to_string(), path.clone()));
    path
}

/// tests/programs/no_unshare.c: runs a command under a seccomp filter that fails unshare(2)
/// (and with --no-steering, attaching a reuseport program) with EPERM.
pub fn no_unshare() -> String {
    c_program("no_unshare", &[])
}

/// `recluster ctl --pid PID ARGS…`: (exit code, stdout, stderr).
pub fn ctl(pid: i32, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(recluster_bin());
    command.args(["ctl", "--pid", &pid.to_string()]).args(args);
    run_ctl(&mut command)
}

/// Runs a `recluster ctl` command line (another uid, --control …) to its end.
pub fn run_ctl(command: &mut Command) -> (i32, String, String) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("run recluster ctl");
    (
        out.status.code().expect("ctl exited by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `recluster ctl --pid PID status --json`, parsed.
pub fn ctl_status(pid: i32) -> serde_json::Value {
    let (code, stdout, stderr) = ctl(pid, &["status", "--json"]);
    assert_eq!(code, 0, "ctl status: {stderr}");
    serde_json::from_str(&stdout).expect("ctl status prints JSON")
}

/// A scratch directory under the temporary directory, with `mode`, removed (with what is in it)
/// when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str, mode: u32) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("recluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Scratch(path)
    }

    /// A directory `name` in it, with `mode`.
    pub fn dir(&self, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
