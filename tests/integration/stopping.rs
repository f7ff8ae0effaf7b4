//! The graceful stop: INT, TERM, QUIT; the kill timeout; a second signal; nothing left behind.

use crate::harness::{Cluster, is_running};

fn signal_lines(cluster: &Cluster, name: &str, id: i32) -> usize {
    cluster
        .seen(|l| {
            l.is_worker("signal") && l.field("id") == Some(&id.to_string()) && l.text.contains(name)
        })
        .len()
}

#[test]
fn ctrl_c_reaches_each_worker_exactly_once_and_exits_zero() {
    let mut cluster = Cluster::start(&["-n", "3"], &[]);
    cluster.ready(3);
    cluster.send_to_group(libc::SIGINT); // what a terminal does
    assert_eq!(cluster.exit_code(), 0);
    for id in 0..3 {
        assert_eq!(signal_lines(&cluster, "SIGINT", id), 1, "worker {id}");
    }
}

#[test]
fn term_and_quit_stop_the_cluster_the_same_way() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGQUIT, "SIGQUIT")] {
        let mut cluster = Cluster::start(&["-n", "2"], &[]);
        cluster.ready(2);
        cluster.send(signal);
        assert_eq!(cluster.exit_code(), 0, "{name}");
        for id in 0..2 {
            assert_eq!(
                signal_lines(&cluster, name, id),
                1,
                "worker {id} got {name}"
            );
        }
    }
}

#[test]
fn death_by_the_stop_signal_counts_as_clean() {
    let mut cluster = Cluster::start(&["-n", "2"], &["--on-stop", "die"]);
    cluster.ready(2);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    cluster.expect_log_seen("was killed by SIGTERM");
}

#[test]
fn a_worker_ignoring_term_is_killed_after_the_timeout_with_its_tree() {
    let mut cluster = Cluster::start(
        &["-n", "1", "--kill-timeout", "1s"],
        &["--ignore", "TERM", "--grandchild"],
    );
    let grandchild = cluster
        .expect("grandchild", |l| l.is_worker("grandchild"))
        .num("pid");
    let worker = cluster.ready(1)[0].num("pid");
    cluster.send(libc::SIGTERM);
    cluster.expect("the worker got TERM", |l| {
        l.is_worker("signal") && l.text.contains("SIGTERM")
    });
    assert_eq!(
        cluster.exit_code(),
        137,
        "SIGKILL after --kill-timeout gives 128+9"
    );
    assert!(!is_running(worker), "worker {worker} survived");
    assert!(!is_running(grandchild), "grandchild {grandchild} survived");
    assert!(!cluster.seen(|l| l.is_log("sending SIGKILL")).is_empty());
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let mut cluster = Cluster::start(&["-n", "2", "--kill-timeout", "1h"], &["--ignore", "TERM"]);
    cluster.ready(2);
    cluster.send(libc::SIGTERM);
    cluster.expect_log("received SIGTERM");
    for _ in 0..2 {
        cluster.expect("TERM reached a worker", |l| l.is_worker("signal"));
    }
    // A person's second Ctrl-C, not a wrapper's copy of the first: that one, within a second of
    // the first, would be the same request (see day_one).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cluster.send(libc::SIGTERM);
    // Within the harness deadline, far inside the one-hour kill timeout.
    assert_eq!(cluster.exit_code(), 137);
    cluster.expect_log_seen("killing every worker now");
}

#[test]
fn a_daemon_left_by_a_worker_is_stopped_with_the_cluster() {
    let mut cluster = Cluster::start(&["-n", "1", "--kill-timeout", "1s"], &["--daemon"]);
    let daemon = cluster
        .expect("daemon", |l| l.is_worker("daemon"))
        .num("pid");
    cluster.ready(1);
    cluster.send(libc::SIGTERM);
    // The worker exits 0 at once; the daemon (own session, ignoring TERM) is adopted and killed.
    assert_eq!(cluster.exit_code(), 0);
    assert!(!is_running(daemon), "daemon {daemon} outlived recluster");
}

impl Cluster {
    /// Asserts that a log line containing `fragment` has been seen already.
    pub fn expect_log_seen(&self, fragment: &str) {
        if self.seen(|l| l.is_log(fragment)).is_empty() {
            self.fail(&format!("no log line containing {fragment:?}"));
        }
    }
}
