//! Finding the program to run the way `execvp` does: a name with a `/` is used as it is, any other
//! name is searched in each `PATH` entry (an empty entry is the current directory; no `PATH` means
//! `/bin:/usr/bin`, glibc's default). Done before the first worker starts, so a missing or
//! non-executable command fails at once with 127 / 126, and again before every spawn, so a new binary
//! at the same path is picked up.

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
    };
    if program.is_empty() {
        return Err(error(CommandProblem::NotFound));
    }
    if program.as_bytes().contains(&b'/') {
        return check(Path::new(program)).map_err(error);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = None;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match check(&candidate) {
            Ok(found) => return Ok(found),
            Err(CommandProblem::NotFound) => {}
            // execvp goes on searching, and reports EACCES if nothing better is found.
            Err(problem) => denied = denied.or(Some(problem)),
        }
    }
    Err(error(denied.unwrap_or(CommandProblem::NotFound)))
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
