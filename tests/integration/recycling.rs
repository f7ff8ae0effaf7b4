//! `--max-age`: workers that have run long enough are replaced through the rolling path, one
//! slot at a time (`--reload-batch 1`), with no failed request under load, and counted as
//! recycles, not restarts.

use std::collections::{BTreeSet, HashMap};

use crate::harness::*;

/// `worker ID (pid P) has run for …`: (id, pid).
fn recycled(line: &Line) -> Option<(i32, i32)> {
    let rest = line.text.split("recluster: worker ").nth(1)?;
    if !rest.contains("(--max-age): recycling") {
        return None;
    }
    let id = rest.split_whitespace().next()?.parse().ok()?;
    let pid = rest
        .split("(pid ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()?;
    Some((id, pid))
}

/// `worker ID (pid P) … after being stopped`: P.
fn stopped(line: &Line) -> Option<i32> {
    if !line.text.contains("after being stopped") {
        return None;
    }
    line.text
        .split("(pid ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()
}

#[test]
fn with_max_age_every_slot_is_recycled_one_at_a_time_and_no_request_fails() {
    let mut cluster = Cluster::start(
        &[
            "-n",
            "3",
            "--max-age",
            "2s",
            "--min-uptime",
            "200ms",
            "--listen",
            "127.0.0.1:0",
        ],
        &["--serve"],
    );
    let address = cluster.listening(1).remove(0);
    for _ in 0..3 {
        cluster.expect("a worker listening", |l| l.is_worker("listening"));
    }
    let load = Load::start(&address, 3);
    load.wait_for(50);
    // Every slot recycled, and its old worker gone.
    let mut done = BTreeSet::new();
    while done.len() < 3 {
        let line = cluster.expect("a recycle", |l| recycled(l).is_some());
        let (id, pid) = recycled(&line).unwrap();
        cluster.expect(&format!("worker {id}'s old pid {pid} stopped"), |l| {
            stopped(l) == Some(pid)
        });
        done.insert(id);
    }
    load.wait_for(50);
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    // Never two at once: each recycle begins after the previous one's old worker has gone.
    let mut open: HashMap<i32, i32> = HashMap::new();
    for line in &cluster.history {
        if let Some((id, pid)) = recycled(line) {
            if !open.is_empty() {
                cluster.fail(&format!(
                    "worker {id} recycled while {open:?} (id: old pid) still ran"
                ));
            }
            open.insert(id, pid);
        } else if let Some(pid) = stopped(line) {
            open.retain(|_, old| *old != pid);
        }
    }
    let status = ctl_status(cluster.pid);
    let recycles = status["cluster"]["recycles"].as_u64().unwrap();
    assert!(recycles >= 3, "{status}");
    assert_eq!(
        status["cluster"]["restarts"], 0,
        "recycles are not restarts"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
