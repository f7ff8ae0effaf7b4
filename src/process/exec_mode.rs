//! `--exec`: the single-process debug mode. recluster binds the sockets (or takes those it was
//! started with), gives the command the environment worker 0 of 1 would get — `WORKER_ID=0`,
//! `WORKER_COUNT=1`, the `LISTEN_*` variables with `LISTEN_PID` its own pid, which an exec keeps,
//! the variables of `--env-file` —
//! and execs the command in its own place: no supervisor, so a debugger, `strace` or a profiler
//! sees the program itself. The service manager's `NOTIFY_SOCKET` and `WATCHDOG_*`, if any, are
//! the program's now. `--user` applies to it; flags that need a supervisor (`--prefix`,
//! `--watchdog`, `--max-memory`, `--on`) are refused with `--exec`.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::config::validated::Config;
use crate::net::socket::Sockets;
use crate::process::startup::Inherited;

/// Replaces recluster with the command; returns only if the exec failed.
pub fn exec_in_place(config: &Config, sockets: &Sockets, inherited: &Inherited) -> io::Error {
    let fds: Vec<i32> = sockets.listeners().iter().map(|l| l.fd()).collect();
    if let Err(e) = place_at_3(&fds) {
        return e;
    }
    if let Some(cpus) = config.placement.binding(0) {
        let set = cpus.to_libc();
        // SAFETY: sched_setaffinity reads a valid cpu_set_t for this process.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0
        {
            return io::Error::last_os_error();
        }
    }
    if let Some(user) = &config.user {
        // No other thread runs in this process yet: the ordinary calls change it whole.
        // SAFETY: setgroups reads `groups.len()` gids from a valid slice; setgid and setuid take
        // plain ids.
        let dropped = unsafe {
            libc::setgroups(user.groups.len(), user.groups.as_ptr()) == 0
                && libc::setgid(user.gid) == 0
                && libc::setuid(user.uid) == 0
        };
        if !dropped {
            return io::Error::last_os_error();
        }
    }
    if let Some(limit) = &inherited.fd_limit {
        // SAFETY: setrlimit reads a valid rlimit: the limit recluster was started with.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    }
    let pid = std::process::id().to_string();
    let mut command = Command::new(&config.command[0]);
    command.args(&config.command[1..]);
    for key in [
        "EINHORN_FD_COUNT",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        command.env_remove(key);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EINHORN_FD_") {
            command.env_remove(key);
        }
    }
    let vars: [(&str, OsString); 5] = [
        ("WORKER_ID", "0".into()),
        ("WORKER_COUNT", "1".into()),
        ("WORKER_GENERATION", "0".into()),
        ("RECLUSTER_PID", pid.clone().into()),
        (
            "WORKER_CPUS",
            config.placement.worker_cpus(0).to_string().into(),
        ),
    ];
    command.envs(vars);
    command.envs(&config.env.vars);
    if !fds.is_empty() {
        let names: Vec<&str> = sockets
            .listeners()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        command
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_PID", &pid)
            .env("LISTEN_FDNAMES", names.join(":"))
            .env("EINHORN_FD_COUNT", fds.len().to_string());
        for i in 0..fds.len() {
            command.env(format!("EINHORN_FD_{i}"), (3 + i).to_string());
        }
    }
    log::info!("--exec: running the command in place of recluster (pid {pid}), with no supervisor");
    // Signals recluster ignored itself go back to their default (exec keeps an ignored one).
    for &number in &inherited.signals_to_reset {
        // SAFETY: SIG_DFL installs no handler code.
        unsafe { libc::signal(number, libc::SIG_DFL) };
    }
    command.exec()
}

/// Moves the sockets to fds 3, 4, … (first above that range, so no source and target collide),
/// without close-on-exec.
fn place_at_3(fds: &[i32]) -> io::Result<()> {
    let floor = 3 + fds.len() as i32;
    let mut moved = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor this process holds.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        moved.push(copy);
    }
    for (i, &copy) in moved.iter().enumerate() {
        // SAFETY: dup2 onto a target in 3..floor; it clears close-on-exec on the target.
        if unsafe { libc::dup2(copy, 3 + i as i32) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the copy is ours and no longer needed.
        unsafe { libc::close(copy) };
    }
    Ok(())
}
