//! The inotify watches of `--watch`: one per directory. A directory given is watched with every
//! directory under it (a directory created later is added when it appears), except those whose
//! name is ignored; a file given is watched through its directory, for its own name only, so an
//! editor that saves by writing a new file and renaming it over the old one is seen as well.
//! Symbolic links inside a watched tree are not followed (a link back up would loop).
//!
//! The kernel's limits are per user: `fs.inotify.max_user_watches` (watches) and
//! `fs.inotify.max_user_instances`. recluster takes at most half of the watches (a watched tree
//! that someone else can write to must not use up those of every other program of recluster's
//! user, root's included). Running out is never an error that stops recluster: it warns, once,
//! naming the sysctl to raise and what goes unwatched, and watches the rest.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

use super::ignore::Ignore;

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
}

pub struct Tree {
    inotify: Inotify,
    ignore: Ignore,
    dirs: HashMap<WatchDescriptor, Dir>,
    /// Whether the watch limit has been reported (once).
    warned: bool,
    /// The most watches recluster takes: half the user's limit.
    budget: usize,
}

impl Tree {
    /// An inotify instance with nothing watched yet.
    pub fn new(ignore: Ignore) -> io::Result<Tree> {
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
            warned: false,
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
            self.add_tree(path, root);
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
        if let Some(wd) = self.add_dir(&parent, root, false, true) {
            self.dirs.get_mut(&wd).expect("added").names.insert(name);
        }
        Ok(())
    }

    /// Watches `root` and every directory under it whose name is not ignored.
    fn add_tree(&mut self, top: &Path, root: usize) {
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            // The path as given (a link to a directory is fine there); below it, no link.
            let follow = dir == top;
            if self.add_dir(&dir, root, true, follow).is_none() {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // gone meanwhile, or unreadable: nothing under it to watch
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir()); // a link is not a dir
                if is_dir && !self.ignore.ignores(&entry.file_name()) {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// One watch on `dir` (through a symbolic link only if `follow`); its descriptor, or none
    /// where the kernel or the budget refused (logged).
    fn add_dir(
        &mut self,
        dir: &Path,
        root: usize,
        whole: bool,
        follow: bool,
    ) -> Option<WatchDescriptor> {
        let mut mask = dir_mask();
        if !follow {
            mask |= AddWatchFlags::IN_DONT_FOLLOW;
        }
        let result = if self.dirs.len() >= self.budget {
            Err(Errno::ENOSPC)
        } else {
            self.inotify.add_watch(dir, mask)
        };
        match result {
            Ok(wd) => {
                let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
                    path: dir.to_path_buf(),
                    roots: BTreeSet::new(),
                    whole: false,
                    names: BTreeSet::new(),
                });
                entry.whole |= whole;
                entry.roots.insert(root);
                Some(wd)
            }
            Err(Errno::ENOSPC) => {
                if !self.warned {
                    self.warned = true;
                    log::warn!(
                        "--watch: out of inotify watches (fs.inotify.max_user_watches = {}, for every program of this user; recluster takes at most half) after {} directories: changes in {} and further directories are not seen; raise it (sysctl fs.inotify.max_user_watches=524288) or ignore more (--watch-ignore)",
                        max_user_watches().map_or("?".to_string(), |n| n.to_string()),
                        self.dirs.len(),
                        dir.display()
                    );
                }
                None
            }
            Err(e) => {
                log::debug!("--watch: {} not watched: {e}", dir.display());
                None
            }
        }
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
        let (whole, roots) = (dir.whole, dir.roots.clone());
        let created_dir = event.mask.contains(AddWatchFlags::IN_ISDIR)
            && event
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
        if whole && created_dir {
            for &root in &roots {
                self.add_tree(&path, root);
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
        std::fs::remove_dir_all(&root).unwrap();
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
