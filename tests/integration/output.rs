//! `--prefix`: every worker line tagged with its slot and written whole, on the stream it was
//! printed on, none lost; `--prefix=json` for log shippers.

use std::collections::HashMap;

use crate::harness::{Launch, cluster_args, run_to_end};

/// Checks `text` is made of whole `[ID] KIND id=ID pid=.. n=K` lines (plus recluster's own log
/// lines on stderr), K counting up from 0 for each worker; returns how many each worker wrote.
fn whole_lines(text: &str, kind: &str) -> HashMap<u32, u32> {
    let mut next: HashMap<u32, u32> = HashMap::new();
    for line in text.lines() {
        if line.starts_with("recluster:") {
            continue;
        }
        let (prefix, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let id: u32 = prefix
            .strip_prefix('[')
            .and_then(|p| p.strip_suffix(']'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no [ID] prefix: {line:?}"));
        if !rest.starts_with(kind) {
            continue; // ready, exit ...
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        assert_eq!(fields.len(), 4, "a mixed line: {line:?}");
        assert_eq!(fields[1], format!("id={id}"), "{line:?}");
        let n: u32 = fields[3].strip_prefix("n=").unwrap().parse().unwrap();
        let expected = next.entry(id).or_insert(0);
        assert_eq!(
            n, *expected,
            "worker {id}'s lines out of order or lost: {line:?}"
        );
        *expected += 1;
    }
    next
}

/// Runs `recluster ARGS -- worker WORKER_ARGS` to its end, which must be status 0; its output.
fn run_cleanly(args: &[&str], worker_args: &[&str]) -> (String, String) {
    let args = cluster_args(args, worker_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_to_end(&args);
    assert_eq!(code, 0, "{stderr}");
    (stdout, stderr)
}

#[test]
fn lines_of_three_workers_never_mix_keep_their_order_and_their_stream() {
    let (stdout, stderr) = run_cleanly(
        &["-n", "3", "--restart", "never", "--prefix"],
        &["--lines", "2000", "--exit", "0"],
    );
    let out = whole_lines(&stdout, "line");
    let err = whole_lines(&stderr, "eline");
    for id in 0..3 {
        assert_eq!(out.get(&id), Some(&2000), "worker {id} on stdout");
        assert_eq!(err.get(&id), Some(&2000), "worker {id} on stderr");
    }
    assert!(!stdout.contains("eline"), "stderr lines stay on stderr");
}

#[test]
fn fifty_thousand_lines_from_a_worker_that_exits_at_once_all_arrive() {
    let (stdout, _) = run_cleanly(
        &["-n", "1", "--restart", "never", "--prefix"],
        &["--lines", "50000", "--exit", "0"],
    );
    assert_eq!(whole_lines(&stdout, "line").get(&0), Some(&50_000));
}

#[test]
fn json_lines_parse_with_worker_stream_and_line() {
    let (stdout, _) = run_cleanly(
        &["-n", "2", "--restart", "never", "--prefix=json"],
        &["--lines", "3", "--exit", "0"],
    );
    let check = r#"
import json, sys
seen = 0
for raw in sys.stdin:
    o = json.loads(raw)
    assert set(o) >= {"ts", "worker", "group", "stream", "line"}, o
    assert o["stream"] == "stdout" and o["worker"] in (0, 1), o
    assert o["line"].split()[1] == "id=%d" % o["worker"], o
    seen += o["line"].startswith("line ")
assert seen == 6, seen
"#;
    let mut python = std::process::Command::new("python3")
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3: run scripts/install-test-deps");
    use std::io::Write;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(stdout.as_bytes())
        .unwrap();
    assert!(python.wait().unwrap().success(), "{stdout}");
}

#[test]
fn a_workers_exit_is_reported_after_its_last_line() {
    // The worker exits at once; a child of it writes the worker's last line 30 ms later.
    let (_, stderr) = run_cleanly(
        &["-n", "1", "--restart", "never", "--prefix"],
        &["--late-line", "30", "--exit", "0"],
    );
    let position = |fragment: &str| {
        stderr
            .lines()
            .position(|l| l.contains(fragment))
            .unwrap_or_else(|| panic!("no {fragment:?} in:\n{stderr}"))
    };
    assert!(
        position("[0] late id=0") < position("exited with status 0"),
        "the exit was reported before the worker's last line:\n{stderr}"
    );
}

#[test]
fn a_crash_loop_of_workers_that_leave_a_process_holding_their_output_keeps_one_relay_per_slot() {
    // As a broken (or hostile) worker would: each one leaves a process holding its stdout and
    // stderr, then crashes at once. Before, every restart left its relay thread behind
    // (about 75 KiB each): recluster grew for as long as the crash loop went on. Without
    // cgroups: with a group per worker, what the worker left is killed when its end is reported.
    let mut cluster = Launch::new([
        "-n",
        "1",
        "--cgroups",
        "off",
        "--prefix",
        "--restart-delay",
        "10ms",
        "--restart-max-delay",
        "10ms",
        "--",
        "sh",
        "-c",
        "sleep 30 & echo left $!; exit 1",
    ])
    .start();
    let threads =
        |pid: i32| std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let mut left = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..12 {
        let line = cluster.expect("a worker's leftover process", |l| {
            l.text.starts_with("[0] left ")
        });
        left.push(line.text["[0] left ".len()..].parse::<i32>().unwrap());
        counts.push(threads(cluster.pid));
    }
    cluster.send(libc::SIGTERM);
    cluster.finish();
    for pid in &left {
        // SAFETY: kill only sends a signal to the sleeps this test's workers started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(
        cluster
            .seen(|l| l.text.contains("no longer relaying it"))
            .len()
            >= 8,
        "no warning that an older relay stopped"
    );
    // Beside the first worker's relay: at most one for the slot's leftover output, and one
    // that was just told to stop (12 restarts grew it by 11 before).
    let growth = counts.iter().max().unwrap() - counts[0];
    assert!(
        growth <= 2,
        "recluster's threads grew by {growth} over 12 restarts ({counts:?}):\n{}",
        cluster
            .history
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
