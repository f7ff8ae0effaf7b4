//! A unix socket recluster binds at a path (the control socket, `--admin unix:`): made with
//! exactly its mode whatever the umask, never through a link nor over another user's socket
//! (`bind`), and its removal when recluster is done with it. Workers have run by then, and one may be able to write
//! somewhere along the path (a `--control` or `--admin` path in the application's own directory).
//! So the socket's directory is opened when the socket is bound, before any worker starts, and
//! the socket's identity (device and inode) noted; the removal goes through that directory's
//! descriptor and takes the name away only while it is still that socket. Whatever a worker moves
//! or replaces meanwhile, recluster never unlinks a name in a directory the worker chose, nor a
//! file that is not the socket it bound.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Binds a unix socket at `path` with `mode` whatever the umask. The socket's own mode is set
/// before `bind`, which gives the file that mode less the umask's bits — never more, at no
/// moment; bits the umask took are put back on the file just made, reached without following
/// a link. What is already at `path` is replaced only when it is a stale socket of recluster's
/// own user; a link, another file or another user's socket is refused, and so is a directory
/// every user may write to without the sticky bit (anyone could swap the socket there). Used for
/// the control socket and `--admin unix:`, before any worker runs.
pub fn bind(path: &Path, mode: u32, backlog: i32) -> io::Result<UnixListener> {
    let directory = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(directory)?;
    if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(io::Error::other(format!(
            "{} is writable by every user and not sticky: choose a directory only recluster's user may write",
            directory.display()
        )));
    }
    let me = euid();
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(found) if found.file_type().is_symlink() => {
            return Err(io::Error::other(
                "is a symbolic link, which recluster does not follow: remove it or choose another path",
            ));
        }
        Ok(found) if found.file_type().is_socket() && found.uid() != me => {
            return Err(io::Error::other(format!(
                "is a socket owned by uid {}, not by recluster's uid {me}: remove it or choose another path",
                found.uid()
            )));
        }
        Ok(_) => crate::net::socket::clear_stale_socket(path).map_err(io::Error::other)?,
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    nix::sys::stat::fchmod(
        socket.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )?;
    socket.bind(&SockAddr::unix(path)?)?;
    let made = set_mode(path, mode, me).and_then(|()| socket.listen(backlog));
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(OwnedFd::from(socket)))
}

/// Gives the socket file at `path`, just made, exactly `mode`: through a descriptor of the file
/// itself (`O_PATH|O_NOFOLLOW`), checked to be a socket of `owner`.
fn set_mode(path: &Path, mode: u32, owner: u32) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_socket() || meta.uid() != owner {
        return Err(io::Error::other("was replaced while recluster bound it"));
    }
    if meta.mode() & 0o7777 != mode {
        let through = format!("/proc/self/fd/{}", file.as_raw_fd());
        std::fs::set_permissions(through, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no memory effects.
    unsafe { libc::geteuid() }
}

#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Notes the socket just bound at `path`.
    pub fn note(path: &Path) -> io::Result<SocketFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("the path names no file"))?
            .to_os_string();
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let fd = openat(
            None,
            parent,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: a descriptor just opened, owned by nothing else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let stat = fstatat(
            Some(dir.as_raw_fd()),
            name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(io::Error::other("it is not a socket"));
        }
        Ok(SocketFile {
            path: path.to_path_buf(),
            dir,
            name,
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket, if its name in the directory it was bound in is still that socket.
    pub fn remove(&self) {
        let dir = Some(self.dir.as_raw_fd());
        let name = self.name.as_os_str();
        let same = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|stat| (stat.st_dev, stat.st_ino) == (self.dev, self.ino));
        if same {
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        } else {
            log::debug!(
                "{} is no longer the socket recluster bound: left alone",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_the_socket_bound_is_removed_in_the_directory_it_was_bound_in() {
        let base = std::env::temp_dir().join(format!("recluster-sockfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let app = base.join("app");
        std::fs::create_dir_all(&app).unwrap();
        let path = app.join("admin.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let file = SocketFile::note(&path).unwrap();
        // The directory moved away and a symlink to another put in its place.
        let moved = base.join("moved");
        std::fs::rename(&app, &moved).unwrap();
        let chosen = base.join("chosen");
        std::fs::create_dir(&chosen).unwrap();
        std::fs::write(chosen.join("admin.sock"), "keep").unwrap();
        std::os::unix::fs::symlink(&chosen, &app).unwrap();
        file.remove();
        assert!(
            chosen.join("admin.sock").exists(),
            "the chosen directory untouched"
        );
        assert!(
            !moved.join("admin.sock").exists(),
            "removed where it was bound"
        );
        // A name that is no longer the socket stays.
        let other = moved.join("other.sock");
        let _second = UnixListener::bind(&other).unwrap();
        let file = SocketFile::note(&other).unwrap();
        std::fs::remove_file(&other).unwrap();
        std::fs::write(&other, "not the socket").unwrap();
        file.remove();
        assert!(other.exists());
        assert!(
            SocketFile::note(&other).is_err(),
            "a plain file is not noted"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
