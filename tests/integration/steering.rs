//! `--steer client` and `--steer cpu`: the worker a connection reaches, by the client's address
//! (bound by the client on loopback: 127.0.0.2, 127.0.0.3, …) or by the CPU the client runs on,
//! through a worker's death and a scale-up.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::harness::{Cluster, body_field, ctl, ctl_status};

/// One `GET /` on a new connection from `source` to `target`; the answer's body.
fn get_from(source: IpAddr, target: &str) -> String {
    let to: SocketAddr = target.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("answer to {source}: {e}"));
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The whole answer to `GET path` from the admin endpoint at `address`.
fn admin_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Which worker (`id`) answers each source address, checking that all `per_address` connections
/// of one address reach the same one.
fn workers_of(sources: &[IpAddr], target: &str, per_address: usize) -> BTreeMap<IpAddr, String> {
    sources
        .iter()
        .map(|&source| {
            let ids: std::collections::BTreeSet<String> = (0..per_address)
                .map(|_| body_field(&get_from(source, target), "id"))
                .collect();
            assert_eq!(ids.len(), 1, "{source} reached workers {ids:?}");
            (source, ids.into_iter().next().unwrap())
        })
        .collect()
}

#[test]
fn steer_client_keeps_each_address_on_one_worker_and_moves_only_the_clients_of_a_slot_that_leaves()
{
    let tag = format!("{}-client", std::process::id());
    let delay = std::env::temp_dir().join(format!("recluster-delay-{tag}"));
    let release = std::env::temp_dir().join(format!("recluster-release-{tag}"));
    std::fs::write(&delay, "0").unwrap();
    std::fs::write(&release, "v1").unwrap();
    let (delay_arg, release_arg) = (delay.display().to_string(), release.display().to_string());
    let mut cluster = Cluster::start(
        &[
            "-n",
            "4",
            "--admin",
            "127.0.0.1:0",
            "--steer",
            "client",
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
    let target = cluster.listening(1).remove(0);
    let admin = cluster.expect_log("admin endpoint at http://").text;
    let admin = admin
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let first: Vec<i32> = cluster.ready(4).iter().map(|l| l.num("pid")).collect();
    cluster.expect_log("all 4 workers are ready");
    // The steering shows in ctl status (JSON and text) and /metrics.
    let status = ctl_status(cluster.pid);
    assert_eq!(
        status["cluster"]["sockets"][0]["steering"], "client",
        "{status}"
    );
    let (_, text, _) = ctl(cluster.pid, &["status"]);
    assert!(text.contains("per-worker, steered by client)"), "{text}");
    let metrics = admin_get(&admin, "/metrics");
    assert!(
        metrics.contains(&format!(
            "recluster_socket_info{{name=\"listen\",address=\"{target}\",mode=\"per_worker\",steering=\"client\"}} 1"
        )),
        "{metrics}"
    );
    let sources: Vec<IpAddr> = (2..18u8)
        .map(|last| IpAddr::from([127, 0, 0, last]))
        .collect();
    let before = workers_of(&sources, &target, 50);
    let used: std::collections::BTreeSet<&String> = before.values().collect();
    assert!(
        used.len() >= 3,
        "16 addresses spread over the 4 workers: {before:?}"
    );

    // The worker of the first address dies; its replacement never gets ready.
    let victim: u32 = before[&sources[0]].parse().unwrap();
    std::fs::write(&delay, "600000").unwrap();
    std::fs::write(&release, "silent").unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(first[victim as usize], libc::SIGKILL) };
    cluster.expect_log(&format!(
        "(pid {}) was killed by SIGKILL",
        first[victim as usize]
    ));
    let replacement = cluster.expect("the replacement", |l| {
        l.is_worker("ready") && l.num("id") == victim as i32 && !first.contains(&l.num("pid"))
    });
    let dead = workers_of(&sources, &target, 10);
    for source in &sources {
        if before[source] == victim.to_string() {
            assert_ne!(
                dead[source], before[source],
                "{source} still reaches the dead worker"
            );
        } else {
            assert_eq!(
                dead[source], before[source],
                "{source} moved, though its worker lives"
            );
        }
    }

    // A replacement that gets ready: its slot's clients come back, and only they move.
    std::fs::write(&delay, "0").unwrap();
    std::fs::write(&release, "v1").unwrap();
    // SAFETY: killing the replacement this test's cluster started (it never got ready).
    unsafe { libc::kill(replacement.num("pid"), libc::SIGKILL) };
    assert!(crate::harness::eventually(|| {
        let status = ctl_status(cluster.pid);
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        workers.len() == 4
            && workers.iter().all(|w| w["state"] == "ready")
            && !workers.iter().any(|w| w["pid"] == replacement.num("pid"))
    }));
    assert_eq!(
        workers_of(&sources, &target, 10),
        before,
        "back where they were"
    );

    // One worker more: the addresses that move go to it, and only about 1/5 of them.
    let (code, _, stderr) = ctl(cluster.pid, &["scale", "+1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    let after = workers_of(&sources, &target, 10);
    let moved: Vec<&IpAddr> = sources.iter().filter(|s| after[s] != before[s]).collect();
    for source in &moved {
        assert_eq!(
            after[source], "4",
            "{source} moved, but not to the new worker"
        );
    }
    println!(
        "steer client: scale 4 -> 5 moved {} of {} client addresses",
        moved.len(),
        sources.len()
    );
    assert!(moved.len() <= sources.len() / 2, "{after:?}");
    assert_eq!(
        ctl_status(cluster.pid)["workers"].as_array().map(Vec::len),
        Some(5)
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let _ = std::fs::remove_file(&delay);
    let _ = std::fs::remove_file(&release);
}

/// The answers to `count` requests on new connections from a thread pinned to `cpu` (loopback
/// handles a connection's first packet on the CPU that sends it).
fn answers_from_cpu(cpu: usize, target: &str, count: usize) -> Vec<String> {
    let target = target.to_string();
    std::thread::spawn(move || {
        // SAFETY: an all-zero cpu_set_t is empty; CPU_SET writes within it; sched_setaffinity
        // reads it for this thread only.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set)
        };
        assert_eq!(rc, 0, "pin the client to CPU {cpu}");
        (0..count)
            .map(|_| crate::harness::http_get(&target).expect("a request"))
            .collect()
    })
    .join()
    .unwrap()
}

/// The CPUs this test may run on (at most 4).
fn my_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid out-parameter; CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .take(4)
            .collect()
    }
}

#[test]
fn steer_cpu_answers_a_client_from_the_worker_pinned_to_its_cpu_and_from_another_while_that_one_restarts()
 {
    let cpus = my_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: one CPU here");
        return;
    }
    let tag = format!("{}-cpu", std::process::id());
    let delay = std::env::temp_dir().join(format!("recluster-delay-{tag}"));
    let release = std::env::temp_dir().join(format!("recluster-release-{tag}"));
    std::fs::write(&delay, "0").unwrap();
    std::fs::write(&release, "v1").unwrap();
    let (delay_arg, release_arg) = (delay.display().to_string(), release.display().to_string());
    let n = cpus.len().to_string();
    let list = cpus
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster::start(
        &[
            "-n",
            &n,
            "--cpus",
            &list,
            "--pin=cpu",
            "--steer",
            "cpu",
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
    let target = cluster.listening(1).remove(0);
    let pids: Vec<i32> = cluster
        .ready(cpus.len())
        .iter()
        .map(|l| l.num("pid"))
        .collect();
    cluster.expect_log(&format!("all {n} workers are ready"));
    let mut worker_on = BTreeMap::new();
    for &cpu in &cpus {
        let answers = answers_from_cpu(cpu, &target, 30);
        for body in &answers {
            assert_eq!(
                body_field(body, "cpu"),
                cpu.to_string(),
                "a client on CPU {cpu}: {body}"
            );
        }
        let ids: std::collections::BTreeSet<String> =
            answers.iter().map(|b| body_field(b, "id")).collect();
        assert_eq!(ids.len(), 1, "CPU {cpu}: {ids:?}");
        worker_on.insert(cpu, ids.into_iter().next().unwrap());
    }
    // The worker on the first CPU dies and its replacement takes long to start: that CPU's
    // clients are answered by another worker, at once, meanwhile.
    let cpu = cpus[0];
    let victim: usize = worker_on[&cpu].parse().unwrap();
    std::fs::write(&delay, "600000").unwrap();
    std::fs::write(&release, "silent").unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(pids[victim], libc::SIGKILL) };
    cluster.expect_log(&format!("(pid {}) was killed by SIGKILL", pids[victim]));
    let replacement = cluster.expect("the replacement", |l| {
        l.is_worker("ready") && l.num("id") == victim as i32 && !pids.contains(&l.num("pid"))
    });
    let started = std::time::Instant::now();
    for body in answers_from_cpu(cpu, &target, 30) {
        assert_ne!(body_field(&body, "id"), victim.to_string(), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "30 requests took {:?}",
        started.elapsed()
    );
    // A replacement that gets ready takes its CPU's clients back.
    std::fs::write(&delay, "0").unwrap();
    std::fs::write(&release, "v1").unwrap();
    // SAFETY: killing the replacement this test's cluster started (it never got ready).
    unsafe { libc::kill(replacement.num("pid"), libc::SIGKILL) };
    assert!(crate::harness::eventually(|| {
        let workers = ctl_status(cluster.pid)["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        workers.iter().all(|w| w["state"] == "ready")
    }));
    for body in answers_from_cpu(cpu, &target, 30) {
        assert_eq!(body_field(&body, "id"), victim.to_string(), "{body}");
        assert_eq!(body_field(&body, "cpu"), cpu.to_string(), "{body}");
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let _ = std::fs::remove_file(&delay);
    let _ = std::fs::remove_file(&release);
}

/// Moves the calling thread (and what it starts from now on: recluster, client threads) into a
/// network namespace of its own, with loopback up and `net.ipv4.tcp_migrate_req` set to
/// `migrate` there only: the host's setting is never touched. False where that cannot be done.
fn own_network(migrate: bool) -> bool {
    // SAFETY: unshare(CLONE_NEWNET) moves this thread alone into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    let setting = format!(
        "ip link set lo up && echo {} > /proc/sys/net/ipv4/tcp_migrate_req",
        u8::from(migrate)
    );
    std::process::Command::new("sh")
        .args(["-c", &setting])
        .status()
        .is_ok_and(|s| s.success())
}

/// One `GET /` on a new connection: how long it took, or why it failed.
fn timed_get(target: &str) -> Result<Duration, String> {
    let sent = std::time::Instant::now();
    crate::harness::http_get(target).map(|_| sent.elapsed())
}

#[test]
fn with_tcp_migrate_req_a_dead_workers_waiting_connections_go_to_the_others_at_once() {
    // A thread of its own: the network namespace is this thread's and its children's.
    std::thread::spawn(|| {
        if !own_network(true) {
            eprintln!("skipped: no network namespace of our own here");
            return;
        }
        let mut cluster = Cluster::start(
            &["-n", "4", "--ready", "notify", "--min-uptime", "1h", "-l", "127.0.0.1:0"],
            &["--serve", "--serve-after", "1500", "--notify", "1500"],
        );
        let target = cluster.listening(1).remove(0);
        cluster.expect_log("hands the connections waiting in its socket to the other workers (net.ipv4.tcp_migrate_req=1)");
        let pids: Vec<i32> = cluster.ready(4).iter().map(|l| l.num("pid")).collect();
        cluster.expect_log("all 4 workers are ready");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (stop, target) = (stop.clone(), target.clone());
                std::thread::spawn(move || {
                    let mut results = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) && results.len() < 20_000 {
                        results.push(timed_get(&target));
                    }
                    results
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300)); // load before the kill
        // SAFETY: killing a worker this test started.
        unsafe { libc::kill(pids[1], libc::SIGKILL) };
        // Said before the death is reported: the sockets change as the worker is reaped.
        cluster.expect_log("worker 1: the connections waiting for it were handed to the other workers");
        cluster.expect_log(&format!("(pid {}) was killed by SIGKILL", pids[1]));
        // Past the replacement's 1.5 s start.
        assert!(crate::harness::eventually(|| {
            let workers = ctl_status(cluster.pid)["workers"].as_array().cloned().unwrap_or_default();
            workers.len() == 4 && workers.iter().all(|w| w["state"] == "ready")
        }));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let results: Vec<Result<Duration, String>> =
            clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
        let slowest = results.iter().filter_map(|r| r.as_ref().ok()).max().copied();
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        println!(
            "tcp_migrate_req=1, a worker killed under load: {} requests, {} failed, slowest {slowest:?}",
            results.len(),
            failed.len()
        );
        // Only what the killed worker had accepted itself can fail.
        assert!(failed.len() <= 8, "{failed:?}");
        assert!(
            slowest.is_some_and(|s| s < Duration::from_millis(500)),
            "a request waited {slowest:?}"
        );
        cluster.send(libc::SIGTERM);
        cluster.exit_code();
    })
    .join()
    .unwrap();
}

/// A BASE with BASE..BASE+n free on 127.0.0.1 (bounded tries).
fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let all_free =
            (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

#[test]
fn port_per_worker_gives_each_worker_its_port_and_readiness_waits_for_it() {
    let base = free_ports(4);
    let base_arg = base.to_string();
    let mut cluster = Cluster::start(
        &[
            "-n",
            "3",
            "--port-per-worker",
            &base_arg,
            "--ready",
            "listening",
        ],
        &["--bind", "env", "--bind-after", "800"],
    );
    let mut bound: Vec<(i32, i32)> = (0..3)
        .map(|_| {
            let line = cluster.expect("a worker bound", |l| l.is_worker("bound"));
            (line.num("id"), line.num("port"))
        })
        .collect();
    bound.sort();
    let expected: Vec<(i32, i32)> = (0..3).map(|i| (i, i32::from(base) + i)).collect();
    assert_eq!(bound, expected, "worker i binds BASE+i");
    cluster.expect_log("all 3 workers are ready");
    for port in base..base + 3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "port {port}"
        );
    }
    // A scale-up gives the new worker the next port, and waits for it too.
    let (code, _, stderr) = ctl(cluster.pid, &["scale", "+1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    let line = cluster.expect("worker 3 bound", |l| {
        l.is_worker("bound") && l.num("id") == 3
    });
    assert_eq!(line.num("port"), i32::from(base) + 3);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn under_port_per_worker_a_worker_listening_elsewhere_is_not_ready() {
    // It listens, but not on its PORT: --ready listening waits for that port alone.
    let base = free_ports(2);
    let other = (base + 1).to_string();
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--port-per-worker",
            &base.to_string(),
            "--ready",
            "listening",
            "--ready-timeout",
            "1s",
        ],
        &["--bind", &other],
    );
    cluster.expect("the worker bound elsewhere", |l| l.is_worker("bound"));
    cluster.expect_log("was not ready within 1s");
    cluster.send(libc::SIGTERM);
    cluster.exit_code();
}

#[test]
fn port_per_worker_past_65535_and_steer_without_sockets_are_usage_errors() {
    let (code, _, stderr) =
        crate::harness::run_to_end(&["-n", "2", "--port-per-worker", "65535", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("65536"), "{stderr}");
    let (code, _, stderr) = crate::harness::run_to_end(&["--steer", "client", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--steer client") && stderr.contains("--listen"),
        "{stderr}"
    );
    let (code, _, stderr) = crate::harness::run_to_end(&[
        "-l",
        "127.0.0.1:0",
        "--shared-socket",
        "--steer",
        "cpu",
        "true",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--shared-socket"), "{stderr}");
    let (code, _, stderr) =
        crate::harness::run_to_end(&["-l", "127.0.0.1:0", "--steer", "cpu", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--pin"), "{stderr}");
}
