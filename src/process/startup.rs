//! What recluster does to its own process before anything else runs: make fds 0–2 valid, note which
//! signal dispositions its caller left ignored (and undo an ignored SIGCHLD), ignore SIGPIPE
//! itself (a closed log pipe must give EPIPE, not death), mark every inherited fd close-on-exec so
//! none leaks into a worker, become a child subreaper, raise its own open-files limit (workers get the one it was started with),
//! block the signals that the signal thread will receive, and in a static build keep glibc's name
//! service to the sources linked in.
//!
//! The binary is `#![no_main]` so that this runs before Rust's runtime could have changed SIGPIPE:
//! that is the only way to know whether the caller ignored it (tini keeps such signals ignored).

use std::io;

/// What the startup learned that spawning must undo in each child.
#[derive(Debug, Clone)]
pub struct Inherited {
    /// Signals recluster set to ignore itself; children get them back at their default.
    pub signals_to_reset: Vec<i32>,
    /// The open-files limit recluster was started with, when it raised its own (`raise_fd_limit`):
    /// every worker gets this one back.
    pub fd_limit: Option<libc::rlimit>,
}

/// File descriptors recluster keeps for itself besides those per worker (0–2, /dev/null, the
/// notify thread's pipe, a spawn's error pipe, /proc reads, the service manager's socket), with room.
pub const RESERVED_FDS: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go does since 1.19 and systemd
/// recommends (the soft 1024 exists only for `select`, which recluster does not use), so scaling
/// up later finds room too. Returns the limit recluster was started with if it changed it
/// (workers get it back); an error text naming the limit if even the hard limit cannot hold the
/// `need` descriptors that the cluster asked for needs.
pub fn raise_fd_limit(need: u64) -> Result<Option<libc::rlimit>, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(None); // nothing known: leave it, EMFILE will name itself
    }
    if need > limit.rlim_max {
        return Err(format!(
            "about {need} open files, but the hard limit on open files (RLIMIT_NOFILE) is {}: raise it (ulimit -Hn, LimitNOFILE= in a systemd unit, docker run --ulimit nofile=) or run fewer workers",
            limit.rlim_max
        ));
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        if need <= limit.rlim_cur {
            return Ok(None);
        }
        return Err(format!(
            "about {need} open files, but the limit on open files (RLIMIT_NOFILE) is {} and could not be raised to the hard limit {}: {}",
            limit.rlim_cur,
            limit.rlim_max,
            io::Error::last_os_error()
        ));
    }
    log::debug!(
        "raised the open-files limit from {} to {} (workers get {})",
        limit.rlim_cur,
        limit.rlim_max,
        limit.rlim_cur
    );
    Ok(Some(limit))
}

/// One malloc arena for every thread. glibc gives each thread that allocates an arena of its
/// own (a heap mapped per thread); recluster's threads (signals, control, admin, notify,
/// messages) allocate little and rarely at once, so sharing the main arena costs no waiting and
/// keeps their heaps out of recluster's resident memory.
pub fn share_one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Opens /dev/null on any of fds 0–2 that is closed, so no later file lands there by accident.
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: a NUL-terminated literal path; the lowest free fd (this one) is taken.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Ignores SIGPIPE, remembering whether the caller had ignored it already.
pub fn ignore_sigpipe() -> Inherited {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action only queries.
    let was_ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    };
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Inherited {
        signals_to_reset: if was_ignored {
            vec![]
        } else {
            vec![libc::SIGPIPE]
        },
        fd_limit: None,
    }
}

/// Sets SIGCHLD back to its default if the caller left it ignored (`env --ignore-signal=CHLD`,
/// some init scripts): ignored, it makes the kernel reap children itself and report no exit, so
/// recluster would wait for ever. Workers then inherit the default too — the one ignored signal
/// recluster does not pass on as it came.
pub fn reset_sigchld() {
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Marks every fd from 3 up close-on-exec: whatever recluster's caller leaked to it goes no further.
pub fn close_inherited_fds_on_exec() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on open descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if done {
        return Ok(());
    }
    // Kernels before 5.11: set the flag on each open fd listed in /proc.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor that may have closed since (the listing's own) only fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Orphaned descendants get reparented to recluster (not to PID 1), which reaps them.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every signal the signal thread receives with `sigwaitinfo`: all but the ones that cannot be
/// caught, the synchronous faults (which must kill recluster if it faults), SIGABRT (so that an
/// abort aborts) and SIGPIPE (ignored instead).
pub fn handled_signals() -> libc::sigset_t {
    let excluded = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGABRT,
        libc::SIGPIPE,
    ];
    // SAFETY: sigemptyset initialises the set before use; sigaddset takes valid numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for number in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            if !excluded.contains(&number) {
                libc::sigaddset(&mut set, number);
            }
        }
        set
    }
}

/// Blocks the handled signals in the calling thread; threads started afterwards inherit the mask.
/// Must run on the main thread before any other thread exists.
pub fn block_handled_signals() -> io::Result<()> {
    let set = handled_signals();
    // SAFETY: a valid, initialised set; no old mask wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// True when this process is PID 1 of its namespace (then the kernel will not stop it for SIGSTOP).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// In a static build (`scripts/build-static`), limits glibc's name service to the sources linked
/// into the binary: users and groups from /etc/passwd and /etc/group, host names from /etc/hosts
/// and DNS. Any other source in /etc/nsswitch.conf (systemd, sss, ldap, mdns) would be a shared
/// library that a static program can only `dlopen` together with a second, shared glibc: that
/// crashed `--user` with an unknown name on Debian's default `passwd: files systemd`.
#[cfg(target_feature = "crt-static")]
pub fn builtin_name_services_only() {
    unsafe extern "C" {
        // glibc's own override of a database's nsswitch.conf line (used by its tests and nscd).
        fn __nss_configure_lookup(
            database: *const libc::c_char,
            sources: *const libc::c_char,
        ) -> libc::c_int;
    }
    for (database, sources) in [
        (c"passwd", c"files"),
        (c"group", c"files"),
        (c"hosts", c"files dns"),
    ] {
        // SAFETY: two NUL-terminated strings; glibc copies what it keeps. No other thread runs yet.
        unsafe { __nss_configure_lookup(database.as_ptr(), sources.as_ptr()) };
    }
}

/// A dynamic build loads every source nsswitch.conf names, as any program does.
#[cfg(not(target_feature = "crt-static"))]
pub fn builtin_name_services_only() {}
