//! `--max-memory` without polling. On cgroup v1 each worker's memory group gets a threshold at the
//! limit, registered through `cgroup.event_control` with an eventfd on `memory.usage_in_bytes`;
//! the kernel signals the eventfd when the group's usage crosses it (either way), and when the
//! group is removed. On v2 with the memory controller each group's `memory.high` is the limit, and
//! the kernel reports every change of its `memory.events` (a counter going up: `high`, `max`,
//! `oom`…) to inotify as IN_MODIFY; one inotify descriptor holds a watch on each group's file.
//! One thread (`memory-events`) waits on every eventfd and the inotify descriptor in one epoll
//! set and hands each wake-up's token (the group's serial number) to a callback, which tells the
//! supervisor loop; the loop reads the group's files and decides. Nothing runs while no usage
//! crosses.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The token of the inotify descriptor in the epoll set (group serial numbers start at 1).
const INOTIFY: u64 = u64::MAX;

/// The epoll set the `memory-events` thread waits on, and the inotify descriptor in it.
#[derive(Debug, Clone)]
pub struct Watcher {
    epoll: Arc<OwnedFd>,
    files: Files,
}

/// The inotify descriptor, and the token of each of its watches (by watch descriptor).
#[derive(Debug, Clone)]
struct Files {
    inotify: Arc<OwnedFd>,
    tokens: Arc<Mutex<HashMap<i32, u64>>>,
}

/// One group's registration. A threshold: closing its eventfd takes it out of the epoll set.
/// A watched file: its inotify watch is removed when it is dropped.
#[derive(Debug)]
pub enum Watch {
    Threshold { _eventfd: OwnedFd, _usage: OwnedFd },
    File(FileWatch),
}

/// An inotify watch on one group's `memory.events`.
#[derive(Debug)]
pub struct FileWatch {
    files: Files,
    wd: i32,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        let mut tokens = self.files.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(&self.wd);
        // SAFETY: inotify_rm_watch has no memory effects; a watch the kernel removed already (its
        // file is gone) gives EINVAL, which changes nothing.
        unsafe { libc::inotify_rm_watch(self.files.inotify.as_raw_fd(), self.wd) };
    }
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
        // SAFETY: inotify_init1 has no memory effects; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let inotify = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let files = Files {
            inotify,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        };
        add(
            &epoll,
            files.inotify.as_raw_fd(),
            libc::EPOLLIN as u32,
            INOTIFY,
        )?;
        let (watched, read) = (epoll.clone(), files.clone());
        std::thread::Builder::new()
            .name("memory-events".to_string())
            .spawn(move || wait_for_crossings(&watched, &read, crossed))?;
        Ok(Watcher { epoll, files })
    }

    /// Watches the v2 group at `dir`: each change of its `memory.events` wakes with `token`.
    pub fn watch_events(&self, dir: &Path, token: u64) -> io::Result<Watch> {
        let file = dir.join("memory.events");
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut tokens = self.files.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: inotify_add_watch reads a NUL-terminated path; the result is checked.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.files.inotify.as_raw_fd(),
                path.as_ptr(),
                libc::IN_MODIFY,
            )
        };
        if wd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("inotify watch on {}: {e}", file.display()),
            ));
        }
        tokens.insert(wd, token);
        Ok(Watch::File(FileWatch {
            files: self.files.clone(),
            wd,
        }))
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
        // Edge-triggered: the kernel wakes the set at every signal of the eventfd, and the
        // thread (which holds no descriptor of it) never reads its counter.
        add(
            &self.epoll,
            eventfd.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            token,
        )?;
        Ok(Watch::Threshold {
            _eventfd: eventfd,
            _usage: usage,
        })
    }
}

/// Adds descriptor `fd` to the epoll set, its wake-ups (`events`) carrying `token`.
fn add(epoll: &OwnedFd, fd: i32, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: both descriptors are open; epoll_ctl reads `event`.
    let added = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
    if added != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The tokens of the watched files that changed, from what the inotify descriptor holds (none
/// for a watch removed since, or one the kernel ended because its file went).
fn changed_files(files: &Files) -> Vec<u64> {
    let mut changed = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        // SAFETY: read writes at most `buffer.len()` bytes into `buffer`.
        let n = unsafe {
            libc::read(
                files.inotify.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if n <= 0 {
            break; // EAGAIN: all read
        }
        let tokens = files.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut at = 0;
        while at + header <= n as usize {
            // SAFETY: the kernel wrote a whole event header at `at`; read_unaligned copes with
            // the byte buffer's alignment.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buffer[at..].as_ptr().cast()) };
            if event.mask & libc::IN_MODIFY != 0
                && let Some(&token) = tokens.get(&event.wd)
                && !changed.contains(&token)
            {
                changed.push(token);
            }
            at += header + event.len as usize;
        }
    }
    changed
}

/// The `memory-events` thread: waits, and reports the token of each eventfd that woke and of
/// each watched file that changed.
fn wait_for_crossings(epoll: &OwnedFd, files: &Files, crossed: Box<dyn Fn(u64) -> bool + Send>) {
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
            let tokens = match event.u64 {
                INOTIFY => changed_files(files),
                token => vec![token],
            };
            for token in tokens {
                if !crossed(token) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A regular file stands in for a v2 group's `memory.events` (this host's v2 hierarchy has
    /// no memory controller): a write to it gives IN_MODIFY, as the kernel's change of the
    /// cgroup file does.
    #[test]
    fn a_change_of_a_group_s_memory_events_wakes_with_its_token_and_none_after_it_is_dropped() {
        let base = std::env::temp_dir().join(format!("recluster-events-{}", std::process::id()));
        let (a, b) = (base.join("w0-1"), base.join("w1-2"));
        for dir in [&a, &b] {
            fs::create_dir_all(dir).unwrap();
            fs::write(
                dir.join("memory.events"),
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            )
            .unwrap();
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = Watcher::start(Box::new(move |token| tx.send(token).is_ok())).unwrap();
        let watch_a = watcher.watch_events(&a, 1).unwrap();
        let _watch_b = watcher.watch_events(&b, 2).unwrap();
        let wait = Duration::from_secs(10);
        // As the kernel changes it: in place, one write (no truncation, a second IN_MODIFY).
        let bump = |dir: &Path, high: u32| {
            use std::io::Write;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("memory.events"))
                .unwrap();
            file.write_all(format!("low 0\nhigh {high}\nmax 0\n").as_bytes())
                .unwrap();
        };
        bump(&b, 1);
        assert_eq!(rx.recv_timeout(wait), Ok(2));
        bump(&a, 1);
        assert_eq!(rx.recv_timeout(wait), Ok(1));
        // Once the group's watch is dropped, its changes wake nothing; the other still does.
        drop(watch_a);
        bump(&a, 2);
        bump(&b, 2);
        assert_eq!(rx.recv_timeout(wait), Ok(2));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        let _ = fs::remove_dir_all(&base);
    }
}
