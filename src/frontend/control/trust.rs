//! Whom `recluster ctl` talks to. The default directories have names others can predict
//! (`$TMPDIR/recluster-UID`): a user who makes one first and serves a socket in it would receive
//! this user's requests (a `stop` included) and answer them. So before `ctl` lists, connects to
//! or writes anything:
//!
//! - a directory it searches must be a real directory (not a symlink) owned by this user or
//!   root, that neither group nor others may write (`dir`);
//! - the process serving a socket must run as this user or as root, by the socket's
//!   `SO_PEERCRED` (`server`), whatever the directory or `--control PATH` said; root may also
//!   talk to the process it named with `--pid`, whoever runs it (`SO_PEERCRED` names it), and
//!   search that process's own directories (`of_process`), owned by its user.
//!
//! Anything else is refused with one line naming the path and the owner found, and nothing is
//! sent there.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::location;

/// Whether `ctl` may look for sockets in `dir`: `Ok(true)` yes, `Ok(false)` it does not exist
/// (or cannot be looked at), `Err` the refusal when someone else could have put sockets there.
pub fn dir(dir: &Path) -> Result<bool, String> {
    dir_for(dir, location::euid())
}

/// `dir` for a directory that `owner` (or root) may own: where root looks for the control socket
/// of another user's cluster named by `--pid`.
pub fn dir_of(dir: &Path, owner: u32) -> Result<bool, String> {
    dir_for(dir, owner)
}

fn dir_for(dir: &Path, me: u32) -> Result<bool, String> {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return Ok(false);
    };
    let owner = meta.uid();
    let refuse = |why: String| {
        Err(format!(
            "refusing {}: {why}; nothing was sent there (remove it, or set XDG_RUNTIME_DIR)",
            crate::text::escape::controls(&dir.display().to_string())
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse(format!("it is a symlink, owned by {}", who(owner)));
    }
    if !meta.is_dir() {
        return refuse(format!("it is not a directory (owned by {})", who(owner)));
    }
    if owner != me && owner != 0 {
        return refuse(format!(
            "it belongs to {}, not to {}",
            who(owner),
            allowed(me)
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "its mode is {:04o} (owned by {}): others may place sockets there",
            meta.mode() & 0o7777,
            who(owner)
        ));
    }
    Ok(true)
}

/// Whether the process at the other end of `stream` (connected to `path`) may be told this
/// user's requests: it runs as this user or as root, or it is the process `named` by `--pid`
/// and this user is root.
pub fn server(stream: &UnixStream, path: &Path, named: Option<u32>) -> Result<(), String> {
    let path = crate::text::escape::controls(&path.display().to_string()).into_owned();
    let cred = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("refusing {path}: cannot tell who serves it ({e})"))?;
    let me = location::euid();
    if cred.uid() == me || cred.uid() == 0 {
        return Ok(());
    }
    if me == 0 && named.is_some_and(|pid| i64::from(pid) == i64::from(cred.pid())) {
        return Ok(());
    }
    Err(format!(
        "refusing {path}: it is served by {} (pid {}), not by {}; nothing was sent",
        who(cred.uid()),
        cred.pid(),
        allowed(me)
    ))
}

/// Whom `ctl` trusts when it runs as `me`.
fn allowed(me: u32) -> String {
    match me {
        0 => "root".to_string(),
        me => format!("{} or root", who(me)),
    }
}

/// `uid 65534 (nobody)`, or `uid 65534` when the user database has no name for it.
fn who(uid: u32) -> String {
    match crate::process::user::name_of(uid) {
        Some(name) => format!("uid {uid} ({})", crate::text::escape::controls(&name)),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_directory_of_this_user_or_root_is_searched() {
        let base =
            std::env::temp_dir().join(format!("recluster-trust-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let me = location::euid();
        assert_eq!(dir_for(&base.join("absent"), me), Ok(false));
        let own = base.join("own");
        std::fs::create_dir(&own).unwrap();
        mode(&own, 0o700);
        assert_eq!(dir_for(&own, me), Ok(true));
        mode(&own, 0o755);
        assert_eq!(dir_for(&own, me), Ok(true), "others may read, not write");
        mode(&own, 0o775);
        let error = dir_for(&own, me).unwrap_err();
        assert!(error.contains("0775") && error.contains("own"), "{error}");
        mode(&own, 0o1777);
        assert!(dir_for(&own, me).is_err(), "sticky or not, others may add");
        mode(&own, 0o700);
        // Seen by another user, a directory owned by this one (not root) is someone else's.
        if me == 0 {
            assert_eq!(dir_for(&own, 4321), Ok(true), "root's is trusted by anyone");
        } else {
            let error = dir_for(&own, me + 1).unwrap_err();
            assert!(error.contains(&format!("belongs to uid {me}")), "{error}");
        }
        let link = base.join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        let error = dir_for(&link, me).unwrap_err();
        assert!(error.contains("symlink"), "{error}");
        std::fs::write(base.join("file"), "").unwrap();
        assert!(dir_for(&base.join("file"), me).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_server_of_this_user_is_trusted() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        assert_eq!(server(&ours, Path::new("/x.sock"), None), Ok(()));
    }
}
