//! `--stop-delay` on a synthetic clock: the workers keep serving, then get the stop signal; a
//! second stop signal ends the delay; nothing is started meanwhile.

use super::*;
use crate::supervisor::snapshot::ClusterState;

fn delayed() -> Policy {
    Policy {
        stop_delay: 1000 * MS,
        ..policy()
    }
}

fn state(cluster: &Cluster, now: Instant) -> ClusterState {
    let clock = Clock {
        now,
        wall: std::time::SystemTime::now(),
    };
    cluster.snapshot(1, clock).cluster.state
}

fn stop_signals(signal: Sig, pgids: &[i32]) -> Vec<Action> {
    let mut actions: Vec<Action> = pgids
        .iter()
        .map(|&pgid| Action::SignalGroup { pgid, signal })
        .collect();
    actions.push(Action::SignalOrphans {
        signal,
        workers: pgids.to_vec(),
    });
    actions
}

#[test]
fn the_workers_keep_serving_through_the_delay_then_get_the_stop_signal() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    assert_eq!(
        cluster.on_signal(Sig::TERM, t0),
        [Action::NotifyManager(
            "STOPPING=1\nSTATUS=stopping in 1s (--stop-delay)".to_string()
        )],
        "no worker is signalled yet"
    );
    assert_eq!(
        state(&cluster, t0),
        ClusterState::Stopping,
        "/readyz says 503"
    );
    assert_eq!(cluster.next_deadline(), Some(t0 + 1000 * MS));
    assert!(cluster.on_timer(t0 + 999 * MS).is_empty());
    let then = t0 + 1000 * MS;
    assert_eq!(
        cluster.on_timer(then),
        stop_signals(Sig::TERM, &[100, 101]),
        "the stop signal, and no second STOPPING=1"
    );
    assert_eq!(cluster.next_deadline(), Some(then + 5000 * MS));
    cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, then);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), false, then);
    assert_eq!(actions, [Action::Exit(0)]);
}

#[test]
fn a_second_stop_signal_ends_the_delay_and_a_copy_of_the_first_does_not() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    cluster.on_signal(Sig::TERM, t0);
    // A wrapper's copy of the same TERM is the same request.
    assert!(cluster.on_signal(Sig::TERM, t0 + 100 * MS).is_empty());
    // A second request: the workers get the signal that began the stop, now.
    assert_eq!(
        cluster.on_signal(Sig::INT, t0 + 200 * MS),
        stop_signals(Sig::TERM, &[100, 101])
    );
    assert_eq!(cluster.next_deadline(), Some(t0 + 5200 * MS));
    // The INT's own copy is the same request; a third request kills.
    assert!(cluster.on_signal(Sig::INT, t0 + 300 * MS).is_empty());
    assert_eq!(
        cluster.on_signal(Sig::TERM, t0 + 400 * MS),
        [Action::KillAll {
            groups: vec![100, 101]
        }]
    );
}

#[test]
fn the_same_signal_after_the_repeat_window_ends_the_delay() {
    let t0 = Instant::now();
    let policy = Policy {
        stop_delay: 30_000 * MS,
        ..policy()
    };
    let mut cluster = running(policy, 1, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert_eq!(
        cluster.on_signal(Sig::TERM, t0 + stop::REPEAT_WINDOW),
        stop_signals(Sig::TERM, &[100])
    );
}

#[test]
fn nothing_starts_during_the_delay_and_changes_are_refused() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    assert!(cluster.request_stop(t0).len() == 1, "ctl stop delays too");
    // (A second ctl stop would end the delay: see the next test.)
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Exited(3)), false, t0 + MS);
    assert!(spawned_ids(&actions).is_empty(), "{actions:?}");
    assert!(cluster.request_reload(Origin::Control, t0 + MS).is_err());
    assert!(cluster.on_signal(Sig::HUP, t0 + MS).is_empty());
    assert!(cluster.on_signal(Sig::TTIN, t0 + MS).is_empty());
    assert_eq!(cluster.next_deadline(), Some(t0 + 1000 * MS));
    assert_eq!(
        cluster.on_timer(t0 + 1000 * MS),
        stop_signals(Sig::TERM, &[101])
    );
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), false, t0);
    assert_eq!(
        actions,
        [Action::Exit(3)],
        "slot 0 ended with 3 during the delay"
    );
}

#[test]
fn a_reload_under_way_is_cancelled_and_its_new_workers_stopped() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    let actions = cluster.on_signal(Sig::TERM, t0 + MS);
    assert!(actions.contains(&stop_signal(200)), "{actions:?}");
    assert!(!actions.contains(&stop_signal(100)), "{actions:?}");
    check_invariants(&cluster);
}

#[test]
fn every_worker_ending_during_the_delay_ends_it_and_the_cluster() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    cluster.on_signal(Sig::TERM, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), false, t0 + MS);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), false, t0 + MS);
    assert_eq!(actions.last(), Some(&Action::Exit(0)), "{actions:?}");
}

#[test]
fn a_worker_already_stopping_keeps_its_kill_deadline_through_the_delay() {
    // A reload's new worker is stopped when the delay begins (and one that ignores the signal
    // must still be killed after --kill-timeout, not after the whole delay).
    let t0 = Instant::now();
    let policy = Policy {
        stop_delay: 30_000 * MS,
        ..policy()
    };
    let mut cluster = running(policy, 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    let actions = cluster.on_signal(Sig::TERM, t0 + MS);
    assert!(actions.contains(&stop_signal(200)), "{actions:?}");
    let kill_at = t0 + MS + 5000 * MS;
    assert_eq!(
        cluster.next_deadline(),
        Some(kill_at),
        "--kill-timeout, not the delay"
    );
    let actions = cluster.on_timer(kill_at);
    assert!(
        actions.contains(&Action::SignalGroup {
            pgid: 200,
            signal: Sig::KILL
        }),
        "{actions:?}"
    );
    assert!(
        !actions.contains(&stop_signal(100)),
        "the others serve on: {actions:?}"
    );
    assert_eq!(
        cluster.next_deadline(),
        Some(t0 + 30_001 * MS),
        "then the delay's end"
    );
    check_invariants(&cluster);
}

#[test]
fn a_second_ctl_stop_ends_the_delay() {
    let t0 = Instant::now();
    let mut cluster = running(delayed(), 2, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert_eq!(
        cluster.request_stop(t0 + 10 * MS),
        stop_signals(Sig::TERM, &[100, 101]),
        "the workers get the stop signal now"
    );
    assert!(
        cluster.request_stop(t0 + 20 * MS).is_empty(),
        "then a stop under way goes on"
    );
}
