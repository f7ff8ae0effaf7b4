//! The open-files limit: recluster raises its own soft limit to the hard one so that a thousand
//! workers fit under the usual soft 1024, gives every worker the limit it was started with, and
//! refuses at start, naming the limit, a cluster that not even the hard limit can hold.

use std::os::unix::process::CommandExt;

use crate::harness::{Launch, cluster_args};

/// Starts recluster with RLIMIT_NOFILE set to (soft, hard).
fn with_fd_limit(args: &[&str], worker_args: &[&str], soft: u64, hard: u64) -> Launch {
    let mut launch = Launch::new(cluster_args(args, worker_args));
    // SAFETY: setrlimit is a plain system call on a stack value.
    unsafe {
        launch.command().pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    launch
}

#[test]
fn more_workers_than_the_soft_fd_limit_allows_start_and_get_the_callers_limit() {
    // 60 notify sockets do not fit under a soft limit of 48.
    let mut cluster = with_fd_limit(
        &["-n", "60", "--ready", "notify", "--min-uptime", "1h"],
        &["--report", "--notify", "0"],
        48,
        4096,
    )
    .start();
    cluster.expect_log("all 60 workers are ready");
    for _ in 0..60 {
        // stdout is a pipe of its own: wait for each line rather than count what has arrived.
        let report = cluster.expect("a worker's report", |l| l.is_worker("report"));
        assert_eq!(report.field("nofile"), Some("48"), "{}", report.text);
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_cluster_the_hard_fd_limit_cannot_hold_is_a_usage_error_naming_it() {
    let mut cluster =
        with_fd_limit(&["-n", "40", "--ready", "notify"], &["--report"], 48, 48).start();
    let line = cluster.expect_log("recluster: error:");
    assert!(
        line.text
            .contains("40 workers with --ready notify need about")
            && line
                .text
                .contains("hard limit on open files (RLIMIT_NOFILE) is 48"),
        "{}",
        line.text
    );
    assert_eq!(cluster.exit_code(), 2);
    assert!(
        cluster.seen(|l| l.is_worker("report")).is_empty(),
        "no worker started"
    );
}

#[test]
fn per_worker_sockets_give_way_to_one_shared_socket_under_a_tight_hard_limit_unless_asked_for() {
    // 50 workers (and a pidfd each): a socket each does not fit under a hard limit of 100, one
    // shared socket does.
    let args = [
        "-n",
        "50",
        "--listen",
        "127.0.0.1:0",
        "--min-uptime",
        "100ms",
    ];
    let mut cluster = with_fd_limit(&args, &["--report"], 100, 100).start();
    cluster.expect_log("one socket shared by every worker)");
    cluster.expect_log(
        "one socket per address, shared by every worker: the hard open-files limit leaves no room",
    );
    cluster.expect_log("all 50 workers are ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    let mut asked = args.to_vec();
    asked.push("--socket-per-worker");
    let mut cluster = with_fd_limit(&asked, &["--report"], 100, 100).start();
    let line = cluster.expect_log("recluster: error:");
    assert!(
        line.text
            .contains("50 workers with --socket-per-worker need about"),
        "{}",
        line.text
    );
    assert_eq!(cluster.exit_code(), 2);
}
