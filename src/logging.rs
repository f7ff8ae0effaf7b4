//! recluster's own messages: to stderr, one line each, prefixed `recluster:` (and the level for
//! warnings, errors and details). `-v`/`-q` set the level; without them, `RUST_LOG` does; else
//! info. A closed stderr never stops recluster: write errors are dropped. A stderr nobody reads
//! never stops it either: lines go through a queue of `QUEUE` lines to a writer thread, which
//! alone waits on the pipe; when the queue is full a line is dropped, and the writer says how
//! many were once it writes again. `finish` lets the queue drain before recluster exits.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use env_logger::Builder;
use log::{Level, LevelFilter};

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
                    Queued::Line(line) => {
                        let dropped = DROPPED.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            let note = format!(
                                "recluster: warning: {dropped} log line{} dropped: stderr was not read\n",
                                if dropped == 1 { "" } else { "s" }
                            );
                            crate::output::write_own_stderr(note.as_bytes());
                        }
                        crate::output::write_own_stderr(&line);
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
                Err(TrySendError::Disconnected(_)) => crate::output::write_own_stderr(buf),
            },
            None => crate::output::write_own_stderr(buf),
        }
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
