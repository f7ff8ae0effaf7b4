//! Procfile groups in the loop: which held group may start now (`--after`, and every group after
//! a `--once` group in the file), and stopping the cluster when a one-shot group fails. The
//! cluster answers the questions (`all_ready`, `all_finished`); this decides what follows, and
//! scales the groups (`scale`) through their shared layout. With `--watch`, it says which groups
//! a change reloads: those whose command lies under the watched path that changed (a word of the
//! Procfile line naming an existing file or directory there), or every group when none does.

use std::time::Instant;

use log::{error, info, warn};

use crate::config::groups::Groups;
use crate::frontend::request::ScaleBy;

use super::action::Action;
use super::cluster::{Cluster, Scaled, Scope};
use super::report::Origin;

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
    /// `--watch`: per watched path (their order), the groups whose command lies under it.
    watched: Vec<Vec<usize>>,
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
            watched: Vec::new(),
        }
    }

    /// `--watch`: which groups each watched path holds the command of.
    pub fn with_watch(mut self, paths: &[std::path::PathBuf]) -> Formation {
        self.watched = paths
            .iter()
            .map(|path| {
                let Ok(root) = path.canonicalize() else {
                    return Vec::new();
                };
                (0..self.groups.groups.len())
                    .filter(|&g| command_lies_under(&self.groups.groups[g], &root))
                    .collect()
            })
            .collect();
        self
    }

    /// The slots a change under the watched paths `roots` reloads: the groups whose command lies
    /// under one of them, or every slot when one of them holds no group's command.
    pub fn scope_of_change(&self, roots: &[usize]) -> Scope {
        let mut slots = std::collections::BTreeSet::new();
        for &root in roots {
            match self.watched.get(root) {
                Some(groups) if !groups.is_empty() => {
                    slots.extend(groups.iter().flat_map(|&g| self.groups.slots(g)));
                }
                _ => return Scope::All,
            }
        }
        if slots.is_empty() {
            return Scope::All;
        }
        Scope::Slots(slots)
    }

    /// The names of the groups a scope holds, for the log.
    pub fn names_in(&self, scope: &Scope) -> Vec<String> {
        (0..self.groups.groups.len())
            .filter(|&g| self.groups.slots(g).iter().any(|&s| scope.contains(s)))
            .map(|g| self.groups.groups[g].name.clone())
            .collect()
    }

    /// Sets up `cluster` before its start: held and one-shot slots.
    pub fn configure(&self, cluster: &mut Cluster) {
        let held: Vec<u32> = (0..self.groups.groups.len())
            .filter(|&g| !self.started[g])
            .flat_map(|g| self.groups.slots(g))
            .collect();
        let once: Vec<u32> = (0..self.groups.groups.len())
            .filter(|&g| self.groups.groups[g].once)
            .flat_map(|g| self.groups.slots(g))
            .collect();
        cluster.configure_groups(&held, &once);
        for g in 0..self.groups.groups.len() {
            for slot in self.groups.slots(g) {
                cluster.assign_group(slot, g as u32);
            }
        }
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
            match cluster.all_finished(&self.groups.slots(g)) {
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
                let slots = self.groups.slots(d);
                if self.groups.groups[d].once {
                    cluster.all_finished(&slots) == Some(true)
                } else {
                    cluster.all_ready(&slots)
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
                actions.extend(cluster.release(&self.groups.slots(g), now));
            }
        }
        // Looked at after the releases: a group waiting for one of these sees it finished.
        self.running_once.retain(|g| !finished.contains(g));
        actions
    }
}

impl Formation {
    /// Scales one group (`ctl scale … --group NAME`), or every group that can scale (TTIN, TTOU,
    /// `ctl scale` without `--group`): not the one-shot groups, and, for a step up or down, not
    /// the groups run with 0 workers. Without a group named, a step down keeps 1 worker in each
    /// group; a named group may go to 0 while another group still runs a worker. New workers of a
    /// group still waiting for `--after` wait with it. Refused as a whole, or carried out whole.
    pub fn scale(
        &mut self,
        cluster: &mut Cluster,
        group: Option<&str>,
        by: ScaleBy,
        origin: Origin,
        now: Instant,
    ) -> Result<(Scaled, Vec<Action>), String> {
        cluster.accepts_changes()?;
        let names = || {
            let names: Vec<&str> = self.groups.groups.iter().map(|g| g.name.as_str()).collect();
            names.join(", ")
        };
        let chosen: Vec<usize> = match group {
            Some(name) => {
                let g = self
                    .groups
                    .find(name)
                    .ok_or_else(|| format!("there is no group {name} (the groups: {})", names()))?;
                if self.groups.groups[g].once {
                    return Err(format!("{name} runs once (--once): it cannot be scaled"));
                }
                vec![g]
            }
            None => (0..self.groups.groups.len())
                .filter(|&g| !self.groups.groups[g].once)
                .filter(|&g| matches!(by, ScaleBy::To(_)) || self.groups.size(g) > 0)
                .collect(),
        };
        let mut targets = Vec::with_capacity(chosen.len());
        for &g in &chosen {
            let size = self.groups.size(g);
            let target = match by {
                ScaleBy::To(n) => Some(n),
                ScaleBy::Up(k) => size.checked_add(k),
                ScaleBy::Down(k) if group.is_none() => Some(size.saturating_sub(k).max(1)),
                ScaleBy::Down(k) => size.checked_sub(k),
            };
            let name = &self.groups.groups[g].name;
            let target = target.ok_or_else(|| {
                format!(
                    "cannot scale {name} by {by}: it runs {size} workers (scale it to 0 at the least)"
                )
            })?;
            if target == 0 && group.is_none() {
                return Err(format!(
                    "cannot scale every group to 0 workers: name the group with --group ({})",
                    names()
                ));
            }
            targets.push((g, target));
        }
        let total: u64 = (0..self.groups.groups.len())
            .map(|g| {
                let size = targets
                    .iter()
                    .find(|t| t.0 == g)
                    .map_or(self.groups.size(g), |t| t.1);
                u64::from(size)
            })
            .sum();
        let max = crate::config::policy::MAX_WORKERS;
        if total > u64::from(max) {
            return Err(format!(
                "that makes {total} workers; recluster runs at most {max}"
            ));
        }
        if total == 0 {
            return Err(
                "that leaves no worker: at least 1 must run (stop the cluster instead)".to_string(),
            );
        }
        let mut scaled = Scaled::default();
        let mut actions = Vec::new();
        for (g, target) in targets {
            while self.groups.size(g) < target {
                let slot = self.groups.grow(g);
                scaled.added.push(slot);
                actions.extend(cluster.add_slot(slot, !self.started[g], origin, now));
                cluster.assign_group(slot, g as u32);
            }
            while self.groups.size(g) > target {
                let slot = self
                    .groups
                    .shrink(g)
                    .expect("a group larger than its target");
                scaled.removed.extend(cluster.slot_pids(slot));
                actions.extend(cluster.remove_slot(slot, now, origin));
            }
        }
        if scaled.added.is_empty() && scaled.removed.is_empty() && origin == Origin::Signal {
            warn!("nothing to scale: every group that can scale is at its bound");
        }
        Ok((scaled, actions))
    }
}

/// Whether a word of the group's Procfile line names an existing file or directory under
/// `root` (relative words from recluster's directory, where the workers run too).
fn command_lies_under(group: &crate::config::groups::Group, root: &std::path::Path) -> bool {
    let Some(line) = group.command.last() else {
        return false;
    };
    line.to_string_lossy()
        .split_whitespace()
        .map(|word| word.trim_matches(|c| c == '\'' || c == '"'))
        .filter(|word| !word.is_empty() && !word.starts_with('-'))
        .filter_map(|word| std::path::Path::new(word).canonicalize().ok())
        .any(|path| path.starts_with(root))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::policy::{ReadyMode, RestartMode};
    use crate::config::validated::Policy;
    use crate::process::reaper::Exit;
    use crate::process::signal::Sig;
    use crate::process::status::ProcessStatus;

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
            max_age: None,
            stop_delay: Duration::ZERO,
            exit_on: crate::config::policy::ExitOn::GiveUp,
            critical: Vec::new(),
        }
    }

    /// migrate (once, 1 worker), web (2 workers): web is held until migrate ends with 0.
    fn formation() -> (Formation, Cluster) {
        let entries = crate::config::groups::parse_procfile("migrate: m\nweb: w\n").unwrap();
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
            oom_killed: false,
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

    /// `ctl scale` as the loop carries it out.
    fn ask(
        formation: &mut Formation,
        cluster: &mut Cluster,
        group: Option<&str>,
        by: ScaleBy,
    ) -> Result<(Scaled, Vec<Action>), String> {
        let now = std::time::Instant::now();
        formation.scale(cluster, group, by, Origin::Control, now)
    }

    /// web (2) and jobs (1), both started.
    fn web_and_jobs() -> (Formation, Cluster) {
        let entries = crate::config::groups::parse_procfile("web: w\njobs: j\n").unwrap();
        let groups = Groups::build(entries, Some("web=2"), &[], &[]).unwrap();
        let formation = Formation::new(groups);
        let mut cluster = Cluster::new(policy(), 3);
        formation.configure(&mut cluster);
        (formation, cluster)
    }

    #[test]
    fn scaling_a_group_adds_and_retires_its_own_slots() {
        let (mut formation, mut cluster) = web_and_jobs();
        let t0 = std::time::Instant::now();
        cluster.start(t0);
        let web = Some("web");
        let (scaled, actions) = ask(&mut formation, &mut cluster, web, ScaleBy::Up(2)).unwrap();
        assert_eq!(scaled.added, [3, 4], "web.2 and web.3 come after jobs.0");
        assert_eq!(spawned(&actions), [3, 4]);
        assert_eq!(formation.groups.label(4), "web.3");
        assert_eq!(cluster.workers(), 5);
        let (scaled, _) = ask(&mut formation, &mut cluster, web, ScaleBy::To(1)).unwrap();
        assert_eq!(scaled.added, [] as [u32; 0]);
        assert_eq!(
            cluster.workers(),
            2,
            "web.1 retired in the middle, web.2 and 3 too"
        );
        assert_eq!(formation.groups.slots(0), [0]);
        let (scaled, actions) = ask(&mut formation, &mut cluster, web, ScaleBy::Up(1)).unwrap();
        assert_eq!(scaled.added, [1], "web.1 gets its slot back");
        assert_eq!(spawned(&actions), [1]);
        assert_eq!(
            ask(&mut formation, &mut cluster, Some("jobs"), ScaleBy::To(0))
                .unwrap()
                .0
                .added
                .len(),
            0,
            "a named group may go to 0"
        );
        assert_eq!(cluster.workers(), 2);
    }

    #[test]
    fn every_group_scales_by_a_step_but_never_below_one_or_from_zero() {
        let (mut formation, mut cluster) = web_and_jobs();
        let t0 = std::time::Instant::now();
        cluster.start(t0);
        let down = formation.scale(&mut cluster, None, ScaleBy::Down(1), Origin::Signal, t0);
        assert_eq!(down.unwrap().0.added.len(), 0);
        assert_eq!((formation.groups.size(0), formation.groups.size(1)), (1, 1));
        ask(&mut formation, &mut cluster, Some("jobs"), ScaleBy::To(0)).unwrap();
        let (scaled, _) = formation
            .scale(&mut cluster, None, ScaleBy::Up(1), Origin::Signal, t0)
            .unwrap();
        assert_eq!(scaled.added.len(), 1, "jobs stays at 0, as it was set");
        assert_eq!((formation.groups.size(0), formation.groups.size(1)), (2, 0));
        let refused = ask(&mut formation, &mut cluster, Some("web"), ScaleBy::To(0)).unwrap_err();
        assert!(refused.contains("no worker"), "{refused}");
        let refused = ask(&mut formation, &mut cluster, Some("db"), ScaleBy::Up(1)).unwrap_err();
        assert!(
            refused.contains("no group db (the groups: web, jobs)"),
            "{refused}"
        );
        assert_eq!(
            (formation.groups.size(0), formation.groups.size(1)),
            (2, 0),
            "refusals change nothing"
        );
    }

    #[test]
    fn a_once_group_cannot_be_scaled_and_a_held_group_grows_held() {
        let (mut formation, mut cluster) = formation();
        let t0 = std::time::Instant::now();
        let actions = cluster.start(t0);
        let Action::Spawn(ticket) = actions[0] else {
            unreachable!("migrate starts")
        };
        cluster.spawned(ticket, 100, t0);
        let refused = ask(
            &mut formation,
            &mut cluster,
            Some("migrate"),
            ScaleBy::Up(1),
        )
        .unwrap_err();
        assert!(refused.contains("runs once"), "{refused}");
        let (scaled, actions) =
            ask(&mut formation, &mut cluster, Some("web"), ScaleBy::Up(1)).unwrap();
        assert_eq!(scaled.added, [3]);
        assert!(spawned(&actions).is_empty(), "web still waits for migrate");
        cluster.on_reaped(&exit(100, 0), false, t0);
        let actions = formation.advance(&mut cluster, t0);
        assert_eq!(
            spawned(&actions),
            [1, 2, 3],
            "web starts with its new worker"
        );
    }
}
