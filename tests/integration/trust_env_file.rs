//! `--env-file` against a less trusted user: recluster reads the file as root for workers that
//! run as `--user nobody`; nobody, who controls a directory on the file's path, plants a link to
//! a file only root may read. The secret must never reach a worker: the start is a usage error,
//! a reload is refused (the old workers keep serving), both naming the path and the owner found.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness::{Cluster, Launch, Scratch, ctl, ctl_status, is_running};

const SECRET: &str = "hunter2-root-only";

/// A worker that prints what it got, then sleeps until stopped.
const SHOW_ENV: &str = "echo \"env pid=$$ gen=$WORKER_GENERATION greeting=${GREETING-unset} secret=${SECRET-unset}\"; exec sleep 1000";

/// A scratch directory (root's, 0755) holding `root-only.env`, mode 0600, with the secret.
fn with_secret(name: &str) -> (Scratch, std::path::PathBuf) {
    let scratch = Scratch::new(name, 0o755);
    let secret = scratch.0.join("root-only.env");
    std::fs::write(&secret, format!("SECRET={SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    (scratch, secret)
}

/// A directory owned by nobody (as a deploy user's upload or an app's own directory).
fn nobodys_dir(path: &Path) {
    std::fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
}

/// As nobody: `ln -sf TARGET LINK`, as the attacker would.
fn plant_link(target: &Path, link: &Path) {
    let status = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg("ln")
        .arg("-sf")
        .arg(target)
        .arg(link)
        .status()
        .unwrap();
    assert!(status.success(), "nobody could not plant the link");
    let meta = std::fs::symlink_metadata(link).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

fn start(file: &Path) -> Cluster {
    Launch::new([
        "-n",
        "2",
        "--min-uptime",
        "100ms",
        "--user",
        "nobody",
        "--env-file",
        &file.display().to_string(),
        "--",
        "/bin/sh",
        "-c",
        SHOW_ENV,
    ])
    .start()
}

fn no_secret(cluster: &Cluster) {
    let leaked = cluster.seen(|l| l.text.contains(SECRET));
    assert!(leaked.is_empty(), "the secret reached a worker: {leaked:?}");
}

#[test]
fn a_link_planted_by_another_user_before_the_start_is_a_usage_error() {
    let (scratch, secret) = with_secret("envfile-planted-start");
    let app = scratch.0.join("app");
    nobodys_dir(&app);
    let file = app.join(".env");
    plant_link(&secret, &file);
    let mut cluster = start(&file);
    // Either recluster refuses, or (the defect) a worker prints what it got: bounded either way.
    let first = cluster.expect("a refusal or a worker", |l| {
        l.is_worker("env") || l.is_log("refusing env file")
    });
    no_secret(&cluster);
    let path = file.display().to_string();
    assert!(
        first.text.contains(&format!("refusing env file {path}"))
            && first.text.contains("uid 65534 (nobody)"),
        "{}",
        first.text
    );
    assert_eq!(cluster.exit_code(), 2);
    no_secret(&cluster);
}

#[test]
fn a_link_planted_by_another_user_refuses_the_reload_and_the_secret_never_reaches_a_worker() {
    // A deploy layout: `current` (root's link) names the release; the releases are uploaded by
    // a deploy user (nobody here), who plants `.env -> root-only.env` in the next one.
    let (scratch, secret) = with_secret("envfile-planted-reload");
    let releases = scratch.0.join("releases");
    std::fs::create_dir(&releases).unwrap();
    std::fs::create_dir(releases.join("1")).unwrap();
    std::fs::write(releases.join("1/.env"), "GREETING=v1\n").unwrap();
    let current = scratch.0.join("current");
    std::os::unix::fs::symlink("releases/1", &current).unwrap();
    let file = current.join(".env");
    let mut cluster = start(&file);
    let old: Vec<i32> = (0..2)
        .map(|i| {
            let line = cluster.expect(&format!("env line {i}"), |l| l.is_worker("env"));
            assert_eq!(line.field("greeting"), Some("v1"), "{}", line.text);
            line.num("pid")
        })
        .collect();
    cluster.expect_log("workers are ready");

    nobodys_dir(&releases.join("2"));
    plant_link(&secret, &releases.join("2/.env"));
    // The operator (root) switches to the new release.
    std::os::unix::fs::symlink("releases/2", scratch.0.join("current.new")).unwrap();
    std::fs::rename(scratch.0.join("current.new"), &current).unwrap();

    let path = file.display().to_string();
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("refusing env file {path}"))
            && stderr.contains("uid 65534 (nobody)"),
        "{stderr}"
    );
    cluster.expect_log(&format!(
        "reload requested: reload refused: refusing env file {path}"
    ));
    cluster.send(libc::SIGHUP);
    cluster.expect_log(&format!(
        "received HUP: reload refused: refusing env file {path}"
    ));
    assert!(
        old.iter().all(|&pid| is_running(pid)),
        "old workers stopped"
    );
    let status = ctl_status(cluster.pid);
    assert_eq!(status["cluster"]["generation"], 0, "{status}");
    no_secret(&cluster);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    no_secret(&cluster);
}
