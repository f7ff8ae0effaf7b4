//! --listen: the systemd protocol in every worker, both socket modes, names, IPv6 and unix, bind
//! failures, socket activation, and no lost connection when a worker is killed under load.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use crate::harness::{
    Cluster, Launch, Load, answered_by, cluster_args, ctl_status, http_get, run_to_end, worker_bin,
};

/// Starts a serving cluster; returns it with the `listening` line of each worker, by id.
fn serving(args: &[&str], n: usize) -> (Cluster, Vec<crate::harness::Line>) {
    let mut cluster = Cluster::start(args, &["--serve", "--report"]);
    let mut lines: Vec<_> = (0..n)
        .map(|_| cluster.expect("a worker listening", |l| l.is_worker("listening")))
        .collect();
    lines.sort_by_key(|l| l.num("id"));
    (cluster, lines)
}

fn stop(mut cluster: Cluster) {
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn every_worker_gets_exactly_fd_3_with_its_own_listen_pid_and_requests_spread() {
    // The default is a steered socket per worker; --shared-socket keeps one queue.
    let per_worker = ", one socket per worker, steered)";
    for (mode, expected_sockets, log, status) in [
        (None, 4, per_worker, "per_worker"),
        (Some("--socket-per-worker"), 4, per_worker, "per_worker"),
        (
            Some("--shared-socket"),
            1,
            ", shared: --shared-socket)",
            "shared",
        ),
    ] {
        let mut args = vec!["-n", "4", "--listen", "127.0.0.1:0"];
        args.extend(mode);
        let (mut cluster, listening) = serving(&args, 4);
        let address = cluster.listening(1).remove(0);
        assert!(
            !cluster.seen(|l| l.is_log(log)).is_empty(),
            "{mode:?}: the log names the mode ({log})"
        );
        let socket = &ctl_status(cluster.pid)["cluster"]["sockets"][0];
        assert_eq!(socket["mode"], status, "{mode:?}: {socket}");
        let reports = cluster.seen(|l| l.is_worker("report"));
        assert_eq!(reports.len(), 4, "each worker reports before it listens");
        for report in reports {
            // fd 4 is the message socket (RECLUSTER_MSG_FD), after the listening sockets.
            assert_eq!(
                report.field("fds"),
                Some("0,1,2,3,4"),
                "{mode:?}: {}",
                report.text
            );
        }
        // The worker exits 3 unless LISTEN_PID is its own pid and fd 3 is a listening socket.
        let mut inodes: Vec<&str> = listening
            .iter()
            .map(|l| l.field("sockets").unwrap())
            .collect();
        for line in &listening {
            assert_eq!(line.field("addresses"), Some(address.as_str()));
            assert_eq!(line.field("names"), Some("listen"));
        }
        inodes.sort();
        inodes.dedup();
        assert_eq!(inodes.len(), expected_sockets, "{mode:?}: distinct sockets");
        let ids = answered_by(&address, "id", 2);
        assert!(ids.len() >= 2, "{mode:?}: only {ids:?} answered");
        stop(cluster);
    }
}

#[test]
fn named_listeners_follow_the_order_given() {
    let (mut cluster, listening) = serving(
        &[
            "-n",
            "2",
            "-l",
            "web=127.0.0.1:0",
            "-l",
            "admin=127.0.0.1:0",
        ],
        2,
    );
    let addresses = cluster.listening(2);
    for line in &listening {
        assert_eq!(line.field("fds"), Some("3,4"));
        assert_eq!(line.field("names"), Some("web:admin"));
        assert_eq!(line.field("addresses"), Some(addresses.join(",").as_str()));
    }
    for address in &addresses {
        assert!(http_get(address).is_ok(), "{address}");
    }
    stop(cluster);
}

#[test]
fn ipv6_and_unix_sockets_serve() {
    let path = std::env::temp_dir().join(format!("recluster-unix-{}.sock", std::process::id()));
    let unix = format!("unix:{}", path.display());
    let (mut cluster, listening) = serving(&["-n", "2", "-l", "[::1]:0", "-l", &unix], 2);
    let addresses = cluster.listening(2);
    assert!(addresses[0].starts_with("[::1]:"), "{addresses:?}");
    assert_eq!(addresses[1], unix);
    // By default the TCP address is split per worker; the unix socket is the same for both.
    let inodes: Vec<Vec<&str>> = listening
        .iter()
        .map(|l| l.field("sockets").unwrap().split(',').collect())
        .collect();
    assert_ne!(inodes[0][0], inodes[1][0], "a TCP socket per worker");
    assert_eq!(inodes[0][1], inodes[1][1], "one unix socket for both");
    assert!(
        !cluster
            .seen(|l| l.is_log(", one socket shared by every worker)"))
            .is_empty(),
        "the log says the unix socket is shared"
    );
    assert_eq!(answered_by(&addresses[0], "id", 2).len(), 2);
    assert!(http_get(&unix).is_ok());
    stop(cluster);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_address_in_use_exits_1_naming_it_before_any_worker_starts() {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let foreign = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    foreign.set_reuse_port(true).unwrap();
    foreign
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    foreign.listen(8).unwrap();
    let foreign_port = foreign.local_addr().unwrap().as_socket().unwrap().port();
    let worker = worker_bin();
    for port in [plain.local_addr().unwrap().port(), foreign_port] {
        let address = format!("127.0.0.1:{port}");
        for mode in ["--shared-socket", "--socket-per-worker"] {
            let mut args = vec!["-n", "2", "-l", &address];
            args.push(mode);
            args.push(worker.to_str().unwrap());
            let (code, _, stderr) = run_to_end(&args);
            assert_eq!(code, 1, "{stderr}");
            assert_eq!(
                stderr,
                format!("recluster: error: {address}: address already in use\n")
            );
        }
    }
}

#[test]
fn a_unix_socket_path_that_is_a_file_is_refused_untouched() {
    let path = std::env::temp_dir().join(format!("recluster-file-{}", std::process::id()));
    std::fs::write(&path, "keep me").unwrap();
    let worker = worker_bin();
    let address = format!("unix:{}", path.display());
    let (code, _, stderr) = run_to_end(&["-l", &address, worker.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    std::fs::remove_file(&path).unwrap();
}

/// Starts `recluster -n N -- worker --serve` as systemd would for a .socket unit: `fd` at fd 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` = recluster's pid, and `extra` variables.
fn activated(fd: i32, extra: &str, workers: usize) -> Cluster {
    let script = format!("LISTEN_FDS=1 LISTEN_PID=$$ {extra} exec \"$0\" \"$@\"");
    let n = workers.to_string();
    let mut launch = Launch::wrapped(
        &["sh", "-c", &script],
        cluster_args(&["-n", &n], &["--serve"]),
    );
    // SAFETY: dup2 and fcntl are async-signal-safe. dup2(3, 3) would leave close-on-exec set,
    // so a socket that already is fd 3 gets the flag cleared instead.
    unsafe {
        launch.command().pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, 3);
            }
            Ok(())
        });
    }
    launch.start()
}

#[test]
fn sockets_from_a_service_manager_are_passed_on() {
    // What systemd does for a .socket unit: the socket at fd 3, LISTEN_PID = recluster's pid.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let inode = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
    let mut cluster = activated(listener.as_raw_fd(), "LISTEN_FDNAMES=web", 2);
    for _ in 0..2 {
        let line = cluster.expect("a worker listening", |l| l.is_worker("listening"));
        assert_eq!(line.field("names"), Some("web"));
        let expected = inode.display().to_string();
        assert_eq!(
            format!("socket:[{}]", line.field("sockets").unwrap()),
            expected
        );
    }
    assert_eq!(answered_by(&address, "id", 2).len(), 2);
    stop(cluster);
}

#[test]
fn systemd_socket_activate_serves_through_recluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let wrapper = ["systemd-socket-activate", "-l", address.as_str()];
    let mut cluster = Launch::wrapped(&wrapper, cluster_args(&["-n", "2"], &["--serve"])).start();
    // It binds, says so, and starts recluster on the first connection.
    cluster.expect_log(&format!("Listening on {address}"));
    http_get(&address).expect("the first connection starts recluster and is served");
    for _ in 0..2 {
        cluster.expect("a worker listening", |l| l.is_worker("listening"));
    }
    assert_eq!(answered_by(&address, "id", 2).len(), 2);
    stop(cluster);
}

#[test]
fn killing_a_worker_under_load_fails_no_request() {
    for mode in ["--shared-socket", "--socket-per-worker"] {
        let mut args = vec!["-n", "2", "--listen", "127.0.0.1:0"];
        args.push(mode);
        let (mut cluster, listening) = serving(&args, 2);
        let address = cluster.listening(1).remove(0);
        let load = Load::start(&address, 4);
        load.wait_for(100);
        // SIGKILL loses what a worker has already accepted — nothing can save that. recluster's
        // promise is that nothing *waiting in a queue* is lost, so the victim first stops
        // accepting and finishes its requests (USR2 → "idle"), then dies.
        let victim = listening[1].num("pid");
        // SAFETY: signalling a worker this test started.
        unsafe { libc::kill(victim, libc::SIGUSR2) };
        cluster.expect("the victim is idle", |l| {
            l.is_worker("idle") && l.num("pid") == victim
        });
        // From now on, connections the kernel gives the victim's socket wait in its queue (per
        // worker) or go to the other worker (shared socket).
        // SAFETY: as above.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let replacement = cluster.expect("a replacement", |l| l.is_worker("listening"));
        assert_eq!(replacement.num("id"), 1);
        load.wait_for(200);
        let (ok, failures) = load.finish();
        assert!(
            failures.is_empty(),
            "{mode:?}: {} of {} requests failed: {:?}",
            failures.len(),
            ok,
            &failures[..failures.len().min(5)]
        );
        stop(cluster);
    }
}

#[test]
fn scaling_down_per_worker_drains_the_slots_queue_and_fails_no_request() {
    // Whatever net.ipv4.tcp_migrate_req says: the slot's socket is never closed, no new
    // connection reaches it, and its worker is stopped once it has served its queue.
    let (mut cluster, _) = serving(&["-n", "4", "--socket-per-worker", "-l", "127.0.0.1:0"], 4);
    let address = cluster.listening(1).remove(0);
    cluster.expect_log("all 4 workers are ready");
    let load = Load::start(&address, 8);
    load.wait_for(100);
    for left in [3, 2, 1] {
        cluster.send(libc::SIGTTOU);
        let workers = if left == 1 { "worker" } else { "workers" };
        cluster.expect_log(&format!("scaling down to {left} {workers}"));
        cluster.expect_log("has served its queue: stopping it");
        load.wait_for(50);
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    // Every connection now reaches the remaining worker.
    for _ in 0..50 {
        assert_eq!(
            crate::harness::body_field(&http_get(&address).unwrap(), "id"),
            "0"
        );
    }
    stop(cluster);
}

#[test]
fn a_dead_or_starting_worker_gets_no_new_connection_per_worker() {
    // The replacement of a killed worker never accepts and never becomes ready here (a release
    // that hangs at start): a connection steered to its slot would wait until the client gives
    // up. Steered, every one is answered at once.
    let tag = format!("{}-{}", std::process::id(), "steer");
    let delay = std::env::temp_dir().join(format!("recluster-delay-{tag}"));
    let release = std::env::temp_dir().join(format!("recluster-release-{tag}"));
    std::fs::write(&delay, "0").unwrap();
    std::fs::write(&release, "v1").unwrap();
    let (delay_arg, release_arg) = (delay.display().to_string(), release.display().to_string());
    let mut cluster = Cluster::start(
        &[
            "-n",
            "4",
            "--socket-per-worker",
            "--ready",
            "notify",
            "--min-uptime",
            "1h",
            "-l",
            "127.0.0.1:0",
        ],
        &[
            "--serve",
            "--serve-after-file",
            &delay_arg,
            "--version-file",
            &release_arg,
            "--notify",
            "0",
        ],
    );
    let address = cluster.listening(1).remove(0);
    let first: Vec<i32> = cluster.ready(4).iter().map(|l| l.num("pid")).collect();
    cluster.expect_log("all 4 workers are ready");
    std::fs::write(&delay, "600000").unwrap();
    std::fs::write(&release, "silent").unwrap();
    // SAFETY: killing a worker this test started (nothing waits in its queue: no load yet).
    unsafe { libc::kill(first[1], libc::SIGKILL) };
    cluster.expect_log(&format!("(pid {}) was killed by SIGKILL", first[1]));
    cluster.expect("the replacement", |l| {
        l.is_worker("ready") && l.num("id") == 1 && !first.contains(&l.num("pid"))
    });
    for _ in 0..200 {
        let sent = std::time::Instant::now();
        let body = http_get(&address).expect("a request");
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(5),
            "a request waited {:?} in the starting worker's queue",
            sent.elapsed()
        );
        assert_ne!(crate::harness::body_field(&body, "id"), "1", "{body}");
    }
    stop(cluster);
    let _ = std::fs::remove_file(&delay);
    let _ = std::fs::remove_file(&release);
}

/// What a worker reports its sockets' `O_NONBLOCK` to be now (it is asked with USR1).
fn nonblocking_of(cluster: &mut Cluster, pid: i32) -> String {
    // SAFETY: signalling a worker this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let line = cluster.expect("its flags", |l| l.is_worker("flags") && l.num("pid") == pid);
    line.field("nonblock").unwrap().to_string()
}

#[test]
fn a_running_workers_non_blocking_socket_stays_non_blocking_through_respawns_and_reloads() {
    // The flag lives in the open file description, which every holder of the socket shares: a
    // spawn that touched it would freeze an event-loop server in accept(). The replacements here
    // start slowly and have not set the flag themselves when the running worker is asked.
    for mode in ["--shared-socket", "--socket-per-worker"] {
        let delay = std::env::temp_dir().join(format!(
            "recluster-serve-after-{}-{}",
            std::process::id(),
            mode.len()
        ));
        std::fs::write(&delay, "0").unwrap();
        let mut args = vec!["-n", "2", "--min-uptime", "1h", "--listen", "127.0.0.1:0"];
        args.push(mode);
        let file = delay.display().to_string();
        let mut cluster = Cluster::start(&args, &["--serve", "--serve-after-file", &file]);
        let mut accepting: Vec<_> = (0..2)
            .map(|_| cluster.expect("a worker accepting", |l| l.is_worker("accepting")))
            .collect();
        accepting.sort_by_key(|l| l.num("id"));
        let (first, second) = (accepting[0].num("pid"), accepting[1].num("pid"));
        assert_eq!(nonblocking_of(&mut cluster, first), "1", "{mode:?}");
        std::fs::write(&delay, "600000").unwrap(); // the next release starts slowly

        // A sibling's respawn.
        // SAFETY: signalling a worker this test started.
        unsafe { libc::kill(second, libc::SIGKILL) };
        cluster.expect("worker 1 respawned", |l| {
            l.is_worker("listening") && l.num("id") == 1 && l.num("pid") != second
        });
        assert_eq!(
            nonblocking_of(&mut cluster, first),
            "1",
            "{mode:?}: after a sibling's respawn"
        );

        // A reload: worker 0's replacement is started beside it (and never becomes ready here).
        cluster.send(libc::SIGHUP);
        cluster.expect("worker 0 of generation 1", |l| {
            l.is_worker("listening") && l.num("id") == 0 && l.num("pid") != first
        });
        assert_eq!(
            nonblocking_of(&mut cluster, first),
            "1",
            "{mode:?}: after its replacement was started"
        );
        cluster.send(libc::SIGTERM);
        assert_eq!(cluster.exit_code(), 0, "{mode:?}");
        let _ = std::fs::remove_file(&delay);
    }
}

#[test]
fn an_inherited_stream_socket_that_is_not_listening_is_refused() {
    // What a .socket unit with Accept=yes passes: a connection, not a listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connection = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut cluster = activated(connection.as_raw_fd(), "", 1);
    let line = cluster.expect_log("recluster: error:");
    assert!(
        line.text
            .contains("fd 3 from LISTEN_FDS: is a stream socket that is not listening"),
        "{}",
        line.text
    );
    assert_eq!(cluster.exit_code(), 1);
    assert!(cluster.seen(|l| l.is_worker("listening")).is_empty());
}

#[test]
fn where_steering_is_refused_per_worker_sockets_fall_back_to_the_kernels_hashing() {
    let wrapper = crate::harness::no_unshare();
    let mut cluster = Launch::wrapped(
        &[&wrapper, "--no-steering"],
        cluster_args(
            &["-n", "2", "--socket-per-worker", "-l", "127.0.0.1:0"],
            &["--serve"],
        ),
    )
    .start();
    let warning = cluster.expect_log("cannot steer connections on");
    let address = cluster.listening(1).remove(0);
    assert!(
        !cluster
            .seen(|l| l.is_log(", one socket per worker, not steered)"))
            .is_empty(),
        "the listening line says so"
    );
    assert!(
        warning.text.contains("(operation not permitted)"),
        "{}",
        warning.text
    );
    assert_eq!(answered_by(&address, "id", 2).len(), 2, "both serve");
    // Scaling down closes the slot's socket, or new connections would keep landing in it.
    cluster.send(libc::SIGTTOU);
    cluster.expect_log("exited with status 0 after being stopped");
    for _ in 0..50 {
        assert_eq!(
            crate::harness::body_field(&http_get(&address).unwrap(), "id"),
            "0"
        );
    }
    stop(cluster);
}

#[test]
fn unix_sockets_alone_are_shared_by_default_and_an_error_when_split_is_asked() {
    let path =
        std::env::temp_dir().join(format!("recluster-only-unix-{}.sock", std::process::id()));
    let unix = format!("unix:{}", path.display());
    let (mut cluster, listening) = serving(&["-n", "2", "-l", &unix], 2);
    assert_eq!(listening[0].field("sockets"), listening[1].field("sockets"));
    cluster.expect_log(", one socket shared by every worker)");
    stop(cluster);
    let worker = worker_bin();
    let (code, _, stderr) =
        run_to_end(&["-l", &unix, "--socket-per-worker", worker.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--socket-per-worker needs a TCP address"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_shared_socket_has_an_environment_twin_that_takes_1_or_0() {
    for (value, log) in [
        ("1", ", shared: --shared-socket)"),
        ("0", ", one socket per worker, steered)"),
    ] {
        let mut cluster = Launch::new(cluster_args(
            &["-n", "2", "-l", "127.0.0.1:0"],
            &["--serve"],
        ))
        .env("RECLUSTER_SHARED_SOCKET", value)
        .start();
        cluster.expect_log(log);
        stop(cluster);
    }
    // The command line wins over the other flag's twin; both on the command line contradict.
    let mut cluster = Launch::new(cluster_args(
        &["-n", "2", "-l", "127.0.0.1:0", "--socket-per-worker"],
        &["--serve"],
    ))
    .env("RECLUSTER_SHARED_SOCKET", "1")
    .start();
    cluster.expect_log(", one socket per worker, steered)");
    stop(cluster);
    let worker = worker_bin();
    let args = [
        "-l",
        "127.0.0.1:0",
        "--shared-socket",
        "--socket-per-worker",
    ];
    let (code, _, stderr) = run_to_end(&[&args[..], &[worker.to_str().unwrap()]].concat());
    assert_eq!(code, 2);
    assert!(stderr.contains("contradict each other"), "{stderr}");
}
