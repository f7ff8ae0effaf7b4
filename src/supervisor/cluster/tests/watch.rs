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
    let actions = cluster.reload_for_changes(t0);
    assert_eq!(spawns(&actions), [(0, 1)]);
    for _ in 0..5 {
        assert!(
            cluster.reload_for_changes(t0).is_empty(),
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
    let first = cluster.reload_for_changes(t0);
    spawn_one(&mut cluster, &first, 200, t0);
    assert!(cluster.reload_for_changes(t0).is_empty());
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
    let first = cluster.reload_for_changes(t0);
    spawn_one(&mut cluster, &first, 200, t0);
    // The fix lands while the broken release is being tried.
    assert!(cluster.reload_for_changes(t0 + 10 * MS).is_empty());
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
    assert!(cluster.reload_for_changes(t0).is_empty());
}
