//! Messages between workers through recluster (`RECLUSTER_MSG_FD`): who receives what, a `from`
//! that cannot be forged, `ctl send`, `info`, a worker that does not read, `--no-messages`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::harness::{Cluster, Line, ctl, ctl_status, eventually};

/// The JSON a `message` line carries.
fn json_of(line: &Line) -> Value {
    let text = line.text.split_once("json=").expect("a json= field").1;
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Starts N workers that print what they receive and send `message` on SIGUSR1.
fn messaging(n: &str, message: &str) -> (Cluster, Vec<Line>) {
    let mut cluster = Cluster::start(
        &["-n", n],
        &["--messages", "--ignore", "USR1", "--send-on-usr1", message],
    );
    let count: usize = n.parse().unwrap();
    let ready = cluster.ready(count);
    (cluster, ready)
}

/// Waits for one message line at each of `ids` (in whatever order they come); by id.
fn messages_at(cluster: &mut Cluster, ids: &[i32]) -> std::collections::BTreeMap<i32, Line> {
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < ids.len() {
        let line = cluster.expect(&format!("messages at {ids:?}"), |l| {
            l.is_worker("message") && ids.contains(&l.num("id"))
        });
        let id = line.num("id");
        if seen.insert(id, line).is_some() {
            cluster.fail(&format!("worker {id} received twice"));
        }
    }
    seen
}

/// Has worker `sender` send its message (what arrives is awaited on its own: the worker's
/// `sent` line and the receivers' lines come through different processes, in any order).
fn send_from(cluster: &mut Cluster, sender: u32) {
    let (code, _, stderr) = ctl(cluster.pid, &["signal", "USR1", &sender.to_string()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn others_reaches_everyone_but_the_sender_and_a_forged_from_is_replaced() {
    let (mut cluster, ready) = messaging(
        "3",
        r#"{"to":"others","data":{"n":1},"from":{"id":99,"pid":1}}"#,
    );
    send_from(&mut cluster, 0);
    for line in messages_at(&mut cluster, &[1, 2]).values() {
        let message = json_of(line);
        assert_eq!(message["data"], serde_json::json!({"n": 1}));
        assert_eq!(message["from"]["id"], 0, "stamped by recluster: {message}");
        assert_eq!(message["from"]["pid"], ready[0].num("pid"));
    }
    // The sender hears nothing: a message to everyone after it shows its queue was empty.
    let (code, _, stderr) = ctl(cluster.pid, &["send", "worker:0", r#"{"marker":true}"#]);
    assert_eq!(code, 0, "{stderr}");
    let line = cluster.expect("the marker at worker 0", |l| {
        l.is_worker("message") && l.num("id") == 0
    });
    assert_eq!(json_of(&line)["data"]["marker"], true, "{}", line.text);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_direct_message_reaches_only_its_target() {
    let (mut cluster, _) = messaging("3", r#"{"to":"worker:2","data":"just you"}"#);
    send_from(&mut cluster, 0);
    let line = cluster.expect("worker 2 receives it", |l| l.is_worker("message"));
    assert_eq!(line.num("id"), 2, "{}", line.text);
    assert_eq!(json_of(&line)["data"], "just you");
    // Everyone gets the next broadcast; before it, nothing else came to 0 or 1.
    let (code, _, _) = ctl(cluster.pid, &["send", "all", "\"after\""]);
    assert_eq!(code, 0);
    for line in messages_at(&mut cluster, &[0, 1]).values() {
        assert_eq!(
            json_of(line)["data"],
            "after",
            "only the broadcast: {}",
            line.text
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn ctl_send_all_reaches_every_worker_from_ctl() {
    let (mut cluster, _) = messaging("3", "{}");
    let (code, _, stderr) = ctl(cluster.pid, &["send", "all", r#"{"flush":["a","b"]}"#]);
    assert_eq!(code, 0, "{stderr}");
    for line in messages_at(&mut cluster, &[0, 1, 2]).values() {
        let message = json_of(line);
        assert_eq!(message["from"], serde_json::json!({"ctl": true}));
        assert_eq!(message["data"]["flush"][1], "b");
    }
    let (code, _, stderr) = ctl(cluster.pid, &["send", "everyone", "1"]);
    assert_eq!(code, 2, "a bad target is a usage error: {stderr}");
    let (code, _, stderr) = ctl(cluster.pid, &["send", "all", "{not json"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn info_answers_with_the_workers_and_mistakes_are_answered() {
    let (mut cluster, ready) = messaging("2", r#"{"to":"recluster","data":{"cmd":"info"}}"#);
    assert!(
        eventually(|| ctl_status(cluster.pid)["cluster"]["state"] == "running"),
        "the workers never were all ready"
    );
    send_from(&mut cluster, 1);
    let line = cluster.expect("the answer", |l| l.is_worker("message") && l.num("id") == 1);
    let info = json_of(&line);
    assert_eq!(info["from"]["recluster"], true, "{info}");
    let pids: Vec<i64> = info["data"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = ready.iter().map(|l| l.num("pid") as i64).collect();
    assert_eq!(pids, expected, "{info}");
    assert_eq!(info["data"]["workers"][0]["state"], "ready");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    let (mut cluster, _) = messaging("1", r#"{"to":"recluster","data":{"cmd":"stop"}}"#);
    send_from(&mut cluster, 0);
    let line = cluster.expect("the refusal", |l| l.is_worker("message"));
    let answer = json_of(&line);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("cannot change the cluster"),
        "{answer}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_worker_that_does_not_read_loses_messages_counted_per_worker() {
    // No --messages: the workers never read their socket.
    let mut cluster = Cluster::start(&["-n", "2"], &[]);
    cluster.ready(2);
    let path = ctl_status(cluster.pid)["cluster"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = UnixStream::connect(&path).unwrap();
    let data = "x".repeat(1000);
    let request = format!("{{\"v\":1,\"cmd\":\"send\",\"to\":\"worker:1\",\"data\":\"{data}\"}}\n");
    let mut answers = BufReader::new(stream.try_clone().unwrap()).lines();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut sent = 0;
    while sent < 1000 {
        stream.write_all(request.as_bytes()).unwrap();
        let answer = answers.next().unwrap().unwrap();
        // The message thread's queue is bounded: on a loaded machine it may say "busy", which
        // asks the client to try again (the documented back-pressure), not a failure.
        if answer.contains("busy") && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            continue;
        }
        assert!(answer.contains("\"ok\":true"), "{answer}");
        sent += 1;
    }
    let mut status = Value::Null;
    assert!(
        eventually(|| {
            status = ctl_status(cluster.pid);
            status["workers"][1]["messages_dropped"]
                .as_u64()
                .unwrap_or(0)
                > 0
        }),
        "no drop counted: {status}"
    );
    assert_eq!(status["workers"][0]["messages_dropped"], 0, "{status}");
    let dropped = status["workers"][1]["messages_dropped"].as_u64().unwrap();
    assert!(dropped < 1000, "some fit in its queue: {dropped}");
    assert!(
        cluster.seen(|l| l.is_log("exited")).is_empty(),
        "recluster and the workers carry on"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn the_message_socket_follows_the_listening_sockets_and_no_messages_leaves_it_out() {
    let mut cluster = Cluster::start(&["-n", "1", "--listen", "127.0.0.1:0"], &["--report"]);
    let report = cluster.expect("the report", |l| l.is_worker("report"));
    assert_eq!(report.field("fds"), Some("0,1,2,3,4"), "{}", report.text);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    let mut cluster = Cluster::start(
        &["-n", "1", "--listen", "127.0.0.1:0", "--no-messages"],
        &["--report"],
    );
    let report = cluster.expect("the report", |l| l.is_worker("report"));
    assert_eq!(report.field("fds"), Some("0,1,2,3"), "{}", report.text);
    let (code, _, stderr) = ctl(cluster.pid, &["send", "all", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--no-messages"), "{stderr}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn node_and_python_workers_use_the_socket_as_it_is() {
    let programs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs");
    let node = format!("{programs}/bus.js");
    let python = format!("{programs}/bus.py");
    for (runtime, script, kind) in [("node", &node, "node"), ("python3", &python, "python")] {
        let mut cluster =
            crate::harness::Launch::new(["-n", "2", "--", runtime, script.as_str()]).start();
        cluster.ready(2);
        // Worker 0 pings the others; worker 1 (Node) pongs back, or (Python) just prints.
        let (code, _, stderr) = ctl(cluster.pid, &["signal", "USR1", "0"]);
        assert_eq!(code, 0, "{stderr}");
        let got = cluster.expect(&format!("{kind} worker 1 gets the ping"), |l| {
            l.is_worker(kind) && l.num("id") == 1
        });
        let message: Value = serde_json::from_str(got.text.split_once("got=").unwrap().1).unwrap();
        assert_eq!(message["data"]["ping"], 0, "{}", got.text);
        assert_eq!(message["from"]["id"], 0, "{}", got.text);
        if kind == "node" {
            let pong = cluster.expect("the pong at worker 0", |l| {
                l.is_worker(kind) && l.num("id") == 0
            });
            assert!(pong.text.contains(r#""pong":0"#), "{}", pong.text);
        }
        cluster.send(libc::SIGTERM);
        cluster.finish();
    }
}
