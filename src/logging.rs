//! recluster's own messages: to stderr, one line each, prefixed `recluster:` (and the level for
//! warnings, errors and details); `--log-format time` puts the time first, `--log-format json`
//! (the default under `--prefix=json`) writes each as a JSON object with the keys of `--prefix
//! json`'s lines. `-v`/`-q` set the level (`-v` debug, `-vv` trace: every event and action of
//! the supervisor loop); without them, `RUST_LOG` does; else info. A closed stderr never stops
//! recluster: write errors are dropped. A stderr nobody reads
//! never stops it either: lines go through a queue of `QUEUE` lines to a writer thread, which
//! alone waits on the pipe; when the queue is full a line is dropped, and the writer says how
//! many were once it writes again. `finish` lets the queue drain before recluster exits.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Sender, TrySendError};
use env_logger::Builder;
use log::{Level, LevelFilter};

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
            crate::text::json_string::quote(message)
        ),
    }
}

/// Log lines that may wait for a slow stderr.
const QUEUE: usize = 512;

enum Queued {
    Line(Vec<u8>),
    /// Answered once every line before it is written.
    Flush(Sender<()>),
}

/// The writer thread's queue, once `init` started it.
static WRITER: OnceLock<Sender<Queued>> = OnceLock::new();
/// Lines dropped since the writer last said so.
static DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn init(level: LevelFilter, level_from_flags: bool, format: LogFormat) {
    let _ = FORMAT.set(format);
    let mut builder = Builder::new();
    builder.format(move |out, record| {
        out.write_all(line(format, record.level(), &record.args().to_string()).as_bytes())
    });
    // Under the lock the `--prefix` relays take, so a log line never lands inside their writes.
    builder.target(env_logger::Target::Pipe(Box::new(QueuedStderr)));
    start_writer();
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

/// Starts the thread that writes the queued lines to stderr (through `output`'s lock); if it
/// cannot start, lines are written where they are logged.
fn start_writer() {
    let (sender, queue) = crossbeam_channel::bounded::<Queued>(QUEUE);
    // The thread starts with every signal blocked (it inherits this thread's mask): a signal
    // it took would never reach the signal thread (SIGCHLD would be discarded, no exit seen).
    // SAFETY: an all-zero sigset_t is a valid value of that plain C type.
    let (mut all, mut before): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: sigfillset and pthread_sigmask write into valid, initialised sets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
    }
    let started = std::thread::Builder::new()
        .name("log".to_string())
        .stack_size(64 * 1024)
        .spawn(move || {
            for queued in queue {
                match queued {
                    Queued::Line(text) => {
                        let dropped = DROPPED.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            let note = line(
                                FORMAT.get().copied().unwrap_or(LogFormat::Text),
                                Level::Warn,
                                &format!(
                                    "{} dropped: stderr was not read",
                                    crate::text::plural::plural(dropped, "log line", "log lines")
                                ),
                            );
                            crate::worker_io::output::write_own_stderr(note.as_bytes());
                        }
                        crate::worker_io::output::write_own_stderr(&text);
                    }
                    Queued::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
    if started.is_ok() {
        let _ = WRITER.set(sender);
    }
}

/// Waits until the lines logged so far are written, for at most `limit` (stderr may never be
/// read): recluster is about to exit.
pub fn finish(limit: Duration) {
    let Some(writer) = WRITER.get() else {
        return;
    };
    let deadline = Instant::now() + limit;
    let (done, written) = crossbeam_channel::bounded(1);
    if writer.send_deadline(Queued::Flush(done), deadline).is_ok() {
        let _ = written.recv_deadline(deadline);
    }
}

/// stderr, through the writer thread's queue.
struct QueuedStderr;

impl Write for QueuedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match WRITER.get() {
            Some(writer) => match writer.try_send(Queued::Line(buf.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {
                    crate::worker_io::output::write_own_stderr(buf)
                }
            },
            None => crate::worker_io::output::write_own_stderr(buf),
        }
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
