//! `--max-memory` without polling (cgroup v1): each worker's memory group gets a threshold at the
//! limit, registered through `cgroup.event_control` with an eventfd on `memory.usage_in_bytes`;
//! the kernel signals the eventfd when the group's usage crosses it (either way), and when the
//! group is removed. One thread (`memory-events`) waits on every eventfd in one epoll set and
//! hands each wake-up's token (the group's serial number) to a callback, which tells the
//! supervisor loop; the loop reads the usage and decides. Nothing runs while no usage crosses.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

/// The epoll set the `memory-events` thread waits on.
#[derive(Debug, Clone)]
pub struct Watcher {
    epoll: Arc<OwnedFd>,
}

/// One group's registration: closing its eventfd takes it out of the epoll set.
#[derive(Debug)]
pub struct Watch {
    _eventfd: OwnedFd,
    _usage: OwnedFd,
}

impl Watcher {
    /// Starts the thread; `crossed(token)` is called for every wake-up, and the thread ends once
    /// it returns false (the loop has gone).
    pub fn start(crossed: Box<dyn Fn(u64) -> bool + Send>) -> io::Result<Watcher> {
        // SAFETY: epoll_create1 has no memory effects; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let watched = epoll.clone();
        std::thread::Builder::new()
            .name("memory-events".to_string())
            .spawn(move || wait_for_crossings(&watched, crossed))?;
        Ok(Watcher { epoll })
    }

    /// Registers a threshold of `bytes` on the v1 memory group at `dir`; wake-ups carry `token`.
    pub fn watch(&self, dir: &Path, bytes: u64, token: u64) -> io::Result<Watch> {
        // SAFETY: eventfd has no memory effects; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let usage = OwnedFd::from(fs::File::open(dir.join("memory.usage_in_bytes"))?);
        let control = dir.join("cgroup.event_control");
        fs::write(
            &control,
            format!("{} {} {bytes}", eventfd.as_raw_fd(), usage.as_raw_fd()),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("write to {}: {e}", control.display())))?;
        let mut event = libc::epoll_event {
            // Edge-triggered: the kernel wakes the set at every signal of the eventfd, and the
            // thread (which holds no descriptor of it) never reads its counter.
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; epoll_ctl reads `event`.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                eventfd.as_raw_fd(),
                &mut event,
            )
        };
        if added != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watch {
            _eventfd: eventfd,
            _usage: usage,
        })
    }
}

/// The `memory-events` thread: waits, and reports the token of each eventfd that woke.
fn wait_for_crossings(epoll: &OwnedFd, crossed: Box<dyn Fn(u64) -> bool + Send>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // SAFETY: epoll_wait writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                -1,
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::warn!(
                "the memory-events thread stops: epoll_wait: {}",
                io::Error::last_os_error()
            );
            return;
        }
        for event in &events[..n as usize] {
            let token = event.u64;
            if !crossed(token) {
                return;
            }
        }
    }
}
