//! The `--admin` thread: one epoll set over the listening socket, its connections and an eventfd,
//! serving `GET` and `HEAD` of `/livez`, `/readyz`, `/status`, `/metrics` and `/`. Nothing here
//! changes the cluster.
//!
//! This file owns the connections: accepting them, reading their heads, writing their answers,
//! their deadlines and the limits below. What a whole head is answered with, and the questions to
//! the supervisor loop and the cache that answer takes, is `answering`'s (more methods of
//! `Thread`, in that file).
//!
//! Limits, so no client can hold the endpoint or recluster hostage: a request head of at most
//! `http::MAX_HEAD` bytes, `HEAD_TIMEOUT` to send it (counted from the connection, so a client
//! trickling bytes gains nothing), at most `peers::Limits` connections (per peer and in all; a
//! newcomer over them takes the place of the oldest connection still sending its head), at most
//! `HEAD_BYTES` of unfinished heads in all (past it, that oldest connection goes too),
//! `WRITE_TIMEOUT` to take the answer, and one request per connection (`Connection: close`).
//! Texts are shared between the connections they are written to, not copied. Requests for a
//! Host that is not the address listened on are refused (see `http::host_allowed`). No wake-up
//! while nobody asks: `epoll_wait` has no timeout while no connection has a deadline.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::EventFd;

use super::bind::{Bound, Listener};
use super::cache::{Builder, Cached, Kind};
use super::http::{self, Response};
use super::peers::{Admission, Admit, Limits, Peer};
use super::probes::Quorum;
use crate::frontend::control::replies::{Replies, Reply};
use crate::net::listen::ListenAddress;
use crate::supervisor::event::Event;

pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/livez` waits for the supervisor loop.
pub const LIVEZ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long accepting stops when recluster is out of file descriptors and no connection of its
/// own can make room.
const PAUSE_WHEN_OUT_OF_FDS: Duration = Duration::from_millis(100);
/// The most bytes of unfinished request heads held at once, every connection together (1024
/// connections could otherwise hold 8 KiB each): past it, the oldest connection still sending
/// its head goes.
const HEAD_BYTES: usize = 1 << 20;
/// How many connections are accepted before the others' reads and writes get a turn.
const ACCEPTS_AT_ONCE: usize = 64;

use crate::frontend::reactor::{LISTENER, WAKE};

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    /// Who is connected, as the connection limits count peers.
    fn peer(&self) -> Peer {
        match self {
            Stream::Tcp(s) => s.peer_addr().map_or(Peer::Unknown, |a| Peer::of_ip(a.ip())),
            Stream::Unix(s) => {
                nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
                    .map_or(Peer::Unknown, |c| Peer::User(c.uid()))
            }
        }
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buffer),
            Stream::Unix(s) => s.read(buffer),
        }
    }

    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(buffers),
            Stream::Unix(s) => s.write_vectored(buffers),
        }
    }
}

/// Which endpoint a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Livez,
    Readyz { verbose: bool },
    Status,
    Metrics { openmetrics: bool },
    Page,
}

impl Route {
    /// The text of the cached copy it is answered with, if it is.
    pub(super) fn kind(self) -> Option<Kind> {
        match self {
            Route::Livez | Route::Readyz { .. } => None,
            Route::Status => Some(Kind::Status),
            Route::Metrics { openmetrics: false } => Some(Kind::Prometheus),
            Route::Metrics { openmetrics: true } => Some(Kind::OpenMetrics),
            Route::Page => Some(Kind::Page),
        }
    }
}

pub(super) enum Phase {
    /// Reading the request head, until `deadline`.
    Reading,
    /// Waiting for the supervisor loop's answer, or for the cached copy.
    Waiting { route: Route, head_only: bool },
    /// Writing the answer; then the connection is closed.
    Writing,
}

/// An answer being written: its head, then its body (shared with the other connections it is
/// written to).
#[derive(Default)]
struct Output {
    head: Vec<u8>,
    body: Option<Arc<Response>>,
    written: usize,
}

impl Output {
    fn new(response: Arc<Response>, head_only: bool) -> Output {
        Output {
            head: response.head(),
            body: (!head_only).then_some(response),
            written: 0,
        }
    }

    /// What is left to write, in at most two pieces.
    fn rest(&self) -> [&[u8]; 2] {
        let body = self.body.as_ref().map_or(&[][..], |b| &b.body[..]);
        match self.written.checked_sub(self.head.len()) {
            None => [&self.head[self.written..], body],
            Some(into_body) => [&body[into_body.min(body.len())..], &[]],
        }
    }
}

pub(super) struct Connection {
    pub(super) stream: Stream,
    pub(super) input: Vec<u8>,
    output: Output,
    pub(super) phase: Phase,
    pub(super) deadline: Instant,
}

/// recluster's soft limit on open files now (after `startup::raise_fd_limit`).
fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
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
        epoll.add(
            bound.listener.fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
        )?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let limits = Limits::for_fd_limit(fd_limit());
        debug!(
            "admin endpoint: at most {} connections, {} from one peer",
            limits.total, limits.per_peer
        );
        let thread = Thread {
            listener: bound.listener,
            address: bound.address,
            epoll,
            wake,
            replies: receiver,
            events,
            quorum,
            connections: HashMap::new(),
            admission: Admission::new(limits),
            head_bytes: 0,
            next: 1,
            paused_until: None,
            hello: None,
            status: None,
            refresh: false,
            builder: None,
            building: false,
            cached: None,
        };
        let handle = std::thread::Builder::new()
            .name("admin".to_string())
            .stack_size(256 * 1024)
            .spawn(move || crate::frontend::reactor::serve(&mut { thread }))?;
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

pub(super) struct Thread {
    listener: Listener,
    pub(super) address: ListenAddress,
    pub(super) epoll: Epoll,
    pub(super) wake: Arc<EventFd>,
    pub(super) replies: Receiver<Reply>,
    pub(super) events: Sender<Event>,
    pub(super) quorum: Quorum,
    pub(super) connections: HashMap<u64, Connection>,
    pub(super) admission: Admission,
    /// Bytes of unfinished request heads held, every connection together.
    pub(super) head_bytes: usize,
    next: u64,
    /// Accepting stopped, out of file descriptors, until then (or until a connection closes).
    paused_until: Option<Instant>,
    /// When the `hello` and `status` in flight were asked, if one is.
    pub(super) hello: Option<Instant>,
    pub(super) status: Option<Instant>,
    /// The next `status` answer is for a new copy.
    pub(super) refresh: bool,
    /// The thread that builds copies, started when first needed.
    pub(super) builder: Option<Builder>,
    /// A job is with the builder.
    pub(super) building: bool,
    pub(super) cached: Option<Arc<Cached>>,
}

impl crate::frontend::reactor::Server for Thread {
    const NAME: &'static str = "the admin endpoint";

    fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn deadline(&self) -> Option<Instant> {
        self.connections
            .values()
            .map(|c| c.deadline)
            .chain(self.paused_until)
            .min()
    }

    fn accept(&mut self) {
        Thread::accept(self);
    }

    fn woken(&mut self) -> bool {
        let _ = self.wake.read();
        if self.take_replies() {
            self.take_copy();
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
        // A bounded batch: under a flood of connections the listener never runs dry, and the
        // connections already taken must get their turn (epoll reports the listener again).
        for _ in 0..ACCEPTS_AT_ONCE {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: the oldest idle connection makes room; with none,
                    // accepting stops for a moment (the listener would wake this thread at once
                    // and for ever).
                    match self.admission.oldest_reading(None) {
                        Some(victim) => {
                            self.evict(victim);
                            continue;
                        }
                        None => {
                            self.pause();
                            return;
                        }
                    }
                }
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
            let id = self.next;
            self.next += 1;
            match self.admission.admit(id, stream.peer()) {
                Admit::Refuse => {
                    refuse(stream);
                    continue;
                }
                Admit::Take {
                    evict: Some(victim),
                } => self.evict(victim),
                Admit::Take { evict: None } => {}
            }
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if self
                .epoll
                .add(stream.fd(), EpollEvent::new(flags, id))
                .is_err()
            {
                self.admission.remove(id);
                continue;
            }
            self.connections.insert(
                id,
                Connection {
                    stream,
                    input: Vec::new(),
                    output: Output::default(),
                    phase: Phase::Reading,
                    deadline: Instant::now() + HEAD_TIMEOUT,
                },
            );
        }
    }

    /// Stops accepting for `PAUSE_WHEN_OUT_OF_FDS`.
    fn pause(&mut self) {
        if self.paused_until.is_none() && self.epoll.delete(self.listener.fd()).is_ok() {
            debug!("admin endpoint: out of file descriptors, not accepting for a moment");
            self.paused_until = Some(Instant::now() + PAUSE_WHEN_OUT_OF_FDS);
        }
    }

    fn resume(&mut self) {
        if self.paused_until.take().is_some() {
            let _ = self.epoll.add(
                self.listener.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
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
                        Ok(n) => {
                            connection.input.extend_from_slice(&buffer[..n]);
                            self.head_bytes += n;
                        }
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
                while self.head_bytes > HEAD_BYTES {
                    let Some(victim) = self.admission.oldest_reading(None) else {
                        break;
                    };
                    self.evict(victim);
                }
            }
            Phase::Waiting { .. } => {
                if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                    self.close(id);
                }
            }
            Phase::Writing => self.flush(id),
        }
    }

    pub(super) fn respond(&mut self, id: u64, response: Response, head_only: bool) {
        self.respond_with(id, Arc::new(response), head_only);
    }

    pub(super) fn respond_with(&mut self, id: u64, response: Arc<Response>, head_only: bool) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.output = Output::new(response, head_only);
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
        loop {
            let [first, second] = connection.output.rest();
            if first.is_empty() && second.is_empty() {
                break;
            }
            let pieces = [IoSlice::new(first), IoSlice::new(second)];
            match connection.stream.write_vectored(&pieces) {
                Ok(0) => break,
                Ok(n) => connection.output.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(id);
    }

    /// Deadlines: a head not sent in time gets 408; a loop that did not answer, 503; an answer
    /// not taken in time is dropped. A pause in accepting ends.
    fn expire(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.resume();
        }
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
                    self.respond(id, slow, false);
                }
                Phase::Waiting { route, head_only } => {
                    let text = if route == Route::Livez {
                        format!(
                            "the supervisor loop did not answer within {} ms\n",
                            LIVEZ_TIMEOUT.as_millis()
                        )
                    } else {
                        "the supervisor loop did not answer in time\n".to_string()
                    };
                    self.respond(id, Response::text(503, &text), head_only);
                }
                Phase::Writing => self.close(id),
            }
        }
    }

    /// Closes a connection to make room for a newer one, telling it why.
    fn evict(&mut self, id: u64) {
        if let Some(connection) = self.connections.get_mut(&id) {
            say_busy(&mut connection.stream);
        }
        self.close(id);
    }

    fn close(&mut self, id: u64) {
        self.admission.remove(id);
        if let Some(connection) = self.connections.remove(&id) {
            self.head_bytes = self.head_bytes.saturating_sub(connection.input.len());
            let _ = self.epoll.delete(connection.stream.fd());
        }
        self.resume();
    }
}

/// Tells a connection there is no room for it, without waiting, and closes it.
fn refuse(mut stream: Stream) {
    say_busy(&mut stream);
}

/// Writes 503 "too many connections" if it fits at once. What the client sent and nobody read is
/// read first (a little of it), since closing over unread bytes resets the connection and the
/// answer with it.
fn say_busy(stream: &mut Stream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
    let busy = Response::text(503, "too many connections\n").to_bytes(false);
    let _ = stream.write_vectored(&[IoSlice::new(&busy)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_written_head_then_shared_body_from_where_it_stopped() {
        const NONE: &[u8] = &[];
        let response = Arc::new(Response::text(200, "hello\n"));
        let mut output = Output::new(response.clone(), false);
        let head = response.head();
        assert_eq!(output.rest(), [&head[..], &b"hello\n"[..]]);
        output.written = head.len() - 2;
        assert_eq!(output.rest(), [&head[head.len() - 2..], &b"hello\n"[..]]);
        output.written = head.len() + 2;
        assert_eq!(output.rest(), [&b"llo\n"[..], NONE]);
        output.written = head.len() + 6;
        assert_eq!(output.rest(), [NONE, NONE]);
        let head_only = Output::new(response, true);
        assert_eq!(head_only.rest(), [&head[..], NONE]);
    }
}
