//! What a newcomer hit on day one (issue 25, "Broken"), each written as they hit it: the README's
//! Procfile with a strict consumer of `LISTEN_PID`, `timeout` sending its signal twice, an
//! optional value after a space, `--user` with a program the user cannot reach, `ctl send` to a
//! worker that does not exist, a reload whose old worker needs the kill, and a debugger under
//! `--exec`.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Launch, http_get, run_to_end};
use crate::interop::{program, python};

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("recluster-day-one-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// tests/programs/sd_listen_server.c built against libsystemd: it refuses sockets whose
/// `LISTEN_PID` is not its own pid.
fn sd_listen_server() -> String {
    crate::harness::c_program("sd_listen_server", &["-lsystemd"])
}

// 1. The README's Procfile example serves.

#[test]
fn gunicorn_from_a_procfile_line_takes_the_socket() {
    let found = Command::new(python())
        .args(["-c", "import gunicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "gunicorn is not installed: run scripts/install-test-deps"
    );
    // As the README writes it: a variable, then the program; a port of its own (8000 may be
    // taken) so that a gunicorn that ignores the socket does not serve our address.
    let procfile = TempFile::new(
        "gunicorn.Procfile",
        &format!(
            "web: PYTHONUNBUFFERED=1 {} -m gunicorn --workers 1 --bind 127.0.0.1:1 --chdir {} wsgi_app:app\n",
            python(),
            program("")
        ),
    );
    let mut cluster = Launch::new([
        "-f",
        &procfile.arg(),
        "-m",
        "web=2",
        "--listen",
        "web=127.0.0.1:0",
    ])
    .start();
    let address = cluster.listening(1).remove(0);
    for _ in 0..2 {
        cluster.expect_log("Booting worker with pid");
    }
    for _ in 0..4 {
        if let Err(e) = http_get(&address) {
            cluster.fail(&format!("gunicorn did not serve the passed socket: {e}"));
        }
    }
    assert!(
        cluster.seen(|l| l.is_log("Connection in use")).is_empty(),
        "gunicorn bound its own port"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_libsystemd_program_from_a_procfile_line_serves_and_a_compound_line_is_warned_about() {
    let server = sd_listen_server();
    let procfile = TempFile::new(
        "sd.Procfile",
        &format!("web: {server} 2>&1\nother: cd / && {server}\n"),
    );
    let mut cluster = Launch::new([
        "-f",
        &procfile.arg(),
        "--prefix",
        "--listen",
        "web=127.0.0.1:0",
        "--restart",
        "never",
    ])
    .start();
    cluster.expect_log("other's line is compound");
    let address = cluster.listening(1).remove(0);
    let ready = cluster.expect("the web worker ready", |l| {
        l.text.starts_with("[web.0] ready pid=")
    });
    let body = http_get(&address).unwrap_or_else(|e| cluster.fail(&e));
    assert_eq!(
        body.trim(),
        format!("pid={}", ready.field("pid").unwrap()),
        "the program that sd_listen_fds() accepted the socket in answered"
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

// 3. Optional values with a space.

#[test]
fn prefix_json_with_a_space_before_the_command() {
    let (code, stdout, stderr) = run_to_end(&[
        "-n",
        "1",
        "--restart",
        "on-failure",
        "--prefix",
        "json",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {stdout:?}"));
    assert_eq!(line["line"], "hi");
    assert_eq!(line["worker"], 0);
}

#[test]
fn plan_json_with_a_space_prints_json() {
    let (code, stdout, stderr) = run_to_end(&["-n", "2", "--plan", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--plan json printed no JSON ({e}): {stdout}"));
    assert!(plan.is_object(), "{plan}");
}

#[test]
fn pin_core_with_a_space_before_the_command() {
    let (code, _, stderr) = run_to_end(&[
        "--restart",
        "never",
        "-n",
        "1",
        "--pin",
        "core",
        "--",
        "true",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // A bare flag still leaves the next word to the command.
    let (code, stdout, stderr) =
        run_to_end(&["-n", "1", "--restart", "never", "--prefix", "echo", "hi"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[0] hi");
}

// 2. One stop signal, delivered twice, is one request.

/// Workers that take a moment over their stop: on INT or TERM each prints `stop ID` and exits 0
/// a second later (long enough for a second signal to find recluster still stopping).
const SLOW_TO_STOP: &str =
    "trap 'echo stop $WORKER_ID; sleep 1; exit 0' INT TERM; echo up $WORKER_ID; sleep 1000 & wait";

fn started_slow_to_stop(launch: Launch) -> crate::harness::Cluster {
    let mut cluster = launch.start();
    for _ in 0..2 {
        cluster.expect("a worker up", |l| l.text.starts_with("up "));
    }
    cluster
}

fn each_worker_was_stopped_once(cluster: &crate::harness::Cluster) {
    for id in 0..2 {
        let stops = cluster.seen(|l| l.text == format!("stop {id}")).len();
        if stops != 1 {
            cluster.fail(&format!("worker {id} got the stop signal {stops} times"));
        }
    }
    if !cluster
        .seen(|l| l.is_log("killing every worker now"))
        .is_empty()
    {
        cluster.fail("the repeated signal was taken as a kill");
    }
}

#[test]
fn gnu_timeout_signalling_recluster_and_its_group_stops_the_workers_once_with_status_0() {
    // `timeout 600 recluster …`, expiring: timeout sends TERM to recluster, then to its own
    // process group, recluster included. SIGALRM is timeout's own timer: sending it is the
    // expiry, without waiting for it.
    let mut cluster = started_slow_to_stop(Launch::wrapped(
        &["timeout", "--preserve-status", "600"],
        ["-n", "2", "--", "sh", "-c", SLOW_TO_STOP],
    ));
    cluster.send(libc::SIGALRM);
    assert_eq!(cluster.exit_code(), 0);
    each_worker_was_stopped_once(&cluster);
}

#[test]
fn the_same_stop_signal_twice_in_quick_succession_is_one_stop() {
    // As an npm-style wrapper does to a Ctrl-C: the terminal's signal, then the wrapper's copy.
    // The second is sent once recluster has taken the first, so the two cannot merge into one
    // pending signal in the kernel.
    let mut cluster =
        started_slow_to_stop(Launch::new(["-n", "2", "--", "sh", "-c", SLOW_TO_STOP]));
    cluster.send(libc::SIGINT);
    cluster.expect_log("received SIGINT");
    cluster.send(libc::SIGINT);
    cluster.expect_log("the same stop request");
    assert_eq!(cluster.exit_code(), 0);
    each_worker_was_stopped_once(&cluster);
}

// 6. `ctl send` to a worker that does not exist.

#[test]
fn ctl_send_to_a_worker_that_does_not_exist_fails_naming_it() {
    let mut cluster = crate::harness::Cluster::start(&["-n", "2"], &["--messages"]);
    cluster.ready(2);
    let (code, stdout, stderr) =
        crate::harness::ctl(cluster.pid, &["send", "worker:42", r#"{"hello":1}"#]);
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    assert!(
        stderr.contains("worker:42") || stderr.contains("worker 42"),
        "{stderr}"
    );
    assert!(!stdout.contains("sent"), "{stdout}");
    // A worker that exists still gets its message.
    let (code, _, stderr) =
        crate::harness::ctl(cluster.pid, &["send", "worker:1", r#"{"hello":2}"#]);
    assert_eq!(code, 0, "{stderr}");
    cluster.expect("worker 1's message", |l| {
        l.is_worker("message") && l.field("id") == Some("1")
    });
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

// 4. `--user` and a program the user cannot reach.

#[test]
fn user_nobody_and_a_program_in_a_0700_directory_is_refused_at_start_naming_both() {
    use std::os::unix::fs::PermissionsExt;
    let dir =
        std::env::temp_dir().join(format!("recluster-day-one-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let program = dir.join("server");
    std::fs::write(&program, "#!/bin/sh\necho served as $(id -un)\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let program_arg = program.display().to_string();
    let args = [
        "--user",
        "nobody",
        "--restart",
        "never",
        "-n",
        "1",
        "--",
        &program_arg,
    ];
    let (code, _, stderr) = run_to_end(&args);
    let refused = (code, stderr.clone());
    // Opened to others, the same command runs.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (opened_code, opened_out, opened_err) = run_to_end(&args);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(refused.0, 126, "{}", refused.1);
    assert!(
        refused.1.contains(&program_arg) && refused.1.contains("nobody"),
        "the error names the file and the user: {}",
        refused.1
    );
    assert!(
        !refused.1.contains("started"),
        "no worker started: {}",
        refused.1
    );
    assert_eq!(opened_code, 0, "{opened_err}");
    assert_eq!(opened_out.trim(), "served as nobody");
}

// 7. A reload's old worker killed at --kill-timeout.

#[test]
fn a_reload_whose_old_worker_needs_the_kill_still_ends_in_0_and_says_why() {
    // Generation 0 ignores TERM, so the reload has to kill it at --kill-timeout; generation 1
    // stops when asked. The exit status is that of each slot's last worker (README, Exit status).
    let worker = crate::harness::worker_bin().display().to_string();
    let script = format!(
        "if [ \"$WORKER_GENERATION\" = 0 ]; then exec {worker} --ignore TERM; else exec {worker}; fi"
    );
    let mut cluster = Launch::new([
        "-n",
        "1",
        "--kill-timeout",
        "500ms",
        "--min-uptime",
        "200ms",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .start();
    cluster.ready(1);
    cluster.send(libc::SIGHUP);
    cluster.expect_log("sending SIGKILL");
    let killed = cluster.expect_log("killed by SIGKILL after being stopped");
    assert!(
        killed.text.contains("exit status does not count it"),
        "the log says the kill of a replaced worker does not decide the exit status: {}",
        killed.text
    );
    cluster.expect_log("reload to generation 1 complete");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

// 5. The README's debugger example under `--exec`.

/// Words of a shell line: blanks split, single quotes group (enough for the README's examples).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

#[test]
fn the_readmes_exec_debugger_example_serves_a_strict_libsystemd_program() {
    assert!(
        Command::new("gdb")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "gdb is not installed: run scripts/install-test-deps"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("recluster --exec --listen :3000 -- gdb"))
        .expect("the README's quick start shows --exec under gdb");
    let line = line.split("   #").next().unwrap();
    let server = sd_listen_server();
    let mut words: Vec<String> = shell_words(line)
        .into_iter()
        .skip(1)
        .map(|w| {
            w.replace(":3000", "127.0.0.1:0")
                .replace("./server", &server)
        })
        .collect();
    // gdb reads its commands from stdin once `run` returns; without a terminal it then quits.
    let gdb = words.iter().position(|w| w == "gdb").unwrap();
    words.insert(gdb + 1, "-q".to_string());
    let mut cluster = Launch::new(&words).start();
    let address = cluster.listening(1).remove(0);
    let ready = cluster.expect("the server took its sockets", |l| l.is_worker("ready"));
    let body = http_get(&address).unwrap_or_else(|e| cluster.fail(&e));
    assert_eq!(body.trim(), format!("pid={}", ready.field("pid").unwrap()));
}

// 8. What a SIGKILLed recluster leaves behind, and how to leave nothing.

#[test]
fn a_sigkilled_recluster_takes_its_workers_but_not_their_children_unless_it_is_pid_1() {
    use crate::harness::{eventually, is_running};
    // As nginx's master and its workers: the worker forks a child that stays in its group.
    let mut cluster = crate::harness::Cluster::start(&["-n", "1"], &["--grandchild"]);
    let grandchild = cluster
        .expect("grandchild", |l| l.is_worker("grandchild"))
        .num("pid");
    let worker = cluster.ready(1)[0].num("pid");
    cluster.send(libc::SIGKILL);
    assert!(
        eventually(|| !is_running(worker)),
        "the worker outlived recluster"
    );
    let survived = is_running(grandchild);
    // SAFETY: signalling the process this test's worker started.
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    cluster.finish();
    assert!(
        survived,
        "the README says the parent-death signal reaches the workers only: update it"
    );

    // The remedy the README gives: recluster as PID 1 of a pid namespace (a container).
    let args = crate::harness::cluster_args(&["-n", "1"], &["--grandchild"]);
    let mut cluster =
        Launch::wrapped(&["unshare", "--pid", "--fork", "--mount-proc"], args).start();
    let inner = cluster
        .expect("grandchild", |l| l.is_worker("grandchild"))
        .num("pid");
    cluster.ready(1);
    let recluster = crate::reaping::recluster_under(cluster.pid);
    let grandchild = crate::reaping::outer_pid(recluster, inner).expect("the grandchild's pid");
    // SAFETY: killing the recluster this test started.
    unsafe { libc::kill(recluster, libc::SIGKILL) };
    assert!(
        eventually(|| !is_running(grandchild)),
        "the grandchild outlived recluster as PID 1"
    );
    cluster.finish();
}
