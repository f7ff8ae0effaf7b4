//! The exit-status table, usage errors and an unusable command.

use crate::harness::{Cluster, run_to_end, worker_bin};

#[test]
fn the_lowest_failing_worker_gives_the_status() {
    let mut cluster = Cluster::start(
        &["-n", "3", "--restart", "never"],
        &[
            "--exit-for",
            "0:0",
            "--exit-for",
            "1:3",
            "--exit-for",
            "2:5",
        ],
    );
    assert_eq!(cluster.exit_code(), 3);
    cluster.expect_log_seen("every worker has ended");
}

#[test]
fn a_worker_killed_by_a_signal_gives_128_plus_n() {
    let mut cluster = Cluster::start(&["-n", "1", "--restart", "never"], &[]);
    let pid = cluster.ready(1)[0].num("pid");
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(cluster.exit_code(), 137);
}

#[test]
fn all_workers_finishing_cleanly_gives_zero() {
    let mut cluster = Cluster::start(&["-n", "2", "--restart", "never"], &["--exit", "0"]);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_missing_command_exits_127_before_any_worker_starts() {
    let (code, _, stderr) = run_to_end(&["-n", "2", "--", "./no-such-program"]);
    assert_eq!(code, 127);
    assert_eq!(
        stderr,
        "recluster: error: ./no-such-program: no such file\n"
    );
    let (code, _, stderr) = run_to_end(&["no-such-program-in-path"]);
    assert_eq!(code, 127);
    assert!(
        stderr.contains("no-such-program-in-path: command not found"),
        "{stderr}"
    );
}

#[test]
fn a_command_that_cannot_be_executed_exits_126() {
    let dir = std::env::temp_dir();
    let (code, _, stderr) = run_to_end(&["--", dir.to_str().unwrap()]);
    assert_eq!(code, 126);
    assert!(stderr.contains("is a directory"), "{stderr}");
    let plain = dir.join(format!("recluster-plain-{}", std::process::id()));
    std::fs::write(&plain, "not executable").unwrap();
    let (code, _, stderr) = run_to_end(&["--", plain.to_str().unwrap()]);
    std::fs::remove_file(&plain).unwrap();
    assert_eq!(code, 126);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(!stderr.contains("starting"), "no worker started: {stderr}");
}

#[test]
fn usage_errors_exit_2_with_one_line_naming_the_flag() {
    let worker = worker_bin();
    let worker = worker.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-n", "0", worker], "--workers"),
        (&["-n", "four", worker], "--workers"),
        (&["-n", "4294967295", worker], "--workers"),
        (&["--restart", "sometimes", worker], "--restart"),
        (&["--kill-timeout", "5parsecs", worker], "--kill-timeout"),
        (&["--stop-signal", "SIGNOPE", worker], "--stop-signal"),
        (&["--stop-signal", "STOP", worker], "--stop-signal"),
        (&["--restart-window", "1m", worker], "--max-restarts"),
        (&["--restart-delay", "1m", worker], "--restart-max-delay"),
        (&["--no-such-flag", worker], "--no-such-flag"),
        (&["-n", "2"], "COMMAND"),
        (&["--name", "a/b", worker], "--name"),
        (&["ctl", "scale", "two"], "two"),
        (&["ctl", "dance"], "dance"),
        (&["ctl"], "needs a command"),
        (&["ctl", "--pid", "x", "status"], "--pid"),
        (&["ctl", "restart"], "ID"),
        (&["ctl", "signal", "NOPE"], "NOPE"),
    ];
    for (args, flag) in cases {
        let (code, stdout, stderr) = run_to_end(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("recluster: error: "),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}

#[test]
fn help_and_version_exit_zero() {
    let (code, stdout, _) = run_to_end(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--kill-timeout"));
    let (code, stdout, _) = run_to_end(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("recluster "));
}

#[test]
fn a_worker_stopped_for_missing_its_ready_timeout_is_a_failure() {
    // It never sends READY=1; recluster stops it with TERM, and dying of that is no clean end
    // here (systemd fails a unit whose start timed out).
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--restart",
            "never",
            "--ready",
            "notify",
            "--ready-timeout",
            "300ms",
        ],
        &["--on-stop", "die"],
    );
    cluster.expect_log("was not ready within 300ms");
    assert_eq!(cluster.exit_code(), 143);
}
