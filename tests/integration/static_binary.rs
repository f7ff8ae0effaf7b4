//! The static build (`scripts/build-static`) as a `FROM scratch` image runs it: recluster and a
//! static server alone in an empty root directory (a chroot holding `/dev/null`, and `/run` for
//! the control socket, as the README's Dockerfile makes), serving two workers over loopback. And
//! `--user` in it, which must not reach glibc's name services beyond the files.
//!
//! The static build is slow, so `cargo test` does not make it: `scripts/test` (what CI runs)
//! builds it with the example worker first and names it in `RECLUSTER_STATIC_BIN`. Without that
//! variable, or when not root (chroot and mknod need it), this test says loudly that it did not
//! run; under CI (`CI` set) a missing build is a failure.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Launch, answered_by, run_ctl};

/// The static recluster and the static example worker beside it, or None (said on stderr).
fn static_build() -> Option<(PathBuf, PathBuf)> {
    let Some(recluster) = std::env::var_os("RECLUSTER_STATIC_BIN") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "RECLUSTER_STATIC_BIN is not set under CI: run the tests with scripts/test"
        );
        eprintln!(
            "\n*** static_binary: NOT RUN: RECLUSTER_STATIC_BIN is not set (scripts/test sets it \
             after scripts/build-static --example worker) ***\n"
        );
        return None;
    };
    let recluster = PathBuf::from(recluster);
    let worker = recluster.parent().unwrap().join("examples/worker");
    assert!(
        worker.exists(),
        "{} is missing: build it with scripts/build-static --example worker",
        worker.display()
    );
    Some((recluster, worker))
}

/// An empty root: `/dev/null`, an empty `/run`, and the two programs at `/recluster`, `/worker`.
struct Root(PathBuf);

impl Root {
    fn new(recluster: &Path, worker: &Path) -> Root {
        let dir = std::env::temp_dir().join(format!("recluster-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::create_dir(dir.join("run")).unwrap();
        let null = std::ffi::CString::new(dir.join("dev/null").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mknod has no other memory effects.
        let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(
            rc,
            0,
            "mknod /dev/null: {}",
            std::io::Error::last_os_error()
        );
        std::fs::copy(recluster, dir.join("recluster")).unwrap();
        std::fs::copy(worker, dir.join("worker")).unwrap();
        Root(dir)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_static_binary_serves_two_workers_alone_in_an_empty_root() {
    let Some((recluster, worker)) = static_build() else {
        return;
    };
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** static_binary: the empty root NOT RUN: chroot needs root ***\n");
        return;
    }
    let (code, version, _) = run_ctl(Command::new(&recluster).arg("--version"));
    assert_eq!(code, 0);
    assert!(version.contains(", static)"), "--version: {version}");

    let root = Root::new(&recluster, &worker);
    let entries: Vec<_> = std::fs::read_dir(&root.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        4,
        "only dev, run and the two programs: {entries:?}"
    );
    let chroot = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) is not installed");
    let root_dir = root.0.to_str().unwrap();
    let args = [
        root_dir,
        "/recluster",
        "-n",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--",
        "/worker",
        "--serve",
    ];
    let mut cluster = Launch::program(chroot, args).start();
    let address = cluster.listening(1).remove(0);
    cluster.ready(2);
    let ids = answered_by(&address, "id", 2);
    assert_eq!(ids.len(), 2, "answered by WORKER_IDs {ids:?}");

    // `docker exec CONTAINER /recluster ctl status` finds it through /run/recluster in there.
    let (code, status, stderr) = run_ctl(
        Command::new(chroot)
            .arg(root_dir)
            .args(["/recluster", "ctl", "--pid", &cluster.pid.to_string()])
            .args(["status", "--json"]),
    );
    assert_eq!(code, 0, "ctl status in the root: {stderr}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("ctl status prints JSON");
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        cluster.seen(|l| l.is_log("warning")).is_empty(),
        "a warning in the empty root"
    );
}

#[test]
fn the_static_binary_looks_users_up_in_the_files_and_survives_an_unknown_one() {
    let Some((recluster, _)) = static_build() else {
        return;
    };
    // With glibc's other name services (Debian's default is `passwd: files systemd`), a static
    // binary loaded libnss_systemd and a second, shared glibc, and died of SIGSEGV here.
    let out = Command::new(&recluster)
        .args(["--user", "recluster-no-such-user", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains("no user \"recluster-no-such-user\""),
        "{stderr}"
    );
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        return; // --user needs root to run workers
    }
    // A user from /etc/passwd still resolves, with its groups from /etc/group.
    let out = Command::new(&recluster)
        .args([
            "-q",
            "-n",
            "1",
            "--restart",
            "never",
            "--user",
            "nobody",
            "--",
            "id",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{:?}: {stdout}", out.status);
    assert!(stdout.starts_with("uid=65534(nobody)"), "{stdout}");
}
