//! The sd_notify protocol, both ways.
//!
//! Down: with `--ready notify` every worker gets a `NOTIFY_SOCKET` of its own, a datagram socket in a
//! directory only recluster's user can enter (made by `mkdtemp`, so no one can take its name first). A message on it counts for that worker whoever in its
//! tree sends it (`systemd-notify --ready` from a wrapper script works). One thread receives them
//! all and turns them into `Event::Notified`.
//!
//! Up: when recluster itself runs with `NOTIFY_SOCKET` (a systemd `Type=notify` service), `Manager`
//! sends it `READY=1`, `STOPPING=1` and `STATUS=` lines.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};

use crate::event::Event;

/// What a worker said on its socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
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
    register: Sender<(u64, UnixDatagram)>,
    forget: Sender<u64>,
    wake: RawFd,
}

impl WorkerSockets {
    /// Creates the directory (mode 0700, a fresh name nobody else can have taken) and starts the
    /// thread; messages arrive on `events`.
    pub fn start(events: Sender<Event>) -> io::Result<WorkerSockets> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        WorkerSockets::start_in(&base, events)
    }

    /// `start`, with the directory made under `base`.
    fn start_in(base: &Path, events: Sender<Event>) -> io::Result<WorkerSockets> {
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
        let mut pipe = [0; 2];
        // SAFETY: pipe2 writes two fds into a valid array.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        watch(epoll, pipe[0], WAKE)?;
        let (register, registrations) = crossbeam_channel::unbounded();
        let (forget, forgotten) = crossbeam_channel::unbounded();
        let wake_read = pipe[0];
        std::thread::Builder::new()
            .name("notify".to_string())
            .spawn(move || receive(epoll, wake_read, &registrations, &forgotten, &events))?;
        Ok(WorkerSockets {
            dir,
            next: 0,
            register,
            forget,
            wake: pipe[1],
        })
    }

    /// A new socket for the next worker: its token and the path for `NOTIFY_SOCKET`.
    pub fn open(&mut self) -> io::Result<(u64, PathBuf)> {
        self.next += 1;
        let path = self.dir.join(format!("w{}", self.next));
        let socket = UnixDatagram::bind(&path)?;
        // The thread reads each socket until it would block, after poll says it is readable.
        socket.set_nonblocking(true)?;
        let _ = self.register.send((self.next, socket));
        self.wake();
        Ok((self.next, path))
    }

    /// Closes a worker's socket (it has ended).
    pub fn close(&mut self, token: u64) {
        let _ = std::fs::remove_file(self.dir.join(format!("w{token}")));
        let _ = self.forget.send(token);
        self.wake();
    }

    fn wake(&self) {
        // SAFETY: a one-byte write to our own pipe (non-blocking: a full pipe already wakes).
        unsafe { libc::write(self.wake, b"x".as_ptr().cast(), 1) };
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

/// The epoll token of the wake pipe (worker sockets have theirs from 1 up).
const WAKE: u64 = 0;

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

/// The thread: wait on every worker socket and the wake pipe at once (epoll: the cost of a wake
/// does not grow with the number of workers); turn datagrams into events. It owns the sockets,
/// so one is never read after it was closed.
fn receive(
    epoll: RawFd,
    wake: RawFd,
    registrations: &Receiver<(u64, UnixDatagram)>,
    forgotten: &Receiver<u64>,
    events: &Sender<Event>,
) {
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
                // SAFETY: draining our own non-blocking pipe into a valid buffer.
                while unsafe { libc::read(wake, buffer.as_mut_ptr().cast(), buffer.len()) } > 0 {}
                for (token, socket) in registrations.try_iter() {
                    if watch(epoll, socket.as_raw_fd(), token).is_ok() {
                        sockets.insert(token, socket);
                    }
                }
                for token in forgotten.try_iter() {
                    // Closing the socket removes it from the epoll set.
                    sockets.remove(&token);
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
    }

    #[test]
    fn the_directory_has_a_fresh_name_and_a_base_too_long_for_sockets_is_refused() {
        let (sender, _events) = crossbeam_channel::unbounded();
        let a = WorkerSockets::start(sender.clone()).unwrap();
        let b = WorkerSockets::start(sender.clone()).unwrap();
        assert_ne!(a.dir(), b.dir(), "mkdtemp names");
        let long = std::env::temp_dir().join("d".repeat(90));
        std::fs::create_dir_all(&long).unwrap();
        let err = WorkerSockets::start_in(&long, sender)
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
        let (sender, events) = crossbeam_channel::unbounded();
        let mut sockets = WorkerSockets::start(sender).unwrap();
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
