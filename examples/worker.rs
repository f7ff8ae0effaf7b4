//! A small worker for recluster's demo and tests. It prints one line per event, each with a single
//! `write`, so lines from many workers never mix:
//!
//! ```text
//! report id=0 pid=.. fds=0,1,2 nofile=.. uid=.. gid=.. groups=.. cpus=.. worker_cpus=.. sigblk=.. sigign=.. stdin=/dev/null argv=<hex>,.. bytes=<hex>
//! grandchild id=0 pid=..        daemon id=0 pid=..        orphan id=0 pid=.. ppid=..
//! ready id=0 pid=.. pgid=.. ppid=.. gen=0 count=4 recluster_pid=..
//! signal SIGTERM id=0 pid=..
//! exit id=0 pid=.. code=0
//! ```
//!
//! `--version-file PATH` reads the version from a file at start; `broken` there makes the worker
//! print `broken id=.. pid=..` and exit 1 at once (a release that cannot start); `silent` makes it
//! run but never send the READY=1 that `--notify` asks for (a release that never gets ready).
//! `--bind PORT` (after `--bind-after MS`; `--bind env`: the port in `PORT`) listens on 127.0.0.1:PORT itself, printing
//! `bound id=.. pid=.. port=..`.
//! `--notify MS` sends `READY=1` on `NOTIFY_SOCKET` MS milliseconds after start (printing
//! `notifying id=.. pid=..` just before).
//!
//! Options: `--report`; `--grandchild` (a `sleep 1000` in the worker's process group that ignores
//! TERM and INT); `--daemon` (the same in a session of its own); `--orphan` (a grandchild whose parent
//! exits at once, so recluster adopts it; it prints its pid and exits); `--ignore SIG` (print it, keep
//! running; repeatable); `--on-stop exit|die` (INT, TERM, QUIT: exit 0, or die of the signal);
//! `--exit CODE` and `--exit-for ID:CODE` (exit with CODE after `--after MS`, default at once).
//! `--grow-for ID:MB`: worker ID allocates and touches MB megabytes, then prints `grown …`.
//! `--watchdog-ping` (and `--watchdog-stop-for ID:MS`): ping the watchdog, stop for worker ID.
//! `--messages`: print `message id=.. pid=.. json=…` for each message on `RECLUSTER_MSG_FD`;
//! `--send-on-usr1 JSON`: send JSON there on SIGUSR1 (then print `sent id=.. pid=..`).
//! `--late-line MS`: a child writes `late id=..` on stderr MS ms later (after the worker may have
//! exited). `--lines N`: print `line id=.. pid=.. n=K` N times on stdout and `eline …` on stderr, each in
//! two writes (the text, then the newline), as Python does unbuffered.
//!
//! `--serve` checks the sockets recluster passed strictly (`LISTEN_PID` is this pid, `LISTEN_FDS`
//! sockets from fd 3, each listening), prints
//! `listening id=0 pid=.. fds=3 names=listen sockets=<inode>,.. addresses=127.0.0.1:3000,..`, and
//! (after `--serve-after MS`, or as many ms as `--serve-after-file PATH` holds at start, a server's own start-up time, it sets `O_NONBLOCK` on them and) answers every HTTP request on them with `id=0 pid=.. gen=0 version=V cpu=C` (`--version V`; C the CPU it answers on). On INT,
//! TERM or QUIT it stops accepting, finishes what it accepted and exits 0; on USR2 it does the same
//! but stays, printing `idle id=.. pid=..`; on USR1 it prints `flags id=.. pid=.. nonblock=1,..`,
//! whether each of its sockets is `O_NONBLOCK` now. `accepting id=.. pid=..` says it has set
//! `O_NONBLOCK` and begins to accept. A drain first prints
//! `served id=.. pid=.. connections=N requests=N`.
//!
//! `#![no_main]`, like recluster, so Rust's runtime does not ignore SIGPIPE and `sigign` in the
//! report shows what recluster handed over.

#![no_main]

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recluster::process::signal::Sig;

#[derive(Default)]
struct Options {
    report: bool,
    grandchild: bool,
    daemon: bool,
    orphan: bool,
    ignore: Vec<Sig>,
    serve: bool,
    serve_after: Duration,
    version: String,
    notify_after: Option<Duration>,
    bind: Option<u16>,
    bind_after: Duration,
    die_on_stop: bool,
    exit: Option<i32>,
    exit_for: Vec<(u32, i32)>,
    after: Duration,
    lines: u32,
    late_line: Option<Duration>,
    watchdog_ping: bool,
    watchdog_stop_for: Option<(u32, Duration)>,
    grow_for: Option<(u32, usize)>,
    messages: bool,
    send_on_usr1: Option<String>,
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    run()
}

// The grandchild and the daemon are left unwaited on purpose: what becomes of them is what the
// tests look at.
#[allow(clippy::zombie_processes)]
fn run() -> ! {
    let id: u32 = std::env::var("WORKER_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let options = parse_options();
    let pid = std::process::id();
    if options.report {
        report(id, pid);
    }
    if options.grandchild {
        let child = ignoring_term("sleep 1000")
            .spawn()
            .expect("spawn grandchild");
        say(&format!("grandchild id={id} pid={}", child.id()));
    }
    if options.daemon {
        let mut command = ignoring_term("sleep 1000");
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        let child = command.spawn().expect("spawn daemon");
        say(&format!("daemon id={id} pid={}", child.id()));
    }
    if options.orphan {
        make_orphan(id);
    }
    if options.lines > 0 {
        print_lines(id, pid, options.lines);
    }
    if let Some(after) = options.late_line {
        late_line(id, after);
    }
    if options.version == "broken" {
        // A release that cannot start.
        say(&format!("broken id={id} pid={pid}"));
        std::process::exit(1);
    }
    block_all_signals();
    let server = options
        .serve
        .then(|| serve::start(id, &options.version, options.serve_after));
    // SAFETY: plain queries of this process's ids.
    let (pgid, ppid) = unsafe { (libc::getpgrp(), libc::getppid()) };
    say(&format!(
        "ready id={id} pid={pid} pgid={pgid} ppid={ppid} gen={} count={} recluster_pid={}",
        var("WORKER_GENERATION"),
        var("WORKER_COUNT"),
        var("RECLUSTER_PID")
    ));

    // A release that starts but never reports ready.
    let notify_after = options.notify_after.filter(|_| options.version != "silent");
    if let Some(after) = notify_after {
        notify_ready_after(id, after);
    }
    if let Some((for_id, mb)) = options.grow_for
        && for_id == id
    {
        // A leak: MB megabytes, every page touched, kept.
        say(&format!("growing id={id} pid={pid} mb={mb}"));
        let grown = vec![1u8; mb << 20];
        std::mem::forget(grown);
        say(&format!("grown id={id} pid={pid} mb={mb}"));
    }
    if options.watchdog_ping {
        let stop_after = options
            .watchdog_stop_for
            .filter(|(for_id, _)| *for_id == id)
            .map(|(_, after)| after);
        ping_watchdog(id, stop_after);
    }
    if let Some(port) = options.bind {
        bind_after(id, port, options.bind_after);
    }
    if options.messages {
        read_messages(id, pid);
    }
    let exit_code = options
        .exit_for
        .iter()
        .find(|(for_id, _)| *for_id == id)
        .map(|&(_, code)| code)
        .or(options.exit);
    let exit_at = exit_code.map(|_| Instant::now() + options.after);
    loop {
        let timeout = exit_at.map(|at| at.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            finish(id, pid, exit_code.unwrap_or(0));
        }
        let Some(sig) = wait_for_signal(timeout) else {
            continue;
        };
        say(&format!("signal {sig} id={id} pid={pid}"));
        if let Some(message) = &options.send_on_usr1
            && sig.number() == libc::SIGUSR1
        {
            send_message(message);
            say(&format!("sent id={id} pid={pid}"));
        }
        if let Some(server) = &server
            && sig.number() == libc::SIGUSR1
        {
            say(&format!(
                "flags id={id} pid={pid} nonblock={}",
                server.nonblocking()
            ));
        }
        if let Some(server) = &server
            && sig.number() == libc::SIGUSR2
        {
            server.drain();
            say(&format!("idle id={id} pid={pid}"));
        }
        let stops = [Sig::INT, Sig::TERM, Sig::QUIT].contains(&sig);
        if stops && !options.ignore.contains(&sig) {
            if let Some(server) = &server {
                server.drain();
            }
            if options.die_on_stop {
                die_of(sig);
            }
            finish(id, pid, 0);
        }
    }
}

fn parse_options() -> Options {
    let mut options = Options::default();
    let mut args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--report" => options.report = true,
            "--grandchild" => options.grandchild = true,
            "--daemon" => options.daemon = true,
            "--orphan" => options.orphan = true,
            "--serve" => options.serve = true,
            "--serve-after" => {
                options.serve_after =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage("bad ms")))
            }
            "--serve-after-file" => {
                let path = value();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| usage(&format!("{path}: {e}")));
                options.serve_after = Duration::from_millis(
                    text.trim()
                        .parse()
                        .unwrap_or_else(|_| usage("bad ms in file")),
                )
            }
            "--bind" => {
                // `env`: the port in PORT (recluster's --port-per-worker).
                let port = match value() {
                    text if text == "env" => var("PORT"),
                    text => text,
                };
                options.bind = Some(port.parse().unwrap_or_else(|_| usage("bad port")))
            }
            "--bind-after" => {
                options.bind_after =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage("bad ms")))
            }
            "--notify" => {
                options.notify_after = Some(Duration::from_millis(
                    value().parse().unwrap_or_else(|_| usage("bad ms")),
                ))
            }
            "--version" => options.version = value(),
            "--version-file" => {
                let path = value();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| usage(&format!("{path}: {e}")));
                options.version = text.trim().to_string();
            }
            "--messages" => options.messages = true,
            "--send-on-usr1" => options.send_on_usr1 = Some(value()),
            "--ignore" => options
                .ignore
                .push(value().parse().unwrap_or_else(|_| usage("bad signal"))),
            "--on-stop" => options.die_on_stop = value() == "die",
            "--exit" => options.exit = Some(value().parse().unwrap_or_else(|_| usage("bad code"))),
            "--exit-for" => options.exit_for.push(for_worker(&arg, &value())),
            "--watchdog-ping" => options.watchdog_ping = true,
            "--grow-for" => options.grow_for = Some(for_worker(&arg, &value())),
            "--watchdog-stop-for" => {
                let (id, ms) = for_worker(&arg, &value());
                options.watchdog_stop_for = Some((id, Duration::from_millis(ms)));
            }
            "--late-line" => {
                options.late_line = Some(Duration::from_millis(
                    value().parse().unwrap_or_else(|_| usage("bad ms")),
                ))
            }
            "--lines" => options.lines = value().parse().unwrap_or_else(|_| usage("bad count")),
            "--after" => {
                options.after =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage("bad ms")))
            }
            // Anything else is an argument the tests pass through to see it arrive intact.
            _ => {}
        }
    }
    options
}

/// `ID:VALUE`, for the options that apply to one worker (`--exit-for 1:3`).
fn for_worker<T: std::str::FromStr>(option: &str, text: &str) -> (u32, T) {
    let parsed = text
        .split_once(':')
        .and_then(|(id, value)| Some((id.parse().ok()?, value.parse().ok()?)));
    parsed.unwrap_or_else(|| usage(&format!("{option} ID:VALUE, not {text:?}")))
}

fn usage(problem: &str) -> ! {
    eprintln!("worker: {problem}");
    std::process::exit(2)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "-".to_string())
}

/// One line, one write: atomic on a pipe, never interleaved with another worker's line.
fn say(line: &str) {
    let _ = std::io::stdout()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn report(id: u32, pid: u32) {
    // SAFETY: F_GETFD only queries the descriptor table.
    let fds: Vec<String> = (0..1024)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .map(|fd| fd.to_string())
        .collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let stdin =
        std::fs::read_link("/proc/self/fd/0").map_or("-".into(), |p| p.display().to_string());
    let argv: Vec<String> = std::env::args_os().map(|a| hex(a.as_bytes())).collect();
    let bytes = std::env::var_os("RECLUSTER_TEST_BYTES").unwrap_or_default();
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    say(&format!(
        "report id={id} pid={pid} fds={} nofile={} uid={} gid={} groups={} cpus={} worker_cpus={} sigblk={} sigign={} stdin={stdin} argv={} bytes={}",
        fds.join(","),
        nofile.rlim_cur,
        field("Uid:").split_whitespace().next().unwrap_or("-"),
        field("Gid:").split_whitespace().next().unwrap_or("-"),
        field("Groups:")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(","),
        field("Cpus_allowed_list:"),
        var("WORKER_CPUS"),
        field("SigBlk:"),
        field("SigIgn:"),
        argv.join(","),
        hex(bytes.as_bytes())
    ));
}

fn ignoring_term(command: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("trap '' TERM INT; exec {command}"))
        .stdin(Stdio::null());
    c
}

/// A grandchild whose parent exits at once: it is reparented (to recluster, the subreaper), prints
/// its new parent, and exits.
fn make_orphan(id: u32) {
    // SAFETY: this program is single-threaded, so the forked children may run ordinary code.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            let parent = libc::getpid();
            if libc::fork() == 0 {
                // Once its parent is gone, say who adopted it (bounded: 10 s at most).
                for _ in 0..10_000 {
                    if libc::getppid() != parent {
                        break;
                    }
                    libc::usleep(1000);
                }
                say(&format!(
                    "orphan id={id} pid={} ppid={}",
                    libc::getpid(),
                    libc::getppid()
                ));
                libc::_exit(0);
            }
            libc::_exit(0);
        }
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
}

fn block_all_signals() {
    // SAFETY: an initialised, full signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The next signal, or `None` after `timeout`.
fn wait_for_signal(timeout: Option<Duration>) -> Option<Sig> {
    // SAFETY: initialised set and timespec; sigtimedwait/sigwaitinfo only write the result.
    let number = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigdelset(&mut set, libc::SIGCHLD);
        match timeout {
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
            }
            None => libc::sigwaitinfo(&set, std::ptr::null_mut()),
        }
    };
    Sig::from_number(number)
}

/// Sends READY=1 on $NOTIFY_SOCKET after `after` (from a thread: the main one waits for signals).
fn notify_ready_after(id: u32, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after); // the worker's own start-up time, not a test's synchronisation
        let path = std::env::var_os("NOTIFY_SOCKET").unwrap_or_else(|| usage("no NOTIFY_SOCKET"));
        let socket = std::os::unix::net::UnixDatagram::unbound().expect("a datagram socket");
        say(&format!("notifying id={id} pid={}", std::process::id()));
        socket
            .send_to(b"READY=1\nSTATUS=serving", path)
            .expect("send READY=1");
    });
}

/// `--watchdog-ping`: WATCHDOG=1 on NOTIFY_SOCKET three times per WATCHDOG_USEC, checking
/// WATCHDOG_PID is this process; with `--watchdog-stop-for ID:MS`, worker ID stops after MS
/// (printing `silent id=.. pid=..`).
fn ping_watchdog(id: u32, stop_after: Option<Duration>) {
    let pid = std::process::id();
    if var("WATCHDOG_PID") != pid.to_string() {
        say(&format!(
            "error id={id} pid={pid} WATCHDOG_PID is not this process"
        ));
        std::process::exit(3);
    }
    let usec: u64 = var("WATCHDOG_USEC")
        .parse()
        .unwrap_or_else(|_| usage("no WATCHDOG_USEC"));
    let path = std::env::var_os("NOTIFY_SOCKET").unwrap_or_else(|| usage("no NOTIFY_SOCKET"));
    std::thread::spawn(move || {
        let started = Instant::now();
        let socket = std::os::unix::net::UnixDatagram::unbound().expect("a datagram socket");
        loop {
            if stop_after.is_some_and(|after| started.elapsed() >= after) {
                say(&format!("silent id={id} pid={pid}"));
                return;
            }
            let _ = socket.send_to(b"WATCHDOG=1", &path);
            std::thread::sleep(Duration::from_micros(usec / 3)); // the worker's own rhythm
        }
    });
}

/// Binds 127.0.0.1:PORT itself (SO_REUSEPORT, as self-binding servers do) after `after`, and
/// keeps listening.
fn bind_after(id: u32, port: u16, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after); // the worker's own start-up time
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        socket.bind(&address.into()).expect("bind");
        socket.listen(16).expect("listen");
        say(&format!(
            "bound id={id} pid={} port={port}",
            std::process::id()
        ));
        std::mem::forget(socket);
    });
}

/// `--lines N`: N numbered lines on stdout and N on stderr, each written as Python does under
/// PYTHONUNBUFFERED — the text, then the newline, in two writes — so without recluster's
/// `--prefix` two workers' lines can mix.
fn print_lines(id: u32, pid: u32, count: u32) {
    for n in 0..count {
        for (fd, kind) in [(1, "line"), (2, "eline")] {
            let text = format!("{kind} id={id} pid={pid} n={n}");
            // SAFETY: writes from valid buffers to this process's stdout and stderr.
            unsafe {
                libc::write(fd, text.as_ptr().cast(), text.len());
                libc::write(fd, b"\n".as_ptr().cast(), 1);
            }
        }
    }
}

/// `--late-line MS`: a child that writes `late id=..` on stderr MS ms later, then exits — after
/// the worker itself may have exited, so the worker's output is not over when it is.
fn late_line(id: u32, after: Duration) {
    // SAFETY: this program is single-threaded here, so the forked child may run ordinary code.
    unsafe {
        if libc::fork() == 0 {
            std::thread::sleep(after); // the child's own timing, not a test's synchronisation
            let text = format!("late id={id}\n");
            libc::write(2, text.as_ptr().cast(), text.len());
            libc::_exit(0);
        }
    }
}

fn finish(id: u32, pid: u32, code: i32) -> ! {
    say(&format!("exit id={id} pid={pid} code={code}"));
    std::process::exit(code)
}

fn die_of(sig: Sig) -> ! {
    // SAFETY: restore the default action, unblock, and send the signal to this process.
    unsafe {
        libc::signal(sig.number(), libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig.number());
        libc::raise(sig.number());
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    std::process::exit(128 + sig.number())
}

/// A small HTTP/1.1 server on the sockets recluster passed: one thread accepts on all of them, one
/// thread per connection answers (keep-alive), a drain stops accepting and waits for them.
mod serve {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::say;

    pub struct Server {
        shared: Arc<Shared>,
        fds: Vec<i32>,
        wake: i32,
        id: u32,
    }

    struct Shared {
        draining: AtomicBool,
        connections: AtomicU64,
        requests: AtomicU64,
        in_flight: Mutex<usize>,
        done: Condvar,
        body: String,
    }

    pub fn start(id: u32, version: &str, serve_after: Duration) -> Server {
        let pid = std::process::id();
        let fds = check_listen_fds(id, pid);
        let mut inodes = Vec::new();
        let mut addresses = Vec::new();
        for &fd in &fds {
            inodes.push(
                std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|l| l.display().to_string())
                    .unwrap_or_default()
                    .trim_start_matches("socket:[")
                    .trim_end_matches(']')
                    .to_string(),
            );
            addresses.push(local_address(fd));
        }
        let mut pipe = [0; 2];
        // SAFETY: pipe2 writes two fds into a valid array.
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
        let shared = Arc::new(Shared {
            draining: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            // The accept thread counts as one until it returns: a drain waits for it, then for
            // every connection it accepted (none slips in between the two).
            in_flight: Mutex::new(1),
            done: Condvar::new(),
            body: format!(
                "id={id} pid={pid} gen={} version={version}",
                std::env::var("WORKER_GENERATION").unwrap_or_default()
            ),
        });
        let accepting = Arc::clone(&shared);
        let wake_read = pipe[0];
        let listen_fds = fds.clone();
        std::thread::spawn(move || {
            // A server that needs time (loading, warming caches) before it accepts.
            // A drain during that time ends it (the wake pipe becomes readable).
            let mut wait = libc::pollfd {
                fd: wake_read,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = serve_after.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            if ms > 0 && unsafe { libc::poll(&mut wait, 1, ms) } > 0 {
                *accepting.in_flight.lock().unwrap() -= 1;
                accepting.done.notify_all();
                return;
            }
            // Only then does it make its sockets non-blocking, as an event-loop server does
            // when it starts accepting.
            for &fd in &fds {
                // SAFETY: F_SETFL on a descriptor this process was given.
                unsafe {
                    libc::fcntl(
                        fd,
                        libc::F_SETFL,
                        libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
                    )
                };
            }
            say(&format!("accepting id={id} pid={pid}"));
            accept_loop(&fds, wake_read, &accepting);
            *accepting.in_flight.lock().unwrap() -= 1;
            accepting.done.notify_all();
        });
        say(&format!(
            "listening id={id} pid={pid} fds={} names={} sockets={} addresses={}",
            (3..3 + inodes.len())
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(","),
            std::env::var("LISTEN_FDNAMES").unwrap_or_default(),
            inodes.join(","),
            addresses.join(",")
        ));
        Server {
            shared,
            fds: listen_fds,
            wake: pipe[1],
            id,
        }
    }

    impl Server {
        /// `1` or `0` per socket: whether it is `O_NONBLOCK` now (the flag lives in the open file
        /// description, which every process holding the socket shares).
        pub fn nonblocking(&self) -> String {
            self.fds
                .iter()
                .map(|&fd| {
                    // SAFETY: F_GETFL only queries a descriptor this process holds.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                    if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        }

        /// Stops accepting, ends keep-alive connections after their current request, waits.
        pub fn drain(&self) {
            self.shared.draining.store(true, Ordering::SeqCst);
            // SAFETY: a one-byte write to our own pipe.
            unsafe { libc::write(self.wake, b"x".as_ptr().cast(), 1) };
            let mut in_flight = self.shared.in_flight.lock().unwrap();
            while *in_flight > 0 {
                in_flight = self.shared.done.wait(in_flight).unwrap();
            }
            say(&format!(
                "served id={} pid={} connections={} requests={}",
                self.id,
                std::process::id(),
                self.shared.connections.load(Ordering::SeqCst),
                self.shared.requests.load(Ordering::SeqCst)
            ));
        }
    }

    /// The strict systemd check: LISTEN_PID must be this process, fds 3.. listening sockets.
    fn check_listen_fds(id: u32, pid: u32) -> Vec<i32> {
        let fail = |why: String| -> ! {
            say(&format!("error id={id} pid={pid} {why}"));
            std::process::exit(3)
        };
        let listen_pid = std::env::var("LISTEN_PID").unwrap_or_default();
        if listen_pid != pid.to_string() {
            fail(format!("LISTEN_PID={listen_pid:?} is not this process"));
        }
        let count: i32 = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fail("no LISTEN_FDS".to_string()));
        let fds: Vec<i32> = (3..3 + count).collect();
        for &fd in &fds {
            let mut listening: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes an int into a valid buffer.
            let ok = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ACCEPTCONN,
                    (&mut listening as *mut libc::c_int).cast(),
                    &mut len,
                )
            } == 0;
            if !ok || listening != 1 {
                fail(format!("fd {fd} is not a listening socket"));
            }
        }
        fds
    }

    fn local_address(fd: i32) -> String {
        // SAFETY: the listener is borrowed for one query and never closed here.
        let listener =
            std::mem::ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(fd) });
        listener
            .local_addr()
            .map_or_else(|_| "unix".to_string(), |a| a.to_string())
    }

    fn accept_loop(fds: &[i32], wake: i32, shared: &Arc<Shared>) {
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .chain(std::iter::once(&wake))
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        loop {
            // SAFETY: a valid array of pollfd.
            unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
            if shared.draining.load(Ordering::SeqCst) {
                return;
            }
            for entry in &polled[..fds.len()] {
                if entry.revents == 0 {
                    continue;
                }
                loop {
                    // SAFETY: accept4 on a listening socket; no address wanted.
                    let conn = unsafe {
                        libc::accept4(
                            entry.fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if conn < 0 {
                        break; // EAGAIN: another worker took it, or the queue is empty
                    }
                    *shared.in_flight.lock().unwrap() += 1;
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::clone(shared);
                    std::thread::spawn(move || {
                        // SAFETY: a connection this thread now owns.
                        let stream = unsafe { TcpStream::from_raw_fd(conn) };
                        answer(stream, &shared);
                        let mut in_flight = shared.in_flight.lock().unwrap();
                        *in_flight -= 1;
                        shared.done.notify_all();
                    });
                }
            }
        }
    }

    /// Answers requests on one connection until the client closes it or asks to, or a drain.
    fn answer(mut stream: TcpStream, shared: &Shared) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                match stream.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if shared.draining.load(Ordering::SeqCst) && buffer.is_empty() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            buffer.drain(..end + 4);
            shared.requests.fetch_add(1, Ordering::Relaxed);
            let close =
                head.contains("connection: close") || shared.draining.load(Ordering::SeqCst);
            // The CPU this answer is written on (under --pin, the worker's).
            // SAFETY: sched_getcpu has no arguments and no memory effects.
            let body = format!("{} cpu={}\n", shared.body, unsafe { libc::sched_getcpu() });
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
                body.len(),
                if close { "close" } else { "keep-alive" },
                body
            );
            if stream.write_all(response.as_bytes()).is_err() || close {
                return;
            }
        }
    }
}

/// The message socket recluster passed (`RECLUSTER_MSG_FD`).
fn message_fd() -> i32 {
    var("RECLUSTER_MSG_FD")
        .parse()
        .unwrap_or_else(|_| usage("no RECLUSTER_MSG_FD"))
}

/// `--messages`: prints `message id=.. pid=.. json=<the line>` for each message (one JSON object
/// per line), from a thread of its own.
fn read_messages(id: u32, pid: u32) {
    use std::io::BufRead;
    use std::os::fd::FromRawFd;
    let fd = message_fd();
    std::thread::spawn(move || {
        // SAFETY: the inherited message socket, owned by this reader from now on (writes use
        // the same number, which stays open while this process runs).
        let socket = unsafe { std::fs::File::from_raw_fd(libc::dup(fd)) };
        for line in std::io::BufReader::new(socket).lines() {
            let Ok(line) = line else { return };
            say(&format!("message id={id} pid={pid} json={line}"));
        }
    });
}

/// `--send-on-usr1 JSON`: sends JSON as one message (one line).
fn send_message(message: &str) {
    let line = format!("{message}\n");
    // SAFETY: write of a valid buffer on the inherited socket.
    let sent = unsafe { libc::write(message_fd(), line.as_ptr().cast(), line.len()) };
    if sent < 0 {
        usage(&format!("send: {}", std::io::Error::last_os_error()));
    }
}
