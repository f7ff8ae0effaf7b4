//! The loop the socket-serving threads (the control socket, the admin endpoint) run (`serve`),
//! and the wait they sleep in: epoll until something is ready or the nearest deadline passes —
//! with no timeout at all while there is no deadline, so an idle thread never wakes.

use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};

/// Waits on `epoll` until an event or `deadline`; how many events are in `ready` (0 on a
/// timeout or an interrupted wait).
pub fn wait(
    epoll: &Epoll,
    ready: &mut [EpollEvent],
    deadline: Option<Instant>,
) -> nix::Result<usize> {
    let timeout = match deadline {
        // Rounded up, so the wait never ends just before the deadline it waits for.
        Some(at) => {
            let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
            EpollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(EpollTimeout::MAX)
        }
        None => EpollTimeout::NONE,
    };
    match epoll.wait(ready, timeout) {
        Err(Errno::EINTR) => Ok(0),
        result => result,
    }
}

/// The epoll key of a server's listening socket.
pub const LISTENER: u64 = u64::MAX;
/// The epoll key of a server's eventfd, written when the supervisor has answers for it.
pub const WAKE: u64 = u64::MAX - 1;

/// A socket-serving thread, as `serve` runs it: a listener under `LISTENER`, an eventfd under
/// `WAKE`, and its connections under their own ids.
pub trait Server {
    /// What the log calls it should its wait fail.
    const NAME: &'static str;
    fn epoll(&self) -> &Epoll;
    /// The nearest deadline of a connection, if any has one.
    fn deadline(&self) -> Option<Instant>;
    fn accept(&mut self);
    /// The eventfd fired: takes the answers; false when the thread is to end.
    fn woken(&mut self) -> bool;
    fn on_ready(&mut self, id: u64, flags: EpollFlags);
    /// Ends the connections whose deadline has passed.
    fn expire(&mut self, now: Instant);
}

/// Runs `server` until it says to end, or its wait fails (logged).
pub fn serve<S: Server>(server: &mut S) {
    let mut ready = [EpollEvent::empty(); 64];
    loop {
        let n = match wait(server.epoll(), &mut ready, server.deadline()) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("{} stops working: {e}", S::NAME);
                return;
            }
        };
        for event in &ready[..n] {
            match event.data() {
                LISTENER => server.accept(),
                WAKE => {
                    if !server.woken() {
                        return;
                    }
                }
                id => server.on_ready(id, event.events()),
            }
        }
        server.expire(Instant::now());
    }
}
