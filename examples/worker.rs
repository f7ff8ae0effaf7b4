//! A small worker for recluster's demo and tests. It prints one line per event, each with a single
//! `write`, so lines from many workers never mix:
//!
//! ```text
//! report id=0 pid=.. fds=0,1,2 sigblk=.. sigign=.. stdin=/dev/null argv=<hex>,.. bytes=<hex>
//! grandchild id=0 pid=..        daemon id=0 pid=..        orphan id=0 pid=..
//! ready id=0 pid=.. pgid=.. ppid=.. gen=0 count=4 recluster_pid=..
//! signal SIGTERM id=0 pid=..
//! exit id=0 pid=.. code=0
//! ```
//!
//! Options: `--report`; `--grandchild` (a `sleep 1000` in the worker's process group that ignores
//! TERM and INT); `--daemon` (the same in a session of its own); `--orphan` (a grandchild whose parent
//! exits at once, so recluster adopts it; it prints its pid and exits); `--ignore SIG` (print it, keep
//! running; repeatable); `--on-stop exit|die` (INT, TERM, QUIT: exit 0, or die of the signal);
//! `--exit CODE` and `--exit-for ID:CODE` (exit with CODE after `--after MS`, default at once).
//!
//! `#![no_main]`, like recluster, so Rust's runtime does not ignore SIGPIPE and `sigign` in the
//! report shows what recluster handed over.

#![no_main]

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recluster::signal::Sig;

#[derive(Default)]
struct Options {
    report: bool,
    grandchild: bool,
    daemon: bool,
    orphan: bool,
    ignore: Vec<Sig>,
    die_on_stop: bool,
    exit: Option<i32>,
    exit_for: Vec<(u32, i32)>,
    after: Duration,
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
    block_all_signals();
    // SAFETY: plain queries of this process's ids.
    let (pgid, ppid) = unsafe { (libc::getpgrp(), libc::getppid()) };
    say(&format!(
        "ready id={id} pid={pid} pgid={pgid} ppid={ppid} gen={} count={} recluster_pid={}",
        var("WORKER_GENERATION"),
        var("WORKER_COUNT"),
        var("RECLUSTER_PID")
    ));

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
        let stops = [Sig::INT, Sig::TERM, Sig::QUIT].contains(&sig);
        if stops && !options.ignore.contains(&sig) {
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
            "--ignore" => options
                .ignore
                .push(value().parse().unwrap_or_else(|_| usage("bad signal"))),
            "--on-stop" => options.die_on_stop = value() == "die",
            "--exit" => options.exit = Some(value().parse().unwrap_or_else(|_| usage("bad code"))),
            "--exit-for" => {
                let v = value();
                let (id, code) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("--exit-for ID:CODE"));
                options.exit_for.push((
                    id.parse().unwrap_or_else(|_| usage("bad id")),
                    code.parse().unwrap_or_else(|_| usage("bad code")),
                ));
            }
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
    say(&format!(
        "report id={id} pid={pid} fds={} sigblk={} sigign={} stdin={stdin} argv={} bytes={}",
        fds.join(","),
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

/// A grandchild whose parent exits at once: it is reparented to recluster, prints, and exits.
fn make_orphan(id: u32) {
    // SAFETY: this program is single-threaded, so the forked children may run ordinary code.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            if libc::fork() == 0 {
                say(&format!("orphan id={id} pid={}", libc::getpid()));
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
