//! How the admin thread answers a whole request head: it routes it (method, `Host`, path) and
//! gets its answer. These are methods of `server::Thread`; the connections themselves (reading,
//! writing, deadlines, limits) are `server`'s.
//!
//! The probes ask the supervisor loop: `/livez` is answered when the loop answers a `hello`, and
//! fails when it does not within `LIVEZ_TIMEOUT`, so a wedged supervisor fails it; `/readyz`
//! reads a `status` answer. One question of each kind is in flight at a time, and its answer
//! serves every probe waiting for it, so a crowd of probes is one question to the loop.
//! `/status`, `/metrics` and `/` are served from a copy of the cluster that `cache` builds on a
//! thread of its own (at most once a second, one build at a time): this thread only hands it the
//! loop's snapshot and writes the texts it made, so it never walks /proc or renders a page while
//! a probe waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::cache::{Builder, Kinds};
use super::http::{self, Response};
use super::metrics;
use super::probes;
use super::server::{LIVEZ_TIMEOUT, Phase, Route, Thread};
use crate::frontend::control::replies::Reply;
use crate::frontend::request::{Frontend, Request};
use crate::supervisor::event::Event;
use crate::supervisor::snapshot::Snapshot;

/// How long the endpoints other than `/livez` wait for the supervisor loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The client ids of this thread's two questions to the supervisor loop (connections are never
/// its clients: one question serves every probe waiting).
const HELLO: u64 = 1;
const STATUS: u64 = 2;

impl Thread {
    /// A whole head: answer at once, or wait for the loop or the copy.
    pub(super) fn serve(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(end) = http::head_end(&connection.input) else {
            if connection.input.len() > http::MAX_HEAD {
                let too_big = Response::text(431, "the request head is too large\n");
                self.respond(id, too_big, false);
            }
            return;
        };
        self.admission.head_read(id);
        if end > http::MAX_HEAD {
            let too_big = Response::text(431, "the request head is too large\n");
            self.respond(id, too_big, false);
            return;
        }
        let request = match http::parse(&connection.input[..end]) {
            Ok(request) => request,
            Err(response) => {
                self.respond(id, response, false);
                return;
            }
        };
        self.head_bytes = self.head_bytes.saturating_sub(connection.input.len());
        connection.input = Vec::new();
        let head_only = request.method == "HEAD";
        if request.method != "GET" && !head_only {
            let refused = Response::text(
                405,
                "read-only: only GET and HEAD (change the cluster with recluster ctl)\n",
            );
            self.respond(id, refused, false);
            return;
        }
        if !http::host_allowed(request.host.as_deref(), request.http10, &self.address) {
            debug!(
                "admin endpoint: refused a request for Host {:?}",
                request.host.as_deref().unwrap_or("")
            );
            let refused = Response::text(
                403,
                "this Host is not the address recluster's admin endpoint listens on\n",
            );
            self.respond(id, refused, head_only);
            return;
        }
        let route = match request.path.as_str() {
            "/livez" => Route::Livez,
            "/readyz" => Route::Readyz {
                verbose: request
                    .query
                    .split('&')
                    .any(|p| p == "verbose" || p.starts_with("verbose=")),
            },
            "/status" => Route::Status,
            "/metrics" => Route::Metrics {
                openmetrics: metrics::wants_openmetrics(&request.accept),
            },
            "/" | "/index.html" => Route::Page,
            _ => {
                let missing = Response::text(
                    404,
                    "not found: /livez, /readyz, /status, /metrics and / are served here\n",
                );
                self.respond(id, missing, head_only);
                return;
            }
        };
        let now = Instant::now();
        match route.kind() {
            None => {
                let timeout = if route == Route::Livez {
                    LIVEZ_TIMEOUT
                } else {
                    ANSWER_TIMEOUT
                };
                connection.phase = Phase::Waiting { route, head_only };
                connection.deadline = now + timeout;
                self.hold(id);
                self.ask(if route == Route::Livez { HELLO } else { STATUS });
            }
            Some(kind) => {
                let served = self
                    .cached
                    .as_ref()
                    .filter(|c| c.fresh(now))
                    .and_then(|c| c.text(kind));
                if let Some(text) = served {
                    self.respond_with(id, text, head_only);
                    return;
                }
                connection.phase = Phase::Waiting { route, head_only };
                connection.deadline = now + ANSWER_TIMEOUT;
                self.hold(id);
                self.build();
            }
        }
    }

    /// Stops watching a waiting connection until its answer is ready: anything more it sends
    /// would wake this thread again and again (one request per connection), and one that went
    /// away is found out when its answer is written, or at its deadline.
    fn hold(&mut self, id: u64) {
        if let Some(connection) = self.connections.get(&id) {
            let _ = self.epoll.modify(
                connection.stream.fd(),
                &mut EpollEvent::new(EpollFlags::empty(), id),
            );
        }
    }

    /// Asks the loop `hello` or `status`, unless that question is in flight already (its answer
    /// will serve this one too).
    fn ask(&mut self, question: u64) {
        let now = Instant::now();
        let (asked, timeout, request) = match question {
            HELLO => (&mut self.hello, LIVEZ_TIMEOUT, Request::Hello),
            _ => (&mut self.status, ANSWER_TIMEOUT, Request::Status),
        };
        if asked.is_some_and(|at| now < at + timeout) {
            return;
        }
        *asked = Some(now);
        let sent = self.events.send(Event::Control {
            client: question,
            request,
            frontend: Frontend::Admin,
        });
        if sent.is_err() {
            let gone = Response::text(503, "recluster is exiting\n");
            self.answer_waiting(|_| true, |_| gone.clone());
        }
    }

    /// Gets the texts the waiting requests need made: from the current copy while it is fresh,
    /// else from a new one, after asking the loop. One at a time: the copy being made is looked
    /// at again when it is done.
    fn build(&mut self) {
        if self.building {
            return;
        }
        if self.refresh {
            self.ask(STATUS); // asks again if the last question went unanswered
            return;
        }
        let wanted = self.wanted();
        if wanted.is_empty() {
            return;
        }
        match self.cached.clone().filter(|c| c.fresh(Instant::now())) {
            Some(cached) => {
                if let Some(builder) = self.builder() {
                    self.building = builder.render(cached, wanted);
                }
            }
            None => {
                self.refresh = true;
                self.ask(STATUS);
            }
        }
        if !self.building && !self.refresh {
            let broken = Response::text(503, "the admin endpoint cannot build its answers\n");
            self.answer_waiting(|r| r.kind().is_some(), |_| broken.clone());
        }
    }

    /// The texts the waiting requests need.
    fn wanted(&self) -> Kinds {
        let mut wanted = Kinds::default();
        for connection in self.connections.values() {
            if let Phase::Waiting { route, .. } = connection.phase
                && let Some(kind) = route.kind()
            {
                wanted.add(kind);
            }
        }
        wanted
    }

    /// The builder thread, started the first time.
    fn builder(&mut self) -> Option<&Builder> {
        if self.builder.is_none() {
            match Builder::start(self.wake.clone()) {
                Ok(builder) => self.builder = Some(builder),
                Err(e) => debug!("admin endpoint: cannot start its builder thread: {e}"),
            }
        }
        self.builder.as_ref()
    }

    /// Takes what the supervisor answered; false when it is time to end.
    pub(super) fn take_replies(&mut self) -> bool {
        while let Ok(reply) = self.replies.try_recv() {
            match reply {
                Reply::Shutdown => return false,
                Reply::Line { client: HELLO, .. } => {
                    self.hello = None;
                    let ok = Response::text(200, "ok\n");
                    self.answer_waiting(|r| r == Route::Livez, |_| ok.clone());
                }
                Reply::Status {
                    client: STATUS,
                    snapshot,
                } => self.take_status(snapshot),
                _ => {}
            }
        }
        true
    }

    /// A `status` answer: the waiting `/readyz` requests get it, and a new copy is made of it if
    /// one was wanted.
    fn take_status(&mut self, snapshot: Box<Snapshot>) {
        let asked = self.status.take().unwrap_or_else(Instant::now);
        let quorum = self.quorum;
        let readiness = probes::readiness(&snapshot, quorum);
        self.answer_waiting(
            |r| matches!(r, Route::Readyz { .. }),
            |route| {
                let (ready, checks) = &readiness;
                let verbose = route == Route::Readyz { verbose: true };
                let body = if *ready && !verbose { "ok\n" } else { checks };
                Response::text(if *ready { 200 } else { 503 }, body)
            },
        );
        if !self.refresh {
            return;
        }
        self.refresh = false;
        let wanted = self.wanted();
        if wanted.is_empty() || self.building {
            return;
        }
        if let Some(builder) = self.builder() {
            self.building = builder.refresh(snapshot, asked, wanted);
        }
        if !self.building {
            let broken = Response::text(503, "the admin endpoint cannot build its answers\n");
            self.answer_waiting(|r| r.kind().is_some(), |_| broken.clone());
        }
    }

    /// A copy the builder made: the requests waiting for it get their texts.
    pub(super) fn take_copy(&mut self) {
        let Some(cached) = self.builder.as_ref().and_then(Builder::take) else {
            return;
        };
        self.building = false;
        let waiting: Vec<(u64, Arc<Response>, bool)> = self
            .connections
            .iter()
            .filter_map(|(&id, c)| match c.phase {
                Phase::Waiting { route, head_only } => {
                    let text = cached.text(route.kind()?)?;
                    Some((id, text, head_only))
                }
                _ => None,
            })
            .collect();
        self.cached = Some(cached);
        for (id, text, head_only) in waiting {
            self.respond_with(id, text, head_only);
        }
        // Requests that came while it was made, for another text.
        self.build();
    }

    /// Answers every waiting request whose route passes `which` with `answer(route)`.
    fn answer_waiting(
        &mut self,
        which: impl Fn(Route) -> bool,
        answer: impl Fn(Route) -> Response,
    ) {
        let waiting: Vec<(u64, Route, bool)> = self
            .connections
            .iter()
            .filter_map(|(&id, c)| match c.phase {
                Phase::Waiting { route, head_only } if which(route) => Some((id, route, head_only)),
                _ => None,
            })
            .collect();
        for (id, route, head_only) in waiting {
            self.respond(id, answer(route), head_only);
        }
    }
}
