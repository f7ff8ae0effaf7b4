//! The `--admin` endpoint's listening socket, bound before any thread starts: a TCP address (a
//! deeper accept queue than std's), or a unix socket made with exactly `--admin-mode` whatever
//! the umask, never through a link, and never over another user's socket or in a directory anyone
//! may swap it in. The thread that serves it is `server`'s.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;

use crate::net::listen::ListenAddress;
use crate::net::socket_file::SocketFile;

/// The listening socket's queue of connections not yet accepted.
const ACCEPT_QUEUE: i32 = 4096;
/// The mode of a `unix:` socket unless `--admin-mode` says otherwise.
pub const DEFAULT_MODE: u32 = 0o600;

/// The endpoint's listening socket: TCP, or unix with the file to remove at exit.
pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

impl Listener {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

/// The bound endpoint, before its thread starts.
pub struct Bound {
    pub(super) listener: Listener,
    pub(super) address: ListenAddress,
    pub local: String,
}

/// Binds `address`. A name resolves to its first address; `:PORT` is every interface; a unix
/// socket gets `mode` (see `socket_file::bind`).
pub fn bind(address: &ListenAddress, mode: u32) -> io::Result<Bound> {
    let listener = match address {
        ListenAddress::Unix(path) => {
            let listener = crate::net::socket_file::bind(path, mode, ACCEPT_QUEUE)?;
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
    if let Listener::Tcp(l) = &listener {
        // A queue deeper than std's 128: under a flood of connections, a full queue drops the
        // SYN of a probe, whose connect then waits a second for its retry (past a kubelet's
        // default timeout). The kernel caps it at net.core.somaxconn.
        socket2::SockRef::from(l).listen(ACCEPT_QUEUE)?;
    }
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
