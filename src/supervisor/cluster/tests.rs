//! The cluster's decisions on a synthetic clock: no process is started. The helpers carry out
//! `Spawn` actions as the loop does (only while `is_current`), so the tests see what a real run
//! would start.

use super::*;
use crate::config::policy::{ReadyMode, RestartMode};
use crate::config::validated::CrashLimit;
use crate::worker_io::notify::Watchdog;

mod exit_policy;
mod restart_count;
mod stop_delay;

const MS: Duration = Duration::from_millis(1);

fn policy() -> Policy {
    Policy {
        restart: RestartMode::Always,
        restart_delay: 100 * MS,
        restart_max_delay: 400 * MS,
        crash_limit: None,
        min_uptime: 1000 * MS,
        ready: ReadyMode::Started,
        ready_timeout: 3000 * MS,
        reload_batch: 1,
        stop_signal: Sig::TERM,
        kill_timeout: 5000 * MS,
        steered: false,
        watchdog: None,
        max_memory: None,
        max_age: None,
        stop_delay: Duration::ZERO,
        exit_on: crate::config::policy::ExitOn::GiveUp,
        critical: Vec::new(),
    }
}

fn steered_policy() -> Policy {
    Policy {
        steered: true,
        ..policy()
    }
}

fn notify_policy() -> Policy {
    Policy {
        ready: ReadyMode::Notify,
        ..policy()
    }
}

/// A cluster whose slots all run and are ready, with pids 100, 101, ...
fn running(policy: Policy, workers: u32, now: Instant) -> Cluster {
    let mut cluster = starting(policy, workers, now);
    for index in 0..cluster.slots.len() {
        if let Occupant::Worker(worker) = &mut cluster.slots[index].occupant {
            assert!(worker.become_ready(now));
            cluster.ready += 1;
        }
    }
    cluster.announced_ready = true;
    cluster
}

/// A cluster whose workers were all spawned at `now`, not ready yet.
fn starting(policy: Policy, workers: u32, now: Instant) -> Cluster {
    let mut cluster = Cluster::new(policy, workers);
    let actions = cluster.start(now);
    assert_eq!(spawned_ids(&actions).len(), workers as usize);
    for ticket in tickets(&actions) {
        cluster.spawned(ticket, 100 + ticket.identity.id as i32, now);
    }
    cluster
}

fn crash_limited(max_restarts: u32, window: Duration) -> Policy {
    Policy {
        crash_limit: Some(CrashLimit {
            max_restarts,
            window,
        }),
        ..policy()
    }
}

fn exit(pid: i32, status: ProcessStatus) -> Vec<Exit> {
    vec![Exit {
        pid,
        status,
        cpu: Duration::ZERO,
        oom_killed: false,
    }]
}

fn tickets(actions: &[Action]) -> Vec<Ticket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn(ticket) => Some(*ticket),
            _ => None,
        })
        .collect()
}

fn spawned_ids(actions: &[Action]) -> Vec<u32> {
    tickets(actions).iter().map(|t| t.identity.id).collect()
}

/// (slot, generation) of each spawn decided.
fn spawns(actions: &[Action]) -> Vec<(u32, u32)> {
    tickets(actions)
        .iter()
        .map(|t| (t.identity.id, t.identity.generation))
        .collect()
}

/// The actions that are not spawns.
fn others(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Spawn(_)))
        .cloned()
        .collect()
}

/// Carries out the one spawn among `actions` as the loop would, as `pid`.
fn spawn_one(cluster: &mut Cluster, actions: &[Action], pid: i32, now: Instant) -> Ticket {
    let found = tickets(actions);
    assert_eq!(found.len(), 1, "one spawn expected: {actions:?}");
    assert!(cluster.is_current(&found[0]));
    assert!(cluster.spawned(found[0], pid, now).is_empty());
    found[0]
}

fn stop_signal(pgid: i32) -> Action {
    Action::SignalGroup {
        pgid,
        signal: Sig::TERM,
    }
}

fn ready_message() -> Message {
    Message {
        ready: true,
        ..Message::default()
    }
}

fn reloading(generation: u32) -> Action {
    Action::NotifyReloading(format!("reloading to generation {generation}"))
}

/// Runs the clock to the pending respawn of slot `id`, checks it, records it as `pid`.
fn respawn_due(cluster: &mut Cluster, id: u32, pid: i32) -> Instant {
    let due = cluster.next_deadline().expect("a respawn is pending");
    let actions = cluster.on_timer(due);
    assert_eq!(spawned_ids(&actions), [id]);
    spawn_one(cluster, &actions, pid, due);
    due
}

/// Every invariant the module promises, checked after a step of a test.
fn check_invariants(cluster: &Cluster) {
    check_invariants_after(cluster, "");
}

fn check_invariants_after(cluster: &Cluster, steps: &str) {
    let n = cluster.workers();
    let retired = cluster
        .slots
        .iter()
        .filter(|s| s.occupant == Occupant::Retired)
        .count();
    assert_eq!(
        cluster.retired, retired,
        "{steps}: the count of retired slots"
    );
    for slot in cluster
        .slots
        .iter()
        .filter(|s| s.occupant == Occupant::Retired)
    {
        assert!(
            slot.replacement.is_none(),
            "{steps}: retired slot {} has a replacement",
            slot.id
        );
    }
    let alive = cluster.places.len() + cluster.spawning;
    if cluster.reload.is_some() && cluster.spawning > 0 {
        // Spawns are decided only within the bound (a scale-down may lower N afterwards).
        let k = cluster.policy.reload_batch as usize;
        assert!(
            alive <= n + k,
            "{steps}: {alive} alive with N = {n}, K = {k}"
        );
    }
    if !cluster.is_running() {
        assert_eq!(cluster.spawning, 0, "nothing is spawned once stopping");
    } else {
        for slot in &cluster.slots {
            if let Occupant::Done = slot.occupant {
                assert!(
                    slot.given_up
                        || (slot.last_end.is_some()
                            && cluster.policy.restart != RestartMode::Always),
                    "slot {} left empty while running",
                    slot.id
                );
            }
        }
    }
    let ready = cluster
        .slots
        .iter()
        .filter(|s| matches!(s.occupant, Occupant::Worker(w) if w.is_ready()))
        .count();
    assert_eq!(cluster.ready, ready, "the count of ready slots");
    let waiting = cluster
        .slots
        .iter()
        .filter(|s| matches!(s.occupant, Occupant::Waiting { .. }))
        .count();
    assert_eq!(cluster.waiting, waiting, "the count of waiting slots");
    let records = cluster
        .slots
        .iter()
        .flat_map(|s| {
            let own = match s.occupant {
                Occupant::Worker(w) => Some(w),
                _ => None,
            };
            [own, s.replacement]
        })
        .flatten()
        .filter(|w| w.pid().is_some())
        .count()
        + cluster.leaving.len();
    assert_eq!(
        records,
        cluster.places.len(),
        "every process has one record"
    );
}

// ----- start, respawn, backoff -----

#[test]
fn start_spawns_every_slot_with_its_identity() {
    let mut cluster = Cluster::new(policy(), 3);
    let actions = cluster.start(Instant::now());
    let identities: Vec<WorkerIdentity> = tickets(&actions).iter().map(|t| t.identity).collect();
    let expected: Vec<WorkerIdentity> = (0..3)
        .map(|id| WorkerIdentity {
            id,
            count: 3,
            generation: 0,
        })
        .collect();
    assert_eq!(identities, expected);
    assert!(tickets(&actions).iter().all(|t| t.role == Role::Slot));
}

#[test]
fn a_large_start_is_spawned_in_batches_so_signals_are_handled_between_them() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(policy(), 100);
    let first = cluster.start(t0);
    assert_eq!(first.len(), SPAWN_BATCH);
    for ticket in tickets(&first) {
        cluster.spawned(ticket, 1000 + ticket.identity.id as i32, t0);
    }
    assert_eq!(cluster.next_deadline(), Some(t0), "the rest is due at once");
    // A TERM between two batches: the rest is never spawned.
    cluster.on_signal(Sig::TERM, t0);
    assert!(spawned_ids(&cluster.on_timer(t0)).is_empty());
    check_invariants(&cluster);
}

#[test]
fn nothing_wakes_the_supervisor_while_all_is_well() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 4, t0);
    assert_eq!(cluster.next_deadline(), None);
}

#[test]
fn early_deaths_back_off_doubling_up_to_the_maximum() {
    let mut now = Instant::now();
    let mut cluster = running(policy(), 1, now);
    let mut pid = 100;
    let mut delays = Vec::new();
    for _ in 0..5 {
        now += 10 * MS;
        assert!(
            cluster
                .on_reaped(&exit(pid, ProcessStatus::Exited(1)), false, now)
                .is_empty()
        );
        let due = cluster.next_deadline().unwrap();
        delays.push(due - now);
        assert!(cluster.on_timer(due - MS).is_empty(), "not before its time");
        pid += 1;
        now = respawn_due(&mut cluster, 0, pid);
    }
    assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 400 * MS, 400 * MS]);
}

#[test]
fn a_healthy_worker_is_replaced_at_once_and_resets_the_backoff() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), false, t0 + 10 * MS);
    let t1 = respawn_due(&mut cluster, 0, 101);
    let t2 = t1 + 2000 * MS; // ran longer than --min-uptime
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), false, t2);
    assert_eq!(cluster.next_deadline(), Some(t2));
    assert_eq!(spawned_ids(&cluster.on_timer(t2)), [0]);
    assert_eq!(cluster.slots[0].early_deaths, 0);
}

#[test]
fn a_crash_loop_stops_the_others_and_exits_with_the_crashing_status() {
    let mut now = Instant::now();
    let mut cluster = running(crash_limited(1, 60_000 * MS), 2, now);
    now += MS;
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(3)), true, now);
    now = respawn_due(&mut cluster, 1, 102) + MS;
    let actions = cluster.on_reaped(&exit(102, ProcessStatus::Exited(3)), true, now);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, now);
    assert_eq!(actions, [Action::Exit(3)]);
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let mut now = Instant::now();
    let mut cluster = running(crash_limited(1, 1000 * MS), 1, now);
    for pid in 100..105 {
        now += 2000 * MS; // each crash far from the previous one
        let actions = cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), false, now);
        assert!(actions.is_empty(), "gave up at pid {pid}: {actions:?}");
        now = respawn_due(&mut cluster, 0, pid + 1);
    }
}

#[test]
fn a_failed_spawn_backs_off_like_an_early_death() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(policy(), 1);
    let actions = cluster.start(t0);
    let ticket = tickets(&actions)[0];
    assert!(
        cluster
            .spawn_failed(ticket, ProcessStatus::Exited(127), t0)
            .is_empty()
    );
    assert_eq!(cluster.next_deadline(), Some(t0 + 100 * MS));
    check_invariants(&cluster);
}

// ----- stopping and the exit status -----

#[test]
fn a_graceful_stop_signals_every_group_and_exits_when_all_are_gone() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::INT, t0);
    assert_eq!(
        actions,
        [
            Action::SignalGroup {
                pgid: 100,
                signal: Sig::INT
            },
            Action::SignalGroup {
                pgid: 101,
                signal: Sig::INT
            },
            Action::SignalOrphans {
                signal: Sig::INT,
                workers: vec![100, 101]
            },
            Action::NotifyManager("STOPPING=1\nSTATUS=stopping (SIGINT)".to_string()),
        ]
    );
    assert_eq!(cluster.next_deadline(), Some(t0 + 5000 * MS));
    assert!(
        cluster
            .on_reaped(&exit(100, ProcessStatus::Killed(Sig::INT)), true, t0)
            .is_empty()
    );
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), false, t0);
    assert_eq!(actions, [Action::Exit(0)]);
}

#[test]
fn the_stop_waits_for_processes_the_workers_left_behind() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    cluster.on_signal(Sig::TERM, t0);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
    assert_eq!(
        actions,
        [Action::SignalOrphans {
            signal: Sig::TERM,
            workers: vec![]
        }]
    );
    let actions = cluster.on_timer(t0 + 5000 * MS);
    assert_eq!(actions, [Action::KillAll { groups: vec![] }]);
    let actions = cluster.on_reaped(&exit(555, ProcessStatus::Killed(Sig::KILL)), false, t0);
    assert_eq!(
        actions,
        [Action::Exit(0)],
        "the workers' statuses decide, not the orphans'"
    );
}

#[test]
fn the_kill_timeout_kills_what_remains_and_gives_137() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    cluster.on_signal(Sig::TERM, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
    assert!(cluster.on_timer(t0 + 4999 * MS).is_empty());
    let actions = cluster.on_timer(t0 + 5000 * MS);
    assert_eq!(actions, [Action::KillAll { groups: vec![101] }]);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), false, t0);
    assert_eq!(actions, [Action::Exit(137)]);
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert_eq!(
        cluster.on_signal(Sig::INT, t0),
        [Action::KillAll { groups: vec![100] }]
    );
    assert_eq!(cluster.next_deadline(), None);
}

#[test]
fn no_respawn_once_stopping() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert!(spawned_ids(&cluster.on_timer(t0 + 60_000 * MS)).is_empty());
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), false, t0);
    assert_eq!(
        actions,
        [Action::Exit(1)],
        "slot 0's last worker exited with 1"
    );
}

#[test]
fn a_spawn_decided_before_the_stop_is_never_carried_out() {
    // The loop carries out an event's actions in order: a respawn decided by one exit, then a
    // crash-loop give-up decided by the next, in the same batch.
    let t0 = Instant::now();
    let mut cluster = running(crash_limited(1, 60_000 * MS), 2, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0 + 2000 * MS);
    let t1 = t0 + 2000 * MS;
    let respawn = cluster.on_timer(t1);
    let ticket = tickets(&respawn)[0];
    assert!(cluster.is_current(&ticket));
    cluster.on_signal(Sig::TERM, t1);
    assert!(!cluster.is_current(&ticket), "the stop made it stale");
    // Had it been started anyway, it is stopped at once and tracked until reaped.
    let actions = cluster.spawned(ticket, 300, t1);
    assert_eq!(actions, [stop_signal(300)]);
    assert!(cluster.worker_pids().contains(&300));
    check_invariants(&cluster);
}

#[test]
fn with_restart_never_the_cluster_ends_with_the_lowest_failing_status() {
    let t0 = Instant::now();
    let never = Policy {
        restart: RestartMode::Never,
        ..policy()
    };
    let mut cluster = running(never, 3, t0);
    cluster.on_reaped(&exit(102, ProcessStatus::Exited(5)), true, t0);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Exited(3)), false, t0);
    assert_eq!(
        actions,
        [
            Action::SignalOrphans {
                signal: Sig::TERM,
                workers: vec![]
            },
            Action::NotifyManager("STOPPING=1\nSTATUS=stopping (SIGTERM)".to_string()),
            Action::Exit(3)
        ]
    );
}

#[test]
fn a_worker_stopped_for_missing_its_ready_timeout_is_a_failure_even_if_it_dies_of_term() {
    let t0 = Instant::now();
    let never = Policy {
        restart: RestartMode::Never,
        ..notify_policy()
    };
    let mut cluster = starting(never, 1, t0);
    let t1 = t0 + 3000 * MS;
    assert_eq!(cluster.on_timer(t1), [stop_signal(100)]);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, t1);
    assert_eq!(actions.last(), Some(&Action::Exit(143)), "{actions:?}");
}

#[test]
fn on_failure_follows_systemds_clean_exits() {
    for (status, restarts) in [
        (ProcessStatus::Exited(0), false),
        (ProcessStatus::Exited(1), true),
        (ProcessStatus::Killed(Sig::TERM), false),
        (ProcessStatus::Killed(Sig::INT), false),
        (ProcessStatus::Killed(Sig::KILL), true),
    ] {
        assert_eq!(
            restart::restarts_after(RestartMode::OnFailure, status),
            restarts,
            "{status}"
        );
    }
}

#[test]
fn an_enormous_kill_timeout_does_not_overflow_the_clock() {
    let t0 = Instant::now();
    let huge = Policy {
        kill_timeout: Duration::MAX,
        ..policy()
    };
    let mut cluster = running(huge, 1, t0);
    cluster.on_signal(Sig::TERM, t0);
    assert!(cluster.next_deadline().unwrap() > t0 + Duration::from_secs(86_400 * 365 * 100));
}

// ----- scaling and forwarding -----

#[test]
fn scaling_down_stops_the_highest_slot_and_kills_it_after_the_timeout() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 3, t0);
    assert_eq!(
        cluster.on_signal(Sig::TTOU, t0),
        [stop_signal(102), Action::ReleaseSlot(2)]
    );
    assert_eq!(cluster.next_deadline(), Some(t0 + 5000 * MS));
    assert_eq!(
        cluster.on_timer(t0 + 5000 * MS),
        [Action::SignalGroup {
            pgid: 102,
            signal: Sig::KILL
        }]
    );
    cluster.on_reaped(&exit(102, ProcessStatus::Killed(Sig::KILL)), true, t0);
    assert_eq!(cluster.worker_pids(), [100, 101]);
    let actions = cluster.on_signal(Sig::TTIN, t0);
    assert_eq!(spawns(&actions), [(2, 0)]);
    assert_eq!(tickets(&actions)[0].identity.count, 3);
    check_invariants(&cluster);
}

#[test]
fn the_last_worker_is_never_scaled_away() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    assert!(cluster.on_signal(Sig::TTOU, t0).is_empty());
    assert_eq!(cluster.worker_pids(), [100]);
}

#[test]
fn other_signals_are_forwarded_to_every_worker() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let usr1 = Sig::from_number(libc::SIGUSR1).unwrap();
    assert_eq!(
        cluster.on_signal(usr1, t0),
        [
            Action::SignalGroup {
                pgid: 100,
                signal: usr1
            },
            Action::SignalGroup {
                pgid: 101,
                signal: usr1
            },
        ]
    );
    let actions = cluster.on_signal(Sig::TSTP, t0);
    assert_eq!(actions.last(), Some(&Action::SuspendSelf));
}

// ----- readiness -----

#[test]
fn started_workers_are_ready_after_min_uptime_and_the_manager_hears_it_once() {
    let t0 = Instant::now();
    let mut cluster = starting(policy(), 2, t0);
    assert_eq!(cluster.next_deadline(), Some(t0 + 1000 * MS));
    assert!(cluster.on_timer(t0 + 999 * MS).is_empty());
    let actions = cluster.on_timer(t0 + 1000 * MS);
    assert_eq!(
        actions,
        [Action::NotifyManager(
            "READY=1\nSTATUS=2 workers ready".to_string()
        )]
    );
    assert_eq!(cluster.next_deadline(), None, "no timer once all are ready");
}

#[test]
fn notify_workers_are_ready_on_ready_1_only() {
    let t0 = Instant::now();
    let mut cluster = starting(notify_policy(), 1, t0);
    let status = Message {
        status: Some("loading".into()),
        ..Message::default()
    };
    assert!(cluster.on_notified(100, &status, t0).is_empty());
    assert_eq!(
        cluster.on_notified(100, &ready_message(), t0),
        [Action::NotifyManager(
            "READY=1\nSTATUS=1 worker ready".to_string()
        )]
    );
    assert!(
        cluster.on_notified(100, &ready_message(), t0).is_empty(),
        "announced once"
    );
    assert_eq!(
        cluster.next_deadline(),
        None,
        "the ready timeout no longer wakes anything"
    );
}

#[test]
fn a_worker_that_never_becomes_ready_is_stopped_and_restarted_as_a_failed_start() {
    let t0 = Instant::now();
    let mut cluster = starting(notify_policy(), 1, t0);
    assert_eq!(cluster.next_deadline(), Some(t0 + 3000 * MS));
    let t1 = t0 + 3000 * MS;
    assert_eq!(cluster.on_timer(t1), [stop_signal(100)]);
    // It dies of the stop signal: still a failure, restarted with backoff.
    cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), false, t1);
    assert_eq!(cluster.next_deadline(), Some(t1 + 100 * MS));
}

#[test]
fn a_slow_listening_probe_never_starves_the_ready_timeout() {
    let t0 = Instant::now();
    let listening = Policy {
        ready: ReadyMode::Listening(Some(3000)),
        ..policy()
    };
    let mut cluster = starting(listening, 1, t0);
    let probe = Action::ProbeListening {
        pgid: 100,
        port: Some(3000),
    };
    assert_eq!(cluster.on_timer(t0), std::slice::from_ref(&probe));
    // Each probe takes longer than the interval: the next is scheduled from its answer.
    let mut now = t0;
    while now < t0 + 3000 * MS {
        now += 150 * MS;
        assert!(cluster.on_probed(100, false, now).is_empty());
        assert_eq!(cluster.next_deadline(), Some(now + 100 * MS));
        now += 100 * MS;
        let actions = cluster.on_timer(now);
        if now >= t0 + 3000 * MS {
            assert_eq!(actions, [stop_signal(100)]);
            return;
        }
        assert_eq!(actions, std::slice::from_ref(&probe));
    }
    panic!("the ready timeout never fired");
}

// ----- reload -----

#[test]
fn a_reload_starts_each_new_worker_before_stopping_the_old_one() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    assert_eq!(others(&actions), [reloading(1)]);
    assert_eq!(spawns(&actions), [(0, 1)]);
    spawn_one(&mut cluster, &actions, 200, t0);
    assert_eq!(cluster.worker_pids().len(), 3, "N + K alive");
    // Ready after --min-uptime: only then is the old worker stopped.
    assert!(cluster.on_timer(t0 + 999 * MS).is_empty());
    let t1 = t0 + 1000 * MS;
    assert_eq!(cluster.on_timer(t1), [stop_signal(100)]);
    // The next slot waits until the old worker is gone: never more than N + K alive.
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, t1);
    assert_eq!(spawns(&actions), [(1, 1)]);
    spawn_one(&mut cluster, &actions, 201, t1);
    let t2 = t1 + 1000 * MS;
    assert_eq!(cluster.on_timer(t2), [stop_signal(101)]);
    assert_eq!(
        cluster.on_reaped(&exit(101, ProcessStatus::Exited(0)), true, t2),
        [Action::NotifyManager(
            "READY=1\nSTATUS=2 workers of generation 1".to_string()
        )]
    );
    assert_eq!(cluster.worker_pids(), [200, 201]);
    // The stopped old workers count as clean, whatever the new ones do later.
    cluster.on_signal(Sig::TERM, t2);
    cluster.on_reaped(&exit(200, ProcessStatus::Exited(0)), true, t2);
    let actions = cluster.on_reaped(&exit(201, ProcessStatus::Exited(0)), false, t2);
    assert_eq!(actions, [Action::Exit(0)]);
}

#[test]
fn a_reload_batch_of_k_starts_k_new_workers_at_once() {
    let t0 = Instant::now();
    let batch = Policy {
        reload_batch: 2,
        ..notify_policy()
    };
    let mut cluster = running(batch, 4, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    assert_eq!(spawns(&actions), [(0, 1), (1, 1)]);
    for (ticket, pid) in tickets(&actions).into_iter().zip([200, 201]) {
        cluster.spawned(ticket, pid, t0);
    }
    assert_eq!(cluster.worker_pids().len(), 6, "N + K alive");
    check_invariants(&cluster);
    // One is ready: its old worker drains, and no third new one starts until it is gone.
    let actions = cluster.on_notified(200, &ready_message(), t0 + MS);
    assert_eq!(actions, [stop_signal(100)]);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t0 + 2 * MS);
    assert_eq!(spawns(&actions), [(2, 1)]);
    check_invariants(&cluster);
}

#[test]
fn a_reap_and_a_due_timer_in_one_pass_never_spawn_one_slot_twice() {
    // With K = 2, the loop handles an exit and then the timers before it spawns anything.
    let t0 = Instant::now();
    let batch = Policy {
        reload_batch: 2,
        ..policy()
    };
    let mut cluster = running(batch, 3, t0);
    let mut pending = cluster.on_signal(Sig::HUP, t0);
    let t1 = t0 + 1000 * MS;
    let first = tickets(&pending);
    for (ticket, pid) in first.iter().zip([200, 201]) {
        cluster.spawned(*ticket, pid, t0);
    }
    pending.clear();
    // Both new workers are ready at t1: both old ones are stopped; one is reaped in the same pass.
    pending.extend(cluster.on_timer(t1));
    pending.extend(cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t1));
    pending.extend(cluster.on_timer(t1));
    let decided = spawns(&pending);
    assert_eq!(decided, [(2, 1)], "{pending:?}");
    check_invariants(&cluster);
}

#[test]
fn a_new_worker_that_exits_abandons_the_reload_and_the_old_one_keeps_serving() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    let actions = cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, t0 + MS);
    assert!(
        matches!(actions.as_slice(), [Action::NotifyManager(text)] if text.starts_with("READY=1\nSTATUS=reload to generation 1 failed")),
        "{actions:?}"
    );
    assert_eq!(cluster.worker_pids(), [100, 101]);
    assert_eq!(
        cluster.next_deadline(),
        None,
        "no respawn of the failed release"
    );
    // The next SIGHUP tries again, with the next generation.
    let actions = cluster.on_signal(Sig::HUP, t0 + 2 * MS);
    assert_eq!(others(&actions), [reloading(2)]);
    assert_eq!(spawns(&actions), [(0, 2)]);
}

#[test]
fn a_hup_during_a_reload_retargets_it_without_piling_up_workers() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    // The generation-1 worker is not ready: it is stopped, and generation 2 waits for it.
    assert_eq!(
        cluster.on_signal(Sig::HUP, t0 + MS),
        [stop_signal(200), reloading(2)]
    );
    let actions = cluster.on_reaped(
        &exit(200, ProcessStatus::Killed(Sig::TERM)),
        true,
        t0 + 2 * MS,
    );
    assert_eq!(spawns(&actions), [(0, 2)]);
}

#[test]
fn a_new_worker_that_never_notifies_abandons_the_reload() {
    let t0 = Instant::now();
    let mut cluster = running(notify_policy(), 1, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    assert_eq!(cluster.next_deadline(), Some(t0 + 3000 * MS));
    let actions = cluster.on_timer(t0 + 3000 * MS);
    assert_eq!(actions[0], stop_signal(200));
    assert_eq!(
        cluster.worker_pids(),
        [100, 200],
        "the new one is leaving, the old one serves"
    );
}

#[test]
fn a_replacement_that_could_not_be_spawned_abandons_the_reload() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    let ticket = tickets(&actions)[0];
    let actions = cluster.spawn_failed(ticket, ProcessStatus::Exited(127), t0);
    assert!(
        matches!(actions.as_slice(), [Action::NotifyManager(text)] if text.contains("failed")),
        "{actions:?}"
    );
    assert_eq!(cluster.worker_pids(), [100, 101]);
    check_invariants(&cluster);
}

// ----- interleavings during a reload: the old worker dies, and then... -----

/// `-n 1 --ready notify`, HUP, the replacement (pid 200) started, then the old worker killed.
fn reload_whose_old_worker_died(now: Instant) -> Cluster {
    let mut cluster = running(notify_policy(), 1, now);
    let actions = cluster.on_signal(Sig::HUP, now);
    spawn_one(&mut cluster, &actions, 200, now);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::KILL)), true, now);
    assert!(
        spawned_ids(&actions).is_empty(),
        "the replacement takes over"
    );
    // Past the respawn's backoff, within the replacement's --ready-timeout.
    assert!(spawned_ids(&cluster.on_timer(now + 2000 * MS)).is_empty());
    check_invariants(&cluster);
    cluster
}

#[test]
fn old_worker_dies_then_the_replacement_becomes_ready_and_takes_the_slot() {
    let t0 = Instant::now();
    let mut cluster = reload_whose_old_worker_died(t0);
    let actions = cluster.on_notified(200, &ready_message(), t0 + MS);
    assert!(
        matches!(actions.as_slice(), [Action::NotifyManager(t)] if t.contains("generation 1")),
        "{actions:?}"
    );
    assert_eq!(cluster.worker_pids(), [200]);
    assert_eq!(cluster.next_deadline(), None, "no respawn of the old one");
    check_invariants(&cluster);
}

#[test]
fn old_worker_dies_then_the_replacement_exits_and_the_slot_is_respawned_at_the_old_generation() {
    let t0 = Instant::now();
    let mut cluster = reload_whose_old_worker_died(t0);
    let t1 = t0 + 60_000 * MS;
    let actions = cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), false, t1);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Exit(_))),
        "the cluster goes on: {actions:?}"
    );
    let due = cluster.next_deadline().expect("a respawn is due");
    assert!(due <= t1, "its backoff has passed already");
    let actions = cluster.on_timer(t1);
    assert_eq!(
        spawns(&actions),
        [(0, 0)],
        "the generation that last succeeded"
    );
    spawn_one(&mut cluster, &actions, 101, t1);
    check_invariants(&cluster);
}

#[test]
fn old_worker_dies_then_the_replacement_times_out_and_the_slot_is_respawned() {
    let t0 = Instant::now();
    let mut cluster = reload_whose_old_worker_died(t0);
    let actions = cluster.on_timer(t0 + 3000 * MS);
    assert!(actions.contains(&stop_signal(200)), "{actions:?}");
    assert_eq!(spawns(&actions), [(0, 0)], "its backoff has passed already");
    check_invariants(&cluster);
}

#[test]
fn old_worker_dies_then_another_hup_starts_the_newest_generation_in_the_slot() {
    let t0 = Instant::now();
    let mut cluster = reload_whose_old_worker_died(t0);
    let actions = cluster.on_signal(Sig::HUP, t0 + MS);
    // The generation-1 replacement is stopped; the slot's respawn (generation 0) may run again,
    // and generation 2 replaces it as soon as N + K allows.
    assert!(actions.contains(&stop_signal(200)), "{actions:?}");
    check_invariants(&cluster);
    let mut all = actions;
    all.extend(cluster.on_timer(t0 + MS));
    let actions = cluster.on_reaped(
        &exit(200, ProcessStatus::Killed(Sig::TERM)),
        true,
        t0 + 2 * MS,
    );
    all.extend(actions.clone());
    let decided = spawns(&all);
    assert!(decided.contains(&(0, 2)), "{decided:?}");
    check_invariants(&cluster);
}

#[test]
fn old_worker_dies_then_ttou_removes_the_slot_with_its_replacement() {
    let t0 = Instant::now();
    let mut cluster = running(notify_policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    // Slot 0 is being replaced; slot 1's old worker dies, then slot 1 is scaled away.
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(1)), true, t0);
    let actions = cluster.on_signal(Sig::TTOU, t0 + MS);
    assert!(actions.contains(&Action::ReleaseSlot(1)), "{actions:?}");
    assert_eq!(cluster.slots.len(), 1);
    assert!(spawned_ids(&cluster.on_timer(t0 + 2000 * MS)).is_empty());
    check_invariants(&cluster);
    // The reload goes on with the one slot left.
    let actions = cluster.on_notified(200, &ready_message(), t0 + 2 * MS);
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
}

#[test]
fn old_worker_dies_then_term_stops_the_replacement_and_exits() {
    let t0 = Instant::now();
    let mut cluster = reload_whose_old_worker_died(t0);
    let actions = cluster.on_signal(Sig::TERM, t0 + MS);
    assert!(actions.contains(&stop_signal(200)), "{actions:?}");
    assert!(spawned_ids(&cluster.on_timer(t0 + 60_000 * MS)).is_empty());
    let actions = cluster.on_reaped(
        &exit(200, ProcessStatus::Killed(Sig::TERM)),
        false,
        t0 + 2 * MS,
    );
    assert_eq!(
        actions,
        [Action::Exit(137)],
        "slot 0's last own worker died of SIGKILL nobody sent it"
    );
}

#[test]
fn old_worker_dies_during_a_reload_of_several_slots_and_no_slot_is_left_empty() {
    let t0 = Instant::now();
    let mut cluster = running(notify_policy(), 3, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    // Slot 2's old worker dies before its turn; then the slot-0 replacement fails.
    cluster.on_reaped(&exit(102, ProcessStatus::Exited(1)), true, t0);
    cluster.on_reaped(&exit(200, ProcessStatus::Exited(1)), true, t0 + MS);
    let actions = cluster.on_timer(t0 + 1000 * MS);
    assert_eq!(spawns(&actions), [(2, 0)]);
    spawn_one(&mut cluster, &actions, 103, t0 + 1000 * MS);
    // A later reload replaces every slot, slot 2 included.
    let actions = cluster.on_signal(Sig::HUP, t0 + 2000 * MS);
    assert_eq!(spawns(&actions), [(0, 2)]);
    check_invariants(&cluster);
}

#[test]
fn every_interleaving_of_events_during_a_reload_keeps_the_invariants() {
    // Exhaustive over short sequences: from a reload of 2 slots with K = 2, apply every sequence
    // of three events and check the invariants after each.
    use ReloadStep as Step;
    let steps = [
        Step::OldDies(0),
        Step::OldDies(1),
        Step::NewExits(0),
        Step::NewReady(0),
        Step::NewReady(1),
        Step::Timeout,
        Step::Hup,
        Step::Ttou,
        Step::Ttin,
        Step::Term,
    ];
    every_interleaving_during_a_reload(2, &steps);
}

#[test]
fn every_interleaving_of_group_scaling_during_a_reload_keeps_the_invariants() {
    // Groups retire a slot in the middle and give it back; with a crash, a reload's steps and a
    // stop in any order of three.
    use ReloadStep as Step;
    let steps = [
        Step::OldDies(1),
        Step::OldDies(2),
        Step::NewExits(1),
        Step::NewReady(0),
        Step::NewReady(1),
        Step::Timeout,
        Step::Hup,
        Step::Retire(1),
        Step::Revive(1),
        Step::Retire(0),
        Step::Term,
    ];
    every_interleaving_during_a_reload(3, &steps);
}

#[derive(Clone, Copy, Debug)]
enum ReloadStep {
    OldDies(usize),
    NewExits(usize),
    NewReady(usize),
    Timeout,
    Hup,
    Ttou,
    Ttin,
    Term,
    /// Groups: slot i's group shrinks past it.
    Retire(u32),
    /// Groups: slot i's group grows back to it (if it is retired).
    Revive(u32),
}

/// From a reload of `workers` slots with K = 2, every sequence of three of `steps`, with the
/// invariants checked after each.
fn every_interleaving_during_a_reload(workers: u32, steps: &[ReloadStep]) {
    use ReloadStep as Step;
    let batch = Policy {
        reload_batch: 2,
        ..notify_policy()
    };
    for &a in steps {
        for &b in steps {
            for &c in steps {
                let t0 = Instant::now();
                let mut cluster = running(batch.clone(), workers, t0);
                let mut next_pid = 300;
                let mut now = t0;
                let mut pending = cluster.on_signal(Sig::HUP, now);
                for step in [a, b, c] {
                    // The loop carries out what stands.
                    for ticket in tickets(&pending) {
                        if cluster.is_current(&ticket) {
                            next_pid += 1;
                            pending.extend(cluster.spawned(ticket, next_pid, now));
                        }
                    }
                    now += 10 * MS;
                    let pids = cluster.worker_pids();
                    let slot_pid = |cluster: &Cluster, index: usize, new: bool| {
                        cluster.slots.get(index).and_then(|s| {
                            if new {
                                s.replacement.and_then(|w| w.pid())
                            } else {
                                match s.occupant {
                                    Occupant::Worker(w) => w.pid(),
                                    _ => None,
                                }
                            }
                        })
                    };
                    let retired = |cluster: &Cluster, id: u32| {
                        cluster.slots[id as usize].occupant == Occupant::Retired
                    };
                    pending = match step {
                        Step::OldDies(i) => match slot_pid(&cluster, i, false) {
                            Some(pid) => cluster.on_reaped(
                                &exit(pid, ProcessStatus::Killed(Sig::KILL)),
                                true,
                                now,
                            ),
                            None => Vec::new(),
                        },
                        Step::NewExits(i) => match slot_pid(&cluster, i, true) {
                            Some(pid) => {
                                cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), true, now)
                            }
                            None => Vec::new(),
                        },
                        Step::NewReady(i) => match slot_pid(&cluster, i, true) {
                            Some(pid) => cluster.on_notified(pid, &ready_message(), now),
                            None => Vec::new(),
                        },
                        Step::Timeout => {
                            now += 3000 * MS;
                            cluster.on_timer(now)
                        }
                        Step::Hup => cluster.on_signal(Sig::HUP, now),
                        Step::Ttou => cluster.on_signal(Sig::TTOU, now),
                        Step::Ttin => cluster.on_signal(Sig::TTIN, now),
                        Step::Term => cluster.on_signal(Sig::TERM, now),
                        Step::Retire(id)
                            if cluster.accepts_changes().is_ok() && !retired(&cluster, id) =>
                        {
                            cluster.remove_slot(id, now, Origin::Control)
                        }
                        Step::Revive(id)
                            if cluster.accepts_changes().is_ok() && retired(&cluster, id) =>
                        {
                            cluster.add_slot(id, false, Origin::Control, now)
                        }
                        Step::Retire(_) | Step::Revive(_) => Vec::new(),
                    };
                    pending.extend(cluster.on_timer(now));
                    assert!(
                        !pending.iter().any(|a| matches!(a, Action::Exit(_)))
                            || matches!(step, Step::Term)
                            || pids.is_empty(),
                        "{a:?} {b:?} {c:?}: the cluster ended: {pending:?}"
                    );
                    check_invariants_after(&cluster, &format!("{a:?} {b:?} {c:?}"));
                }
            }
        }
    }
}

// ----- reports -----

#[test]
fn the_cluster_reports_what_it_decided_as_values() {
    let t0 = Instant::now();
    let mut cluster = running(crash_limited(1, 60_000 * MS), 1, t0);
    cluster.take_reports();
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(3)), true, t0 + MS);
    assert_eq!(
        cluster.take_reports(),
        [Report::Ended {
            id: 0,
            pid: Some(100),
            status: ProcessStatus::Exited(3),
            then: Then::Restarting { delay: 100 * MS }
        }]
    );
    let t1 = respawn_due(&mut cluster, 0, 101);
    assert_eq!(
        cluster.take_reports(),
        [Report::Started {
            id: 0,
            pid: 101,
            generation: None
        }]
    );
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(3)), false, t1 + MS);
    let reports = cluster.take_reports();
    assert_eq!(
        reports.first(),
        Some(&Report::Ended {
            id: 0,
            pid: Some(101),
            status: ProcessStatus::Exited(3),
            then: Then::GivingUp {
                max_restarts: 1,
                window: 60_000 * MS,
                ends_cluster: true
            }
        })
    );
    assert_eq!(reports.last(), Some(&Report::Exiting { code: 3 }));
    assert_eq!(
        reports[0].to_string(),
        "worker 0 (pid 101) exited with status 3; it needed more than 1 restart within 1m: giving up (--max-restarts, --restart-window)"
    );
    assert_eq!(reports[0].level(), log::Level::Error);
}

// ----- steering and draining (per-worker sockets) -----

#[test]
fn connections_are_steered_to_ready_slots_only_and_follow_every_change() {
    let t0 = Instant::now();
    let mut cluster = starting(steered_policy(), 3, t0);
    assert_eq!(
        cluster.take_steering(),
        None,
        "nothing ready, nothing changed"
    );
    let t1 = t0 + 1000 * MS;
    cluster.on_timer(t1); // all three ready
    assert_eq!(cluster.take_steering(), Some(vec![0, 1, 2]));
    assert_eq!(cluster.take_steering(), None, "asked once per change");
    // Worker 1 dies: its slot gets nothing until its replacement is ready.
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(1)), true, t1);
    assert_eq!(cluster.take_steering(), Some(vec![0, 2]));
    let t2 = respawn_due(&mut cluster, 1, 111);
    assert_eq!(
        cluster.take_steering(),
        None,
        "a starting worker gets nothing"
    );
    cluster.on_timer(t2 + 1000 * MS);
    assert_eq!(cluster.take_steering(), Some(vec![0, 1, 2]));
    // With none ready, every slot shares (connections wait for whichever is ready first).
    let mut none = running(steered_policy(), 2, t0);
    none.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0);
    assert_eq!(none.take_steering(), Some(vec![1]));
    none.on_reaped(&exit(101, ProcessStatus::Exited(1)), true, t0);
    assert_eq!(none.take_steering(), Some(vec![0, 1]));
    // Without per-worker sockets there is nothing to steer.
    let mut shared = running(policy(), 2, t0);
    shared.on_reaped(&exit(100, ProcessStatus::Exited(1)), true, t0);
    assert_eq!(shared.take_steering(), None);
}

#[test]
fn a_scaled_down_worker_serves_its_queue_before_it_is_stopped() {
    let t0 = Instant::now();
    let mut cluster = running(steered_policy(), 3, t0);
    cluster.take_steering();
    assert!(
        cluster.on_signal(Sig::TTOU, t0).is_empty(),
        "not stopped yet"
    );
    assert_eq!(
        cluster.take_steering(),
        Some(vec![0, 1]),
        "steered away at once"
    );
    // Its queue is looked at until it is empty and the grace has passed.
    let check = cluster.next_deadline().unwrap();
    assert_eq!(
        cluster.on_timer(check),
        [Action::CheckQueue { slot: 2, pid: 102 }]
    );
    assert!(
        cluster.on_queue(102, 3, check).is_empty(),
        "3 still waiting"
    );
    let later_check = cluster.next_deadline().unwrap();
    assert_eq!(
        cluster.on_timer(later_check),
        [Action::CheckQueue { slot: 2, pid: 102 }]
    );
    let grace = t0 + 300 * MS;
    assert_eq!(
        cluster.on_queue(102, 0, grace),
        [stop_signal(102), Action::ReleaseSlot(2)]
    );
    assert_eq!(
        cluster.next_deadline(),
        Some(grace + 5000 * MS),
        "killed if it hangs"
    );
    cluster.on_reaped(&exit(102, ProcessStatus::Exited(0)), true, grace);
    assert_eq!(cluster.worker_pids(), [100, 101]);
    check_invariants(&cluster);
}

#[test]
fn a_drain_ends_at_the_kill_timeout_and_a_stop_signals_a_draining_worker() {
    let t0 = Instant::now();
    let mut cluster = running(steered_policy(), 2, t0);
    cluster.on_signal(Sig::TTOU, t0);
    // Connections keep waiting (a worker that no longer accepts): stopped at --kill-timeout.
    let end = t0 + 5000 * MS;
    assert_eq!(
        cluster.on_queue(101, 7, end),
        [stop_signal(101), Action::ReleaseSlot(1)]
    );
    assert!(matches!(
        cluster.take_reports().last(),
        Some(Report::Drained { waiting: 7, .. })
    ));
    // A stop of the cluster during a drain signals the draining worker too.
    let mut other = running(steered_policy(), 2, t0);
    other.on_signal(Sig::TTOU, t0);
    let actions = other.on_signal(Sig::TERM, t0 + MS);
    assert!(actions.contains(&stop_signal(101)), "{actions:?}");
    assert!(actions.contains(&stop_signal(100)), "{actions:?}");
}

#[test]
fn a_slot_brought_back_during_a_drain_keeps_its_sockets() {
    let t0 = Instant::now();
    let mut cluster = running(steered_policy(), 2, t0);
    cluster.on_signal(Sig::TTOU, t0);
    let actions = cluster.on_signal(Sig::TTIN, t0 + MS);
    assert_eq!(
        spawns(&actions),
        [(1, 0)],
        "slot 1 again, on its own socket"
    );
    let grace = t0 + 300 * MS;
    assert_eq!(
        cluster.on_queue(101, 0, grace),
        [stop_signal(101)],
        "the old worker stops; the slot's sockets stay for the new one"
    );
}

// ----- watchdog -----

#[test]
fn a_ready_worker_that_stops_pinging_its_watchdog_gets_sigabrt_and_is_restarted_as_a_failure() {
    let t0 = Instant::now();
    let watched = Policy {
        watchdog: Some(1000 * MS),
        ..notify_policy()
    };
    let mut cluster = starting(watched, 2, t0);
    for pid in [100, 101] {
        cluster.on_notified(pid, &ready_message(), t0);
    }
    let ping = Message {
        watchdog: Some(Watchdog::Ping),
        ..Message::default()
    };
    // Worker 0 pings every 500 ms; worker 1 never does.
    let mut now = t0;
    let mut actions = Vec::new();
    while now < t0 + 1500 * MS {
        now += 500 * MS;
        cluster.on_notified(100, &ping, now);
        actions.extend(cluster.on_timer(now));
    }
    assert_eq!(
        actions,
        [Action::SignalGroup {
            pgid: 101,
            signal: Sig::ABRT
        }]
    );
    assert!(matches!(
        cluster.take_reports().last(),
        Some(Report::WatchdogFailed {
            id: 1,
            triggered: false,
            ..
        })
    ));
    // It dies of the SIGABRT: a failure, restarted with backoff.
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::ABRT)), true, now);
    assert_eq!(cluster.next_deadline(), Some(now + 100 * MS));
    // WATCHDOG=trigger fails at once.
    let trigger = Message {
        watchdog: Some(Watchdog::Trigger),
        ..Message::default()
    };
    assert_eq!(
        cluster.on_notified(100, &trigger, now),
        [Action::SignalGroup {
            pgid: 100,
            signal: Sig::ABRT
        }]
    );
    check_invariants(&cluster);
}

#[test]
fn a_million_pings_leave_one_watchdog_deadline_and_watchdog_usec_is_clamped() {
    let t0 = Instant::now();
    let watched = Policy {
        watchdog: Some(1000 * MS),
        ..notify_policy()
    };
    let mut cluster = starting(watched, 2, t0);
    for pid in [100, 101] {
        cluster.on_notified(pid, &ready_message(), t0);
    }
    let baseline = cluster.timers.len();
    let mut now = t0;
    for n in 0..1_000_000u64 {
        now += Duration::from_micros(1);
        // Ever longer intervals (each deadline later than the last), then shorter ones (each
        // earlier): neither may leave an entry behind.
        let usec = if n < 500_000 {
            1_000_000_000_000 + n
        } else {
            2_000_000 - n
        };
        let watchdog = if n % 2 == 0 {
            Watchdog::Interval(usec)
        } else {
            Watchdog::Ping
        };
        let message = Message {
            watchdog: Some(watchdog),
            ..Message::default()
        };
        assert!(cluster.on_notified(100, &message, now).is_empty());
    }
    assert!(
        cluster.timers.len() <= baseline,
        "{} timers after the pings, {baseline} before",
        cluster.timers.len()
    );
    // The last WATCHDOG_USEC= said 1000002 µs: the deadline is that far from the last ping.
    let interval = Duration::from_micros(1_000_002);
    assert_eq!(cluster.watchdogs[&100], (now + interval, interval));
    let huge = Message {
        watchdog: Some(Watchdog::Interval(u64::MAX)),
        ..Message::default()
    };
    cluster.on_notified(100, &huge, now);
    assert_eq!(cluster.watchdogs[&100].1, watchdog::INTERVAL_MAX);
    let tiny = Message {
        watchdog: Some(Watchdog::Interval(0)),
        ..Message::default()
    };
    cluster.on_notified(101, &tiny, now);
    assert_eq!(cluster.watchdogs[&101].1, watchdog::INTERVAL_MIN);
    // Worker 1 misses its 1 ms at once; worker 0 is left alone for a day.
    assert_eq!(
        cluster.on_timer(now + 1000 * MS),
        [Action::SignalGroup {
            pgid: 101,
            signal: Sig::ABRT
        }]
    );
    assert_eq!(
        cluster.next_deadline(),
        Some(now + 1000 * MS + 5000 * MS),
        "101's kill"
    );
    cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::KILL)), true, now);
    assert!(!cluster.watchdogs.contains_key(&100));
    check_invariants(&cluster);
}

#[test]
fn without_a_watchdog_nothing_is_timed_once_ready() {
    let t0 = Instant::now();
    let mut cluster = starting(notify_policy(), 1, t0);
    cluster.on_notified(100, &ready_message(), t0);
    assert_eq!(cluster.next_deadline(), None);
}

// ----- max memory -----

fn memory_policy() -> Policy {
    Policy {
        max_memory: Some((150 << 20, 1000 * MS)),
        ..policy()
    }
}

#[test]
fn a_worker_over_max_memory_three_samples_in_a_row_is_replaced_new_one_first() {
    let t0 = Instant::now();
    let mut cluster = running(memory_policy(), 2, t0);
    let mut now = t0;
    let mut actions = Vec::new();
    for sample in 0..3 {
        now += 1000 * MS;
        assert_eq!(
            cluster.on_timer(now),
            [Action::SampleMemory {
                pids: vec![100, 101]
            }],
            "sample {sample}"
        );
        // Worker 1 is over the limit every time, worker 0 never.
        actions = cluster.on_memory(&[(100, 10 << 20), (101, 300 << 20)], now);
        if sample < 2 {
            assert!(actions.is_empty(), "not before 3 samples: {actions:?}");
        }
    }
    assert_eq!(spawns(&actions), [(1, 0)]);
    assert_eq!(tickets(&actions)[0].role, Role::Replacement);
    spawn_one(&mut cluster, &actions, 201, now);
    // Ready after --min-uptime: the old worker 1 is stopped, worker 0 untouched.
    let ready = now + 1000 * MS;
    let actions = cluster.on_timer(ready);
    assert!(actions.contains(&stop_signal(101)), "{actions:?}");
    assert!(!actions.contains(&stop_signal(100)), "{actions:?}");
    check_invariants(&cluster);
}

#[test]
fn over_max_memory_with_no_room_for_both_the_worker_is_stopped_first() {
    let t0 = Instant::now();
    let mut cluster = running(memory_policy(), 2, t0);
    // A scaled-down worker still stopping takes the one spare place of N + K.
    assert_eq!(
        cluster.on_signal(Sig::TTOU, t0),
        [stop_signal(101), Action::ReleaseSlot(1)]
    );
    let mut now = t0;
    let mut actions = Vec::new();
    for _ in 0..3 {
        now += 1000 * MS;
        cluster.on_timer(now);
        actions = cluster.on_memory(&[(100, 300 << 20)], now);
    }
    assert_eq!(actions, [stop_signal(100)], "stopped first");
    assert_eq!(spawned_ids(&cluster.on_timer(now)), [0], "then respawned");
    check_invariants(&cluster);
}

#[test]
fn without_max_memory_nothing_is_sampled() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    assert_eq!(cluster.next_deadline(), None);
    assert!(cluster.on_memory(&[(100, u64::MAX)], t0).is_empty());
}

/// A cluster of N whose worker 1 (pid 101) is being replaced for --max-memory by pid 201.
fn replacing_for_memory(workers: u32, now: Instant) -> (Cluster, Instant) {
    let mut cluster = running(memory_policy(), workers, now);
    let mut at = now;
    let mut actions = Vec::new();
    for _ in 0..3 {
        at += 1000 * MS;
        cluster.on_timer(at);
        actions = cluster.on_memory(&[(101, 300 << 20)], at);
    }
    spawn_one(&mut cluster, &actions, 201, at);
    (cluster, at)
}

#[test]
fn a_hup_while_a_worker_is_replaced_for_memory_reloads_that_slot_too() {
    let t0 = Instant::now();
    let (mut cluster, at) = replacing_for_memory(2, t0);
    // The memory replacement runs the old generation: the reload must not skip its slot.
    let mut pending = cluster.on_signal(Sig::HUP, at);
    assert!(pending.contains(&stop_signal(201)), "{pending:?}");
    let mut now = at;
    let mut pid = 300;
    while cluster.reload.is_some() {
        for ticket in tickets(&pending) {
            pid += 1;
            pending.extend(cluster.spawned(ticket, pid, now));
        }
        let mut next = Vec::new();
        for action in pending {
            if let Action::SignalGroup { pgid, .. } = action {
                next.extend(cluster.on_reaped(&exit(pgid, ProcessStatus::Exited(0)), true, now));
            }
        }
        now += 1000 * MS;
        next.extend(cluster.on_timer(now));
        pending = next;
        assert!(now < at + 60_000 * MS, "the reload never completed");
    }
    for slot in &cluster.slots {
        assert_eq!(slot.generation, 1, "slot {} runs generation 1", slot.id);
    }
    check_invariants(&cluster);
}

#[test]
fn a_memory_replacement_that_fails_after_the_old_worker_died_respawns_the_slot() {
    let t0 = Instant::now();
    let (mut cluster, at) = replacing_for_memory(2, t0);
    // The old worker dies (its respawn is held for the replacement), then the replacement fails.
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), true, at);
    assert!(
        spawned_ids(&cluster.on_timer(at)).is_empty(),
        "held for the replacement"
    );
    cluster.on_reaped(&exit(201, ProcessStatus::Exited(1)), true, at + MS);
    let actions = cluster.on_timer(at + 2000 * MS);
    assert_eq!(spawned_ids(&actions), [1], "slot 1 is not left empty");
    check_invariants(&cluster);
}

// ----- what `recluster ctl` asks -----

#[test]
fn a_restart_of_two_slots_replaces_them_one_at_a_time_within_n_plus_k() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.request_restart(&[0, 1], t0).unwrap();
    assert_eq!(
        spawns(&actions),
        [(0, 0)],
        "the same generation, one at a time"
    );
    spawn_one(&mut cluster, &actions, 200, t0);
    check_invariants(&cluster);
    assert!(
        cluster.on_timer(t0 + 500 * MS).is_empty(),
        "slot 1 waits its turn"
    );
    let t1 = t0 + 1000 * MS;
    assert_eq!(
        cluster.on_timer(t1),
        [stop_signal(100)],
        "new one ready: old one stopped"
    );
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, t1);
    assert_eq!(spawns(&actions), [(1, 0)], "room again: slot 1's turn");
    spawn_one(&mut cluster, &actions, 201, t1);
    let t2 = t1 + 1000 * MS;
    assert_eq!(cluster.on_timer(t2), [stop_signal(101)]);
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), true, t2);
    assert_eq!(cluster.worker_pids(), [200, 201]);
    check_invariants(&cluster);
    let reports = cluster.take_reports();
    assert!(reports.contains(&Report::RestartBegun {
        id: 0,
        pid: Some(100)
    }));
    assert!(reports.contains(&Report::RestartBegun {
        id: 1,
        pid: Some(101)
    }));
    let snapshot = cluster.snapshot(
        1,
        Clock {
            now: t2,
            wall: std::time::SystemTime::now(),
        },
    );
    assert_eq!(
        snapshot
            .workers
            .iter()
            .map(|w| w.restarts)
            .collect::<Vec<_>>(),
        [1, 1],
        "a requested restart counts once its new worker took over"
    );
    assert_eq!(snapshot.cluster.restarts, 2);
    let last = snapshot.workers[0].last_exit.as_ref().unwrap();
    assert_eq!(last.reason, "replaced by recluster: ctl restart");
    assert_eq!(last.what, "replaced: restart", "not 'SIGTERM'");
}

fn last_exit_of(
    cluster: &Cluster,
    id: usize,
    now: Instant,
) -> crate::supervisor::snapshot::LastExit {
    let clock = Clock {
        now,
        wall: std::time::SystemTime::now(),
    };
    let snapshot = cluster.snapshot(1, clock);
    snapshot.workers[id].last_exit.clone().expect("a last exit")
}

#[test]
fn a_reloaded_slot_says_replaced_and_when_not_exit_0() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    let t1 = t0 + 1000 * MS;
    assert_eq!(cluster.on_timer(t1), [stop_signal(100)]);
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t1);
    let last = last_exit_of(&cluster, 0, t1 + 5000 * MS);
    assert_eq!(last.what, "replaced: reload");
    assert_eq!(last.reason, "replaced by recluster: a rolling reload");
    assert_eq!(last.code, Some(0), "the status itself is still there");
    let table = cluster
        .snapshot(
            1,
            Clock {
                now: t1 + 5000 * MS,
                wall: std::time::SystemTime::now(),
            },
        )
        .table();
    assert!(table.contains("replaced: reload 5s"), "{table}");
}

#[test]
fn a_kill_from_outside_is_told_apart_from_an_end_of_its_own_a_crash_and_a_relayed_signal() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 4, t0);
    let t1 = t0 + 2000 * MS;
    // kill -9 from another process: recluster sent no signal.
    cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::KILL)), true, t1);
    let last = last_exit_of(&cluster, 0, t1);
    assert_eq!(last.what, "SIGKILL, outside");
    assert!(last.reason.contains("did not send"), "{}", last.reason);
    // A crash is the program's own.
    let segv = Sig::from_number(libc::SIGSEGV).unwrap();
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(segv)), true, t1);
    let last = last_exit_of(&cluster, 1, t1);
    assert_eq!(last.what, "SIGSEGV");
    assert_eq!(last.reason, "ended on its own");
    // An exit.
    cluster.on_reaped(&exit(102, ProcessStatus::Exited(3)), true, t1);
    assert_eq!(last_exit_of(&cluster, 2, t1).what, "exit 3");
    // A signal recluster relayed (ctl signal) is not from outside.
    let usr1 = Sig::from_number(libc::SIGUSR1).unwrap();
    cluster.signal_workers(usr1, &[3]).unwrap();
    cluster.on_reaped(&exit(103, ProcessStatus::Killed(usr1)), true, t1);
    let last = last_exit_of(&cluster, 3, t1);
    assert_eq!(last.what, "SIGUSR1");
    assert!(last.reason.contains("relayed"), "{}", last.reason);
}

#[test]
fn a_restart_is_refused_during_a_reload_and_a_reload_takes_over_a_queued_one() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    spawn_one(&mut cluster, &actions, 200, t0);
    let refused = cluster.request_restart(&[1], t0).unwrap_err();
    assert!(refused.contains("reload to generation 1"), "{refused}");

    let mut cluster = running(policy(), 2, t0);
    let actions = cluster.request_restart(&[0, 1], t0).unwrap();
    spawn_one(&mut cluster, &actions, 200, t0);
    let (target, actions) = cluster.request_reload(Origin::Control, t0).unwrap();
    assert_eq!(target, 1);
    assert!(
        others(&actions).contains(&stop_signal(200)),
        "the restart's new worker goes"
    );
    assert!(
        cluster.restart_queue.is_empty(),
        "the reload replaces slot 1 itself"
    );
    check_invariants(&cluster);
}

#[test]
fn a_restart_of_a_slot_waiting_out_its_backoff_starts_it_now() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    // Dies early: its respawn waits 100 ms.
    cluster.on_reaped(&exit(101, ProcessStatus::Exited(1)), true, t0 + 10 * MS);
    let actions = cluster.request_restart(&[1], t0 + 20 * MS).unwrap();
    assert!(actions.is_empty());
    let actions = cluster.on_timer(t0 + 20 * MS);
    assert_eq!(spawns(&actions), [(1, 0)], "at once, not after the backoff");
    spawn_one(&mut cluster, &actions, 300, t0 + 20 * MS);
    check_invariants(&cluster);
}

#[test]
fn scale_to_moves_several_slots_and_says_which() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let (scaled, actions) = cluster.scale_to(4, t0).unwrap();
    assert_eq!(scaled.added, [2, 3]);
    assert_eq!(spawned_ids(&actions), [2, 3]);
    for ticket in tickets(&actions) {
        cluster.spawned(ticket, 100 + ticket.identity.id as i32, t0);
    }
    let (scaled, actions) = cluster.scale_to(1, t0).unwrap();
    assert_eq!(scaled.removed, [103, 102, 101]);
    let stops: Vec<Action> = others(&actions)
        .into_iter()
        .filter(|a| matches!(a, Action::SignalGroup { .. }))
        .collect();
    assert_eq!(
        stops,
        [stop_signal(103), stop_signal(102), stop_signal(101)]
    );
    assert!(
        cluster
            .scale_to(0, t0)
            .unwrap_err()
            .contains("between 1 and")
    );
    assert!(
        cluster
            .signal_workers(Sig::HUP, &[1])
            .unwrap_err()
            .contains("no worker 1")
    );
    check_invariants(&cluster);
    cluster.request_stop(t0);
    assert!(cluster.scale_to(3, t0).unwrap_err().contains("stopping"));
}

#[test]
fn every_interleaving_of_events_during_a_restart_keeps_the_invariants() {
    // From `ctl restart 0 1` on 2 slots with K = 1, every sequence of three events.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        OldDies(usize),
        NewExits(usize),
        NewReady(usize),
        OldReaped,
        Timeout,
        Hup,
        Ttou,
        Restart(u32),
        Term,
    }
    let steps = [
        Step::OldDies(0),
        Step::OldDies(1),
        Step::NewExits(0),
        Step::NewReady(0),
        Step::NewReady(1),
        Step::OldReaped,
        Step::Timeout,
        Step::Hup,
        Step::Ttou,
        Step::Restart(1),
        Step::Term,
    ];
    for a in steps {
        for b in steps {
            for c in steps {
                let t0 = Instant::now();
                let mut cluster = running(notify_policy(), 2, t0);
                let mut next_pid = 300;
                let mut now = t0;
                let mut pending = cluster.request_restart(&[0, 1], now).unwrap();
                for step in [a, b, c] {
                    for ticket in tickets(&pending) {
                        if cluster.is_current(&ticket) {
                            next_pid += 1;
                            pending.extend(cluster.spawned(ticket, next_pid, now));
                        }
                    }
                    now += 10 * MS;
                    let own = |cluster: &Cluster, index: usize| match cluster.slots.get(index) {
                        Some(Slot {
                            occupant: Occupant::Worker(w),
                            ..
                        }) => w.pid(),
                        _ => None,
                    };
                    let new = |cluster: &Cluster, index: usize| {
                        cluster
                            .slots
                            .get(index)
                            .and_then(|s| s.replacement.and_then(|w| w.pid()))
                    };
                    pending = match step {
                        Step::OldDies(i) => match own(&cluster, i) {
                            Some(pid) => cluster.on_reaped(
                                &exit(pid, ProcessStatus::Killed(Sig::KILL)),
                                true,
                                now,
                            ),
                            None => Vec::new(),
                        },
                        Step::NewExits(i) => match new(&cluster, i) {
                            Some(pid) => {
                                cluster.on_reaped(&exit(pid, ProcessStatus::Exited(1)), true, now)
                            }
                            None => Vec::new(),
                        },
                        Step::NewReady(i) => match new(&cluster, i) {
                            Some(pid) => cluster.on_notified(pid, &ready_message(), now),
                            None => Vec::new(),
                        },
                        Step::OldReaped => match cluster.leaving.keys().min().copied() {
                            Some(pid) => cluster.on_reaped(
                                &exit(pid, ProcessStatus::Killed(Sig::TERM)),
                                true,
                                now,
                            ),
                            None => Vec::new(),
                        },
                        Step::Timeout => {
                            now += 3000 * MS;
                            cluster.on_timer(now)
                        }
                        Step::Hup => cluster.on_signal(Sig::HUP, now),
                        Step::Ttou => cluster.on_signal(Sig::TTOU, now),
                        Step::Restart(id) => {
                            cluster.request_restart(&[id], now).unwrap_or_default()
                        }
                        Step::Term => cluster.on_signal(Sig::TERM, now),
                    };
                    pending.extend(cluster.on_timer(now));
                    let steps = format!("{a:?} {b:?} {c:?}");
                    check_invariants_after(&cluster, &steps);
                    let replacements = cluster
                        .slots
                        .iter()
                        .filter(|s| s.replacement.is_some())
                        .count();
                    if cluster.reload.is_none() && cluster.is_running() {
                        assert!(
                            replacements <= 1,
                            "{steps}: {replacements} restarts at once with K = 1"
                        );
                    }
                    assert!(
                        cluster
                            .restart_queue
                            .iter()
                            .all(|&id| (id as usize) < cluster.slots.len() + 1),
                        "{steps}: a queued restart of a slot that is gone"
                    );
                }
            }
        }
    }
}

#[test]
fn a_restart_of_a_slot_already_being_replaced_follows_that_replacement() {
    let t0 = Instant::now();
    let memory = Policy {
        max_memory: Some((100, 1000 * MS)),
        ..policy()
    };
    let mut cluster = running(memory, 1, t0);
    // Three samples over the limit: a replacement starts beside worker 0.
    let mut pending = Vec::new();
    for i in 0..3 {
        pending = cluster.on_memory(&[(100, 200)], t0 + i * 10 * MS);
    }
    spawn_one(&mut cluster, &pending, 300, t0);
    cluster.take_reports();
    assert!(cluster.request_restart(&[0], t0).unwrap().is_empty());
    assert!(
        cluster.take_reports().contains(&Report::RestartBegun {
            id: 0,
            pid: Some(100)
        }),
        "a wait learns which worker the replacement stops"
    );
}

#[test]
fn a_held_slot_is_not_started_by_a_restart_before_its_group_is_released() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(policy(), 2);
    cluster.configure_groups(&[1], &[]);
    let actions = cluster.start(t0);
    assert_eq!(spawned_ids(&actions), [0], "slot 1 is held");
    let refused = cluster.request_restart(&[1], t0).unwrap_err();
    assert!(refused.contains("not started yet"), "{refused}");
    let actions = cluster.release(&[1], t0);
    assert_eq!(spawned_ids(&actions), [1]);
}

#[test]
fn a_worker_added_during_a_reload_is_started_by_it_within_n_plus_k_at_its_generation() {
    let t0 = Instant::now();
    let mut cluster = running(notify_policy(), 2, t0);
    let actions = cluster.on_signal(Sig::HUP, t0);
    assert_eq!(
        spawns(&actions),
        [(0, 1)],
        "K = 1: one replacement at a time"
    );
    spawn_one(&mut cluster, &actions, 300, t0);
    // 3 alive, N + K = 3 with the new slot: it waits for room.
    let actions = cluster.on_signal(Sig::TTIN, t0);
    assert!(spawns(&actions).is_empty(), "{actions:?}");
    assert_eq!(cluster.workers(), 3);
    // Replacement 0 is ready: old 0 stops; once reaped, the reload goes on.
    cluster.on_notified(300, &ready_message(), t0);
    let actions = cluster.on_reaped(&exit(100, ProcessStatus::Killed(Sig::TERM)), true, t0);
    assert_eq!(
        spawns(&actions),
        [(1, 1)],
        "slot 1 is next in the reload's order"
    );
    spawn_one(&mut cluster, &actions, 301, t0);
    cluster.on_notified(301, &ready_message(), t0);
    let actions = cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::TERM)), true, t0);
    assert_eq!(
        spawns(&actions),
        [(2, 1)],
        "the new slot starts at the reload's generation, never at the old one"
    );
    check_invariants(&cluster);
}

#[test]
fn the_same_stop_signal_again_within_a_second_is_the_same_request() {
    // GNU timeout signals recluster and then its process group: two TERMs, microseconds apart.
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    let first = cluster.on_signal(Sig::TERM, t0);
    assert!(first.contains(&Action::SignalGroup {
        pgid: 100,
        signal: Sig::TERM
    }));
    assert_eq!(cluster.on_signal(Sig::TERM, t0 + MS), []);
    assert_eq!(cluster.on_signal(Sig::TERM, t0 + 999 * MS), []);
    cluster.on_reaped(
        &exit(100, ProcessStatus::Killed(Sig::TERM)),
        true,
        t0 + 5 * MS,
    );
    let actions = cluster.on_reaped(
        &exit(101, ProcessStatus::Killed(Sig::TERM)),
        false,
        t0 + 6 * MS,
    );
    assert_eq!(
        actions,
        [Action::Exit(0)],
        "both stopped by the one request"
    );
}

#[test]
fn the_same_stop_signal_a_second_later_kills() {
    // A person pressing Ctrl-C again once the first did not end it quickly.
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    cluster.on_signal(Sig::INT, t0);
    assert_eq!(cluster.on_signal(Sig::INT, t0 + 100 * MS), []);
    assert_eq!(
        cluster.on_signal(Sig::INT, t0 + 1000 * MS),
        [Action::KillAll {
            groups: vec![100, 101]
        }]
    );
}

#[test]
fn a_stop_signal_during_a_stop_recluster_began_itself_kills() {
    // Only a repeat of the signal that began the stop is coalesced: a ctl stop or the end of
    // the cluster began this one.
    let t0 = Instant::now();
    let mut cluster = running(policy(), 1, t0);
    cluster.begin_stop(Sig::TERM, stop::Outcome::Requested, t0);
    assert_eq!(
        cluster.on_signal(Sig::TERM, t0 + MS),
        [Action::KillAll { groups: vec![100] }]
    );
}

#[test]
fn a_worker_the_oom_killer_ended_in_its_cgroup_is_reported_oom_killed_and_counted() {
    let t0 = Instant::now();
    let mut cluster = running(policy(), 2, t0);
    cluster.take_reports();
    let t1 = t0 + 2000 * MS;
    let mut exits = exit(100, ProcessStatus::Killed(Sig::KILL));
    exits[0].oom_killed = true;
    cluster.on_reaped(&exits, true, t1);
    let reports = cluster.take_reports();
    assert_eq!(
        reports[0],
        Report::OomKilled { id: 0, pid: 100 },
        "{reports:?}"
    );
    assert!(
        matches!(reports[1], Report::Ended { id: 0, .. }),
        "its end follows: {reports:?}"
    );
    let last = last_exit_of(&cluster, 0, t1);
    assert_eq!(last.what, "oom-killed");
    assert!(last.reason.contains("OOM killer"), "{}", last.reason);
    assert_eq!(last.signal.as_deref(), Some("SIGKILL"));
    // A SIGKILL with no OOM kill in its group is still one from outside.
    cluster.on_reaped(&exit(101, ProcessStatus::Killed(Sig::KILL)), true, t1);
    assert_eq!(last_exit_of(&cluster, 1, t1).what, "SIGKILL, outside");
    let clock = Clock {
        now: t1,
        wall: std::time::SystemTime::now(),
    };
    let snapshot = cluster.snapshot(1, clock);
    assert_eq!(snapshot.workers[0].guards.oom_kills, 1);
    assert_eq!(snapshot.workers[1].guards.oom_kills, 0);
}

#[test]
fn with_memory_watched_by_cgroups_nothing_is_sampled_and_one_crossing_replaces_the_worker() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(memory_policy(), 2);
    cluster.memory_by_events();
    let actions = cluster.start(t0);
    for ticket in tickets(&actions) {
        cluster.spawned(ticket, 100 + ticket.identity.id as i32, t0);
    }
    let later = t0 + 10_000 * MS;
    assert!(
        !cluster
            .on_timer(later)
            .iter()
            .any(|a| matches!(a, Action::SampleMemory { .. })),
        "no sample is taken"
    );
    assert_eq!(cluster.next_deadline(), None, "no timer at all while idle");
    // A crossing back below the limit changes nothing.
    assert!(cluster.on_memory_crossed(100, 10 << 20, later).is_empty());
    // One crossing above it replaces the worker, new one first.
    let actions = cluster.on_memory_crossed(101, 300 << 20, later);
    assert_eq!(spawns(&actions), [(1, 0)]);
    assert_eq!(tickets(&actions)[0].role, Role::Replacement);
    check_invariants(&cluster);
}

#[test]
fn a_v2_group_reaching_memory_high_replaces_its_worker_though_reclaim_brought_it_below() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(memory_policy(), 2);
    cluster.memory_by_events();
    let actions = cluster.start(t0);
    for ticket in tickets(&actions) {
        cluster.spawned(ticket, 100 + ticket.identity.id as i32, t0);
    }
    let later = t0 + 10_000 * MS;
    cluster.on_timer(later);
    // memory.high is the limit: the kernel holds the group there, so its usage read after the
    // event may be below it; the worker is replaced all the same, and only that one.
    let actions = cluster.on_memory_high(101, 10 << 20, later);
    assert_eq!(spawns(&actions), [(1, 0)]);
    assert_eq!(tickets(&actions)[0].role, Role::Replacement);
    // A worker gone before its event is looked at is forgotten.
    assert!(cluster.on_memory_high(999, 10 << 20, later).is_empty());
    check_invariants(&cluster);
}

#[test]
fn a_crossing_while_a_replacement_is_on_its_way_is_kept_until_the_worker_can_be_replaced() {
    let t0 = Instant::now();
    let mut cluster = Cluster::new(memory_policy(), 1);
    cluster.memory_by_events();
    let actions = cluster.start(t0);
    spawn_one(&mut cluster, &actions, 100, t0);
    let t1 = t0 + 2000 * MS;
    cluster.on_timer(t1);
    let actions = cluster.on_memory_crossed(100, 300 << 20, t1);
    assert_eq!(tickets(&actions)[0].role, Role::Replacement);
    spawn_one(&mut cluster, &actions, 200, t1);
    // The new worker crosses too, while it is still the replacement: nothing yet.
    assert!(cluster.on_memory_crossed(200, 300 << 20, t1).is_empty());
    // Ready after --min-uptime: the old one is stopped, and the new one is now the slot's own.
    let t2 = t1 + 1000 * MS;
    assert!(cluster.on_timer(t2).contains(&stop_signal(100)));
    cluster.on_reaped(&exit(100, ProcessStatus::Exited(0)), true, t2);
    let actions = cluster.on_timer(t2);
    assert_eq!(
        spawns(&actions),
        [(0, 0)],
        "the kept crossing replaces it: {actions:?}"
    );
    check_invariants(&cluster);
}
mod recycle;
mod watch;
