//! `--watch` against whoever can write the watched tree (the workers' user, say), while recluster
//! runs as root: a directory swapped for a link to a root-only directory must never get root's
//! watch (nothing created in there is logged or reloads), and a name written to the tree reaches
//! the log escaped. Root stands in for the attacker in the swaps: they need only write access to
//! the tree, which is nobody's.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The inodes recluster's inotify descriptors watch (`/proc/PID/fdinfo`: `ino:` in hex).
fn watched_inodes(pid: i32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut inodes = Vec::new();
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
            let hex = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .expect("an inotify line names its inode");
            inodes.push(u64::from_str_radix(hex, 16).unwrap());
        }
    }
    inodes
}

/// recluster's resident memory in KiB.
fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// What the tree's writer does: `mkdir dir`, and at once swap it with a link to `target`.
fn swap_in_link(dir: &Path, link: &Path, target: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
    fs::create_dir(dir).unwrap();
    assert!(
        exchange(&c_path(link), &c_path(dir)),
        "renameat2: {}",
        std::io::Error::last_os_error()
    );
}

/// Waits for a `--watch: changed:` line naming `fragment`, after those already matched.
fn changed(cluster: &mut Cluster, fragment: &str) {
    cluster.expect(&format!("a change naming {fragment}"), |l| {
        l.is_log("--watch: changed: ") && l.text.contains(fragment)
    });
}

#[test]
fn a_directory_swapped_for_a_link_to_a_root_only_one_is_never_watched() {
    let secret = Scratch::new("watch-secret", 0o700);
    fs::create_dir(secret.0.join("inner")).unwrap();
    let secret_inodes = [
        fs::metadata(&secret.0).unwrap().ino(),
        fs::metadata(secret.0.join("inner")).unwrap().ino(),
    ];
    // The tree belongs to nobody, who may do anything in it.
    let tree = Scratch::new("watch-swapped", 0o755);
    std::os::unix::fs::chown(&tree.0, Some(65534), Some(65534)).unwrap();
    let top = tree.0.display().to_string();
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--min-uptime",
            "50ms",
            "--watch",
            &top,
            "--watch-delay",
            "20ms",
        ],
        &[],
    );
    cluster.expect_log("--watch: watching ");
    cluster.expect_log("the only worker is ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    let tries = 40;
    for i in 0..tries {
        if Instant::now() > deadline {
            break; // a loaded machine: what was tried is checked below
        }
        swap_in_link(
            &tree.0.join(format!("x{i}")),
            &tree.0.join(format!("l{i}")),
            &secret.0,
        );
        // Once this is reported, recluster has read (and acted on) the creation of x{i}.
        fs::write(tree.0.join(format!("a{i}")), "").unwrap();
        changed(&mut cluster, &format!("/a{i}"));
        let watched = watched_inodes(cluster.pid);
        if let Some(ino) = secret_inodes.iter().find(|i| watched.contains(i)) {
            cluster.fail(&format!(
                "try {i}: recluster watches inode {ino} of the root-only directory"
            ));
        }
        // Root works in its directory; then a marker, after which whatever was seen is logged.
        fs::write(secret.0.join(format!("SECRET{i}")), "").unwrap();
        fs::write(secret.0.join(format!("inner/SECRET{i}")), "").unwrap();
        fs::write(tree.0.join(format!("b{i}")), "").unwrap();
        changed(&mut cluster, &format!("/b{i}"));
        let leaked = cluster.seen(|l| l.text.contains("SECRET"));
        if !leaked.is_empty() {
            cluster.fail(&format!("try {i}: a root-only name reached the log"));
        }
        if rss_kib(cluster.pid) > 200 * 1024 {
            cluster.send(libc::SIGKILL);
            cluster.fail("recluster grew past 200 MiB");
        }
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        cluster.seen(|l| l.text.contains("SECRET")).is_empty(),
        "a root-only name reached the log"
    );
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: whether it swapped them.
fn exchange(a: &CString, b: &CString) -> bool {
    // SAFETY: two valid NUL-terminated paths.
    let swapped = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    swapped == 0
}

#[test]
fn a_link_swapped_in_and_out_below_a_directory_being_walked_is_never_followed() {
    let secret = Scratch::new("watch-walk-secret", 0o700);
    fs::create_dir(secret.0.join("inner")).unwrap();
    let secret_inodes = [
        fs::metadata(&secret.0).unwrap().ino(),
        fs::metadata(secret.0.join("inner")).unwrap().ino(),
    ];
    let tree = Scratch::new("watch-walk", 0o755);
    std::os::unix::fs::chown(&tree.0, Some(65534), Some(65534)).unwrap();
    // Made outside the watched tree, on the same file system, and moved in whole.
    let staging = Scratch::new("watch-walk-staging", 0o755);
    let top = tree.0.display().to_string();
    let mut cluster = Cluster::start(&["-n", "1", "--watch", &top, "--watch-delay", "20ms"], &[]);
    cluster.expect_log("--watch: watching ");
    cluster.expect_log("the only worker is ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..20 {
        if Instant::now() > deadline {
            break;
        }
        let made = staging.0.join(format!("p{i}"));
        fs::create_dir_all(made.join("c/d")).unwrap();
        std::os::unix::fs::symlink(&secret.0, made.join("l")).unwrap();
        let moved = tree.0.join(format!("p{i}"));
        // While recluster walks p{i}, c and the link to the secret directory trade places.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let racer = {
            let (c, l) = (c_path(&moved.join("c")), c_path(&moved.join("l")));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut swaps = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && swaps < 20_000 {
                    exchange(&c, &l);
                    swaps += 1;
                }
            })
        };
        fs::rename(&made, &moved).unwrap();
        changed(&mut cluster, &format!("/p{i}"));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        racer.join().unwrap();
        let watched = watched_inodes(cluster.pid);
        if let Some(ino) = secret_inodes.iter().find(|i| watched.contains(i)) {
            cluster.fail(&format!(
                "try {i}: recluster watches inode {ino} of the root-only directory"
            ));
        }
        if rss_kib(cluster.pid) > 200 * 1024 {
            cluster.send(libc::SIGKILL);
            cluster.fail("recluster grew past 200 MiB");
        }
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_name_written_to_a_watched_tree_cannot_forge_a_log_line() {
    let tree = Scratch::new("watch-forge", 0o755);
    std::os::unix::fs::chown(&tree.0, Some(65534), Some(65534)).unwrap();
    let top = tree.0.display().to_string();
    let mut cluster = Cluster::start(&["-n", "1", "--watch", &top, "--watch-delay", "20ms"], &[]);
    cluster.expect_log("--watch: watching ");
    cluster.expect_log("the only worker is ready");
    // A file and a directory (its creation is a change too, and it gets watched).
    let forged = "a\nrecluster: error: FORGED \x1b[31m";
    fs::write(tree.0.join(forged), "").unwrap();
    fs::create_dir(tree.0.join(format!("dir{forged}"))).unwrap();
    // Once its creation is reported, the directory is watched.
    cluster.expect_log("/dira");
    fs::write(tree.0.join(format!("dir{forged}/inside")), "").unwrap();
    cluster.expect_log("/inside");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let forgeries = cluster.seen(|l| l.text.starts_with("recluster: error: FORGED"));
    assert!(forgeries.is_empty(), "a forged line: {forgeries:?}");
    let raw = cluster.seen(|l| l.text.contains('\x1b'));
    assert!(raw.is_empty(), "a raw ESC reached the log: {raw:?}");
    assert!(
        !cluster
            .seen(|l| l.is_log("--watch: changed: ")
                && l.text.contains("a\\nrecluster: error: FORGED \\x1b[31m"))
            .is_empty(),
        "the name is logged, escaped"
    );
}
