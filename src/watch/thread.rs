//! The `watch` thread: it sets up the watches of `--watch` (`tree`), then blocks in `poll` on the
//! inotify descriptor with no timeout — while nothing changes it never wakes. The first change
//! opens a batch; every change until `--watch-delay` has passed without one joins it (so an
//! editor's save, a `git checkout` or a build that writes a hundred files is one change), up to
//! ten delays after the first, so a file written without pause cannot hold the reload back for
//! ever. Then one `Event::FilesChanged` goes to the supervisor loop, naming a few of the paths.
//! The thread only waits for room in the loop's channel, which the loop makes as it takes events.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::ignore::Ignore;
use super::tree::{Change, Tree};
use crate::supervisor::event::Event;
use crate::text::escape;

/// `--watch-delay` unless given.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(300);

/// At most this many paths are named per batch; the rest are counted.
const NAMED: usize = 8;

/// A batch is sent at the latest this many delays after its first change.
const LONGEST: u32 = 10;

/// What `--watch`, `--watch-ignore` and `--watch-delay` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub paths: Vec<PathBuf>,
    pub ignore: Ignore,
    pub delay: Duration,
}

/// Starts the thread. Its own failures later (a watch refused) are logged, never fatal.
pub fn start(watch: Watch, sender: Sender<Event>) -> io::Result<()> {
    let tree = Tree::new(watch.ignore.clone())?;
    std::thread::Builder::new()
        .name("watch".to_string())
        .stack_size(256 * 1024)
        .spawn(move || run(tree, &watch, &sender))?;
    Ok(())
}

/// Changes seen since the batch opened.
struct Batch {
    first: Instant,
    last: Instant,
    paths: BTreeSet<PathBuf>,
    more: usize,
    overflowed: bool,
    /// The watched paths (by their order) under which something changed.
    roots: BTreeSet<usize>,
}

impl Batch {
    fn add(&mut self, change: Change) {
        self.roots.extend(change.roots);
        match change.path {
            None => self.overflowed = true,
            Some(path) if self.paths.len() < NAMED || self.paths.contains(&path) => {
                self.paths.insert(path);
            }
            Some(_) => self.more += 1,
        }
    }

    /// When it is sent: once `delay` has passed without a change, or ten delays after the first.
    fn due(&self, delay: Duration) -> Instant {
        (self.last + delay).min(self.first + delay * LONGEST)
    }
}

fn run(mut tree: Tree, watch: &Watch, sender: &Sender<Event>) {
    for (root, path) in watch.paths.iter().enumerate() {
        if let Err(e) = tree.add(path, root) {
            log::warn!(
                "--watch {}: {e}; it is not watched",
                escape::controls(&path.display().to_string())
            );
        }
    }
    log::info!(
        "--watch: watching {} ({} directories)",
        watch
            .paths
            .iter()
            .map(|p| escape::controls(&p.display().to_string()).into_owned())
            .collect::<Vec<_>>()
            .join(", "),
        tree.watched()
    );
    let mut batch: Option<Batch> = None;
    loop {
        let timeout = batch
            .as_ref()
            .map(|b| b.due(watch.delay).saturating_duration_since(Instant::now()));
        if let Err(e) = wait_readable(&tree, timeout) {
            log::warn!("--watch: stopped watching: {e}");
            return;
        }
        let changes = match tree.read() {
            Ok(changes) => changes,
            Err(e) => {
                log::warn!("--watch: stopped watching: {e}");
                return;
            }
        };
        let now = Instant::now();
        if !changes.is_empty() {
            let open = batch.get_or_insert_with(|| Batch {
                first: now,
                last: now,
                paths: BTreeSet::new(),
                more: 0,
                overflowed: false,
                roots: BTreeSet::new(),
            });
            open.last = now;
            for change in changes {
                open.add(change);
            }
        }
        if batch.as_ref().is_some_and(|b| b.due(watch.delay) <= now) {
            let done = batch.take().expect("checked");
            let event = Event::FilesChanged {
                paths: done.paths.into_iter().collect(),
                more: done.more + usize::from(done.overflowed),
                // After an overflow, what changed is lost: as if under every path.
                roots: match done.overflowed {
                    true => (0..watch.paths.len()).collect(),
                    false => done.roots.into_iter().collect(),
                },
            };
            if sender.send(event).is_err() {
                return; // the loop has ended
            }
        }
    }
}

/// Blocks until the inotify descriptor is readable, or `timeout` has passed (never, without one).
fn wait_readable(tree: &Tree, timeout: Option<Duration>) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd: tree.fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = match timeout {
        // Rounded up: waking a moment early would only wait again.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        None => -1,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let result = unsafe { libc::poll(&mut poll, 1, millis) };
    if result < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
