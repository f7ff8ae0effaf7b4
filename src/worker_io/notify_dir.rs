//! The directory of the workers' notify sockets (`--ready notify`), kept so that nothing a worker
//! does can make recluster (usually root) act on a path the worker chose:
//!
//! - it is made by `mkdtemp` (mode 0700, a fresh name no one can have taken first), opened at once
//!   with `O_DIRECTORY|O_NOFOLLOW` relative to its parent's descriptor, and checked to be
//!   recluster's own directory with mode 0700 before anything is put in it;
//! - it stays recluster's: with `--user`, only its group becomes the workers' (`fchown` and
//!   `fchmod` on its descriptor: `<recluster's uid>:<worker gid>`, mode 0710). A worker may pass
//!   through it to its own socket, but not list it, nor create, rename or remove anything in it;
//!   its entry in the parent belongs to recluster, so no worker can move it away either (the
//!   parent, `/dev/shm`, `/tmp` or `$XDG_RUNTIME_DIR`, is sticky or private);
//! - every operation in it goes through the descriptor: a socket is bound at
//!   `/proc/thread-self/fd/<fd>/wN`, which is the directory recluster opened wherever its path
//!   leads now (its own path only where `/proc` is missing), then given its mode (0600) and its
//!   owner (the worker's uid and gid, `fchownat(AT_SYMLINK_NOFOLLOW)`) by name relative to the
//!   descriptor; sockets are removed with `unlinkat` on it, and the directory with
//!   `unlinkat(parent, name, AT_REMOVEDIR)`.
//!
//! Since no one but recluster can write in the directory, a name in it is always the socket
//! recluster bound there.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// The longest path a unix socket address holds (`sun_path`, with its NUL).
pub const SOCKET_PATH_MAX: usize = 108;

/// The directory's mode with `--user` (recluster's uid, the workers' gid): they may pass, no more.
pub const SHARED_MODE: u32 = 0o710;
/// Each socket's mode: only its owner (the worker's uid under `--user`, else recluster's) sends.
pub const SOCKET_MODE: u32 = 0o600;

/// The directory, open.
pub struct NotifyDir {
    /// Its path, for `NOTIFY_SOCKET`.
    path: PathBuf,
    /// The directory itself, and its parent (to remove it at the end).
    dir: OwnedFd,
    parent: OwnedFd,
    /// Its name in the parent.
    name: OsString,
    /// Where sockets are bound: `/proc/thread-self/fd/<dir>`, or `path` without `/proc`.
    bind_prefix: PathBuf,
    /// With `--user`: the uid and gid each socket is given to.
    owner: Option<(u32, u32)>,
}

impl NotifyDir {
    /// Makes `BASE/recluster-PID-XXXXXX`; with `owner` (`--user`), the workers' group may pass.
    pub fn create(base: &Path, owner: Option<(u32, u32)>) -> io::Result<NotifyDir> {
        let path = make_private_dir(base)?;
        let name = path.file_name().expect("mkdtemp names").to_os_string();
        let made = open_made(base, &path, &name);
        let (parent, dir) = match made {
            Ok(fds) => fds,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(e);
            }
        };
        let mut notify_dir = NotifyDir {
            bind_prefix: path.clone(),
            path,
            dir,
            parent,
            name,
            owner,
        };
        // From here on, dropping it removes it.
        if let Some(proc_path) = proc_path(&notify_dir.dir) {
            notify_dir.bind_prefix = proc_path;
        }
        // `w` and a token of up to 20 digits must fit in a socket address.
        for prefix in [&notify_dir.path, &notify_dir.bind_prefix] {
            let longest = prefix.as_os_str().len() + "/w".len() + 20;
            if longest >= SOCKET_PATH_MAX {
                return Err(io::Error::other(format!(
                    "{} is too long for a socket path ({SOCKET_PATH_MAX} bytes at most): set TMPDIR (or XDG_RUNTIME_DIR) to a shorter directory",
                    notify_dir.path.display()
                )));
            }
        }
        if let Some((_, gid)) = owner {
            let fd = notify_dir.dir.as_raw_fd();
            // SAFETY: fchown on a descriptor we own; -1 leaves the owner as it is.
            if unsafe { libc::fchown(fd, u32::MAX, gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
            fchmod(fd, Mode::from_bits_truncate(SHARED_MODE))?;
        }
        Ok(notify_dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds the datagram socket `name` in the directory and gives it to the workers' user (mode
    /// 0600); returns it with the path a worker uses.
    pub fn bind(&self, name: &str) -> io::Result<(UnixDatagram, PathBuf)> {
        if !self.prefix_holds_dir() {
            return Err(io::Error::other(format!(
                "{} no longer leads to the notify directory recluster made",
                self.bind_prefix.display()
            )));
        }
        let socket = UnixDatagram::bind(self.bind_prefix.join(name))?;
        if let Err(e) = self.hand_over(name) {
            self.remove(name);
            return Err(e);
        }
        Ok((socket, self.path.join(name)))
    }

    fn hand_over(&self, name: &str) -> io::Result<()> {
        let fd = Some(self.dir.as_raw_fd());
        let mode = Mode::from_bits_truncate(SOCKET_MODE);
        // Nobody else writes in the directory, so `name` is the socket just bound; not following
        // a symlink all the same where the C library can (it needs /proc).
        match fchmodat(fd, name, mode, FchmodatFlags::NoFollowSymlink) {
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                fchmodat(fd, name, mode, FchmodatFlags::FollowSymlink)?
            }
            other => other?,
        }
        if let Some((uid, gid)) = self.owner {
            let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
            // SAFETY: a directory descriptor we own and a NUL-terminated name; a symlink would
            // be changed itself, never what it points to.
            let changed = unsafe {
                libc::fchownat(
                    self.dir.as_raw_fd(),
                    name.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if changed != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Whether `bind_prefix` leads to the directory held: always, for a thread that shares the
    /// descriptor table of the one that made it (a thread with a table of its own would see
    /// another descriptor under that number, and the check keeps it from binding there).
    fn prefix_holds_dir(&self) -> bool {
        same_file(&self.bind_prefix, &self.dir)
    }

    /// Removes the socket `name` (its worker has ended).
    pub fn remove(&self, name: &str) {
        let _ = unlinkat(Some(self.dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
    }
}

impl Drop for NotifyDir {
    /// Removes what is left in the directory (recluster's sockets only: no one else can write
    /// there), then the directory.
    fn drop(&mut self) {
        let listed = match self.prefix_holds_dir() {
            true => std::fs::read_dir(&self.bind_prefix).ok(),
            false => None,
        };
        if let Some(entries) = listed {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let _ = unlinkat(
                    Some(self.dir.as_raw_fd()),
                    name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                );
            }
        }
        let _ = unlinkat(
            Some(self.parent.as_raw_fd()),
            self.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        );
    }
}

/// The parent and the directory `mkdtemp` just made, open; the directory checked to be a real
/// directory of recluster's own, mode 0700 (not one put in its place).
fn open_made(base: &Path, path: &Path, name: &OsStr) -> io::Result<(OwnedFd, OwnedFd)> {
    let open = |dirfd: Option<i32>, path: &OsStr, flags: OFlag| -> io::Result<OwnedFd> {
        let fd = openat(dirfd, path, flags | OFlag::O_CLOEXEC, Mode::empty())?;
        // SAFETY: a descriptor just opened, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let parent = open(None, base.as_os_str(), OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    let dir = open(
        Some(parent.as_raw_fd()),
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
    )?;
    let stat = fstat(dir.as_raw_fd())?;
    if stat.st_uid != crate::frontend::control::location::euid() || stat.st_mode & 0o7777 != 0o700 {
        return Err(io::Error::other(format!(
            "{} is not the private directory just made (owner {}, mode {:04o})",
            path.display(),
            stat.st_uid,
            stat.st_mode & 0o7777
        )));
    }
    Ok((parent, dir))
}

/// `/proc/thread-self/fd/<fd>`, if that is the directory `fd` holds (`/proc` is mounted).
fn proc_path(dir: &OwnedFd) -> Option<PathBuf> {
    let path = PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()));
    same_file(&path, dir).then_some(path)
}

/// Whether `path` leads to the file `fd` holds.
fn same_file(path: &Path, fd: &OwnedFd) -> bool {
    match (nix::sys::stat::stat(path), fstat(fd.as_raw_fd())) {
        (Ok(through), Ok(held)) => (through.st_dev, through.st_ino) == (held.st_dev, held.st_ino),
        _ => false,
    }
}

/// `BASE/recluster-PID-XXXXXX`, created by `mkdtemp`: mode 0700 and a name no other user can
/// have taken first.
fn make_private_dir(base: &Path) -> io::Result<PathBuf> {
    let template = base.join(format!("recluster-{}-XXXXXX", std::process::id()));
    let mut bytes = template.into_os_string().into_vec();
    bytes.push(0);
    // SAFETY: a writable, NUL-terminated template ending in XXXXXX, as mkdtemp requires.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot create a directory in {}: {e}", base.display()),
        ));
    }
    bytes.pop();
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn with_a_user_the_directory_stays_recluster_s_and_each_socket_is_the_worker_s() {
        let base = std::env::temp_dir();
        let dir = NotifyDir::create(&base, Some((65534, 65534))).unwrap();
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        assert_eq!(meta.uid(), crate::frontend::control::location::euid());
        assert_eq!(meta.gid(), 65534);
        assert_eq!(meta.mode() & 0o7777, SHARED_MODE);
        let (_socket, path) = dir.bind("w1").unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.mode() & 0o7777, SOCKET_MODE);
        dir.remove("w1");
        assert!(!path.exists());
        let kept = dir.path().to_path_buf();
        dir.bind("w2").unwrap();
        drop(dir);
        assert!(!kept.exists(), "removed with what was left in it");
    }

    #[test]
    fn sockets_are_bound_in_the_directory_opened_even_if_its_path_now_leads_elsewhere() {
        let base = std::env::temp_dir().join(format!("recluster-moved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let dir = NotifyDir::create(&base, None).unwrap();
        if dir.bind_prefix == dir.path {
            std::fs::remove_dir_all(&base).unwrap();
            return; // no /proc here
        }
        let moved = base.join("moved");
        std::fs::rename(dir.path(), &moved).unwrap();
        let decoy = base.join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::os::unix::fs::symlink(&decoy, dir.path()).unwrap();
        dir.bind("w1").unwrap();
        assert!(moved.join("w1").exists(), "bound where the descriptor is");
        assert_eq!(std::fs::read_dir(&decoy).unwrap().count(), 0);
        dir.remove("w1");
        assert!(!moved.join("w1").exists());
        drop(dir);
        assert!(
            moved.exists(),
            "only its own name is removed, never a moved one"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
