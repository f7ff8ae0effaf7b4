//! The mistakes a newcomer makes on day one, as they make them (issue 25, "Confusing"): each gets
//! one line that names what was typed and what would work.

use crate::harness::run_to_end;

/// Runs recluster with `args`; asserts a usage error (status 2, one line); returns that line.
fn usage_error(args: &[&str]) -> String {
    let (code, stdout, stderr) = run_to_end(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn a_typo_keeps_the_similar_name_on_its_one_line() {
    let line = usage_error(&["--workrs", "2", "--", "true"]);
    assert!(
        line.starts_with(
            "recluster: error: unexpected argument '--workrs' (did you mean '--workers'?)"
        ),
        "{line}"
    );
    let line = usage_error(&["ctl", "stauts"]);
    assert!(line.contains("'stauts'"), "{line}");
    assert!(
        line.contains("did you mean") && line.contains("'status'"),
        "{line}"
    );
}

#[test]
fn a_size_without_a_unit_is_refused_with_the_likely_meaning() {
    let line = usage_error(&["--max-memory", "512", "--", "true"]);
    assert!(line.contains("did you mean 512M?"), "{line}");
    // Plainly bytes: a bare number from 1 MiB up, or a B.
    let (code, _, stderr) = run_to_end(&["--max-memory", "1073741824", "--plan"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_to_end(&["--max-memory", "2G", "--plan"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_ready_quorum_above_the_workers_is_refused() {
    let line = usage_error(&[
        "--admin",
        "127.0.0.1:0",
        "--ready-quorum",
        "5",
        "-n",
        "2",
        "--",
        "true",
    ]);
    assert!(
        line.contains("--ready-quorum 5") && line.contains("starts with 2"),
        "{line}"
    );
    for quorum in ["2", "100%"] {
        let (code, _, stderr) = run_to_end(&[
            "--admin",
            "127.0.0.1:0",
            "--ready-quorum",
            quorum,
            "-n",
            "2",
            "--plan",
        ]);
        assert_eq!(code, 0, "{quorum}: {stderr}");
    }
}

#[test]
fn a_negative_number_is_a_value_that_is_too_small() {
    let line = usage_error(&["-n", "-1", "--", "true"]);
    assert!(
        line.contains("'-1' for '--workers <N>'") && line.contains("must be positive"),
        "{line}"
    );
    assert!(!line.contains("unexpected argument"), "{line}");
    let line = usage_error(&["--max-restarts", "-2", "--", "true"]);
    assert!(line.contains("cannot be negative"), "{line}");
}

#[test]
fn a_url_given_to_listen_gets_the_address_in_it() {
    let line = usage_error(&["--listen", "http://127.0.0.1:8080/", "--", "true"]);
    assert!(
        line.contains("is a URL, not an address: write 127.0.0.1:8080"),
        "{line}"
    );
    assert!(!line.contains("IPv6"), "{line}");
}

#[test]
fn a_privileged_port_as_a_user_names_the_capability_and_the_sysctl() {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1 {
        eprintln!("every port is unprivileged here (ip_unprivileged_port_start {start}): skipped");
        return;
    }
    let address = format!("127.0.0.1:{}", start - 1);
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(crate::harness::recluster_bin())
        .args(["--control", "none", "--listen", &address, "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        stderr.contains("CAP_NET_BIND_SERVICE")
            && stderr.contains("net.ipv4.ip_unprivileged_port_start"),
        "{stderr}"
    );
}

#[test]
fn a_bad_environment_twin_is_named_by_its_variable() {
    let out = std::process::Command::new(crate::harness::recluster_bin())
        .args(["--", "true"])
        .env("RECLUSTER_WORKERS", "abc")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "RECLUSTER_WORKERS=abc: invalid value (the environment twin of --workers): 'abc' is not a whole number"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("'--workers <N>'"), "{stderr}");
    // Given on the command line, the flag is the culprit (the twin is not even read).
    let out = std::process::Command::new(crate::harness::recluster_bin())
        .args(["-n", "xyz", "--", "true"])
        .env("RECLUSTER_WORKERS", "abc")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'xyz' for '--workers <N>'"),
        "{stderr}"
    );
}

#[test]
fn ctl_finds_the_cluster_with_pid_name_or_control_after_the_verb_too() {
    use crate::harness::{Cluster, recluster_bin, run_ctl};
    use std::process::Command;
    let name = format!("newcomer-{}", std::process::id());
    let mut cluster = Cluster::start(&["-n", "1", "--name", &name], &[]);
    let line = cluster.expect_log("control socket at ");
    let socket = line.text.split("control socket at ").nth(1).unwrap().trim();
    cluster.ready(1);
    let pid = cluster.pid.to_string();
    for args in [
        &["ctl", "status", "--pid", &pid][..],
        &["ctl", "status", "--json", "--name", &name],
        &["ctl", "status", "--control", socket],
        &["ctl", "signal", "USR2", "--control", socket],
    ] {
        let (code, stdout, stderr) = run_ctl(Command::new(recluster_bin()).args(args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stdout.is_empty() || args[1] == "signal", "{args:?}");
    }
    // Two ways of choosing, one on each side of the verb, still contradict each other.
    let (code, _, stderr) = run_ctl(Command::new(recluster_bin()).args([
        "ctl",
        "--pid",
        &pid,
        "status",
        "--control",
        socket,
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--pid and --control"), "{stderr}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn last_exit_says_replaced_after_a_reload_and_outside_after_a_kill_9() {
    use crate::harness::{Cluster, ctl, ctl_status, eventually};
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "200ms"], &[]);
    cluster.ready(2);
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    let status = ctl_status(cluster.pid);
    for worker in status["workers"].as_array().unwrap() {
        assert_eq!(worker["last_exit"]["what"], "replaced: reload", "{worker}");
        assert_eq!(worker["restarts"], 0, "{worker}");
    }
    let (_, table, _) = ctl(cluster.pid, &["status"]);
    assert!(table.contains("replaced: reload"), "{table}");
    assert!(!table.contains("exit 0"), "{table}");
    // A kill -9 from another process is not "ended on its own".
    let victim = status["workers"][1]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on a pid this test's cluster started; no memory is involved.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(|| {
            last = ctl_status(cluster.pid)["workers"][1]["last_exit"].clone();
            last["pid"] == victim
        }),
        "{last}"
    );
    assert_eq!(last["what"], "SIGKILL, outside", "{last}");
    assert!(
        last["reason"].as_str().unwrap().contains("did not send"),
        "{last}"
    );
    // The wording a person reads: one restart is "1 restart"; CPUS says "any" as the page does.
    let (_, table, _) = ctl(cluster.pid, &["status"]);
    let header = table.lines().next().unwrap();
    assert!(header.contains(", 1 restart,"), "{header}");
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(row.contains("SIGKILL, outside"), "{row}");
    assert!(row.split_whitespace().any(|w| w == "any"), "{row}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn recluster_s_own_lines_can_carry_the_time_and_are_json_beside_json_output() {
    use crate::harness::{Cluster, Launch, Stream, cluster_args};
    // --prefix=json: every line on both streams is one JSON object, recluster's own included.
    let mut cluster = Launch::new(cluster_args(&["-n", "1", "--prefix=json"], &[])).start();
    cluster.expect("the worker's line, as JSON", |l| {
        l.stream == Stream::Stdout && l.text.contains("\"worker\":0")
    });
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let own: Vec<&String> = cluster
        .history
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .map(|l| &l.text)
        .collect();
    assert!(own.len() >= 3, "{own:?}");
    for text in own {
        let value: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(value["worker"], serde_json::Value::Null, "{text}");
        assert!(
            value["ts"].is_string() && value["level"].is_string(),
            "{text}"
        );
    }
    // --log-format time: an RFC 3339 time first.
    let mut cluster = Cluster::start(&["-n", "1", "--log-format", "time"], &[]);
    let line = cluster.expect_log("starting 1 worker");
    let (time, rest) = line.text.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{}", line.text);
    assert_eq!(rest, "recluster: starting 1 worker");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    // -vv adds what -v does not: every event and action of the loop.
    let mut cluster = Cluster::start(&["-n", "1", "-vv"], &[]);
    cluster.expect_log("recluster: trace: action: Spawn");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn root_finds_another_users_cluster_by_its_pid() {
    use crate::harness::{Launch, Scratch, cluster_args, recluster_bin};
    // A cluster run by nobody, its control socket in nobody's $TMPDIR/recluster-65534.
    let scratch = Scratch::new("other-user", 0o1777);
    let tmp = &scratch.0;
    let wrapper = [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ];
    let mut launch = Launch::wrapped(&wrapper, cluster_args(&["-n", "1"], &[]));
    launch
        .command()
        .env("TMPDIR", tmp)
        .env_remove("XDG_RUNTIME_DIR");
    let mut cluster = launch.start();
    cluster.ready(1);
    cluster.expect_log("control socket");
    let status = std::process::Command::new(recluster_bin())
        .args(["ctl", "status", "--json", "--pid", &cluster.pid.to_string()])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(answer["cluster"]["pid"], cluster.pid, "{answer}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
