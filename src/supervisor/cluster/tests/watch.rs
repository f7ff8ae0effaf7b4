//! `--watch` on a synthetic clock: a change starts a rolling reload; changes during one queue
//! exactly one more, which a newer reload (SIGHUP) makes needless.

use super::*;

/// Carries the reload under way to its end (not the one it may start) (each new worker ready after --min-uptime, each old
/// one reaped at once); returns the actions of the last step and when it ended.
fn finish_reload(
    cluster: &mut Cluster,
    mut pending: Vec<Action>,
    mut now: Instant,
    pid: &mut i32,
) -> (Vec<Action>, Instant) {
    let target = cluster.reload.as_ref().expect("a reload").target;
    while cluster.generation < target && cluster.reloads.1 == 0 {
        for ticket in tickets(&pending) {
            *pid += 1;
            cluster.spawned(ticket, *pid, now);
        }
        now += 1000 * MS;
        let mut actions = cluster.on_timer(now);
        let stopped: Vec<i32> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SignalGroup { pgid, .. } => Some(*pgid),
                _ => None,
            })
            .collect();
        for old in stopped {
            actions.extend(cluster.on_reaped(
                &exit(old, ProcessStatus::Killed(Sig::TERM)),
                true,
                now,
            ));
        }
        pending = actions;
    }
    (pending, now)
}

fn reloads_begun(reports: &[Report]) -> Vec<(Origin, u32)> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::ReloadBegun { origin, target, .. } => Some((*origin, *target)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_starts_a_reload_and_changes_during_it_queue_exactly_one_more() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.reload_for_changes(Scope::All, t0);
    assert_eq!(spawns(&actions), [(0, 1)]);
    for _ in 0..5 {
        assert!(
            cluster.reload_for_changes(Scope::All, t0).is_empty(),
            "queued, not started"
        );
    }
    let mut pid = 200;
    let (after, now) = finish_reload(&mut cluster, actions, t0, &mut pid);
    assert_eq!(
        spawns(&after),
        [(0, 2)],
        "the one queued reload follows at once"
    );
    let (after, _) = finish_reload(&mut cluster, after, now, &mut pid);
    assert!(spawns(&after).is_empty(), "and no more: {after:?}");
    assert_eq!(cluster.generation, 2);
    let reports = cluster.take_reports();
    assert_eq!(
        reloads_begun(&reports),
        [(Origin::Watch, 1), (Origin::Watch, 2)]
    );
    assert_eq!(
        reports
            .iter()
            .filter(|r| matches!(r, Report::ReloadQueued { target: 1 }))
            .count(),
        1
    );
    check_invariants(&cluster);
}

#[test]
fn a_hup_after_a_change_during_a_reload_makes_the_queued_reload_needless() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let first = cluster.reload_for_changes(Scope::All, t0);
    spawn_one(&mut cluster, &first, 200, t0);
    assert!(cluster.reload_for_changes(Scope::All, t0).is_empty());
    let actions = cluster.on_signal(Sig::HUP, t0 + 10 * MS);
    let mut pid = 300;
    let (after, _) = finish_reload(&mut cluster, actions, t0 + 10 * MS, &mut pid);
    assert!(
        spawns(&after).is_empty(),
        "the HUP's reload read every change: {after:?}"
    );
    assert_eq!(cluster.generation, 2);
    check_invariants(&cluster);
}

#[test]
fn a_change_queued_during_a_reload_that_fails_is_tried_after_it() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let first = cluster.reload_for_changes(Scope::All, t0);
    spawn_one(&mut cluster, &first, 200, t0);
    // The fix lands while the broken release is being tried.
    assert!(
        cluster
            .reload_for_changes(Scope::All, t0 + 10 * MS)
            .is_empty()
    );
    let actions = cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, t0 + 20 * MS);
    assert_eq!(cluster.reloads, (0, 1), "abandoned");
    assert_eq!(spawns(&actions), [(0, 2)], "the queued one starts");
    check_invariants(&cluster);
}

#[test]
fn changes_while_stopping_start_nothing() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert!(cluster.reload_for_changes(Scope::All, t0).is_empty());
}

fn slots(ids: &[u32]) -> Scope {
    Scope::Slots(ids.iter().copied().collect())
}

#[test]
fn a_change_of_some_groups_reloads_their_slots_only_and_they_alone_change_generation() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 4, t0);
    let actions = cluster.reload_for_changes(slots(&[2, 3]), t0);
    assert_eq!(spawns(&actions), [(2, 1)], "the first slot of the scope");
    let mut pid = 200;
    let mut all = Vec::new();
    let mut pending = actions;
    let mut now = t0;
    while cluster.generation < 1 {
        all.extend(spawns(&pending));
        for ticket in tickets(&pending) {
            pid += 1;
            cluster.spawned(ticket, pid, now);
        }
        now += 1000 * MS;
        let mut actions = cluster.on_timer(now);
        for old in [102, 103] {
            if actions.contains(&stop_signal(old)) {
                actions.extend(cluster.on_reaped(
                    &exit(old, ProcessStatus::Killed(Sig::TERM)),
                    true,
                    now,
                ));
            }
        }
        pending = actions;
        check_invariants(&cluster);
    }
    assert_eq!(all, [(2, 1), (3, 1)]);
    let generations: Vec<u32> = cluster.slots.iter().map(|s| s.generation).collect();
    assert_eq!(generations, [0, 0, 1, 1]);
    assert_eq!(&cluster.worker_pids()[..2], [100, 101], "untouched");
    // A respawn of an untouched slot keeps its generation.
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, now);
    let due = cluster.next_deadline().unwrap();
    assert_eq!(spawns(&cluster.on_timer(due)), [(0, 0)]);
}

#[test]
fn scopes_queued_during_a_reload_join_into_the_one_that_follows() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 4, t0);
    let actions = cluster.reload_for_changes(slots(&[0]), t0);
    assert!(cluster.reload_for_changes(slots(&[2]), t0).is_empty());
    assert!(cluster.reload_for_changes(slots(&[3]), t0).is_empty());
    assert_eq!(cluster.reload_queued, Some(slots(&[2, 3])));
    let mut pid = 200;
    let (after, _) = finish_reload(&mut cluster, actions, t0, &mut pid);
    assert_eq!(spawns(&after), [(2, 2)], "one reload of both");
    assert_eq!(cluster.reload.as_ref().unwrap().scope, slots(&[2, 3]));
    // A change of every group joins to every slot.
    assert!(cluster.reload_for_changes(Scope::All, t0).is_empty());
    assert!(cluster.reload_for_changes(slots(&[1]), t0).is_empty());
    assert_eq!(cluster.reload_queued, Some(Scope::All));
}

#[test]
fn a_group_reload_leaves_a_recycle_of_another_group_due() {
    use crate::config::validated::MaxAge;
    let t0 = Instant::now();
    let aged = Policy {
        max_age: Some(MaxAge {
            age: 10_000 * MS,
            jitter: Duration::ZERO,
            seed: 1,
        }),
        ..policy()
    };
    let mut cluster = starting(aged, 2, t0);
    cluster.on_timer(t0 + 1000 * MS);
    let due = t0 + 10_000 * MS;
    let actions = cluster.on_timer(due);
    assert_eq!(spawns(&actions), [(0, 0)], "slot 0 is recycled");
    // A change of slot 1's group drops the recycle's new worker (N + K), and keeps slot 0 due.
    let actions = cluster.reload_for_changes(slots(&[1]), due);
    assert_eq!(spawns(&actions), [(1, 1)]);
    spawn_one(&mut cluster, &actions, 300, due);
    let ready = due + 1000 * MS;
    assert!(cluster.on_timer(ready).contains(&stop_signal(101)));
    let after = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), true, ready);
    assert_eq!(cluster.generation, 1, "the reload completed");
    assert_eq!(
        spawns(&after),
        [(0, 0)],
        "then slot 0's recycle, at its own generation"
    );
    check_invariants(&cluster);
}
