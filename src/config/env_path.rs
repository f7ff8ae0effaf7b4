//! Opening an `--env-file` so that nobody less trusted than recluster chooses what it reads.
//! recluster usually runs as root and hands the file's variables to workers that may run as
//! someone else (`--user`): whoever could replace the file, or a directory above it, with a link
//! to a file only root may read would get that file's contents. So every read (at the start and
//! before every reload) walks the path from `/`, one component at a time, with
//! `openat(O_PATH|O_NOFOLLOW)`, so that what is checked is what is used, and refuses unless:
//!
//! - every directory on the way, every symlink followed and the file itself are owned by root
//!   or by recluster's own user (its effective uid);
//! - no directory on the way is writable by others unless it has the sticky bit (as `/tmp`,
//!   where others may add names but not replace ours), nor by its group unless that group is
//!   root's or recluster's own; the file is writable by neither (same group rule);
//! - the file is a regular file (opened `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`, the same inode as
//!   the one checked).
//!
//! A symlink on the way is followed (at most 40): it is owned by a trusted user in a directory
//! only trusted users can change, so it says what they meant (`current -> releases/42` deploys
//! keep working, and are read anew at each reload). A relative path is taken from recluster's
//! working directory. Each refusal is one line naming the path given, the component refused and
//! its owner.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Symlinks followed at most while resolving one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Who may control an env file: root and recluster's own user (and, for write permission
/// through the group, their groups).
#[derive(Debug, Clone, Copy)]
struct Trusted {
    uid: u32,
    gid: u32,
}

impl Trusted {
    fn now() -> Trusted {
        // SAFETY: geteuid and getegid have no memory effects and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Trusted { uid, gid }
    }

    /// Why `st` (of `what` at `entry`) is not trusted, if it is not.
    fn check(&self, st: &libc::stat, what: Kind, entry: &Path) -> Result<(), String> {
        let shown = crate::text::escape::controls(&entry.display().to_string()).into_owned();
        let owner = st.st_uid;
        if owner != 0 && owner != self.uid {
            return Err(format!(
                "{shown} ({}) belongs to {}, not to {}",
                what.name(),
                who(owner),
                self.allowed()
            ));
        }
        let mode = st.st_mode & 0o7777;
        let group_ok = st.st_gid == 0 || st.st_gid == self.gid;
        let writable = match what {
            Kind::Link => false,
            Kind::Dir => {
                (mode & 0o002 != 0 && mode & 0o1000 == 0) || (mode & 0o020 != 0 && !group_ok)
            }
            Kind::File => mode & 0o002 != 0 || (mode & 0o020 != 0 && !group_ok),
        };
        if writable {
            return Err(format!(
                "{shown} ({}, owned by {}) has mode {mode:04o}: others may change it",
                what.name(),
                who(owner)
            ));
        }
        Ok(())
    }

    fn allowed(&self) -> String {
        match self.uid {
            0 => "root".to_string(),
            uid => format!("root or {}", who(uid)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    Link,
    File,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "a directory",
            Kind::Link => "a symlink",
            Kind::File => "the file",
        }
    }
}

/// `uid 65534 (nobody)`, or `uid 65534` when the user database has no name for it.
fn who(uid: u32) -> String {
    match crate::process::user::name_of(uid) {
        Some(name) => format!("uid {uid} ({})", crate::text::escape::controls(&name)),
        None => format!("uid {uid}"),
    }
}

/// Opens the env file at `path` for reading, if root or recluster's user controls all of it.
/// The error is one line naming `path`.
pub fn open(path: &Path) -> Result<File, String> {
    open_as(path, Trusted::now())
}

fn open_as(path: &Path, me: Trusted) -> Result<File, String> {
    let given = crate::text::escape::controls(&path.display().to_string()).into_owned();
    let refuse = |why: String| {
        format!(
            "refusing env file {given}: {why}; only root or recluster's user may own the file, the directories above it and the links on the way"
        )
    };
    let fail = |what: &Path, e: std::io::Error| {
        format!(
            "failed to read env file {given}: {}: {e}",
            crate::text::escape::controls(&what.display().to_string())
        )
    };
    let absolute = std::path::absolute(path).map_err(|e| fail(path, e))?;
    // The names left to look up, the next one last.
    let mut todo = names(absolute.as_os_str().as_bytes());
    let root = Path::new("/");
    let (mut dir, mut at) = (
        open_root(me).map_err(|e| e.either(refuse, |e| fail(root, e)))?,
        PathBuf::from("/"),
    );
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let last = todo.is_empty();
        let entry = if name == b".." {
            at.parent().unwrap_or(root).to_path_buf()
        } else {
            at.join(OsStr::from_bytes(&name))
        };
        let fd =
            openat(&dir, &name, libc::O_PATH | libc::O_NOFOLLOW).map_err(|e| fail(&entry, e))?;
        let st = fstat(&fd).map_err(|e| fail(&entry, e))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                me.check(&st, Kind::Link, &entry).map_err(refuse)?;
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(&entry, std::io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let target = readlink(&fd).map_err(|e| fail(&entry, e))?;
                if target.first() == Some(&b'/') {
                    dir = open_root(me).map_err(|e| e.either(refuse, |e| fail(root, e)))?;
                    at = PathBuf::from("/");
                }
                // The stack's top is the next name: the target's names go on top of the rest.
                todo.extend(names(&target));
            }
            libc::S_IFDIR => {
                me.check(&st, Kind::Dir, &entry).map_err(refuse)?;
                if last {
                    return Err(fail(
                        &entry,
                        std::io::Error::from_raw_os_error(libc::EISDIR),
                    ));
                }
                dir = fd;
                at = entry;
            }
            libc::S_IFREG if last => {
                me.check(&st, Kind::File, &entry).map_err(refuse)?;
                let file = openat(
                    &dir,
                    &name,
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                )
                .map_err(|e| fail(&entry, e))?;
                let opened = fstat(&file).map_err(|e| fail(&entry, e))?;
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(refuse(format!(
                        "{} was replaced while it was opened",
                        crate::text::escape::controls(&entry.display().to_string())
                    )));
                }
                return Ok(File::from(file));
            }
            _ if last => {
                return Err(format!(
                    "failed to read env file {given}: not a regular file"
                ));
            }
            _ => {
                return Err(fail(
                    &entry,
                    std::io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
        }
    }
    Err(format!(
        "failed to read env file {given}: not a regular file"
    ))
}

/// The names of a path to look up, as a stack: the first name last. `.` and empty names are
/// dropped; `..` is kept (the walk opens it, and checks it like any directory).
fn names(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|n| !n.is_empty() && *n != b".")
        .map(<[u8]>::to_vec)
        .rev()
        .collect()
}

enum RootError {
    Refused(String),
    Io(std::io::Error),
}

impl RootError {
    fn either(
        self,
        refused: impl Fn(String) -> String,
        io: impl Fn(std::io::Error) -> String,
    ) -> String {
        match self {
            RootError::Refused(why) => refused(why),
            RootError::Io(e) => io(e),
        }
    }
}

fn open_root(me: Trusted) -> Result<OwnedFd, RootError> {
    let path = CString::new("/").expect("no NUL");
    // SAFETY: open reads a valid NUL-terminated path; the descriptor it returns is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(RootError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(&fd).map_err(RootError::Io)?;
    me.check(&st, Kind::Dir, Path::new("/"))
        .map_err(RootError::Refused)?;
    Ok(fd)
}

fn openat(dir: &OwnedFd, name: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat reads a valid NUL-terminated name relative to an open descriptor; the
    // descriptor it returns is owned below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, valid for its size, about an open descriptor.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The target of the symlink opened (`O_PATH|O_NOFOLLOW`) as `fd`.
fn readlink(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat writes at most `buffer.len()` bytes into `buffer`; an empty name with
    // an O_PATH descriptor of a symlink reads that symlink.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buffer.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buffer.truncate(n);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ROOT: Trusted = Trusted { uid: 0, gid: 0 };
    /// An operator running recluster as themselves (uid and group 4321).
    const OPERATOR: Trusted = Trusted {
        uid: 4321,
        gid: 4321,
    };

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn own(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    #[test]
    fn the_common_places_are_read_and_what_another_user_controls_is_refused() {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            return; // the ownership cases need root to chown
        }
        let base = std::env::temp_dir().join(format!("recluster-envpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        mode(&base, 0o755);
        let file = base.join("app.env");
        std::fs::write(&file, "A=1\n").unwrap();
        mode(&file, 0o644);
        // Root's file, root's directories (and /tmp, sticky): read.
        assert!(open_as(&file, ROOT).is_ok());
        assert!(open_as(Path::new("/etc/passwd"), ROOT).is_ok());
        // The operator's project directory with umask 002, run as the operator: read.
        let project = base.join("project");
        std::fs::create_dir(&project).unwrap();
        let own_file = project.join(".env");
        std::fs::write(&own_file, "A=1\n").unwrap();
        own(&project, 4321);
        own(&own_file, 4321);
        mode(&project, 0o775);
        mode(&own_file, 0o664);
        assert!(open_as(&own_file, OPERATOR).is_ok());
        // ... a relative path with `..` too.
        let relative = base.join("project/../project/./.env");
        assert!(open_as(&relative, OPERATOR).is_ok());
        // Root does not read the operator's file: the operator could make it a link anywhere.
        let e = open_as(&own_file, ROOT).unwrap_err();
        assert!(
            e.contains("refusing env file") && e.contains("belongs to uid 4321"),
            "{e}"
        );
        // Nor a file others may write, nor one in a directory others may write (not sticky).
        mode(&file, 0o646);
        let e = open_as(&file, ROOT).unwrap_err();
        assert!(e.contains("mode 0646"), "{e}");
        mode(&file, 0o644);
        mode(&base, 0o777);
        let e = open_as(&file, ROOT).unwrap_err();
        assert!(e.contains("mode 0777") && e.contains("a directory"), "{e}");
        mode(&base, 0o1777);
        assert!(open_as(&file, ROOT).is_ok(), "sticky, as /tmp");
        mode(&base, 0o755);
        // A group-writable directory of a group other than root's or recluster's.
        std::os::unix::fs::chown(&project, Some(0), Some(4321)).unwrap();
        own(&own_file, 0);
        let e = open_as(&own_file, ROOT).unwrap_err();
        assert!(e.contains("mode 0775"), "{e}");
        // A symlink: followed when root's, refused when another user's (naming its owner).
        let link = base.join("link.env");
        std::os::unix::fs::symlink("app.env", &link).unwrap();
        assert!(open_as(&link, ROOT).is_ok());
        own(&link, 65534);
        let e = open_as(&link, ROOT).unwrap_err();
        assert!(
            e.contains("a symlink") && e.contains("uid 65534") && e.contains("link.env"),
            "{e}"
        );
        // A link loop, a directory, a missing file: one line each, never a hang.
        let looped = base.join("loop");
        std::os::unix::fs::symlink("loop", &looped).unwrap();
        assert!(
            open_as(&looped, ROOT)
                .unwrap_err()
                .contains("failed to read env file")
        );
        assert!(
            open_as(&base, ROOT)
                .unwrap_err()
                .contains("failed to read env file")
        );
        assert!(
            open_as(&base.join("missing"), ROOT)
                .unwrap_err()
                .contains("failed to read env file")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
