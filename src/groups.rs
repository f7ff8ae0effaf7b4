//! Procfile groups: several programs in one cluster (`-f/--procfile`, `-m/--formation`,
//! `--after`, `--once`). A group is a fixed, contiguous range of the cluster's slots, in the
//! Procfile's order, so the cluster itself stays flat: slot `s` of the cluster is worker
//! `s - start` of its group. What a worker sees (`WORKER_GROUP`, its `WORKER_ID` within the group,
//! `WORKER_COUNT` = the group's size), the prefix `[web.3]`, status and metrics are mapped here.
//! The exit-status rule "lowest group in file order, then lowest id" is then the cluster's own
//! "lowest slot".

use std::ffi::OsString;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// `/bin/sh -c LINE`, as foreman and honcho run a Procfile line.
    pub command: Vec<OsString>,
    pub workers: u32,
    /// Its first slot in the cluster.
    pub start: u32,
    /// `--once`: it runs to its end, must exit 0, and is not restarted.
    pub once: bool,
    /// `--after`: the groups that must be ready (or, one-shot, finished with 0) before it starts.
    pub after: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    pub groups: Vec<Group>,
}

/// `name: command` lines; `#` comments and blank lines are skipped.
pub fn parse_procfile(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            return Err(format!(
                "line {}: '{line}' is not 'name: command'",
                number + 1
            ));
        };
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "line {}: '{name}' is not a process name (letters, digits, '_' and '-')",
                number + 1
            ));
        }
        if command.is_empty() {
            return Err(format!("line {}: {name} has no command", number + 1));
        }
        if entries.iter().any(|(n, _)| n == name) {
            return Err(format!("line {}: {name} is named twice", number + 1));
        }
        entries.push((name.to_string(), command.to_string()));
    }
    if entries.is_empty() {
        return Err("it names no process".to_string());
    }
    Ok(entries)
}

impl Groups {
    /// The groups of a Procfile's `entries`, sized by `formation` (`web=4,jobs=2`, `all=N`;
    /// 1 each by default), with `--after GROUP=DEPENDENCY` and `--once GROUP`.
    pub fn build(
        entries: Vec<(String, String)>,
        formation: Option<&str>,
        after: &[String],
        once: &[String],
    ) -> Result<Groups, String> {
        let names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
        let find = |name: &str, flag: &str| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                format!(
                    "{flag}: there is no process {name} in the Procfile (it has {})",
                    names.join(", ")
                )
            })
        };
        let mut counts = vec![1u32; entries.len()];
        if let Some(formation) = formation {
            for part in formation
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let (name, n) = part.split_once('=').ok_or_else(|| {
                    format!("--formation: '{part}' is not NAME=N (for example web=4,jobs=2)")
                })?;
                let n: u32 = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&n| n <= crate::config::MAX_WORKERS)
                    .ok_or_else(|| format!("--formation: '{n}' in '{part}' is not a count"))?;
                match name.trim() {
                    "all" => counts.iter_mut().for_each(|c| *c = n),
                    name => counts[find(name, "--formation")?] = n,
                }
            }
        }
        let mut groups = Vec::with_capacity(entries.len());
        let mut start = 0u32;
        for ((name, line), workers) in entries.into_iter().zip(counts) {
            groups.push(Group {
                name,
                command: vec!["/bin/sh".into(), "-c".into(), line.into()],
                workers,
                start,
                once: false,
                after: Vec::new(),
            });
            start = start
                .checked_add(workers)
                .filter(|&total| total <= crate::config::MAX_WORKERS)
                .ok_or("--formation asks for more workers than recluster runs (65536)")?;
        }
        if start == 0 {
            return Err("--formation starts no worker".to_string());
        }
        for name in once {
            let index = find(name, "--once")?;
            groups[index].once = true;
        }
        for spec in after {
            let (group, dependency) = spec
                .split_once('=')
                .ok_or_else(|| format!("--after '{spec}': write GROUP=DEPENDENCY, as in web=db"))?;
            let (group, dependency) = (find(group, "--after")?, find(dependency, "--after")?);
            if group == dependency {
                return Err(format!("--after {spec}: a group cannot wait for itself"));
            }
            groups[group].after.push(dependency);
        }
        let groups = Groups { groups };
        if let Some(cycle) = groups.cycle() {
            return Err(format!("--after makes a cycle: {cycle}"));
        }
        Ok(groups)
    }

    /// The workers of every group.
    pub fn total(&self) -> u32 {
        self.groups.iter().map(|g| g.workers).sum()
    }

    pub fn range(&self, group: usize) -> Range<u32> {
        let g = &self.groups[group];
        g.start..g.start + g.workers
    }

    /// The group of cluster slot `slot` and its id within it. A slot past the last group (none:
    /// groups do not scale) belongs to the last group.
    pub fn of_slot(&self, slot: u32) -> (usize, u32) {
        let index = self
            .groups
            .iter()
            .rposition(|g| g.start <= slot && g.workers > 0)
            .unwrap_or(0);
        (index, slot - self.groups[index].start)
    }

    /// `web.3` for slot `slot`.
    pub fn label(&self, slot: u32) -> String {
        let (group, id) = self.of_slot(slot);
        format!("{}.{id}", self.groups[group].name)
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// The slot of `GROUP.ID`, if there is such a worker.
    pub fn slot_of(&self, group: &str, id: u32) -> Option<u32> {
        let index = self.find(group)?;
        (id < self.groups[index].workers).then(|| self.groups[index].start + id)
    }

    /// A chain of `--after` that comes back to where it started, if any.
    fn cycle(&self) -> Option<String> {
        fn visit(g: &Groups, at: usize, path: &mut Vec<usize>) -> Option<Vec<usize>> {
            if let Some(i) = path.iter().position(|&p| p == at) {
                let mut cycle = path[i..].to_vec();
                cycle.push(at);
                return Some(cycle);
            }
            path.push(at);
            for &next in &g.groups[at].after {
                if let Some(cycle) = visit(g, next, path) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        (0..self.groups.len()).find_map(|start| {
            visit(self, start, &mut Vec::new()).map(|c| {
                c.iter()
                    .map(|&i| self.groups[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" after ")
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(String, String)> {
        parse_procfile("# services\nweb: node server.js --port $PORT\n\njobs: python3 worker.py\nmigrate: ./migrate\n").unwrap()
    }

    #[test]
    fn a_procfile_is_name_colon_command() {
        let e = entries();
        assert_eq!(
            e[0],
            ("web".to_string(), "node server.js --port $PORT".to_string())
        );
        assert_eq!(e.len(), 3);
        assert!(parse_procfile("web node").unwrap_err().contains("line 1"));
        assert!(
            parse_procfile("a b: x")
                .unwrap_err()
                .contains("not a process name")
        );
        assert!(
            parse_procfile("web: x\nweb: y")
                .unwrap_err()
                .contains("named twice")
        );
        assert!(parse_procfile("web:").unwrap_err().contains("no command"));
        assert!(
            parse_procfile("# nothing\n")
                .unwrap_err()
                .contains("no process")
        );
    }

    #[test]
    fn the_formation_sizes_groups_into_contiguous_ranges() {
        let groups = Groups::build(entries(), Some("all=2,web=3"), &[], &[]).unwrap();
        assert_eq!(groups.total(), 7);
        assert_eq!(groups.range(0), 0..3);
        assert_eq!(groups.range(1), 3..5);
        assert_eq!(groups.of_slot(4), (1, 1));
        assert_eq!(groups.label(5), "migrate.0");
        assert_eq!(groups.slot_of("jobs", 1), Some(4));
        assert_eq!(groups.slot_of("jobs", 2), None);
        assert_eq!(groups.groups[0].command[2], "node server.js --port $PORT");
        let zero = Groups::build(entries(), Some("jobs=0"), &[], &[]).unwrap();
        assert_eq!(zero.of_slot(1), (2, 0), "an empty group holds no slot");
    }

    #[test]
    fn after_and_once_name_groups_and_never_loop() {
        let after = ["web=migrate".to_string(), "jobs=web".to_string()];
        let groups = Groups::build(entries(), None, &after, &["migrate".to_string()]).unwrap();
        assert_eq!(groups.groups[0].after, [2]);
        assert!(groups.groups[2].once);
        let cycle = ["web=jobs".to_string(), "jobs=web".to_string()];
        assert!(
            Groups::build(entries(), None, &cycle, &[])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(
            Groups::build(entries(), Some("db=1"), &[], &[])
                .unwrap_err()
                .contains("no process db")
        );
        assert!(
            Groups::build(entries(), Some("all=0"), &[], &[])
                .unwrap_err()
                .contains("no worker")
        );
    }
}
