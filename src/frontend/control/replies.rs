//! How answers reach the threads that serve requests (the control socket, the admin endpoint,
//! the message thread): a channel the supervisor sends `Reply`s on, which never blocks it, and a
//! wake-up for the serving thread's epoll — an eventfd, or a byte on a socket it watches.

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::supervisor::snapshot::Snapshot;

/// What the supervisor sends back to a client.
#[derive(Debug)]
pub enum Reply {
    /// A line of the answer; `last` ends it (the client's next request may be read).
    Line {
        client: u64,
        line: String,
        last: bool,
    },
    /// An `events` line, dropped (and counted) if the client has too many unread.
    Event { client: u64, line: String },
    /// The answer to `status`: measured from /proc and written here, off the supervisor's thread.
    Status {
        client: u64,
        snapshot: Box<Snapshot>,
    },
    /// recluster is exiting: write what is pending, remove the socket, end the thread.
    Shutdown,
}

/// The supervisor's side: sending a reply never blocks.
#[derive(Clone)]
pub struct Replies {
    sender: Sender<Reply>,
    wake: Waker,
}

/// How a reply wakes the thread that serves it: an eventfd in its epoll set, or a byte on a
/// socket it watches (the message thread, whose descriptor table is its own, has no eventfd).
#[derive(Clone)]
enum Waker {
    EventFd(Arc<EventFd>),
    Socket(Arc<std::os::fd::OwnedFd>),
}

impl Replies {
    /// A new channel: the sending side, and what the serving thread waits on (the receiver and
    /// the eventfd that wakes it).
    pub fn channel() -> io::Result<(Replies, Receiver<Reply>, Arc<EventFd>)> {
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let (sender, receiver) = crossbeam_channel::unbounded();
        Ok((
            Replies {
                sender,
                wake: Waker::EventFd(wake.clone()),
            },
            receiver,
            wake,
        ))
    }

    /// A new channel whose thread is woken by a byte `w` on `socket`.
    pub fn through_socket(socket: Arc<std::os::fd::OwnedFd>) -> (Replies, Receiver<Reply>) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let replies = Replies {
            sender,
            wake: Waker::Socket(socket),
        };
        (replies, receiver)
    }

    pub fn send(&self, reply: Reply) {
        if self.sender.send(reply).is_ok() {
            self.wake.wake();
        }
    }
}

impl Waker {
    fn wake(&self) {
        match self {
            Waker::EventFd(fd) => {
                let _ = fd.write(1);
            }
            Waker::Socket(socket) => wake_socket(socket),
        }
    }
}

/// A byte `w` on a thread's control socket: look at the channels. A full socket means a wake-up
/// is pending already, so the byte may be dropped.
pub fn wake_socket(socket: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::socket::send(
        socket.as_raw_fd(),
        b"w",
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    );
}
