//! Finding recluster's children that are not workers — orphans it adopted as subreaper or PID 1 —
//! so that stopping the cluster can signal them and leave nothing running. Reads /proc; used only
//! while stopping, never on a hot path.

use std::fs;

/// The pids whose parent is `parent`, from /proc/*/stat. Empty when /proc is not mounted.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// The parent pid from /proc/PID/stat (the field after the state, past the `(comm)` that may hold
/// spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

fn parse_parent(stat: &str) -> Option<i32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parent_past_an_awkward_command_name() {
        assert_eq!(parse_parent("42 (a) b (c) S 7 42 42 0"), Some(7));
    }

    #[test]
    fn finds_a_child_of_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children_of(std::process::id() as i32).contains(&(child.id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
