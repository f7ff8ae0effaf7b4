//! How a Procfile line is run: `/bin/sh -c LINE`, as foreman and honcho run it, but with `exec`
//! before the program when the line is one simple command (`PORT=8000 gunicorn app:wsgi 2>&1`),
//! so the shell expands the words, applies the redirections and then *becomes* the program. The
//! program so keeps the worker's pid, which `LISTEN_PID` names (dash forks even a line's last
//! command, and libsystemd, go-systemd and gunicorn ignore sockets addressed to another pid).
//! A line with an unquoted `;`, `&`, `|`, `(` or `)`, a reserved word (`if`, `for`, `!`, `{`) or a
//! shell builtin first (`cd`, `export`, `eval`) is compound and runs as written: the shell stays
//! the worker's process and forks its commands, so the line must say `exec` itself
//! (`cd app && exec gunicorn app:wsgi`). The scan is deliberately conservative: anything it does
//! not recognise as a simple command is left alone.

use std::ffi::OsString;

/// Words that make a line something other than a simple command when they come first, or that
/// `exec` cannot run (it runs programs, not shell builtins).
const NOT_A_PROGRAM: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "in", "{", "}", "!", "[[", "function", "select", "exec", "cd", "export", "readonly", "local",
    "set", "unset", "shift", "eval", ".", "source", "trap", "wait", "umask", "ulimit", "alias",
    "unalias", "exit", "return", "break", "continue", "times", "read", "getopts", "hash", "type",
    "command", "jobs", "fg", "bg", ":",
];

/// The command line a worker of a Procfile line runs.
pub fn command(line: &str) -> Vec<OsString> {
    let line = match program_at(line) {
        Some(at) => format!("{}exec {}", &line[..at], &line[at..]),
        None => line.to_string(),
    };
    vec!["/bin/sh".into(), "-c".into(), line.into()]
}

/// Whether the shell of `line` is replaced by its program (see the module doc), or the line runs
/// `exec` itself somewhere; false for a compound line that forks its program.
pub fn keeps_the_pid(line: &str) -> bool {
    program_at(line).is_some() || line.split_whitespace().any(|w| w == "exec")
}

/// Where the program's word starts when `line` is one simple command: after any leading
/// `NAME=value` assignments. `None` when the line is compound, is only assignments, or starts
/// with something the scan does not recognise as a program's name.
fn program_at(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut program = None;
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if i == bytes.len() || bytes[i] == b'#' {
            break;
        }
        let start = i;
        i = word_end(bytes, i)?;
        if program.is_none() {
            let word = &line[start..i];
            if is_assignment(word) {
                continue;
            }
            let redirection = word
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['<', '>']);
            if redirection || NOT_A_PROGRAM.contains(&word) {
                return None;
            }
            program = Some(start);
        }
    }
    program
}

/// The end of the word starting at `i`; `None` at a control operator or an unterminated quote.
fn word_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => break,
            b'\\' => i += 2,
            b'\'' => i = bytes[i + 1..].iter().position(|&b| b == b'\'')? + i + 2,
            b'"' => i = double_quoted_end(bytes, i + 1)?,
            b'`' => i = backquoted_end(bytes, i + 1)?,
            b'$' if matches!(bytes.get(i + 1), Some(b'(' | b'{')) => {
                i = balanced_end(bytes, i + 1)?
            }
            // `>&`, `<&` and `>|` are redirections, not control operators.
            b'&' | b'|' if i > 0 && matches!(bytes[i - 1], b'>' | b'<') => i += 1,
            b';' | b'&' | b'|' | b'(' | b')' | b'\n' => return None,
            _ => i += 1,
        }
    }
    Some(i.min(bytes.len()))
}

/// After the `"` that ends a double-quoted part starting at `i`.
fn double_quoted_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'`' => i = backquoted_end(bytes, i + 1)?,
            b'$' if matches!(bytes.get(i + 1), Some(b'(' | b'{')) => {
                i = balanced_end(bytes, i + 1)?
            }
            _ => i += 1,
        }
    }
    None
}

/// After the `` ` `` that ends a command substitution starting at `i`.
fn backquoted_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'`' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// After the bracket that closes the `(` or `{` at `i` (`$(…)`, `$((…))`, `${…}`), skipping
/// quoted parts.
fn balanced_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    let (open, close) = if bytes[i] == b'(' {
        (b'(', b')')
    } else {
        (b'{', b'}')
    };
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'\'' => i += bytes[i + 1..].iter().position(|&b| b == b'\'')? + 1,
            b'"' => i = double_quoted_end(bytes, i + 1)? - 1,
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `NAME=value`, NAME a shell variable name.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> String {
        command(line)[2].clone().into_string().unwrap()
    }

    #[test]
    fn a_simple_command_replaces_the_shell() {
        for (line, expected) in [
            ("gunicorn app:wsgi", "exec gunicorn app:wsgi"),
            (
                "PORT=8000 A='x y' gunicorn -b \"$HOST:$PORT\" app",
                "PORT=8000 A='x y' exec gunicorn -b \"$HOST:$PORT\" app",
            ),
            ("./server >>log 2>&1", "exec ./server >>log 2>&1"),
            (
                "node $(dirname $0)/a.js --x=\"$(echo ')')\" # note",
                "exec node $(dirname $0)/a.js --x=\"$(echo ')')\" # note",
            ),
            (
                "env X=${Y:-1} prog a\\;b 'c;d' `echo e`",
                "exec env X=${Y:-1} prog a\\;b 'c;d' `echo e`",
            ),
            ("prog >|out <&0", "exec prog >|out <&0"),
        ] {
            assert_eq!(run(line), expected, "{line}");
            assert!(keeps_the_pid(line));
        }
    }

    #[test]
    fn a_compound_line_runs_as_written() {
        for line in [
            "cd app && gunicorn app:wsgi",
            "prog | tee log",
            "prog; echo done",
            "prog &",
            "(prog)",
            "if true; then prog; fi",
            "! prog",
            "cd /srv",
            "eval \"$START\"",
            "exec prog",
            "X=1",
            "2>/dev/null prog",
            "prog 'unterminated",
        ] {
            assert_eq!(run(line), line, "{line}");
        }
        assert!(!keeps_the_pid("cd app && gunicorn app:wsgi"));
        assert!(keeps_the_pid("cd app && exec gunicorn app:wsgi"));
    }
}
