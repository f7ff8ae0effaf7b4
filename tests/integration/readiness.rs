//! --ready: when a worker counts as ready, and what recluster tells a service manager above it.

use crate::harness::{Cluster, FakeManager, Launch, cluster_args};

#[test]
fn with_ready_notify_a_worker_is_ready_when_it_says_so() {
    let mut cluster = Cluster::start(
        // --min-uptime 1h: were `notify` taken for `started`, nothing would be ready here.
        &["-n", "2", "-v", "--ready", "notify", "--min-uptime", "1h"],
        &["--notify", "300"],
    );
    for _ in 0..2 {
        cluster.expect("a worker notifies", |l| l.is_worker("notifying"));
    }
    cluster.expect_log("all 2 workers are ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_wrapper_script_can_notify_for_its_worker_with_systemd_notify() {
    let worker = crate::harness::worker_bin();
    let script = format!("systemd-notify --ready && exec {}", worker.display());
    let mut cluster = Launch::new([
        "-n",
        "2",
        "--ready",
        "notify",
        "--min-uptime",
        "1h",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .start();
    cluster.expect_log("all 2 workers are ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_worker_that_never_notifies_is_stopped_after_the_ready_timeout_and_restarted() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--ready",
            "notify",
            "--ready-timeout",
            "300ms",
            "--restart-delay",
            "10ms",
        ],
        &[],
    );
    let first = cluster.ready(1)[0].num("pid");
    cluster.expect_log(&format!(
        "worker 0 (pid {first}) was not ready within 300ms"
    ));
    cluster.expect("it got the stop signal", |l| {
        l.is_worker("signal") && l.num("pid") == first
    });
    let second = cluster.expect("a new attempt", |l| l.is_worker("ready"));
    assert_ne!(second.num("pid"), first);
    cluster.send(libc::SIGTERM);
    // The last worker was stopped by the user's TERM: clean, although the first start failed.
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_service_manager_above_hears_ready_then_stopping() {
    let manager = FakeManager::new("ready");
    let args = cluster_args(
        &["-n", "2", "--ready", "notify", "--min-uptime", "1h"],
        &["--notify", "200"],
    );
    let mut cluster = Launch::new(args)
        .env("NOTIFY_SOCKET", &manager.path)
        .start();
    // The workers send READY=1 too, on sockets of their own: had they inherited recluster's
    // NOTIFY_SOCKET, their messages would arrive here first.
    assert_eq!(manager.next(), "READY=1\nSTATUS=2 workers ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(manager.next(), "STOPPING=1\nSTATUS=stopping (SIGTERM)");
    assert_eq!(cluster.exit_code(), 0);
    assert!(manager.is_quiet(), "nothing more");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn with_ready_listening_a_worker_is_ready_once_it_listens_on_the_port() {
    let port = free_port().to_string();
    let ready = format!("listening:{port}");
    let worker = ["--bind", port.as_str(), "--bind-after", "200"];
    let mut cluster = Cluster::start(
        &["-n", "2", "--ready", &ready, "--min-uptime", "1h"],
        &worker,
    );
    cluster.expect_log("all 2 workers are ready");
    for _ in 0..2 {
        cluster.expect("a worker bound its port", |l| l.is_worker("bound"));
    }
    // A reload waits for the new workers' sockets the same way.
    cluster.send(libc::SIGHUP);
    cluster.expect_log("reload to generation 1 complete");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_worker_listening_on_another_port_is_not_ready() {
    let (port, other) = (free_port().to_string(), free_port());
    let ready = format!("listening:{other}");
    let args = [
        "-n",
        "1",
        "--ready",
        &ready,
        "--ready-timeout",
        "500ms",
        "--restart",
        "never",
    ];
    let mut cluster = Cluster::start(&args, &["--bind", port.as_str(), "--bind-after", "0"]);
    cluster.expect_log("was not ready within 500ms");
    cluster.expect_log("not restarting it (--restart never)");
    // A failed start is never clean: recluster exits with the worker's own status, which is 0
    // here because the worker exits 0 on TERM (143 for one that dies of it: exit_status.rs).
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn notify_works_where_seccomp_forbids_unshare_as_dockers_default_profile_does() {
    let wrapper = crate::harness::no_unshare();
    let mut cluster = Launch::wrapped(
        &[&wrapper],
        cluster_args(
            &["-n", "2", "-v", "--ready", "notify", "--min-uptime", "1h"],
            &["--notify", "0"],
        ),
    )
    .start();
    cluster.expect_log("the notify thread shares recluster's descriptor table (unshare: EPERM");
    cluster.expect_log("all 2 workers are ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_worker_that_stops_pinging_its_watchdog_is_stopped_and_restarted_while_the_other_runs_on() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "2",
            "--ready",
            "notify",
            "--min-uptime",
            "1h",
            "--watchdog",
            "1s",
            "--restart-delay",
            "10ms",
            // The example worker survives SIGABRT (it waits for signals): SIGKILL follows.
            "--kill-timeout",
            "1s",
        ],
        &[
            "--notify",
            "0",
            "--watchdog-ping",
            "--watchdog-stop-for",
            "1:300",
        ],
    );
    let first = cluster.ready(2);
    let (steady, quiet) = (first[0].num("pid"), first[1].num("pid"));
    cluster.expect("worker 1 stops pinging", |l| {
        l.is_worker("silent") && l.num("pid") == quiet
    });
    let silent_at = std::time::Instant::now();
    cluster.expect("SIGABRT for worker 1", |l| {
        l.is_worker("signal") && l.text.contains("SIGABRT") && l.num("pid") == quiet
    });
    assert!(
        silent_at.elapsed() < std::time::Duration::from_secs(3),
        "stopped {:?} after its last ping",
        silent_at.elapsed()
    );
    cluster.expect_log(&format!("worker 1 (pid {quiet}) sent no WATCHDOG=1 for 1s"));
    let again = cluster.expect("worker 1 restarted", |l| {
        l.is_worker("ready") && l.num("id") == 1 && l.num("pid") != quiet
    });
    assert_ne!(again.num("pid"), steady);
    assert!(
        cluster
            .seen(|l| l.is_worker("signal") && l.num("pid") == steady)
            .is_empty(),
        "the pinging worker was left alone"
    );
    let status = crate::harness::ctl_status(cluster.pid);
    assert!(
        status["workers"][1]["guards"]["watchdog"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["workers"][0]["guards"]["watchdog"], 0, "{status}");
    cluster.send(libc::SIGTERM);
    cluster.finish();
}
