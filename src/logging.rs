//! recluster's own messages: to stderr, one line each, prefixed `recluster:` (and the level for
//! warnings, errors and details). `-v`/`-q` set the level; without them, `RUST_LOG` does; else
//! info. A closed stderr never stops recluster: write errors are dropped.

use std::io::Write;

use env_logger::Builder;
use log::{Level, LevelFilter};

/// `1 worker`, `2 workers`: a count and its noun, agreeing.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn init(level: LevelFilter, level_from_flags: bool) {
    let mut builder = Builder::new();
    builder.format(|out, record| {
        let tag = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug => "debug: ",
            Level::Trace => "trace: ",
        };
        writeln!(out, "recluster: {tag}{}", record.args())
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

/// For errors that happen before logging is set up (and usage errors): one line on stderr.
pub fn print_error(message: &str) {
    let _ = writeln!(std::io::stderr(), "recluster: error: {message}");
}
