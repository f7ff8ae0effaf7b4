//! Requests that outlive their first answer, followed through the cluster's reports: a `--wait`
//! (reload, scale, restart, stop) ends when its outcome is known, with progress lines meanwhile,
//! and `events` turns every report worth knowing into an event line. Pure: reports in, answers
//! out, so each outcome is unit-tested without processes.
//!
//! When a wait ends:
//! - reload: done when a reload to its generation (or a newer one that superseded it) completes,
//!   failed when that reload is abandoned or the cluster begins to stop;
//! - scale: done when every added slot's worker is ready and every removed worker has exited;
//!   failed when an added worker ends before it is ready, or a later scale-down removes its slot;
//! - restart: per slot, done when the new worker is ready and the old one has exited; failed
//!   when the new worker fails, or a reload begins first (it replaces the workers itself);
//! - stop: done when recluster exits (with its exit status).
//!
//! Every wait but stop fails when the cluster begins to stop.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::process::status::ProcessStatus;
use crate::supervisor::report::{Report, Then};

use super::protocol;

/// What a wait is waiting for.
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    /// `replaced` of `of` slots have their new worker ready (for the "3 of 8" progress lines).
    Reload {
        target: u32,
        replaced: u32,
        of: u32,
    },
    /// `answer`: what the request is answered with once it is done (the new sizes).
    Scale {
        answer: Value,
        pending_ready: BTreeSet<u32>,
        pending_gone: BTreeSet<i32>,
    },
    Restart {
        slots: BTreeMap<u32, Step>,
    },
    Stop,
}

/// Where one slot's restart is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Queued: nothing started yet.
    Queued,
    /// A new worker starts beside `old`.
    Replacing { old: i32 },
    /// The slot had no running worker: its new one is starting.
    Starting,
    /// The new worker is ready; `old` is being stopped.
    Retiring { old: i32 },
}

/// A line for a client: `last` ends its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub client: u64,
    pub line: String,
    pub last: bool,
    /// An `events` line: may be dropped for a slow reader.
    pub event: bool,
}

#[derive(Default)]
pub struct Waits {
    waits: Vec<(u64, Goal)>,
    subscribers: Vec<u64>,
}

impl Waits {
    /// Starts following `goal` for `client`; the answer at once if it is reached already.
    pub fn add(&mut self, client: u64, goal: Goal) -> Vec<Answer> {
        let mut answers = Vec::new();
        match done(&goal) {
            Some(fields) => answers.push(final_ok(client, fields)),
            None => self.waits.push((client, goal)),
        }
        answers
    }

    pub fn subscribe(&mut self, client: u64) {
        self.subscribers.push(client);
    }

    /// The client went away: nothing more is sent to it.
    pub fn forget(&mut self, client: u64) {
        self.waits.retain(|(c, _)| *c != client);
        self.subscribers.retain(|&c| c != client);
    }

    pub fn is_empty(&self) -> bool {
        self.waits.is_empty() && self.subscribers.is_empty()
    }

    /// What `report` means for every wait and subscriber; `time` is now, in Unix seconds; `name`
    /// names a worker by its slot (`3`, or `web.3` with groups).
    pub fn observe(
        &mut self,
        report: &Report,
        time: f64,
        name: &dyn Fn(u32) -> WorkerName,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        if let Some(mut event) = event_of(report, time) {
            if let Some(slot) = event["id"].as_u64() {
                let worker = name(slot as u32);
                event["id"] = json!(worker.id);
                if let Some(group) = worker.group {
                    event["group"] = json!(group);
                }
            }
            let line = event.to_string();
            answers.extend(self.subscribers.iter().map(|&client| Answer {
                client,
                line: line.clone(),
                last: false,
                event: true,
            }));
        }
        let stopping = stopping_reason(report, name);
        let mut still = Vec::with_capacity(self.waits.len());
        for (client, mut goal) in std::mem::take(&mut self.waits) {
            if let (Some(reason), false) = (&stopping, goal == Goal::Stop) {
                answers.push(final_error(client, reason));
                continue;
            }
            match advance(&mut goal, report, name) {
                Outcome::Pending(progress) => {
                    if let Some(text) = progress {
                        answers.push(Answer {
                            client,
                            line: protocol::progress(&text),
                            last: false,
                            event: false,
                        });
                    }
                    match done(&goal) {
                        Some(fields) => answers.push(final_ok(client, fields)),
                        None => still.push((client, goal)),
                    }
                }
                Outcome::Done(fields) => answers.push(final_ok(client, fields)),
                Outcome::Failed(reason) => answers.push(final_error(client, &reason)),
            }
        }
        self.waits = still;
        answers
    }

    /// recluster exits with `code`: stop waits are done, any other fails.
    pub fn exiting(&mut self, code: i32) -> Vec<Answer> {
        let mut answers: Vec<Answer> = std::mem::take(&mut self.waits)
            .into_iter()
            .map(|(client, goal)| match goal {
                Goal::Stop => final_ok(client, json!({"status": code})),
                _ => final_error(client, "recluster exited"),
            })
            .collect();
        self.subscribers.clear();
        answers.sort_by_key(|a| a.client);
        answers
    }
}

/// A worker as the user knows it: its `WORKER_ID`, within its group with Procfile groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerName {
    pub group: Option<String>,
    pub id: u32,
}

impl WorkerName {
    /// A cluster without groups: the slot is the id.
    pub fn plain(slot: u32) -> WorkerName {
        WorkerName {
            group: None,
            id: slot,
        }
    }
}

impl std::fmt::Display for WorkerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(group) => write!(f, "{group}.{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

enum Outcome {
    Pending(Option<String>),
    Done(Value),
    Failed(String),
}

/// Moves `goal` along by `report`: a progress line, or a failure.
fn advance(goal: &mut Goal, report: &Report, name: &dyn Fn(u32) -> WorkerName) -> Outcome {
    use Outcome::{Done, Failed, Pending};
    match goal {
        Goal::Reload {
            target,
            replaced,
            of,
        } => match report {
            Report::ReplacementReady {
                id,
                generation,
                pid,
                ..
            } if generation >= target => {
                *replaced += 1;
                Pending(Some(format!(
                    "worker {w} of generation {generation} is ready (pid {pid}): {replaced} of {of}",
                    w = name(*id),
                    of = (*of).max(*replaced)
                )))
            }
            Report::ReloadBegun {
                target: newer,
                superseding: Some(_),
                workers,
                ..
            } if newer > target => {
                *target = *newer;
                *replaced = 0;
                *of = *workers as u32;
                Pending(Some(format!(
                    "superseded by a reload to generation {newer}: waiting for that one"
                )))
            }
            Report::ReloadAbandoned {
                target: abandoned,
                reason,
            } if abandoned >= target => Failed(format!(
                "the reload to generation {abandoned} was abandoned: {reason}"
            )),
            Report::ReloadComplete { target: done, .. } if done >= target => {
                Done(json!({"generation": done}))
            }
            _ => Pending(None),
        },
        Goal::Scale {
            pending_ready,
            pending_gone,
            ..
        } => {
            match report {
                Report::WorkerReady { id, pid } if pending_ready.remove(id) => Pending(Some(
                    format!("worker {w} is ready (pid {pid})", w = name(*id)),
                )),
                Report::Ended {
                    id, pid, status, ..
                } if pending_ready.contains(id) => Failed(format!(
                    "worker {w}{} {status} before it was ready",
                    pid.map_or(String::new(), |p| format!(" (pid {p})")),
                    w = name(*id)
                )),
                Report::Stopped { id, pid, .. } if pending_gone.remove(pid) => Pending(Some(
                    format!("worker {w} (pid {pid}) has exited", w = name(*id)),
                )),
                // A later scale-down took a slot this one added.
                Report::ScaledDown {
                    workers: now, id, ..
                } if pending_ready.contains(id) => Failed(format!(
                    "the cluster was scaled to {} meanwhile",
                    crate::text::plural::plural(*now as u64, "worker", "workers")
                )),
                _ => Pending(None),
            }
        }
        Goal::Restart { slots } => advance_restart(slots, report, name),
        Goal::Stop => match report {
            Report::StopRequested {
                workers, signal, ..
            } => Pending(Some(format!(
                "stopping {} with {signal}",
                crate::text::plural::plural(*workers as u64, "worker", "workers")
            ))),
            _ => Pending(None),
        },
    }
}

/// Moves a restart along by `report`: each slot from queued to its new worker ready and the old
/// one gone.
fn advance_restart(
    slots: &mut BTreeMap<u32, Step>,
    report: &Report,
    name: &dyn Fn(u32) -> WorkerName,
) -> Outcome {
    use Outcome::{Failed, Pending};
    let mut progress = None;
    match report {
        Report::RestartBegun { id, pid } => {
            if let Some(step) = slots.get_mut(id)
                && *step == Step::Queued
            {
                *step = match pid {
                    Some(old) => Step::Replacing { old: *old },
                    None => Step::Starting,
                };
            }
        }
        Report::ReplacementReady { id, pid, old, .. } => {
            if let Some(step @ Step::Replacing { .. }) = slots.get_mut(id) {
                progress = Some(format!(
                    "worker {w}: the new worker is ready (pid {pid})",
                    w = name(*id)
                ));
                match old {
                    Some(old) => *step = Step::Retiring { old: *old },
                    None => {
                        slots.remove(id);
                    }
                }
            }
        }
        Report::Stopped { id, pid, .. } if slots.get(id) == Some(&Step::Retiring { old: *pid }) => {
            slots.remove(id);
            progress = Some(format!(
                "worker {w}: the old worker (pid {pid}) has exited",
                w = name(*id)
            ));
        }
        Report::WorkerReady { id, pid } if slots.get(id) == Some(&Step::Starting) => {
            slots.remove(id);
            progress = Some(format!("worker {w} is ready (pid {pid})", w = name(*id)));
        }
        Report::ReplacementFailed { id, reason } if slots.contains_key(id) => {
            return Failed(format!(
                "worker {w}: {reason}; the old worker keeps serving",
                w = name(*id)
            ));
        }
        Report::Ended { id, status, .. } if slots.get(id) == Some(&Step::Starting) => {
            return Failed(format!(
                "worker {w} {status} before it was ready",
                w = name(*id)
            ));
        }
        // Nothing more of this restart will be reported.
        Report::ScaledDown { id, .. } if slots.contains_key(id) => {
            return Failed(format!("worker {w} was scaled away", w = name(*id)));
        }
        Report::ReloadBegun { target, .. }
            if slots.values().any(|s| !matches!(s, Step::Retiring { .. })) =>
        {
            return Failed(format!(
                "a reload to generation {target} began and replaces the workers itself"
            ));
        }
        _ => {}
    }
    Pending(progress)
}

/// The final fields if `goal` is reached.
fn done(goal: &Goal) -> Option<Value> {
    match goal {
        Goal::Scale {
            answer,
            pending_ready,
            pending_gone,
        } if pending_ready.is_empty() && pending_gone.is_empty() => Some(answer.clone()),
        Goal::Restart { slots } if slots.is_empty() => Some(json!({})),
        _ => None,
    }
}

/// Why every wait but stop fails now, if the cluster begins to stop with this report.
fn stopping_reason(report: &Report, name: &dyn Fn(u32) -> WorkerName) -> Option<String> {
    match report {
        Report::StopRequested { signal, .. } => Some(format!("the cluster is stopping ({signal})")),
        Report::Ended {
            id,
            then: Then::GivingUp {
                ends_cluster: true, ..
            },
            ..
        } => Some(format!(
            "the cluster is stopping: worker {w} restarted too often (--max-restarts)",
            w = name(*id)
        )),
        Report::Ended {
            id,
            then: Then::EndsCluster,
            ..
        } => Some(format!(
            "the cluster is stopping: worker {w} ended (--exit-on any-exit)",
            w = name(*id)
        )),
        Report::BelowMinimum { able, minimum } => Some(format!(
            "the cluster is stopping: only {able} worker slots can run (--exit-on below:{minimum})"
        )),
        Report::Finished => Some("the cluster is stopping: no worker is left to run".to_string()),
        _ => None,
    }
}

fn final_ok(client: u64, fields: Value) -> Answer {
    Answer {
        client,
        line: protocol::ok(fields),
        last: true,
        event: false,
    }
}

fn final_error(client: u64, message: &str) -> Answer {
    Answer {
        client,
        line: protocol::error(message),
        last: true,
        event: false,
    }
}

/// A process's end as event fields.
fn status_fields(status: ProcessStatus) -> Value {
    match status {
        ProcessStatus::Exited(code) => json!({"code": code, "signal": null}),
        ProcessStatus::Killed(sig) => json!({"code": null, "signal": sig.to_string()}),
    }
}

/// The event line a report gives `events` subscribers, if any.
pub fn event_of(report: &Report, time: f64) -> Option<Value> {
    let mut event = match report {
        Report::Started {
            id,
            pid,
            generation,
        } => json!({"event": "spawned", "id": id, "pid": pid, "generation": generation}),
        Report::WorkerReady { id, pid } => json!({"event": "ready", "id": id, "pid": pid}),
        Report::ReplacementReady {
            id,
            generation,
            pid,
            old,
        } => {
            json!({"event": "ready", "id": id, "pid": pid, "generation": generation, "replaces": old})
        }
        Report::Ended {
            id,
            pid,
            status,
            then,
        } => {
            let (then, delay) = match then {
                Then::Nothing => ("nothing", None),
                Then::ReplacementTakesOver { .. } => ("replacement takes over", None),
                Then::NotRestarted { .. } => ("not restarted", None),
                Then::Restarting { delay } => ("restarting", Some(delay.as_secs_f64())),
                Then::GivingUp { .. } => ("giving up", None),
                Then::EndsCluster => ("ends the cluster", None),
            };
            let mut event = json!({"event": "exited", "id": id, "pid": pid, "then": then, "restart_delay_seconds": delay});
            merge(&mut event, status_fields(*status));
            event
        }
        Report::Stopped { id, pid, status } => {
            let mut event =
                json!({"event": "exited", "id": id, "pid": pid, "then": "stopped by recluster"});
            merge(&mut event, status_fields(*status));
            event
        }
        Report::ReloadBegun { target, .. } => {
            json!({"event": "reload_started", "generation": target})
        }
        Report::ReloadComplete { target, .. } => {
            json!({"event": "reload_done", "generation": target})
        }
        Report::ReloadAbandoned { target, reason } => {
            json!({"event": "reload_abandoned", "generation": target, "reason": reason})
        }
        Report::ScaledUp { workers, .. } | Report::ScaledDown { workers, .. } => {
            json!({"event": "scaled", "workers": workers})
        }
        Report::RestartBegun { id, pid } => json!({"event": "restart", "id": id, "pid": pid}),
        Report::Recycling { id, pid, ran } => {
            json!({"event": "recycle", "id": id, "pid": pid, "ran_seconds": ran.as_secs_f64()})
        }
        Report::StopRequested { signal, .. } => {
            json!({"event": "stopping", "signal": signal.to_string()})
        }
        Report::Finished => json!({"event": "stopping", "reason": "no worker is left to run"}),
        Report::Exiting { code } => json!({"event": "exiting", "status": code}),
        _ => return None,
    };
    merge(
        &mut event,
        json!({"v": protocol::VERSION, "time": (time * 1000.0).round() / 1000.0}),
    );
    Some(event)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_label(slot: u32) -> WorkerName {
        WorkerName::plain(slot)
    }
    use crate::process::signal::Sig;
    use std::time::Duration;

    fn parse(answer: &Answer) -> Value {
        serde_json::from_str(&answer.line).unwrap()
    }

    fn lasts(answers: &[Answer]) -> Vec<(u64, bool)> {
        answers
            .iter()
            .filter(|a| a.last)
            .map(|a| (a.client, parse(a)["ok"].as_bool().unwrap()))
            .collect()
    }

    #[test]
    fn a_reload_wait_ends_with_the_reload_it_asked_for_or_a_newer_one() {
        let mut waits = Waits::default();
        assert!(
            waits
                .add(
                    1,
                    Goal::Reload {
                        target: 3,
                        replaced: 0,
                        of: 2
                    }
                )
                .is_empty()
        );
        let older = Report::ReloadComplete {
            target: 2,
            workers: 2,
        };
        assert!(lasts(&waits.observe(&older, 0.0, &id_label)).is_empty());
        let newer = Report::ReloadBegun {
            origin: crate::supervisor::report::Origin::Signal,
            target: 4,
            workers: 2,
            superseding: Some(3),
        };
        let answers = waits.observe(&newer, 0.0, &id_label);
        assert!(answers[0].line.contains("superseded"), "{answers:?}");
        let complete = Report::ReloadComplete {
            target: 4,
            workers: 2,
        };
        assert_eq!(
            lasts(&waits.observe(&complete, 0.0, &id_label)),
            vec![(1, true)]
        );
        assert!(waits.is_empty());
    }

    #[test]
    fn an_abandoned_reload_fails_its_wait_with_the_reason() {
        let mut waits = Waits::default();
        waits.add(
            7,
            Goal::Reload {
                target: 1,
                replaced: 0,
                of: 2,
            },
        );
        let answers = waits.observe(
            &Report::ReloadAbandoned {
                target: 1,
                reason: "worker 0 exited with status 3 before it was ready".to_string(),
            },
            0.0,
            &id_label,
        );
        assert_eq!(lasts(&answers), vec![(7, false)]);
        assert!(
            parse(&answers[0])["error"]
                .as_str()
                .unwrap()
                .contains("status 3")
        );
    }

    #[test]
    fn progress_names_workers_as_the_cluster_does() {
        let mut waits = Waits::default();
        waits.add(
            1,
            Goal::Scale {
                answer: json!({"workers": 4}),
                pending_ready: [3].into(),
                pending_gone: BTreeSet::new(),
            },
        );
        let web = |slot: u32| WorkerName {
            group: Some("web".to_string()),
            id: slot - 1,
        };
        waits.subscribe(2);
        let answers = waits.observe(&Report::WorkerReady { id: 3, pid: 50 }, 0.0, &web);
        let progress = answers.iter().find(|a| a.client == 1).unwrap();
        assert!(
            progress.line.contains("worker web.2 is ready (pid 50)"),
            "{}",
            progress.line
        );
        let event = parse(answers.iter().find(|a| a.client == 2).unwrap());
        assert_eq!((&event["group"], &event["id"]), (&json!("web"), &json!(2)));
    }

    #[test]
    fn a_scale_wait_needs_new_workers_ready_and_removed_ones_gone() {
        let mut waits = Waits::default();
        waits.add(
            1,
            Goal::Scale {
                answer: json!({"workers": 3}),
                pending_ready: [2].into(),
                pending_gone: BTreeSet::new(),
            },
        );
        waits.add(
            2,
            Goal::Scale {
                answer: json!({"workers": 1}),
                pending_ready: BTreeSet::new(),
                pending_gone: [40].into(),
            },
        );
        let ready = Report::WorkerReady { id: 2, pid: 50 };
        assert_eq!(
            lasts(&waits.observe(&ready, 0.0, &id_label)),
            vec![(1, true)]
        );
        let gone = Report::Stopped {
            id: 1,
            pid: 40,
            status: ProcessStatus::Killed(Sig::TERM),
        };
        assert_eq!(
            lasts(&waits.observe(&gone, 0.0, &id_label)),
            vec![(2, true)]
        );
    }

    #[test]
    fn a_new_worker_that_dies_before_ready_fails_the_scale_wait() {
        let mut waits = Waits::default();
        waits.add(
            1,
            Goal::Scale {
                answer: json!({"workers": 2}),
                pending_ready: [1].into(),
                pending_gone: BTreeSet::new(),
            },
        );
        let ended = Report::Ended {
            id: 1,
            pid: Some(9),
            status: ProcessStatus::Exited(1),
            then: Then::Restarting {
                delay: Duration::from_millis(100),
            },
        };
        assert_eq!(
            lasts(&waits.observe(&ended, 0.0, &id_label)),
            vec![(1, false)]
        );
    }

    #[test]
    fn a_restart_wait_follows_each_slot_to_its_old_worker_gone() {
        let mut waits = Waits::default();
        let slots = [(0, Step::Queued), (1, Step::Queued)].into();
        waits.add(5, Goal::Restart { slots });
        let steps = [
            Report::RestartBegun {
                id: 0,
                pid: Some(10),
            },
            Report::RestartBegun { id: 1, pid: None },
            Report::ReplacementReady {
                id: 0,
                generation: 0,
                pid: 20,
                old: Some(10),
            },
            Report::WorkerReady { id: 1, pid: 21 },
        ];
        for report in &steps {
            assert!(
                lasts(&waits.observe(report, 0.0, &id_label)).is_empty(),
                "{report:?}"
            );
        }
        let gone = Report::Stopped {
            id: 0,
            pid: 10,
            status: ProcessStatus::Killed(Sig::TERM),
        };
        assert_eq!(
            lasts(&waits.observe(&gone, 0.0, &id_label)),
            vec![(5, true)]
        );
    }

    #[test]
    fn a_restart_wait_fails_when_its_slot_is_scaled_away_at_any_step() {
        // A TTOU (or another `ctl scale`) may take the slot while its restart is queued, while
        // the new worker starts, or while the old one is being stopped: no report of the restart
        // follows, and the wait must not hang.
        for step in [
            Step::Queued,
            Step::Starting,
            Step::Replacing { old: 10 },
            Step::Retiring { old: 10 },
        ] {
            let mut waits = Waits::default();
            waits.add(
                5,
                Goal::Restart {
                    slots: [(3, step)].into(),
                },
            );
            let scaled = Report::ScaledDown {
                origin: crate::supervisor::report::Origin::Signal,
                workers: 3,
                id: 3,
            };
            let answers = waits.observe(&scaled, 0.0, &id_label);
            assert_eq!(lasts(&answers), vec![(5, false)], "{step:?}");
            assert!(
                answers[0].line.contains("worker 3 was scaled away"),
                "{}",
                answers[0].line
            );
        }
    }

    #[test]
    fn a_failed_replacement_fails_the_restart_wait() {
        let mut waits = Waits::default();
        waits.add(
            5,
            Goal::Restart {
                slots: [(0, Step::Replacing { old: 10 })].into(),
            },
        );
        let failed = Report::ReplacementFailed {
            id: 0,
            reason: "worker 0 exited with status 1 before it was ready".to_string(),
        };
        assert_eq!(
            lasts(&waits.observe(&failed, 0.0, &id_label)),
            vec![(5, false)]
        );
    }

    #[test]
    fn a_stop_fails_every_wait_but_the_stop_wait_which_ends_at_exit() {
        let mut waits = Waits::default();
        waits.add(
            1,
            Goal::Reload {
                target: 1,
                replaced: 0,
                of: 2,
            },
        );
        waits.add(2, Goal::Stop);
        waits.subscribe(3);
        let stop = Report::StopRequested {
            origin: crate::supervisor::report::Origin::Control,
            signal: Sig::TERM,
            workers: 2,
            timeout: Duration::from_secs(8),
        };
        let answers = waits.observe(&stop, 0.0, &id_label);
        assert_eq!(lasts(&answers), vec![(1, false)]);
        assert!(answers.iter().any(|a| a.client == 3 && a.event));
        assert!(answers.iter().any(|a| a.client == 2 && !a.last));
        assert_eq!(lasts(&waits.exiting(0)), vec![(2, true)]);
    }

    #[test]
    fn events_carry_the_exit_status_and_time() {
        let event = event_of(
            &Report::Ended {
                id: 2,
                pid: Some(77),
                status: ProcessStatus::Killed(Sig::KILL),
                then: Then::Restarting {
                    delay: Duration::from_millis(200),
                },
            },
            1234.5,
        )
        .unwrap();
        assert_eq!(event["event"], "exited");
        assert_eq!(event["signal"], "SIGKILL");
        assert_eq!(event["then"], "restarting");
        assert_eq!(event["time"], 1234.5);
        assert!(event_of(&Report::LastWorkerKept, 0.0).is_none());
    }
}
