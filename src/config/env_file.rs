//! `--env-file PATH`: variables for the workers from dotenv files, read at the start and again
//! before every reload. The parser is strict, so that a file means one thing only:
//!
//! - one `KEY=VALUE` a line, optionally after `export `; blank lines and `#` comment lines are
//!   skipped; KEY is `[A-Za-z_][A-Za-z0-9_]*`; blanks around `=` are allowed;
//! - a bare value runs to the end of the line or to a ` #` comment, trailing blanks trimmed; it
//!   may hold blanks, but no quote, backslash or backtick;
//! - `'single quotes'` are literal and may span lines;
//! - `"double quotes"` may span lines and take the escapes `\n`, `\r`, `\t`, `\\`, `\"`, `\$`,
//!   `` \` `` and a backslash at the end of a line (the line goes on);
//! - nothing is expanded: `$NAME`, `${NAME}`, `$(…)` and backticks outside single quotes are
//!   refused (write `\$` in double quotes, or single quotes, for a dollar sign), so no file runs
//!   a command or means something else in another tool;
//! - a variable recluster sets for each worker, or one addressed to recluster itself
//!   (`process::environment::reserved`), is refused: the file could not set it;
//! - a NUL byte is refused (an environment cannot hold one); other bytes pass byte for byte;
//! - a `KEY=VALUE` longer than `MAX_VARIABLE` (128 KiB - 1, the kernel's limit for one) is
//!   refused, and so are files whose variables together take more than `max_total` (1 MiB, or
//!   half of `ARG_MAX` when less), so that no worker's exec fails with E2BIG.
//!
//! The file is opened by `env_path`, which refuses a path that a user other than root or
//! recluster's own controls. Every refusal names the file and line (`PATH:LINE: …`). Later lines and later files win.
//! The files' digest is the SHA-256 of their bytes, one after the other (`cat A B | sha256sum`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What is wrong at one line of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// The variables of a set of env files and the digest of their bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvLayer {
    pub vars: BTreeMap<OsString, OsString>,
    /// Lowercase hex SHA-256 of the files' bytes in order; empty when no file is given.
    pub digest: String,
}

/// What the env files held for each generation from which their content changed: a worker of
/// generation G gets the entry of the greatest generation up to G. Entries no worker can get any
/// more are forgotten (`forget_before`), so reloads that read new contents do not pile them up.
#[derive(Debug)]
pub struct EnvHistory {
    layers: BTreeMap<u32, std::sync::Arc<EnvLayer>>,
}

impl EnvHistory {
    /// What the files held at the start (generation 0).
    pub fn new(start: EnvLayer) -> EnvHistory {
        EnvHistory {
            layers: BTreeMap::from([(0, std::sync::Arc::new(start))]),
        }
    }

    /// Generation `generation` and later get `layer` (unless it is what they get already).
    pub fn adopt(&mut self, generation: u32, layer: EnvLayer) {
        if self.of(generation).as_ref() != &layer {
            self.layers.insert(generation, std::sync::Arc::new(layer));
        }
    }

    /// Forgets what no worker of `generation` or later gets.
    pub fn forget_before(&mut self, generation: u32) {
        let keep = self
            .layers
            .range(..=generation)
            .next_back()
            .map_or(0, |(&from, _)| from);
        self.layers.retain(|&from, _| from >= keep);
    }

    /// What a worker of `generation` gets (one older than any kept gets the oldest kept).
    pub fn of(&self, generation: u32) -> &std::sync::Arc<EnvLayer> {
        self.layers
            .range(..=generation)
            .next_back()
            .map(|(_, layer)| layer)
            .or_else(|| self.layers.values().next())
            .expect("one entry at least is always kept")
    }

    /// How many contents are kept.
    pub fn kept(&self) -> usize {
        self.layers.len()
    }
}

/// The env files, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvFiles {
    pub paths: Vec<PathBuf>,
}

impl EnvFiles {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Reads and parses every file; later files win. The error is one line naming the file (and
    /// the line: `PATH:LINE: reason`).
    pub fn read(&self) -> Result<EnvLayer, String> {
        let mut layer = EnvLayer::default();
        if self.paths.is_empty() {
            return Ok(layer);
        }
        let mut hasher = Sha256::new();
        for path in &self.paths {
            let bytes = read_file(path)?;
            hasher.update(&bytes);
            let vars = parse(&bytes)
                .map_err(|e| format!("env file {}:{}: {}", path.display(), e.line, e.reason))?;
            layer.vars.extend(vars);
        }
        let (size, max) = (environment_size(&layer.vars), max_total());
        if size > max {
            let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "env files {}: their variables take {size} bytes of a worker's environment, more than the {max} recluster allows, so that a worker's exec keeps room for its command line and the rest of its environment",
                paths.join(", ")
            ));
        }
        layer.digest = hex(&hasher.finalize());
        Ok(layer)
    }
}

/// The longest `KEY=VALUE` an exec takes: the kernel's `MAX_ARG_STRLEN` (32 pages of 4 KiB) less
/// the NUL. A longer one would make every start of a worker fail with E2BIG.
pub const MAX_VARIABLE: usize = 32 * 4096 - 1;

/// The most the env files' variables may take in a worker's environment (each `KEY=VALUE`, its
/// NUL and its pointer): 1 MiB, or half of `ARG_MAX` when that is less, so that the command line
/// and the rest of the environment keep at least as much room.
pub fn max_total() -> usize {
    // SAFETY: sysconf has no memory effects.
    let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    let half = usize::try_from(arg_max).map_or(usize::MAX, |max| max / 2);
    (1 << 20).min(half)
}

/// What `vars` take in an environment: each `KEY=VALUE`, its NUL and its pointer.
pub fn environment_size(vars: &BTreeMap<OsString, OsString>) -> usize {
    vars.iter()
        .map(|(k, v)| k.len() + 1 + v.len() + 1 + std::mem::size_of::<usize>())
        .sum()
}

/// The longest env file read: far more than any configuration, and a bound on what a mistaken
/// path (a log, a device) costs.
const MAX_FILE: u64 = 1 << 20;

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let fail = |e: std::io::Error| format!("failed to read env file {}: {e}", path.display());
    // Walked from `/` without following links others control, opened non-blocking, so a FIFO
    // at the path is refused below instead of holding the supervisor until someone writes to it.
    let file = crate::config::env_path::open(path)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(format!(
            "failed to read env file {}: not a regular file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!(
            "env file {} is larger than {} bytes",
            path.display(),
            MAX_FILE
        ));
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses one env file's bytes into its variables, in order (a key given twice appears twice;
/// the later one wins when they are collected).
pub fn parse(text: &[u8]) -> Result<Vec<(OsString, OsString)>, LineError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut parser = Parser {
        text,
        at: 0,
        line: 1,
    };
    let mut vars = Vec::new();
    while !parser.done() {
        if let Some(var) = parser.statement()? {
            vars.push(var);
        }
    }
    Ok(vars)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    /// The line `at` is on.
    line: usize,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    fn error(&self, reason: impl Into<String>) -> LineError {
        LineError {
            line: self.line,
            reason: reason.into(),
        }
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.at += 1;
        }
    }

    /// Whether the rest of the line is blank: `\n`, `\r\n` or the end of the text.
    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => matches!(self.text.get(self.at + 1), None | Some(b'\n')),
            _ => false,
        }
    }

    /// Consumes the end of the line (and a `\r` before it).
    fn end_line(&mut self) {
        if self.peek() == Some(b'\r') {
            self.at += 1;
        }
        self.bump();
    }

    /// Skips to the end of the line: a comment.
    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|b| b != b'\n') {
            self.at += 1;
        }
        self.bump();
    }

    /// After a value: blanks, then an optional comment, then the end of the line.
    fn finish_line(&mut self, after: &str) -> Result<(), LineError> {
        self.skip_blanks();
        if self.peek() == Some(b'#') {
            self.skip_comment();
            return Ok(());
        }
        if !self.at_line_end() {
            return Err(self.error(format!(
                "unexpected text after {after} (a comment needs a blank before '#')"
            )));
        }
        self.end_line();
        Ok(())
    }

    fn word(&mut self) -> &[u8] {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    /// One line (or one variable spanning several): `None` for a blank or comment line.
    fn statement(&mut self) -> Result<Option<(OsString, OsString)>, LineError> {
        self.skip_blanks();
        let first_line = self.line;
        if self.at_line_end() {
            self.end_line();
            return Ok(None);
        }
        if self.peek() == Some(b'#') {
            self.skip_comment();
            return Ok(None);
        }
        let mut key = self.word().to_vec();
        if key == b"export" && self.peek().is_some_and(is_blank) {
            self.skip_blanks();
            key = self.word().to_vec();
        }
        if key.is_empty() {
            return Err(self.error("expected a variable name (KEY=VALUE)"));
        }
        if key[0].is_ascii_digit() {
            return Err(self.error(format!(
                "'{}' is not a variable name: it starts with a digit",
                String::from_utf8_lossy(&key)
            )));
        }
        let name = String::from_utf8_lossy(&key).into_owned();
        self.skip_blanks();
        if self.peek() != Some(b'=') {
            return Err(self.error(format!("expected '=' after {name} (KEY=VALUE)")));
        }
        self.at += 1;
        if crate::process::environment::reserved(std::ffi::OsStr::new(&name)) {
            return Err(self.error(format!(
                "{name} is set by recluster for each worker (or addressed to recluster itself): an env file cannot set it"
            )));
        }
        self.skip_blanks();
        let value = match self.peek() {
            Some(b'\'') => self.single_quoted()?,
            Some(b'"') => self.double_quoted()?,
            _ => self.bare()?,
        };
        if value.contains(&0) {
            return Err(self.error(format!("the value of {name} holds a NUL byte")));
        }
        let length = name.len() + 1 + value.len();
        if length > MAX_VARIABLE {
            return Err(LineError {
                line: first_line,
                reason: format!(
                    "{name}=VALUE is {length} bytes, more than the {MAX_VARIABLE} the kernel passes in one variable to a program it starts"
                ),
            });
        }
        Ok(Some((OsString::from(name), OsString::from_vec(value))))
    }

    fn single_quoted(&mut self) -> Result<Vec<u8>, LineError> {
        let opened = self.line;
        self.at += 1;
        let mut value = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Err(LineError {
                        line: opened,
                        reason: "a single quote opened here is never closed".into(),
                    });
                }
                Some(b'\'') => break,
                Some(b) => value.push(b),
            }
        }
        self.finish_line("the closing quote")?;
        Ok(value)
    }

    fn double_quoted(&mut self) -> Result<Vec<u8>, LineError> {
        let opened = self.line;
        self.at += 1;
        let mut value = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Err(LineError {
                        line: opened,
                        reason: "a double quote opened here is never closed".into(),
                    });
                }
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(b'n') => value.push(b'\n'),
                    Some(b'r') => value.push(b'\r'),
                    Some(b't') => value.push(b'\t'),
                    Some(b @ (b'\\' | b'"' | b'$' | b'`')) => value.push(b),
                    Some(b'\n') => {}
                    Some(b'\r') if self.peek() == Some(b'\n') => {
                        self.bump();
                    }
                    None => {
                        return Err(LineError {
                            line: opened,
                            reason: "a double quote opened here is never closed".into(),
                        });
                    }
                    Some(other) => {
                        return Err(self.error(format!(
                            "unknown escape '\\{}' in double quotes (write \\\\ for a backslash)",
                            char::from(other).escape_default()
                        )));
                    }
                },
                Some(b) => {
                    self.refuse_expansion(b)?;
                    value.push(b);
                }
            }
        }
        self.finish_line("the closing quote")?;
        Ok(value)
    }

    /// A backtick, or `$` before a name, `{` or `(`: recluster expands nothing, so it refuses
    /// what would be expanded elsewhere rather than pass it on literally.
    fn refuse_expansion(&self, b: u8) -> Result<(), LineError> {
        let next = self.peek();
        let expands = match b {
            b'`' => true,
            b'$' => {
                next.is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, b'_' | b'{' | b'('))
            }
            _ => false,
        };
        if expands {
            return Err(self.error(
                "no variable expansion or command substitution: for a literal '$' or '`' write \\$ or \\` in double quotes, or use single quotes",
            ));
        }
        Ok(())
    }

    fn bare(&mut self) -> Result<Vec<u8>, LineError> {
        let mut value = Vec::new();
        while !self.at_line_end() {
            let b = self.peek().expect("not at the end");
            if is_blank(b) {
                // Blanks before '#' start a comment; elsewhere they are part of the value.
                let start = self.at;
                self.skip_blanks();
                if self.peek() == Some(b'#') || self.at_line_end() {
                    break;
                }
                value.extend_from_slice(&self.text[start..self.at]);
                continue;
            }
            if matches!(b, b'\'' | b'"' | b'\\') {
                return Err(self.error(format!(
                    "'{}' inside a bare value: quote the whole value",
                    char::from(b)
                )));
            }
            self.at += 1;
            self.refuse_expansion(b)?;
            value.push(b);
        }
        if self.peek() == Some(b'#') {
            self.skip_comment();
        } else {
            self.end_line();
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::EnvHistory;

    fn layer(digest: &str) -> super::EnvLayer {
        super::EnvLayer {
            vars: Default::default(),
            digest: digest.to_string(),
        }
    }

    #[test]
    fn a_generation_gets_the_newest_content_up_to_it_and_what_none_gets_is_forgotten() {
        let mut history = EnvHistory::new(layer("a"));
        history.adopt(3, layer("b"));
        history.adopt(4, layer("b")); // unchanged: no entry
        history.adopt(6, layer("c"));
        let digest = |h: &EnvHistory, g| h.of(g).digest.clone();
        assert_eq!(
            [0, 2, 3, 5, 6, 9].map(|g| digest(&history, g)),
            ["a", "a", "b", "b", "c", "c"]
        );
        assert_eq!(history.kept(), 3);
        // The oldest worker runs generation 4: "a" is needed no more, "b" still is.
        history.forget_before(4);
        assert_eq!(history.kept(), 2);
        assert_eq!([4, 5, 6].map(|g| digest(&history, g)), ["b", "b", "c"]);
        // A thousand reloads, each with new content, each once every worker has moved on.
        for g in 7..1007 {
            history.adopt(g, layer(&g.to_string()));
            history.forget_before(g - 1);
        }
        assert_eq!(
            history.kept(),
            2,
            "only what a live generation gets is kept"
        );
        assert_eq!(digest(&history, 1006), "1006");
        // Never empty, never a panic: a generation older than any kept gets the oldest kept.
        assert_eq!(digest(&history, 0), "1005");
    }

    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    fn refused(text: &str) -> LineError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn the_common_forms_parse() {
        let text = "\u{feff}# a comment\n\nA=1\nexport B = two words  # note\nC='it''s'\nD=\"x\\ny \\\"q\\\" \\$HOME\"\nE=\nF=a#b\n  G=  'single $X `y`'\r\nexport=3\n";
        assert_eq!(
            parse(text.as_bytes()).map(|v| v.len()),
            Err(LineError {
                line: 5,
                reason:
                    "unexpected text after the closing quote (a comment needs a blank before '#')"
                        .into()
            })
        );
        let text = "\u{feff}# a comment\n\nA=1\nexport B = two words  # note\nD=\"x\\ny \\\"q\\\" \\$HOME\"\nE=\nF=a#b\n  G=  'single $X `y`'\r\nexport=3\n";
        assert_eq!(
            vars(text),
            [
                pair("A", "1"),
                pair("B", "two words"),
                pair("D", "x\ny \"q\" $HOME"),
                pair("E", ""),
                pair("F", "a#b"),
                pair("G", "single $X `y`"),
                pair("export", "3"),
            ]
        );
    }

    #[test]
    fn quotes_span_lines_and_errors_name_the_line_the_quote_opened() {
        assert_eq!(
            vars("K='a\nb'\nL=\"c\\\nd\"\nM=2"),
            [pair("K", "a\nb"), pair("L", "cd"), pair("M", "2")]
        );
        assert_eq!(refused("A=1\nB=\"x\n\ny").line, 2);
        assert_eq!(refused("A=1\n\nB='x").line, 3);
    }

    #[test]
    fn nothing_is_expanded_and_what_would_be_is_refused_at_its_line() {
        for text in [
            "A=1\nB=$(rm -rf /)",
            "A=1\nB=`id`",
            "A=1\nB=\"${HOME}\"",
            "A=1\nB=$HOME",
        ] {
            let e = refused(text);
            assert_eq!(e.line, 2, "{text}");
            assert!(e.reason.contains("no variable expansion"), "{text}: {e:?}");
        }
        assert_eq!(vars("P=$5 and 100$"), [pair("P", "$5 and 100$")]);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line, says) in [
            ("A=1\nnot a line\n", 2, "expected '='"),
            ("A=1\n\n=x\n", 3, "expected a variable name"),
            ("1A=x", 1, "starts with a digit"),
            ("A=\"x\" y", 1, "unexpected text"),
            ("A=it's", 1, "quote the whole value"),
            ("A=\"\\q\"", 1, "unknown escape"),
            ("A=\"a\\0\"", 1, "unknown escape"),
            ("WORKER_ID=3", 1, "set by recluster"),
            ("export LISTEN_FDS=3", 1, "set by recluster"),
            ("EINHORN_FD_0=3", 1, "set by recluster"),
            ("A=x\nB='\0'", 2, "NUL"),
        ] {
            let e = refused(text);
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.reason.contains(says), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn a_variable_the_kernel_would_refuse_to_pass_is_refused_at_its_line() {
        // "K=" and the value: 131,071 bytes pass, one more would fail every exec with E2BIG.
        let fits = format!("A=1\nK={}\n", "x".repeat(MAX_VARIABLE - 2));
        assert_eq!(vars(&fits)[1].1.len(), MAX_VARIABLE - 2);
        let long = format!("A=1\nK='{}\n{}'\n", "x".repeat(70_000), "y".repeat(70_000));
        let e = refused(&long);
        assert_eq!(e.line, 2, "the line the variable starts on: {e:?}");
        assert!(e.reason.contains("K=VALUE is 140003 bytes"), "{e:?}");
        assert!(
            refused(&format!("K={}", "x".repeat(MAX_VARIABLE - 1)))
                .reason
                .contains("131071")
        );
    }

    #[test]
    fn files_whose_variables_would_leave_exec_too_little_room_are_refused() {
        let dir = std::env::temp_dir().join(format!("recluster-envtotal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two files of 600 KiB, each within every limit alone.
        let file = |name: &str| {
            let path = dir.join(name);
            let text: String = (0..5)
                .map(|i| format!("{name}_{i}={}\n", "v".repeat(120 * 1024)))
                .collect();
            std::fs::write(&path, text).unwrap();
            path
        };
        let (a, b) = (file("A"), file("B"));
        let one = EnvFiles {
            paths: vec![a.clone()],
        };
        assert_eq!(one.read().unwrap().vars.len(), 5);
        let both = EnvFiles {
            paths: vec![a.clone(), b.clone()],
        };
        let e = both.read().unwrap_err();
        assert!(
            e.starts_with(&format!("env files {}, {}: ", a.display(), b.display()))
                && e.contains(&format!("more than the {}", max_total())),
            "{e}"
        );
        assert!(max_total() <= 1 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn later_files_win_and_the_digest_is_of_the_bytes_in_order() {
        let dir = std::env::temp_dir().join(format!("recluster-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.env"), dir.join("b.env"));
        std::fs::write(&a, "X=1\nY=1\n").unwrap();
        std::fs::write(&b, "Y=2\n").unwrap();
        let files = EnvFiles {
            paths: vec![a.clone(), b.clone()],
        };
        let layer = files.read().unwrap();
        assert_eq!(layer.vars.get(std::ffi::OsStr::new("X")).unwrap(), "1");
        assert_eq!(layer.vars.get(std::ffi::OsStr::new("Y")).unwrap(), "2");
        // sha256 of "X=1\nY=1\nY=2\n".
        assert_eq!(layer.digest, hex(&Sha256::digest(b"X=1\nY=1\nY=2\n")));
        std::fs::write(&b, "Y=2\nZ\n").unwrap();
        let e = files.read().unwrap_err();
        assert_eq!(
            e,
            format!(
                "env file {}:2: expected '=' after Z (KEY=VALUE)",
                b.display()
            )
        );
        let missing = EnvFiles {
            paths: vec![dir.join("missing")],
        };
        assert!(
            missing
                .read()
                .unwrap_err()
                .contains("failed to read env file")
        );
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo = EnvFiles { paths: vec![fifo] };
        let e = fifo.read().unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
