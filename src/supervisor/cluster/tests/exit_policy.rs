//! `--exit-on` and `--critical` on a synthetic clock: which end stops the cluster, and with
//! which status.

use super::*;
use crate::config::policy::ExitOn;
use crate::supervisor::snapshot::WorkerState;

fn exit_on(exit_on: ExitOn, max_restarts: Option<u32>) -> Policy {
    let base = match max_restarts {
        Some(n) => crash_limited(n, 60_000 * MS),
        None => policy(),
    };
    Policy { exit_on, ..base }
}

fn states(cluster: &Cluster, now: Instant) -> Vec<WorkerState> {
    let clock = Clock {
        now,
        wall: std::time::SystemTime::now(),
    };
    let snapshot = cluster.snapshot(1, clock);
    snapshot.workers.iter().map(|w| w.state).collect()
}

/// Slot `id`'s worker `pid` crashes with `code`, is respawned as `next`, and crashes again:
/// with `--max-restarts 1`, that is a give-up. The actions of the second crash.
fn crash_loop(
    cluster: &mut Cluster,
    id: u32,
    pid: i32,
    next: i32,
    code: i32,
    now: &mut Instant,
) -> Vec<Action> {
    *now += MS;
    cluster.on_reaped(&exit(pid, ProcessStatus::Exited(code)), true, *now);
    *now = respawn_due(cluster, id, next) + MS;
    cluster.on_reaped(&exit(next, ProcessStatus::Exited(code)), true, *now)
}

#[test]
fn any_exit_ends_the_cluster_with_the_first_exit_status_even_0() {
    for code in [0, 3] {
        let t0 = Instant::now();
        let mut cluster = running(exit_on(ExitOn::AnyExit, None), 3, t0);
        let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(code)), true, t0);
        assert!(spawned_ids(&actions).is_empty(), "{actions:?}");
        assert!(actions.contains(&stop_signal(100)), "{actions:?}");
        assert!(actions.contains(&stop_signal(102)), "{actions:?}");
        cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0);
        let actions = cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::KILL)), false, t0);
        assert_eq!(
            actions,
            [Action::Exit(code)],
            "the others' ends do not count"
        );
    }
}

#[test]
fn any_exit_counts_a_worker_that_could_not_be_started() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(exit_on(ExitOn::AnyExit, None), 2);
    let actions = cluster.start(t0);
    let tickets = tickets(&actions);
    cluster.spawned(tickets[0], 100, t0);
    let actions = cluster.spawn_failed(tickets[1], ProcessStatus::Exited(127), t0);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, t0);
    assert_eq!(actions, [Action::Exit(127)]);
}

#[test]
fn below_k_a_give_up_stops_only_its_slot_until_fewer_than_k_can_run() {
    let mut now = Instant::now();
    let mut cluster = running(exit_on(ExitOn::Below(2), Some(1)), 3, now);
    let actions = crash_loop(&mut cluster, 0, 100, 200, 4, &mut now);
    assert!(
        others(&actions).is_empty(),
        "the others serve on: {actions:?}"
    );
    assert!(spawned_ids(&actions).is_empty(), "{actions:?}");
    assert_eq!(
        states(&cluster, now),
        [WorkerState::GaveUp, WorkerState::Ready, WorkerState::Ready]
    );
    assert_eq!(cluster.next_deadline(), None, "nothing to wake up for");
    check_invariants(&cluster);
    // The second give-up leaves 1 slot that can run, fewer than 2: the cluster stops with the
    // status of the worker whose end made it so.
    let actions = crash_loop(&mut cluster, 1, 101, 201, 5, &mut now);
    assert!(actions.contains(&stop_signal(102)), "{actions:?}");
    let actions = cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::TERM)), false, now);
    assert_eq!(actions, [Action::Exit(5)]);
}

#[test]
fn below_k_counts_slots_waiting_out_their_backoff_as_able_to_run() {
    let t0 = Instant::now();
    let mut cluster = running(exit_on(ExitOn::Below(2), None), 2, t0);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0 + MS);
    assert!(others(&actions).is_empty(), "{actions:?}");
    assert_eq!(cluster.slots_that_can_run(), 2);
}

#[test]
fn below_k_counts_slots_ended_for_good_by_restart_policy() {
    let t0 = Instant::now();
    let policy = Policy {
        restart: RestartMode::OnFailure,
        ..exit_on(ExitOn::Below(2), None)
    };
    let mut cluster = running(policy, 2, t0);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), true, t0);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, t0);
    assert_eq!(actions, [Action::Exit(0)]);
}

/// Slots 0, 1: group 0 ("web", critical); slots 2, 3: group 1 ("jobs").
fn grouped(exit_on_: ExitOn, now: Instant) -> Cluster {
    let policy = Policy {
        critical: vec![0],
        ..exit_on(exit_on_, Some(1))
    };
    let mut cluster = running(policy, 4, now);
    for (slot, group) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        cluster.assign_group(slot, group);
    }
    cluster
}

#[test]
fn a_give_up_outside_the_critical_groups_stops_its_group_and_the_rest_serves() {
    let mut now = Instant::now();
    let mut cluster = grouped(ExitOn::GiveUp, now);
    let actions = crash_loop(&mut cluster, 2, 102, 202, 6, &mut now);
    assert_eq!(actions, [stop_signal(103)], "the rest of jobs is stopped");
    assert_eq!(
        states(&cluster, now),
        [
            WorkerState::Ready,
            WorkerState::Ready,
            WorkerState::GaveUp,
            WorkerState::GaveUp,
            WorkerState::Stopping
        ]
    );
    let actions = cluster.on_reaped(&exit(103, ProcessStatus::Killed(Sig::TERM)), false, now);
    assert!(others(&actions).is_empty() && spawned_ids(&actions).is_empty());
    check_invariants(&cluster);
    // A give-up in the critical group ends the cluster with its status.
    let actions = crash_loop(&mut cluster, 0, 100, 200, 7, &mut now);
    assert!(actions.contains(&stop_signal(101)), "{actions:?}");
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), false, now);
    assert_eq!(actions, [Action::Exit(7)]);
}

#[test]
fn without_critical_groups_every_give_up_ends_the_cluster() {
    let mut now = Instant::now();
    let mut cluster = grouped(ExitOn::GiveUp, now);
    cluster.policy.critical.clear();
    let actions = crash_loop(&mut cluster, 2, 102, 202, 6, &mut now);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
}

#[test]
fn below_k_with_groups_counts_the_stopped_group_out() {
    let mut now = Instant::now();
    let mut cluster = grouped(ExitOn::Below(3), now);
    // jobs gives up: web's 2 slots are left, fewer than 3.
    let actions = crash_loop(&mut cluster, 3, 103, 203, 9, &mut now);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
    assert!(actions.contains(&stop_signal(102)), "{actions:?}");
    for pid in [100, 101] {
        cluster.on_reaped(&exit(pid, ProcessStatus::Killed(Sig::TERM)), true, now);
    }
    let actions = cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::TERM)), false, now);
    assert_eq!(actions, [Action::Exit(9)]);
}
