//! The copy of the cluster that `/status`, `/metrics` and `/` are served from, and the thread
//! that builds it. Building one walks /proc (every live worker's memory and CPU time) and writes
//! texts that grow with the number of workers, so it is done on a thread of its own, one job at a
//! time, never on the thread that accepts connections and answers the probes: that thread hands
//! over the supervisor's snapshot (`Job::Refresh`), or asks for another text of the current copy
//! (`Job::Render`), and is woken when the new copy is ready. A copy is refreshed at most once per
//! `REFRESH`; until then every request for it is served the same bytes (shared, not copied).

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;

use super::http::Response;
use super::metrics::{self, SelfProcess};
use super::page;
use crate::supervisor::snapshot::Snapshot;

/// How long a copy is served before the next request asks for a new one.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The texts made from a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status,
    Prometheus,
    OpenMetrics,
    Page,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Status,
        Kind::Prometheus,
        Kind::OpenMetrics,
        Kind::Page,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of `Kind`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub fn add(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.0 & k.bit() != 0)
    }
}

/// A measured snapshot and the texts made from it so far.
pub struct Cached {
    /// When the supervisor was asked for the snapshot.
    pub asked: Instant,
    snapshot: Arc<Snapshot>,
    me: SelfProcess,
    texts: [Option<Arc<Response>>; 4],
}

impl Cached {
    /// Whether it may still be served at `now`.
    pub fn fresh(&self, now: Instant) -> bool {
        now < self.asked + REFRESH
    }

    pub fn text(&self, kind: Kind) -> Option<Arc<Response>> {
        self.texts[kind as usize].clone()
    }
}

/// What the builder thread is asked to do.
enum Job {
    /// Measure this snapshot (asked of the supervisor at `asked`) and write `kinds` of it.
    Refresh {
        snapshot: Box<Snapshot>,
        asked: Instant,
        kinds: Kinds,
    },
    /// Write `kinds` more of the current copy.
    Render { of: Arc<Cached>, kinds: Kinds },
}

/// The builder thread, as the serving thread sees it: at most one job at a time is given.
pub struct Builder {
    jobs: Option<Sender<Job>>,
    done: Receiver<Arc<Cached>>,
    thread: Option<JoinHandle<()>>,
}

impl Builder {
    /// Starts the thread; `wake` is written when a copy is ready.
    pub fn start(wake: Arc<EventFd>) -> io::Result<Builder> {
        let (jobs, inbox) = crossbeam_channel::bounded::<Job>(1);
        let (outbox, done) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("admin-build".to_string())
            .stack_size(256 * 1024)
            .spawn(move || {
                for job in inbox {
                    let built = Arc::new(build(job));
                    if outbox.send(built).is_err() {
                        return;
                    }
                    let _ = wake.write(1);
                }
            })?;
        Ok(Builder {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Measures `snapshot` into a new copy with `kinds` written. False if the thread is gone.
    pub fn refresh(&self, snapshot: Box<Snapshot>, asked: Instant, kinds: Kinds) -> bool {
        self.give(Job::Refresh {
            snapshot,
            asked,
            kinds,
        })
    }

    /// Writes `kinds` more of `of`. False if the thread is gone.
    pub fn render(&self, of: Arc<Cached>, kinds: Kinds) -> bool {
        self.give(Job::Render { of, kinds })
    }

    fn give(&self, job: Job) -> bool {
        // One job at a time (the caller waits for its copy before the next), so never full.
        self.jobs.as_ref().is_some_and(|j| j.try_send(job).is_ok())
    }

    /// The copy the last job made, if it is done.
    pub fn take(&self) -> Option<Arc<Cached>> {
        self.done.try_recv().ok()
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        self.jobs = None; // ends its loop once the job at hand is done
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn build(job: Job) -> Cached {
    let (mut cached, kinds) = match job {
        Job::Refresh {
            mut snapshot,
            asked,
            kinds,
        } => {
            snapshot.measure();
            let cached = Cached {
                asked,
                snapshot: Arc::from(snapshot),
                me: SelfProcess::read(),
                texts: Default::default(),
            };
            (cached, kinds)
        }
        Job::Render { of, kinds } => {
            let cached = Cached {
                asked: of.asked,
                snapshot: of.snapshot.clone(),
                me: of.me,
                texts: of.texts.clone(),
            };
            (cached, kinds)
        }
    };
    for kind in kinds.iter() {
        if cached.texts[kind as usize].is_none() {
            cached.texts[kind as usize] = Some(Arc::new(render(kind, &cached)));
        }
    }
    cached
}

fn render(kind: Kind, cached: &Cached) -> Response {
    let snapshot = &cached.snapshot;
    match kind {
        Kind::Status => {
            // The same document as `recluster ctl status --json`.
            let fields = serde_json::to_value(&**snapshot).unwrap_or_default();
            let json = format!("{}\n", crate::frontend::control::protocol::ok(fields));
            Response::new(200, "application/json", json)
        }
        Kind::Prometheus | Kind::OpenMetrics => {
            let openmetrics = kind == Kind::OpenMetrics;
            let text = metrics::render(snapshot, &cached.me, openmetrics);
            let content_type = if openmetrics {
                metrics::OPENMETRICS_TYPE
            } else {
                metrics::PROMETHEUS_TYPE
            };
            Response::new(200, content_type, text)
        }
        Kind::Page => Response::new(200, "text/html; charset=utf-8", page::render(snapshot)),
    }
}
