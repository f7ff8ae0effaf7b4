//! CPU pinning: `--pin` binds worker i to place i mod P, the same across respawns, reloads and
//! scaling; `--cpus` narrows what workers may use; `WORKER_CPUS` says what each got; `--plan`
//! shows it all without starting anything.

use crate::harness::{Cluster, Launch, cluster_args, run_to_end, worker_bin};

/// The CPUs this test process may use, as recluster would list them.
fn our_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for item in list.split(',') {
        match item.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(item.parse().unwrap()),
        }
    }
    cpus
}

/// `recluster --plan=json ARGS`: the CPUs worker i gets, in order.
fn planned(args: &[&str]) -> Vec<String> {
    let mut all = vec!["--plan=json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_to_end(&all);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .split("\"cpus\":\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// Waits for `n` reports from new workers (none of `seen`), in any order; (pid, CPUs) by slot.
fn reports(cluster: &mut Cluster, n: usize, seen: &[i32]) -> Vec<(i32, i32, String)> {
    let mut found: Vec<(i32, i32, String)> = (0..n)
        .map(|i| {
            let line = cluster.expect(&format!("report {} of {n}", i + 1), |l| {
                l.is_worker("report") && !seen.contains(&l.num("pid"))
            });
            let cpus = line.field("cpus").unwrap().to_string();
            assert_eq!(
                line.field("worker_cpus"),
                Some(cpus.as_str()),
                "WORKER_CPUS is what the worker got: {}",
                line.text
            );
            (line.num("id"), line.num("pid"), cpus)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn each_worker_keeps_its_place_across_respawns_reloads_and_scaling() {
    let places = planned(&["-n", "3", "--pin"]);
    assert_eq!(places.len(), 3);
    let cpus = our_cpus();
    if cpus.len() >= 2 {
        assert_ne!(places[0], places[1], "two CPUs: two places");
    }
    let mut cluster = Cluster::start(
        &["-n", "3", "--pin", "--min-uptime", "200ms"],
        &["--report"],
    );
    let mut pids = Vec::new();
    for (id, pid, got) in reports(&mut cluster, 3, &pids) {
        assert_eq!(got, places[id as usize], "worker {id}");
        pids.push(pid);
    }
    if cpus.len() == 2 {
        cluster.expect_log("3 workers on 2 CPUs: workers 0 and 2 share CPU");
    }
    // A respawn.
    let victim = pids[1];
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let respawned = reports(&mut cluster, 1, &pids);
    assert_eq!(
        (respawned[0].0, &respawned[0].2),
        (1, &places[1]),
        "respawned worker 1"
    );
    pids.push(respawned[0].1);
    // A reload.
    cluster.send(libc::SIGHUP);
    for (id, pid, got) in reports(&mut cluster, 3, &pids) {
        assert_eq!(got, places[id as usize], "reloaded worker {id}");
        pids.push(pid);
    }
    cluster.expect_log("reload to generation 1 complete");
    // TTIN: worker 3 goes where --plan says a fourth would.
    let four = planned(&["-n", "4", "--pin"]);
    cluster.send(libc::SIGTTIN);
    let added = reports(&mut cluster, 1, &pids);
    assert_eq!((added[0].0, &added[0].2), (3, &four[3]), "added worker 3");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn under_taskset_no_worker_leaves_the_inherited_cpu() {
    let cpu = our_cpus().last().copied().unwrap().to_string();
    for pin in [None, Some("--pin")] {
        let mut args = vec!["-n", "2"];
        args.extend(pin);
        let mut cluster =
            Launch::wrapped(&["taskset", "-c", &cpu], cluster_args(&args, &["--report"])).start();
        for (id, _, got) in reports(&mut cluster, 2, &[]) {
            assert_eq!(got, cpu, "{pin:?}: worker {id}");
        }
        cluster.send(libc::SIGTERM);
        assert_eq!(cluster.exit_code(), 0);
    }
}

#[test]
fn cpus_narrows_every_worker_and_a_cpu_outside_the_allowed_set_is_a_usage_error() {
    let cpu = our_cpus()[0].to_string();
    let mut cluster = Cluster::start(&["-n", "2", "--cpus", &cpu], &["--report"]);
    for (id, _, got) in reports(&mut cluster, 2, &[]) {
        assert_eq!(got, cpu, "worker {id}");
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    let worker = worker_bin();
    let (code, _, stderr) = run_to_end(&["--cpus", "1023", worker.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(
            "recluster: error: --cpus 1023: 1023 is not among the CPUs this process may use ("
        ),
        "{stderr}"
    );
}

#[test]
fn the_plan_explains_without_starting_anything() {
    let (code, stdout, stderr) = run_to_end(&["--plan", "-n", "2", "--pin=core"]);
    assert_eq!(code, 0, "{stderr}");
    for fragment in [
        "CPUs recluster may use (its affinity)",
        "online CPUs (/sys/devices/system/cpu/online)",
        "CPU quota (the tightest, rounded up)",
        "workers                                      2 (-n)",
        "pinning                                      --pin=core",
        "WORKER_ID  CPUs",
    ] {
        assert!(stdout.contains(fragment), "{fragment:?} in:\n{stdout}");
    }
    assert!(stderr.is_empty(), "nothing started: {stderr}");
}
