//! Procfile groups (`-f`, `-m`, `--after`, `--once`): each group's workers get their own
//! WORKER_GROUP / WORKER_ID / WORKER_COUNT, start in the order the flags ask, and are named
//! GROUP.ID in the output, the status, `ctl` and messages.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{
    Cluster, Launch, answered_by, body_field, ctl, ctl_status, http_get, run_to_end, worker_bin,
};

/// A Procfile in a temporary file, removed on drop.
struct Procfile(PathBuf);

impl Procfile {
    fn new(name: &str, text: &str) -> Procfile {
        let path =
            std::env::temp_dir().join(format!("recluster-procfile-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Procfile(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Procfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(procfile: &Procfile, args: &[&str]) -> Cluster {
    let path = procfile.arg();
    let mut all = vec!["-f", path.as_str(), "--prefix"];
    all.extend_from_slice(args);
    Launch::new(all).start()
}

#[test]
fn each_group_gets_its_own_worker_ids_and_is_named_group_dot_id() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "ids",
        &format!(
            "# two programs\nweb: echo env group=$WORKER_GROUP id=$WORKER_ID count=$WORKER_COUNT; exec {worker}\njobs: echo env group=$WORKER_GROUP id=$WORKER_ID count=$WORKER_COUNT; exec {worker}\n"
        ),
    );
    let mut cluster = start(&procfile, &["-m", "web=2,jobs=1"]);
    let mut seen: Vec<String> = (0..3)
        .map(|_| {
            cluster
                .expect("an env line", |l| l.text.contains("] env group="))
                .text
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "[jobs.0] env group=jobs id=0 count=1",
            "[web.0] env group=web id=0 count=2",
            "[web.1] env group=web id=1 count=2",
        ]
    );
    cluster.expect_log("worker web.1 started");
    let status = ctl_status(cluster.pid);
    let named: Vec<String> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("{}.{}", w["group"].as_str().unwrap(), w["id"]))
        .collect();
    assert_eq!(named, ["web.0", "web.1", "jobs.0"], "{status}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_once_group_runs_to_its_end_before_the_groups_after_it() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "once",
        &format!("migrate: echo migrating; sleep 0.3; echo migrated\nweb: exec {worker}\n"),
    );
    let mut cluster = start(&procfile, &["--once", "migrate"]);
    cluster.expect("the migration ends", |l| l.text == "[migrate.0] migrated");
    cluster.expect("web starts after it", |l| {
        l.text.starts_with("[web.0] ready")
    });
    cluster.expect_log("starting group web (migrate finished)");
    let status = ctl_status(cluster.pid);
    assert_eq!(
        status["workers"][0]["state"], "done",
        "migrate is not restarted: {status}"
    );
    assert_eq!(status["workers"][0]["last_exit"]["code"], 0);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_failing_once_group_stops_the_cluster_with_its_status() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "fails",
        &format!("migrate: echo cannot migrate; exit 3\nweb: exec {worker}\n"),
    );
    let path = procfile.arg();
    let (code, stdout, stderr) = run_to_end(&["-f", &path, "--once", "migrate", "--prefix"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.contains("[migrate.0] cannot migrate"), "{stdout}");
    assert!(!stdout.contains("[web."), "web never started: {stdout}");
    assert!(
        stderr.contains("the one-shot group migrate did not exit 0"),
        "{stderr}"
    );
}

#[test]
fn after_starts_a_group_once_its_dependency_is_ready() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new("after", &format!("web: exec {worker}\ndb: exec {worker}\n"));
    let mut cluster = start(&procfile, &["--after", "web=db", "--min-uptime", "300ms"]);
    cluster.expect_log("starting group web (db ready)");
    cluster.expect("web starts", |l| l.text.starts_with("[web.0] ready"));
    let status = ctl_status(cluster.pid);
    let db = status["workers"][1]["started_at"].as_f64().unwrap();
    let db_ready = status["workers"][1]["ready_at"].as_f64().unwrap();
    let web = status["workers"][0]["started_at"].as_f64().unwrap();
    assert!(web >= db_ready && db_ready - db >= 0.29, "{status}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn the_exit_status_is_the_first_group_in_the_file_that_failed() {
    for (text, expected) in [("a: exit 5\nb: exit 7\n", 5), ("b: exit 7\na: exit 5\n", 7)] {
        let procfile = Procfile::new("status", text);
        let path = procfile.arg();
        let (code, _, stderr) = run_to_end(&["-f", &path, "--restart", "never"]);
        assert_eq!(code, expected, "{text:?}: {stderr}");
    }
}

#[test]
fn ctl_and_messages_name_workers_by_group() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "ctl",
        &format!("web: exec {worker} --messages\njobs: exec {worker} --messages\n"),
    );
    let mut cluster = start(&procfile, &["-m", "all=2", "--min-uptime", "100ms"]);
    for _ in 0..4 {
        cluster.expect("a worker", |l| l.text.contains("] ready id="));
    }
    let (code, _, stderr) = ctl(cluster.pid, &["send", "group:jobs", r#"{"only":"jobs"}"#]);
    assert_eq!(code, 0, "{stderr}");
    let mut got: Vec<String> = (0..2)
        .map(|_| {
            let line = cluster.expect("a message", |l| l.text.contains("] message id="));
            line.text.split(' ').next().unwrap().to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["[jobs.0]", "[jobs.1]"]);
    let (code, _, stderr) = ctl(cluster.pid, &["send", "worker:web.1", "1"]);
    assert_eq!(code, 0, "{stderr}");
    cluster.expect("web.1 alone gets it", |l| {
        l.text.starts_with("[web.1] message id=")
    });

    let old = ctl_status(cluster.pid)["workers"][1]["pid"].clone();
    let (code, stdout, stderr) = ctl(cluster.pid, &["restart", "web.1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restarted web.1"), "{stdout}");
    let new = ctl_status(cluster.pid)["workers"][1].clone();
    assert_ne!(new["pid"], old);
    assert_eq!(new["group"], "web");
    let (code, _, stderr) = ctl(cluster.pid, &["restart", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("GROUP.ID"), "{stderr}");
    let (code, stdout, stderr) = ctl(cluster.pid, &["scale", "+1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "6 workers (web=3,jobs=3)\n", "every group grows");
    let status: Value = ctl_status(cluster.pid);
    assert_eq!(status["cluster"]["workers"], 6);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn procfile_mistakes_are_usage_errors_naming_the_flag() {
    let procfile = Procfile::new("usage", "web: true\njobs: true\n");
    let path = procfile.arg();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-f", "/nonexistent/Procfile"],
            "--procfile /nonexistent/Procfile",
        ),
        (&["-f", &path, "-m", "db=2"], "no process db"),
        (&["-f", &path, "--after", "web=db"], "--after"),
        (
            &["-f", &path, "--after", "web=jobs", "--after", "jobs=web"],
            "cycle",
        ),
        (&["-f", &path, "--once", "nope"], "--once"),
        (&["-f", &path, "-n", "2"], "--workers"),
        (&["-f", &path, "--", "true"], "COMMAND"),
        (&["-m", "web=2", "--", "true"], "--procfile"),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run_to_end(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?} should name {expected}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn a_group_is_reloaded_and_signalled_on_its_own() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "one-group",
        &format!("web: exec {worker} --ignore USR1\njobs: exec {worker} --ignore USR1\n"),
    );
    let mut cluster = start(&procfile, &["-m", "all=2", "--min-uptime", "100ms"]);
    for _ in 0..4 {
        cluster.expect("a worker", |l| l.text.contains("] ready id="));
    }
    let pids = |cluster: &Cluster| -> Vec<Value> {
        ctl_status(cluster.pid)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].clone())
            .collect()
    };
    assert!(
        crate::harness::eventually(|| ctl_status(cluster.pid)["cluster"]["state"] == "running"),
        "the four workers never were all ready"
    );
    let before = pids(&cluster);
    let (code, stdout, stderr) = ctl(cluster.pid, &["reload", "--group", "web", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restarted every worker of web"), "{stdout}");
    let after = pids(&cluster);
    assert_ne!(after[0], before[0], "web.0 replaced");
    assert_ne!(after[1], before[1], "web.1 replaced");
    assert_eq!(after[2..], before[2..], "jobs untouched");

    let (code, _, stderr) = ctl(cluster.pid, &["signal", "USR1", "--group", "jobs"]);
    assert_eq!(code, 0, "{stderr}");
    for _ in 0..2 {
        cluster.expect("USR1 at a jobs worker", |l| {
            l.text.starts_with("[jobs.") && l.text.contains("signal SIGUSR1")
        });
    }
    let (code, _, stderr) = ctl(cluster.pid, &["signal", "USR2", "1", "--group", "web"]);
    assert_eq!(code, 0, "{stderr}");
    cluster.expect("USR2 at web.1", |l| {
        l.text.starts_with("[web.1] signal SIGUSR2")
    });
    assert!(
        cluster
            .seen(|l| l.text.starts_with("[web.") && l.text.contains("signal SIGUSR1"))
            .is_empty(),
        "no web worker got jobs' USR1"
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

/// Each group's workers by name, as `ctl status` lists them (slots, not replacements).
fn named_workers(pid: i32) -> Vec<String> {
    let status = ctl_status(pid);
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["role"] == "slot")
        .map(|w| format!("{}.{}", w["group"].as_str().unwrap(), w["id"]))
        .collect()
}

#[test]
fn a_group_scales_alone_and_ttin_ttou_scale_every_group() {
    let worker = worker_bin().display().to_string();
    let line =
        format!("echo env group=$WORKER_GROUP id=$WORKER_ID count=$WORKER_COUNT; exec {worker}");
    let procfile = Procfile::new("scale", &format!("web: {line}\njobs: {line}\n"));
    let mut cluster = start(&procfile, &["-m", "web=2,jobs=1"]);
    cluster.expect_log("all 3 workers are ready");

    let (code, out, err) = ctl(cluster.pid, &["scale", "+1", "--group", "web", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "4 workers (web=3,jobs=1)\n");
    cluster.expect_log("'scale +1 --group web' from uid");
    cluster.expect("web.2's environment", |l| {
        l.text == "[web.2] env group=web id=2 count=3"
    });
    assert_eq!(
        named_workers(cluster.pid),
        ["web.0", "web.1", "jobs.0", "web.2"]
    );

    // jobs to 0: its worker stops; then web.2 leaves and comes back in the same slot.
    let (code, out, err) = ctl(cluster.pid, &["scale", "0", "--group", "jobs", "--wait"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "3 workers (web=3,jobs=0)\n"),
        "{err}"
    );
    assert_eq!(named_workers(cluster.pid), ["web.0", "web.1", "web.2"]);
    let (code, _, err) = ctl(cluster.pid, &["scale", "-1", "--group", "web", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(named_workers(cluster.pid), ["web.0", "web.1"]);

    // TTIN: every group that runs workers grows by one; jobs stays at the 0 it was set to.
    cluster.send(libc::SIGTTIN);
    cluster.expect_log("scaling up to 3 workers (worker web.2 added)");
    cluster.expect("web.2 again", |l| {
        l.text == "[web.2] env group=web id=2 count=3"
    });
    cluster.send(libc::SIGTTOU);
    cluster.expect_log("scaling down to 2 workers (worker web.2 removed)");

    let (code, _, err) = ctl(cluster.pid, &["scale", "0", "--group", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("that leaves no worker"), "{err}");
    let (code, _, err) = ctl(cluster.pid, &["scale", "+1", "--group", "db"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("there is no group db (the groups: web, jobs)"),
        "{err}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_group_named_socket_is_split_among_that_groups_workers_alone_as_it_scales() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "sockets",
        &format!("web: exec {worker} --serve --report\njobs: exec {worker} --report\n"),
    );
    let mut cluster = start(&procfile, &["-m", "web=2,jobs=2", "-l", "web=127.0.0.1:0"]);
    let address = cluster.listening(1).remove(0);
    // Two web workers' listening lines and the job workers' reports, in any order.
    let (mut inodes, mut jobs) = (Vec::new(), Vec::new());
    while inodes.len() < 2 || jobs.len() < 2 {
        let line = cluster.expect("a web worker listening, or a job worker's report", |l| {
            (l.text.starts_with("[web.") && l.text.contains("] listening id="))
                || l.text.starts_with("[jobs.") && l.text.contains("] report")
        });
        match line.text.split_once("sockets=") {
            Some((_, inode)) => inodes.push(inode.to_string()),
            None => jobs.push(line),
        }
    }
    assert_ne!(
        inodes[0], inodes[1],
        "each web worker has a socket of its own"
    );
    for job in &jobs {
        assert!(
            job.text.contains(" fds=0,1,2,3 "),
            "no listening socket: {}",
            job.text
        );
    }
    cluster.expect_log("all 4 workers are ready");
    // The job slots hold sockets in the group too (slot i is index i), never accepted from: a
    // request steered there would hang. Every request is answered, by web workers only.
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let body = http_get(&address).unwrap_or_else(|e| panic!("request failed: {e}"));
        pids.insert(body_field(&body, "pid"));
    }
    assert_eq!(pids.len(), 2, "both web workers, no other: {pids:?}");
    let (code, _, err) = ctl(cluster.pid, &["scale", "+1", "--group", "web", "--wait"]);
    assert_eq!(code, 0, "{err}");
    let ids = answered_by(&address, "id", 3);
    assert_eq!(ids.len(), 3, "web.2 (slot 4) takes its share: {ids:?}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn where_steering_is_refused_groups_share_one_socket_per_address_and_say_why() {
    let worker = worker_bin().display().to_string();
    let procfile = Procfile::new(
        "nosteer",
        &format!("web: exec {worker} --serve\njobs: exec {worker}\n"),
    );
    let path = procfile.arg();
    let wrapper = crate::harness::no_unshare();
    let mut cluster = Launch::wrapped(
        &[&wrapper, "--no-steering"],
        ["-f", &path, "-m", "web=2", "-l", "web=127.0.0.1:0"],
    )
    .start();
    let address = cluster.listening(1).remove(0);
    cluster.expect_log(
        "one socket per address, shared by every worker: the kernel refuses a steering program",
    );
    cluster.expect_log("all 3 workers are ready");
    for _ in 0..20 {
        assert!(http_get(&address).is_ok(), "every request is answered");
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let out = std::process::Command::new(&wrapper)
        .arg("--no-steering")
        .arg(crate::harness::recluster_bin())
        .args(["-f", &path, "-l", "web=127.0.0.1:0", "--socket-per-worker"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs a steering program"), "{stderr}");
}
