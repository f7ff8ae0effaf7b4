//! Starting workers: identity, environment, process groups, a clean start.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use crate::harness::{Cluster, Launch, cluster_args};

/// A clean slate for recluster's caller. glibc's own signals 32 and 33 (below SIGRTMIN) cannot be
/// reset this way and may arrive ignored from a Rust parent: `ignored_signals` leaves them out.
///
/// # Safety
/// Only between fork and exec (it uses async-signal-safe calls only).
unsafe fn default_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        // SAFETY: SIG_DFL installs no code; invalid numbers (KILL, STOP) just fail.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// The ignored-signal mask of a report, without glibc's internal signals 32 and 33.
fn ignored_signals(report: &crate::harness::Line) -> u64 {
    let mask = u64::from_str_radix(report.field("sigign").unwrap(), 16).unwrap();
    mask & !(0b11 << 31)
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

#[test]
fn starts_n_workers_with_ids_and_environment() {
    let mut cluster = Cluster::start(&["-n", "4"], &[]);
    let ready = cluster.ready(4);
    for (i, line) in ready.iter().enumerate() {
        assert_eq!(line.num("id"), i as i32, "{}", line.text);
        assert_eq!(line.num("count"), 4);
        assert_eq!(line.num("gen"), 0);
        assert_eq!(line.num("recluster_pid"), cluster.pid);
        assert_eq!(
            line.num("ppid"),
            cluster.pid,
            "workers are recluster's children"
        );
        assert_eq!(
            line.num("pgid"),
            line.num("pid"),
            "each worker leads its own process group"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn every_worker_starts_clean() {
    // The caller leaks fd 7 into recluster; it must not reach a worker.
    let mut launch = Launch::new(cluster_args(&["-n", "2"], &["--report"]));
    // SAFETY: dup2, fcntl and signal are async-signal-safe.
    unsafe {
        launch.command().pre_exec(|| {
            default_dispositions();
            libc::dup2(2, 7);
            libc::fcntl(7, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut cluster = launch.start();
    for _ in 0..2 {
        let report = cluster.expect("report", |l| l.is_worker("report"));
        // fd 3: the message socket (RECLUSTER_MSG_FD); the caller's fd 7 is not there.
        assert_eq!(report.field("fds"), Some("0,1,2,3"), "{}", report.text);
        assert_eq!(report.field("stdin"), Some("/dev/null"));
        assert_eq!(
            report.field("sigblk"),
            Some("0000000000000000"),
            "empty signal mask"
        );
        assert_eq!(
            ignored_signals(&report),
            0,
            "no ignored signal: {}",
            report.text
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn signals_the_caller_ignored_stay_ignored() {
    let mut launch = Launch::new(cluster_args(&["-n", "1"], &["--report"]));
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        launch.command().pre_exec(|| {
            default_dispositions();
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut cluster = launch.start();
    let report = cluster.expect("report", |l| l.is_worker("report"));
    assert_eq!(
        ignored_signals(&report),
        bit(libc::SIGPIPE) | bit(libc::SIGUSR2),
        "{}",
        report.text
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn an_inherited_ignored_sigchld_is_reset_so_exits_are_still_seen() {
    // With SIGCHLD ignored the kernel reaps children itself and reports nothing: recluster would
    // wait for ever. It is the one ignored signal recluster does not keep, for itself and workers.
    let mut launch = Launch::new(cluster_args(
        &["-n", "1", "--restart", "never"],
        &["--report", "--exit", "0", "--after", "200"],
    ));
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        launch.command().pre_exec(|| {
            default_dispositions();
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut cluster = launch.start();
    let report = cluster.expect("report", |l| l.is_worker("report"));
    assert_eq!(
        ignored_signals(&report) & bit(libc::SIGCHLD),
        0,
        "{}",
        report.text
    );
    assert_eq!(cluster.exit_code(), 0, "the worker's exit ends the cluster");
}

#[test]
fn arguments_and_environment_pass_through_byte_for_byte() {
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff");
    let mut args: Vec<std::ffi::OsString> = cluster_args(&["-n", "1"], &["--report"])
        .into_iter()
        .map(Into::into)
        .collect();
    args.push(odd.to_os_string());
    let mut cluster = Launch::new(args).env("RECLUSTER_TEST_BYTES", odd).start();
    let report = cluster.expect("report", |l| l.is_worker("report"));
    let hex: String = odd.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.field("bytes"), Some(hex.as_str()));
    assert!(
        report.field("argv").unwrap().ends_with(&format!(",{hex}")),
        "{}",
        report.text
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn worker_count_defaults_to_the_cpus_it_may_use() {
    let mut launch = Launch::new(cluster_args(&[], &[]));
    // SAFETY: sched_setaffinity is async-signal-safe; the set is built on the stack.
    unsafe {
        launch.command().pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
    let mut cluster = launch.start();
    let ready = cluster.ready(1);
    assert_eq!(ready[0].num("count"), 1, "pinned to one CPU, one worker");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert_eq!(cluster.seen(|l| l.is_worker("ready")).len(), 1);
}

#[test]
fn a_script_without_shebang_runs_under_sh() {
    let dir = std::env::temp_dir().join(format!("recluster-noshebang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("job");
    std::fs::write(&script, "echo \"ready id=$WORKER_ID pid=$$\"\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cluster =
        Launch::new(["-n", "2", "--restart", "never", script.to_str().unwrap()]).start();
    cluster.ready(2);
    assert_eq!(cluster.exit_code(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_runs_the_command_in_recluster_s_place_as_worker_0_with_its_sockets() {
    let mut cluster = Cluster::start(
        &["--exec", "--listen", "127.0.0.1:0"],
        &["--serve", "--report"],
    );
    let address = cluster.listening(1).remove(0);
    let report = cluster.expect("the report", |l| l.is_worker("report"));
    assert_eq!(
        report.num("pid"),
        cluster.pid,
        "the same process: {}",
        report.text
    );
    // The worker checks LISTEN_PID against its own pid, and fd 3 is a listening socket.
    let listening = cluster.expect("listening", |l| l.is_worker("listening"));
    assert_eq!(listening.field("fds"), Some("3"), "{}", listening.text);
    let ready = cluster.expect("ready", |l| l.is_worker("ready"));
    assert_eq!(ready.field("count"), Some("1"));
    assert_eq!(ready.num("id"), 0);
    assert!(crate::harness::http_get(&address).is_ok());
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0, "the command's own status");
    let (code, _, stderr) = crate::harness::run_to_end(&["--exec", "-n", "2", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("drop -n 2"), "{stderr}");
    // Flags that need a supervisor are refused, not silently ignored.
    let (code, _, stderr) = crate::harness::run_to_end(&["--exec", "--prefix", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--prefix needs recluster to supervise"),
        "{stderr}"
    );
}

#[test]
fn user_runs_workers_as_nobody_without_roots_groups_and_they_get_ready_and_serve() {
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        let (code, _, stderr) = crate::harness::run_to_end(&["--user", "nobody", "--", "true"]);
        assert_eq!(code, 2, "not root: {stderr}");
        assert!(stderr.contains("must run as root"), "{stderr}");
        return;
    }
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--user",
            "nobody",
            "--ready",
            "notify",
            "--min-uptime",
            "1h",
            "--listen",
            "127.0.0.1:0",
        ],
        &["--serve", "--report", "--notify", "0"],
    );
    let address = cluster.listening(1).remove(0);
    for _ in 0..2 {
        let report = cluster.expect("a report", |l| l.is_worker("report"));
        assert_eq!(report.field("uid"), Some("65534"), "{}", report.text);
        let groups = report.field("groups").unwrap_or_default();
        assert!(
            !groups.split(',').any(|g| g == "0"),
            "root's groups: {}",
            report.text
        );
    }
    cluster.expect_log("all 2 workers are ready");
    assert!(crate::harness::http_get(&address).is_ok());
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let (code, _, stderr) =
        crate::harness::run_to_end(&["--user", "no-such-user-here", "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no user \"no-such-user-here\""), "{stderr}");
}
