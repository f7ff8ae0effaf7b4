//! Procfile groups in the loop: which held group may start now (`--after`, and every group after
//! a `--once` group in the file), and stopping the cluster when a one-shot group fails. The
//! cluster answers the questions (`range_ready`, `range_finished`); this decides what follows.

use std::time::Instant;

use log::{error, info};

use crate::groups::Groups;

use super::action::Action;
use super::cluster::Cluster;

pub struct Formation {
    pub groups: Groups,
    /// Per group: what it waits for (explicit `--after`, and every `--once` group before it).
    waits_for: Vec<Vec<usize>>,
    /// Per group: whether it has been started.
    started: Vec<bool>,
    /// The one-shot groups not yet finished: only these are looked at after each event.
    running_once: Vec<usize>,
    /// A one-shot group failed and the cluster was told to stop.
    failed: bool,
}

impl Formation {
    pub fn new(groups: Groups) -> Formation {
        let waits_for: Vec<Vec<usize>> = (0..groups.groups.len())
            .map(|g| {
                let mut deps = groups.groups[g].after.clone();
                deps.extend((0..g).filter(|&earlier| groups.groups[earlier].once));
                deps.sort_unstable();
                deps.dedup();
                deps
            })
            .collect();
        let started = waits_for.iter().map(Vec::is_empty).collect();
        let running_once = (0..groups.groups.len())
            .filter(|&g| groups.groups[g].once)
            .collect();
        Formation {
            groups,
            waits_for,
            started,
            running_once,
            failed: false,
        }
    }

    /// Sets up `cluster` before its start: held and one-shot slots.
    pub fn configure(&self, cluster: &mut Cluster) {
        let held: Vec<_> = (0..self.groups.groups.len())
            .filter(|&g| !self.started[g])
            .map(|g| self.groups.range(g))
            .collect();
        let once: Vec<_> = (0..self.groups.groups.len())
            .filter(|&g| self.groups.groups[g].once)
            .map(|g| self.groups.range(g))
            .collect();
        cluster.configure_groups(&held, &once);
    }

    /// After each event: starts the groups whose conditions now hold, and stops the cluster once
    /// a one-shot group has failed. Once every group has started and every one-shot group has
    /// finished, it costs nothing.
    pub fn advance(&mut self, cluster: &mut Cluster, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.failed || (self.running_once.is_empty() && self.started.iter().all(|&s| s)) {
            return actions;
        }
        let mut finished = Vec::new();
        for &g in &self.running_once {
            match cluster.range_finished(self.groups.range(g)) {
                Some(true) => finished.push(g),
                Some(false) => {
                    error!(
                        "the one-shot group {} did not exit 0 (--once): stopping the cluster",
                        self.groups.groups[g].name
                    );
                    self.failed = true;
                    actions.extend(cluster.request_stop(now));
                    return actions;
                }
                None => {}
            }
        }
        for g in 0..self.groups.groups.len() {
            if self.started[g] {
                continue;
            }
            let ready = self.waits_for[g].iter().all(|&d| {
                let range = self.groups.range(d);
                if self.groups.groups[d].once {
                    cluster.range_finished(range) == Some(true)
                } else {
                    cluster.range_ready(range)
                }
            });
            if ready {
                self.started[g] = true;
                let names: Vec<String> = self.waits_for[g]
                    .iter()
                    .map(|&d| {
                        let dep = &self.groups.groups[d];
                        let how = if dep.once { "finished" } else { "ready" };
                        format!("{} {how}", dep.name)
                    })
                    .collect();
                info!(
                    "starting group {} ({})",
                    self.groups.groups[g].name,
                    names.join(", ")
                );
                actions.extend(cluster.release(self.groups.range(g), now));
            }
        }
        // Looked at after the releases: a group waiting for one of these sees it finished.
        self.running_once.retain(|g| !finished.contains(g));
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::{ReadyMode, RestartMode};
    use crate::config::Policy;
    use crate::reaper::Exit;
    use crate::signal::Sig;
    use crate::status::ProcessStatus;

    fn policy() -> Policy {
        Policy {
            restart: RestartMode::Always,
            restart_delay: Duration::from_millis(100),
            restart_max_delay: Duration::from_millis(400),
            crash_limit: None,
            min_uptime: Duration::from_millis(1000),
            ready: ReadyMode::Started,
            ready_timeout: Duration::from_secs(3),
            reload_batch: 1,
            stop_signal: Sig::TERM,
            kill_timeout: Duration::from_secs(5),
            steered: false,
            watchdog: None,
            max_memory: None,
        }
    }

    /// migrate (once, 1 worker), web (2 workers): web is held until migrate ends with 0.
    fn formation() -> (Formation, Cluster) {
        let entries = crate::groups::parse_procfile("migrate: m\nweb: w\n").unwrap();
        let groups = Groups::build(entries, Some("web=2"), &[], &["migrate".to_string()]).unwrap();
        let formation = Formation::new(groups);
        let mut cluster = Cluster::new(policy(), 3);
        formation.configure(&mut cluster);
        (formation, cluster)
    }

    fn spawned(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn(t) => Some(t.identity.id),
                _ => None,
            })
            .collect()
    }

    fn exit(pid: i32, code: i32) -> Vec<Exit> {
        vec![Exit {
            pid,
            status: ProcessStatus::Exited(code),
            cpu: Duration::ZERO,
        }]
    }

    #[test]
    fn a_once_group_that_exits_0_lets_the_next_group_start_and_is_not_restarted() {
        let (mut formation, mut cluster) = formation();
        let t0 = std::time::Instant::now();
        let actions = cluster.start(t0);
        assert_eq!(spawned(&actions), [0], "only migrate starts");
        let ticket = match &actions[0] {
            Action::Spawn(t) => *t,
            _ => unreachable!(),
        };
        cluster.spawned(ticket, 100, t0);
        assert!(formation.advance(&mut cluster, t0).is_empty(), "web waits");
        let after = cluster.on_reaped(&exit(100, 0), false, t0);
        assert!(spawned(&after).is_empty(), "migrate is not restarted");
        let actions = formation.advance(&mut cluster, t0);
        assert_eq!(spawned(&actions), [1, 2], "web starts");
    }

    #[test]
    fn a_once_group_that_fails_stops_the_cluster_with_its_status() {
        let (mut formation, mut cluster) = formation();
        let t0 = std::time::Instant::now();
        let actions = cluster.start(t0);
        let ticket = match &actions[0] {
            Action::Spawn(t) => *t,
            _ => unreachable!(),
        };
        cluster.spawned(ticket, 100, t0);
        cluster.on_reaped(&exit(100, 3), false, t0);
        let actions = formation.advance(&mut cluster, t0);
        assert!(spawned(&actions).is_empty(), "web never starts");
        assert_eq!(
            actions.last(),
            Some(&Action::Exit(3)),
            "nothing else runs: exit with migrate's status: {actions:?}"
        );
    }
}
