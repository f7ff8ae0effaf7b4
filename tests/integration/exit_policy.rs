//! `--exit-on` and `--critical`: which worker's end stops the cluster, and the exit status each
//! policy gives (the README's table).

use crate::harness::{Cluster, Launch, Scratch, ctl_status, eventually, worker_bin};

/// The states `ctl status` shows, by (group, id).
fn states(pid: i32) -> Vec<(String, u64, String)> {
    let status = ctl_status(pid);
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["role"] == "slot")
        .map(|w| {
            (
                w["group"].as_str().unwrap_or("").to_string(),
                w["id"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn any_exit_ends_the_cluster_with_the_first_workers_status() {
    let mut cluster = Cluster::start(
        &["-n", "3", "--exit-on", "any-exit", "--min-uptime", "100ms"],
        &["--exit-for", "1:7", "--after", "300"],
    );
    cluster.expect_log("(--exit-on any-exit)");
    // The others were stopped by recluster: their ends do not count.
    assert_eq!(cluster.exit_code(), 7);
    assert_eq!(
        cluster.seen(|l| l.is_worker("ready")).len(),
        3,
        "no worker was restarted"
    );
}

#[test]
fn give_up_ends_the_cluster_with_the_status_of_the_worker_that_gave_up() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--exit-on",
            "give-up",
            "--max-restarts",
            "1",
            "--restart-delay",
            "10ms",
        ],
        &["--exit-for", "1:5"],
    );
    cluster.expect_log("giving up (--max-restarts, --restart-window)");
    assert_eq!(cluster.exit_code(), 5);
}

#[test]
fn below_k_serves_on_after_a_give_up_and_stops_below_k() {
    // 3 slots, below:2: slot 0 gives up, 2 can still run, the cluster serves on.
    let args = |k: &'static str| {
        vec![
            "-n",
            "3",
            "--exit-on",
            k,
            "--max-restarts",
            "1",
            "--restart-delay",
            "10ms",
            "--min-uptime",
            "100ms",
        ]
    };
    let mut cluster = Cluster::start(&args("below:2"), &["--exit-for", "0:4"]);
    cluster.expect_log("on this worker only; the rest serves on");
    let pid = cluster.pid;
    assert!(
        eventually(|| states(pid)
            == [
                (String::new(), 0, "gave_up".to_string()),
                (String::new(), 1, "ready".to_string()),
                (String::new(), 2, "ready".to_string()),
            ]),
        "{:?}",
        states(pid)
    );
    assert_eq!(ctl_status(pid)["cluster"]["state"], "running");
    cluster.send(libc::SIGTERM);
    // Stopped on request: the lowest slot that did not end cleanly, slot 0, gives the status.
    assert_eq!(cluster.exit_code(), 4);

    // below:3: the same give-up leaves 2 slots, fewer than 3.
    let mut cluster = Cluster::start(&args("below:3"), &["--exit-for", "0:4"]);
    cluster.expect_log("fewer than 3 (--exit-on below:3): stopping the cluster");
    assert_eq!(cluster.exit_code(), 4);
}

#[test]
fn a_give_up_outside_the_critical_groups_stops_that_group_and_one_inside_ends_the_cluster() {
    let scratch = Scratch::new("critical", 0o755);
    let worker = worker_bin().display().to_string();
    let procfile = scratch.0.join("Procfile");
    std::fs::write(
        &procfile,
        format!("web: exec {worker}\njobs: exec {worker} --exit 3\n"),
    )
    .unwrap();
    let path = procfile.display().to_string();
    let common = [
        "-f",
        path.as_str(),
        "-m",
        "web=2,jobs=2",
        "--max-restarts",
        "1",
        "--restart-delay",
        "10ms",
        "--min-uptime",
        "100ms",
    ];
    let mut args = common.to_vec();
    args.extend(["--critical", "web"]);
    let mut cluster = Launch::new(&args).start();
    cluster.expect_log("gave up outside the --critical groups: its group stays stopped");
    let pid = cluster.pid;
    assert!(
        eventually(|| {
            let states = states(pid);
            states
                .iter()
                .filter(|s| s.0 == "web" && s.2 == "ready")
                .count()
                == 2
                && states
                    .iter()
                    .filter(|s| s.0 == "jobs" && s.2 == "gave_up")
                    .count()
                    == 2
        }),
        "{:?}",
        states(pid)
    );
    assert_eq!(ctl_status(pid)["cluster"]["state"], "running");
    cluster.send(libc::SIGTERM);
    // web ended cleanly; jobs' last workers exited 3.
    assert_eq!(cluster.exit_code(), 3);

    // jobs critical: its give-up ends the cluster with its status.
    let mut args = common.to_vec();
    args.extend(["--critical", "jobs"]);
    let mut cluster = Launch::new(&args).start();
    cluster.expect_log("giving up (--max-restarts, --restart-window)");
    assert_eq!(cluster.exit_code(), 3);
}

#[test]
fn critical_names_a_group_of_the_procfile() {
    let scratch = Scratch::new("critical-bad", 0o755);
    let procfile = scratch.0.join("Procfile");
    std::fs::write(&procfile, "web: sleep 100\n").unwrap();
    let path = procfile.display().to_string();
    let (code, _, stderr) =
        crate::harness::run_to_end(&["-f", &path, "--critical", "wbe", "--max-restarts", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("there is no group wbe"), "{stderr}");
    let (code, _, stderr) =
        crate::harness::run_to_end(&["-n", "2", "--exit-on", "below:3", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("below:3"), "{stderr}");
}
