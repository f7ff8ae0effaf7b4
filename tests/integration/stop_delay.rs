//! `--stop-delay`: on TERM, `/readyz` turns 503 at once while every worker keeps serving for the
//! delay; only then do the workers get the stop signal. A second stop signal ends the delay.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, Load, eventually};

/// The status code of `GET path` on the admin endpoint.
fn status_of(address: &str, path: &str) -> u16 {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err()
    {
        return 0;
    }
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The admin endpoint's address, from its log line.
fn admin_address(cluster: &mut Cluster) -> String {
    let line = cluster.expect_log("admin endpoint at http://");
    let address = line.text.split("http://").nth(1).unwrap();
    address.split('/').next().unwrap().to_string()
}

#[test]
fn readyz_turns_503_at_once_while_the_workers_serve_through_the_delay() {
    let mut cluster = Cluster::start(
        &[
            "--admin",
            "127.0.0.1:0",
            "-n",
            "2",
            "--min-uptime",
            "100ms",
            "--stop-delay",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ],
        &["--serve"],
    );
    let address = cluster.listening(1).remove(0);
    let admin = admin_address(&mut cluster);
    cluster.ready(2);
    if !eventually(|| status_of(&admin, "/readyz") == 200) {
        cluster.fail("/readyz never said 200");
    }
    let load = Load::start(&address, 2);
    load.wait_for(20);
    let sent = Instant::now();
    cluster.send(libc::SIGTERM);
    while status_of(&admin, "/readyz") == 200 && sent.elapsed() < Duration::from_secs(5) {}
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "/readyz said 503 only after {took:?}"
    );
    assert_eq!(status_of(&admin, "/readyz"), 503);
    // The clients keep getting answers through the delay (measured until 900 ms after TERM).
    let before = load.succeeded();
    while sent.elapsed() < Duration::from_millis(900) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "requests failed during the delay: {failures:?}"
    );
    assert!(
        ok > before + 10,
        "only {} answers during the delay",
        ok - before
    );
    // Then the stop: no worker heard of it before the delay was over.
    cluster.expect("a worker drained", |l| l.is_worker("served"));
    let stopped = sent.elapsed();
    assert!(
        stopped >= Duration::from_secs(1),
        "a worker was stopped {stopped:?} after TERM, within the 1s --stop-delay"
    );
    assert_eq!(cluster.exit_code(), 0);
}

/// Starts a cluster with a long `--stop-delay`, sends TERM and waits until the delay runs.
fn delaying() -> (Cluster, Instant) {
    let mut cluster = Cluster::start(
        &["-n", "2", "--min-uptime", "100ms", "--stop-delay", "60s"],
        &[],
    );
    cluster.ready(2);
    let sent = Instant::now();
    cluster.send(libc::SIGTERM);
    cluster.expect_log("every worker keeps serving for 1m (--stop-delay)");
    (cluster, sent)
}

#[test]
fn a_second_stop_signal_skips_the_rest_of_the_delay() {
    // INT after TERM: a second request at once.
    let (mut cluster, sent) = delaying();
    cluster.send(libc::SIGINT);
    cluster.expect_log("received SIGINT again during --stop-delay: stopping the workers now");
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );

    // TERM again: taken as a second request once it cannot be a wrapper's copy of the first
    // (the documented 1 s window), so this waits out the window before sending it.
    let (mut cluster, sent) = delaying();
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(sent.elapsed()));
    cluster.send(libc::SIGTERM);
    cluster.expect_log("received SIGTERM again during --stop-delay: stopping the workers now");
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
}
