//! The wait the socket-serving threads (the control socket, the admin endpoint) sleep in: epoll
//! until something is ready or the nearest deadline passes — and with no timeout at all while
//! there is no deadline, so an idle thread never wakes.

use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollTimeout};

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
