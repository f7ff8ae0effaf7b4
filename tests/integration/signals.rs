//! Signals other than the stop signals: forwarded, or scaling, or job control.

use crate::harness::{Cluster, eventually, process_state};

#[test]
fn other_signals_are_forwarded_to_every_worker() {
    let mut cluster = Cluster::start(&["-n", "3"], &[]);
    cluster.ready(3);
    for (signal, name) in [
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGRTMIN() + 1, "SIGRTMIN+1"),
    ] {
        cluster.send(signal);
        let mut ids: Vec<i32> = (0..3)
            .map(|_| {
                cluster
                    .expect(name, |l| l.is_worker("signal") && l.text.contains(name))
                    .num("id")
            })
            .collect();
        ids.sort();
        assert_eq!(ids, [0, 1, 2], "{name} reached every worker once");
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_the_highest() {
    let mut cluster = Cluster::start(&["-n", "2"], &[]);
    cluster.ready(2);
    cluster.send(libc::SIGTTIN);
    let added = cluster.expect("a third worker", |l| l.is_worker("ready"));
    assert_eq!(added.num("id"), 2);
    assert_eq!(added.num("count"), 3);
    cluster.send(libc::SIGTTOU);
    let stopped = cluster.expect("TERM to the highest slot", |l| l.is_worker("signal"));
    assert_eq!(stopped.num("id"), 2);
    assert!(stopped.text.contains("SIGTERM"));
    cluster.expect("it exits", |l| l.is_worker("exit") && l.num("id") == 2);
    cluster.expect_log("exited with status 0 after being stopped");
    cluster.expect_log_seen("scaling down to 2 workers");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let stopped_ids: Vec<i32> = cluster
        .seen(|l| l.is_worker("exit"))
        .iter()
        .map(|l| l.num("id"))
        .collect();
    assert_eq!(stopped_ids.len(), 3);
}

#[test]
fn ttou_never_removes_the_last_worker() {
    let mut cluster = Cluster::start(&["-n", "1"], &[]);
    cluster.ready(1);
    cluster.send(libc::SIGTTOU);
    cluster.expect_log("one worker left");
    cluster.send(libc::SIGUSR1);
    cluster.expect("the worker still serves", |l| {
        l.is_worker("signal") && l.text.contains("SIGUSR1")
    });
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn tstp_is_forwarded_then_recluster_stops_itself_and_cont_resumes_all() {
    let mut cluster = Cluster::start(&["-n", "2"], &[]);
    cluster.ready(2);
    cluster.send(libc::SIGTSTP);
    for _ in 0..2 {
        cluster.expect("TSTP forwarded", |l| {
            l.is_worker("signal") && l.text.contains("SIGTSTP")
        });
    }
    let pid = cluster.pid;
    assert!(
        eventually(|| process_state(pid) == Some('T')),
        "recluster did not stop itself"
    );
    cluster.send(libc::SIGCONT);
    for _ in 0..2 {
        cluster.expect("CONT forwarded", |l| {
            l.is_worker("signal") && l.text.contains("SIGCONT")
        });
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
