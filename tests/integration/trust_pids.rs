//! Pids: a worker recluster has reaped, but not yet forgotten, is never signalled through its
//! old pid. With `--prefix` a worker's exit is held back (up to 200 ms) while a process it left
//! behind holds its output; a signal forwarded meanwhile went to `killpg(pid)`, and so to whatever
//! group had taken that id. Here the attacker takes it deliberately: as soon as recluster has
//! reaped the worker, a process is created with exactly that pid (`clone3` with `set_tid`, which
//! needs CAP_SYS_ADMIN over the pid namespace), makes itself a group leader, and recluster is sent
//! `USR2` to forward.

use std::io;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, Launch, process_state};

/// `clone3` with `set_tid`: a child of the test with exactly the pid `pid`, leader of its own
/// group, waiting to be signalled (`USR2` ends it). Returns once it leads its group.
fn process_with_pid(pid: i32) -> io::Result<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let made = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0);
    let wanted = [pid as libc::pid_t];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: wanted.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 as fork (no CLONE_VM): the child runs on a copy of this memory and makes only
    // async-signal-safe calls, never returning into the test.
    let got = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if got == 0 {
        // SAFETY: the child: sigprocmask, signal, setpgid, write and pause are async-signal-safe.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGUSR2, libc::SIG_DFL);
            libc::setpgid(0, 0);
            libc::write(pipe[1], b"x".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    let result = if got < 0 {
        Err(io::Error::last_os_error())
    } else {
        let mut byte = 0u8;
        // SAFETY: close and read on the pipe's own descriptors, into a valid byte.
        unsafe {
            libc::close(pipe[1]);
            assert_eq!(libc::read(pipe[0], (&raw mut byte).cast(), 1), 1);
        }
        Ok(got as i32)
    };
    // SAFETY: closing the pipe made here (the write end twice at worst: EBADF).
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    result
}

/// The test's process with the chosen pid: killed and reaped when dropped, even on a failure.
struct Chosen(i32);

impl Drop for Chosen {
    fn drop(&mut self) {
        // SAFETY: killing and reaping this test's own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// One try: `Some(forwarded_to_the_reaped_worker, the_other_process_survived)`, `None` where
/// this system cannot choose pids.
fn attack() -> Option<(bool, bool)> {
    // The worker prints its pid, leaves a process (its own session) holding its output, exits.
    let script = "echo pid=$$; setsid sleep 30 </dev/null & sleep 0.3; exit 3";
    let mut cluster: Cluster = Launch::new([
        "-v",
        "-n",
        "1",
        "--prefix",
        "--restart-delay",
        "10s",
        "--",
        "sh",
        "-c",
        script,
    ])
    .start();
    let line = cluster.expect("the worker's pid", |l| l.text.contains("pid="));
    let worker: i32 = line
        .text
        .rsplit("pid=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Reaped by recluster: gone from /proc (a zombie until then).
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_state(worker).is_some() {
        assert!(Instant::now() < deadline, "worker {worker} never reaped");
        std::thread::sleep(Duration::from_micros(200));
    }
    let other = match process_with_pid(worker) {
        Ok(other) => other,
        Err(e) => {
            eprintln!("cannot give a process pid {worker} here ({e}): not tested");
            return None;
        }
    };
    assert_eq!(other, worker);
    let other = Chosen(other);
    cluster.send(libc::SIGUSR2);
    let forwarding = cluster.expect_log("forwarding SIGUSR2 to");
    let hit = forwarding.text.contains("to 1 worker");
    // A USR2 reaching the other process ends it at once: watch it for a while.
    let mut died = false;
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until && !died {
        let mut status = 0;
        // SAFETY: waitpid on this test's own child, without blocking.
        died = unsafe { libc::waitpid(other.0, &mut status, libc::WNOHANG) } == other.0;
        std::thread::sleep(Duration::from_millis(5));
    }
    if died {
        std::mem::forget(other); // reaped already
    }
    cluster.send(libc::SIGTERM);
    cluster.finish();
    Some((hit, !died))
}

#[test]
fn a_reaped_worker_s_pid_taken_by_another_process_gets_no_forwarded_signal() {
    for _try in 0..3 {
        let Some((hit, survived)) = attack() else {
            return;
        };
        if !hit {
            eprintln!("the exit was reported before USR2 came: trying again");
            continue;
        }
        assert!(
            survived,
            "recluster signalled the process that took its reaped worker's pid"
        );
        return;
    }
    panic!("USR2 never came while recluster held the reaped worker's exit back");
}
