//! `ctl restart` counts in the restarted worker's restart counter (`ctl status`, `/metrics`).

use crate::harness::{Cluster, ctl, ctl_status};

#[test]
fn a_ctl_restart_counts_in_the_workers_restart_counter() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    cluster.ready(2);
    let restarts = |pid: i32| -> Vec<u64> {
        let status = ctl_status(pid);
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["role"] == "slot")
            .map(|w| w["restarts"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(restarts(cluster.pid), [0, 0]);
    let (code, _, stderr) = ctl(cluster.pid, &["restart", "1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(restarts(cluster.pid), [0, 1]);
    assert_eq!(ctl_status(cluster.pid)["cluster"]["restarts"], 1);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
