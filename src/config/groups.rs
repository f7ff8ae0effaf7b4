//! Procfile groups: several programs in one cluster (`-f/--procfile`, `-m/--formation`,
//! `--after`, `--once`). The cluster itself stays flat; the `Layout` says which group and which
//! id within it each of its slots is. At the start the groups are contiguous ranges in the
//! Procfile's order, so the exit-status rule "lowest group in file order, then lowest id" is the
//! cluster's own "lowest slot". Scaling a group appends a slot for a new id, or gives back the slot
//! an id had before; a scaled-down id's slot is retired, never reused for another. So the map from
//! slot to (group, id) only grows, and every thread that names workers (spawner, relays, hooks,
//! messages, status) shares it. What a worker sees (`WORKER_GROUP`, its `WORKER_ID` within the
//! group, `WORKER_COUNT` = the group's size when it started), the prefix `[web.3]`, status and
//! metrics are mapped here.

use std::ffi::OsString;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// `/bin/sh -c LINE`, as foreman and honcho run a Procfile line, with `exec` before a simple
    /// command's program (see `shell_line`).
    pub command: Vec<OsString>,
    /// `--once`: it runs to its end, must exit 0, and is not restarted.
    pub once: bool,
    /// `--after`: the groups that must be ready (or, one-shot, finished with 0) before it starts.
    pub after: Vec<usize>,
}

/// The groups, and the layout of their workers in the cluster's slots (shared by every clone).
#[derive(Debug, Clone)]
pub struct Groups {
    pub groups: Vec<Group>,
    layout: Arc<RwLock<Layout>>,
}

/// Which worker each cluster slot is. Only the supervisor loop changes it (`grow`, `shrink`),
/// before it decides the spawn or the stop that follows, so any thread that later sees a slot
/// also sees its place here.
#[derive(Debug, Default)]
struct Layout {
    /// Every slot the cluster ever had: its group and its id in the group. It only grows.
    slots: Vec<(usize, u32)>,
    /// Per group: the slot of each id it ever had, by id (only grows).
    members: Vec<Vec<u32>>,
    /// Per group: how many of its ids run now (ids `0..size`).
    sizes: Vec<u32>,
}

/// `name: command` lines; `#` comments and blank lines are skipped.
pub fn parse_procfile(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut names = std::collections::HashSet::new();
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
        if !names.insert(name) {
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
                    .filter(|&n| n <= crate::config::policy::MAX_WORKERS)
                    .ok_or_else(|| format!("--formation: '{n}' in '{part}' is not a count"))?;
                match name.trim() {
                    "all" => counts.iter_mut().for_each(|c| *c = n),
                    name => counts[find(name, "--formation")?] = n,
                }
            }
        }
        let mut groups = Vec::with_capacity(entries.len());
        let mut layout = Layout::default();
        for (g, ((name, line), workers)) in entries.into_iter().zip(counts).enumerate() {
            groups.push(Group {
                name,
                command: crate::process::shell_line::command(&line),
                once: false,
                after: Vec::new(),
            });
            let start = layout.slots.len() as u32;
            if start.saturating_add(workers) > crate::config::policy::MAX_WORKERS {
                return Err("--formation asks for more workers than recluster runs (65536)".into());
            }
            layout.slots.extend((0..workers).map(|id| (g, id)));
            layout.members.push((start..start + workers).collect());
            layout.sizes.push(workers);
        }
        if layout.slots.is_empty() {
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
        let groups = Groups {
            groups,
            layout: Arc::new(RwLock::new(layout)),
        };
        if let Some(cycle) = groups.cycle() {
            return Err(format!("--after makes a cycle: {cycle}"));
        }
        Ok(groups)
    }

    fn layout(&self) -> RwLockReadGuard<'_, Layout> {
        // The layout is whole after each change (no panic can happen halfway).
        self.layout.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The workers of every group, now.
    pub fn total(&self) -> u32 {
        self.layout().sizes.iter().sum()
    }

    /// How many workers group `group` runs now.
    pub fn size(&self, group: usize) -> u32 {
        self.layout().sizes[group]
    }

    /// The cluster slots of group `group`'s workers now, by id.
    pub fn slots(&self, group: usize) -> Vec<u32> {
        let layout = self.layout();
        layout.members[group][..layout.sizes[group] as usize].to_vec()
    }

    /// The group of cluster slot `slot` and its id within it.
    pub fn of_slot(&self, slot: u32) -> (usize, u32) {
        // Every slot the cluster has is in the layout; (0, slot) only guards against a bug.
        self.layout()
            .slots
            .get(slot as usize)
            .copied()
            .unwrap_or((0, slot))
    }

    /// One more worker in `group`: the slot its new id had before, or a new slot after the last.
    pub fn grow(&self, group: usize) -> u32 {
        let mut layout = self.layout.write().unwrap_or_else(PoisonError::into_inner);
        let id = layout.sizes[group];
        let slot = match layout.members[group].get(id as usize) {
            Some(&slot) => slot,
            None => {
                let slot = layout.slots.len() as u32;
                layout.slots.push((group, id));
                layout.members[group].push(slot);
                slot
            }
        };
        layout.sizes[group] += 1;
        slot
    }

    /// One worker fewer in `group` (its highest id): the slot to retire, if it has any worker.
    pub fn shrink(&self, group: usize) -> Option<u32> {
        let mut layout = self.layout.write().unwrap_or_else(PoisonError::into_inner);
        let id = layout.sizes[group].checked_sub(1)?;
        layout.sizes[group] = id;
        Some(layout.members[group][id as usize])
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
        let layout = self.layout();
        (id < layout.sizes[index]).then(|| layout.members[index][id as usize])
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

/// The slots among `slots` that new connections on the socket named `name` go to: those that take
/// it; with groups, where none of them does, every worker of the groups that take it.
pub fn steering_targets(groups: Option<&Groups>, slots: &[u32], name: &str) -> Vec<u32> {
    let taking: Vec<u32> = slots
        .iter()
        .copied()
        .filter(|&id| socket_goes_to(groups, name, id))
        .collect();
    match (taking.is_empty(), groups) {
        (true, Some(groups)) => (0..groups.groups.len())
            .flat_map(|g| groups.slots(g))
            .filter(|&id| socket_goes_to(Some(groups), name, id))
            .collect(),
        _ => taking,
    }
}

/// Whether the listening socket named `name` goes to slot `id`: with groups, a socket named after
/// a group goes to that group alone; any other to every group.
pub fn socket_goes_to(groups: Option<&Groups>, name: &str, id: u32) -> bool {
    match groups {
        Some(groups) => match groups.find(name) {
            Some(g) => groups.of_slot(id).0 == g,
            None => true,
        },
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(String, String)> {
        parse_procfile("# services\nweb: node server.js --port $PORT\n\njobs: python3 worker.py\nmigrate: ./migrate\n").unwrap()
    }

    #[test]
    fn a_long_procfile_is_parsed_in_linear_time() {
        // Each name was compared with every one before it: 100,000 entries took minutes. The
        // bound only catches that; the parse takes milliseconds.
        let text: String = (0..100_000).map(|i| format!("p{i}: x\n")).collect();
        let started = std::time::Instant::now();
        assert_eq!(parse_procfile(&text).unwrap().len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let twice = format!("{text}p7: y\n");
        assert!(
            parse_procfile(&twice)
                .unwrap_err()
                .contains("p7 is named twice")
        );
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
        assert_eq!(groups.slots(0), [0, 1, 2]);
        assert_eq!(groups.slots(1), [3, 4]);
        assert_eq!(groups.of_slot(4), (1, 1));
        assert_eq!(groups.label(5), "migrate.0");
        assert_eq!(groups.slot_of("jobs", 1), Some(4));
        assert_eq!(groups.slot_of("jobs", 2), None);
        assert_eq!(
            groups.groups[0].command[2],
            "exec node server.js --port $PORT"
        );
        let zero = Groups::build(entries(), Some("jobs=0"), &[], &[]).unwrap();
        assert_eq!(zero.of_slot(1), (2, 0), "an empty group holds no slot");
    }

    #[test]
    fn scaling_appends_new_ids_and_gives_an_id_its_slot_back() {
        let groups = Groups::build(entries(), Some("web=2"), &[], &[]).unwrap();
        let shared = groups.clone();
        assert_eq!(groups.grow(0), 4, "web.2 is a new slot after the last");
        assert_eq!(shared.label(4), "web.2", "every clone sees the change");
        assert_eq!(shared.slots(0), [0, 1, 4]);
        assert_eq!(groups.shrink(1), Some(2), "jobs.0 leaves");
        assert_eq!(groups.shrink(1), None, "jobs has no worker left");
        assert_eq!(shared.slot_of("jobs", 0), None);
        assert_eq!(groups.shrink(0), Some(4));
        assert_eq!(groups.shrink(0), Some(1));
        assert_eq!(groups.grow(0), 1, "web.1 gets its slot back");
        assert_eq!(groups.grow(0), 4, "and web.2 too");
        assert_eq!(groups.grow(1), 2);
        assert_eq!(groups.grow(1), 5, "jobs.1 is new");
        assert_eq!(shared.total(), 6);
        assert_eq!(shared.of_slot(5), (1, 1));
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
