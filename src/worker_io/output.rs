//! `--prefix`: every line a worker prints, tagged with its slot and written whole. Each worker's
//! stdout and stderr are pipes; one relay thread per worker reads both and writes each complete
//! line with its prefix (`[3] …`, or a JSON object with `--prefix json`) to recluster's own stdout
//! or stderr, under a lock per stream, so two workers' lines never mix. A slow reader of
//! recluster's output slows the workers (the pipes fill), never grows recluster's memory: a line
//! longer than `MAX_LINE` is cut into pieces marked `…`, and lines are written in batches of about
//! `MAX_LINE`. The lock is held across a write that a slow reader can block, so only threads that
//! may wait take it: the relays (their worker waits with them) and the log writer (`logging`),
//! never the supervisor loop or a thread that serves others. A worker's last partial line is written
//! when its pipes close; then its relay sends `Event::OutputClosed`, which the loop waits for
//! (briefly) before it reports the worker's exit; recluster waits for every relay before it exits.
//! A worker may leave a process that holds its pipes after it ends: its relay goes on, but a slot
//! keeps at most one such relay (`MAX_OUTLIVING`): when another of its workers ends with its
//! output still held, the older relay stops and closes its pipes, so a crash loop of such workers
//! cannot grow recluster by a thread per restart.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::supervisor::event::Event;

/// How `--prefix` writes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefixFormat {
    /// `[3] the line`, coloured per worker on a terminal (unless NO_COLOR is set).
    Text,
    /// `{"ts":…,"worker":3,"group":null,"stream":"stdout","line":"the line"}`, for log shippers.
    Json,
}

/// The longest piece of a line written at once.
pub const MAX_LINE: usize = 64 * 1024;

/// One lock per stream: a line is written whole, or waits.
static STDOUT: Mutex<()> = Mutex::new(());
static STDERR: Mutex<()> = Mutex::new(());

/// The read ends a worker's relay takes, and the write ends its child gets as fds 1 and 2.
pub struct Pipes {
    pub stdout: (OwnedFd, OwnedFd),
    pub stderr: (OwnedFd, OwnedFd),
}

impl Pipes {
    pub fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            stdout: pipe()?,
            stderr: pipe()?,
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How many relays a slot keeps for workers that have ended while a process they left holds
/// their output.
const MAX_OUTLIVING: usize = 1;

/// A relay that may still be running.
struct Running {
    slot: u32,
    pid: i32,
    /// Written to tell the relay to stop.
    stop: Arc<OwnedFd>,
    /// Set by the relay as it finishes.
    done: Arc<AtomicBool>,
    /// Its worker has ended (its output is held by a process it left).
    outliving: bool,
}

/// The relay threads of every worker spawned.
pub struct Relay {
    format: PrefixFormat,
    /// Whether to colour prefixes, per stream (stdout, stderr): on a terminal without NO_COLOR.
    colour: [bool; 2],
    /// Relays started, and a message from each as it finishes.
    started: usize,
    finished: (Sender<()>, Receiver<()>),
    /// The supervisor hears when a worker's output is all written.
    events: Sender<Event>,
    /// Relays not known to have finished, oldest first.
    running: Vec<Running>,
}

impl Relay {
    pub fn new(format: PrefixFormat, events: Sender<Event>) -> Relay {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        // SAFETY: isatty only queries a descriptor.
        let tty = |fd| !no_colour && unsafe { libc::isatty(fd) } == 1;
        Relay {
            format,
            colour: [tty(1), tty(2)],
            started: 0,
            finished: crossbeam_channel::unbounded(),
            events,
            running: Vec::new(),
        }
    }

    /// Starts the relay of worker `id` (`pid`), reading the read ends of its pipes (the write
    /// ends must be closed here once the child has them).
    /// `label` is what the prefix shows (`3`, or `web.3` with groups); `group` the group's name
    /// and the id within it, for `--prefix=json`.
    pub fn start(
        &mut self,
        id: u32,
        label: String,
        group: Option<(String, u32)>,
        pid: i32,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<()> {
        let (format, colour) = (self.format, self.colour);
        let (finished, events) = (self.finished.0.clone(), self.events.clone());
        self.running.retain(|r| !r.done.load(Ordering::Acquire));
        // SAFETY: eventfd creates a descriptor from plain flags.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nothing else.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(stop) });
        let done = Arc::new(AtomicBool::new(false));
        let (stop_seen, done_set) = (stop.clone(), done.clone());
        std::thread::Builder::new()
            .name(format!("output-{id}"))
            .spawn(move || {
                let who = Who { id, label, group };
                relay(&who, format, colour, [stdout, stderr], &stop_seen);
                done_set.store(true, Ordering::Release);
                let _ = events.send(Event::OutputClosed { pid });
                let _ = finished.send(());
            })?;
        self.running.push(Running {
            slot: id,
            pid,
            stop,
            done,
            outliving: false,
        });
        self.started += 1;
        Ok(())
    }

    /// Worker `pid` has ended while its output is still open (a process it left holds its
    /// pipes). Its relay goes on; an older one of the same slot in that state stops, so a slot
    /// keeps at most `MAX_OUTLIVING` of them.
    pub fn outlived(&mut self, pid: i32) {
        self.running.retain(|r| !r.done.load(Ordering::Acquire));
        let Some(slot) = self.running.iter_mut().find(|r| r.pid == pid).map(|r| {
            r.outliving = true;
            r.slot
        }) else {
            return;
        };
        let outliving = self
            .running
            .iter()
            .filter(|r| r.slot == slot && r.outliving)
            .count();
        let mut excess = outliving.saturating_sub(MAX_OUTLIVING);
        self.running.retain(|r| {
            if excess == 0 || r.slot != slot || !r.outliving {
                return true;
            }
            excess -= 1;
            log::warn!(
                "worker {slot}: a process that worker pid {} left still holds its output; \
                 no longer relaying it (a later worker of the slot left one too)",
                r.pid
            );
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd this relay owns.
            unsafe { libc::write(r.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
            false
        });
    }

    /// Waits until every relay has written all it read, for at most `limit` (a process that a
    /// worker left behind may hold a pipe open).
    pub fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.started > 0 {
            if self.finished.1.recv_deadline(deadline).is_err() {
                return;
            }
            self.started -= 1;
        }
    }
}

/// Whose lines a relay writes.
struct Who {
    /// The cluster slot (picks the colour).
    id: u32,
    /// `3`, or `web.3`.
    label: String,
    /// The group and the id within it, with groups.
    group: Option<(String, u32)>,
}

/// One worker's relay: both pipes until both are closed, or until told to `stop` (then what is
/// left of a line is written, and the pipes closed).
fn relay(who: &Who, format: PrefixFormat, colour: [bool; 2], pipes: [OwnedFd; 2], stop: &OwnedFd) {
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    let mut chunk = vec![0u8; 64 * 1024];
    while open.iter().any(|&o| o) {
        let mut polled: Vec<libc::pollfd> = (0..2)
            .filter(|&s| open[s])
            .map(|s| pipes[s].as_raw_fd())
            .chain([stop.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfd; no timeout.
        if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        if polled.last().is_some_and(|p| p.revents != 0) {
            for (stream, rest) in pending.iter().enumerate() {
                if !rest.is_empty() {
                    let mut out = Vec::new();
                    format_line(&mut out, who, format, colour, stream, rest, false);
                    write_whole(stream, &out);
                }
            }
            return;
        }
        for entry in &polled {
            if entry.revents == 0 || entry.fd == stop.as_raw_fd() {
                continue;
            }
            let stream = if entry.fd == pipes[0].as_raw_fd() {
                0
            } else {
                1
            };
            // SAFETY: reading into a valid buffer from a pipe this thread owns.
            let n = unsafe { libc::read(entry.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Every whole line read goes out in one write: fewer system calls, and under the
            // stream's lock no other worker's line can come between.
            let mut out = Vec::new();
            if n <= 0 {
                open[stream] = false;
                if !pending[stream].is_empty() {
                    let rest = std::mem::take(&mut pending[stream]);
                    format_line(&mut out, who, format, colour, stream, &rest, false);
                }
                write_whole(stream, &out);
                continue;
            }
            let buffer = &mut pending[stream];
            buffer.extend_from_slice(&chunk[..n as usize]);
            let mut start = 0;
            while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
                let line = &buffer[start..start + end];
                format_line(&mut out, who, format, colour, stream, line, false);
                start += end + 1;
                // Many short lines grow with their prefixes (an empty line becomes an object
                // of 80 bytes in JSON): written in batches of about MAX_LINE.
                if out.len() >= MAX_LINE {
                    write_whole(stream, &out);
                    out.clear();
                }
            }
            buffer.drain(..start);
            while buffer.len() > MAX_LINE {
                let piece: Vec<u8> = buffer.drain(..MAX_LINE).collect();
                format_line(&mut out, who, format, colour, stream, &piece, true);
            }
            write_whole(stream, &out);
        }
    }
}

/// Appends one line (or a piece of one, `cut`) to `out`, with its prefix.
fn format_line(
    out: &mut Vec<u8>,
    who: &Who,
    format: PrefixFormat,
    colour: [bool; 2],
    stream: usize,
    line: &[u8],
    cut: bool,
) {
    match format {
        PrefixFormat::Text => {
            let label = &who.label;
            if colour[stream] {
                let _ = write!(out, "\x1b[{}m[{label}]\x1b[0m ", 31 + who.id % 6);
            } else {
                let _ = write!(out, "[{label}] ");
            }
            out.extend_from_slice(line);
            if cut {
                out.extend_from_slice("…".as_bytes());
            }
            out.push(b'\n');
        }
        PrefixFormat::Json => {
            let (worker, group) = match &who.group {
                Some((name, local)) => (*local, crate::text::json_string::quote(name)),
                None => (who.id, "null".to_string()),
            };
            let _ = writeln!(
                out,
                "{{\"ts\":\"{}\",\"worker\":{worker},\"group\":{group},\"stream\":\"{}\",\"line\":{}{}}}",
                humantime::format_rfc3339_micros(SystemTime::now()),
                if stream == 0 { "stdout" } else { "stderr" },
                crate::text::json_string::quote(&String::from_utf8_lossy(line)),
                if cut { ",\"cut\":true" } else { "" }
            );
        }
    }
}

/// Writes recluster's own log lines to stderr under the same lock as the workers' relayed lines,
/// so neither cuts into the other (a relayed write can be larger than the pipe's atomic size).
pub fn write_own_stderr(out: &[u8]) {
    write_whole(1, out);
}

/// Writes whole lines to recluster's stdout (0) or stderr (1) under that stream's lock.
fn write_whole(stream: usize, out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let (lock, fd) = if stream == 0 {
        (&STDOUT, 1)
    } else {
        (&STDERR, 2)
    };
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut written = 0;
    while written < out.len() {
        // SAFETY: writing from a valid buffer to recluster's own stdout or stderr.
        let n = unsafe { libc::write(fd, out[written..].as_ptr().cast(), out.len() - written) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return; // a closed stream (EPIPE): the line has nowhere to go
        }
        written += n as usize;
    }
}
