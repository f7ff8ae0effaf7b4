//! The graceful stop: with `--stop-delay`, first a delay in which `/readyz` answers 503, the
//! service manager has heard `STOPPING=1` and every worker keeps serving (nothing is spawned,
//! reloaded or scaled; a worker that exits is not restarted), ended early by a second stop
//! signal or by the last worker's end; then every worker gets the stop signal, SIGKILL for
//! what remains after `--kill-timeout`, then the processes the workers left behind; and the exit
//! status once nothing is left. Also when the cluster stops by itself: every worker ended and none
//! is to be restarted, or a crash loop gave up. A stop signal repeated within `REPEAT_WINDOW` of
//! the one that began the stop is the same request (GNU `timeout` signals both recluster and its
//! group; npm-style wrappers forward a Ctrl-C the terminal already sent); a later one kills.

use std::time::{Duration, Instant};

use crate::exit_code;
use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;

use super::timers::Key;
use super::worker::{State, StopReason, Worker, later};
use super::{Action, Cluster, Occupant, Report};

/// How long after the stop signal that began a stop the same signal again is taken as the same
/// request rather than as "kill now": long enough for a wrapper's copy of it, short enough that
/// a person pressing Ctrl-C a second time gets the kill.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    Running,
    /// `--stop-delay`: a graceful stop was asked for; the workers get `signal` at `until`.
    Delaying(Delay),
    Stopping(Stop),
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Delay {
    pub until: Instant,
    /// The signal the workers will get.
    signal: Sig,
    /// The signal that asked for the stop, and until when a repeat of it is the same request.
    repeats: Option<(Sig, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stop {
    pub signal: Sig,
    pub deadline: Instant,
    pub killed: bool,
    orphans_signaled: bool,
    outcome: Outcome,
    /// The signal that began the stop, and until when a repeat of it is the same request.
    repeats: Option<(Sig, Instant)>,
}

/// Why the cluster is stopping; decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Outcome {
    Requested,
    Finished,
    /// A worker's end decided it (a crash-loop give-up, `--exit-on`): its status is the exit
    /// status.
    DecidedBy(ProcessStatus),
}

impl Cluster {
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// A graceful stop that was asked for (a stop signal, `ctl stop`; `asked_by`: the signal, if
    /// one asked): after `--stop-delay`, if there is one, the workers get `signal`.
    pub(super) fn stop_requested(
        &mut self,
        signal: Sig,
        asked_by: Option<Sig>,
        now: Instant,
    ) -> Vec<Action> {
        let delay = self.policy.stop_delay;
        if delay.is_zero() {
            let actions = self.begin_stop(signal, Outcome::Requested, now);
            if let Some(asked_by) = asked_by {
                self.stopped_by_signal(asked_by, now);
            }
            return actions;
        }
        if self.reload.take().is_some() {
            self.report(Report::ReloadCancelled);
        }
        // Nothing is started any more: new workers not ready yet go, and every deadline of the
        // running cluster (respawns, readiness, guards) is dropped. The workers serve on.
        let mut actions = self.drop_replacements(None, now);
        self.restart_queue.clear();
        self.timers.clear();
        // But workers already leaving (those just dropped among them) keep theirs: a drain's
        // next look at its queue, `--kill-timeout`'s SIGKILL.
        for (&pid, worker) in &self.leaving {
            match worker.state {
                State::Stopping {
                    kill_at: Some(at), ..
                }
                | State::Draining {
                    check_at: Some(at), ..
                } => self.timers.push(at, Key::Worker(pid)),
                _ => {}
            }
        }
        self.report(Report::StopDelayed { delay });
        actions.push(Action::NotifyManager(format!(
            "STOPPING=1\nSTATUS=stopping in {} (--stop-delay)",
            humantime::format_duration(delay)
        )));
        self.phase = Phase::Delaying(Delay {
            until: later(now, delay),
            signal,
            repeats: asked_by.map(|sig| (sig, later(now, REPEAT_WINDOW))),
        });
        actions.extend(self.settle(now));
        actions
    }

    /// A stop signal during `--stop-delay`: the same request again (the same signal within
    /// `REPEAT_WINDOW` of the one that asked), or a second one, which ends the delay.
    pub(super) fn stop_signal_while_delaying(&mut self, signal: Sig, now: Instant) -> Vec<Action> {
        let Phase::Delaying(delay) = self.phase else {
            return Vec::new();
        };
        if delay
            .repeats
            .is_some_and(|(first, until)| first == signal && now < until)
        {
            self.report(Report::RepeatedStopSignal {
                signal,
                window: REPEAT_WINDOW,
            });
            return Vec::new();
        }
        self.report(Report::StopDelaySkipped {
            signal: Some(signal),
        });
        let actions = self.end_delay(now);
        // A wrapper's copy of this signal is the same request, not a kill.
        self.stopped_by_signal(signal, now);
        actions
    }

    /// `--stop-delay` is over (or cut short): the workers get the stop signal.
    pub(super) fn end_delay(&mut self, now: Instant) -> Vec<Action> {
        let Phase::Delaying(delay) = self.phase else {
            return Vec::new();
        };
        let actions = self.begin_stop(delay.signal, Outcome::Requested, now);
        if let (Phase::Stopping(stop), Some(repeats)) = (&mut self.phase, delay.repeats) {
            stop.repeats = Some(repeats);
        }
        actions
    }

    pub(super) fn begin_stop(
        &mut self,
        signal: Sig,
        outcome: Outcome,
        now: Instant,
    ) -> Vec<Action> {
        if self.reload.take().is_some() {
            self.report(Report::ReloadCancelled);
        }
        // No deadline of the running cluster matters any more (the stop has its own), and every
        // spawn not carried out yet goes stale.
        self.timers.clear();
        let mut actions = Vec::new();
        for index in 0..self.slots.len() {
            let occupant = match self.take_occupant(index) {
                Occupant::Worker(worker) => self.stop_for_good(worker, signal, &mut actions),
                Occupant::Waiting { .. } | Occupant::Done => Occupant::Done,
                Occupant::Retired => Occupant::Retired,
            };
            self.slots[index].occupant = occupant;
            if let Some(worker) = self.slots[index].replacement.take() {
                self.slots[index].replacement =
                    match self.stop_for_good(worker, signal, &mut actions) {
                        Occupant::Worker(worker) => Some(worker),
                        _ => None,
                    };
            }
        }
        // Workers already leaving got the stop signal and keep it; the stop's deadline applies.
        // One still draining its queue gets the signal now.
        for worker in self.leaving.values_mut() {
            match &mut worker.state {
                State::Stopping { kill_at, .. } => *kill_at = None,
                State::Draining { .. } => {
                    if let Some(pid) = worker.stop(signal, StopReason::ClusterStop, None) {
                        actions.push(Action::SignalGroup { pgid: pid, signal });
                    }
                }
                _ => {}
            }
        }
        actions.push(Action::SignalOrphans {
            signal,
            workers: self.worker_pids(),
        });
        // After --stop-delay the service manager has heard it already.
        if !matches!(self.phase, Phase::Delaying(_)) {
            actions.push(Action::NotifyManager(format!(
                "STOPPING=1\nSTATUS=stopping ({signal})"
            )));
        }
        self.phase = Phase::Stopping(Stop {
            signal,
            deadline: later(now, self.policy.kill_timeout),
            killed: false,
            orphans_signaled: false,
            outcome,
            repeats: None,
        });
        actions.extend(self.settle(now));
        actions
    }

    /// A slot's worker (or replacement) as the stop leaves it: one not spawned yet is dropped,
    /// any other gets `signal` (a failed start stays a failed start).
    fn stop_for_good(
        &mut self,
        mut worker: Worker,
        signal: Sig,
        actions: &mut Vec<Action>,
    ) -> Occupant {
        let reason = match worker.state {
            State::Spawning => {
                self.spawning -= 1;
                return Occupant::Done;
            }
            State::Stopping {
                reason: reason @ (StopReason::MissedReadyTimeout | StopReason::Watchdog),
                ..
            } => reason,
            _ => StopReason::ClusterStop,
        };
        if let Some(pid) = worker.stop(signal, reason, None) {
            actions.push(Action::SignalGroup { pgid: pid, signal });
        }
        Occupant::Worker(worker)
    }

    /// A stop signal that began the stop: its repeats within `REPEAT_WINDOW` are the same request.
    pub(super) fn stopped_by_signal(&mut self, signal: Sig, now: Instant) {
        if let Phase::Stopping(stop) = &mut self.phase {
            stop.repeats = Some((signal, later(now, REPEAT_WINDOW)));
        }
    }

    /// A stop signal received while stopping: the same request again (the same signal within
    /// `REPEAT_WINDOW` of the one that began the stop), or a second request, which kills.
    pub(super) fn stop_signal_again(&mut self, signal: Sig, now: Instant) -> Vec<Action> {
        let Phase::Stopping(stop) = self.phase else {
            return Vec::new();
        };
        if stop
            .repeats
            .is_some_and(|(first, until)| first == signal && now < until)
        {
            self.report(Report::RepeatedStopSignal {
                signal,
                window: REPEAT_WINDOW,
            });
            return Vec::new();
        }
        self.report(Report::SecondStopSignal { signal });
        self.kill_all()
    }

    pub(super) fn kill_all(&mut self) -> Vec<Action> {
        if let Phase::Stopping(stop) = &mut self.phase {
            stop.killed = true;
        }
        vec![Action::KillAll {
            groups: self.worker_pids(),
        }]
    }

    /// `--kill-timeout` ran out while stopping.
    pub(super) fn stop_deadline_passed(&mut self) -> Vec<Action> {
        let Phase::Stopping(stop) = self.phase else {
            return Vec::new();
        };
        self.report(Report::StopTimeout {
            workers: self.places.len(),
            signal: stop.signal,
            timeout: self.policy.kill_timeout,
        });
        self.kill_all()
    }

    /// Moves on when nothing is left to wait for: a finished cluster begins to stop, a stopped one
    /// exits once no worker and no other child of recluster remains.
    pub(super) fn settle(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running => {
                // Cheap first: only when no process is alive or on its way are the slots looked at.
                let idle = self.places.is_empty()
                    && self.spawning == 0
                    && self.slots.iter().all(|s| {
                        matches!(s.occupant, Occupant::Done | Occupant::Retired)
                            && s.replacement.is_none()
                            && !s.held
                    });
                if idle {
                    self.report(Report::Finished);
                    return self.begin_stop(self.policy.stop_signal, Outcome::Finished, now);
                }
                Vec::new()
            }
            // Every worker ended during --stop-delay: nothing is left to serve.
            Phase::Delaying(_) if self.places.is_empty() => self.end_delay(now),
            Phase::Delaying(_) => Vec::new(),
            Phase::Stopping(stop) => {
                if !self.places.is_empty() {
                    return Vec::new();
                }
                if self.children_left {
                    if stop.orphans_signaled || stop.killed {
                        return Vec::new();
                    }
                    self.phase = Phase::Stopping(Stop {
                        orphans_signaled: true,
                        ..stop
                    });
                    self.report(Report::WaitingForLeftBehind);
                    return vec![Action::SignalOrphans {
                        signal: stop.signal,
                        workers: Vec::new(),
                    }];
                }
                let code = self.exit_code(stop.outcome);
                self.phase = Phase::Exited;
                self.report(Report::Exiting { code });
                vec![Action::Exit(code)]
            }
            Phase::Exited => Vec::new(),
        }
    }

    /// 0 when every slot's last worker ended cleanly; else the lowest unclean slot's status; after a
    /// crash-loop give-up or an `--exit-on` decision, the status of the worker whose end decided.
    fn exit_code(&self, outcome: Outcome) -> i32 {
        if let Outcome::DecidedBy(status) = outcome {
            return status.code();
        }
        self.slots
            .iter()
            .filter(|s| s.occupant != Occupant::Retired)
            .filter_map(|s| s.last_end)
            .find(|end| !end.clean)
            .map_or(exit_code::SUCCESS, |end| end.status.code())
    }
}
