//! How `recluster ctl` finds a cluster's control socket when no `--control PATH` is given: in the
//! directories `location::candidate_dirs` names, by `--name` (`NAME.sock`), by `--pid` (`PID.sock`,
//! else by asking each socket's `hello`), or the only cluster there. Only directories
//! `trust::dir` accepts are searched and only servers `trust::server` accepts are asked who they
//! are; what was refused becomes the error when nothing else is found, else a warning. Root
//! asking for `--pid` of another user's cluster also searches the directories that process
//! chose (its user's, by its environment) and trusts the server that is that process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::answers::{Deadline, Lines};
use super::{location, trust};
use crate::frontend::request::Request;
use crate::text::{escape, strict_json};

/// Why no socket was found.
#[derive(Debug)]
pub enum NotFound {
    /// None there (or only refused ones): the message says where it looked, or what it refused.
    Unreachable(String),
    /// Several clusters, and nothing says which.
    Ambiguous(String),
}

/// The control socket of the cluster named `name`, or run by `pid`, or else the only one this
/// user runs.
pub fn find(name: Option<&str>, pid: Option<u32>) -> Result<PathBuf, NotFound> {
    let candidates = location::candidate_dirs();
    let looked = candidates
        .iter()
        .map(|d| escape::controls(&d.display().to_string()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut refused = Vec::new();
    let dirs: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|dir| match trust::dir(dir) {
            Ok(usable) => usable,
            Err(refusal) => {
                refused.push(refusal);
                false
            }
        })
        .collect();
    let mut found = find_in(name, pid, &dirs, &looked, &mut refused);
    if let (Err(NotFound::Unreachable(_)), Some(pid), 0) = (&found, pid, location::euid())
        && let Some(path) = find_for_root(pid, &mut refused)
    {
        found = Ok(path);
    }
    match found {
        Ok(path) => {
            for refusal in &refused {
                let _ = writeln!(std::io::stderr(), "recluster: warning: {refusal}");
            }
            Ok(path)
        }
        Err(NotFound::Unreachable(_)) if !refused.is_empty() => {
            Err(NotFound::Unreachable(refused.join("; ")))
        }
        Err(e) => Err(e),
    }
}

/// `find` within the directories that passed; servers refused on the way are added to `refused`.
fn find_in(
    name: Option<&str>,
    pid: Option<u32>,
    dirs: &[PathBuf],
    looked: &str,
    refused: &mut Vec<String>,
) -> Result<PathBuf, NotFound> {
    if let Some(name) = name {
        return location::sockets_in(dirs, Some(name))
            .into_iter()
            .find(|p| location::is_live(p))
            .ok_or_else(|| {
                NotFound::Unreachable(format!(
                    "no cluster named {name} is running for this user (looked in {looked})"
                ))
            });
    }
    if let Some(pid) = pid {
        if let Some(path) = location::sockets_in(dirs, Some(&pid.to_string()))
            .into_iter()
            .find(|p| location::is_live(p))
        {
            return Ok(path);
        }
        // A cluster with --name has a socket named after it: ask each which pid it is.
        return running(dirs, Some(pid), refused)
            .into_iter()
            .find(|(p, _, _)| *p == pid)
            .map(|(_, _, path)| path)
            .ok_or_else(|| {
                NotFound::Unreachable(format!("no recluster with pid {pid} has a control socket this user can reach (looked in {looked})"))
            });
    }
    let mut found = running(dirs, None, refused);
    match found.len() {
        0 => Err(NotFound::Unreachable(format!(
            "no recluster is running for this user (looked in {looked}); give --control PATH if it was started with one"
        ))),
        1 => Ok(found.remove(0).2),
        _ => Err(NotFound::Ambiguous(format!(
            "{} clusters are running: {}; choose one with --pid or --name",
            found.len(),
            found
                .iter()
                .map(|(pid, name, _)| match name {
                    Some(name) => format!("pid {pid} (--name {})", escape::controls(name)),
                    None => format!("pid {pid}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Root looking for the cluster of pid `pid` that another user runs: in the directories that
/// process would have chosen (by its uid and environment), owned by its user, served by it.
fn find_for_root(pid: u32, refused: &mut Vec<String>) -> Option<PathBuf> {
    let (owner, candidates) = location::candidate_dirs_of(pid)?;
    let dirs: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|dir| match trust::dir_of(dir, owner) {
            Ok(usable) => usable,
            Err(refusal) => {
                refused.push(refusal);
                false
            }
        })
        .collect();
    running(&dirs, Some(pid), refused)
        .into_iter()
        .find(|(p, _, _)| *p == pid)
        .map(|(_, _, path)| path)
}

/// The clusters answering in `dirs`: pid, name, socket. Servers `trust` refuses are not asked,
/// and added to `refused` (`named`: the pid `--pid` gave, see `trust::server`).
fn running(
    dirs: &[PathBuf],
    named: Option<u32>,
    refused: &mut Vec<String>,
) -> Vec<(u32, Option<String>, PathBuf)> {
    let mut found: Vec<(u32, Option<String>, PathBuf)> = Vec::new();
    for path in location::sockets_in(dirs, None) {
        let answer = match ask(&path, &Request::Hello, named) {
            Asked::Answer(answer) => answer,
            Asked::Refused(refusal) => {
                refused.push(refusal);
                continue;
            }
            Asked::Nothing => continue,
        };
        let Some(pid) = answer["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
            continue;
        };
        if found.iter().any(|(p, _, _)| *p == pid) {
            continue;
        }
        let name = answer["name"].as_str().map(str::to_string);
        found.push((pid, name, path));
    }
    found
}

enum Asked {
    Answer(Value),
    /// The server is not one `ctl` talks to: nothing was sent.
    Refused(String),
    /// Nothing sensible came back.
    Nothing,
}

/// One request, one answer line, within a short deadline.
fn ask(path: &Path, request: &Request, named: Option<u32>) -> Asked {
    let Ok(mut stream) = crate::net::socket::connect_unix_now(path) else {
        return Asked::Nothing;
    };
    if let Err(refusal) = trust::server(&stream, path, named) {
        return Asked::Refused(refusal);
    }
    if writeln!(stream, "{}", request.to_line()).is_err() {
        return Asked::Nothing;
    }
    let deadline = Deadline::At(Instant::now() + Duration::from_secs(2));
    match Lines::new(stream).next_line(deadline) {
        Ok(Some(line)) => strict_json::from_slice(&line).map_or(Asked::Nothing, Asked::Answer),
        _ => Asked::Nothing,
    }
}
