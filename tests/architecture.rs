//! The layout's one rule that a compiler does not check: no import circle between files.
//! Dependencies point one way (ARCHITECTURE.md): the front ends and the worker channels speak a
//! vocabulary that imports none of them, `config` does not import the supervisor, and only the
//! supervisor knows everything.
//!
//! This reads every file under `src/`, takes each path it names through `crate::` or `super::`
//! (in `use` lines, with their `{...}` groups, and in expressions), resolves it to the file of the
//! longest module prefix, and fails naming a cycle of the file graph. Comments, string literals
//! and the `#[cfg(test)]` module at the end of a file are left out: tests may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Imports that still close a circle, each a known debt: the graph without them must have no
/// cycle, so any new circle fails. None today: the eleven found when this check was written are
/// broken. Add one only with a comment saying why, and remove it when its circle is broken.
const KNOWN_CYCLE_EDGES: &[(&str, &str)] = &[];

/// A module path (`["supervisor", "cluster"]`) for every `.rs` file under `src/`.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let mut module: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            if module == ["main"] {
                continue; // the binary's crate, not the library's
            }
            files.insert(module, path);
        }
    }
    files
}

/// The source without comments, string and char literals, and the trailing test module.
fn code_only(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let end = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += rest[body..]
                .find(&end)
                .map_or(rest.len(), |e| body + e + end.len());
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && is_char_literal(rest) {
            let len = rest[1..].find('\'').unwrap() + 2;
            i += len;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether a `'` opens a char literal (`'a'`, `'\n'`, `'\u{7f}'`) rather than a lifetime.
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest[1..].chars();
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// Every full path named through `crate::` or `super::` in `code`, relative to `module`, and
/// through a module brought into scope (`use crate::frontend::control;` then
/// `control::client::main`, or `mod x;` then `x::f`). `is_module` says which paths are modules.
fn named_paths(
    code: &str,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = (tokens[i] == "crate" || tokens[i] == "super")
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if !starts {
            i += 1;
            continue;
        }
        let mut base: Vec<String> = Vec::new();
        if tokens[i] == "super" {
            // `super` is the parent of the file's module (for a `mod.rs`, of its folder's).
            base = module.to_vec();
            base.pop();
            i += 2;
            while tokens.get(i).is_some_and(|t| t == "super") {
                base.pop();
                i += 2;
            }
        } else {
            i += 2;
        }
        i = use_tree(&tokens, i, base, &mut paths);
    }
    let mut aliases: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for path in paths.iter().filter(|p| !p.is_empty() && is_module(p)) {
        aliases.insert(path.last().unwrap(), path.clone());
    }
    for pair in tokens.windows(2).filter(|w| w[0] == "mod") {
        let mut child = module.to_vec();
        child.push(pair[1].clone());
        if is_module(&child) {
            aliases.insert(&pair[1], child);
        }
    }
    let mut through_aliases = Vec::new();
    for i in 0..tokens.len() {
        let Some(prefix) = aliases.get(tokens[i].as_str()) else {
            continue;
        };
        if tokens.get(i + 1).is_some_and(|t| t == "::") && (i == 0 || tokens[i - 1] != "::") {
            use_tree(&tokens, i + 2, prefix.clone(), &mut through_aliases);
        }
    }
    paths.extend(through_aliases);
    paths
}

/// Reads one path or `{a, b::c}` group at `i` after `prefix::`, pushing each full path.
fn use_tree(
    tokens: &[String],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        Some("}") | None => return i + 1,
                        Some(",") => i += 1,
                        _ => i = use_tree(tokens, i, path.clone(), out),
                    }
                }
            }
            Some("self") => {
                i += 1;
            }
            Some(t)
                if t.chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_') =>
            {
                path.push(t.to_string());
                i += 1;
            }
            _ => {}
        }
        if tokens.get(i).is_some_and(|t| t == "::") {
            i += 1;
        } else {
            out.push(path);
            return i;
        }
    }
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek() {
                if !(n.is_alphanumeric() || n == '_') {
                    break;
                }
                word.push(n);
                chars.next();
            }
            tokens.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push("::".to_string());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

/// The file-level import graph: for each file, the files whose items it names.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
    let name = |module: &[String]| -> String {
        files[module]
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let code = code_only(&fs::read_to_string(path).unwrap());
        let mut targets = BTreeSet::new();
        let is_module = |p: &[String]| files.contains_key(p);
        for named in named_paths(&code, module, &is_module) {
            let target = (0..=named.len())
                .rev()
                .map(|n| &named[..n])
                .find(|prefix| files.contains_key(*prefix))
                .unwrap();
            // A module may use its own submodules: they are its parts (`mod x;`, `pub use x::y`,
            // `cluster.rs` and `cluster/*.rs`). Their imports of it, and of anything else, count; and
            // `lib.rs`, whose submodules are everything, counts its imports like any file.
            if target != module.as_slice() && (module.is_empty() || !target.starts_with(module)) {
                targets.insert(name(target));
            }
        }
        graph.insert(name(module), targets);
    }
    graph
}

/// One cycle through the graph, as the files in order, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        trail: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = trail.iter().position(|n| n == node).unwrap();
                let mut cycle = trail[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        trail.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, trail) {
                return Some(cycle);
            }
        }
        trail.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let mut graph = import_graph();
    for (from, to) in KNOWN_CYCLE_EDGES {
        let edges = graph
            .get_mut(*from)
            .unwrap_or_else(|| panic!("{from}: no such file"));
        assert!(
            edges.remove(*to),
            "{from} no longer imports {to}: remove it from KNOWN_CYCLE_EDGES"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import circle between files: {}\n(move the shared vocabulary into a module that \
             imports none of its users)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_graph_sees_the_imports_it_should() {
    let graph = import_graph();
    // A plain `use crate::a::b::Item`, a `{...}` group, and a path in an expression.
    assert!(graph["supervisor/run.rs"].contains("supervisor/cluster.rs"));
    assert!(graph["lib.rs"].contains("config/cli.rs"));
    assert!(graph["frontend/control/client.rs"].contains("text/escape.rs"));
    // A path through a module brought into scope: lib.rs's `control::client::main`.
    assert!(graph["lib.rs"].contains("frontend/control/client.rs"));
    assert!(graph.len() > 80, "only {} files seen", graph.len());
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut graph = BTreeMap::new();
    let edge = |to: &str| BTreeSet::from([to.to_string()]);
    graph.insert("a.rs".to_string(), edge("b.rs"));
    graph.insert("b.rs".to_string(), edge("c.rs"));
    graph.insert("c.rs".to_string(), edge("a.rs"));
    graph.insert("d.rs".to_string(), edge("a.rs"));
    assert_eq!(
        find_cycle(&graph).unwrap(),
        ["a.rs", "b.rs", "c.rs", "a.rs"]
    );
    graph.insert("c.rs".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn comments_strings_and_test_modules_name_nothing() {
    let code = code_only(
        "// crate::a\nlet s = \"crate::b\"; let c = '\"'; use crate::c::{d, e::f};\n\
         #[cfg(test)]\nmod tests { use crate::g; }",
    );
    let named = named_paths(&code, &[], &|_| false);
    let want: Vec<Vec<String>> = vec![
        vec!["c".into(), "d".into()],
        vec!["c".into(), "e".into(), "f".into()],
    ];
    assert_eq!(named, want);
}

/// Lists every circle, one per line, each found after cutting the last edge of the one before:
/// `cargo test --test architecture -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_cycles() {
    let mut graph = import_graph();
    while let Some(c) = find_cycle(&graph) {
        println!("CYCLE {}", c.join(" -> "));
        let n = c.len();
        graph.get_mut(&c[n - 2]).unwrap().remove(&c[n - 1]);
    }
}
