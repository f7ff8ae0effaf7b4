//! The supervisor's side of the control socket: each request becomes a decision of the cluster
//! (or a refusal with the reason), and its answer goes back through `Replies`, which never blocks
//! the loop. Requests that wait, and `events`, are followed through the cluster's reports by
//! `control::waits`. `status` takes the cluster's snapshot here and adds what the loop's plumbing
//! knows; the control thread measures /proc and writes it.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use crate::frontend::control::protocol;
use crate::frontend::control::replies::{Replies, Reply};
use crate::frontend::control::waits::{Answer, Goal, Step, Waits, WorkerName};
use crate::frontend::request::{self, Frontend, Request, ScaleBy, Target, WorkerRef};
use crate::process::spawn::Spawner;
use crate::supervisor::snapshot::SocketView;
use crate::worker_io::messages::{Counters, Courier, Drops, Messages};

use super::action::Action;
use super::cluster::{Clock, Cluster, Scaled};
use super::formation::Formation;
use super::report::{Origin, Report};

/// What `status` shows that the cluster does not know.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub name: Option<String>,
    pub sockets: Vec<SocketView>,
    pub control: Option<String>,
}

pub struct Control {
    /// Where answers go: the control socket's thread, the admin endpoint's, the message
    /// thread's (`info`).
    control: Option<Replies>,
    admin: Option<Replies>,
    messages: Option<(Replies, Courier, Drops)>,
    /// What the message thread refused, by reason.
    message_counters: Option<std::sync::Arc<Counters>>,
    /// `-f`: the groups, to name workers by group and id within it.
    groups: Option<crate::config::groups::Groups>,
    waits: Waits,
    identity: Identity,
    /// The last `STATUS=` line of each live worker, by pid.
    statuses: HashMap<i32, String>,
}

impl Control {
    pub fn new(control: Option<Replies>, admin: Option<Replies>, identity: Identity) -> Control {
        Control {
            control,
            admin,
            messages: None,
            message_counters: None,
            groups: None,
            waits: Waits::default(),
            identity,
            statuses: HashMap::new(),
        }
    }

    /// Messages between workers run: `info` is answered to their thread, `ctl send` delivered
    /// through it, and their drops shown in status.
    pub fn with_messages(mut self, messages: &Messages) -> Control {
        self.messages = Some((messages.replies(), messages.courier(), messages.drops()));
        self.message_counters = Some(messages.counters());
        self
    }

    pub fn with_groups(mut self, groups: Option<crate::config::groups::Groups>) -> Control {
        self.groups = groups;
        self
    }

    /// Carries out a request from `client` of `frontend`; what the executor is to do for it.
    pub fn handle(
        &mut self,
        (client, frontend): (u64, Frontend),
        request: Request,
        cluster: &mut Cluster,
        formation: Option<&mut Formation>,
        spawner: &mut Spawner,
        now: Instant,
    ) -> Vec<Action> {
        let result = match request {
            Request::Hello => {
                let fields = json!({"pid": std::process::id(), "name": self.identity.name});
                if let Some(replies) = self.replies(frontend) {
                    replies.send(Reply::Line {
                        client,
                        line: protocol::ok(fields),
                        last: true,
                    });
                }
                return Vec::new();
            }
            Request::Status => {
                self.send_status(client, frontend, cluster, spawner, now);
                return Vec::new();
            }
            // The admin endpoint and the message thread only read.
            _ if frontend != Frontend::Control => return Vec::new(),
            Request::Send { to, data } => match &self.messages {
                Some((_, courier, _)) => self
                    .check_addressee(&to, cluster)
                    .and_then(|()| courier.deliver(to, data))
                    .map(|()| (None, json!({}), Vec::new())),
                None => Err(
                    "messages between workers are off in this cluster (--no-messages)".to_string(),
                ),
            },
            Request::Events => {
                self.waits.subscribe(client);
                let line =
                    json!({"v": protocol::VERSION, "event": "subscribed", "time": unix_now()});
                self.send_control(Reply::Event {
                    client,
                    line: line.to_string(),
                });
                return Vec::new();
            }
            Request::Scale { by, group, wait } => {
                scale(cluster, formation, by, group, now).map(|(scaled, fields, actions)| {
                    let goal = Goal::Scale {
                        answer: fields.clone(),
                        pending_ready: scaled.added.into_iter().collect(),
                        pending_gone: scaled.removed.into_iter().collect(),
                    };
                    (wait.then_some(goal), fields, actions)
                })
            }
            Request::Restart { ids, wait } => self.slots(&ids).and_then(|slots| {
                cluster.request_restart(&slots, now).map(|actions| {
                    let goal = Goal::Restart {
                        slots: slots.iter().map(|&id| (id, Step::Queued)).collect(),
                    };
                    let named: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    (wait.then_some(goal), json!({"ids": named}), actions)
                })
            }),
            Request::Signal { signal, ids } => self.slots(&ids).and_then(|slots| {
                cluster
                    .signal_workers(signal, &slots)
                    .map(|actions| (None, json!({"groups": actions.len()}), actions))
            }),
            Request::Reload { wait } => {
                super::reloading::begin_reload(cluster, spawner, Origin::Control, now).map(
                    |(target, actions)| {
                        let goal = Goal::Reload {
                            target,
                            replaced: 0,
                            of: cluster.workers() as u32,
                        };
                        (wait.then_some(goal), json!({"generation": target}), actions)
                    },
                )
            }
            Request::Stop { wait } => {
                let actions = cluster.request_stop(now);
                Ok((wait.then_some(Goal::Stop), json!({}), actions))
            }
        };
        match result {
            Err(reason) => {
                self.answer(client, protocol::error(&reason));
                Vec::new()
            }
            Ok((Some(goal), _, actions)) => {
                // The reports of this decision are observed after this, by the wait too.
                for answer in self.waits.add(client, goal) {
                    self.send(answer);
                }
                actions
            }
            Ok((None, fields, actions)) => {
                self.answer(client, protocol::ok(fields));
                actions
            }
        }
    }

    /// What a report means for the waits, the subscribers and the status lines.
    pub fn observe(&mut self, report: &Report) {
        match report {
            Report::WorkerStatus { pid, status, .. } => {
                self.statuses.insert(*pid, status.clone());
            }
            Report::Ended { pid: Some(pid), .. } | Report::Stopped { pid, .. } => {
                self.statuses.remove(pid);
            }
            _ => {}
        }
        if self.waits.is_empty() {
            return;
        }
        let groups = &self.groups;
        let name = |slot: u32| match groups {
            Some(groups) => {
                let (group, id) = groups.of_slot(slot);
                WorkerName {
                    group: Some(groups.groups[group].name.clone()),
                    id,
                }
            }
            None => WorkerName::plain(slot),
        };
        for answer in self.waits.observe(report, unix_now(), &name) {
            self.send(answer);
        }
    }

    /// The client went away: nothing more is sent to it.
    pub fn forget(&mut self, client: u64) {
        self.waits.forget(client);
    }

    /// recluster exits with `code`: the last answers.
    pub fn exiting(&mut self, code: i32) {
        for answer in self.waits.exiting(code) {
            self.send(answer);
        }
    }

    /// The cluster slots of the workers a request names: `3` without groups; `web.3`, or every
    /// worker of a group as `web.*`, with them.
    fn slots(&self, ids: &[WorkerRef]) -> Result<Vec<u32>, String> {
        let slots = ids
            .iter()
            .map(|id| match (id, &self.groups) {
                (WorkerRef::Id(id), None) => Ok(vec![*id]),
                (WorkerRef::InGroup(..) | WorkerRef::Group(_), None) => Err(format!(
                    "there is no worker {id}: this cluster has no groups"
                )),
                (WorkerRef::Id(_), Some(groups)) => Err(format!(
                    "with groups, name a worker as GROUP.ID ({}.{id}, …)",
                    groups.groups[0].name
                )),
                (WorkerRef::InGroup(group, n), Some(groups)) => groups
                    .slot_of(group, *n)
                    .map(|slot| vec![slot])
                    .ok_or_else(|| format!("there is no worker {id}")),
                (WorkerRef::Group(group), Some(groups)) => groups
                    .find(group)
                    .map(|g| groups.slots(g))
                    .ok_or_else(|| format!("there is no group {group}")),
            })
            .collect::<Result<Vec<Vec<u32>>, String>>()?;
        let slots = slots.concat();
        if slots.is_empty() && !ids.is_empty() {
            return Err("that group runs no worker (-m NAME=0)".to_string());
        }
        Ok(slots)
    }

    /// `ctl send` to a worker or group that is not there fails, naming it, instead of answering
    /// "sent" for a message nobody gets.
    fn check_addressee(&self, to: &Target, cluster: &Cluster) -> Result<(), String> {
        let slots: Vec<u32> = match (to, &self.groups) {
            (Target::All | Target::Others | Target::Recluster, _) => return Ok(()),
            (Target::Worker(id), None) => {
                cluster.check_ids(&[*id])?;
                vec![*id]
            }
            (Target::Worker(id), Some(groups)) => groups
                .groups
                .iter()
                .filter_map(|g| groups.slot_of(&g.name, *id))
                .collect(),
            (Target::Group(name) | Target::GroupWorker(name, _), None) => {
                return Err(format!(
                    "there is no group {name}: this cluster has no groups"
                ));
            }
            (Target::Group(name) | Target::GroupWorker(name, _), Some(groups))
                if groups.find(name).is_none() =>
            {
                return Err(format!("there is no group {name}"));
            }
            (Target::Group(name), Some(groups)) => {
                groups.slots(groups.find(name).expect("found above"))
            }
            (Target::GroupWorker(name, id), Some(groups)) => {
                groups.slot_of(name, *id).into_iter().collect()
            }
        };
        if slots.iter().any(|&slot| cluster.has_worker(slot)) {
            return Ok(());
        }
        let name = request::target_name(to);
        Err(match to {
            Target::Group(group) => format!("group {group} runs no worker now: nothing was sent"),
            _ if slots.is_empty() => format!("there is no {name}: nothing was sent"),
            _ => format!("{name} is not running now (it waits to be restarted): nothing was sent"),
        })
    }

    fn replies(&self, frontend: Frontend) -> Option<&Replies> {
        match frontend {
            Frontend::Control => self.control.as_ref(),
            Frontend::Admin => self.admin.as_ref(),
            Frontend::Messages => self.messages.as_ref().map(|(replies, _, _)| replies),
        }
    }

    fn send_control(&self, reply: Reply) {
        if let Some(replies) = &self.control {
            replies.send(reply);
        }
    }

    fn send_status(
        &self,
        client: u64,
        frontend: Frontend,
        cluster: &Cluster,
        spawner: &Spawner,
        now: Instant,
    ) {
        let clock = Clock {
            now,
            wall: SystemTime::now(),
        };
        let mut snapshot = cluster.snapshot(std::process::id(), clock);
        snapshot.cluster.name = self.identity.name.clone();
        snapshot.cluster.sockets = self.identity.sockets.clone();
        snapshot.cluster.control = self.identity.control.clone();
        if let Some(counters) = &self.message_counters {
            snapshot.cluster.messages = counters.read();
        }
        let drops = self
            .messages
            .as_ref()
            .and_then(|(_, _, drops)| drops.lock().ok().map(|d| d.clone()))
            .unwrap_or_default();
        for worker in &mut snapshot.workers {
            worker.cpus = spawner.worker_binding(worker.id).map(|set| set.to_string());
            worker.cgroup = worker
                .pid
                .and_then(|pid| spawner.worker_cgroups()?.of(pid).map(|g| g.usage_files()));
            worker.status = worker.pid.and_then(|pid| self.statuses.get(&pid).cloned());
            if worker.role == crate::supervisor::snapshot::WorkerRole::Slot {
                worker.messages_dropped = drops.get(&worker.id).copied().unwrap_or(0);
            }
            if let Some(groups) = &self.groups {
                let (g, local) = groups.of_slot(worker.id);
                worker.group = Some(groups.groups[g].name.clone());
                worker.id = local;
            }
        }
        // The digests go to the control socket only: the admin endpoint may be reachable by
        // more people, and a digest of a small file of secrets could be guessed.
        if spawner.has_env_files() && frontend == Frontend::Control {
            let mut generations: Vec<u32> = snapshot.workers.iter().map(|w| w.generation).collect();
            generations.extend(snapshot.cluster.reloading_to);
            generations.sort_unstable();
            generations.dedup();
            snapshot.cluster.env_files = generations
                .into_iter()
                .map(|generation| crate::supervisor::snapshot::EnvFilesView {
                    generation,
                    sha256: spawner.env_of(generation).digest.clone(),
                })
                .collect();
        }
        if let Some(replies) = self.replies(frontend) {
            replies.send(Reply::Status {
                client,
                snapshot: Box::new(snapshot),
            });
        }
    }

    fn answer(&self, client: u64, line: String) {
        self.send_control(Reply::Line {
            client,
            line,
            last: true,
        });
    }

    fn send(&self, answer: Answer) {
        let reply = if answer.event {
            Reply::Event {
                client: answer.client,
                line: answer.line,
            }
        } else {
            Reply::Line {
                client: answer.client,
                line: answer.line,
                last: answer.last,
            }
        };
        self.send_control(reply);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `ctl scale`: the whole cluster, or with groups one group (or each that can scale); what
/// changed, and the answer's fields (the new count, and with groups each group's size in the
/// Procfile's order).
fn scale(
    cluster: &mut Cluster,
    formation: Option<&mut Formation>,
    by: ScaleBy,
    group: Option<String>,
    now: Instant,
) -> Result<(Scaled, Value, Vec<Action>), String> {
    match (formation, group) {
        (Some(formation), group) => {
            let (scaled, actions) =
                formation.scale(cluster, group.as_deref(), by, Origin::Control, now)?;
            let groups: Vec<Value> = (0..formation.groups.groups.len())
                .map(|g| {
                    let name = &formation.groups.groups[g].name;
                    json!({"name": name, "workers": formation.groups.size(g)})
                })
                .collect();
            let fields = json!({"workers": cluster.workers(), "groups": groups});
            Ok((scaled, fields, actions))
        }
        (None, Some(_)) => Err("--group: this cluster runs no Procfile groups".to_string()),
        (None, None) => {
            let current = cluster.workers() as u32;
            let target = by.target(current).ok_or_else(|| {
                format!("cannot scale {current} workers by {by}: at least 1 worker must remain")
            })?;
            let (scaled, actions) = cluster.scale_to(target, now)?;
            Ok((scaled, json!({"workers": target}), actions))
        }
    }
}
