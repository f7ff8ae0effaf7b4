//! The `--admin` thread: one epoll set over the listening socket, its connections and an eventfd,
//! serving `GET` and `HEAD` of `/livez`, `/readyz`, `/status`, `/metrics` and `/`. Every answer
//! about the cluster is asked of the supervisor loop (`Event::Control` from `Frontend::Admin`)
//! and comes back through `Replies`; `/livez` fails when the loop does not answer within
//! `LIVEZ_TIMEOUT`, so a wedged supervisor fails it. Nothing here changes the cluster.
//!
//! Limits, so no client can hold the endpoint or recluster hostage: a request head of at most
//! `http::MAX_HEAD` bytes, `HEAD_TIMEOUT` to send it (counted from the connection, so a client
//! trickling bytes gains nothing), `MAX_CONNECTIONS` at once, `WRITE_TIMEOUT` to take the answer,
//! and one request per connection (`Connection: close`). Requests for a Host that is not the
//! address listened on are refused (see `http::host_allowed`). No wake-up while nobody asks:
//! `epoll_wait` has no timeout while no connection has a deadline.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::EventFd;

use super::http::{self, Response};
use super::metrics::{self, SelfProcess};
use super::page;
use super::probes::{self, Quorum};
use crate::control::protocol::Request;
use crate::control::server::{Frontend, Replies, Reply};
use crate::event::Event;
use crate::listen::ListenAddress;
use crate::snapshot::Snapshot;
use crate::socket_file::SocketFile;

pub const MAX_CONNECTIONS: usize = 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/livez` waits for the supervisor loop.
pub const LIVEZ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the other endpoints wait for it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

use crate::reactor::{LISTENER, WAKE};

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buffer),
            Stream::Unix(s) => s.read(buffer),
        }
    }

    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buffer),
            Stream::Unix(s) => s.write(buffer),
        }
    }
}

/// Which endpoint a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Livez,
    Readyz { verbose: bool },
    Status,
    Metrics { openmetrics: bool },
    Page,
}

enum Phase {
    /// Reading the request head, until `deadline`.
    Reading,
    /// Waiting for the supervisor loop's answer.
    Asking { route: Route, head_only: bool },
    /// Writing the answer; then the connection is closed.
    Writing,
}

struct Connection {
    stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    phase: Phase,
    deadline: Instant,
}

/// The bound endpoint, before its thread starts.
pub struct Bound {
    listener: Listener,
    address: ListenAddress,
    pub local: String,
}

/// Binds `address`. A name resolves to its first address; `:PORT` is every interface.
pub fn bind(address: &ListenAddress) -> io::Result<Bound> {
    let listener = match address {
        ListenAddress::Unix(path) => {
            crate::socket::clear_stale_socket(path).map_err(io::Error::other)?;
            let listener = UnixListener::bind(path)?;
            Listener::Unix(listener, SocketFile::note(path)?)
        }
        ListenAddress::Tcp { host: None, port } => {
            match TcpListener::bind(("::", *port)) {
                Ok(listener) => Listener::Tcp(listener),
                // No IPv6 on this host: every IPv4 interface.
                Err(_) => Listener::Tcp(TcpListener::bind(("0.0.0.0", *port))?),
            }
        }
        ListenAddress::Tcp {
            host: Some(host),
            port,
        } => {
            let target = (host.as_str(), *port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other("the name has no address"))?;
            Listener::Tcp(TcpListener::bind(target)?)
        }
    };
    let local = match &listener {
        Listener::Tcp(l) => l.local_addr()?.to_string(),
        Listener::Unix(_, file) => format!("unix:{}", file.path().display()),
    };
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true)?,
        Listener::Unix(l, _) => l.set_nonblocking(true)?,
    }
    Ok(Bound {
        listener,
        address: address.clone(),
        local,
    })
}

/// The running endpoint; dropping it ends the thread (and removes a unix socket).
pub struct Admin {
    replies: Replies,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Starts the thread for `bound`; the supervisor answers through the returned `Replies`.
    pub fn start(bound: Bound, quorum: Quorum, events: Sender<Event>) -> io::Result<Admin> {
        let (replies, receiver, wake) = Replies::channel()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let listener_fd = match &bound.listener {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        };
        epoll.add(listener_fd, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let thread = Thread {
            listener: bound.listener,
            address: bound.address,
            epoll,
            wake,
            replies: receiver,
            events,
            quorum,
            connections: HashMap::new(),
            next: 1,
        };
        let handle = std::thread::Builder::new()
            .name("admin".to_string())
            .stack_size(256 * 1024)
            .spawn(move || crate::reactor::serve(&mut { thread }))?;
        Ok(Admin {
            replies,
            thread: Some(handle),
        })
    }

    pub fn replies(&self) -> Replies {
        self.replies.clone()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.replies.send(Reply::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Thread {
    listener: Listener,
    address: ListenAddress,
    epoll: Epoll,
    wake: Arc<EventFd>,
    replies: Receiver<Reply>,
    events: Sender<Event>,
    quorum: Quorum,
    connections: HashMap<u64, Connection>,
    next: u64,
}

impl crate::reactor::Server for Thread {
    const NAME: &'static str = "the admin endpoint";

    fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn deadline(&self) -> Option<Instant> {
        self.connections.values().map(|c| c.deadline).min()
    }

    fn accept(&mut self) {
        Thread::accept(self);
    }

    fn woken(&mut self) -> bool {
        let _ = self.wake.read();
        if self.take_replies() {
            return true;
        }
        if let Listener::Unix(_, file) = &self.listener {
            file.remove();
        }
        false
    }

    fn on_ready(&mut self, id: u64, flags: EpollFlags) {
        Thread::on_ready(self, id, flags);
    }

    fn expire(&mut self, now: Instant) {
        Thread::expire(self, now);
    }
}

impl Thread {
    fn accept(&mut self) {
        loop {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let mut stream = match accepted {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("admin endpoint: accept failed: {e}");
                    return;
                }
            };
            let nonblocking = match &stream {
                Stream::Tcp(s) => s.set_nonblocking(true),
                Stream::Unix(s) => s.set_nonblocking(true),
            };
            if nonblocking.is_err() {
                continue;
            }
            if self.connections.len() >= MAX_CONNECTIONS {
                let busy = Response::text(503, "too many connections\n").to_bytes(false);
                let _ = stream.write(&busy);
                continue;
            }
            let id = self.next;
            self.next += 1;
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if self
                .epoll
                .add(stream.fd(), EpollEvent::new(flags, id))
                .is_err()
            {
                continue;
            }
            self.connections.insert(
                id,
                Connection {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    phase: Phase::Reading,
                    deadline: Instant::now() + HEAD_TIMEOUT,
                },
            );
        }
    }

    fn on_ready(&mut self, id: u64, flags: EpollFlags) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        match connection.phase {
            Phase::Reading => {
                let mut buffer = [0u8; 4096];
                loop {
                    match connection.stream.read(&mut buffer) {
                        Ok(0) => {
                            self.close(id);
                            return;
                        }
                        Ok(n) => connection.input.extend_from_slice(&buffer[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            self.close(id);
                            return;
                        }
                    }
                    if connection.input.len() > http::MAX_HEAD {
                        break;
                    }
                }
                self.serve(id);
            }
            Phase::Asking { .. } => {
                if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                    self.close(id);
                }
                // Anything more it sends is ignored: one request per connection.
            }
            Phase::Writing => self.flush(id),
        }
    }

    /// A whole head: answer at once, or ask the loop.
    fn serve(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let Some(end) = http::head_end(&connection.input) else {
            if connection.input.len() > http::MAX_HEAD {
                let too_big = Response::text(431, "the request head is too large\n");
                self.respond(id, &too_big, false);
            }
            return;
        };
        if end > http::MAX_HEAD {
            let too_big = Response::text(431, "the request head is too large\n");
            self.respond(id, &too_big, false);
            return;
        }
        let request = match http::parse(&connection.input[..end]) {
            Ok(request) => request,
            Err(response) => {
                self.respond(id, &response, false);
                return;
            }
        };
        let head_only = request.method == "HEAD";
        if request.method != "GET" && !head_only {
            let refused = Response::text(
                405,
                "read-only: only GET and HEAD (change the cluster with recluster ctl)\n",
            );
            self.respond(id, &refused, false);
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
            self.respond(id, &refused, head_only);
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
                self.respond(id, &missing, head_only);
                return;
            }
        };
        let ask = if route == Route::Livez {
            Request::Hello
        } else {
            Request::Status
        };
        let timeout = if route == Route::Livez {
            LIVEZ_TIMEOUT
        } else {
            ANSWER_TIMEOUT
        };
        connection.phase = Phase::Asking { route, head_only };
        connection.deadline = Instant::now() + timeout;
        let sent = self.events.send(Event::Control {
            client: id,
            request: ask,
            frontend: Frontend::Admin,
        });
        if sent.is_err() {
            let gone = Response::text(503, "recluster is exiting\n");
            self.respond(id, &gone, head_only);
        }
    }

    /// Takes what the supervisor answered; false when it is time to end.
    fn take_replies(&mut self) -> bool {
        while let Ok(reply) = self.replies.try_recv() {
            let (id, snapshot) = match reply {
                Reply::Shutdown => return false,
                Reply::Line { client, .. } => (client, None),
                Reply::Status { client, snapshot } => (client, Some(snapshot)),
                Reply::Event { .. } => continue,
            };
            let Some(connection) = self.connections.get(&id) else {
                continue;
            };
            let Phase::Asking { route, head_only } = connection.phase else {
                continue; // answered already (it timed out)
            };
            let response = answer(route, snapshot, self.quorum);
            self.respond(id, &response, head_only);
        }
        true
    }

    fn respond(&mut self, id: u64, response: &Response, head_only: bool) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.output = response.to_bytes(head_only);
        connection.phase = Phase::Writing;
        connection.deadline = Instant::now() + WRITE_TIMEOUT;
        let _ = self.epoll.modify(
            connection.stream.fd(),
            &mut EpollEvent::new(EpollFlags::EPOLLOUT, id),
        );
        self.flush(id);
    }

    fn flush(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        while !connection.output.is_empty() {
            match connection.stream.write(&connection.output) {
                Ok(n) => {
                    connection.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(id);
    }

    /// Deadlines: a head not sent in time gets 408; a loop that did not answer, 503; an answer
    /// not taken in time is dropped.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            let Some(connection) = self.connections.get(&id) else {
                continue;
            };
            match connection.phase {
                Phase::Reading => {
                    let slow = Response::text(408, "the request head took too long\n");
                    self.respond(id, &slow, false);
                }
                Phase::Asking { route, head_only } => {
                    let text = if route == Route::Livez {
                        format!(
                            "the supervisor loop did not answer within {} ms\n",
                            LIVEZ_TIMEOUT.as_millis()
                        )
                    } else {
                        "the supervisor loop did not answer in time\n".to_string()
                    };
                    self.respond(id, &Response::text(503, &text), head_only);
                }
                Phase::Writing => self.close(id),
            }
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(connection) = self.connections.remove(&id) {
            let _ = self.epoll.delete(connection.stream.fd());
        }
    }
}

/// The response to `route`, from the loop's answer (`None` for `/livez`, which needs none).
fn answer(route: Route, snapshot: Option<Box<Snapshot>>, quorum: Quorum) -> Response {
    let Some(mut snapshot) = snapshot else {
        return match route {
            Route::Livez => Response::text(200, "ok\n"),
            _ => Response::text(503, "no answer from the supervisor loop\n"),
        };
    };
    match route {
        Route::Livez => Response::text(200, "ok\n"),
        Route::Readyz { verbose } => {
            let (ready, checks) = probes::readiness(&snapshot, quorum);
            let body = if verbose {
                checks
            } else if ready {
                "ok\n".to_string()
            } else {
                checks
            };
            Response::text(if ready { 200 } else { 503 }, &body)
        }
        Route::Status => {
            // The same document as `recluster ctl status --json`.
            snapshot.measure();
            let fields = serde_json::to_value(&*snapshot).unwrap_or_default();
            let json = format!("{}\n", crate::control::protocol::ok(fields));
            Response::new(200, "application/json", json)
        }
        Route::Metrics { openmetrics } => {
            snapshot.measure();
            let text = metrics::render(&snapshot, &SelfProcess::read(), openmetrics);
            let kind = if openmetrics {
                metrics::OPENMETRICS_TYPE
            } else {
                metrics::PROMETHEUS_TYPE
            };
            Response::new(200, kind, text)
        }
        Route::Page => {
            snapshot.measure();
            Response::new(200, "text/html; charset=utf-8", page::render(&snapshot))
        }
    }
}
