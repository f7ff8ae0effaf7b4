//! What happens when a slot's own worker ends (or could not be spawned): how its end counts for
//! the exit status, whether `--restart` starts it again, after which backoff (`--restart-delay`
//! doubling up to `--restart-max-delay` for deaths before `--min-uptime`), and the crash-loop
//! limit (`--max-restarts` within `--restart-window`), which gives up and stops the cluster (or,
//! under `--exit-on below:K` or `--critical`, only the slot: `exit_policy`); under `--exit-on
//! any-exit` the end itself stops the cluster.

use std::time::{Duration, Instant};

use crate::config::policy::{ExitOn, RestartMode};
use crate::process::signal::Sig;
use crate::process::status::ProcessStatus;

use super::stop::Outcome;
use super::worker::{Worker, later};
use super::{Action, Cluster, End, Report, Then, backoff};

impl Cluster {
    /// A slot's worker ended with `status` (its record already taken out of the slot): record
    /// how, and decide about a restart.
    pub(super) fn slot_ended(
        &mut self,
        index: usize,
        worker: Worker,
        status: ProcessStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let clean = worker.ended_cleanly(status);
        let failed_start = worker.failed();
        let uptime = worker.started().map_or(Duration::ZERO, |started| {
            now.saturating_duration_since(started)
        });
        let policy = self.policy.clone();
        let running = self.is_running();
        let slot = &mut self.slots[index];
        slot.last_end = Some(End { status, clean });
        let (id, pid) = (slot.id, worker.pid());
        let ended = |then| Report::Ended {
            id,
            pid,
            status,
            then,
        };
        if !running {
            self.report(ended(Then::Nothing));
            return;
        }
        if policy.exit_on == ExitOn::AnyExit {
            self.report(ended(Then::EndsCluster));
            actions.extend(self.begin_stop(policy.stop_signal, Outcome::DecidedBy(status), now));
            return;
        }
        let restart = if slot.once {
            false // a one-shot group's worker is never started again
        } else if failed_start {
            policy.restart != RestartMode::Never
        } else {
            restarts_after(policy.restart, status)
        };
        if !restart {
            let once = slot.once;
            self.report(ended(Then::NotRestarted {
                mode: if once {
                    "never: --once".to_string()
                } else {
                    restart_mode_name(policy.restart)
                },
            }));
            actions.extend(self.check_below(status, now));
            return;
        }
        let delay = if uptime >= policy.min_uptime && !failed_start {
            slot.early_deaths = 0;
            Duration::ZERO
        } else {
            slot.early_deaths = slot.early_deaths.saturating_add(1);
            backoff(&policy, slot.early_deaths)
        };
        if let Some(limit) = policy.crash_limit {
            while slot
                .restarts
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= limit.window)
            {
                slot.restarts.pop_front();
            }
            slot.restarts.push_back(now);
            if slot.restarts.len() > limit.max_restarts as usize {
                let ends_cluster = self.give_up_ends_cluster(index);
                self.report(ended(Then::GivingUp {
                    max_restarts: limit.max_restarts,
                    window: limit.window,
                    ends_cluster,
                }));
                if ends_cluster {
                    actions.extend(self.begin_stop(
                        policy.stop_signal,
                        Outcome::DecidedBy(status),
                        now,
                    ));
                } else {
                    actions.extend(self.give_up_alone(index, status, now));
                }
                return;
            }
        }
        let then = match slot.replacement {
            Some(replacement) => Then::ReplacementTakesOver {
                generation: replacement.generation(),
            },
            None => Then::Restarting { delay },
        };
        self.report(ended(then));
        self.slots[index].restart_count += 1;
        // Held back while a replacement is on its way; it runs if that one fails.
        self.schedule_spawn(index, later(now, delay));
    }
}

/// systemd's rule for Restart=on-failure: a clean end is status 0 or death by HUP, INT, TERM, PIPE.
pub(super) fn restarts_after(mode: RestartMode, status: ProcessStatus) -> bool {
    match mode {
        RestartMode::Always => true,
        RestartMode::Never => false,
        RestartMode::OnFailure => match status {
            ProcessStatus::Exited(code) => code != 0,
            ProcessStatus::Killed(sig) => {
                ![Sig::HUP, Sig::INT, Sig::TERM].contains(&sig) && sig.number() != libc::SIGPIPE
            }
        },
    }
}

/// The flag's own spelling of a restart mode (`on-failure`), from the CLI definition.
fn restart_mode_name(mode: RestartMode) -> String {
    clap::ValueEnum::to_possible_value(&mode).map_or_else(String::new, |v| v.get_name().to_string())
}
