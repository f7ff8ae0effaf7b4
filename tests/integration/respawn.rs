//! Respawning: same slot, backoff, healthy restarts, crash-loop limit, restart modes.

use crate::harness::Cluster;

#[test]
fn a_killed_worker_is_replaced_in_the_same_slot() {
    let mut cluster = Cluster::start(
        &["-n", "4", "--restart-delay", "300ms", "--min-uptime", "1h"],
        &[],
    );
    let ready = cluster.ready(4);
    let victim = ready[2].num("pid");
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    cluster.expect_log(&format!(
        "worker 2 (pid {victim}) was killed by SIGKILL, restarting in 300ms"
    ));
    let replacement = cluster.expect("a new worker", |l| l.is_worker("ready"));
    assert_eq!(replacement.num("id"), 2);
    assert_eq!(replacement.num("count"), 4);
    assert_ne!(replacement.num("pid"), victim);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0, "the replacement ended cleanly");
}

#[test]
fn restart_delay_doubles_with_each_early_death_up_to_the_maximum() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--restart-delay",
            "50ms",
            "--restart-max-delay",
            "200ms",
            "--min-uptime",
            "1h",
        ],
        &["--exit", "1"],
    );
    for delay in ["50ms", "100ms", "200ms", "200ms"] {
        cluster.expect_log(&format!("exited with status 1, restarting in {delay}"));
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(
        cluster.exit_code(),
        1,
        "the slot's last worker exited with 1"
    );
}

#[test]
fn a_worker_that_ran_healthily_is_restarted_at_once() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--min-uptime",
            "100ms",
            "--restart-delay",
            "10s",
            "--restart-max-delay",
            "10s",
        ],
        &["--exit", "3", "--after", "300"],
    );
    cluster.ready(1);
    cluster.expect_log("exited with status 3, restarting it");
    cluster.ready(1);
    cluster.send(libc::SIGTERM);
    cluster.exit_code();
}

#[test]
fn a_crash_loop_gives_up_and_exits_with_the_workers_status() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--max-restarts",
            "2",
            "--restart-window",
            "1m",
            "--restart-delay",
            "10ms",
        ],
        &["--exit-for", "1:3"],
    );
    cluster.expect_log("giving up");
    cluster.expect("worker 0 stopped gracefully", |l| {
        l.is_worker("signal") && l.num("id") == 0 && l.text.contains("SIGTERM")
    });
    assert_eq!(cluster.exit_code(), 3);
    let slot1_starts = cluster
        .seen(|l| l.is_worker("ready") && l.num("id") == 1)
        .len();
    assert_eq!(slot1_starts, 3, "the first run and 2 restarts");
}

#[test]
fn on_failure_restarts_a_crash_but_not_a_clean_exit() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--restart",
            "on-failure",
            "--restart-delay",
            "10ms",
        ],
        &["--exit-for", "0:0", "--after", "200"],
    );
    let ready = cluster.ready(2);
    cluster.expect_log("worker 0 (pid");
    cluster.expect_log_seen("exited with status 0; not restarting it (--restart on-failure)");
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(ready[1].num("pid"), libc::SIGKILL) };
    let again = cluster.expect("worker 1 restarted", |l| l.is_worker("ready"));
    assert_eq!(again.num("id"), 1);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert_eq!(
        cluster
            .seen(|l| l.is_worker("ready") && l.num("id") == 0)
            .len(),
        1
    );
}

#[test]
fn a_command_that_disappears_is_retried_with_backoff_until_it_is_back() {
    let dir = std::env::temp_dir().join(format!("recluster-vanish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("worker");
    std::fs::copy(crate::harness::worker_bin(), &binary).unwrap();
    let binary_text = binary.display().to_string();
    let mut cluster = crate::harness::Launch::new([
        "-n",
        "1",
        "--restart-delay",
        "50ms",
        "--restart-max-delay",
        "200ms",
        "--",
        &binary_text,
    ])
    .start();
    let pid = cluster.ready(1)[0].num("pid");
    std::fs::remove_file(&binary).unwrap(); // a deploy that moves files around
    // SAFETY: killing the worker this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    cluster.expect_log(&format!("worker 0: {binary_text}: no such file"));
    cluster.expect_log("worker 0 exited with status 127, restarting in");
    std::fs::copy(crate::harness::worker_bin(), &binary).unwrap();
    let back = cluster.expect("the worker is back", |l| l.is_worker("ready"));
    assert_eq!(back.num("id"), 0);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_worker_over_max_memory_is_replaced_and_its_sibling_is_not() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--max-memory",
            "150M",
            "--memory-interval",
            "100ms",
            "--min-uptime",
            "300ms",
        ],
        &["--grow-for", "1:300"],
    );
    let first = cluster.ready(2);
    let (sibling, grower) = (first[0].num("pid"), first[1].num("pid"));
    cluster.expect_log(&format!("worker 1 (pid {grower}) uses "));
    cluster.expect_log("above --max-memory 150 MiB: replacing it");
    let new = cluster.expect("the new worker 1", |l| {
        l.is_worker("ready") && l.num("id") == 1 && l.num("pid") != grower
    });
    cluster.expect("the old worker 1 stopped", |l| {
        l.is_worker("signal") && l.text.contains("SIGTERM") && l.num("pid") == grower
    });
    assert!(
        cluster
            .seen(|l| l.is_worker("signal") && l.num("pid") == sibling)
            .is_empty(),
        "worker 0 was left alone"
    );
    assert_ne!(new.num("pid"), sibling);
    // Counted where an operator looks.
    let status = crate::harness::ctl_status(cluster.pid);
    assert!(
        status["workers"][1]["guards"]["memory"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["workers"][0]["guards"]["memory"], 0, "{status}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
