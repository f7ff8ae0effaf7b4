//! recluster's own messages: to stderr, one line each, prefixed `recluster:` (and the level for
//! warnings, errors and details); `--log-format time` puts the time first, `--log-format json`
//! (the default under `--prefix=json`) writes each as a JSON object with the keys of `--prefix
//! json`'s lines. `-v`/`-q` set the level (`-v` debug, `-vv` trace: every event and action of
//! the supervisor loop); without them, `RUST_LOG` does; else info. A closed stderr never stops
//! recluster: write errors are dropped.

use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

use env_logger::Builder;
use log::{Level, LevelFilter};

/// `1 worker`, `2 workers`: a count and its noun, agreeing.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How recluster writes its own lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `recluster: warning: …`
    Text,
    /// `2026-12-04T14:45:36.123Z recluster: warning: …` (UTC, RFC 3339)
    Time,
    /// `{"ts":…,"worker":null,"group":null,"stream":"stderr","level":"warn","line":"…"}`
    Json,
}

/// The format `init` chose, for the errors printed after it.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// One of recluster's own lines, as `format` writes it (with its newline).
fn line(format: LogFormat, level: Level, message: &str) -> String {
    let tag = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug => "debug: ",
        Level::Trace => "trace: ",
    };
    match format {
        LogFormat::Text => format!("recluster: {tag}{message}\n"),
        LogFormat::Time => format!(
            "{} recluster: {tag}{message}\n",
            humantime::format_rfc3339_millis(SystemTime::now())
        ),
        LogFormat::Json => format!(
            "{{\"ts\":\"{}\",\"worker\":null,\"group\":null,\"stream\":\"stderr\",\"level\":\"{}\",\"line\":{}}}\n",
            humantime::format_rfc3339_micros(SystemTime::now()),
            level.as_str().to_ascii_lowercase(),
            crate::plan::quote(message)
        ),
    }
}

pub fn init(level: LevelFilter, level_from_flags: bool, format: LogFormat) {
    let _ = FORMAT.set(format);
    let mut builder = Builder::new();
    builder.format(move |out, record| {
        out.write_all(line(format, record.level(), &record.args().to_string()).as_bytes())
    });
    // Under the lock the `--prefix` relays take, so a log line never lands inside their writes.
    builder.target(env_logger::Target::Pipe(Box::new(LockedStderr)));
    match std::env::var("RUST_LOG") {
        Ok(spec) if !level_from_flags => {
            builder.parse_filters(&spec);
        }
        _ => {
            builder.filter_level(level);
        }
    }
    let _ = builder.try_init();
}

/// stderr, written through `output`'s lock.
struct LockedStderr;

impl Write for LockedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::output::write_own_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For errors that happen before logging is set up (and usage errors): one line on stderr, in
/// `--log-format` once that is known.
pub fn print_error(message: &str) {
    let format = FORMAT.get().copied().unwrap_or(LogFormat::Text);
    let _ = std::io::stderr().write_all(line(format, Level::Error, message).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_writes_one_line_naming_recluster() {
        assert_eq!(
            line(LogFormat::Text, Level::Warn, "careful"),
            "recluster: warning: careful\n"
        );
        let timed = line(LogFormat::Time, Level::Info, "up");
        let (time, rest) = timed.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{timed}");
        assert_eq!(rest, "recluster: up\n");
        let json = line(LogFormat::Json, Level::Error, "a \"quoted\"\nthing");
        assert_eq!(json.lines().count(), 1, "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["worker"], serde_json::Value::Null);
        assert_eq!(value["stream"], "stderr");
        assert_eq!(value["line"], "a \"quoted\"\nthing");
        assert!(humantime::parse_rfc3339(value["ts"].as_str().unwrap()).is_ok());
    }
}
