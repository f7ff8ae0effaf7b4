//! Finding the program to run the way `execvp` does: a name with a `/` is used as it is, any other
//! name is searched in each `PATH` entry (an empty entry is the current directory; no `PATH` means
//! `/bin:/usr/bin`, glibc's default). Done before the first worker starts, so a missing or
//! non-executable command fails at once with 127 / 126, and again before every spawn, so a new binary
//! at the same path is picked up. With `--user`, the start-up check is made as that user
//! (`resolve_as`): a child process drops to it and asks the kernel, so a program in a directory
//! the user cannot enter is refused with 126 naming the file and the user, instead of every
//! worker failing its exec and restarting for ever.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exit_code;

const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Why a command cannot be run.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandProblem {
    NotFound,
    IsADirectory,
    PermissionDenied,
}

#[derive(Debug, PartialEq, Eq)]
pub struct CommandError {
    pub program: OsString,
    pub problem: CommandProblem,
    /// With `--user`: the user the check was made as, and the file it was refused.
    pub denied_to: Option<(String, PathBuf)>,
}

impl CommandError {
    /// 127 when nothing was found, 126 when something was found that cannot be executed.
    pub fn exit_code(&self) -> i32 {
        match self.problem {
            CommandProblem::NotFound => exit_code::NOT_FOUND,
            _ => exit_code::CANNOT_EXECUTE,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.program.to_string_lossy();
        if let Some((user, file)) = &self.denied_to {
            return match self.problem {
                CommandProblem::IsADirectory => write!(f, "{}: is a directory", file.display()),
                _ => write!(
                    f,
                    "{}: permission denied to user {user} (--user), who must be able to enter every directory on its path and execute the file",
                    file.display()
                ),
            };
        }
        match self.problem {
            CommandProblem::NotFound if self.program.as_bytes().contains(&b'/') => {
                write!(f, "{program}: no such file")
            }
            CommandProblem::NotFound => {
                write!(f, "{program}: command not found in PATH")
            }
            CommandProblem::IsADirectory => write!(f, "{program}: is a directory"),
            CommandProblem::PermissionDenied => {
                write!(f, "{program}: permission denied (is it executable?)")
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// The file `execvp(program)` would execute, given the value of `PATH`.
pub fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, CommandError> {
    let error = |problem| CommandError {
        program: program.to_os_string(),
        problem,
        denied_to: None,
    };
    if program.is_empty() {
        return Err(error(CommandProblem::NotFound));
    }
    let mut denied = None;
    for candidate in candidates(program, path_var) {
        match check(&candidate) {
            Ok(found) => return Ok(found),
            Err(CommandProblem::NotFound) => {}
            // execvp goes on searching, and reports EACCES if nothing better is found.
            Err(problem) => denied = denied.or(Some(problem)),
        }
    }
    Err(error(denied.unwrap_or(CommandProblem::NotFound)))
}

/// The files `execvp(program)` would try, in order.
fn candidates(program: &OsStr, path_var: Option<&OsStr>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    path_var
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(program)
        })
        .collect()
}

/// The most candidates the child reports on (an exit status holds one of them, or a problem).
const MAX_CANDIDATES: usize = 200;
const CHILD_NOT_FOUND: i32 = 201;
const CHILD_IS_A_DIRECTORY: i32 = 202;
const CHILD_DENIED: i32 = 203;
const CHILD_CANNOT_SWITCH: i32 = 204;

/// `resolve` as `user` would see it: found as recluster, then checked by a child process that
/// has dropped to the user's groups, group and uid, so the kernel answers for that user (modes,
/// ACLs, `noexec` mounts, directories on the path it cannot enter).
pub fn resolve_as(
    program: &OsStr,
    path_var: Option<&OsStr>,
    user: &crate::process::user::Identity,
) -> Result<PathBuf, CommandError> {
    // What recluster itself cannot run, no user can: that error is the plainer one.
    let found = resolve(program, path_var)?;
    let candidates: Vec<PathBuf> = candidates(program, path_var)
        .into_iter()
        .take(MAX_CANDIDATES)
        .collect();
    let paths: Vec<std::ffi::CString> = candidates
        .iter()
        .filter_map(|c| std::ffi::CString::new(c.as_os_str().as_bytes()).ok())
        .collect();
    if paths.len() != candidates.len() {
        return Ok(found);
    }
    let code = match check_in_child(&paths, user) {
        Ok(code) => code,
        Err(e) => {
            log::debug!("could not check the command as user {}: {e}", user.name);
            return Ok(found);
        }
    };
    let problem = match code {
        index if (index as usize) < candidates.len() => {
            return Ok(candidates[index as usize].clone());
        }
        CHILD_NOT_FOUND => CommandProblem::NotFound,
        CHILD_IS_A_DIRECTORY => CommandProblem::IsADirectory,
        CHILD_CANNOT_SWITCH => return Ok(found),
        _ => CommandProblem::PermissionDenied,
    };
    // The file it was refused: the one recluster itself would run.
    let file = std::fs::canonicalize(&found).unwrap_or(found);
    Err(CommandError {
        program: program.to_os_string(),
        // Not found for the user, though recluster finds it: a directory it cannot search.
        problem: match problem {
            CommandProblem::NotFound => CommandProblem::PermissionDenied,
            other => other,
        },
        denied_to: Some((user.name.clone(), file)),
    })
}

/// Forks a child that drops to `user` and reports, as its exit status, the index of the first
/// of `paths` it may execute, or the first problem met (`CHILD_*`).
fn check_in_child(
    paths: &[std::ffi::CString],
    user: &crate::process::user::Identity,
) -> std::io::Result<i32> {
    // SAFETY: the child calls only async-signal-safe functions (setgroups, setgid, setuid,
    // stat, access, _exit) on memory prepared before the fork, then exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; `user.groups` and `paths` were allocated before the fork.
        unsafe {
            if libc::setgroups(user.groups.len(), user.groups.as_ptr()) != 0
                || libc::setgid(user.gid) != 0
                || libc::setuid(user.uid) != 0
            {
                libc::_exit(CHILD_CANNOT_SWITCH);
            }
            let mut first_problem = CHILD_NOT_FOUND;
            for (index, path) in paths.iter().enumerate() {
                let mut stat: libc::stat = std::mem::zeroed();
                let problem = if libc::stat(path.as_ptr(), &mut stat) != 0 {
                    if *libc::__errno_location() == libc::EACCES {
                        CHILD_DENIED
                    } else {
                        CHILD_NOT_FOUND
                    }
                } else if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    CHILD_IS_A_DIRECTORY
                } else if stat.st_mode & libc::S_IFMT != libc::S_IFREG
                    || stat.st_mode & 0o111 == 0
                    || libc::access(path.as_ptr(), libc::X_OK) != 0
                {
                    CHILD_DENIED
                } else {
                    libc::_exit(index as i32);
                };
                if first_problem == CHILD_NOT_FOUND {
                    first_problem = problem;
                }
            }
            libc::_exit(first_problem);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child just forked, into a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(std::io::Error::other("the check ended by a signal"))
    }
}

fn check(candidate: &Path) -> Result<PathBuf, CommandProblem> {
    let metadata = std::fs::metadata(candidate).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CommandProblem::PermissionDenied,
        _ => CommandProblem::NotFound,
    })?;
    if metadata.is_dir() {
        return Err(CommandProblem::IsADirectory);
    }
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 || !executable(candidate) {
        return Err(CommandProblem::PermissionDenied);
    }
    Ok(candidate.to_path_buf())
}

/// `access(X_OK)`: the kernel's own answer for this user (mount options, ACLs, root).
fn executable(candidate: &Path) -> bool {
    nix::unistd::access(candidate, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("recluster-command-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn searches_path_in_order_and_skips_non_executables() {
        let dir = scratch("order");
        let (a, b) = (dir.join("a"), dir.join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        write(&a.join("prog"), 0o644);
        write(&b.join("prog"), 0o755);
        let path = OsString::from(format!("{}:{}", a.display(), b.display()));
        assert_eq!(resolve(OsStr::new("prog"), Some(&path)), Ok(b.join("prog")));
    }

    #[test]
    fn reports_not_found_and_permission_denied() {
        let dir = scratch("errors");
        write(&dir.join("plain"), 0o644);
        let path = dir.clone().into_os_string();
        let missing = resolve(OsStr::new("missing"), Some(&path)).unwrap_err();
        assert_eq!(missing.exit_code(), 127);
        let plain = resolve(OsStr::new("plain"), Some(&path)).unwrap_err();
        assert_eq!(plain.problem, CommandProblem::PermissionDenied);
        assert_eq!(plain.exit_code(), 126);
        let directory = resolve(dir.as_os_str(), None).unwrap_err();
        assert_eq!(directory.problem, CommandProblem::IsADirectory);
    }

    #[test]
    fn a_name_with_a_slash_is_not_searched() {
        let err = resolve(
            OsStr::new("./definitely-not-here"),
            Some(OsStr::new("/bin")),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "./definitely-not-here: no such file");
    }
}
