//! `--cgroups`: each worker in a cgroup of its own. A worker's grandchild that double-forked out of
//! its process group is gone once the worker is restarted (`ctl restart`) and once recluster
//! stops, and recluster leaves no cgroup behind; without permission, `auto` falls back and says
//! so, `on` is an error naming the path. These run where the cgroup v2 hierarchy is writable (CI
//! runs as root) and print why they skip elsewhere.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, Launch, Scratch, ctl, eventually, is_running, recluster_bin};

/// The directory of this process's group in the cgroup v2 hierarchy, if one is mounted.
fn own_unified_group() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })?;
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = groups.lines().find_map(|l| l.strip_prefix("0::/"))?;
    Some(mount.join(own))
}

/// The name of the tree recluster `pid` makes: `recluster-PID-START`, START its start time in
/// clock ticks since boot.
fn tree_name(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    format!("recluster-{pid}-{start}")
}

/// The v2 group tests create recluster's subtree beside, if this process may create groups
/// there; otherwise says why the test skips.
fn writable_cgroups(test: &str) -> Option<PathBuf> {
    let Some(dir) = own_unified_group() else {
        eprintln!("skipping {test}: no cgroup v2 hierarchy is mounted");
        return None;
    };
    let probe = dir.join(format!("recluster-test-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Some(dir)
        }
        Err(e) => {
            eprintln!(
                "skipping {test}: cgroups cannot be written here (mkdir {}: {e})",
                probe.display()
            );
            None
        }
    }
}

/// A worker that starts a grandchild which leaves its process group (its own session) and
/// ignores SIGTERM, SIGINT and SIGHUP, prints `grandchild pid=N`, then sleeps.
fn double_forking_worker(scratch: &Scratch) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch.0.join("double-fork.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         (setsid sh -c 'trap \"\" TERM INT HUP; exec sleep 1000' </dev/null >/dev/null 2>&1 & echo \"grandchild pid=$!\")\n\
         exec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn grandchild(cluster: &mut Cluster) -> i32 {
    cluster
        .expect("a grandchild's pid", |l| l.is_worker("grandchild"))
        .num("pid")
}

/// recluster's arguments for the whole-tree tests: one double-forking worker, --kill-timeout 20s.
fn whole_tree_args(worker: &std::path::Path) -> Vec<std::ffi::OsString> {
    ["--cgroups", "on", "-n", "1", "--kill-timeout", "20s", "--"]
        .iter()
        .map(std::ffi::OsString::from)
        .chain([worker.as_os_str().to_owned()])
        .collect()
}

#[test]
fn a_double_forked_grandchild_is_gone_after_ctl_restart_and_after_recluster_stops() {
    let Some(parent) = writable_cgroups("the whole-tree kill test") else {
        return;
    };
    let scratch = Scratch::new("cgroups-tree", 0o755);
    let worker = double_forking_worker(&scratch);
    let cluster = Launch::new(whole_tree_args(&worker)).start();
    whole_tree_is_killed(cluster, &parent);
}

/// Where no cgroup v2 hierarchy is mounted (here: unmounted in a mount namespace of its own),
/// recluster kills a worker's tree frozen in v1's freezer.
#[test]
fn on_cgroup_v1_alone_the_tree_is_frozen_and_killed_whole() {
    let Some(parent) = v1_freezer_group() else {
        eprintln!("skipping the v1 whole-tree test: v1's freezer is not mounted or not writable");
        return;
    };
    if writable_cgroups("the v1 whole-tree test").is_none() {
        return;
    }
    let scratch = Scratch::new("cgroups-tree-v1", 0o755);
    let worker = double_forking_worker(&scratch);
    let unmount =
        "umount /sys/fs/cgroup/unified 2>/dev/null || umount /sys/fs/cgroup; exec \"$0\" \"$@\"";
    let mut launch = Launch::program("unshare", ["--mount", "sh", "-c", unmount]);
    launch
        .command()
        .arg(recluster_bin())
        .args(whole_tree_args(&worker));
    let mut cluster = launch.start();
    let line = cluster.expect_log("each worker runs in a cgroup of its own");
    assert!(
        line.text.contains(&parent.display().to_string()),
        "in the freezer hierarchy: {}",
        line.text
    );
    whole_tree_is_killed(cluster, &parent);
}

/// The directory of this process's group in v1's freezer hierarchy, if it is mounted and
/// writable.
fn v1_freezer_group() -> Option<PathBuf> {
    v1_group("freezer")
}

/// The directory of this process's group in the v1 hierarchy of `controller`, if it is mounted
/// and writable.
fn v1_group(controller: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(f[1]))
    })?;
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = groups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    let dir = mount.join(own);
    let probe = dir.join(format!("recluster-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    let _ = std::fs::remove_dir(&probe);
    Some(dir)
}

/// Where no cgroup v2 hierarchy is mounted, a worker's CPU time is read from its group in v1's
/// cpuacct hierarchy (`cpuacct.usage`), so it counts a grandchild that left its process group and
/// ended, which /proc no longer shows.
#[test]
fn on_cgroup_v1_alone_cpu_time_comes_from_the_worker_s_cpuacct_group() {
    use std::os::unix::fs::PermissionsExt;
    let (Some(_), Some(cpuacct)) = (v1_freezer_group(), v1_group("cpuacct")) else {
        eprintln!(
            "skipping the v1 CPU time test: v1's freezer or cpuacct is not mounted or not writable"
        );
        return;
    };
    if writable_cgroups("the v1 CPU time test").is_none() {
        return;
    }
    let scratch = Scratch::new("cgroups-cpuacct-v1", 0o755);
    // Its grandchild, in a session of its own, spins for a fixed count of loops and ends.
    let worker = scratch.0.join("burn.sh");
    std::fs::write(
        &worker,
        "#!/bin/sh
         (setsid sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo burnt' </dev/null &)
         exec sleep 1000
",
    )
    .unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let unmount =
        "umount /sys/fs/cgroup/unified 2>/dev/null || umount /sys/fs/cgroup; exec \"$0\" \"$@\"";
    let mut launch = Launch::program("unshare", ["--mount", "sh", "-c", unmount]);
    launch
        .command()
        .arg(recluster_bin())
        .args(["--cgroups", "on", "-n", "1", "--"])
        .arg(&worker);
    let mut cluster = launch.start();
    cluster.expect("the grandchild's end", |l| l.is_worker("burnt"));
    let subtree = cpuacct.join(tree_name(cluster.pid));
    let group = std::fs::read_dir(&subtree)
        .unwrap_or_else(|e| panic!("no cpuacct tree {}: {e}", subtree.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the worker's cpuacct group");
    let usage = |p: &std::path::Path| -> f64 {
        let text = std::fs::read_to_string(p.join("cpuacct.usage")).unwrap();
        text.trim().parse::<u64>().unwrap() as f64 / 1e9
    };
    let before = usage(&group);
    let status = crate::harness::ctl_status(cluster.pid);
    let after = usage(&group);
    let reported = status["workers"][0]["cpu_seconds"].as_f64().unwrap();
    eprintln!("worker 0: {reported} s CPU reported, its cpuacct group says {before}..{after} s");
    assert!(
        before > 0.0 && reported >= before && reported <= after,
        "reported {reported} s, outside its group's {before}..{after} s"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        !subtree.exists(),
        "recluster left {} behind",
        subtree.display()
    );
}

/// The worker's grandchild goes with it at `ctl restart`, the new one at recluster's stop, and
/// recluster's tree under `parent` goes at exit.
fn whole_tree_is_killed(mut cluster: Cluster, parent: &std::path::Path) {
    let first = grandchild(&mut cluster);
    let subtree = parent.join(tree_name(cluster.pid));
    assert!(subtree.is_dir(), "{} was not made", subtree.display());

    let (code, _, stderr) = ctl(cluster.pid, &["restart", "0", "--wait"]);
    assert_eq!(code, 0, "ctl restart: {stderr}");
    let second = grandchild(&mut cluster);
    if !eventually(|| !is_running(first)) {
        cluster.fail(&format!(
            "the first worker's grandchild {first} outlived its restart"
        ));
    }
    assert!(is_running(second), "the new worker's grandchild is running");

    // Its stop: the grandchild ignores SIGTERM, yet goes with its worker, long before
    // --kill-timeout (20s) would have ended it.
    let stopping = Instant::now();
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let took = stopping.elapsed();
    if !eventually(|| !is_running(second)) {
        cluster.fail(&format!(
            "the second worker's grandchild {second} outlived recluster"
        ));
    }
    assert!(
        took < Duration::from_secs(10),
        "the stop waited {took:?}, for --kill-timeout"
    );
    assert!(
        !subtree.exists(),
        "recluster left {} behind",
        subtree.display()
    );
}

/// `--cgroups auto|on` run as `nobody`, who may not create cgroups.
fn as_nobody(mode: &str) -> Command {
    let mut command = Command::new(recluster_bin());
    command
        .args([
            "--cgroups",
            mode,
            "-n",
            "1",
            "--control",
            "none",
            "--",
            "/bin/sleep",
            "1000",
        ])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null());
    command
}

#[test]
fn without_permission_auto_falls_back_and_says_so_and_on_names_the_path() {
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the fallback test: it needs root, to run recluster as nobody");
        return;
    }
    let Some(parent) = own_unified_group() else {
        eprintln!("skipping the fallback test: no cgroup v2 hierarchy is mounted");
        return;
    };
    let out = as_nobody("on").output().expect("run recluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&parent.join("recluster-").display().to_string())
            && stderr.contains("Permission denied"),
        "the error names the path and why: {stderr}"
    );

    let mut launch = Launch::program(recluster_bin(), ["-v"]);
    launch.command().args(as_nobody("auto").get_args());
    launch.command().uid(65534).gid(65534);
    let mut cluster = launch.start();
    cluster.expect_log("no per-worker cgroups (mkdir");
    cluster.expect_log("started (pid");
    cluster.send(libc::SIGTERM);
    cluster.finish();
    let said = cluster.seen(|l| l.is_log("no per-worker cgroups")).len();
    assert_eq!(said, 1, "the fallback is said once");
}

#[test]
fn plan_says_where_the_groups_go_or_why_not() {
    let (code, stdout, stderr) =
        crate::harness::run_to_end(&["--plan", "-n", "2", "--", "/bin/true"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("worker cgroups (--cgroups auto)"))
        .unwrap_or_else(|| panic!("no cgroups line in the plan:\n{stdout}"));
    match writable_cgroups("the plan's writable case") {
        Some(parent) => assert!(
            line.contains(&format!("one per worker under {}", parent.display())),
            "{line}"
        ),
        None => assert!(line.contains("none ("), "{line}"),
    }
    let (code, stdout, _) =
        crate::harness::run_to_end(&["--plan", "--cgroups", "off", "--", "/bin/true"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("off (--cgroups off)"), "{stdout}");
}

/// The directory of process `pid`'s group in the cgroup v2 hierarchy, relative to its mount.
fn unified_group_of(pid: i32) -> String {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    groups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn outside_the_root_group_recluster_moves_into_a_leaf_and_back_and_removes_what_it_made() {
    let Some(parent) = writable_cgroups("the leaf test") else {
        return;
    };
    // A group of the test's own, recluster started in it.
    let outer = parent.join(format!("recluster-test-leaf-{}", std::process::id()));
    std::fs::create_dir(&outer).unwrap();
    let _cleanup = RemovedOnDrop(outer.clone());
    let join = format!(
        "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
        outer.display()
    );
    let mut cluster = Launch::wrapped(
        &["sh", "-c", &join],
        crate::harness::cluster_args(&["--cgroups", "on", "-n", "2"], &[]),
    )
    .start();
    let ready = cluster.ready(2);
    let outer_name = unified_group_of(std::process::id() as i32);
    let outer_name = format!(
        "{}/recluster-test-leaf-{}",
        outer_name.trim_end_matches('/'),
        std::process::id()
    );
    let base = format!("{outer_name}/{}", tree_name(cluster.pid));
    assert_eq!(unified_group_of(cluster.pid), format!("{base}/supervisor"));
    for line in &ready {
        let group = unified_group_of(line.num("pid"));
        assert!(
            group.starts_with(&format!("{base}/w{}-", line.num("id"))),
            "worker {} is in {group}",
            line.num("id")
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let left: Vec<_> = std::fs::read_dir(&outer)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "recluster left {left:?} in its group");
}

/// A cgroup the test made, removed (when empty) even if the test fails.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_tree_left_by_a_recluster_killed_by_sigkill_is_removed_by_the_next_one() {
    let Some(parent) = writable_cgroups("the stale tree test") else {
        return;
    };
    // A pid that is gone: a process that has exited and been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    // Named as a recluster of that pid and some start time would name its tree.
    let stale = parent.join(format!("recluster-{pid}-12345"));
    if std::fs::create_dir(&stale).is_err() {
        eprintln!("skipping the stale tree test: {} exists", stale.display());
        return;
    }
    let _cleanup = RemovedOnDrop(stale.clone());
    std::fs::create_dir(stale.join("w0-1")).unwrap();
    let mut cluster = Cluster::start(&["--cgroups", "on", "-n", "1"], &[]);
    cluster.ready(1);
    let _ = std::fs::remove_dir(stale.join("w0-1")); // (if the assertion fails)
    assert!(!stale.exists(), "{} is still there", stale.display());
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

/// Whether recluster can give its workers a memory limit here (a v1 memory hierarchy or a v2
/// memory controller it may write), asked of recluster's own --plan; otherwise says why not.
fn memory_groups(test: &str) -> bool {
    writable_cgroups(test).is_some() && {
        let (_, stdout, _) = crate::harness::run_to_end(&["--plan", "--", "/bin/true"]);
        let v1 = stdout.contains("(v1 memory)");
        let v2 = own_unified_group()
            .and_then(|g| std::fs::read_to_string(g.join("cgroup.controllers")).ok())
            .is_some_and(|c| c.split_whitespace().any(|c| c == "memory"));
        if !(v1 || v2) {
            eprintln!("skipping {test}: no writable memory controller (v1 memory, or v2 memory)");
        }
        v1 || v2
    }
}

#[test]
fn a_worker_the_oom_killer_ends_under_memory_max_is_reported_oom_killed() {
    if !memory_groups("the OOM test") {
        return;
    }
    let scratch = Scratch::new("cgroups-oom", 0o755);
    let hooked = scratch.0.join("hooked");
    let hook = format!(
        "oom=echo \"$RECLUSTER_EVENT $WORKER_ID $WORKER_PID\" >> '{}'",
        hooked.display()
    );
    // Worker 0 touches 200 MiB under a 64 MiB limit: the kernel's OOM killer ends it.
    let mut cluster = Cluster::start(
        &[
            "--cgroups",
            "on",
            "--memory-max",
            "64M",
            "-n",
            "2",
            "--restart",
            "never",
            "--admin",
            "127.0.0.1:0",
            "--on",
            &hook,
        ],
        &["--grow-for", "0:200"],
    );
    let admin = cluster.expect_log("admin endpoint at http://").text;
    let admin = admin
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let killed = cluster.expect_log("was oom-killed");
    assert!(killed.text.contains("worker 0 (pid "), "{}", killed.text);
    let pid: i32 = killed
        .text
        .split("(pid ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    cluster.expect_log(&format!("worker 0 (pid {pid}) was killed by SIGKILL"));

    let status = crate::harness::ctl_status(cluster.pid);
    let slot0 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == 0)
        .unwrap()
        .clone();
    assert_eq!(slot0["last_exit"]["what"], "oom-killed", "{slot0}");
    assert_eq!(slot0["guards"]["oom_kills"], 1, "{slot0}");
    let (code, table, _) = ctl(cluster.pid, &["status"]);
    assert_eq!(code, 0);
    assert!(table.contains("oom-killed"), "{table}");

    let metrics = get_metrics(&admin);
    let sample = metrics
        .lines()
        .find(|l| {
            l.starts_with("recluster_worker_oom_kills_total") && l.contains("worker_id=\"0\"")
        })
        .unwrap_or_else(|| panic!("no oom kills sample for slot 0:\n{metrics}"));
    assert!(sample.ends_with(" 1"), "{sample}");

    assert!(
        eventually(
            || std::fs::read_to_string(&hooked).is_ok_and(|t| t.contains(&format!("oom 0 {pid}")))
        ),
        "the oom hook did not run: {:?}",
        std::fs::read_to_string(&hooked)
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

/// The body of `GET /metrics` from the admin endpoint at `address`.
fn get_metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The directory of process `pid`'s group in the v1 memory hierarchy, if it has one.
fn v1_memory_group_of(pid: i32) -> Option<PathBuf> {
    v1_group_of(pid, "memory")
}

/// The directory of process `pid`'s group in the v1 hierarchy of `controller`.
fn v1_group_of(pid: i32, controller: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(f[1]))
    })?;
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let own = groups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(mount.join(own))
}

/// Waits (on a thread) for the memory of the v1 group at `dir` to cross `bytes`, as recluster
/// does: a threshold through `cgroup.event_control`. The receiver gets the moment it did.
fn crossing_of(dir: &std::path::Path, bytes: u64) -> crossbeam_channel::Receiver<Instant> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: eventfd has no memory effects; the result is checked.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just created, owned by nothing else.
    let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
    let usage = std::fs::File::open(dir.join("memory.usage_in_bytes")).unwrap();
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {} {bytes}", eventfd.as_raw_fd(), usage.as_raw_fd()),
    )
    .unwrap();
    let (sender, receiver) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _usage = usage;
        let mut counter = 0u64;
        // SAFETY: read writes at most 8 bytes into `counter`.
        let n = unsafe { libc::read(eventfd.as_raw_fd(), (&raw mut counter).cast(), 8) };
        if n == 8 {
            let _ = sender.send(Instant::now());
        }
    });
    receiver
}

#[test]
fn a_worker_crossing_max_memory_in_one_step_is_replaced_within_100ms_without_sampling() {
    if !memory_groups("the memory threshold test") {
        return;
    }
    let scratch = Scratch::new("cgroups-threshold", 0o755);
    let go = scratch.0.join("go");
    // Worker 0 waits for the test's go, then touches 200 MiB in one step; the limit is 50 MiB,
    // and no sample would come within the hour.
    let script = scratch.0.join("grow.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"waiting pid=$$\"\nwhile [ ! -e '{}' ]; do sleep 0.01; done\nexec '{}' --grow-for 0:200\n",
            go.display(),
            crate::harness::worker_bin().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cluster = Launch::new([
        "--cgroups".as_ref(),
        "on".as_ref(),
        "--max-memory".as_ref(),
        "50M".as_ref(),
        "--memory-interval".as_ref(),
        "1h".as_ref(),
        "-n".as_ref(),
        "1".as_ref(),
        "--".as_ref(),
        script.as_os_str(),
    ])
    .start();
    cluster.expect_log("wakes recluster when it crosses the limit (no sampling)");
    let old = cluster
        .expect("the worker waiting", |l| l.is_worker("waiting"))
        .num("pid");
    let group = v1_memory_group_of(old).expect("the worker's memory group");
    // The test watches the same crossing recluster does, to time it.
    let crossing = crossing_of(&group, 50 << 20);
    std::fs::write(&go, "").unwrap();
    let started = cluster.expect_log("worker 0 of generation 0 started (pid");
    let replaced_at = Instant::now();
    let crossed_at = crossing
        .recv_timeout(Duration::from_secs(30))
        .expect("the test's own threshold woke");
    let decided = cluster
        .seen(|l| l.is_log(&format!("worker 0 (pid {old}) uses")))
        .len();
    let took = replaced_at.saturating_duration_since(crossed_at);
    eprintln!(
        "--max-memory threshold (v1): the new worker was running {:.1} ms after the old one crossed 50 MiB ({})",
        took.as_secs_f64() * 1000.0,
        started.text
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
    assert_eq!(decided, 1, "the replacement says why, once");
    assert!(
        took < Duration::from_millis(100),
        "replaced {took:?} after the crossing"
    );
}

/// The resident memory of process `pid` (VmRSS), in bytes.
fn rss_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

#[test]
fn ctl_status_reads_each_worker_s_memory_from_its_group_children_included() {
    if !memory_groups("the exact usage test") {
        return;
    }
    // Worker 0 grows by 100 MiB and its grandchild lives beside it.
    let mut cluster = Cluster::start(
        &["--cgroups", "on", "-n", "2"],
        &["--grow-for", "0:100", "--grandchild"],
    );
    let grown = cluster.expect("worker 0 grown", |l| l.is_worker("grown"));
    let pid = grown.num("pid");
    let group = own_unified_group().unwrap().join(tree_name(cluster.pid));
    let procs_file = std::fs::read_dir(&group)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("cgroup.procs"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l == pid.to_string())))
        .expect("worker 0's group");
    let tree: Vec<i32> = std::fs::read_to_string(&procs_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(tree.len() >= 2, "the worker and its grandchild: {tree:?}");
    let summed: u64 = tree.iter().map(|p| rss_of(*p)).sum();
    let status = crate::harness::ctl_status(cluster.pid);
    let worker = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == pid)
        .unwrap()
        .clone();
    let reported = worker["rss_bytes"].as_u64().unwrap();
    eprintln!(
        "worker 0: its group says {} KiB, the RSS of its {} processes sums to {} KiB",
        reported >> 10,
        tree.len(),
        summed >> 10
    );
    let difference = reported.abs_diff(summed) as f64 / summed as f64;
    assert!(
        difference < 0.10,
        "the group's {reported} and the tree's {summed} differ by {:.1} %",
        difference * 100.0
    );
    assert!(worker["cpu_seconds"].as_f64().unwrap() > 0.0, "{worker}");
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

#[test]
fn pids_max_keeps_a_worker_s_forks_within_its_group() {
    if writable_cgroups("the --pids-max test").is_none() {
        return;
    }
    let (_, plan, _) = crate::harness::run_to_end(&["--plan", "--", "/bin/true"]);
    let v1_pids = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.contains(" cgroup ")
                && l.split_whitespace()
                    .nth(3)
                    .is_some_and(|o| o.split(',').any(|o| o == "pids"))
        });
    let v2_pids = own_unified_group()
        .and_then(|g| std::fs::read_to_string(g.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == "pids"));
    if !(v1_pids || v2_pids) {
        eprintln!("skipping the --pids-max test: no pids controller ({plan})");
        return;
    }
    // The worker tries to start 20 children (each sleeps), then reports how many it could.
    let script = r#"
import os, time
started = 0
for _ in range(20):
    try:
        child = os.fork()
    except OSError:
        continue
    if child == 0:
        time.sleep(1000)
        os._exit(0)
    started += 1
print(f"tried pid={os.getpid()} started={started}", flush=True)
time.sleep(1000)
"#;
    let mut cluster = Launch::new([
        "--cgroups",
        "on",
        "--pids-max",
        "10",
        "-n",
        "1",
        "--restart",
        "never",
        "--",
        "python3",
        "-c",
        script,
    ])
    .start();
    let tried = cluster.expect("the worker's try", |l| l.is_worker("tried"));
    let (pid, started) = (tried.num("pid"), tried.num("started") as usize);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .count();
    eprintln!("--pids-max 10: the worker started {started} of 20 children ({children} live)");
    cluster.send(libc::SIGTERM);
    cluster.finish();
    assert!(
        (1..=9).contains(&started) && children == started,
        "{started} children started ({children} live) beside the worker in a group of at most 10"
    );
}

/// `--cpu-weight 50`: each worker's group has half the kernel's default weight — `cpu.weight` 50
/// with v2's cpu controller, else `cpu.shares` 512 in v1's cpu hierarchy.
#[test]
fn cpu_weight_is_set_on_each_worker_s_group() {
    for (weight, why) in [("0", "at least 1"), ("10001", "at most 10000")] {
        let (code, _, stderr) =
            crate::harness::run_to_end(&["--cpu-weight", weight, "--", "/bin/true"]);
        assert!(
            code == 2 && stderr.contains(why),
            "--cpu-weight {weight}: {code} {stderr}"
        );
    }
    if writable_cgroups("the --cpu-weight test").is_none() {
        return;
    }
    let v2_cpu = own_unified_group()
        .and_then(|g| std::fs::read_to_string(g.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == "cpu"));
    if !v2_cpu && v1_group("cpu").is_none() {
        eprintln!("skipping the --cpu-weight test: no writable cpu controller");
        return;
    }
    let mut cluster = Cluster::start(&["--cgroups", "on", "--cpu-weight", "50", "-n", "2"], &[]);
    let pids: Vec<i32> = cluster.ready(2).iter().map(|l| l.num("pid")).collect();
    let cgroup2 = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        });
    for pid in pids {
        let (file, expected) = if v2_cpu {
            let group = unified_group_of(pid);
            let dir = cgroup2.clone().unwrap().join(group.trim_start_matches('/'));
            (dir.join("cpu.weight"), "50")
        } else {
            let dir = v1_group_of(pid, "cpu").expect("the worker's v1 cpu group");
            (dir.join("cpu.shares"), "512")
        };
        let value = std::fs::read_to_string(&file).unwrap_or_default();
        eprintln!("worker {pid}: {} = {}", file.display(), value.trim());
        assert!(
            file.display().to_string().contains(&tree_name(cluster.pid)),
            "{} is not in recluster's tree",
            file.display()
        );
        assert_eq!(value.trim(), expected, "{}", file.display());
    }
    let tree = tree_name(cluster.pid);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    if let Some(cpu) = v1_group("cpu").filter(|_| !v2_cpu) {
        assert!(
            !cpu.join(&tree).exists(),
            "recluster left {tree} in {}",
            cpu.display()
        );
    }
}
