//! The message thread from the spawning side: `Messages` starts it, makes each worker's socket
//! pair and hands recluster's end over on the control socket; `Courier` carries `ctl send`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde_json::Value;

use crate::config::groups::Groups;
use crate::frontend::control::replies::Replies;
use crate::frontend::request::Target;
use crate::supervisor::event::Event;
use crate::worker_io::messages::thread::Thread;
use crate::worker_io::messages::wire::{Command, Counters, Drops, FORGET, REGISTER, REGISTER_LEN};

/// `ctl send` orders that may wait for the thread; more are refused.
const ORDERS: usize = 64;

/// A worker's socket pair, made before its spawn.
pub struct Pair {
    /// recluster's end: handed to the thread once the worker runs.
    ours: OwnedFd,
    /// The worker's end: placed at `RECLUSTER_MSG_FD` by the spawn, then closed here.
    pub theirs: OwnedFd,
}

/// The message thread, from the spawning side.
pub struct Messages {
    control: Arc<OwnedFd>,
    commands: Sender<Command>,
    replies: Replies,
    next: u64,
    drops: Drops,
    counters: Arc<Counters>,
}

/// What the supervisor keeps to deliver from `ctl send`.
#[derive(Clone)]
pub struct Courier {
    control: Arc<OwnedFd>,
    commands: Sender<Command>,
}

impl Courier {
    /// Hands a `ctl send` to the thread; never waits for it: with `ORDERS` already waiting, the
    /// message is refused.
    pub fn deliver(&self, to: Target, data: Value) -> Result<(), String> {
        match self.commands.try_send(Command::Deliver { to, data }) {
            Ok(()) => {
                crate::frontend::control::replies::wake_socket(&self.control);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(format!(
                "{} ({ORDERS} messages from ctl wait already): try again",
                crate::frontend::request::SEND_BUSY
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err("messages between workers have stopped".to_string())
            }
        }
    }
}

impl Messages {
    /// Starts the thread; `info` requests go to the supervisor as events. With `groups`, workers
    /// are named by group and id within it.
    pub fn start(events: Sender<Event>, groups: Option<Groups>) -> io::Result<Messages> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let control = Arc::new(ours);
        let (commands, orders) = crossbeam_channel::bounded(ORDERS);
        let (replies, answers) = Replies::through_socket(control.clone());
        let drops: Drops = Arc::default();
        let thread_drops = drops.clone();
        let counters: Arc<Counters> = Arc::default();
        let thread_counters = counters.clone();
        let (ready, started) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("messages".to_string())
            .stack_size(256 * 1024)
            .spawn(move || {
                crate::process::fd_table::make_private(&[theirs.as_raw_fd()], true, "message");
                let counted = (thread_drops, thread_counters);
                match Thread::new(theirs, orders, answers, events, counted, groups) {
                    Ok(thread) => {
                        let _ = ready.send(Ok(()));
                        thread.run();
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        // Nothing else opens or closes descriptors until the thread has its own table.
        started
            .recv()
            .map_err(|_| io::Error::other("the message thread ended at start"))??;
        Ok(Messages {
            control,
            commands,
            replies,
            next: 0,
            drops,
            counters,
        })
    }

    /// A socket pair for the next worker. Both ends stay blocking: the thread reads and writes
    /// its end with `MSG_DONTWAIT`, so no `fcntl` is spent on it.
    pub fn open(&self) -> io::Result<Pair> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok(Pair { ours, theirs })
    }

    /// The worker of `pair` started as `pid` in slot `id`: recluster's end goes to the thread,
    /// with who it belongs to, in one message.
    pub fn spawned(&mut self, pair: Pair, id: u32, pid: i32) {
        self.next += 1;
        let mut message = [0u8; REGISTER_LEN];
        message[0] = REGISTER;
        message[1..9].copy_from_slice(&self.next.to_ne_bytes());
        message[9..13].copy_from_slice(&id.to_ne_bytes());
        message[13..17].copy_from_slice(&pid.to_ne_bytes());
        let fds = [pair.ours.as_raw_fd()];
        let sent = socket::sendmsg::<()>(
            self.control.as_raw_fd(),
            &[io::IoSlice::new(&message)],
            &[socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        if let Err(e) = sent {
            log::warn!("worker {id} (pid {pid}): its message socket could not be handed over: {e}");
        }
        // Both of our copies go: the thread holds its own now, the worker its end.
    }

    /// The worker `pid` has ended.
    pub fn forget(&self, pid: i32) {
        let mut message = [0u8; 5];
        message[0] = FORGET;
        message[1..].copy_from_slice(&pid.to_ne_bytes());
        let _ = socket::send(self.control.as_raw_fd(), &message, MsgFlags::empty());
    }

    /// Where the supervisor answers `info` requests.
    pub fn replies(&self) -> Replies {
        self.replies.clone()
    }

    pub fn courier(&self) -> Courier {
        Courier {
            control: self.control.clone(),
            commands: self.commands.clone(),
        }
    }

    pub fn drops(&self) -> Drops {
        self.drops.clone()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}
