//! The sd_notify protocol, both ways.
//!
//! Down: with `--ready notify` every worker gets a `NOTIFY_SOCKET` of its own, a datagram socket in
//! a directory kept by `notify_dir` (no worker can make recluster act on a path it chose). A
//! message on it counts for that worker whoever in its tree sends it (`systemd-notify --ready`
//! from a wrapper script works). One thread receives them all. That thread has a descriptor table
//! of its own, and the sockets live there alone (handed over with `SCM_RIGHTS`): the main thread,
//! which spawns every worker, then holds none of them, so a spawn costs the same with 10 workers
//! or 10,000.
//!
//! A worker may send as fast as it likes without growing recluster or starving its loop: the
//! thread folds each datagram into the worker's one pending `Message` (the latest `STATUS`, cut
//! to `STATUS_MAX` bytes; one watchdog word), reads at most `BURST` datagrams from a socket before
//! it looks at the others, and sends `Event::Notified` only when the pending set was empty: at
//! most one such event waits in the channel, and the loop takes every pending message at once.
//!
//! Up: when recluster itself runs with `NOTIFY_SOCKET` (a systemd `Type=notify` service), `Manager`
//! sends it `READY=1`, `STOPPING=1` and `STATUS=` lines.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use nix::sys::socket;

use crate::supervisor::event::Event;
use crate::worker_io::notify_dir::NotifyDir;

/// The longest `STATUS=` text kept, in bytes (cut at a character boundary): a status is a line
/// for `ctl status` and the log, not a document.
pub const STATUS_MAX: usize = 256;

/// At most this many datagrams are read from one socket before the others get their turn.
const BURST: usize = 32;

/// What a worker said on its socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
    /// `WATCHDOG=1`, `WATCHDOG=trigger` or `WATCHDOG_USEC=N` (`--watchdog`).
    pub watchdog: Option<Watchdog>,
}

/// What a worker tells its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// `WATCHDOG=1`: alive.
    Ping,
    /// `WATCHDOG=trigger`: fail it now.
    Trigger,
    /// `WATCHDOG_USEC=N`: the interval is N µs from now on (and it counts as a ping).
    Interval(u64),
}

impl Message {
    /// Parses `KEY=VALUE` lines; unknown keys are ignored, as systemd does.
    pub fn parse(datagram: &[u8]) -> Message {
        let text = String::from_utf8_lossy(datagram);
        let mut message = Message::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => message.ready = true,
                Some(("STOPPING", "1")) => message.stopping = true,
                Some(("STATUS", status)) => message.status = Some(truncate(status).to_string()),
                Some(("WATCHDOG", "1")) => message.watchdog = Some(Watchdog::Ping),
                Some(("WATCHDOG", "trigger")) => message.watchdog = Some(Watchdog::Trigger),
                Some(("WATCHDOG_USEC", usec)) => {
                    if let Ok(usec) = usec.parse() {
                        message.watchdog = Some(Watchdog::Interval(usec));
                    }
                }
                _ => {}
            }
        }
        message
    }

    /// Folds `later` into this message, as if the cluster had seen both in turn: readiness and
    /// stopping stay, the later `STATUS` wins, `WATCHDOG=trigger` wins over the rest, and a ping
    /// after `WATCHDOG_USEC=` keeps the new interval (which counts as a ping too).
    pub fn merge(&mut self, later: Message) {
        self.ready |= later.ready;
        self.stopping |= later.stopping;
        if later.status.is_some() {
            self.status = later.status;
        }
        self.watchdog = match (self.watchdog, later.watchdog) {
            (Some(Watchdog::Trigger), _) | (_, Some(Watchdog::Trigger)) => Some(Watchdog::Trigger),
            (earlier, None) => earlier,
            (Some(Watchdog::Interval(usec)), Some(Watchdog::Ping)) => {
                Some(Watchdog::Interval(usec))
            }
            (_, later) => later,
        };
    }
}

/// `text` cut to `STATUS_MAX` bytes at a character boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= STATUS_MAX {
        return text;
    }
    let mut end = STATUS_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the workers said and the loop has not taken yet: one merged `Message` per socket token.
type Pending = Arc<Mutex<HashMap<u64, Message>>>;

/// The workers' sockets, their directory, and the thread that reads them.
pub struct WorkerSockets {
    dir: NotifyDir,
    next: u64,
    /// Tokens of the sockets open now.
    open: HashSet<u64>,
    /// recluster's end of the thread's control socket: sockets to watch go over it as
    /// `SCM_RIGHTS`, then recluster closes its own copy.
    control: OwnedFd,
    /// Messages received and not taken yet.
    pending: Pending,
}

/// A control message to the thread: `OPEN` with the socket attached, or `CLOSE`, and a token.
const OPEN: u8 = b'o';
const CLOSE: u8 = b'c';

impl WorkerSockets {
    /// Creates the directory (see `notify_dir`) and starts the thread; `Event::Notified` on
    /// `events` says that messages wait (`take`). With `owner` (`--user`), each socket belongs
    /// to that uid and gid, and the directory lets that group pass.
    pub fn start(events: Sender<Event>, owner: Option<(u32, u32)>) -> io::Result<WorkerSockets> {
        WorkerSockets::start_in(&notify_base(), events, owner, true)
    }

    /// `start`, with the directory made under `base`, the thread's descriptor table private if
    /// `private` (and allowed).
    fn start_in(
        base: &Path,
        events: Sender<Event>,
        owner: Option<(u32, u32)>,
        private: bool,
    ) -> io::Result<WorkerSockets> {
        let dir = NotifyDir::create(base, owner)?;
        let (control, thread_end) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let pending = Pending::default();
        let mailbox = pending.clone();
        let (ready, started) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("notify".to_string())
            .spawn(move || match own_descriptor_table(&thread_end, private) {
                Ok(epoll) => {
                    let _ = ready.send(Ok(()));
                    receive(epoll, thread_end, &mailbox, &events);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })?;
        // Nothing else opens or closes descriptors until the thread has its own table.
        started
            .recv()
            .map_err(|_| io::Error::other("the notify thread ended at start"))??;
        Ok(WorkerSockets {
            dir,
            next: 0,
            open: HashSet::new(),
            control,
            pending,
        })
    }

    /// A new socket for the next worker: its token and the path for `NOTIFY_SOCKET`.
    pub fn open(&mut self) -> io::Result<(u64, PathBuf)> {
        self.next += 1;
        let name = format!("w{}", self.next);
        let (socket, path) = self.dir.bind(&name)?;
        // The thread reads each socket until it would block, after epoll says it is readable.
        let sent = socket
            .set_nonblocking(true)
            .and_then(|()| self.tell(OPEN, self.next, Some(socket.as_raw_fd())));
        drop(socket); // the thread holds it now
        if let Err(e) = sent {
            self.dir.remove(&name);
            return Err(e);
        }
        self.open.insert(self.next);
        Ok((self.next, path))
    }

    /// Closes a worker's socket (it has ended).
    pub fn close(&mut self, token: u64) {
        if !self.open.remove(&token) {
            return;
        }
        self.dir.remove(&format!("w{token}"));
        if let Err(e) = self.tell(CLOSE, token, None) {
            log::debug!("failed to close notify socket {token}: {e}");
        }
    }

    /// What the workers said since the last call: one merged message per socket token, in
    /// token order.
    pub fn take(&self) -> Vec<(u64, Message)> {
        let taken = std::mem::take(&mut *lock(&self.pending));
        let mut messages: Vec<(u64, Message)> = taken.into_iter().collect();
        messages.sort_unstable_by_key(|(token, _)| *token);
        messages
    }

    fn tell(&self, what: u8, token: u64, fd: Option<RawFd>) -> io::Result<()> {
        let mut message = [0u8; 9];
        message[0] = what;
        message[1..].copy_from_slice(&token.to_ne_bytes());
        let iov = [std::io::IoSlice::new(&message)];
        let fds: Vec<RawFd> = fd.into_iter().collect();
        let rights = [socket::ControlMessage::ScmRights(&fds)];
        let cmsgs: &[socket::ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        socket::sendmsg::<()>(
            self.control.as_raw_fd(),
            &iov,
            cmsgs,
            socket::MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The pending messages, even if a thread panicked while holding them (they stay consistent:
/// each update is one insert).
fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, Message>> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// The epoll token of the control socket (worker sockets have theirs from 1 up).
const WAKE: u64 = 0;

/// Where the notify directory goes: `$XDG_RUNTIME_DIR`, else `$TMPDIR` if set, else `/dev/shm`,
/// else `/tmp`. A memory file system where there is one: binding a socket there costs about a
/// hundredth of what it costs on a disk (0.011 ms against 0.38 ms on ext4, measured), and with
/// `--ready notify` every spawn binds one.
fn notify_base() -> PathBuf {
    ["XDG_RUNTIME_DIR", "TMPDIR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/dev/shm")])
        .find(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Adds `fd` to the epoll set with `token`.
fn watch(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: a valid epoll fd, an open fd and an initialised event.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the calling thread a descriptor table of its own (see `fd_table`) holding only `keep`,
/// and an epoll set watching it. The workers' sockets then live in this table alone: recluster's
/// main thread, which spawns every worker, holds none of them, so a spawn does not copy thousands
/// of descriptors and an exec does not close them (that made a start of N workers cost O(N²)).
fn own_descriptor_table(keep: &OwnedFd, private: bool) -> io::Result<RawFd> {
    crate::process::fd_table::make_private(&[keep.as_raw_fd()], private, "notify");
    // SAFETY: epoll_create1 takes a flag and returns a new descriptor.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    nix::fcntl::fcntl(
        keep.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    watch(epoll, keep.as_raw_fd(), WAKE)?;
    Ok(epoll)
}

/// The thread: wait on every worker socket and the control socket at once (epoll: the cost of a
/// wake does not grow with the number of workers); fold datagrams into `pending`, and tell the
/// loop when the pending set stops being empty. It ends when recluster's end of the control
/// socket closes, or the loop is gone.
fn receive(epoll: RawFd, control: OwnedFd, pending: &Pending, events: &Sender<Event>) {
    let mut sockets: HashMap<u64, UnixDatagram> = HashMap::new();
    let mut buffer = vec![0u8; 4096];
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // SAFETY: a valid epoll fd and a buffer of `ready.len()` events; no timeout.
        let n = unsafe { libc::epoll_wait(epoll, ready.as_mut_ptr(), ready.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for event in &ready[..n as usize] {
            let token = event.u64;
            if token == WAKE {
                if !take_orders(epoll, &control, &mut sockets, pending) {
                    return;
                }
                continue;
            }
            let Some(socket) = sockets.get(&token) else {
                continue; // closed since epoll_wait returned
            };
            // At most BURST at a time: epoll reports a socket with more again next round.
            let mut message: Option<Message> = None;
            for _ in 0..BURST {
                let Ok(n) = socket.recv(&mut buffer) else {
                    break;
                };
                let parsed = Message::parse(&buffer[..n]);
                match &mut message {
                    Some(message) => message.merge(parsed),
                    None => message = Some(parsed),
                }
            }
            let Some(message) = message else {
                continue;
            };
            let was_empty = {
                let mut pending = lock(pending);
                let was_empty = pending.is_empty();
                pending.entry(token).or_default().merge(message);
                was_empty
            };
            if was_empty && events.send(Event::Notified).is_err() {
                return;
            }
        }
    }
}

/// Carries out every `OPEN` and `CLOSE` waiting on the control socket; false once recluster's
/// end is gone.
fn take_orders(
    epoll: RawFd,
    control: &OwnedFd,
    sockets: &mut HashMap<u64, UnixDatagram>,
    pending: &Pending,
) -> bool {
    loop {
        let mut message = [0u8; 9];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut message)];
        let received = socket::recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            socket::MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let (bytes, fd) = match received {
            Ok(msg) => {
                let fd = msg.cmsgs().ok().and_then(|mut cmsgs| {
                    cmsgs.find_map(|c| match c {
                        socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    })
                });
                (msg.bytes, fd)
            }
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        };
        if bytes == 0 {
            return false; // recluster's end closed
        }
        let token = u64::from_ne_bytes(message[1..].try_into().expect("8 bytes"));
        match (message[0], fd) {
            (OPEN, Some(fd)) => {
                // SAFETY: the descriptor was just received and is owned by nothing else.
                let socket = unsafe { UnixDatagram::from_raw_fd(fd) };
                if watch(epoll, fd, token).is_ok() {
                    sockets.insert(token, socket);
                }
            }
            (CLOSE, _) => {
                // Closing the socket takes it out of the epoll set.
                sockets.remove(&token);
                lock(pending).remove(&token);
            }
            (_, fd) => {
                if let Some(fd) = fd {
                    // SAFETY: a received descriptor nothing else owns.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
}

/// recluster's own service manager, when it has given recluster a `NOTIFY_SOCKET`.
pub struct Manager {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Manager {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), if set.
    pub fn from_env() -> Option<Manager> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(Path::new(&target)).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Manager { socket, address })
    }

    /// Sends one notification (`READY=1\nSTATUS=…`); a manager that went away is not an error.
    pub fn send(&self, text: &str) {
        if let Err(e) = self.socket.send_to_addr(text.as_bytes(), &self.address) {
            log::debug!("failed to notify the service manager: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keys_recluster_acts_on() {
        let m = Message::parse(b"READY=1\nSTATUS=serving on 3000\nMAINPID=1\n");
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("serving on 3000"));
        assert!(!Message::parse(b"READY=0").ready);
        assert!(Message::parse(b"STOPPING=1").stopping);
        assert_eq!(Message::parse(b"WATCHDOG=1").watchdog, Some(Watchdog::Ping));
        assert_eq!(
            Message::parse(b"WATCHDOG=trigger").watchdog,
            Some(Watchdog::Trigger)
        );
        assert_eq!(
            Message::parse(b"WATCHDOG_USEC=2000000").watchdog,
            Some(Watchdog::Interval(2_000_000))
        );
    }

    #[test]
    fn a_status_is_cut_at_a_character_boundary_and_later_words_win_when_merged() {
        let long = format!("STATUS={}", "é".repeat(STATUS_MAX));
        let status = Message::parse(long.as_bytes()).status.unwrap();
        assert_eq!(status.len(), STATUS_MAX);
        let mut merged = Message::parse(b"READY=1\nSTATUS=one\nWATCHDOG_USEC=5000");
        merged.merge(Message::parse(b"WATCHDOG=1\nSTATUS=two"));
        assert_eq!(
            merged,
            Message {
                ready: true,
                status: Some("two".to_string()),
                watchdog: Some(Watchdog::Interval(5000)),
                ..Message::default()
            }
        );
        merged.merge(Message::parse(b"WATCHDOG=trigger"));
        merged.merge(Message::parse(b"WATCHDOG=1"));
        assert_eq!(merged.watchdog, Some(Watchdog::Trigger));
    }

    #[test]
    fn the_directory_has_a_fresh_name_and_a_base_too_long_for_sockets_is_refused() {
        let (sender, _events) = crossbeam_channel::unbounded();
        let a = WorkerSockets::start(sender.clone(), None).unwrap();
        let b = WorkerSockets::start(sender.clone(), None).unwrap();
        assert_ne!(a.dir(), b.dir(), "mkdtemp names");
        let long = std::env::temp_dir().join("d".repeat(90));
        std::fs::create_dir_all(&long).unwrap();
        let err = WorkerSockets::start_in(&long, sender, None, true)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("too long for a socket path"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(&long).unwrap().count(),
            0,
            "nothing left behind"
        );
        std::fs::remove_dir(&long).unwrap();
    }

    #[test]
    fn a_worker_socket_delivers_its_messages_with_its_token() {
        for private in [true, false] {
            delivers_messages(private);
        }
    }

    /// With the thread's own descriptor table, and sharing the process's (where seccomp forbids
    /// unshare).
    fn delivers_messages(private: bool) {
        let (sender, events) = crossbeam_channel::unbounded();
        let mut sockets = WorkerSockets::start_in(&notify_base(), sender, None, private).unwrap();
        let mode = std::fs::metadata(sockets.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        let (token, path) = sockets.open().unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        let event = events
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(event, Event::Notified);
        assert_eq!(
            sockets.take(),
            [(
                token,
                Message {
                    ready: true,
                    ..Message::default()
                }
            )]
        );
        sockets.close(token);
        assert!(!path.exists());
    }

    #[test]
    fn a_flood_leaves_one_pending_message_and_one_event() {
        let (sender, events) = crossbeam_channel::unbounded();
        let mut sockets = WorkerSockets::start_in(&notify_base(), sender, None, true).unwrap();
        let (token, path) = sockets.open().unwrap();
        let client = UnixDatagram::unbound().unwrap();
        for n in 0..2000 {
            let text = format!("WATCHDOG=1\nSTATUS=n={n}");
            // A full queue (the thread behind) drops the datagram: a flooder's own loss.
            let _ = client.send_to(text.as_bytes(), &path);
        }
        client.send_to(b"WATCHDOG=1\nSTATUS=last", &path).unwrap();
        assert_eq!(
            events
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap(),
            Event::Notified
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut last = None;
        while last.as_deref() != Some("last") && std::time::Instant::now() < deadline {
            for (from, message) in sockets.take() {
                assert_eq!(from, token);
                assert_eq!(message.watchdog, Some(Watchdog::Ping));
                last = message.status;
            }
            if last.as_deref() != Some("last") {
                let _ = events.recv_timeout(std::time::Duration::from_millis(100));
            }
        }
        assert_eq!(last.as_deref(), Some("last"));
        assert!(
            events.len() <= 1,
            "{} events wait for one worker",
            events.len()
        );
    }
}
