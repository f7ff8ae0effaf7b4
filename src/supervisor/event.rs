//! What the world tells the supervisor. Threads produce events; only the supervisor consumes them,
//! from three channels (`channels`): the signal thread's, bounded, which the loop reads first; the
//! notify thread's; and one bounded channel for every other thread, so that no peer can make
//! recluster queue without bound. The loop never waits on a thread that sends it events, so a
//! thread that waits for room in a channel waits only until the loop takes the next event.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use crate::process::reaper::Exit;
use crate::process::signal::Sig;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A signal sent to recluster (never SIGCHLD, which the signal thread answers by reaping).
    Signal(Sig),
    /// Children that ended, and whether any child of recluster (worker or adopted) remains.
    Reaped {
        exits: Vec<Exit>,
        children_left: bool,
    },
    /// Messages wait on the workers' `NOTIFY_SOCKET`s: `WorkerSockets::take` has them (at most
    /// one such event waits at a time, however much the workers send).
    Notified,
    /// `--prefix`: every line of the worker `pid` has been written (its pipes are closed).
    OutputClosed { pid: i32 },
    /// A request on the control socket, from the client numbered `client`.
    Control {
        client: u64,
        request: crate::frontend::request::Request,
        frontend: crate::frontend::request::Frontend,
    },
    /// A control client went away before its request was answered in full.
    ControlGone { client: u64 },
    /// `--watch`: files changed (a few of their paths, how many more changes there were, and
    /// under which of the watched paths, by their order on the command line).
    FilesChanged {
        paths: Vec<std::path::PathBuf>,
        more: usize,
        roots: Vec<usize>,
    },
    /// `--max-memory` on cgroup v1: the memory of the worker group numbered `token` crossed the
    /// limit (either way; the loop reads which).
    MemoryCrossed { token: u64 },
}

/// The signal thread's channel: it waits when this is full (the kernel holds the signals
/// meanwhile, one of each number), so no signal or exit is ever lost.
const SIGNALS: usize = 64;
/// The channel of every other thread's events (the control socket, the admin endpoint, the
/// message thread, the output relays, the watch thread). A thread that serves workers (the message
/// thread) never waits on it: when it is full, its request is refused. The others wait for
/// room, which the loop makes as it takes events (it never waits on any of them).
const EVENTS: usize = 1024;

/// Where each thread sends its events.
pub struct Outlets {
    /// The signal thread alone.
    pub signals: Sender<Event>,
    /// The control socket, the admin endpoint, the message thread, the output relays.
    pub events: Sender<Event>,
    /// The notify thread. Unbounded: the supervisor waits for that thread when it hands it a
    /// socket, so the thread must never wait for the supervisor (its coalescing per worker is
    /// what bounds it).
    pub notify: Sender<Event>,
}

/// The supervisor's side: signals and exits first, then whatever else came.
pub struct Inbox {
    signals: Receiver<Event>,
    events: Receiver<Event>,
    notify: Receiver<Event>,
    /// Kept so that only the signal thread's end can disconnect.
    _open: (Sender<Event>, Sender<Event>),
}

/// The signal thread has gone: no exit will be seen again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalsLost;

/// The channels between the threads and the supervisor loop.
pub fn channels() -> (Outlets, Inbox) {
    let (signals, signals_in) = crossbeam_channel::bounded(SIGNALS);
    let (events, events_in) = crossbeam_channel::bounded(EVENTS);
    let (notify, notify_in) = crossbeam_channel::unbounded();
    let inbox = Inbox {
        signals: signals_in,
        events: events_in,
        notify: notify_in,
        _open: (events.clone(), notify.clone()),
    };
    let outlets = Outlets {
        signals,
        events,
        notify,
    };
    (outlets, inbox)
}

impl Inbox {
    /// The next event, waiting until `deadline` at most (`Ok(None)` then). A signal or an exit
    /// waiting is taken before anything else, so no flood on the other channels delays it by
    /// more than the event being handled.
    pub fn recv(&self, deadline: Option<Instant>) -> Result<Option<Event>, SignalsLost> {
        match self.signals.try_recv() {
            Ok(event) => return Ok(Some(event)),
            Err(TryRecvError::Disconnected) => return Err(SignalsLost),
            Err(TryRecvError::Empty) => {}
        }
        let mut select = Select::new();
        let signals = select.recv(&self.signals);
        let events = select.recv(&self.events);
        select.recv(&self.notify);
        let ready = match deadline {
            Some(deadline) => match select.select_deadline(deadline) {
                Ok(ready) => ready,
                Err(_) => return Ok(None),
            },
            None => select.select(),
        };
        let received = match ready.index() {
            i if i == signals => ready.recv(&self.signals),
            i if i == events => ready.recv(&self.events),
            _ => ready.recv(&self.notify),
        };
        received.map(Some).map_err(|_| SignalsLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_signal_is_taken_before_a_full_event_channel() {
        let (outlets, inbox) = channels();
        for client in 0..EVENTS as u64 {
            outlets
                .events
                .try_send(Event::ControlGone { client })
                .unwrap();
        }
        assert!(
            outlets
                .events
                .try_send(Event::ControlGone { client: 0 })
                .is_err(),
            "the event channel is bounded"
        );
        outlets.signals.send(Event::Signal(Sig::TERM)).unwrap();
        assert_eq!(inbox.recv(None), Ok(Some(Event::Signal(Sig::TERM))));
        assert_eq!(inbox.recv(None), Ok(Some(Event::ControlGone { client: 0 })));
    }

    #[test]
    fn a_deadline_ends_the_wait_and_a_lost_signal_thread_is_seen() {
        let (outlets, inbox) = channels();
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(inbox.recv(Some(soon)), Ok(None));
        outlets.notify.send(Event::OutputClosed { pid: 7 }).unwrap();
        assert_eq!(inbox.recv(None), Ok(Some(Event::OutputClosed { pid: 7 })));
        drop(outlets);
        assert_eq!(inbox.recv(None), Err(SignalsLost));
    }
}
