//! Subreaper and PID 1: orphans are reaped, and no worker outlives recluster.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, Launch, cluster_args, eventually, is_running, process_state};

#[test]
fn orphans_of_workers_are_reaped_by_recluster() {
    let mut cluster = Cluster::start(&["-n", "2"], &["--orphan"]);
    let orphans: Vec<i32> = (0..2)
        .map(|_| {
            let line = cluster.expect("an orphan", |l| l.is_worker("orphan"));
            assert_eq!(
                line.num("ppid"),
                cluster.pid,
                "adopted by recluster (the subreaper), not by init: {}",
                line.text
            );
            line.num("pid")
        })
        .collect();
    for pid in orphans {
        // A zombie that nobody reaps stays in /proc with state Z.
        assert!(
            eventually(|| process_state(pid).is_none()),
            "orphan {pid} was not reaped"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn when_recluster_is_killed_its_workers_die_too() {
    let mut cluster = Cluster::start(&["-n", "3"], &[]);
    let pids: Vec<i32> = cluster.ready(3).iter().map(|l| l.num("pid")).collect();
    cluster.send(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && pids.iter().any(|&p| is_running(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in pids {
        assert!(!is_running(pid), "worker {pid} outlived recluster by 2 s");
    }
    cluster.finish();
}

/// The pid, seen from here, of the process that is `inner` in the pid namespace of `ns_member`.
pub(crate) fn outer_pid(ns_member: i32, inner: i32) -> Option<i32> {
    let namespace = std::fs::read_link(format!("/proc/{ns_member}/ns/pid")).ok()?;
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? != namespace {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        (nspid.split_whitespace().last()?.parse::<i32>().ok()? == inner).then_some(pid)
    })
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_term() {
    let args = cluster_args(&["-n", "2"], &["--orphan"]);
    let mut cluster =
        Launch::wrapped(&["unshare", "--pid", "--fork", "--mount-proc"], args).start();
    let ready = cluster.ready(2);
    for line in &ready {
        assert_eq!(
            line.num("recluster_pid"),
            1,
            "recluster runs as PID 1: {}",
            line.text
        );
        assert_eq!(line.num("ppid"), 1);
    }
    let unshare = cluster.pid;
    let recluster = recluster_under(unshare);
    for orphan in cluster
        .seen(|l| l.is_worker("orphan"))
        .iter()
        .map(|l| l.num("pid"))
    {
        assert!(
            eventually(|| outer_pid(recluster, orphan).is_none()),
            "orphan {orphan} (namespace pid) is still in the process table"
        );
    }
    // TERM from outside the namespace, to recluster itself.
    // SAFETY: signalling the recluster this test started.
    unsafe { libc::kill(recluster, libc::SIGTERM) };
    assert_eq!(cluster.exit_code(), 0);
    assert_eq!(
        cluster
            .seen(|l| l.is_worker("signal") && l.text.contains("SIGTERM"))
            .len(),
        2
    );
}

/// unshare --fork runs recluster as its only child.
pub(crate) fn recluster_under(unshare: i32) -> i32 {
    let mut found = None;
    assert!(eventually(|| {
        found = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok());
        found.is_some()
    }));
    let pid = found.unwrap();
    assert!(process_state(pid).is_some());
    pid
}
