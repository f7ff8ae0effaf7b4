//! What must not hurt recluster: a closed log pipe, a command that crashes at once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, DEADLINE, cluster_args, cpu_ticks, recluster_bin};

#[test]
fn a_closed_stderr_pipe_does_not_kill_recluster() {
    let mut child = Command::new(recluster_bin())
        .args(cluster_args(&["-n", "1"], &[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Killed (with its workers) if the test fails before it ends.
    let mut guard = KillOnDrop(Some(pid));
    drop(child.stderr.take()); // every log line from now on meets EPIPE
    let (sender, lines) = crossbeam_channel::unbounded();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        lines
            .recv_timeout(DEADLINE)
            .expect("a worker line within the deadline")
    };
    assert!(next_line().starts_with("ready"));
    // SAFETY: signalling the recluster this test started.
    unsafe { libc::kill(pid, libc::SIGTTIN) }; // logs "scaling up"
    assert!(next_line().starts_with("ready"), "recluster still works");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            guard.0 = None; // reaped: its pid may belong to someone else now
            break status;
        }
        assert!(Instant::now() < deadline, "recluster did not exit");
        std::thread::sleep(Duration::from_millis(10)); // polling for the exit, with a deadline
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// SIGKILLs a recluster (whose workers then die with it) that has not been reaped yet.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: signalling the recluster this test started, not reaped yet: still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_command_that_exits_at_once_costs_recluster_almost_no_cpu() {
    let mut cluster = Cluster::start(&["-n", "2"], &["--exit", "1"]);
    // 100ms, 200ms, 400ms, 800ms, 1.6s: five backoffs for each slot, about 3 s of crash loop.
    for slot in 0..2 {
        cluster.expect_log(&format!("worker {slot}"));
    }
    cluster.expect_log("restarting in 1s 600ms");
    cluster.expect_log("restarting in 1s 600ms");
    let starts = cluster.seen(|l| l.is_worker("ready")).len();
    assert!(starts <= 12, "{starts} spawns: the backoff did not hold");
    let ticks = cpu_ticks(cluster.pid);
    assert!(
        ticks < 50,
        "recluster used {ticks} ticks of CPU in a crash loop"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 1);
}

#[test]
fn the_harness_cleans_up_an_unfinished_cluster_and_nothing_else() {
    // A bystander the harness must not touch, and a cluster left running with a daemon.
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let mut cluster = Cluster::start(&["-n", "2"], &["--daemon"]);
    let workers: Vec<i32> = cluster.ready(2).iter().map(|l| l.num("pid")).collect();
    // Each worker prints its daemon's line before its own ready line, on the same pipe.
    let daemons: Vec<i32> = cluster
        .seen(|l| l.is_worker("daemon"))
        .iter()
        .map(|l| l.num("pid"))
        .collect();
    assert_eq!(daemons.len(), 2);
    drop(cluster);
    for pid in daemons.iter().chain(&workers) {
        assert!(
            crate::harness::eventually(|| !crate::harness::is_running(*pid)),
            "{pid} survived the harness"
        );
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
