//! Which names `--watch` does not count: the defaults (version-control and build directories,
//! dependency trees, bytecode caches, editor swap and backup files) and every `--watch-ignore`
//! GLOB. A glob is matched against one name — a file's or a directory's, never a path — with `*`
//! for any run of characters and `?` for one; a directory whose name matches is not watched at
//! all, so a `node_modules` of 100,000 files costs no watch.

use std::ffi::OsStr;

/// What is ignored without being asked: what no reload should follow, and what editors write
/// beside a file while it is edited (vim `.x.swp` and its `4913` probe, emacs `.#x` and `#x#`,
/// backups `x~`).
pub const DEFAULTS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "target",
    "__pycache__",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
];

/// The globs of names that do not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignore {
    globs: Vec<String>,
}

impl Ignore {
    /// The defaults and `extra` (`--watch-ignore`).
    pub fn new(extra: &[String]) -> Ignore {
        let mut globs: Vec<String> = DEFAULTS.iter().map(|g| g.to_string()).collect();
        globs.extend(extra.iter().cloned());
        Ignore { globs }
    }

    /// Whether a file or directory named `name` is ignored.
    pub fn ignores(&self, name: &OsStr) -> bool {
        let name = name.as_encoded_bytes();
        self.globs.iter().any(|g| matches(g.as_bytes(), name))
    }
}

/// `--watch-ignore`'s value: a name pattern, never a path (a `/` in it could never match).
pub fn parse_glob(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the pattern is empty".to_string());
    }
    if text.contains('/') {
        return Err(format!(
            "'{text}' has a '/': a pattern is matched against each file or directory name, not a path (write the name, such as 'build' or '*.log')"
        ));
    }
    Ok(text.to_string())
}

/// Whether `name` matches `glob` (`*` any run, `?` one byte), without recursion: the classic
/// two-pointer walk that backtracks to the last `*`.
fn matches(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    g = sg + 1;
                    n = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        for (glob, name, expected) in [
            ("*.swp", ".app.py.swp", true),
            ("*.swp", "app.py", false),
            ("*~", "app.py~", true),
            (".#*", ".#app.py", true),
            ("#*#", "#app.py#", true),
            ("#*#", "#app.py", false),
            ("target", "target", true),
            ("target", "targets", false),
            ("a?c", "abc", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*", "", true),
            ("", "", true),
        ] {
            assert_eq!(
                matches(glob.as_bytes(), name.as_bytes()),
                expected,
                "{glob} {name}"
            );
        }
    }

    #[test]
    fn the_defaults_and_the_extra_globs_are_ignored() {
        let ignore = Ignore::new(&["*.log".to_string()]);
        for name in [
            ".git",
            "node_modules",
            "__pycache__",
            ".x.swp",
            "4913",
            "a.log",
        ] {
            assert!(ignore.ignores(OsStr::new(name)), "{name}");
        }
        for name in ["app.py", "src", "targets", "log"] {
            assert!(!ignore.ignores(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn a_pattern_with_a_slash_is_refused() {
        assert!(parse_glob("src/*.py").unwrap_err().contains("not a path"));
        assert!(parse_glob("").is_err());
        assert_eq!(parse_glob("build"), Ok("build".to_string()));
    }
}
