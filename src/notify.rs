//! The sd_notify protocol, both ways.
//!
//! Down: with `--ready notify` every worker gets a `NOTIFY_SOCKET` of its own, a datagram socket in a
//! directory only recluster's user can enter (made by `mkdtemp`, so no one can take its name first). A message on it counts for that worker whoever in its
//! tree sends it (`systemd-notify --ready` from a wrapper script works). One thread receives them
//! all and turns them into `Event::Notified`. That thread has a descriptor table of its own, and
//! the sockets live there alone (handed over with `SCM_RIGHTS`): the main thread, which spawns
//! every worker, then holds none of them, so a spawn costs the same with 10 workers or 10,000.
//!
//! Up: when recluster itself runs with `NOTIFY_SOCKET` (a systemd `Type=notify` service), `Manager`
//! sends it `READY=1`, `STOPPING=1` and `STATUS=` lines.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use nix::sys::socket;

use crate::event::Event;

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
                Some(("STATUS", status)) => message.status = Some(status.to_string()),
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
}

/// The private directory of the workers' sockets, and the thread that reads them.
pub struct WorkerSockets {
    dir: PathBuf,
    next: u64,
    /// With `--user`: who owns the directory and the sockets, so workers can reach them.
    owner: Option<(u32, u32)>,
    /// recluster's end of the thread's control socket: sockets to watch go over it as
    /// `SCM_RIGHTS`, then recluster closes its own copy.
    control: OwnedFd,
}

/// A control message to the thread: `OPEN` with the socket attached, or `CLOSE`, and a token.
const OPEN: u8 = b'o';
const CLOSE: u8 = b'c';

impl WorkerSockets {
    /// Creates the directory (mode 0700, a fresh name nobody else can have taken) and starts the
    /// thread; messages arrive on `events`.
    /// With `owner` (`--user`), the directory and the sockets belong to that uid and gid, and
    /// to no other user.
    pub fn start(events: Sender<Event>, owner: Option<(u32, u32)>) -> io::Result<WorkerSockets> {
        let mut sockets = WorkerSockets::start_in(&notify_base(), events, true)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&sockets.dir, Some(uid), Some(gid))?;
            sockets.owner = owner;
        }
        Ok(sockets)
    }

    /// `start`, with the directory made under `base`, the thread's descriptor table private if
    /// `private` (and allowed).
    fn start_in(base: &Path, events: Sender<Event>, private: bool) -> io::Result<WorkerSockets> {
        let dir = make_private_dir(base)?;
        // `w` and a token of up to 20 digits must fit in a socket address.
        let longest = dir.as_os_str().len() + "/w".len() + 20;
        if longest >= SOCKET_PATH_MAX {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::other(format!(
                "{} is too long for a socket path ({SOCKET_PATH_MAX} bytes at most): set TMPDIR (or XDG_RUNTIME_DIR) to a shorter directory",
                dir.display()
            )));
        }
        let (control, thread_end) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let (ready, started) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("notify".to_string())
            .spawn(move || match own_descriptor_table(&thread_end, private) {
                Ok(epoll) => {
                    let _ = ready.send(Ok(()));
                    receive(epoll, thread_end, &events);
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
            owner: None,
            control,
        })
    }

    /// A new socket for the next worker: its token and the path for `NOTIFY_SOCKET`.
    pub fn open(&mut self) -> io::Result<(u64, PathBuf)> {
        self.next += 1;
        let path = self.dir.join(format!("w{}", self.next));
        let socket = UnixDatagram::bind(&path)?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        // The thread reads each socket until it would block, after epoll says it is readable.
        socket.set_nonblocking(true)?;
        let sent = self.tell(OPEN, self.next, Some(socket.as_raw_fd()));
        drop(socket); // the thread holds it now
        if let Err(e) = sent {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((self.next, path))
    }

    /// Closes a worker's socket (it has ended).
    pub fn close(&mut self, token: u64) {
        let _ = std::fs::remove_file(self.dir.join(format!("w{token}")));
        if let Err(e) = self.tell(CLOSE, token, None) {
            log::debug!("failed to close notify socket {token}: {e}");
        }
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
        &self.dir
    }
}

impl Drop for WorkerSockets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The longest path a unix socket address holds (`sun_path`, with its NUL).
const SOCKET_PATH_MAX: usize = 108;

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

/// `BASE/recluster-PID-XXXXXX`, created by `mkdtemp`: mode 0700 and a name no other user can
/// have taken first.
fn make_private_dir(base: &Path) -> io::Result<PathBuf> {
    let template = base.join(format!("recluster-{}-XXXXXX", std::process::id()));
    let mut bytes = template.into_os_string().into_vec();
    bytes.push(0);
    // SAFETY: a writable, NUL-terminated template ending in XXXXXX, as mkdtemp requires.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot create a directory in {}: {e}", base.display()),
        ));
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
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
    crate::fd_table::make_private(&[keep.as_raw_fd()], private, "notify");
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
/// wake does not grow with the number of workers); turn datagrams into events. It ends when
/// recluster's end of the control socket closes.
fn receive(epoll: RawFd, control: OwnedFd, events: &Sender<Event>) {
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
                if !take_orders(epoll, &control, &mut sockets) {
                    return;
                }
                continue;
            }
            let Some(socket) = sockets.get(&token) else {
                continue; // closed since epoll_wait returned
            };
            while let Ok(n) = socket.recv(&mut buffer) {
                let message = Message::parse(&buffer[..n]);
                if events.send(Event::Notified { token, message }).is_err() {
                    return;
                }
            }
        }
    }
}

/// Carries out every `OPEN` and `CLOSE` waiting on the control socket; false once recluster's
/// end is gone.
fn take_orders(epoll: RawFd, control: &OwnedFd, sockets: &mut HashMap<u64, UnixDatagram>) -> bool {
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
    fn the_directory_has_a_fresh_name_and_a_base_too_long_for_sockets_is_refused() {
        let (sender, _events) = crossbeam_channel::unbounded();
        let a = WorkerSockets::start(sender.clone(), None).unwrap();
        let b = WorkerSockets::start(sender.clone(), None).unwrap();
        assert_ne!(a.dir(), b.dir(), "mkdtemp names");
        let long = std::env::temp_dir().join("d".repeat(90));
        std::fs::create_dir_all(&long).unwrap();
        let err = WorkerSockets::start_in(&long, sender, true)
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
        let mut sockets = WorkerSockets::start_in(&notify_base(), sender, private).unwrap();
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
        assert_eq!(
            event,
            Event::Notified {
                token,
                message: Message {
                    ready: true,
                    ..Message::default()
                }
            }
        );
        sockets.close(token);
        assert!(!path.exists());
    }
}
