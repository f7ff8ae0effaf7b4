//! The rolling reload on SIGHUP: no failed request, a broken release never takes the old workers
//! down, new workers are ready before old ones are stopped, HUPs converge without piling up.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::harness::{
    Cluster, FakeManager, Launch, Line, Load, body_field, cluster_args, http_get,
};

/// A version file the workers read at start: writing it is "deploying a new release".
struct Release(PathBuf);

impl Release {
    fn new(name: &str, version: &str) -> Release {
        let path =
            std::env::temp_dir().join(format!("recluster-release-{}-{name}", std::process::id()));
        std::fs::write(&path, version).unwrap();
        Release(path)
    }

    fn deploy(&self, version: &str) {
        std::fs::write(&self.0, version).unwrap();
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The versions that answer `count` requests.
fn versions_answering(address: &str, count: usize) -> HashSet<String> {
    (0..count)
        .map(|_| body_field(&http_get(address).expect("a request"), "version"))
        .collect()
}

#[test]
fn three_reloads_under_load_fail_no_request_in_either_socket_mode() {
    for mode in ["--shared-socket", "--socket-per-worker"] {
        let release = Release::new(&format!("load{}", mode.len()), "v1");
        let mut args = vec![
            "-n",
            "4",
            "--min-uptime",
            "200ms",
            "--listen",
            "127.0.0.1:0",
        ];
        args.push(mode);
        let file = release.arg();
        let mut cluster = Cluster::start(&args, &["--serve", "--version-file", &file]);
        let address = cluster.listening(1).remove(0);
        let first: HashSet<i32> = (0..4)
            .map(|_| {
                cluster
                    .expect("a worker listening", |l| l.is_worker("listening"))
                    .num("pid")
            })
            .collect();
        let load = Load::start(&address, 4);
        load.wait_for(100);
        for generation in 1..=3 {
            let version = format!("v{}", generation + 1);
            release.deploy(&version);
            cluster.send(libc::SIGHUP);
            cluster.expect_log(&format!("reload to generation {generation} complete"));
            load.wait_for(50);
        }
        let (ok, failures) = load.finish();
        assert!(
            failures.is_empty(),
            "{mode:?}: {} of {} requests failed: {:?}",
            failures.len(),
            ok + failures.len() as u64,
            &failures[..failures.len().min(5)]
        );
        assert_eq!(
            versions_answering(&address, 50),
            HashSet::from(["v4".to_string()])
        );
        let last: Vec<&Line> = cluster.seen(|l| l.is_worker("ready") && l.num("gen") == 3);
        let mut ids: Vec<i32> = last.iter().map(|l| l.num("id")).collect();
        ids.sort();
        assert_eq!(ids, [0, 1, 2, 3], "{mode:?}");
        assert!(
            last.iter().all(|l| !first.contains(&l.num("pid"))),
            "every pid replaced"
        );
        cluster.send(libc::SIGTERM);
        assert_eq!(cluster.exit_code(), 0);
    }
}

#[test]
fn a_release_that_cannot_start_leaves_the_old_workers_serving() {
    let release = Release::new("broken", "v1");
    let file = release.arg();
    let mut cluster = Cluster::start(
        &["-n", "2", "--listen", "127.0.0.1:0"],
        &["--serve", "--version-file", &file],
    );
    let address = cluster.listening(1).remove(0);
    for _ in 0..2 {
        cluster.expect("a worker listening", |l| l.is_worker("listening"));
    }
    let load = Load::start(&address, 2);
    load.wait_for(50);
    release.deploy("broken");
    cluster.send(libc::SIGHUP);
    cluster.expect("the new release fails at start", |l| l.is_worker("broken"));
    cluster.expect_log("reload to generation 1 abandoned");
    load.wait_for(50);
    assert_eq!(
        versions_answering(&address, 20),
        HashSet::from(["v1".to_string()])
    );
    release.deploy("v2"); // fixed
    cluster.send(libc::SIGHUP);
    cluster.expect_log("reload to generation 2 complete");
    load.wait_for(50);
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        versions_answering(&address, 20),
        HashSet::from(["v2".to_string()])
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn with_ready_notify_the_old_worker_is_stopped_only_after_the_new_one_is_ready() {
    let mut cluster = Cluster::start(
        &["-n", "2", "--ready", "notify", "--min-uptime", "1h"],
        &["--notify", "2000"],
    );
    let old: Vec<i32> = cluster.ready(2).iter().map(|l| l.num("pid")).collect();
    cluster.expect_log("all 2 workers are ready");
    cluster.send(libc::SIGHUP);
    cluster.expect_log("reload to generation 1 complete");
    // stdout is a pipe of its own: wait until both old workers' last lines have arrived.
    for pid in &old {
        cluster.expect("an old worker's exit", |l| {
            l.is_worker("exit") && l.num("pid") == *pid
        });
    }
    // On one pipe, in causal order: the new worker says it is ready before it sends READY=1,
    // and recluster stops the old worker only after that.
    let position =
        |matches: &dyn Fn(&Line) -> bool| cluster.history.iter().position(matches).unwrap();
    for id in 0..2 {
        let new = cluster.seen(|l| l.is_worker("ready") && l.num("id") == id && l.num("gen") == 1)
            [0]
        .num("pid");
        let new_ready = position(&|l: &Line| l.is_worker("notifying") && l.num("pid") == new);
        let old_stopped = position(&|l: &Line| {
            l.is_worker("signal")
                && l.text.contains("SIGTERM")
                && old.contains(&l.num("pid"))
                && l.num("id") == id
        });
        assert!(
            new_ready < old_stopped,
            "slot {id}: the old worker was stopped before the new one was ready"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn five_hups_at_once_converge_to_the_newest_generation_without_piling_up() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "200ms"], &[]);
    cluster.ready(2);
    // Signals of one kind sent back to back merge into one pending signal, so each HUP is sent
    // once recluster has taken the previous one: five within milliseconds, inside the first
    // reload (which takes at least 2 x --min-uptime).
    for generation in 1..=5 {
        cluster.send(libc::SIGHUP);
        cluster.expect_log(&format!("to generation {generation}"));
    }
    cluster.expect_log("reload to generation 5 complete");
    // stdout is a pipe of its own: wait until every stopped worker's exit line has arrived.
    while cluster.seen(|l| l.is_worker("ready")).len() - cluster.seen(|l| l.is_worker("exit")).len()
        > 2
    {
        cluster.expect("an old worker's exit", |l| l.is_worker("exit"));
    }
    // Each worker prints `ready` when it starts and `exit` before it ends (all exit on TERM),
    // and recluster starts a worker only after reaping the one it waited for: counting along
    // the pipe gives how many were alive at once.
    let (mut alive, mut most) = (0, 0);
    let mut live = HashSet::new();
    for line in &cluster.history {
        if line.is_worker("ready") {
            alive += 1;
            live.insert(line.num("pid"));
        } else if line.is_worker("exit") {
            alive -= 1;
            live.remove(&line.num("pid"));
        }
        most = most.max(alive);
    }
    assert!(
        most <= 3,
        "{most} workers alive at once, more than N + K = 3"
    );
    let generations: Vec<i32> = cluster
        .seen(|l| l.is_worker("ready") && live.contains(&l.num("pid")))
        .iter()
        .map(|l| l.num("gen"))
        .collect();
    assert_eq!(generations, [5, 5]);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_service_manager_hears_ready_reloading_ready_stopping_in_order() {
    let manager = FakeManager::new("reload");
    let args = cluster_args(&["-n", "2", "--min-uptime", "200ms"], &[]);
    let mut cluster = Launch::new(args)
        .env("NOTIFY_SOCKET", &manager.path)
        .start();
    assert_eq!(manager.next(), "READY=1\nSTATUS=2 workers ready");
    cluster.send(libc::SIGHUP);
    let reloading = manager.next();
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines[0], "RELOADING=1", "{reloading}");
    assert!(
        lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(manager.next(), "READY=1\nSTATUS=2 workers of generation 1");
    cluster.send(libc::SIGTERM);
    assert_eq!(manager.next(), "STOPPING=1\nSTATUS=stopping (SIGTERM)");
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_crash_during_a_failing_reload_leaves_the_slot_respawned_and_the_cluster_running() {
    // -n 1: the old worker is killed while its replacement starts, then the replacement ends
    // before it is ready. The slot must get a worker of the generation that last succeeded.
    let release = Release::new("crash-during-reload", "v1");
    let file = release.arg();
    let mut cluster = Cluster::start(
        &["-n", "1", "--ready", "notify", "--min-uptime", "1h"],
        &["--notify", "0", "--version-file", &file],
    );
    let old = cluster.ready(1)[0].num("pid");
    cluster.expect_log("the only worker is ready");
    release.deploy("silent");
    cluster.send(libc::SIGHUP);
    let new = cluster
        .expect("the replacement", |l| {
            l.is_worker("ready") && l.num("gen") == 1
        })
        .num("pid");
    // SAFETY: signalling workers this test started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    cluster.expect_log(&format!("worker 0 (pid {old}) was killed by SIGKILL"));
    // SAFETY: as above.
    unsafe { libc::kill(new, libc::SIGTERM) };
    cluster.expect_log("reload to generation 1 abandoned");
    let respawned = cluster.expect("slot 0 respawned", |l| {
        l.is_worker("ready") && l.num("id") == 0 && l.num("pid") != old && l.num("pid") != new
    });
    assert_eq!(respawned.num("gen"), 0, "{}", respawned.text);
    assert!(
        cluster
            .seen(|l| l.is_log("every worker has ended"))
            .is_empty(),
        "the cluster went on"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_reload_batch_of_two_starts_two_new_workers_at_once() {
    // New workers never become ready here (--min-uptime 1h), so no old worker ever exits: both
    // replacements must start without waiting for one.
    let mut cluster = Cluster::start(
        &["-n", "4", "--reload-batch", "2", "--min-uptime", "1h"],
        &[],
    );
    cluster.ready(4);
    cluster.send(libc::SIGHUP);
    for _ in 0..2 {
        cluster.expect("a new worker", |l| {
            l.is_worker("ready") && l.num("gen") == 1
        });
    }
    assert!(cluster.seen(|l| l.is_worker("exit")).is_empty());
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
