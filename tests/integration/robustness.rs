//! What must not hurt recluster: a closed log pipe, a command that crashes at once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::{Cluster, cluster_args, cpu_ticks, recluster_bin};

#[test]
fn a_closed_stderr_pipe_does_not_kill_recluster() {
    let mut child = Command::new(recluster_bin())
        .args(cluster_args(&["-n", "1"], &[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // every log line from now on meets EPIPE
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_kind = || lines.next().unwrap().unwrap();
    assert!(next_kind().starts_with("ready"));
    let pid = child.id() as i32;
    // SAFETY: signalling the recluster this test started.
    unsafe { libc::kill(pid, libc::SIGTTIN) }; // logs "scaling up"
    assert!(next_kind().starts_with("ready"), "recluster still works");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
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
