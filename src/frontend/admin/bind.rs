//! The `--admin` endpoint's listening socket, bound before any thread starts: a TCP address (a
//! deeper accept queue than std's), or a unix socket made with exactly `--admin-mode` whatever
//! the umask, never through a link, and never over another user's socket or in a directory anyone
//! may swap it in. The thread that serves it is `server`'s.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

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
/// socket gets `mode` (see `bind_unix`).
pub fn bind(address: &ListenAddress, mode: u32) -> io::Result<Bound> {
    let listener = match address {
        ListenAddress::Unix(path) => {
            let listener = bind_unix(path, mode)?;
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

/// Binds a unix socket at `path` with `mode` whatever the umask. The socket's own mode is set
/// before `bind`, which gives the file that mode less the umask's bits — never more, at no
/// moment; bits the umask took are put back on the file just made, reached without following
/// a link. What is already at `path` is replaced only when it is a stale socket of recluster's
/// own user; a link, another file or another user's socket is refused, and so is a directory
/// every user may write to without the sticky bit (anyone could swap the socket there).
fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let directory = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(directory)?;
    if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(io::Error::other(format!(
            "{} is writable by every user and not sticky: choose a directory only recluster's user may write",
            directory.display()
        )));
    }
    let me = euid();
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(found) if found.file_type().is_symlink() => {
            return Err(io::Error::other(
                "is a symbolic link, which recluster does not follow: remove it or choose another path",
            ));
        }
        Ok(found) if found.file_type().is_socket() && found.uid() != me => {
            return Err(io::Error::other(format!(
                "is a socket owned by uid {}, not by recluster's uid {me}: remove it or choose another path",
                found.uid()
            )));
        }
        Ok(_) => crate::net::socket::clear_stale_socket(path).map_err(io::Error::other)?,
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    nix::sys::stat::fchmod(
        socket.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )?;
    socket.bind(&SockAddr::unix(path)?)?;
    let made = set_mode(path, mode, me).and_then(|()| socket.listen(ACCEPT_QUEUE));
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(OwnedFd::from(socket)))
}

/// Gives the socket file at `path`, just made, exactly `mode`: through a descriptor of the file
/// itself (`O_PATH|O_NOFOLLOW`), checked to be a socket of `owner`.
fn set_mode(path: &Path, mode: u32, owner: u32) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_socket() || meta.uid() != owner {
        return Err(io::Error::other("was replaced while recluster bound it"));
    }
    if meta.mode() & 0o7777 != mode {
        let through = format!("/proc/self/fd/{}", file.as_raw_fd());
        std::fs::set_permissions(through, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no memory effects.
    unsafe { libc::geteuid() }
}
