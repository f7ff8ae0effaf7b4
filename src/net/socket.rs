//! The listening sockets recluster binds (or inherits) and hands to workers.
//!
//! - `Shared`: one socket per address, shared by every worker; its queue outlives every worker.
//! - `PerWorker`: one `SO_REUSEPORT` socket per TCP address per slot, held here across that
//!   slot's respawns and scale-downs, so a slot's queue is never closed while recluster runs —
//!   except where `net.ipv4.tcp_migrate_req` is 1, where a dead or scaled-down slot's socket is
//!   closed so that the kernel hands its queue to the others (`recycle_slot`, `release_slot`);
//!   new connections are steered to the slots whose worker is ready (`steering`). A unix socket is
//!   not split (`SO_REUSEPORT` does not balance it): every slot gets the same one.
//!
//! A TCP address is first bound *without* `SO_REUSEPORT`, which fails if anything already listens
//! there — even a foreign `SO_REUSEPORT` group, which recluster must not silently join — and the
//! option is set before `listen`, so recluster's own per-slot sockets can join its group. A unix
//! socket path left by a dead process (nothing accepts on it) is replaced; a live socket or any
//! other file is refused, untouched.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::policy::Steer;
use crate::net::listen::{ListenAddress, ListenSpec};
use crate::net::steering;

/// A socket that could not be bound, named by its address.
#[derive(Debug)]
pub struct BindError {
    pub address: String,
    pub reason: String,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.address, self.reason)
    }
}

/// One listening socket: what `LISTEN_FDNAMES` calls it, where it listens, the socket itself.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub local: String,
    socket: Socket,
    /// A TCP socket recluster bound: per worker, each slot gets a socket of its own.
    splits: bool,
    /// Where a TCP socket recluster bound listens, and whether it is dual-stack: the address
    /// each slot's socket binds.
    bound: Option<(SocketAddr, bool)>,
}

impl Listener {
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Whether each slot gets a socket of its own here (per worker; TCP addresses only).
    pub fn splits(&self) -> bool {
        self.splits
    }
}

#[derive(Debug)]
pub enum Sockets {
    None,
    Shared(Vec<Listener>),
    PerWorker {
        /// One socket per address, bound at start and checked for foreign listeners. A unix one
        /// is every slot's. A TCP one becomes the first member of its reuseport group: the
        /// socket of the first slot that takes the address, listening only from then on.
        first: Vec<Listener>,
        /// Per listener, in `first`'s order (unused for unix ones): the members of its reuseport
        /// group. A scaled-down slot's socket stays (no connection steered to it), so no member
        /// ever closes while recluster runs, the kernel's order never changes, and a slot added
        /// back gets its own socket again.
        members: Vec<Members>,
        backlog: i32,
        /// The kernel refused a steering program (said once).
        steering_failed: bool,
        /// `--steer`, and with `client` each listener's table (in `first`'s order).
        steer: Steer,
        tables: Vec<steering::ClientTable>,
    },
}

/// The sockets of one reuseport group, by the index the kernel gives each: the order they started
/// listening in. The first slot to join listens on the listener's own socket (`first`).
#[derive(Debug, Default)]
pub struct Members {
    /// The slot of each index.
    slots: Vec<u32>,
    /// The index of each slot.
    index: HashMap<u32, usize>,
    /// Each slot's socket, but for `own`'s (the listener's).
    sockets: HashMap<u32, Socket>,
    /// The slot whose socket is the listener's own, until that one is closed (`remove`).
    own: Option<u32>,
    /// The listener's own socket was closed: every slot binds its own from then on.
    closed_own: bool,
}

impl Members {
    /// Slot `id`'s socket in this group, joining it (binding and listening) if it has none yet.
    fn join(&mut self, listener: &Listener, id: u32, backlog: i32) -> Result<RawFd, BindError> {
        if let Some(fd) = self.fd(listener, id) {
            return Ok(fd);
        }
        if self.slots.is_empty() && self.own.is_none() && !self.closed_own {
            listener.socket.listen(backlog).map_err(|e| BindError {
                address: listener.local.clone(),
                reason: describe_error(&e),
            })?;
            self.own = Some(id);
        } else {
            self.sockets.insert(id, bind_again(listener, backlog)?);
        }
        self.index.insert(id, self.slots.len());
        self.slots.push(id);
        Ok(self.fd(listener, id).expect("just joined"))
    }

    /// Slot `id`'s socket here, if it has one.
    fn fd(&self, listener: &Listener, id: u32) -> Option<RawFd> {
        match self.sockets.get(&id) {
            Some(socket) => Some(socket.as_raw_fd()),
            None => (self.own == Some(id)).then(|| listener.fd()),
        }
    }

    /// A socket of the group, to attach the program to.
    fn any_fd(&self, listener: &Listener) -> Option<RawFd> {
        self.slots.first().and_then(|&id| self.fd(listener, id))
    }

    /// Closes slot `id`'s socket, even the listener's own (which a fresh, unbound socket then
    /// stands in for): the kernel moves the group's last member into its index, and with
    /// `net.ipv4.tcp_migrate_req=1` hands what waits in its queue to the others.
    fn remove(&mut self, listener: &mut Listener, id: u32) -> bool {
        if self.own == Some(id) {
            let Ok(stand_in) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
                return false;
            };
            stop_listening(&std::mem::replace(&mut listener.socket, stand_in));
            self.own = None;
            self.closed_own = true;
            let at = self.index.remove(&id).expect("a member has an index");
            self.slots.swap_remove(at);
            if let Some(&moved) = self.slots.get(at) {
                self.index.insert(moved, at);
            }
            return true;
        }
        self.close(id, true)
    }

    /// Closes recluster's copy of slot `id`'s socket (the listener's own, index 0, is never
    /// closed here), shut down first with `shut` so that it leaves the group now: the kernel
    /// moves its last member into the hole. Without `shut`, a process still holding a copy keeps
    /// it listening until it closes it.
    fn close(&mut self, id: u32, shut: bool) -> bool {
        let Some(socket) = self.sockets.remove(&id) else {
            return false;
        };
        if shut {
            stop_listening(&socket);
        }
        drop(socket);
        let at = self.index.remove(&id).expect("a member has an index");
        self.slots.swap_remove(at);
        if let Some(&moved) = self.slots.get(at) {
            self.index.insert(moved, at);
        }
        true
    }
}

impl Sockets {
    /// Binds every address, in order. Per worker, the slots' sockets come with `for_slot`.
    pub fn bind(
        specs: &[ListenSpec],
        per_worker: bool,
        backlog: i32,
    ) -> Result<Sockets, BindError> {
        if specs.is_empty() {
            return Ok(Sockets::None);
        }
        let mut first = Vec::with_capacity(specs.len());
        for spec in specs {
            // Per worker, a TCP socket listens once a slot takes it (see `Members::join`).
            let split = per_worker && matches!(spec.address, ListenAddress::Tcp { .. });
            first.push(bind_first(spec, backlog, !split)?);
        }
        Ok(if per_worker {
            Sockets::PerWorker {
                members: first.iter().map(|_| Members::default()).collect(),
                tables: first.iter().map(|_| Default::default()).collect(),
                first,
                backlog,
                steering_failed: false,
                steer: Steer::Hash,
            }
        } else {
            Sockets::Shared(first)
        })
    }

    /// The sockets a service manager passed to recluster itself (`LISTEN_FDS` with `LISTEN_PID`
    /// equal to recluster's pid), if any; each checked to be a socket, and a stream socket to be
    /// listening.
    pub fn inherited() -> Result<Option<Sockets>, BindError> {
        let pid_matches = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p == std::process::id());
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<i32>().ok());
        let (true, Some(count @ 1..)) = (pid_matches, count) else {
            return Ok(None);
        };
        let names_var = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let names: Vec<&str> = names_var.split(':').collect();
        let mut listeners = Vec::new();
        for i in 0..count {
            let fd = 3 + i;
            let error = |reason: String| BindError {
                address: format!("fd {fd} from LISTEN_FDS"),
                reason,
            };
            // SAFETY: fstat writes into a zeroed stat; it only inspects the descriptor.
            let mode = unsafe {
                let mut stat: libc::stat = std::mem::zeroed();
                (libc::fstat(fd, &mut stat) == 0).then_some(stat.st_mode & libc::S_IFMT)
            };
            match mode {
                None => {
                    return Err(error(
                        "is not open (LISTEN_FDS promised more fds than were passed)".to_string(),
                    ));
                }
                Some(libc::S_IFSOCK) => {}
                Some(_) => {
                    return Err(error(
                        "is not a socket (check the .socket unit)".to_string(),
                    ));
                }
            }
            // SAFETY: the service manager handed this fd to recluster; it is owned from now on.
            let socket = unsafe { Socket::from_raw_fd(fd) };
            // A stream socket must be listening (a connection socket means Accept=yes); a
            // datagram socket (ListenDatagram=) is passed on as it is.
            let stream = socket
                .r#type()
                .is_ok_and(|t| t == Type::STREAM || t == Type::SEQPACKET);
            if stream && !socket.is_listener().unwrap_or(false) {
                std::mem::forget(socket); // not ours to close
                return Err(error(
                    "is a stream socket that is not listening (a connection? set Accept=no in the .socket unit)".to_string(),
                ));
            }
            let local = socket
                .local_addr()
                .map(|a| describe(&a))
                .unwrap_or_else(|_| "?".into());
            let name = names
                .get(i as usize)
                .filter(|n| !n.is_empty())
                .map_or("unknown", |n| n)
                .to_string();
            listeners.push(Listener {
                name,
                local,
                socket,
                splits: false,
                bound: None,
            });
        }
        Ok(Some(Sockets::Shared(listeners)))
    }

    /// `--steer`: how the per-worker sockets are steered from now on.
    pub fn set_steer(&mut self, how: Steer) {
        if let Sockets::PerWorker { steer, .. } = self {
            *steer = how;
        }
    }

    /// Whether new connections are steered (per worker, where the kernel took the program).
    pub fn steered(&self) -> bool {
        matches!(
            self,
            Sockets::PerWorker {
                steering_failed: false,
                ..
            }
        )
    }

    /// The listeners bound or inherited, for the start-up log and `LISTEN_FDNAMES`.
    pub fn listeners(&self) -> &[Listener] {
        match self {
            Sockets::None => &[],
            Sockets::Shared(listeners)
            | Sockets::PerWorker {
                first: listeners, ..
            } => listeners,
        }
    }

    /// The fds slot `id` gets, in order: those of the listeners it `takes` (with groups, a socket
    /// named after a group goes to that group alone). Per worker, a slot's own socket is bound
    /// the first time it asks.
    pub fn for_slot(
        &mut self,
        id: u32,
        takes: impl Fn(&Listener) -> bool,
    ) -> Result<Vec<RawFd>, BindError> {
        match self {
            Sockets::None => Ok(Vec::new()),
            Sockets::Shared(listeners) => Ok(listeners
                .iter()
                .filter(|l| takes(l))
                .map(Listener::fd)
                .collect()),
            Sockets::PerWorker {
                first,
                members,
                backlog,
                ..
            } => {
                let mut fds = Vec::with_capacity(first.len());
                for (listener, group) in first.iter().zip(members.iter_mut()) {
                    if !takes(listener) {
                        continue;
                    }
                    fds.push(match listener.splits {
                        true => group.join(listener, id, *backlog)?,
                        false => listener.fd(),
                    });
                }
                Ok(fds)
            }
        }
    }

    /// Binds the sockets of slots 0..`workers` now, in slot order (per worker), each for the
    /// listeners it `takes`: what arrives before their workers are ready waits for them.
    pub fn bind_slots(
        &mut self,
        workers: u32,
        takes: impl Fn(&Listener, u32) -> bool,
    ) -> Result<(), BindError> {
        for id in 0..workers {
            self.for_slot(id, |l| takes(l, id))?;
        }
        Ok(())
    }

    /// Steers new connections on each listener to the sockets of the slots `targets` names for
    /// it (per worker): the slots whose worker is ready and takes that socket (with `--steer
    /// client`, among the members: the slots that exist); none leaves that listener's program as
    /// it is. With `--steer cpu`, `cpus_of` says which CPUs a slot's worker is pinned to. Where
    /// the kernel refuses the program, it says so once and the kernel's own hashing goes on
    /// spreading connections over every slot.
    pub fn steer(
        &mut self,
        targets: impl Fn(&Listener) -> steering::Targets,
        cpus_of: impl Fn(u32) -> Vec<usize>,
    ) {
        let Sockets::PerWorker {
            first,
            members,
            steering_failed,
            steer,
            tables,
            ..
        } = self
        else {
            return;
        };
        if *steering_failed {
            return;
        }
        for ((listener, group), table) in first.iter().zip(members.iter()).zip(tables.iter_mut()) {
            if !listener.splits {
                continue;
            }
            let targets = targets(listener);
            // Only slots that have a socket here can be steered to.
            let ready: Vec<u32> = targets
                .ready
                .iter()
                .copied()
                .filter(|slot| group.index.contains_key(slot))
                .collect();
            let indices: Vec<u32> = ready.iter().map(|slot| group.index[slot] as u32).collect();
            if indices.is_empty() {
                continue;
            }
            log::debug!(
                "steering new connections on {} to workers {ready:?} by {}",
                listener.local,
                steer.name()
            );
            let prog = match steer {
                Steer::Hash => None,
                Steer::Client => {
                    let mut members = targets.members.clone();
                    members.extend(&ready);
                    members.sort_unstable();
                    members.dedup();
                    let by_bucket: Vec<u32> = table
                        .update(&members, &ready)
                        .iter()
                        .map(|slot| group.index[slot] as u32)
                        .collect();
                    steering::client_program(&by_bucket)
                }
                Steer::Cpu => {
                    let mut by_cpu: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
                    for (slot, &index) in ready.iter().zip(&indices) {
                        for cpu in cpus_of(*slot) {
                            by_cpu.entry(cpu as u32).or_default().push(index);
                        }
                    }
                    let by_cpu: Vec<(u32, Vec<u32>)> = by_cpu.into_iter().collect();
                    steering::cpu_program(&by_cpu, &indices)
                }
            };
            let prog = prog.unwrap_or_else(|| steering::program(&indices));
            let fd = group.any_fd(listener).unwrap_or(listener.fd());
            if let Err(e) = steering::attach(fd, &prog) {
                *steering_failed = true;
                log::warn!(
                    "cannot steer connections on {} ({}): the kernel's hashing spreads them over every worker, starting and dead ones included",
                    listener.local,
                    describe_error(&e)
                );
                return;
            }
        }
    }

    /// Slot `id` was scaled down and its worker stopped (per worker). With steering, its sockets
    /// stay: no connection reaches them, and the group's order must not change — unless
    /// `net.ipv4.tcp_migrate_req` is 1, where they are closed (a connection the kernel migrates
    /// from a dead slot's socket must not land in one no worker accepts on); whether they were,
    /// so the program follows the new order. Where the kernel refused steering, they are closed,
    /// or new connections would go on landing in them: what waits there is reset, unless
    /// `net.ipv4.tcp_migrate_req` is 1.
    pub fn release_slot(&mut self, id: u32) -> bool {
        let Sockets::PerWorker {
            first,
            members,
            steering_failed,
            ..
        } = self
        else {
            return false;
        };
        let migrates = tcp_migrate_req();
        if !*steering_failed && !migrates {
            return false;
        }
        let mut closed = false;
        for (listener, group) in first.iter_mut().zip(members.iter_mut()) {
            if *steering_failed {
                // Nothing steered connections away from this slot: its worker, stopping now,
                // may still accept what waits in its queue, so its copy keeps listening (only
                // recluster's is closed) until the worker ends.
                closed |= group.close(id, false);
            } else if group.slots.len() > 1 {
                closed |= group.remove(listener, id);
            }
        }
        if closed && !migrates {
            log::warn!(
                "closed worker {id}'s sockets (no steering here): connections still waiting in their queues are reset (set net.ipv4.tcp_migrate_req=1 to move them to the other workers)"
            );
        }
        closed && !*steering_failed
    }

    /// Slot `id`'s worker is gone and no process holds its sockets (per worker, steered): where
    /// `net.ipv4.tcp_migrate_req` is 1, each is closed, so that the kernel hands the connections
    /// waiting in its queue to the other sockets of the group. Whether any was: the program must
    /// then follow the new order, before the slot's next worker binds a fresh one (`for_slot`),
    /// which joins the group at its end, where the program sends nothing until it is ready.
    pub fn recycle_slot(&mut self, id: u32) -> bool {
        let Sockets::PerWorker {
            first,
            members,
            steering_failed: false,
            ..
        } = self
        else {
            return false;
        };
        if !tcp_migrate_req() {
            return false;
        }
        let mut recycled = false;
        for (listener, group) in first.iter_mut().zip(members.iter_mut()) {
            // Alone in its group, its socket would leave nobody to hand the queue to, and the
            // port free for a moment.
            if !listener.splits || group.slots.len() < 2 || !group.index.contains_key(&id) {
                continue;
            }
            recycled |= group.remove(listener, id);
        }
        recycled
    }

    /// How many connections wait in slot `id`'s accept queues (per worker), from `TCP_INFO`.
    pub fn queue_len(&self, id: u32) -> u32 {
        let Sockets::PerWorker { first, members, .. } = self else {
            return 0;
        };
        first
            .iter()
            .zip(members)
            .filter(|(listener, _)| listener.splits)
            .filter_map(|(listener, group)| group.fd(listener, id))
            .map(accept_queue_len)
            .sum()
    }
}

/// Takes a listening socket out of its reuseport group before recluster drops its copy: a
/// process the worker left (in a session of its own) may hold another, and closing only ours
/// would leave the socket in the group, at an index recluster no longer counts, taking the
/// connections steered there. `shutdown` acts on the socket itself, whoever holds it: it stops
/// listening, and its queue is handed to the others (`tcp_migrate_req`) or reset.
fn stop_listening(socket: &Socket) {
    if let Err(e) = socket.shutdown(std::net::Shutdown::Both) {
        // ENOTCONN: not listening (a stand-in never bound).
        if e.raw_os_error() != Some(libc::ENOTCONN) {
            log::debug!("shutting a worker's listening socket down: {e}");
        }
    }
}

/// Whether `net.ipv4.tcp_migrate_req` is 1 here: a closed listener's waiting connections go to
/// the other sockets of its `SO_REUSEPORT` group instead of being reset.
pub fn tcp_migrate_req() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// The accept-queue length of a listening TCP socket (`tcpi_unacked` of a listener).
fn accept_queue_len(fd: RawFd) -> u32 {
    // SAFETY: an all-zero tcp_info is a valid out-parameter.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc == 0 { info.tcpi_unacked } else { 0 }
}

fn bind_first(spec: &ListenSpec, backlog: i32, listen: bool) -> Result<Listener, BindError> {
    let port = match &spec.address {
        ListenAddress::Tcp { port, .. } => Some(*port),
        ListenAddress::Unix(_) => None,
    };
    let fail = |e: io::Error| BindError {
        address: spec.address.to_string(),
        reason: describe_bind_error(&e, port),
    };
    let socket = match &spec.address {
        ListenAddress::Tcp { host, port } => {
            let (address, dual_stack) =
                resolve(host.as_deref(), *port).map_err(|reason| BindError {
                    address: spec.address.to_string(),
                    reason,
                })?;
            let socket = bind_tcp(address, dual_stack, false).or_else(|e| {
                // `:PORT` on a machine without IPv6: every IPv4 interface.
                if dual_stack && e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                    bind_tcp((IpAddr::from([0, 0, 0, 0]), *port).into(), false, false)
                } else {
                    Err(e)
                }
            });
            let socket = socket.map_err(fail)?;
            socket.set_reuse_port(true).map_err(fail)?;
            socket
        }
        ListenAddress::Unix(path) => bind_unix(path).map_err(|reason| BindError {
            address: spec.address.to_string(),
            reason,
        })?,
    };
    if listen {
        socket.listen(backlog).map_err(fail)?;
    }
    let local = socket.local_addr().map(|a| describe(&a)).map_err(fail)?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|address| {
            let dual_stack = address.is_ipv6() && !socket.only_v6().unwrap_or(true);
            (address, dual_stack)
        });
    Ok(Listener {
        name: spec.name.clone(),
        local,
        socket,
        splits: matches!(spec.address, ListenAddress::Tcp { .. }),
        bound,
    })
}

/// Another socket in `listener`'s `SO_REUSEPORT` group (same address, same port).
fn bind_again(listener: &Listener, backlog: i32) -> Result<Socket, BindError> {
    let fail = |e: io::Error| BindError {
        address: listener.local.clone(),
        reason: describe_error(&e),
    };
    let (address, dual_stack) = listener
        .bound
        .ok_or_else(|| fail(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)))?;
    let socket = bind_tcp(address, dual_stack, true).map_err(fail)?;
    socket.listen(backlog).map_err(fail)?;
    Ok(socket)
}

/// The address to bind, and whether it is the dual-stack `[::]` that `:PORT` stands for.
fn resolve(host: Option<&str>, port: u16) -> Result<(SocketAddr, bool), String> {
    let Some(host) = host else {
        return Ok(((Ipv6Addr::UNSPECIFIED, port).into(), true));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(((ip, port).into(), false));
    }
    let mut found = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let address = found
        .next()
        .ok_or_else(|| format!("cannot resolve {host}: no address"))?;
    Ok((address, false))
}

fn bind_tcp(address: SocketAddr, dual_stack: bool, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // As systemd does: a restart is not refused while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// A connection to the unix stream socket at `path`, made without waiting: where the listener's
/// queue is full (a wedged process) it fails with `EAGAIN` instead of blocking. The stream
/// returned blocks as usual.
pub fn connect_unix_now(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
    socket.connect(&SockAddr::unix(path)?)?;
    socket.set_nonblocking(false)?;
    Ok(std::os::fd::OwnedFd::from(socket).into())
}

/// Whether a process accepts on the unix socket at `path`, found without blocking: a listener
/// whose queue is full counts as accepting.
pub fn unix_socket_accepts(path: &Path) -> io::Result<bool> {
    match connect_unix_now(path) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes way for a unix socket at `path`: nothing there, or a socket nobody accepts on (left by
/// a process that is gone), which is removed. A socket in use, or a file that is not a socket,
/// is left alone and named in the error.
pub fn clear_stale_socket(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match unix_socket_accepts(path) {
            Ok(true) => Err("address already in use (a process accepts on it)".to_string()),
            Ok(false) => std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket: {}", describe_error(&e))),
            Err(e) => Err(describe_error(&e)),
        },
        Ok(_) => Err("exists and is not a socket: remove it or choose another path".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(describe_error(&e)),
    }
}

fn bind_unix(path: &Path) -> Result<Socket, String> {
    clear_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| describe_error(&e))?;
    let address = SockAddr::unix(path).map_err(|e| describe_error(&e))?;
    socket.bind(&address).map_err(|e| describe_error(&e))?;
    Ok(socket)
}

/// `127.0.0.1:3000`, `[::1]:3000`, `unix:/run/app.sock`.
fn describe(address: &SockAddr) -> String {
    if let Some(socket) = address.as_socket() {
        return socket.to_string();
    }
    match address.as_pathname() {
        Some(path) => format!("unix:{}", path.display()),
        None => "unix:(unnamed)".to_string(),
    }
}

/// Why binding `port` failed: the OS's reason, and for a port below
/// `net.ipv4.ip_unprivileged_port_start` refused with permission denied, what would allow it.
pub fn describe_bind_error(e: &io::Error, port: Option<u16>) -> String {
    let reason = describe_error(e);
    let Some(port) = port.filter(|_| e.raw_os_error() == Some(libc::EACCES)) else {
        return reason;
    };
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    if u32::from(port) >= start {
        return reason;
    }
    format!(
        "{reason}: ports below {start} need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on recluster, or AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit), or a lower sysctl net.ipv4.ip_unprivileged_port_start; or use a port from {start} up"
    )
}

/// The OS's reason in lower case, without Rust's " (os error N)".
pub fn describe_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ListenSpec {
        text.parse().unwrap()
    }

    #[test]
    fn a_foreign_reuseport_listener_is_an_address_in_use() {
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        foreign.set_reuse_port(true).unwrap();
        foreign
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        foreign.listen(8).unwrap();
        let port = foreign.local_addr().unwrap().as_socket().unwrap().port();
        let err = Sockets::bind(&[spec(&format!("127.0.0.1:{port}"))], false, 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("127.0.0.1:{port}: address already in use")
        );
    }

    #[test]
    fn slots_that_start_out_of_order_are_steered_to_by_their_slot() {
        let mut sockets = Sockets::bind(&[spec("127.0.0.1:0")], true, 8).unwrap();
        let address = sockets.listeners()[0].local.clone();
        // Slot 3 starts first (slots 1 and 2 are held, or waiting for a reload).
        let fds: Vec<RawFd> = [3, 1, 2, 0]
            .into_iter()
            .map(|id| sockets.for_slot(id, |_| true).unwrap()[0])
            .collect();
        let by_slot = [fds[3], fds[1], fds[2], fds[0]];
        for fd in by_slot {
            // SAFETY: fcntl on a descriptor this test's `sockets` owns.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        }
        for target in [2u32, 3, 1] {
            sockets.steer(
                |_| steering::Targets {
                    ready: vec![target],
                    members: vec![0, 1, 2, 3],
                },
                |_| Vec::new(),
            );
            let _client = std::net::TcpStream::connect(&address).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let accepted = loop {
                // SAFETY: accept on a listening descriptor; the new one is closed at once.
                let found = by_slot.iter().position(|&fd| unsafe {
                    let conn = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
                    conn >= 0 && libc::close(conn) == 0
                });
                if let Some(slot) = found {
                    break slot;
                }
                assert!(std::time::Instant::now() < deadline, "no socket got it");
                std::thread::yield_now();
            };
            assert_eq!(accepted, target as usize, "steered to slot {target}");
        }
    }

    #[test]
    fn closing_a_member_moves_the_last_into_its_index_as_the_kernel_does() {
        let mut sockets = Sockets::bind(&[spec("127.0.0.1:0")], true, 8).unwrap();
        sockets.bind_slots(4, |_, _| true).unwrap();
        if let Sockets::PerWorker {
            steering_failed, ..
        } = &mut sockets
        {
            *steering_failed = true;
        }
        sockets.release_slot(1);
        sockets.release_slot(0); // the listener's own socket stays
        let Sockets::PerWorker { members, .. } = &sockets else {
            unreachable!()
        };
        assert_eq!(members[0].slots, [0, 3, 2]);
        assert_eq!(members[0].index[&3], 1);
        assert!(!members[0].index.contains_key(&1));
    }

    #[test]
    fn with_tcp_migrate_req_a_recycled_slot_hands_its_queue_to_the_others_and_gets_a_fresh_socket()
    {
        // A network namespace of this thread's own, so the host's setting is never touched.
        std::thread::spawn(|| {
            // SAFETY: moves this thread alone into a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return; // not allowed here
            }
            let up = std::process::Command::new("sh")
                .args([
                    "-c",
                    "ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req",
                ])
                .status();
            assert!(up.is_ok_and(|s| s.success()));
            let mut sockets = Sockets::bind(&[spec("127.0.0.1:0")], true, 8).unwrap();
            let address = sockets.listeners()[0].local.clone();
            sockets.bind_slots(3, |_, _| true).unwrap();
            let fd_of = |sockets: &mut Sockets, id| sockets.for_slot(id, |_| true).unwrap()[0];
            let accept_on = |fd: RawFd, wait: u64| {
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait);
                loop {
                    // SAFETY: a nonblocking accept on a listening descriptor; closed at once.
                    let conn = unsafe {
                        libc::accept4(
                            fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK,
                        )
                    };
                    if conn >= 0 {
                        // SAFETY: the descriptor accept4 just returned.
                        unsafe { libc::close(conn) };
                        return true;
                    }
                    if std::time::Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            };
            let to = |target: u32| steering::Targets {
                ready: vec![target],
                members: vec![0, 1, 2],
            };
            // Slot 0 holds the listener's own socket; slot 1 one of its own.
            for slot in [0u32, 1] {
                let old = fd_of(&mut sockets, slot);
                // A process the worker left, in a session of its own, holds the socket too.
                // SAFETY: dup of a descriptor `sockets` owns; the copy is closed below.
                let held = unsafe { libc::dup(old) };
                assert!(held >= 0);
                sockets.steer(|_| to(slot), |_| Vec::new());
                let _waiting = std::net::TcpStream::connect(&address).unwrap();
                assert!(sockets.recycle_slot(slot));
                // The others are steered to (the program follows the new order), then the slot
                // gets a fresh socket.
                sockets.steer(|_| to(if slot == 0 { 2 } else { 0 }), |_| Vec::new());
                let other = fd_of(&mut sockets, if slot == 0 { 2 } else { 0 });
                let third = fd_of(&mut sockets, if slot == 0 { 1 } else { 2 });
                // SAFETY: fcntl on descriptors `sockets` owns.
                unsafe {
                    libc::fcntl(other, libc::F_SETFL, libc::O_NONBLOCK);
                    libc::fcntl(third, libc::F_SETFL, libc::O_NONBLOCK);
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let moved = loop {
                    if accept_on(other, 0) || accept_on(third, 0) {
                        break true;
                    }
                    if std::time::Instant::now() > deadline {
                        break false;
                    }
                };
                assert!(
                    moved,
                    "slot {slot}'s waiting connection went to another slot"
                );
                // The fresh socket is in the group: steered to, it gets a connection.
                let fresh = fd_of(&mut sockets, slot);
                let _ = old; // its number may be reused by the fresh one
                sockets.steer(|_| to(slot), |_| Vec::new());
                let _next = std::net::TcpStream::connect(&address).unwrap();
                assert!(
                    accept_on(fresh, 10_000),
                    "slot {slot}'s fresh socket takes connections"
                );
                // The leftover's copy listens no more: nothing steered can land there.
                let mut listening: libc::c_int = 1;
                let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: getsockopt into a valid int, then close of the dup made above.
                unsafe {
                    libc::getsockopt(
                        held,
                        libc::SOL_SOCKET,
                        libc::SO_ACCEPTCONN,
                        (&mut listening as *mut libc::c_int).cast(),
                        &mut size,
                    );
                    libc::close(held);
                }
                assert_eq!(listening, 0, "slot {slot}'s old socket still listens");
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn per_worker_sockets_share_the_port_and_are_distinct() {
        let mut sockets = Sockets::bind(&[spec("127.0.0.1:0")], true, 8).unwrap();
        let port = sockets.listeners()[0].local.clone();
        let slot0 = sockets.for_slot(0, |_| true).unwrap();
        let slot1 = sockets.for_slot(1, |_| true).unwrap();
        assert_ne!(slot0, slot1);
        assert_eq!(
            sockets.for_slot(1, |_| true).unwrap(),
            slot1,
            "held across respawns"
        );
        let local = |fd| {
            // SAFETY: borrowed only for the query; not closed here.
            let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
            describe(&socket.local_addr().unwrap())
        };
        assert_eq!(local(slot1[0]), port);
    }

    #[test]
    fn a_stale_unix_socket_is_replaced_and_a_live_one_refused() {
        let path = std::env::temp_dir().join(format!("recluster-sock-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = spec(&format!("unix:{}", path.display()));
        let live = Sockets::bind(std::slice::from_ref(&unix), false, 8).unwrap();
        let err = Sockets::bind(std::slice::from_ref(&unix), false, 8).unwrap_err();
        assert!(err.reason.contains("already in use"), "{err}");
        drop(live); // the file stays, nothing accepts on it: stale
        Sockets::bind(std::slice::from_ref(&unix), false, 8).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "data").unwrap();
        let err = Sockets::bind(&[unix], false, 8).unwrap_err();
        assert!(err.reason.contains("not a socket"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "data",
            "left untouched"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
