//! `--on EVENT=COMMAND`: hooks run beside the cluster with what happened in their environment,
//! and never hold it up.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, eventually};

fn log_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("recluster-hooks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn hooks_write_their_events_for_a_kill_and_its_respawn() {
    let log = log_file("events");
    let on = |event: &str| {
        format!(
            "{event}=echo $RECLUSTER_EVENT $WORKER_ID $WORKER_PID $WORKER_EXIT >> {}",
            log.display()
        )
    };
    let (spawn, exit) = (on("spawn"), on("exit"));
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--restart-delay",
            "10ms",
            "--on",
            &spawn,
            "--on",
            &exit,
        ],
        &[],
    );
    let first = cluster.ready(1)[0].num("pid");
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let second = cluster
        .expect("the respawned worker", |l| {
            l.is_worker("ready") && l.num("pid") != first
        })
        .num("pid");
    let expected = [
        format!("spawn 0 {first}"),
        format!("exit 0 {first} signal 9"),
        format!("spawn 0 {second}"),
    ];
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(|| read().lines().count() >= 3),
        "hooks wrote: {:?}",
        read()
    );
    let mut lines: Vec<String> = read().lines().map(|l| l.trim().to_string()).collect();
    lines.sort();
    let mut want: Vec<String> = expected.to_vec();
    want.sort();
    assert_eq!(lines, want);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_hook_that_sleeps_delays_neither_the_respawn_nor_the_stop() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--restart-delay",
            "10ms",
            "--on",
            "exit=sleep 100",
        ],
        &[],
    );
    let first = cluster.ready(1)[0].num("pid");
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    cluster.expect("the respawned worker", |l| {
        l.is_worker("ready") && l.num("pid") != first
    });
    let stop = Instant::now();
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "the stop waited {:?} for the sleeping hook",
        stop.elapsed()
    );
}

#[test]
fn a_stop_hook_runs_to_its_end_before_recluster_exits() {
    let log = log_file("stop");
    let stop = format!("stop=sleep 0.2; echo $RECLUSTER_EVENT >> {}", log.display());
    let mut cluster = Cluster::start(&["-n", "1", "--on", &stop], &[]);
    cluster.ready(1);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default().trim(),
        "stop",
        "the stop hook ran to its end"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn the_stop_hook_runs_even_while_eight_exit_hooks_are_busy() {
    // A crash loop keeps the 8 hook places busy with slow exit hooks; the stop hook (a load
    // balancer's deregistration, a clean-up) must run all the same.
    let stopped = log_file("stop-while-busy");
    let exits = log_file("exits-while-busy");
    let exit_hook = format!("exit=echo x >> {}; sleep 30", exits.display());
    let stop_hook = format!("stop=touch {}", stopped.display());
    let mut cluster = Cluster::start(
        &[
            "-n",
            "8",
            "--restart-delay",
            "10ms",
            "--on",
            &exit_hook,
            "--on",
            &stop_hook,
        ],
        &["--exit", "1", "--after", "200"],
    );
    let count = || {
        std::fs::read_to_string(&exits)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        eventually(|| count() >= 8),
        "exit hooks started: {}",
        count()
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
    assert!(
        stopped.exists(),
        "the stop hook did not run while 8 exit hooks were busy"
    );
    let _ = std::fs::remove_file(&stopped);
    let _ = std::fs::remove_file(&exits);
}
