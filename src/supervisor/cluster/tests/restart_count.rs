//! `ctl restart` counts in the slot's restart counter once it took effect, and only then.

use super::*;

fn restarts(cluster: &Cluster, now: Instant) -> Vec<u64> {
    let clock = Clock {
        now,
        wall: std::time::SystemTime::now(),
    };
    let snapshot = cluster.snapshot(1, clock);
    snapshot.workers.iter().map(|w| w.restarts).collect()
}

#[test]
fn a_restart_whose_new_worker_fails_is_not_counted() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    let actions = cluster.request_restart(&[0], t0).unwrap();
    spawn_one(&mut cluster, &actions, 200, t0);
    cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, t0 + MS);
    assert_eq!(restarts(&cluster, t0 + MS), [0], "the old worker serves on");
}

#[test]
fn a_restart_of_a_slot_that_ended_for_good_counts_when_it_starts_again() {
    let t0 = Instant::now();
    let never = Policy {
        restart: RestartMode::Never,
        ..policy()
    };
    let mut cluster = running(never, 2, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
    assert_eq!(restarts(&cluster, t0), [0, 0]);
    let actions = cluster.request_restart(&[0], t0).unwrap();
    let due = cluster.next_deadline().unwrap_or(t0);
    let mut actions = actions;
    actions.extend(cluster.on_timer(due));
    assert_eq!(spawned_ids(&actions), [0]);
    assert_eq!(restarts(&cluster, due), [1, 0]);
}
