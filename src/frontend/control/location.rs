//! Where the control socket lives, and how `ctl` finds it again. The directory is private to the
//! user: `$XDG_RUNTIME_DIR/recluster/`, else `/run/recluster/` for root, else
//! `$TMPDIR/recluster-<uid>/` (`/tmp` without `TMPDIR`). recluster creates it with mode 0700 and
//! uses an existing one only if it is a real directory (not a symlink) owned by the user with no
//! access for anyone else — the care `mkdtemp` takes, for a name others can predict. The socket is
//! `<pid>.sock`, or `<name>.sock` with `--name`; a socket left by a recluster that was killed is
//! replaced (and those of dead pids are removed when a new one starts there).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The directories the control socket may live in, best first, for this user and environment.
pub fn candidate_dirs() -> Vec<PathBuf> {
    candidate_dirs_for(
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::var_os("TMPDIR"),
        euid(),
    )
}

/// The directories another user's recluster of pid `pid` would have chosen, from what its
/// environment says (`/proc/PID/environ`, which root may read), with that user's uid.
pub fn candidate_dirs_of(pid: u32) -> Option<(u32, Vec<PathBuf>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let var = |name: &str| {
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(format!("{name}=").as_bytes()))
            .map(|value| OsString::from_vec(value.to_vec()))
    };
    Some((
        uid,
        candidate_dirs_for(var("XDG_RUNTIME_DIR"), var("TMPDIR"), uid),
    ))
}

fn candidate_dirs_for(xdg: Option<OsString>, tmp: Option<OsString>, uid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(xdg) = xdg.filter(|d| Path::new(d).is_absolute()) {
        dirs.push(Path::new(&xdg).join("recluster"));
    }
    if uid == 0 {
        dirs.push(PathBuf::from("/run/recluster"));
    }
    let tmp = tmp
        .filter(|d| Path::new(d).is_absolute())
        .unwrap_or_else(|| "/tmp".into());
    dirs.push(Path::new(&tmp).join(format!("recluster-{uid}")));
    dirs
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no memory effects and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes `dir` (mode 0700) or checks that the existing one is private to this user.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::other("it exists and is not a directory"));
    }
    if meta.uid() != euid() {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to this user",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "its mode is {:04o}: others may use it (it must be 0700)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Where the control socket goes: `--control PATH`, `--control none`, or the default location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Default,
    Path(PathBuf),
    Off,
}

/// Binds the control socket where `placement` says: `Ok(None)` for `--control none`, `Err` with
/// the warning to give when no location works (recluster then runs without one).
pub fn bind_socket(
    placement: &Placement,
    name: Option<&str>,
) -> Result<Option<(UnixListener, PathBuf)>, String> {
    match placement {
        Placement::Off => Ok(None),
        Placement::Path(path) => match bind(path) {
            Ok(listener) => Ok(Some((listener, path.clone()))),
            Err(e) => Err(format!(
                "no control socket ({}: {e}); running without it (recluster ctl cannot reach this cluster)",
                path.display()
            )),
        },
        Placement::Default => {
            let mut failures = Vec::new();
            for dir in candidate_dirs() {
                let path = dir.join(file_name(name, std::process::id()));
                let attempt = prepare_dir(&dir).and_then(|()| {
                    remove_stale(&dir);
                    bind(&path)
                });
                match attempt {
                    Ok(listener) => return Ok(Some((listener, path))),
                    Err(e) => failures.push(format!("{}: {e}", path.display())),
                }
            }
            Err(format!(
                "no control socket ({}); running without it (choose a place with --control PATH)",
                failures.join("; ")
            ))
        }
    }
}

/// Binds a UNIX socket at `path`, mode 0600, replacing a socket there that nothing answers on.
fn bind(path: &Path) -> io::Result<UnixListener> {
    // Only a socket itself is asked whether it is live: connecting follows a link, and a link
    // planted at the path is for `socket_file::bind` to refuse, not for root to follow.
    let socket_there = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if socket_there && is_live(path) {
        return Err(io::Error::other(
            "another recluster is listening there (give this one another --name or --control)",
        ));
    }
    // Mode 0600 from the start, whatever the umask; never through a link a worker planted.
    let listener = crate::net::socket_file::bind(path, 0o600, 128)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The socket's file name in a directory.
pub fn file_name(name: Option<&str>, pid: u32) -> String {
    match name {
        Some(name) => format!("{name}.sock"),
        None => format!("{pid}.sock"),
    }
}

/// Whether something answers at `path`: a live cluster's socket, not one left behind.
pub fn is_live(path: &Path) -> bool {
    crate::net::socket::unix_socket_accepts(path).unwrap_or(false)
}

/// Removes the sockets of recluster processes that no longer exist from `dir`.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && !is_live(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Every socket in the candidate directories, named `name` if given (`<name>.sock`).
pub fn sockets_in(dirs: &[PathBuf], name: Option<&str>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        match name {
            Some(name) => {
                let path = dir.join(format!("{name}.sock"));
                if path.exists() {
                    found.push(path);
                }
            }
            None => {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut here: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                    .collect();
                here.sort();
                found.extend(here);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn runtime_dir_first_then_run_for_root_then_tmp() {
        assert_eq!(
            candidate_dirs_for(Some("/run/user/1000".into()), None, 1000),
            vec![
                PathBuf::from("/run/user/1000/recluster"),
                PathBuf::from("/tmp/recluster-1000")
            ]
        );
        assert_eq!(
            candidate_dirs_for(None, Some("/var/tmp".into()), 0),
            vec![
                PathBuf::from("/run/recluster"),
                PathBuf::from("/var/tmp/recluster-0")
            ]
        );
        assert_eq!(
            candidate_dirs_for(Some("relative".into()), None, 5),
            vec![PathBuf::from("/tmp/recluster-5")],
            "a relative XDG_RUNTIME_DIR is ignored, as the XDG spec says"
        );
    }

    #[test]
    fn a_directory_others_can_enter_is_refused() {
        let base = std::env::temp_dir().join(format!("recluster-loc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let dir = base.join("ok");
        prepare_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().mode() & 0o777,
            0o700,
            "created private"
        );
        prepare_dir(&dir).unwrap();
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let error = prepare_dir(&open).unwrap_err().to_string();
        assert!(error.contains("0755"), "{error}");
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(prepare_dir(&link).is_err(), "a symlink is not used");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_socket_is_made_with_mode_0600_and_a_stale_one_is_replaced() {
        let dir = std::env::temp_dir().join(format!("recluster-bind-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("c.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let busy = bind(&path).unwrap_err().to_string();
        assert!(busy.contains("another recluster"), "{busy}");
        drop(first); // a recluster that died: its file stays, nothing answers
        bind(&path).unwrap();
        std::fs::write(dir.join("plain"), "x").unwrap();
        assert!(
            bind(&dir.join("plain")).is_err(),
            "a file that is not a socket is left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
