//! `--max-age` on a synthetic clock: each worker falls due at its own deadline, is replaced new
//! one first within N + K, never during a reload, and the interleavings with a crash loop, a
//! failed new worker and a scale-down leave no slot doubly replaced or forgotten.

use super::*;
use crate::config::validated::MaxAge;

const AGE: Duration = Duration::from_secs(10);

fn aged_policy(jitter: Duration) -> Policy {
    Policy {
        max_age: Some(MaxAge {
            age: AGE,
            jitter,
            seed: 7,
        }),
        ..policy()
    }
}

/// A cluster whose workers (pids 100, 101, …) started at `t0` and became ready the way they do
/// (after --min-uptime), so each has its deadline; returns it and when they became ready.
fn aged(policy: Policy, workers: u32, t0: Instant) -> (Cluster, Instant) {
    let mut cluster = starting(policy, workers, t0);
    let ready = t0 + cluster.policy.min_uptime;
    cluster.on_timer(ready);
    assert_eq!(cluster.ready, workers as usize);
    cluster.take_reports();
    (cluster, ready)
}

/// Whether `actions` stop the old worker `pid`.
fn stops(actions: &[Action], pid: i32) -> bool {
    actions.contains(&stop_signal(pid))
}

fn recycles(cluster: &Cluster, id: usize) -> u64 {
    cluster.slots[id].recycle_count
}

/// Live workers (forked or being forked) never exceed N + K.
fn check_bound(cluster: &Cluster) {
    let alive = cluster.places.len() + cluster.spawning;
    let bound = cluster.workers() + cluster.policy.reload_batch as usize;
    assert!(alive <= bound, "{alive} alive, bound {bound}");
    check_invariants(cluster);
}

#[test]
fn a_worker_past_max_age_is_replaced_new_one_first_and_counted_apart_from_restarts() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 1, t0);
    let due = cluster.next_deadline().expect("a deadline for its age");
    assert_eq!(due, t0 + AGE, "from its start, no jitter");
    assert!(cluster.on_timer(due - MS).is_empty(), "not before");
    let actions = cluster.on_timer(due);
    assert_eq!(spawns(&actions), [(0, 0)], "the same generation");
    assert_eq!(tickets(&actions)[0].role, Role::Replacement);
    assert!(
        !stops(&actions, 100),
        "the old one serves until the new one is ready"
    );
    assert_eq!(
        cluster.take_reports(),
        [Report::Recycling {
            id: 0,
            pid: 100,
            ran: AGE
        }]
    );
    spawn_one(&mut cluster, &actions, 200, due);
    let ready = due + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 100));
    cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(cluster.worker_pids(), [200]);
    assert_eq!(
        (recycles(&cluster, 0), cluster.slots[0].restart_count),
        (1, 0)
    );
    let snapshot = cluster.snapshot(
        1,
        Clock {
            now: ready,
            wall: std::time::SystemTime::now(),
        },
    );
    assert_eq!(
        (snapshot.cluster.recycles, snapshot.cluster.restarts),
        (1, 0)
    );
    assert_eq!(snapshot.workers[0].recycles, 1);
    assert_eq!(
        snapshot.workers[0].last_exit.as_ref().unwrap().what,
        "replaced: age"
    );
    // The new worker has its own deadline, from its own start.
    assert_eq!(cluster.next_deadline(), Some(due + AGE));
    check_bound(&cluster);
}

#[test]
fn slots_started_together_fall_due_apart_within_the_jitter() {
    let t0 = Instant::now();
    let jitter = 1000 * MS;
    let (cluster, _) = aged(aged_policy(jitter), 8, t0);
    let mut deadlines: Vec<Instant> = cluster
        .slots
        .iter()
        .map(|s| s.recycle.expect("each ready worker has its deadline").1)
        .collect();
    assert!(
        deadlines
            .iter()
            .all(|due| *due >= t0 + AGE && *due < t0 + AGE + jitter),
        "within [start + age, start + age + jitter)"
    );
    deadlines.sort();
    deadlines.dedup();
    assert_eq!(deadlines.len(), 8, "no two slots due at once");
    let spread = *deadlines.last().unwrap() - deadlines[0];
    assert!(spread > jitter / 2, "spread over the jitter: {spread:?}");
    // Another run (another seed) gives other shares.
    let other = MaxAge {
        seed: 8,
        ..cluster.policy.max_age.unwrap()
    };
    let ours = crate::supervisor::cluster::recycle::share(cluster.policy.max_age.unwrap(), 1);
    assert_ne!(crate::supervisor::cluster::recycle::share(other, 1), ours);
}

#[test]
fn two_due_at_once_with_batch_1_are_replaced_one_after_the_other() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 3, t0);
    let due = t0 + AGE;
    let actions = cluster.on_timer(due);
    assert_eq!(spawns(&actions), [(0, 0)], "one at a time, in order");
    spawn_one(&mut cluster, &actions, 200, due);
    check_bound(&cluster);
    let ready = due + 1000 * MS;
    let actions = cluster.on_timer(ready);
    assert!(stops(&actions, 100));
    assert!(spawns(&actions).is_empty(), "the old one still counts");
    check_bound(&cluster);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(spawns(&actions), [(1, 0)], "room again: the next due slot");
    spawn_one(&mut cluster, &actions, 201, ready);
    check_bound(&cluster);
    let ready = ready + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 101));
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(spawns(&actions), [(2, 0)]);
    spawn_one(&mut cluster, &actions, 202, ready);
    let ready = ready + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 102));
    cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(cluster.worker_pids(), [200, 201, 202]);
    assert!((0..3).all(|id| recycles(&cluster, id) == 1));
    check_bound(&cluster);
}

#[test]
fn a_recycle_due_during_a_reload_waits_and_the_reload_renews_the_worker() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 2, t0);
    let hup = t0 + AGE - 500 * MS;
    let actions = cluster.on_signal(Sig::HUP, hup);
    assert_eq!(spawns(&actions), [(0, 1)]);
    spawn_one(&mut cluster, &actions, 200, hup);
    // Both fall due while the reload runs: nothing starts beside it.
    let due = t0 + AGE;
    assert!(spawns(&cluster.on_timer(due)).is_empty());
    assert_eq!(cluster.recycle_queue.len(), 2);
    let mut now = hup + 1000 * MS;
    let actions = cluster.on_timer(now);
    assert!(stops(&actions, 100));
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, now);
    assert_eq!(spawns(&actions), [(1, 1)], "the reload's, not a recycle");
    spawn_one(&mut cluster, &actions, 201, now);
    now += 1000 * MS;
    assert!(stops(&cluster.on_timer(now), 101));
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), true, now);
    assert!(cluster.reload.is_none(), "complete");
    assert!(
        spawns(&actions).is_empty(),
        "the reload renewed both: {actions:?}"
    );
    assert!(cluster.recycle_queue.is_empty());
    assert_eq!((recycles(&cluster, 0), recycles(&cluster, 1)), (0, 0));
    // The new workers are due from their own start.
    assert_eq!(cluster.next_deadline(), Some(hup + AGE));
    check_bound(&cluster);
}

#[test]
fn a_recycle_due_during_a_reload_that_is_abandoned_runs_after_it() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 2, t0);
    let hup = t0 + AGE - 500 * MS;
    let actions = cluster.on_signal(Sig::HUP, hup);
    spawn_one(&mut cluster, &actions, 200, hup);
    let due = t0 + AGE;
    assert!(spawns(&cluster.on_timer(due)).is_empty());
    // The new release cannot start: the old workers stay, still past their age.
    let failed = due + 100 * MS;
    let actions = cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, failed);
    assert!(cluster.reload.is_none(), "abandoned");
    assert_eq!(
        spawns(&actions),
        [(0, 0)],
        "the recycle of the old generation, at once"
    );
    spawn_one(&mut cluster, &actions, 300, failed);
    check_bound(&cluster);
    let ready = failed + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 100));
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(spawns(&actions), [(1, 0)]);
    check_bound(&cluster);
}

#[test]
fn a_slot_due_that_crash_loops_meanwhile_is_not_recycled_and_its_deaths_are_restarts() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 2, t0);
    let due = t0 + AGE;
    let actions = cluster.on_timer(due);
    assert_eq!(spawns(&actions), [(0, 0)], "slot 1 waits its turn");
    spawn_one(&mut cluster, &actions, 200, due);
    // Slot 1's worker dies while it waits, and its respawns die young: a crash loop.
    let mut now = due + 100 * MS;
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(1)), true, now);
    for pid in [301, 302, 303] {
        let at = respawn_due(&mut cluster, 1, pid);
        now = at + 50 * MS;
        let actions = cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), true, now);
        assert!(
            tickets(&actions).iter().all(|t| t.role == Role::Slot),
            "no new worker beside a crash-looping slot: {actions:?}"
        );
        check_bound(&cluster);
    }
    // Slot 0's recycle completes; slot 1 is not recycled (its worker is young, or none runs).
    let ready = due + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready.max(now)), 100));
    let actions = cluster.on_reaped(
        &exit(100, ProcessStatus::Killed(Sig::TERM)),
        true,
        ready.max(now),
    );
    assert!(
        tickets(&actions).iter().all(|t| t.role == Role::Slot),
        "{actions:?}"
    );
    assert!(cluster.recycle_queue.is_empty());
    assert_eq!(recycles(&cluster, 1), 0);
    assert_eq!(
        cluster.slots[1].restart_count, 4,
        "crashes count as restarts"
    );
    assert_eq!(recycles(&cluster, 0), 1);
    check_bound(&cluster);
}

#[test]
fn a_new_worker_that_fails_leaves_the_old_one_serving_and_is_tried_again_after_a_backoff() {
    let t0 = Instant::now();
    let policy = Policy {
        // A crash loop of new workers must not give the cluster up: they are not restarts.
        crash_limit: Some(CrashLimit {
            max_restarts: 1,
            window: 60_000 * MS,
        }),
        ..aged_policy(Duration::ZERO)
    };
    let (mut cluster, _) = aged(policy, 1, t0);
    let mut now = t0 + AGE;
    let mut actions = cluster.on_timer(now);
    let mut waits = Vec::new();
    for pid in [200, 201, 202, 203] {
        spawn_one(&mut cluster, &actions, pid, now);
        now += 10 * MS;
        let after = cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), true, now);
        assert!(after.is_empty(), "the old one keeps serving: {after:?}");
        assert!(cluster.is_running());
        assert_eq!(cluster.worker_pids(), [100]);
        let retry = cluster.next_deadline().expect("tried again");
        waits.push(retry - now);
        now = retry;
        actions = cluster.on_timer(now);
        assert_eq!(spawns(&actions), [(0, 0)]);
    }
    assert_eq!(
        waits,
        [100 * MS, 200 * MS, 400 * MS, 400 * MS],
        "doubling, capped"
    );
    // This one makes it: the count of failures starts again.
    spawn_one(&mut cluster, &actions, 210, now);
    let ready = now + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 100));
    assert_eq!(recycles(&cluster, 0), 1);
    assert_eq!(cluster.slots[0].recycle_failures, 0);
    assert_eq!(cluster.slots[0].restart_count, 0);
    assert!(
        cluster
            .take_reports()
            .iter()
            .any(|r| matches!(r, Report::ReplacementFailed { id: 0, .. }))
    );
    check_bound(&cluster);
}

#[test]
fn scaling_down_a_slot_awaiting_its_recycle_forgets_it() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 3, t0);
    let due = t0 + AGE;
    let actions = cluster.on_timer(due);
    assert_eq!(spawns(&actions), [(0, 0)]);
    spawn_one(&mut cluster, &actions, 200, due);
    // Slot 2 waits in the queue; a TTOU removes it.
    let actions = cluster.on_signal(Sig::TTOU, due);
    assert!(stops(&actions, 102));
    assert!(spawns(&actions).is_empty());
    let now = due + 10 * MS;
    let actions = cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::TERM)), true, now);
    assert!(
        spawns(&actions).is_empty(),
        "slot 0 is still being replaced"
    );
    let ready = due + 1000 * MS;
    assert!(stops(&cluster.on_timer(ready), 100));
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(
        spawns(&actions),
        [(1, 0)],
        "slot 1, never the removed slot 2"
    );
    spawn_one(&mut cluster, &actions, 201, ready);
    // Slot 1 is removed while its new worker starts: both go, nothing else starts.
    let actions = cluster.on_signal(Sig::TTOU, ready);
    assert!(stops(&actions, 101) && stops(&actions, 201), "{actions:?}");
    assert!(spawns(&actions).is_empty());
    let later = ready + 10 * MS;
    let exits = [
        Exit {
            pid: 101,
            status: ProcessStatus::Killed(Sig::TERM),
            cpu: Duration::ZERO,
            oom_killed: false,
        },
        Exit {
            pid: 201,
            status: ProcessStatus::Killed(Sig::TERM),
            cpu: Duration::ZERO,
            oom_killed: false,
        },
    ];
    assert!(spawns(&cluster.on_reaped(&exits, true, later)).is_empty());
    assert!(cluster.recycle_queue.is_empty());
    assert_eq!(cluster.worker_pids(), [200]);
    // A slot added back under the same id is new, with its own deadline.
    let actions = cluster.on_signal(Sig::TTIN, later);
    spawn_one(&mut cluster, &actions, 301, later);
    cluster.on_timer(later + 1000 * MS);
    assert_eq!(cluster.slots[1].recycle, Some((301, later + AGE)));
    check_bound(&cluster);
}

#[test]
fn nothing_is_recycled_once_stopping_and_without_max_age_nothing_is_timed() {
    let t0 = Instant::now();
    let (mut cluster, _) = aged(aged_policy(Duration::ZERO), 2, t0);
    cluster.on_signal(Sig::TERM, t0 + AGE - MS);
    assert!(spawns(&cluster.on_timer(t0 + AGE)).is_empty());
    let (mut plain, _) = aged(policy(), 2, t0);
    assert_eq!(plain.next_deadline(), None);
}
