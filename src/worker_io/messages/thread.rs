//! The routing thread: it holds recluster's end of every worker's socket, reads each in turn
//! within its budget, routes each line to its targets' queues, and answers `info` through the
//! supervisor (the rules are in `messages`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags};
use serde_json::{Value, json};

use crate::config::groups::Groups;
use crate::frontend::control::replies::Reply;
use crate::frontend::request::{Frontend, Request, Target};
use crate::supervisor::event::Event;
use crate::supervisor::snapshot::Snapshot;
use crate::worker_io::budget::Budget;
use crate::worker_io::messages::wire::{
    Command, Counters, Drops, FORGET, MAX_MESSAGE, REGISTER, REGISTER_LEN, parse,
};

/// What may wait for one worker beyond its socket's own buffer (about 200 KiB, the kernel's):
/// the rest of one message the socket took only in part. Most workers never read their socket,
/// and a broadcast then costs recluster at most this much per worker.
const QUEUE_BYTES: usize = MAX_MESSAGE + 1;
/// What one worker may send, on average and at once: messages (an `info` counts as
/// `INFO_COST`), and bytes. Above what one worker's messages through the thread reach
/// (`scripts/bench-messages`: 84,000 a second one way), so only a flood is slowed.
pub const MESSAGES_PER_SECOND: u64 = 100_000;
const MESSAGES_BURST: u64 = 10_000;
pub const BYTES_PER_SECOND: u64 = 64 * 1024 * 1024;
const BYTES_BURST: u64 = 4 * 1024 * 1024;
/// An `info` costs the supervisor a snapshot of the cluster: it counts as this many messages
/// (100 `info` a second).
const INFO_COST: u64 = 1000;
/// The most read from one worker, and the most deliveries of what it sent (a message to `all`
/// is one per worker), before the others get their turn.
const READ_TURN: usize = 64 * 1024;
const TURN_DELIVERIES: usize = 4096;

/// One worker's socket, as the thread knows it.
struct Peer {
    socket: OwnedFd,
    id: u32,
    pid: i32,
    /// What it sent that is not a whole line yet.
    input: Vec<u8>,
    /// The rest of a line too long to be a message, skipped up to its newline.
    skipping: bool,
    /// Lines for it the socket did not take yet.
    output: Vec<u8>,
    /// Whether epoll watches it for room to write.
    watching_output: bool,
    /// What it may still send now (messages, bytes).
    messages: Budget,
    bytes: Budget,
    /// Spent its budget: not read until then.
    paused_until: Option<Instant>,
}

impl Peer {
    /// What epoll is to watch its socket for.
    fn interest(&self) -> EpollFlags {
        let mut flags = EpollFlags::empty();
        if self.paused_until.is_none() {
            flags |= EpollFlags::EPOLLIN;
        }
        if self.watching_output {
            flags |= EpollFlags::EPOLLOUT;
        }
        flags
    }
}

const CONTROL: u64 = 0;

pub(super) struct Thread {
    epoll: Epoll,
    control: OwnedFd,
    orders: Receiver<Command>,
    answers: Receiver<Reply>,
    events: Sender<Event>,
    peers: HashMap<u64, Peer>,
    by_pid: HashMap<i32, u64>,
    /// The peers not read until their budget is back.
    paused: Vec<u64>,
    /// The workers whose `info` waits for the supervisor's answer (one each).
    asking: HashSet<u64>,
    /// Whether a question (`Request::Status`) is with the supervisor: one at a time.
    question_out: bool,
    drops: Drops,
    counters: Arc<Counters>,
    groups: Option<Groups>,
}

impl Thread {
    pub(super) fn new(
        control: OwnedFd,
        orders: Receiver<Command>,
        answers: Receiver<Reply>,
        events: Sender<Event>,
        (drops, counters): (Drops, Arc<Counters>),
        groups: Option<Groups>,
    ) -> io::Result<Thread> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        nix::fcntl::fcntl(
            control.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        epoll.add(&control, EpollEvent::new(EpollFlags::EPOLLIN, CONTROL))?;
        Ok(Thread {
            epoll,
            control,
            orders,
            answers,
            events,
            peers: HashMap::new(),
            by_pid: HashMap::new(),
            paused: Vec::new(),
            asking: HashSet::new(),
            question_out: false,
            drops,
            counters,
            groups,
        })
    }

    pub(super) fn run(mut self) {
        let mut ready = [EpollEvent::empty(); 64];
        // Lines longer than a read are put together in the peer's input.
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let resume_at = self
                .paused
                .iter()
                .filter_map(|t| self.peers.get(t)?.paused_until)
                .min();
            let n = match crate::frontend::reactor::wait(&self.epoll, &mut ready, resume_at) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("messages between workers stop working: {e}");
                    return;
                }
            };
            // Registrations first: a worker's message must find every worker started before it.
            if ready[..n].iter().any(|e| e.data() == CONTROL) && !self.take_orders() {
                return;
            }
            for event in &ready[..n] {
                let token = event.data();
                if token == CONTROL {
                    continue;
                }
                if event.events().contains(EpollFlags::EPOLLOUT) {
                    self.flush(token);
                }
                // A worker that hung up sent all it will: what is left is read even in a
                // pause (epoll reports the hang-up whatever it watches).
                let hung_up = event
                    .events()
                    .intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
                if event.events().contains(EpollFlags::EPOLLIN) || hung_up {
                    self.receive(token, &mut buffer, hung_up);
                }
            }
            self.resume(Instant::now());
        }
    }

    /// Reads again the peers whose budget is back.
    fn resume(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.paused.len() {
            let token = self.paused[i];
            let Some(peer) = self.peers.get_mut(&token) else {
                self.paused.swap_remove(i);
                continue;
            };
            if peer.paused_until.is_some_and(|at| at > now) {
                i += 1;
                continue;
            }
            peer.paused_until = None;
            self.paused.swap_remove(i);
            let mut event = EpollEvent::new(peer.interest(), token);
            let _ = self.epoll.modify(&peer.socket, &mut event);
        }
    }

    /// Charges the worker of `token` for what it sent; past its budget, it is not read until
    /// it has earned it back.
    fn charge(&mut self, token: u64, messages: u64, bytes: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        let until = [
            peer.messages.take(messages, now),
            peer.bytes.take(bytes, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(until) = until
            && peer.paused_until.is_none()
        {
            peer.paused_until = Some(until);
            self.paused.push(token);
            Counters::count(&self.counters.throttled);
            let mut event = EpollEvent::new(peer.interest(), token);
            let _ = self.epoll.modify(&peer.socket, &mut event);
        }
    }

    /// What came on the control socket (sockets, wake-ups) and the channels; false once
    /// recluster has gone.
    fn take_orders(&mut self) -> bool {
        loop {
            let mut message = [0u8; REGISTER_LEN];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [io::IoSliceMut::new(&mut message)];
            let received = socket::recvmsg::<()>(
                self.control.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let (bytes, fd) = match received {
                Ok(r) if r.bytes == 0 => return false, // recluster closed its end
                Ok(r) => {
                    let fd = r.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    });
                    (r.bytes, fd)
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            };
            let number = |at: usize| i32::from_ne_bytes(message[at..at + 4].try_into().expect("4"));
            match (message[0], bytes, fd) {
                (REGISTER, REGISTER_LEN, Some(fd)) => {
                    // SAFETY: the descriptor just received with SCM_RIGHTS is ours alone.
                    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                    let token = u64::from_ne_bytes(message[1..9].try_into().expect("8 bytes"));
                    let (id, pid) = (number(9) as u32, number(13));
                    self.register(token, socket, id, pid);
                }
                (FORGET, 5, _) => {
                    if let Some(token) = self.by_pid.remove(&number(1)) {
                        self.remove(token);
                    }
                }
                (_, _, Some(fd)) => {
                    // SAFETY: a descriptor received with a message we do not know: closed.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                _ => {} // `w`: the channels are looked at below
            }
        }
        while let Ok(order) = self.orders.try_recv() {
            match order {
                Command::Deliver { to, data } => {
                    let from = json!({"ctl": true});
                    self.route(None, &to, &from, data);
                }
            }
        }
        while let Ok(answer) = self.answers.try_recv() {
            match answer {
                Reply::Status { snapshot, .. } => self.answer_info(&snapshot),
                Reply::Shutdown => return false,
                _ => {}
            }
        }
        true
    }

    /// A worker's socket, from now on read and written as `token`.
    fn register(&mut self, token: u64, socket: OwnedFd, id: u32, pid: i32) {
        let _ = self
            .epoll
            .add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, token));
        self.by_pid.insert(pid, token);
        let now = Instant::now();
        self.peers.insert(
            token,
            Peer {
                socket,
                id,
                pid,
                input: Vec::new(),
                skipping: false,
                output: Vec::new(),
                watching_output: false,
                messages: Budget::new(MESSAGES_PER_SECOND, MESSAGES_BURST, now),
                bytes: Budget::new(BYTES_PER_SECOND, BYTES_BURST, now),
                paused_until: None,
            },
        );
    }

    fn remove(&mut self, token: u64) {
        if let Some(peer) = self.peers.remove(&token) {
            let _ = self.epoll.delete(&peer.socket);
            self.by_pid.remove(&peer.pid);
        }
    }

    /// Reads what the worker of `token` sent, up to `READ_TURN` bytes (a worker that `hung_up`
    /// even in a pause), and handles each whole line.
    fn receive(&mut self, token: u64, buffer: &mut [u8], hung_up: bool) {
        let (mut turn, mut delivered) = (0, 0);
        while turn < READ_TURN && delivered < TURN_DELIVERIES {
            let Some(peer) = self.peers.get_mut(&token) else {
                return;
            };
            if peer.paused_until.is_some() && !hung_up {
                return;
            }
            let n = match socket::recv(peer.socket.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(nix::errno::Errno::ECONNRESET) => {
                    // The worker closed its end: nothing more comes from it.
                    let _ = self.epoll.delete(&peer.socket);
                    return;
                }
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return, // all read
                Err(_) => {
                    // A broken socket: reported again at every wait until it is let go.
                    let _ = self.epoll.delete(&peer.socket);
                    return;
                }
            };
            turn += n;
            peer.input.extend_from_slice(&buffer[..n]);
            let mut lines = Vec::new();
            let mut start = 0;
            while let Some(end) = peer.input[start..].iter().position(|&b| b == b'\n') {
                let line = peer.input[start..=start + end].to_vec();
                start += end + 1;
                if std::mem::take(&mut peer.skipping) {
                    continue; // the end of a line too long
                }
                lines.push(line);
            }
            peer.input.drain(..start);
            let too_long = peer.input.len() > MAX_MESSAGE;
            if too_long {
                peer.input.clear();
                peer.skipping = true;
            }
            // Only a partial line stays between reads: what a burst held goes back.
            if peer.input.capacity() > 2 * peer.input.len() + 4096 {
                peer.input.shrink_to_fit();
            }
            let mut cost = lines.len() as u64;
            for line in lines {
                let (extra, to) = self.handle(token, &line[..line.len() - 1]);
                cost += extra;
                delivered += to;
            }
            if too_long {
                Counters::count(&self.counters.too_long);
                self.tell(
                    token,
                    &format!("a message is one line of at most {MAX_MESSAGE} bytes"),
                );
            }
            self.charge(token, cost, n as u64, Instant::now());
        }
    }

    /// One line from the worker of `token`; what it costs beyond one message, and to how many
    /// workers it went.
    fn handle(&mut self, token: u64, line: &[u8]) -> (u64, usize) {
        let Some(peer) = self.peers.get(&token) else {
            return (0, 0);
        };
        let (id, pid) = (peer.id, peer.pid);
        if line.len() > MAX_MESSAGE {
            Counters::count(&self.counters.too_long);
            self.tell(
                token,
                &format!("a message is one line of at most {MAX_MESSAGE} bytes"),
            );
            return (0, 0);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return (0, 0);
        }
        match parse(line) {
            Ok((Target::Recluster, data)) => {
                if data.get("cmd").and_then(Value::as_str) == Some("info") {
                    self.ask_info(token);
                    return (INFO_COST - 1, 0);
                } else {
                    Counters::count(&self.counters.invalid);
                    self.tell(
                        token,
                        "recluster answers {\"cmd\":\"info\"} only; workers cannot change the cluster",
                    );
                }
            }
            Ok((to, data)) => {
                let (group, local) = self.name(id);
                let from = json!({"id": local, "group": group, "pid": pid});
                return (0, self.route(Some(token), &to, &from, data));
            }
            Err(e) => {
                Counters::count(&self.counters.invalid);
                self.tell(token, &e);
            }
        }
        (0, 0)
    }

    /// `{"cmd": "info"}` from the worker of `token`: it waits for the answer to the question
    /// with the supervisor, or asks one; "busy" when its own is waiting already or the event
    /// channel is full. Never waits.
    fn ask_info(&mut self, token: u64) {
        let busy = if self.asking.contains(&token) {
            Some(
                "busy: recluster answers one info request of a worker at a time; ask again after the answer",
            )
        } else if self.question_out {
            None
        } else {
            match self.events.try_send(Event::Control {
                client: token,
                request: Request::Status,
                frontend: Frontend::Messages,
            }) {
                Ok(()) => {
                    self.question_out = true;
                    None
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    Some("busy: recluster has too much to do right now; ask again later")
                }
            }
        };
        match busy {
            None => {
                self.asking.insert(token);
            }
            Some(error) => {
                Counters::count(&self.counters.busy);
                self.tell(token, error);
            }
        }
    }

    /// Delivers `data` from `from` to the peers `to` names (`sender`: the token it came from);
    /// to how many.
    fn route(&mut self, sender: Option<u64>, to: &Target, from: &Value, data: Value) -> usize {
        let targets: Vec<u64> = match to {
            Target::All => self.registered().collect(),
            Target::Others => self.registered().filter(|&t| Some(t) != sender).collect(),
            Target::Worker(id) => self
                .registered()
                .filter(|t| self.name(self.peers[t].id).1 == *id)
                .collect(),
            Target::Group(name) | Target::GroupWorker(name, _)
                if self.groups.as_ref().and_then(|g| g.find(name)).is_none() =>
            {
                if let Some(sender) = sender {
                    self.tell(sender, &format!("there is no group {name}"));
                }
                return 0;
            }
            Target::Group(name) => self
                .registered()
                .filter(|t| self.name(self.peers[t].id).0.as_deref() == Some(name.as_str()))
                .collect(),
            Target::GroupWorker(name, id) => self
                .registered()
                .filter(|t| self.name(self.peers[t].id) == (Some(name.clone()), *id))
                .collect(),
            Target::Recluster => return 0,
        };
        if targets.is_empty() {
            return 0;
        }
        let envelope = json!({"from": from, "data": data}).to_string();
        for &token in &targets {
            self.send(token, envelope.as_bytes());
        }
        targets.len()
    }

    /// A slot's group (with groups) and its `WORKER_ID`.
    fn name(&self, slot: u32) -> (Option<String>, u32) {
        match &self.groups {
            Some(groups) => {
                let (g, local) = groups.of_slot(slot);
                (Some(groups.groups[g].name.clone()), local)
            }
            None => (None, slot),
        }
    }

    /// The tokens of the workers that are running.
    fn registered(&self) -> impl Iterator<Item = u64> + '_ {
        self.peers.keys().copied()
    }

    /// Queues one message (a line) for a worker and writes what its socket takes. Only into an
    /// empty queue: a worker whose socket is full (it does not read) has the rest of one message
    /// waiting here at most, and a message that finds something waiting is dropped whole and
    /// counted.
    fn send(&mut self, token: u64, message: &[u8]) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        if !peer.output.is_empty() || message.len() + 1 > QUEUE_BYTES {
            if let Ok(mut drops) = self.drops.lock() {
                *drops.entry(peer.id).or_insert(0) += 1;
            }
            Counters::count(&self.counters.queue_full);
            return;
        }
        peer.output.extend_from_slice(message);
        peer.output.push(b'\n');
        self.flush(token);
    }

    /// Writes what waits for the worker of `token` until its socket is full; watches for room
    /// while something is left.
    fn flush(&mut self, token: u64) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        while !peer.output.is_empty() {
            match socket::send(
                peer.socket.as_raw_fd(),
                &peer.output,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    peer.output.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => {
                    // The worker closed its end: what was for it goes nowhere.
                    peer.output.clear();
                    break;
                }
            }
        }
        let want = !peer.output.is_empty();
        if !want && peer.output.capacity() > 0 {
            peer.output = Vec::new(); // what a burst held goes back
        }
        if want != peer.watching_output {
            peer.watching_output = want;
            let mut event = EpollEvent::new(peer.interest(), token);
            let _ = self.epoll.modify(&peer.socket, &mut event);
        }
    }

    /// An error for the worker of `token`.
    fn tell(&mut self, token: u64, error: &str) {
        let line = json!({"from": {"recluster": true}, "error": error}).to_string();
        self.send(token, line.as_bytes());
    }

    /// The answer to `{"cmd": "info"}` (ids, pids, groups, states, generations), written once
    /// and sent to every worker that waits for it; the next `info` asks again.
    fn answer_info(&mut self, snapshot: &Snapshot) {
        self.question_out = false;
        let workers: Vec<Value> = snapshot
            .workers
            .iter()
            .filter(|w| w.pid.is_some())
            .map(|w| {
                json!({"id": w.id, "group": w.group, "pid": w.pid, "state": w.state.name(), "generation": w.generation})
            })
            .collect();
        let info = json!({
            "from": {"recluster": true},
            "data": {
                "pid": snapshot.cluster.pid,
                "state": snapshot.cluster.state.name(),
                "generation": snapshot.cluster.generation,
                "workers": workers,
            }
        });
        let text = info.to_string();
        for token in std::mem::take(&mut self.asking) {
            self.send(token, text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// A message thread with no thread of its own, and one worker (token 1) registered; the
    /// worker's end of its socket, and the supervisor's end of the event channel.
    fn thread_with_a_worker(events: usize) -> (Thread, UnixStream, Receiver<Event>) {
        let (control, _) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (_, orders) = crossbeam_channel::bounded(1);
        let (_, answers) = crossbeam_channel::bounded(1);
        let (sender, received) = crossbeam_channel::bounded(events);
        let counted = (Drops::default(), Arc::<Counters>::default());
        let mut thread = Thread::new(control, orders, answers, sender, counted, None).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread.register(1, ours.into(), 0, 100);
        theirs.set_nonblocking(true).unwrap();
        (thread, theirs, received)
    }

    /// What the worker got back, line by line.
    fn read_back(worker: &mut UnixStream) -> Vec<Value> {
        let mut text = Vec::new();
        let _ = worker.read_to_end(&mut text);
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    const INFO: &[u8] = b"{\"to\":\"recluster\",\"data\":{\"cmd\":\"info\"}}\n";

    #[test]
    fn a_second_info_before_the_answer_is_busy_and_one_after_it_is_asked() {
        let (mut thread, mut worker, events) = thread_with_a_worker(8);
        let mut buffer = vec![0u8; 16 * 1024];
        worker.write_all(&INFO.repeat(3)).unwrap();
        thread.receive(1, &mut buffer, false);
        assert_eq!(events.try_iter().count(), 1, "one info with the supervisor");
        let back = read_back(&mut worker);
        assert_eq!(back.len(), 2, "{back:?}");
        assert!(
            back.iter()
                .all(|l| l["error"].as_str().unwrap().starts_with("busy"))
        );
        assert_eq!(thread.counters.read().busy, 2);
        thread.answer_info(&crate::snapshot::tests::sample());
        let back = read_back(&mut worker);
        assert_eq!(back[0]["data"]["pid"], 4242, "{back:?}");
        worker.write_all(INFO).unwrap();
        thread.receive(1, &mut buffer, false);
        assert_eq!(events.try_iter().count(), 1, "asked again after the answer");
    }

    #[test]
    fn an_info_that_finds_the_event_channel_full_is_busy_not_waited_for() {
        let (mut thread, mut worker, events) = thread_with_a_worker(1);
        thread
            .events
            .try_send(Event::ControlGone { client: 9 })
            .unwrap();
        worker.write_all(INFO).unwrap();
        thread.receive(1, &mut vec![0u8; 1024], false);
        assert_eq!(events.len(), 1, "nothing more was queued");
        let back = read_back(&mut worker);
        assert!(
            back[0]["error"].as_str().unwrap().starts_with("busy"),
            "{back:?}"
        );
        assert!(
            !thread.asking.contains(&1),
            "nothing pending: it may ask again"
        );
    }

    #[test]
    fn the_infos_of_every_worker_wait_for_one_question_and_share_its_answer() {
        let (mut thread, mut first, events) = thread_with_a_worker(8);
        let (ours, mut second) = UnixStream::pair().unwrap();
        second.set_nonblocking(true).unwrap();
        thread.register(2, ours.into(), 1, 101);
        let mut buffer = vec![0u8; 1024];
        first.write_all(INFO).unwrap();
        thread.receive(1, &mut buffer, false);
        second.write_all(INFO).unwrap();
        thread.receive(2, &mut buffer, false);
        assert_eq!(events.try_iter().count(), 1, "one question for both");
        thread.answer_info(&crate::snapshot::tests::sample());
        for worker in [&mut first, &mut second] {
            let back = read_back(worker);
            assert_eq!(back.len(), 1, "{back:?}");
            assert_eq!(back[0]["data"]["pid"], 4242, "{back:?}");
        }
        assert_eq!(thread.counters.read().busy, 0);
        first.write_all(INFO).unwrap();
        thread.receive(1, &mut buffer, false);
        assert_eq!(events.try_iter().count(), 1, "the next info asks again");
    }

    #[test]
    fn a_worker_past_its_budget_is_not_read_until_it_has_earned_it_back() {
        let (mut thread, mut worker, _events) = thread_with_a_worker(8);
        let now = Instant::now();
        thread.peers.get_mut(&1).unwrap().messages = Budget::new(10, 2, now);
        let mut buffer = vec![0u8; 16 * 1024];
        // Five lines that are not messages (each counted `invalid` when read): 3 over budget.
        worker.write_all(b"x\nx\nx\nx\nx\n").unwrap();
        thread.receive(1, &mut buffer, false);
        assert_eq!(thread.counters.read().invalid, 5);
        assert_eq!(thread.counters.read().throttled, 1);
        let until = thread.peers[&1].paused_until.expect("paused");
        assert!(
            until >= now + Duration::from_millis(250),
            "{:?}",
            until - now
        );
        worker.write_all(b"x\n").unwrap();
        thread.receive(1, &mut buffer, false);
        assert_eq!(thread.counters.read().invalid, 5, "not read in its pause");
        thread.resume(until - Duration::from_millis(1));
        assert!(
            thread.peers[&1].paused_until.is_some(),
            "not before its time"
        );
        thread.resume(until);
        thread.receive(1, &mut buffer, false);
        assert_eq!(
            thread.counters.read().invalid,
            6,
            "read again once paid back"
        );
    }

    #[test]
    fn a_worker_that_hung_up_is_read_to_the_end_even_in_a_pause() {
        let (mut thread, mut worker, _events) = thread_with_a_worker(8);
        let now = Instant::now();
        thread.peers.get_mut(&1).unwrap().messages = Budget::new(1, 1, now);
        worker.write_all(b"x\nx\nx\n").unwrap();
        let mut buffer = vec![0u8; 16 * 1024];
        thread.receive(1, &mut buffer, false);
        worker.write_all(b"x\n").unwrap();
        drop(worker);
        thread.receive(1, &mut buffer, true);
        assert_eq!(thread.counters.read().invalid, 4);
    }
}
