//! The control socket's thread. It binds the socket (see `location`), admits only recluster's
//! own uid and root (`SO_PEERCRED`), reads request lines and hands each to the supervisor as an
//! `Event::Control`; the supervisor answers through `Replies`, which never blocks it. Everything
//! here is non-blocking and driven by one epoll set, so a slow or hostile client delays neither
//! the supervisor nor another client:
//! - a request line is at most `MAX_LINE` bytes; garbage gets an error answer and the connection
//!   is closed once that answer is written;
//! - at most `MAX_CLIENTS` connections; one more is told so and closed;
//! - a client that has not sent a whole request within `REQUEST_TIMEOUT` (of connecting, or of its
//!   last answer) is told so and closed;
//! - a client's next request is read only once the answer to its last one is written, so an
//!   answer nobody reads holds at most one answer's memory; `events` lines that find more than
//!   `EVENT_BACKLOG` bytes unread are dropped and counted, and the reader is told how many.
//!
//! The thread sleeps in `epoll_wait` with no timeout while no client has a deadline: an idle
//! cluster's control socket never wakes recluster.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use nix::sys::epoll::EpollTimeout as PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde_json::json;

use super::location::{self, Placement};
use super::protocol::{self, MAX_LINE};
use super::replies::{Replies, Reply};
use crate::frontend::request::{self, Frontend, Request};
use crate::net::socket_file::SocketFile;
use crate::supervisor::event::Event;

/// How many clients may be connected at once.
pub const MAX_CLIENTS: usize = 128;
/// How long a client may take to send a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many bytes of `events` lines may wait for a slow reader before new ones are dropped.
const EVENT_BACKLOG: usize = 256 * 1024;
/// A client's next request is read while less than this waits to be written to it.
const PIPELINED_OUTPUT: usize = 64 * 1024;
/// How long recluster, on its way out, tries to deliver the answers still unwritten.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

use crate::frontend::reactor::{LISTENER, WAKE};

/// The running control socket; dropping it shuts the thread down and removes the socket.
pub struct Server {
    pub path: PathBuf,
    /// What the socket is removed through at the end (see `socket_file`).
    file: Option<SocketFile>,
    replies: Replies,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket and starts its thread. Never fails recluster: when no location works,
    /// it warns once and returns `None`.
    pub fn start(
        placement: &Placement,
        name: Option<&str>,
        events: Sender<Event>,
    ) -> Option<Server> {
        let (listener, path) = match location::bind_socket(placement, name) {
            Ok(Some(bound)) => bound,
            Ok(None) => return None,
            Err(why) => {
                warn!("{why}");
                return None;
            }
        };
        // Noted before any worker runs: the removal at the end goes through it.
        let file = SocketFile::note(&path)
            .map_err(|e| warn!("{}: {e}: it will not be removed at exit", path.display()))
            .ok();
        let started = Replies::channel().and_then(|(replies, receiver, wake)| {
            let thread = Thread::new(listener, wake, receiver, events, name)?;
            let handle = std::thread::Builder::new()
                .name("control".to_string())
                .stack_size(256 * 1024)
                .spawn(move || crate::frontend::reactor::serve(&mut { thread }))?;
            Ok((replies, handle))
        });
        match started {
            Ok((replies, handle)) => {
                info!("control socket at {}", path.display());
                Some(Server {
                    path,
                    file,
                    replies,
                    thread: Some(handle),
                })
            }
            Err(e) => {
                if let Some(file) = file {
                    file.remove();
                }
                warn!("no control socket (cannot start its thread: {e}); running without it");
                None
            }
        }
    }

    pub fn replies(&self) -> Replies {
        self.replies.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.replies.send(Reply::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(file) = &self.file {
            file.remove();
        }
    }
}

struct Client {
    stream: UnixStream,
    uid: u32,
    pid: i32,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Whether a request of this client is with the supervisor.
    asking: Asking,
    /// `events` lines dropped since the reader last kept up.
    dropped: u64,
    /// Close once the output is written (after an error answer).
    closing: bool,
    /// The client shut down its writing side: no more requests come.
    read_closed: bool,
    /// Whether epoll watches it for writing.
    watching_output: bool,
    /// When it must have sent a whole request.
    deadline: Option<Instant>,
}

/// Where a client's conversation with the supervisor is: one state, so that a client cannot be
/// subscribed to `events` without a request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asking {
    /// No request with the supervisor: the next one may be read.
    Nothing,
    /// A request is with the supervisor, not answered in full yet.
    Request,
    /// `events`: the stream ends only with the client (or recluster).
    Events,
}

struct Thread {
    listener: UnixListener,
    epoll: Epoll,
    wake: Arc<EventFd>,
    replies: Receiver<Reply>,
    events: Sender<Event>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    euid: u32,
    hello: String,
}

impl crate::frontend::reactor::Server for Thread {
    const NAME: &'static str = "the control socket";

    fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn deadline(&self) -> Option<Instant> {
        self.clients.values().filter_map(|c| c.deadline).min()
    }

    fn accept(&mut self) {
        Thread::accept(self);
    }

    fn woken(&mut self) -> bool {
        let _ = self.wake.read();
        if self.take_replies() {
            return true;
        }
        self.shut_down();
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
    fn new(
        listener: UnixListener,
        wake: Arc<EventFd>,
        replies: Receiver<Reply>,
        events: Sender<Event>,
        name: Option<&str>,
    ) -> io::Result<Thread> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let hello = protocol::ok(json!({"pid": std::process::id(), "name": name}));
        Ok(Thread {
            listener,
            epoll,
            wake,
            replies,
            events,
            clients: HashMap::new(),
            next_client: 1,
            euid: location::euid(),
            hello,
        })
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the pending connection waits for the next wake-up.
                    debug!("control socket: accept failed: {e}");
                    return;
                }
            };
            let (uid, pid) = match getsockopt(&stream, PeerCredentials) {
                Ok(cred) => (cred.uid(), cred.pid()),
                Err(_) => continue,
            };
            if uid != self.euid && uid != 0 {
                warn!(
                    "control socket: refused a connection from uid {uid} (pid {pid}): only uid {} and root may control this cluster",
                    self.euid
                );
                let _ = stream.set_nonblocking(true);
                let line = protocol::error(&format!(
                    "permission denied: only uid {} and root may control this cluster",
                    self.euid
                ));
                let _ = (&stream).write_all(format!("{line}\n").as_bytes());
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                warn!(
                    "control socket: {MAX_CLIENTS} clients are connected already; refused one more (pid {pid})"
                );
                let _ = stream.set_nonblocking(true);
                let line = protocol::error(&format!(
                    "too many clients ({MAX_CLIENTS} connected); try again"
                ));
                let _ = (&stream).write_all(format!("{line}\n").as_bytes());
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_client;
            self.next_client += 1;
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if self.epoll.add(&stream, EpollEvent::new(flags, id)).is_err() {
                continue;
            }
            self.clients.insert(id, Client::new(stream, uid, pid));
        }
    }

    fn on_ready(&mut self, id: u64, flags: EpollFlags) {
        if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.remove(id);
            return;
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(id);
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP) {
            self.read(id);
        }
        self.serve(id);
    }

    /// Reads what the client sent, as far as its input may grow.
    fn read(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let mut buffer = [0u8; 8192];
        loop {
            if client.input.len() > MAX_LINE {
                break;
            }
            match (&client.stream).read(&mut buffer) {
                Ok(0) => {
                    client.read_closed = true;
                    let flags = if client.watching_output {
                        EpollFlags::EPOLLOUT
                    } else {
                        EpollFlags::empty()
                    };
                    let _ = self
                        .epoll
                        .modify(&client.stream, &mut EpollEvent::new(flags, id));
                    break;
                }
                Ok(n) => client.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.remove(id);
                    return;
                }
            }
        }
    }

    /// Handles the client's next request, if it has a whole one and nothing is pending.
    fn serve(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        while client.asking == Asking::Nothing
            && !client.closing
            && client.output.len() < PIPELINED_OUTPUT
        {
            let line = match client.input.iter().position(|&b| b == b'\n') {
                Some(end) if end < MAX_LINE => {
                    let line: Vec<u8> = client.input.drain(..=end).collect();
                    line[..end].to_vec()
                }
                Some(_) => {
                    fail(
                        client,
                        &format!("the request is longer than {MAX_LINE} bytes"),
                    );
                    break;
                }
                None if client.input.len() >= MAX_LINE => {
                    fail(
                        client,
                        &format!("the request is longer than {MAX_LINE} bytes"),
                    );
                    break;
                }
                None if client.read_closed && !client.input.is_empty() => {
                    std::mem::take(&mut client.input)
                }
                None => break,
            };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let request = match protocol::parse_request(line) {
                Ok(request) => request,
                Err(e) => {
                    debug!("control socket: bad request from pid {}: {e}", client.pid);
                    fail(client, &e);
                    break;
                }
            };
            client.deadline = None;
            if request == Request::Hello {
                client.output.extend_from_slice(self.hello.as_bytes());
                client.output.push(b'\n');
                continue;
            }
            let level = if request.changes_something() {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "control socket: '{}' from uid {} (pid {})",
                describe(&request),
                client.uid,
                client.pid
            );
            client.asking = if request == Request::Events {
                Asking::Events
            } else {
                Asking::Request
            };
            if self
                .events
                .send(Event::Control {
                    client: id,
                    request,
                    frontend: Frontend::Control,
                })
                .is_err()
            {
                fail(client, "recluster is exiting");
            }
        }
        self.flush(id);
    }

    /// Writes what the client has pending; closes it when it is done with.
    fn flush(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        while !client.output.is_empty() {
            match (&client.stream).write(&client.output) {
                Ok(n) => {
                    client.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.remove(id);
                    return;
                }
            }
        }
        let finished = client.output.is_empty()
            && (client.closing
                || (client.read_closed
                    && client.asking == Asking::Nothing
                    && client.input.is_empty()));
        if finished {
            self.remove(id);
            return;
        }
        let want = !client.output.is_empty();
        if want != client.watching_output {
            client.watching_output = want;
            let mut flags = if client.read_closed {
                EpollFlags::empty()
            } else {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP
            };
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let _ = self
                .epoll
                .modify(&client.stream, &mut EpollEvent::new(flags, id));
        }
        if client.asking == Asking::Nothing && client.output.is_empty() && client.deadline.is_none()
        {
            client.deadline = Some(Instant::now() + REQUEST_TIMEOUT);
        }
    }

    /// Takes every reply the supervisor sent; false once it is time to end.
    fn take_replies(&mut self) -> bool {
        while let Ok(reply) = self.replies.try_recv() {
            let (id, text, last) = match reply {
                Reply::Shutdown => return false,
                Reply::Line { client, line, last } => (client, line, last),
                Reply::Status {
                    client,
                    mut snapshot,
                } => {
                    snapshot.measure();
                    let fields = serde_json::to_value(&*snapshot).unwrap_or_default();
                    (client, protocol::ok(fields), true)
                }
                Reply::Event { client, line } => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.push_event(&line);
                    }
                    self.flush(client);
                    continue;
                }
            };
            let Some(client) = self.clients.get_mut(&id) else {
                continue; // gone meanwhile
            };
            client.output.extend_from_slice(text.as_bytes());
            client.output.push(b'\n');
            if last {
                client.asking = Asking::Nothing;
            }
            self.serve(id);
        }
        true
    }

    /// Closes clients that took too long to send a request.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(client) = self.clients.get_mut(&id) {
                debug!(
                    "control socket: pid {} sent no whole request within {}s",
                    client.pid,
                    REQUEST_TIMEOUT.as_secs()
                );
                fail(
                    client,
                    &format!(
                        "no whole request within {}s; send one JSON object per line",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                );
            }
            self.flush(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(client) = self.clients.remove(&id) {
            let _ = self.epoll.delete(&client.stream);
            if client.asking != Asking::Nothing {
                let _ = self.events.send(Event::ControlGone { client: id });
            }
        }
    }

    /// recluster is exiting: writes what is pending for up to `FLUSH_AT_EXIT`.
    fn shut_down(&mut self) {
        let _ = self.epoll.delete(&self.listener);
        let until = Instant::now() + FLUSH_AT_EXIT;
        let mut ready = [EpollEvent::empty(); 32];
        loop {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            for id in ids {
                if let Some(client) = self.clients.get_mut(&id) {
                    client.closing = true;
                }
                self.flush(id);
            }
            let left = until.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                return;
            }
            let ms = left.as_millis().min(1000) as i32 + 1;
            let _ = self.epoll.wait(
                &mut ready,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
        }
    }
}

impl Client {
    fn new(stream: UnixStream, uid: u32, pid: i32) -> Client {
        Client {
            stream,
            uid,
            pid,
            input: Vec::new(),
            output: Vec::new(),
            asking: Asking::Nothing,
            dropped: 0,
            closing: false,
            read_closed: false,
            watching_output: false,
            deadline: Some(Instant::now() + REQUEST_TIMEOUT),
        }
    }

    /// Queues an `events` line, or drops it (counted) while the reader is behind; the first line
    /// queued after a drop says how many were lost.
    fn push_event(&mut self, line: &str) {
        if self.output.len() > EVENT_BACKLOG {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let note = json!({"v": protocol::VERSION, "event": "dropped", "count": self.dropped});
            self.output
                .extend_from_slice(format!("{note}\n").as_bytes());
            self.dropped = 0;
        }
        self.output.extend_from_slice(line.as_bytes());
        self.output.push(b'\n');
    }
}

/// Answers with an error, and closes the connection once that is written.
fn fail(client: &mut Client, message: &str) {
    client
        .output
        .extend_from_slice(protocol::error(message).as_bytes());
    client.output.push(b'\n');
    client.closing = true;
    client.deadline = None;
}

/// A request as the log names it.
fn describe(request: &Request) -> String {
    match request {
        Request::Hello => "hello".to_string(),
        Request::Status => "status".to_string(),
        Request::Scale { by, group, .. } => match group {
            Some(group) => format!("scale {by} --group {group}"),
            None => format!("scale {by}"),
        },
        Request::Restart { ids, .. } => format!(
            "restart {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Request::Signal { signal, ids } => format!(
            "signal {signal}{}",
            ids.iter().map(|id| format!(" {id}")).collect::<String>()
        ),
        Request::Reload { .. } => "reload".to_string(),
        Request::Stop { .. } => "stop".to_string(),
        Request::Events => "events".to_string(),
        Request::Send { to, .. } => format!("send {}", request::target_name(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_reader_loses_events_and_is_told_how_many() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut client = Client::new(ours, 0, 1);
        let line = format!(
            "{{\"v\":1,\"event\":\"ready\",\"pad\":\"{}\"}}",
            "x".repeat(1000)
        );
        let mut pushed = 0;
        while client.output.len() <= EVENT_BACKLOG {
            client.push_event(&line);
            pushed += 1;
        }
        for _ in 0..5 {
            client.push_event(&line);
        }
        assert_eq!(
            client.dropped, 5,
            "beyond the backlog, lines are counted, not kept"
        );
        // The reader catches up: the next line is preceded by the count.
        client.output.clear();
        client.push_event(&line);
        let text = String::from_utf8(client.output.clone()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["event"], "dropped");
        assert_eq!(first["count"], 5);
        assert_eq!(text.lines().count(), 2);
        assert_eq!(client.dropped, 0);
        assert!(pushed > 200);
    }
}
