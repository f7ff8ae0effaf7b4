//! The control socket and `recluster ctl`, against real workers: what status shows matches /proc,
//! every verb does what it says and `--wait` says whether it took, another user is refused, and
//! hostile clients delay neither the answers nor the workers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Cluster, Launch, Scratch, cluster_args, ctl, eventually, is_running, recluster_bin, run_ctl,
};

/// `ctl status --json`, parsed.
fn status_of(cluster: &Cluster) -> Value {
    let (code, stdout, stderr) = ctl(cluster.pid, &["status", "--json"]);
    if code != 0 {
        cluster.fail(&format!("ctl status exited {code}: {stderr}"));
    }
    serde_json::from_str(&stdout).expect("status is JSON")
}

/// Waits until status says every one of `n` workers is ready; returns that status.
fn all_ready(cluster: &Cluster, n: u64) -> Value {
    let mut last = Value::Null;
    let ok = eventually(|| {
        last = status_of(cluster);
        last["cluster"]["ready"] == n
            && last["cluster"]["workers"] == n
            && last["cluster"]["state"] == "running"
    });
    if !ok {
        cluster.fail(&format!("status never showed {n} ready workers: {last}"));
    }
    last
}

/// The pids of the slots' own workers, by WORKER_ID.
fn slot_pids(status: &Value) -> Vec<i64> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["role"] == "slot")
        .map(|w| w["pid"].as_i64().unwrap_or(0))
        .collect()
}

fn proc_field(pid: i64, index: usize) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[index].parse().unwrap()
}

#[test]
fn status_shows_each_worker_with_the_pid_proc_knows() {
    let mut cluster = Cluster::start(&["-n", "3", "--min-uptime", "100ms"], &[]);
    let ready = cluster.ready(3);
    let status = all_ready(&cluster, 3);
    let pids = slot_pids(&status);
    let expected: Vec<i64> = ready.iter().map(|l| l.num("pid") as i64).collect();
    assert_eq!(pids, expected, "{status}");
    for (id, worker) in status["workers"].as_array().unwrap().iter().enumerate() {
        let pid = worker["pid"].as_i64().unwrap();
        assert_eq!(worker["id"], id as u64);
        assert_eq!(
            proc_field(pid, 1),
            cluster.pid as i64,
            "its parent is recluster"
        );
        assert_eq!(proc_field(pid, 2), pid, "it leads its own process group");
        assert_eq!(worker["state"], "ready");
        assert_eq!(worker["generation"], 0);
        assert!(worker["rss_bytes"].as_u64().unwrap() > 0, "{worker}");
        assert!(worker["started_at"].as_f64().unwrap() <= worker["ready_at"].as_f64().unwrap());
    }
    assert_eq!(status["cluster"]["pid"], cluster.pid as i64);
    let control = status["cluster"]["control"].as_str().unwrap();
    assert!(
        control.ends_with(&format!("/{}.sock", cluster.pid)),
        "{control}"
    );
    let mode = std::fs::metadata(control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private");
    let dir = PathBuf::from(control);
    let dir_mode = std::fs::metadata(dir.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "so is its directory");

    // The table, for a person: every pid, within 100 columns.
    let (code, table, _) = ctl(cluster.pid, &["status"]);
    assert_eq!(code, 0);
    for pid in &pids {
        assert!(table.contains(&pid.to_string()), "{table}");
    }
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");

    // Workers are not told where the socket is.
    for pid in &pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            !environ.contains(control),
            "worker {pid} knows the socket: {environ}"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(
        !PathBuf::from(control).exists(),
        "the socket is removed at exit"
    );
}

#[test]
fn restarts_are_counted_and_the_last_exit_is_shown_after_a_kill() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    cluster.ready(2);
    let before = slot_pids(&all_ready(&cluster, 2));
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(before[1] as i32, libc::SIGKILL) };
    cluster.expect("the respawned worker 1", |l| {
        l.is_worker("ready") && l.num("id") == 1
    });
    let status = all_ready(&cluster, 2);
    let worker = &status["workers"][1];
    assert_eq!(worker["restarts"], 1, "{worker}");
    assert_eq!(worker["last_exit"]["signal"], "SIGKILL", "{worker}");
    assert_eq!(worker["last_exit"]["pid"], before[1], "{worker}");
    assert_ne!(worker["pid"], before[1]);
    assert_eq!(status["workers"][0]["restarts"], 0);
    assert_eq!(status["cluster"]["restarts"], 1);
    assert!(worker["cpu_seconds"].as_f64().unwrap() >= 0.0);
}

/// A version file the workers read at start: writing it deploys a release.
struct Release(PathBuf);

impl Release {
    fn new(version: &str) -> Release {
        let path = std::env::temp_dir().join(format!(
            "recluster-ctl-release-{}-{}",
            std::process::id(),
            version
        ));
        std::fs::write(&path, version).unwrap();
        Release(path)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn reload_wait_exits_1_when_the_release_cannot_start_and_0_when_it_takes() {
    let release = Release::new("v1");
    let file = release.0.display().to_string();
    let mut cluster = Cluster::start(
        &["-n", "2", "--min-uptime", "100ms"],
        &["--version-file", &file],
    );
    cluster.ready(2);
    let old = slot_pids(&all_ready(&cluster, 2));
    std::fs::write(&release.0, "broken").unwrap();
    let (code, _, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("abandoned"), "{stderr}");
    assert!(stderr.contains("generation 1"), "{stderr}");
    assert_eq!(
        slot_pids(&all_ready(&cluster, 2)),
        old,
        "the old workers serve on"
    );

    std::fs::write(&release.0, "v2").unwrap();
    let (code, stdout, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("generation 2"), "{stdout}");
    let status = status_of(&cluster);
    assert_eq!(status["cluster"]["generation"], 2);
    for pid in &old {
        assert!(
            !is_running(*pid as i32),
            "old worker {pid} is gone when the wait returns"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn scale_and_restart_wait_until_the_outcome_is_known() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    cluster.ready(2);
    all_ready(&cluster, 2);

    let (code, stdout, stderr) = ctl(cluster.pid, &["scale", "+2", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("4 workers"), "{stdout}");
    let status = status_of(&cluster);
    assert_eq!(
        status["cluster"]["ready"], 4,
        "ready when the wait returns: {status}"
    );
    let four = slot_pids(&status);

    let (code, _, stderr) = ctl(cluster.pid, &["scale", "1", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    for pid in &four[1..] {
        assert!(!is_running(*pid as i32), "removed worker {pid} has exited");
    }
    let (code, _, stderr) = ctl(cluster.pid, &["scale", "-1"]);
    assert_eq!(code, 1, "the last worker stays");
    assert!(stderr.contains("at least 1 worker"), "{stderr}");

    let (code, _, stderr) = ctl(cluster.pid, &["restart", "0", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!is_running(four[0] as i32), "the old worker 0 has exited");
    let status = status_of(&cluster);
    let new = slot_pids(&status)[0];
    assert_ne!(new, four[0]);
    assert_eq!(status["workers"][0]["state"], "ready", "{status}");
    let log = cluster.expect_log("restarting worker 0");
    assert!(log.text.contains(&four[0].to_string()), "{}", log.text);

    let (code, _, stderr) = ctl(cluster.pid, &["restart", "5"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no worker 5"), "{stderr}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_restart_whose_new_worker_never_becomes_ready_fails_and_keeps_the_old_one() {
    let release = Release::new("restart-v1");
    let file = release.0.display().to_string();
    let mut cluster = Cluster::start(
        &["-n", "1", "--ready", "notify", "--ready-timeout", "300ms"],
        &["--notify", "0", "--version-file", &file],
    );
    cluster.ready(1);
    let old = slot_pids(&all_ready(&cluster, 1));
    std::fs::write(&release.0, "silent").unwrap();
    let (code, _, stderr) = ctl(cluster.pid, &["restart", "0", "--wait"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("keeps serving"), "{stderr}");
    assert_eq!(slot_pids(&status_of(&cluster)), old);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn signal_reaches_only_the_workers_named() {
    let mut cluster = Cluster::start(&["-n", "2"], &["--ignore", "USR1", "--ignore", "USR2"]);
    cluster.ready(2);
    let (code, stdout, stderr) = ctl(cluster.pid, &["signal", "USR1", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 process groups"), "{stdout}");
    cluster.expect("USR1 at worker 1", |l| {
        l.is_worker("signal") && l.text.contains("SIGUSR1") && l.num("id") == 1
    });
    let (code, _, _) = ctl(cluster.pid, &["signal", "SIGUSR2"]);
    assert_eq!(code, 0);
    cluster.expect("USR2 at worker 0", |l| {
        l.is_worker("signal") && l.text.contains("SIGUSR2") && l.num("id") == 0
    });
    assert!(
        cluster
            .seen(|l| l.is_worker("signal") && l.text.contains("SIGUSR1") && l.num("id") == 0)
            .is_empty(),
        "worker 0 was not sent USR1"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn stop_wait_returns_once_recluster_has_exited() {
    let mut cluster = Cluster::start(&["-n", "2"], &[]);
    let ready = cluster.ready(2);
    let (code, stdout, stderr) = ctl(cluster.pid, &["stop", "--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stopped (exit status 0)"), "{stdout}");
    for line in &ready {
        assert!(!is_running(line.num("pid")), "no worker outlives the wait");
    }
    assert_eq!(cluster.exit_code(), 0);
    cluster.expect_log("stop requested");
}

#[test]
fn events_stream_what_happens() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    let ready = cluster.ready(2);
    all_ready(&cluster, 2);
    let mut events = Command::new(recluster_bin())
        .args(["ctl", "--pid", &cluster.pid.to_string(), "events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        first["event"], "subscribed",
        "the stream says when it is in place"
    );
    let victim = ready[0].num("pid");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let line = lines.next().expect("an event").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        seen.push(event.clone());
        if event["event"] == "ready" && event["id"] == 0 {
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let kinds: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["exited", "spawned", "ready"], "{seen:?}");
    assert_eq!(seen[0]["pid"], victim);
    assert_eq!(seen[0]["signal"], "SIGKILL");
    assert_eq!(seen[0]["then"], "restarting");
    assert!(seen[0]["time"].as_f64().unwrap() > 1.6e9);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn another_user_is_refused_and_logged() {
    let dir = std::env::temp_dir().join(format!("recluster-ctl-uid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("c.sock");
    let socket_arg = socket.display().to_string();
    let mut cluster = Cluster::start(&["-n", "1", "--control", &socket_arg], &[]);
    cluster.ready(1);
    let as_nobody = |socket: &str| {
        run_ctl(
            Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(recluster_bin())
                .args(["ctl", "--control", socket, "status"]),
        )
    };
    // The file's mode keeps others out first.
    let (code, _, stderr) = as_nobody(&socket_arg);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    // Where the mode lets them in, the peer's credentials do not.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, stderr) = as_nobody(&socket_arg);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("only uid 0 and root"), "{stderr}");
    cluster.expect_log("refused a connection from uid 65534");
    let (code, _, _) =
        run_ctl(Command::new(recluster_bin()).args(["ctl", "--control", &socket_arg, "status"]));
    assert_eq!(code, 0, "its own user is admitted");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small deterministic generator, so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn hostile_clients_delay_neither_status_nor_the_workers() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    cluster.ready(2);
    let before = slot_pids(&all_ready(&cluster, 2));
    let path = status_of(&cluster)["cluster"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    // 100 connections that say nothing, held open throughout.
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let valid = br#"{"v":1,"cmd":"scale","workers":"+1"}"#;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    let started = Instant::now();
    for i in 0..2000 {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let request: Vec<u8> = match i % 4 {
            // Random bytes, ended by a newline.
            0 => {
                let n = 1 + noise.next() as usize % 200;
                let mut b = noise.bytes(n);
                b.retain(|&c| c != b'\n');
                b.push(b'\n');
                b
            }
            // A valid request cut short, then the writing side closed.
            1 => valid[..noise.next() as usize % (valid.len() - 1)].to_vec(),
            // JSON of the wrong shape.
            2 => format!(
                "{{\"v\":1,\"cmd\":\"scale\",\"workers\":{}}}\n",
                -(i as i64)
            )
            .into_bytes(),
            // A line longer than any request may be.
            _ => {
                let mut b = vec![b'x'; 70 * 1024];
                b.push(b'\n');
                b
            }
        };
        let _ = stream.write_all(&request);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.is_empty() {
            continue; // an empty cut: nothing was asked
        }
        let answer: Value = serde_json::from_str(answer.lines().next().unwrap())
            .unwrap_or_else(|e| panic!("request {i}: the answer is not JSON ({e}): {answer}"));
        assert_eq!(answer["ok"], false, "request {i}: {answer}");
        errors += 1;
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    assert!(errors > 1000, "{errors} error answers");
    let asked = Instant::now();
    let status = status_of(&cluster);
    let took = asked.elapsed();
    assert_eq!(slot_pids(&status), before, "the workers are untouched");
    assert_eq!(
        status["cluster"]["workers"], 2,
        "no garbage scaled the cluster"
    );
    assert!(
        cluster.seen(|l| l.is_log("exited")).is_empty(),
        "no worker exited"
    );
    eprintln!("status with 100 idle clients, after {errors} bad requests: {took:?}");
    drop(idle);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

/// The /proc directory of recluster's thread `name` ("main": the main thread), if it has one yet.
fn thread_named(pid: i32, name: &str) -> Option<std::path::PathBuf> {
    if name == "main" {
        return Some(format!("/proc/{pid}/task/{pid}").into());
    }
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| task.unwrap().path())
        .find(|task| {
            std::fs::read_to_string(task.join("comm"))
                .unwrap_or_default()
                .trim()
                == name
        })
}

/// The context switches of recluster's thread `name`, from /proc.
fn thread_switches(pid: i32, name: &str) -> u64 {
    let task =
        thread_named(pid, name).unwrap_or_else(|| panic!("recluster {pid} has no {name} thread"));
    let status = std::fs::read_to_string(task.join("status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn the_loop_control_and_admin_threads_never_wake_while_nobody_talks_to_them() {
    // A socket of its own: other tests' `ctl` without options greet every socket they find.
    let socket = std::env::temp_dir().join(format!("recluster-idle-{}.sock", std::process::id()));
    let socket = socket.display().to_string();
    // --max-age sets a deadline an hour away: the supervisor loop sleeps until then. --watch
    // adds a thread that waits for the kernel's word of a change, never polling.
    let watched = Scratch::new("idle-watch", 0o755);
    std::fs::create_dir(watched.0.join("src")).unwrap();
    let watched_path = watched.0.display().to_string();
    let mut cluster = Cluster::start(
        &[
            "-n",
            "1",
            "--control",
            &socket,
            "--admin",
            "127.0.0.1:0",
            "--max-age",
            "1h",
            "--watch",
            &watched_path,
        ],
        &[],
    );
    cluster.expect_log("--watch: watching ");
    cluster.ready(1);
    // recluster counts it ready after --min-uptime: the loop's last deadline before --max-age.
    cluster.expect_log("the only worker is ready");
    // The main thread is the supervisor loop.
    let threads = ["control", "admin", "watch", "main"];
    // A thread takes its name once it runs: on a loaded machine that can be after the worker's
    // ready line.
    assert!(
        eventually(|| threads
            .iter()
            .all(|t| thread_named(cluster.pid, t).is_some())),
        "recluster {} never named its {threads:?} threads",
        cluster.pid
    );
    // The loop has logged its last line; it goes to sleep a moment later (a yield on the way
    // counts as a switch): the window opens once its count has stood still for 100 ms.
    let mut settled = thread_switches(cluster.pid, "main");
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = thread_switches(cluster.pid, "main");
        if now == settled {
            break;
        }
        settled = now;
    }
    let before: Vec<u64> = threads
        .iter()
        .map(|t| thread_switches(cluster.pid, t))
        .collect();
    std::thread::sleep(Duration::from_millis(1500)); // the measurement window, not a wait
    let after: Vec<u64> = threads
        .iter()
        .map(|t| thread_switches(cluster.pid, t))
        .collect();
    assert_eq!(after, before, "{threads:?} woke up while idle");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn without_options_ctl_lists_the_clusters_when_there_are_several() {
    let mut one = Launch::new(cluster_args(&["-n", "1", "--name", "ctl-one"], &[])).start();
    let mut two = Launch::new(cluster_args(&["-n", "1"], &[])).start();
    one.ready(1);
    two.ready(1);
    let (code, _, stderr) = run_ctl(Command::new(recluster_bin()).args(["ctl", "status"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} (--name ctl-one)", one.pid)),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", two.pid)), "{stderr}");
    assert!(stderr.contains("--pid or --name"), "{stderr}");
    let (code, stdout, stderr) = run_ctl(
        Command::new(recluster_bin()).args(["ctl", "--name", "ctl-one", "status", "--json"]),
    );
    assert_eq!(code, 0, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["cluster"]["pid"], one.pid);
    assert_eq!(status["cluster"]["name"], "ctl-one");
    let (code, _, stderr) =
        run_ctl(Command::new(recluster_bin()).args(["ctl", "--name", "nobody-here", "status"]));
    assert_eq!(code, 3, "{stderr}");
    one.send(libc::SIGTERM);
    two.send(libc::SIGTERM);
    assert_eq!(one.exit_code(), 0);
    assert_eq!(two.exit_code(), 0);
}

#[test]
fn in_a_container_of_its_own_ctl_finds_the_only_cluster() {
    // A mount namespace with a /run of its own, as a container has (and a TMPDIR of its own:
    // the binary may live under /tmp, so that is not hidden).
    let private = std::env::temp_dir().join(format!("recluster-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private).unwrap();
    let script = format!(
        "mount -t tmpfs none /run || exit 9
         {recluster} -n 2 -- sleep 1000 2>/dev/null &
         for i in $(seq 200); do {recluster} ctl status --json >$TMPDIR/s 2>$TMPDIR/e && break; sleep 0.05; done
         cat $TMPDIR/s $TMPDIR/e
         {recluster} ctl stop --wait >/dev/null || kill $!
         wait",
        recluster = recluster_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &private)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&private).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_str(stdout.trim()).expect("status JSON");
    assert_eq!(status["cluster"]["workers"], 2);
    assert!(
        status["cluster"]["control"]
            .as_str()
            .unwrap()
            .starts_with("/run/recluster/"),
        "{status}"
    );
}

#[test]
fn control_none_runs_without_a_socket() {
    let mut cluster = Cluster::start(&["-n", "1", "--control", "none"], &[]);
    cluster.ready(1);
    let (code, _, stderr) = ctl(cluster.pid, &["status"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(&format!("pid {}", cluster.pid)), "{stderr}");
    assert!(
        cluster.seen(|l| l.is_log("control socket")).is_empty(),
        "no socket was made"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_control_path_that_cannot_be_used_is_a_warning_not_a_failure() {
    let mut cluster = Cluster::start(&["-n", "1", "--control", "/nonexistent-dir/x.sock"], &[]);
    cluster.expect_log("no control socket (/nonexistent-dir/x.sock");
    cluster.ready(1);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn wait_prints_progress_on_a_terminal_and_without_one_as_in_a_ci_log() {
    let mut cluster = Cluster::start(&["-n", "2", "--min-uptime", "100ms"], &[]);
    cluster.ready(2);
    all_ready(&cluster, 2);
    // `script` gives ctl a terminal.
    let command = format!(
        "{} ctl --pid {} reload --wait",
        recluster_bin().display(),
        cluster.pid
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in 0..2 {
        let progress = format!("recluster ctl: worker {id} of generation 1 is ready (pid ");
        assert!(text.contains(&progress), "no {progress:?} in {text}");
    }
    assert!(text.contains("reloaded: generation 1"), "{text}");
    let (code, stdout, stderr) = ctl(cluster.pid, &["reload", "--wait"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "reloaded: generation 2\n");
    // Without a terminal (a CI log) too: one line per replaced slot, counted.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with("recluster ctl: worker ")
                && line.ends_with(&format!("): {} of 2", i + 1)),
            "{stderr}"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
