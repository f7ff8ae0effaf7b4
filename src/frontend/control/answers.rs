//! How `recluster ctl` reads a server's answer lines: never more than `MAX_LINE` bytes for one
//! line, and never longer than a deadline, so a broken or hostile server can neither grow `ctl`'s
//! memory nor keep it waiting forever. A plain answer has `ANSWER_TIMEOUT` in all; a stream
//! (`events`, `--wait`) may pause between lines as long as it likes, but a line once begun must
//! end within `ANSWER_TIMEOUT`.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The longest answer line read, newline included: a status of 28,000 workers fits, or of
/// 4,600 whose `STATUS=` texts (cut to 256 bytes) are all control characters, escaped.
pub const MAX_LINE: usize = 8 << 20;

/// How long an answer that needs no waiting may take, and a line of a stream once begun.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// When the next line must be complete.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    /// By this instant.
    At(Instant),
    /// Within this long of its first byte (no limit before that).
    OnceBegun(Duration),
}

#[derive(Debug)]
pub enum ReadError {
    /// The line had reached `MAX_LINE` bytes without its newline.
    TooLong,
    /// The deadline passed before the line was whole.
    TimedOut,
    Io(io::Error),
}

/// The answer lines arriving on a stream.
pub struct Lines {
    stream: UnixStream,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    /// When the first byte of the line in `buffer` came.
    begun: Option<Instant>,
    ended: bool,
}

impl Lines {
    pub fn new(stream: UnixStream) -> Lines {
        Lines {
            stream,
            buffer: Vec::new(),
            scanned: 0,
            begun: None,
            ended: false,
        }
    }

    /// The next line, without its newline; `None` once the server closed the connection (a
    /// last line without a newline is still returned).
    pub fn next_line(&mut self, deadline: Deadline) -> Result<Option<Vec<u8>>, ReadError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(at) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + at;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                self.begun = (!self.buffer.is_empty()).then(Instant::now);
                return Ok(Some(line));
            }
            self.scanned = self.buffer.len();
            if self.buffer.len() >= MAX_LINE {
                return Err(ReadError::TooLong);
            }
            if self.ended {
                self.begun = None;
                self.scanned = 0;
                return Ok((!self.buffer.is_empty()).then(|| std::mem::take(&mut self.buffer)));
            }
            let until = match deadline {
                Deadline::At(at) => Some(at),
                Deadline::OnceBegun(within) => self.begun.map(|begun| begun + within),
            };
            let timeout = match until {
                Some(until) => match until.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(ReadError::TimedOut),
                },
                None => None,
            };
            self.stream
                .set_read_timeout(timeout)
                .map_err(ReadError::Io)?;
            let room = chunk.len().min(MAX_LINE - self.buffer.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    if self.buffer.is_empty() {
                        self.begun = Some(Instant::now());
                    }
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn soon() -> Deadline {
        Deadline::At(Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn lines_come_whole_and_a_last_one_without_newline_too() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"{\"a\":1}\n\n{\"b\"").unwrap();
        theirs.write_all(b":2}\nlast").unwrap();
        drop(theirs);
        let mut lines = Lines::new(ours);
        assert_eq!(lines.next_line(soon()).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(lines.next_line(soon()).unwrap().unwrap(), b"");
        assert_eq!(lines.next_line(soon()).unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(lines.next_line(soon()).unwrap().unwrap(), b"last");
        assert!(lines.next_line(soon()).unwrap().is_none());
    }

    #[test]
    fn a_line_that_never_ends_stops_at_the_limit() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let block = vec![b'x'; 1 << 20];
            while theirs.write_all(&block).is_ok() {}
        });
        let mut lines = Lines::new(ours);
        assert!(matches!(lines.next_line(soon()), Err(ReadError::TooLong)));
        assert!(lines.buffer.len() <= MAX_LINE);
        drop(lines);
        writer.join().unwrap();
    }

    #[test]
    fn a_deadline_bounds_a_trickle_and_a_begun_line() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"{\"partial\":").unwrap();
        let mut lines = Lines::new(ours);
        let started = Instant::now();
        let at = Deadline::At(started + Duration::from_millis(200));
        assert!(matches!(lines.next_line(at), Err(ReadError::TimedOut)));
        let begun = Deadline::OnceBegun(Duration::from_millis(200));
        assert!(matches!(lines.next_line(begun), Err(ReadError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Between lines a stream may be quiet: only a begun line has a deadline.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            theirs.write_all(b"{}\n").unwrap();
        });
        let mut lines = Lines::new(ours);
        assert_eq!(lines.next_line(begun).unwrap().unwrap(), b"{}");
        writer.join().unwrap();
    }
}
