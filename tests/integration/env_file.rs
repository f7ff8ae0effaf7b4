//! `--env-file`: workers get the files' variables; a reload reads them again, so only the new
//! generation sees a changed file; a malformed file is a usage error at the start and refuses a
//! reload later (old workers keep serving), naming `PATH:LINE` both times.

use sha2::{Digest, Sha256};

use crate::harness::{Cluster, Launch, Line, Scratch, ctl, ctl_status, is_running, run_to_end};

/// A worker that prints its generation and `GREETING`, then sleeps until stopped.
const SHOW_ENV: &str = "echo \"env id=$WORKER_ID pid=$$ gen=$WORKER_GENERATION greeting=${GREETING-unset} home=${KEEP-unset}\"; exec sleep 1000";

fn start(file: &str) -> Cluster {
    Launch::new([
        "-n",
        "2",
        "--min-uptime",
        "100ms",
        "--env-file",
        file,
        "--",
        "/bin/sh",
        "-c",
        SHOW_ENV,
    ])
    .env("KEEP", "inherited")
    .env("GREETING", "from-recluster")
    .start()
}

fn env_lines(cluster: &mut Cluster, n: usize) -> Vec<Line> {
    (0..n)
        .map(|i| cluster.expect(&format!("env line {i}"), |l| l.is_worker("env")))
        .collect()
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The env-file digests `ctl status --json` shows, as (generation, sha256).
fn digests(pid: i32) -> Vec<(u64, String)> {
    let status = ctl_status(pid);
    status["cluster"]["env_files"]
        .as_array()
        .expect("env_files")
        .iter()
        .map(|e| {
            (
                e["generation"].as_u64().unwrap(),
                e["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_changed_env_file_reaches_the_new_generation_only() {
    let scratch = Scratch::new("envfile-reload", 0o700);
    let file = scratch.0.join("app.env");
    let first = "# the app's settings\nexport GREETING=v1\n";
    std::fs::write(&file, first).unwrap();
    let mut cluster = start(&file.display().to_string());
    for line in env_lines(&mut cluster, 2) {
        assert_eq!(line.field("gen"), Some("0"), "{}", line.text);
        // The file wins over recluster's environment; the rest is inherited.
        assert_eq!(line.field("greeting"), Some("v1"), "{}", line.text);
        assert_eq!(line.field("home"), Some("inherited"), "{}", line.text);
    }
    cluster.expect_log("workers are ready");
    assert_eq!(digests(cluster.pid), [(0, digest(first))]);

    let second = "GREETING='v2'\n";
    std::fs::write(&file, second).unwrap();
    cluster.send(libc::SIGHUP);
    for line in env_lines(&mut cluster, 2) {
        assert_eq!(line.field("gen"), Some("1"), "{}", line.text);
        assert_eq!(line.field("greeting"), Some("v2"), "{}", line.text);
    }
    cluster.expect_log("reload to generation 1 complete");
    assert_eq!(digests(cluster.pid), [(1, digest(second))]);
    let (code, table, stderr) = ctl(cluster.pid, &["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains(&format!(
            "env files of generation 1: sha256 {}",
            digest(second)
        )),
        "{table}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_malformed_env_file_at_the_start_is_a_usage_error_naming_its_line() {
    let scratch = Scratch::new("envfile-start", 0o700);
    let file = scratch.0.join("bad.env");
    std::fs::write(&file, "A=1\n\nB=$(id)\n").unwrap();
    let path = file.display().to_string();
    let (code, _, stderr) = run_to_end(&["--env-file", &path, "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("{path}:3: ")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let missing = scratch.0.join("missing.env").display().to_string();
    let (code, _, stderr) = run_to_end(&["--env-file", &missing, "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
}

#[test]
fn a_malformed_env_file_at_a_reload_refuses_it_and_the_old_workers_keep_serving() {
    let scratch = Scratch::new("envfile-refused", 0o700);
    let file = scratch.0.join("app.env");
    std::fs::write(&file, "GREETING=v1\n").unwrap();
    let path = file.display().to_string();
    let mut cluster = start(&path);
    let old: Vec<i32> = env_lines(&mut cluster, 2)
        .iter()
        .map(|l| l.num("pid"))
        .collect();
    cluster.expect_log("workers are ready");

    std::fs::write(
        &file,
        "GREETING=v2\n# fine so far\nGREETING=\"unterminated\n",
    )
    .unwrap();
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("{path}:3: ")), "{stderr}");
    cluster.expect_log(&format!(
        "reload requested: reload refused: env file {path}:3: "
    ));
    cluster.send(libc::SIGHUP);
    cluster.expect_log(&format!(
        "received HUP: reload refused: env file {path}:3: "
    ));
    assert!(
        old.iter().all(|&pid| is_running(pid)),
        "old workers stopped"
    );
    let status = ctl_status(cluster.pid);
    assert_eq!(status["cluster"]["generation"], 0);
    assert_eq!(status["cluster"]["reloading_to"], serde_json::Value::Null);
    assert_eq!(status["cluster"]["reloads_abandoned"], 0);

    // Fixed, the next reload takes the next generation number: the refused ones used none.
    std::fs::write(&file, "GREETING=v3\n").unwrap();
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    let new = env_lines(&mut cluster, 2);
    assert!(
        new.iter()
            .all(|l| l.field("gen") == Some("1") && l.field("greeting") == Some("v3"))
    );
    assert!(
        cluster
            .seen(|l| l.is_worker("env") && l.field("greeting") == Some("v2"))
            .is_empty(),
        "a worker started with the refused file"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn under_watch_an_edited_env_file_reaches_the_next_generation_and_a_broken_one_refuses_it() {
    // The development loop: the env file lies in the watched directory; editing it reloads.
    let scratch = Scratch::new("envfile-watch", 0o700);
    let file = scratch.0.join("app.env");
    std::fs::write(&file, "GREETING=v1\n").unwrap();
    let (dir, path) = (scratch.0.display().to_string(), file.display().to_string());
    let mut cluster = Launch::new([
        "-n",
        "2",
        "--min-uptime",
        "100ms",
        "--env-file",
        &path,
        "--watch",
        &dir,
        "--watch-delay",
        "100ms",
        "--",
        "/bin/sh",
        "-c",
        SHOW_ENV,
    ])
    .start();
    for line in env_lines(&mut cluster, 2) {
        assert_eq!(line.field("greeting"), Some("v1"), "{}", line.text);
    }
    cluster.expect_log("workers are ready");
    std::fs::write(&file, "GREETING=v2\n").unwrap();
    for line in env_lines(&mut cluster, 2) {
        assert_eq!(line.field("gen"), Some("1"), "{}", line.text);
        assert_eq!(line.field("greeting"), Some("v2"), "{}", line.text);
    }
    cluster.expect_log("reload to generation 1 complete");
    // Broken: the watch reload is refused, naming the line; the workers keep serving.
    std::fs::write(&file, "GREETING=v3\nGREETING=$(id)\n").unwrap();
    let refused = cluster.expect_log("files changed (--watch): reload refused");
    assert!(
        refused.text.contains(&format!("{path}:2")),
        "{}",
        refused.text
    );
    let status = ctl_status(cluster.pid);
    assert_eq!(status["cluster"]["generation"], 1, "{status}");
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["generation"] == 1 && is_running(w["pid"].as_i64().unwrap() as i32)),
        "{status}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

/// The longest `KEY=VALUE` the kernel passes to a program (`MAX_ARG_STRLEN` less the NUL).
const LONGEST: usize = 32 * 4096 - 1;

/// A file whose line 3 is `BIG=` and a value making `BIG=VALUE` `length` bytes long.
fn big_file(length: usize) -> String {
    format!("A=1\n# the big one\nBIG={}\n", "b".repeat(length - 4))
}

#[test]
fn a_variable_too_long_to_exec_is_a_usage_error_at_the_start_and_refuses_a_reload() {
    let scratch = Scratch::new("envfile-e2big", 0o700);
    let file = scratch.0.join("app.env");
    let path = file.display().to_string();
    // One byte too many: every exec would fail with E2BIG (a crash loop); refused instead.
    std::fs::write(&file, big_file(LONGEST + 1)).unwrap();
    let mut refused = Launch::new(["--env-file", &path, "--", "/bin/sh", "-c", SHOW_ENV]).start();
    let first = refused.expect("the first line", |_| true);
    assert!(
        first
            .text
            .contains(&format!("{path}:3: BIG=VALUE is {} bytes", LONGEST + 1)),
        "{}",
        first.text
    );
    assert_eq!(refused.exit_code(), 2);
    assert!(refused.seen(|l| l.is_worker("env")).is_empty());

    // The longest the kernel takes starts, and the worker gets all of it.
    std::fs::write(&file, big_file(LONGEST)).unwrap();
    let mut cluster = Launch::new([
        "-n",
        "2",
        "--min-uptime",
        "100ms",
        "--env-file",
        &path,
        "--",
        "/bin/sh",
        "-c",
        "echo \"env pid=$$ gen=$WORKER_GENERATION big=${#BIG}\"; exec sleep 1000",
    ])
    .start();
    let old: Vec<i32> = env_lines(&mut cluster, 2)
        .iter()
        .map(|l| {
            assert_eq!(
                l.field("big"),
                Some(&*(LONGEST - 4).to_string()),
                "{}",
                l.text
            );
            l.num("pid")
        })
        .collect();
    cluster.expect_log("workers are ready");
    std::fs::write(&file, big_file(LONGEST + 1)).unwrap();
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:3: BIG=VALUE is")),
        "{stderr}"
    );
    cluster.expect_log(&format!(
        "reload requested: reload refused: env file {path}:3: "
    ));
    assert!(
        old.iter().all(|&pid| is_running(pid)),
        "old workers stopped"
    );
    assert_eq!(ctl_status(cluster.pid)["cluster"]["generation"], 0);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn env_files_too_large_together_for_an_exec_are_refused_naming_them() {
    let scratch = Scratch::new("envfile-total", 0o700);
    // Each file alone is fine (600 KiB); together they would crowd the command line out.
    let files: Vec<String> = ["A", "B"]
        .iter()
        .map(|name| {
            let path = scratch.0.join(format!("{name}.env"));
            let text: String = (0..5)
                .map(|i| format!("{name}_{i}={}\n", "v".repeat(120 * 1024)))
                .collect();
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        })
        .collect();
    let mut cluster = Launch::new([
        "--env-file",
        &files[0],
        "--env-file",
        &files[1],
        "--",
        "/bin/sh",
        "-c",
        SHOW_ENV,
    ])
    .start();
    let first = cluster.expect("the first line", |_| true);
    assert!(
        first
            .text
            .contains(&format!("env files {}, {}: ", files[0], files[1])),
        "{}",
        first.text
    );
    assert_eq!(cluster.exit_code(), 2);
    assert!(cluster.seen(|l| l.is_worker("env")).is_empty());
}
