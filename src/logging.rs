//! recluster's own messages: to stderr, one line each, prefixed `recluster:` (and the level for
//! warnings, errors and details). `-v`/`-q` set the level; without them, `RUST_LOG` does; else
//! info. A closed stderr never stops recluster: write errors are dropped.

use std::io::Write;

use env_logger::Builder;
use log::{Level, LevelFilter};

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

/// For errors that happen before logging is set up (and usage errors): one line on stderr.
pub fn print_error(message: &str) {
    let _ = writeln!(std::io::stderr(), "recluster: error: {message}");
}
