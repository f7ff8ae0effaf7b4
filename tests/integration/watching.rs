//! `--watch`: a change under a watched path starts one rolling reload, a burst of changes within
//! `--watch-delay` is one, ignored names start nothing, and changes during a reload queue exactly
//! one more. "Exactly one" is checked against a sentinel: a SIGHUP sent afterwards must begin the
//! very next generation.

use std::fs;
use std::path::Path;

use crate::harness::*;

/// A project tree: src/app.py, node_modules/dep/index.js, target/debug/.
fn project(name: &str) -> Scratch {
    let scratch = Scratch::new(name, 0o755);
    fs::create_dir_all(scratch.0.join("src")).unwrap();
    fs::create_dir_all(scratch.0.join("node_modules/dep")).unwrap();
    fs::create_dir_all(scratch.0.join("target/debug")).unwrap();
    fs::write(scratch.0.join("src/app.py"), "v1").unwrap();
    fs::write(scratch.0.join("node_modules/dep/index.js"), "x").unwrap();
    scratch
}

/// recluster -n 2 watching `dir`, its workers ready and its watches in place.
fn watching(dir: &Path, delay: &str, min_uptime: &str, extra: &[&str]) -> Cluster {
    let dir = dir.display().to_string();
    let mut args = vec![
        "-n",
        "2",
        "--min-uptime",
        min_uptime,
        "--watch",
        &dir,
        "--watch-delay",
        delay,
    ];
    args.extend_from_slice(extra);
    let mut cluster = Cluster::start(&args, &[]);
    cluster.expect_log("--watch: watching ");
    cluster.expect_log("all 2 workers are ready");
    cluster
}

/// What the watch reported as changed, line by line.
fn changed_lines(cluster: &Cluster) -> Vec<String> {
    cluster
        .seen(|l| l.is_log("--watch: changed: "))
        .iter()
        .map(|l| {
            l.text
                .split("--watch: changed: ")
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Sends SIGHUP, which must begin generation `next` (no other reload slipped in), waits for it to
/// complete, and returns how many reloads the watch began in all.
fn sentinel(cluster: &mut Cluster, next: u32) -> usize {
    cluster.send(libc::SIGHUP);
    cluster.expect_log(&format!(
        "received SIGHUP: reloading 2 workers to generation {next}"
    ));
    cluster.expect_log(&format!("reload to generation {next} complete"));
    cluster
        .seen(|l| l.is_log("files changed (--watch): reloading"))
        .len()
}

fn stop(mut cluster: Cluster) {
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_touched_file_starts_exactly_one_rolling_reload() {
    let dir = project("watch-one");
    let mut cluster = watching(&dir.0, "300ms", "200ms", &[]);
    let app = dir.0.join("src/app.py");
    let touched = std::process::Command::new("touch")
        .arg(&app)
        .status()
        .unwrap();
    assert!(touched.success());
    cluster.expect_log("files changed (--watch): reloading 2 workers to generation 1");
    cluster.expect_log("reload to generation 1 complete");
    assert_eq!(changed_lines(&cluster), [app.display().to_string()]);
    // Rolling: each new worker was ready before the old one of its slot was stopped.
    assert_eq!(
        cluster
            .seen(|l| l.is_log("of generation 1 (pid") && l.is_log("is ready: stopping pid"))
            .len(),
        2
    );
    assert_eq!(sentinel(&mut cluster, 2), 1, "exactly one reload");
    stop(cluster);
}

#[test]
fn ten_changes_within_the_delay_are_one_reload() {
    let dir = project("watch-ten");
    let mut cluster = watching(&dir.0, "1s", "200ms", &[]);
    for i in 0..10 {
        fs::write(dir.0.join(format!("src/module{i}.py")), "x").unwrap();
    }
    cluster.expect_log("reload to generation 1 complete");
    let changed = changed_lines(&cluster);
    assert_eq!(changed.len(), 1, "one batch: {changed:?}");
    assert!(changed[0].contains("module0.py"), "{changed:?}");
    assert!(changed[0].ends_with("more changes"), "{changed:?}");
    assert_eq!(sentinel(&mut cluster, 2), 1, "ten changes, one reload");
    stop(cluster);
}

#[test]
fn changes_to_ignored_names_start_no_reload() {
    let dir = project("watch-ignored");
    let mut cluster = watching(&dir.0, "500ms", "200ms", &["--watch-ignore", "*.log"]);
    // Ignored by default (dependency trees, build output, editor swap files) or by the flag.
    fs::write(dir.0.join("node_modules/dep/index.js"), "y").unwrap();
    fs::write(dir.0.join("target/debug/app"), "y").unwrap();
    fs::create_dir_all(dir.0.join("target/release")).unwrap();
    fs::write(dir.0.join("src/.app.py.swp"), "y").unwrap();
    fs::write(dir.0.join("src/4913"), "y").unwrap();
    fs::write(dir.0.join("src/app.py~"), "y").unwrap();
    fs::write(dir.0.join("server.log"), "y").unwrap();
    fs::create_dir(dir.0.join("__pycache__")).unwrap();
    fs::write(dir.0.join("__pycache__/app.pyc"), "y").unwrap();
    // The one change that counts, after them: the first batch must name it alone.
    let real = dir.0.join("src/real.py");
    fs::write(&real, "y").unwrap();
    cluster.expect_log("reload to generation 1 complete");
    assert_eq!(changed_lines(&cluster), [real.display().to_string()]);
    assert_eq!(sentinel(&mut cluster, 2), 1);
    stop(cluster);
}

#[test]
fn changes_during_a_reload_queue_one_more_and_never_more() {
    let dir = project("watch-queue");
    // A reload of two workers lasts at least 2 x 2s: time for three batches of 100ms.
    let mut cluster = watching(&dir.0, "100ms", "2s", &[]);
    fs::write(dir.0.join("src/app.py"), "v2").unwrap();
    cluster.expect_log("files changed (--watch): reloading 2 workers to generation 1");
    for version in ["v3", "v4", "v5"] {
        fs::write(dir.0.join("src/app.py"), version).unwrap();
        cluster.expect_log("--watch: changed: ");
    }
    cluster.expect_log("reload to generation 1 complete");
    assert_eq!(
        cluster
            .seen(|l| l.is_log("one more reload follows it"))
            .len(),
        1
    );
    cluster.expect_log("files changed (--watch): reloading 2 workers to generation 2");
    cluster.expect_log("reload to generation 2 complete");
    assert_eq!(sentinel(&mut cluster, 3), 2, "the first and the one queued");
    stop(cluster);
}

#[test]
fn with_groups_a_change_reloads_the_groups_whose_command_lies_under_it() {
    let dir = project("watch-groups");
    for group in ["web", "jobs"] {
        fs::create_dir(dir.0.join(group)).unwrap();
        fs::write(dir.0.join(group).join("version"), "v1").unwrap();
    }
    let worker = worker_bin().display().to_string();
    let root = dir.0.display().to_string();
    let procfile = dir.0.join("Procfile");
    fs::write(
        &procfile,
        format!(
            "web: exec {worker} --version-file {root}/web/version\njobs: exec {worker} --version-file {root}/jobs/version\n"
        ),
    )
    .unwrap();
    let (procfile, web) = (
        procfile.display().to_string(),
        dir.0.join("web").display().to_string(),
    );
    let mut cluster = Launch::new([
        "-f",
        &procfile,
        "-m",
        "web=2,jobs=1",
        "--min-uptime",
        "200ms",
        "--watch",
        &web,
        "--watch-delay",
        "100ms",
    ])
    .start();
    cluster.expect_log("--watch: watching ");
    cluster.expect_log("all 3 workers are ready");
    fs::write(dir.0.join("web/version"), "v2").unwrap();
    cluster.expect_log("--watch: reloading the groups whose command lies there: web");
    cluster.expect_log("files changed (--watch): reloading 2 workers to generation 1");
    cluster.expect_log("reload to generation 1 complete");
    let replaced: Vec<String> = cluster
        .seen(|l| l.is_log("of generation 1 started"))
        .iter()
        .map(|l| l.text.clone())
        .collect();
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    assert!(
        replaced.iter().all(|l| l.contains("worker web.")),
        "{replaced:?}"
    );
    let status = ctl_status(cluster.pid);
    let generations: Vec<(String, u64)> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["group"].as_str().unwrap().to_string(),
                w["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        generations,
        [
            ("web".to_string(), 1),
            ("web".to_string(), 1),
            ("jobs".to_string(), 0)
        ],
        "jobs keeps its workers"
    );
    stop(cluster);
}

#[test]
fn watch_delay_or_watch_ignore_without_watch_is_a_usage_error_naming_both_flags() {
    // `--plan json` validates and exits: a flag silently accepted would exit 0, not hang.
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(recluster_bin())
            .args(args)
            .args(["--plan", "json", "true"])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap(), stderr)
    };
    for (args, env, flag) in [
        (&["--watch-delay", "1s"][..], &[][..], "--watch-delay"),
        (&[], &[("RECLUSTER_WATCH_DELAY", "1s")], "--watch-delay"),
        (&["--watch-ignore", "*.log"], &[], "--watch-ignore"),
        (
            &[],
            &[("RECLUSTER_WATCH_IGNORE", "*.log")],
            "--watch-ignore",
        ),
    ] {
        let (code, stderr) = run(args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{flag} tells --watch how to watch: add --watch, or drop {flag}"
            )),
            "{args:?} {env:?}: {stderr}"
        );
    }
    // The default delay alone is no error, and with --watch either flag is fine.
    assert_eq!(run(&[], &[]), (0, String::new()));
    let dir = project("watch-usage");
    let top = dir.0.display().to_string();
    let (code, stderr) = run(
        &[
            "--watch",
            &top,
            "--watch-delay",
            "1s",
            "--watch-ignore",
            "*.log",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
}
