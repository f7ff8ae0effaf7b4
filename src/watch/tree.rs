//! The inotify watches of `--watch`: one per directory. A directory given is watched with every
//! directory under it (a directory created later is added when it appears), except those whose
//! name is ignored; a file given is watched through its directory, for its own name only, so an
//! editor that saves by writing a new file and renaming it over the old one is seen as well.
//!
//! Symbolic links inside a watched tree are never followed (a link back up would loop, and one
//! swapped in for a directory by whoever can write the tree would have recluster, root, watch
//! and log what lies behind it). So the tree is walked by descriptor: only a path given on the
//! command line is opened by its name (links followed, as the user named it); every directory
//! under it is opened from its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, listed
//! through that descriptor, and watched through `/proc/self/fd/N`, which names the directory
//! opened and nothing a rename can swap in later. A directory created later is reached the same
//! way from the top, and only if the parent reached is the very directory watched (its device
//! and inode). Directories more than `MAX_DEPTH` levels down are not watched (the walk holds one
//! descriptor per level).
//!
//! The kernel's limits are per user: `fs.inotify.max_user_watches` (watches) and
//! `fs.inotify.max_user_instances`. recluster takes at most half of the watches (a watched tree
//! that someone else can write to must not use up those of every other program of recluster's
//! user, root's included). Running out is never an error that stops recluster: it warns, once,
//! naming the sysctl to raise and what goes unwatched, and watches the rest.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::{Dir as OpenDir, Type};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use nix::sys::stat::Mode;

use super::ignore::Ignore;
use crate::text::escape;

/// Directories deeper than this below a watched path are not watched: the walk holds one
/// descriptor per level, and a tree someone else writes could otherwise be made deep enough to
/// take the descriptors the workers need.
pub const MAX_DEPTH: usize = 64;

/// What a watched directory tells about: its entries created, removed, written, renamed or
/// changed (`touch`), and its own removal or rename.
fn dir_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// One change: under which watched paths (their order on the command line), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Empty when the kernel's queue overflowed: anything may have changed.
    pub roots: BTreeSet<usize>,
    /// None when the queue overflowed.
    pub path: Option<PathBuf>,
}

/// One watched directory.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    /// The watched paths (by their order) it is watched for.
    roots: BTreeSet<usize>,
    /// Every entry counts, and directories created in it are watched too.
    whole: bool,
    /// Otherwise (a file given by name): only these entries count.
    names: BTreeSet<OsString>,
    /// For a whole tree: the watched path it was reached from (its order) and the names below it,
    /// to reach it again, by descriptor, when a directory is created in it.
    at: Option<(usize, PathBuf)>,
    /// Its device and inode, to tell that what is reached again is this directory.
    id: (u64, u64),
}

/// A directory being walked: its descriptor, and the subdirectories left to visit.
struct Frame {
    dir: OpenDir,
    path: PathBuf,
    rel: PathBuf,
    pending: Vec<OsString>,
}

pub struct Tree {
    inotify: Inotify,
    ignore: Ignore,
    dirs: HashMap<WatchDescriptor, Dir>,
    /// The directories given on the command line, by their order: the only paths opened by name.
    tops: HashMap<usize, PathBuf>,
    /// Whether the watch limit has been reported (once).
    warned: bool,
    /// Whether `MAX_DEPTH` has been reported (once).
    warned_depth: bool,
    /// The most watches recluster takes: half the user's limit.
    budget: usize,
}

/// Opens a path given on the command line (a link there is followed: the user named it).
fn open_named(path: &Path) -> nix::Result<OpenDir> {
    OpenDir::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
}

/// Opens the directory `name` in `parent`: never through a symbolic link (ELOOP), never
/// anything but a directory (ENOTDIR, before a FIFO could block).
fn open_below(parent: RawFd, name: &OsStr) -> nix::Result<OpenDir> {
    OpenDir::openat(
        Some(parent),
        name,
        OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
}

/// The device and inode of an open directory.
fn identity(dir: &OpenDir) -> nix::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(dir.as_raw_fd())?;
    Ok((stat.st_dev, stat.st_ino))
}

/// A path for the log: what a tree's writer named, with control characters escaped.
fn shown(path: &Path) -> String {
    escape::controls(&path.display().to_string()).into_owned()
}

impl Tree {
    /// An inotify instance with nothing watched yet.
    pub fn new(ignore: Ignore) -> io::Result<Tree> {
        // Without it no directory could be watched by descriptor (and by name is unsafe).
        if !Path::new("/proc/self/fd").is_dir() {
            return Err(io::Error::other(
                "/proc is not mounted: recluster watches each directory through /proc/self/fd",
            ));
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(
            |e| match e {
                Errno::EMFILE => io::Error::other(
                    "the inotify instances of this user are used up (fs.inotify.max_user_instances): raise it, such as sysctl fs.inotify.max_user_instances=1024",
                ),
                e => io::Error::from(e),
            },
        )?;
        Ok(Tree {
            inotify,
            ignore,
            dirs: HashMap::new(),
            tops: HashMap::new(),
            warned: false,
            warned_depth: false,
            budget: max_user_watches().map_or(DEFAULT_BUDGET, |n| (n / 2) as usize),
        })
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// How many directories are watched.
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Watches `path`: a directory with its tree, or a file. A path that does not exist (any
    /// more) is reported back.
    pub fn add(&mut self, path: &Path, root: usize) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            let dir = open_named(path)?;
            self.tops.insert(root, path.to_path_buf());
            self.walk(dir, path.to_path_buf(), root, root, PathBuf::new());
            return Ok(());
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("names no file"))?
            .to_os_string();
        let dir = open_named(&parent)?;
        if let Some(wd) = self.watch(&dir, &parent, root, None) {
            self.dirs.get_mut(&wd).expect("added").names.insert(name);
        }
        Ok(())
    }

    /// Watches the open directory `first` (at `path`, `rel` below the watched path `top`) for
    /// the watched path `root`, and every directory under it whose name is not ignored, each
    /// opened from its parent's descriptor.
    fn walk(&mut self, first: OpenDir, path: PathBuf, root: usize, top: usize, rel: PathBuf) {
        let mut stack: Vec<Frame> = Vec::new();
        if let Some(frame) = self.enter(first, path, root, top, rel) {
            stack.push(frame);
        }
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.pending.pop() else {
                stack.pop(); // done: its descriptor is closed
                continue;
            };
            // A link (ELOOP), no directory any more (ENOTDIR), gone: nothing to watch.
            let Ok(child) = open_below(frame.dir.as_raw_fd(), &name) else {
                continue;
            };
            let (path, rel) = (frame.path.join(&name), frame.rel.join(&name));
            if let Some(next) = self.enter(child, path, root, top, rel) {
                stack.push(next);
            }
        }
    }

    /// Watches one open directory of a tree; what to visit under it, unless it could not be
    /// watched or lies `MAX_DEPTH` down.
    fn enter(
        &mut self,
        mut dir: OpenDir,
        path: PathBuf,
        root: usize,
        top: usize,
        rel: PathBuf,
    ) -> Option<Frame> {
        self.watch(&dir, &path, root, Some((top, rel.clone())))?;
        if rel.components().count() >= MAX_DEPTH {
            if !self.warned_depth {
                self.warned_depth = true;
                log::warn!(
                    "--watch: {} lies {MAX_DEPTH} directories down: the directories under it are not watched",
                    shown(&path)
                );
            }
            return None;
        }
        let mut pending = Vec::new();
        // No more names than watches left: a directory of a million directories costs no more.
        let room = self.budget.saturating_sub(self.dirs.len());
        for entry in dir.iter().flatten() {
            if pending.len() > room {
                break; // one past it, so that the budget's warning names where it stopped
            }
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." || self.ignore.ignores(name) {
                continue;
            }
            // Unknown (some file systems do not say): opening it tells.
            if matches!(entry.file_type(), None | Some(Type::Directory)) {
                pending.push(name.to_os_string());
            }
        }
        Some(Frame {
            dir,
            path,
            rel,
            pending,
        })
    }

    /// One watch on the open directory `dir`, named `path` in the log, through
    /// `/proc/self/fd/N`: the directory opened, whatever its name holds by now. Its descriptor,
    /// or none where the kernel or the budget refused (logged).
    fn watch(
        &mut self,
        dir: &OpenDir,
        path: &Path,
        root: usize,
        at: Option<(usize, PathBuf)>,
    ) -> Option<WatchDescriptor> {
        let id = match identity(dir) {
            Ok(id) => id,
            Err(e) => {
                log::debug!("--watch: {} not watched: {e}", shown(path));
                return None;
            }
        };
        let result = if self.dirs.len() >= self.budget {
            Err(Errno::ENOSPC)
        } else {
            let opened = format!("/proc/self/fd/{}", dir.as_raw_fd());
            self.inotify.add_watch(opened.as_str(), dir_mask())
        };
        match result {
            Ok(wd) => {
                let whole = at.is_some();
                let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
                    path: path.to_path_buf(),
                    roots: BTreeSet::new(),
                    whole: false,
                    names: BTreeSet::new(),
                    at: None,
                    id,
                });
                entry.whole |= whole;
                entry.roots.insert(root);
                if at.is_some() {
                    // Reached again (moved within the tree): where it is now.
                    entry.path = path.to_path_buf();
                    entry.at = at;
                }
                Some(wd)
            }
            Err(Errno::ENOSPC) => {
                if !self.warned {
                    self.warned = true;
                    log::warn!(
                        "--watch: out of inotify watches (fs.inotify.max_user_watches = {}, for every program of this user; recluster takes at most half) after {} directories: changes in {} and further directories are not seen; raise it (sysctl fs.inotify.max_user_watches=524288) or ignore more (--watch-ignore)",
                        max_user_watches().map_or("?".to_string(), |n| n.to_string()),
                        self.dirs.len(),
                        shown(path)
                    );
                }
                None
            }
            Err(e) => {
                log::debug!("--watch: {} not watched: {e}", shown(path));
                None
            }
        }
    }

    /// The directory `rel` below the watched path `top`, opened again from the top by
    /// descriptor, each name below without following a link; none unless it is still the
    /// directory `id`.
    fn reach(&self, top: usize, rel: &Path, id: (u64, u64)) -> Option<OpenDir> {
        let mut dir = open_named(self.tops.get(&top)?).ok()?;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return None;
            };
            dir = open_below(dir.as_raw_fd(), name).ok()?;
        }
        (identity(&dir).ok()? == id).then_some(dir)
    }

    /// Reads what the kernel has: the path of each change (`None` when the kernel's queue
    /// overflowed: something changed, what is lost). Directories created are watched.
    pub fn read(&mut self) -> io::Result<Vec<Change>> {
        let mut changed = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(changed),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for event in events {
                if let Some(change) = self.interpret(event) {
                    changed.push(change);
                }
            }
        }
    }

    /// What one event means: a change (its path), or nothing that counts.
    fn interpret(&mut self, event: InotifyEvent) -> Option<Change> {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            return Some(Change {
                roots: BTreeSet::new(),
                path: None,
            });
        }
        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
            self.dirs.remove(&event.wd); // the directory is gone
            return None;
        }
        let dir = self.dirs.get(&event.wd)?;
        let Some(name) = event.name else {
            // The watched directory itself was removed or renamed: a change if it was a whole
            // tree given or under one.
            return dir.whole.then(|| Change {
                roots: dir.roots.clone(),
                path: Some(dir.path.clone()),
            });
        };
        if self.ignore.ignores(&name) {
            return None;
        }
        if !dir.whole && !dir.names.contains(&name) {
            return None;
        }
        let path = dir.path.join(&name);
        let (whole, roots, at, id) = (dir.whole, dir.roots.clone(), dir.at.clone(), dir.id);
        let created_dir = event.mask.contains(AddWatchFlags::IN_ISDIR)
            && event
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
        if let (true, true, Some((top, rel))) = (whole, created_dir, at) {
            // Its own name is never followed: it may be a link by now, swapped in for the
            // directory the kernel reported.
            for &root in &roots {
                let Some(parent) = self.reach(top, &rel, id) else {
                    break; // moved or replaced meanwhile: no longer reachable from the top
                };
                if let Ok(child) = open_below(parent.as_raw_fd(), &name) {
                    drop(parent);
                    self.walk(child, path.clone(), root, top, rel.join(&name));
                }
            }
        }
        Some(Change {
            roots,
            path: Some(path),
        })
    }
}

/// The watches recluster takes where the limit cannot be read (the kernel's smallest default).
const DEFAULT_BUDGET: usize = 4096;

/// `fs.inotify.max_user_watches`.
fn max_user_watches() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("recluster-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The changes the kernel has queued (it queues them before the write returns).
    fn changes(tree: &mut Tree) -> Vec<PathBuf> {
        tree.read()
            .unwrap()
            .into_iter()
            .filter_map(|c| c.path)
            .collect()
    }

    #[test]
    fn a_tree_is_watched_but_for_its_ignored_directories_and_grows_with_new_ones() {
        let root = scratch("grow");
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
        let mut tree = Tree::new(Ignore::new(&[])).unwrap();
        tree.add(&root, 0).unwrap();
        assert_eq!(tree.watched(), 3, "root, src, src/deep: not node_modules");
        std::fs::write(root.join("node_modules/pkg/x.js"), "x").unwrap();
        std::fs::write(root.join("src/.app.py.swp"), "x").unwrap();
        assert_eq!(changes(&mut tree), Vec::<PathBuf>::new(), "ignored");
        std::fs::write(root.join("src/deep/app.py"), "x").unwrap();
        assert!(changes(&mut tree).contains(&root.join("src/deep/app.py")));
        std::fs::create_dir(root.join("lib")).unwrap();
        assert_eq!(changes(&mut tree), [root.join("lib")]);
        assert_eq!(tree.watched(), 4, "the new directory is watched");
        std::fs::write(root.join("lib/new.py"), "x").unwrap();
        assert!(changes(&mut tree).contains(&root.join("lib/new.py")));
        // Moved within the tree: known by its new name, and what is made in it is watched.
        std::fs::rename(root.join("lib"), root.join("src/lib")).unwrap();
        changes(&mut tree);
        std::fs::create_dir(root.join("src/lib/sub")).unwrap();
        assert_eq!(changes(&mut tree), [root.join("src/lib/sub")]);
        std::fs::write(root.join("src/lib/sub/x.py"), "x").unwrap();
        assert!(changes(&mut tree).contains(&root.join("src/lib/sub/x.py")));
        assert_eq!(tree.watched(), 5);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_below_the_top_are_not_followed_and_the_walk_stops_at_max_depth() {
        let root = scratch("links");
        let outside = scratch("links-outside");
        std::fs::create_dir(outside.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let mut deep = root.join("deep");
        for _ in 0..MAX_DEPTH + 5 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let mut tree = Tree::new(Ignore::new(&[])).unwrap();
        tree.add(&root, 0).unwrap();
        assert_eq!(
            tree.watched(),
            1 + MAX_DEPTH,
            "the top and MAX_DEPTH levels, no link"
        );
        assert!(tree.warned_depth);
        std::fs::write(outside.join("sub/x"), "x").unwrap();
        std::fs::write(outside.join("x"), "x").unwrap();
        assert_eq!(changes(&mut tree), Vec::<PathBuf>::new(), "outside");
        // The top itself may be a link: the user named it.
        let mut tree = Tree::new(Ignore::new(&[])).unwrap();
        tree.add(&root.join("link"), 0).unwrap();
        assert_eq!(tree.watched(), 2);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn past_its_budget_the_tree_watches_what_it_could_and_goes_on() {
        let root = scratch("budget");
        for i in 0..5 {
            std::fs::create_dir(root.join(format!("d{i}"))).unwrap();
        }
        let mut tree = Tree::new(Ignore::new(&[])).unwrap();
        tree.budget = 3;
        tree.add(&root, 0).unwrap();
        assert_eq!(tree.watched(), 3);
        assert!(tree.warned, "said so");
        std::fs::write(root.join("top.txt"), "x").unwrap();
        assert!(
            changes(&mut tree).contains(&root.join("top.txt")),
            "the rest is watched"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_is_watched_by_name_and_survives_being_replaced() {
        let root = scratch("file");
        let file = root.join("config.toml");
        std::fs::write(&file, "a").unwrap();
        let mut tree = Tree::new(Ignore::new(&[])).unwrap();
        tree.add(&file, 0).unwrap();
        std::fs::write(root.join("other.txt"), "x").unwrap();
        assert_eq!(changes(&mut tree), Vec::<PathBuf>::new(), "not the file");
        // Saved the way editors do: a new file renamed over the old one.
        std::fs::write(root.join("config.toml.new"), "b").unwrap();
        std::fs::rename(root.join("config.toml.new"), &file).unwrap();
        assert!(changes(&mut tree).contains(&file));
        std::fs::write(&file, "c").unwrap();
        assert!(changes(&mut tree).contains(&file), "still watched");
        assert!(tree.add(&root.join("missing"), 0).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
