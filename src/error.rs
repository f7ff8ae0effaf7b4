//! recluster's own failures, each named after what failed, and the exit code each gives.
//! `Display` texts are lowercase fragments; `main` prints them as `recluster: error: …`.

use std::fmt;
use std::io;

use crate::exit_code;
use crate::net::socket::BindError;
use crate::process::command::CommandError;

#[derive(Debug)]
pub enum Error {
    /// A bad flag or value; the text names the flag.
    Usage(String),
    /// The command cannot be run (126 / 127).
    Command(CommandError),
    /// A listening socket could not be bound (or an inherited one is not a socket).
    Bind(BindError),
    /// A system call recluster needs failed before or while running the cluster.
    System {
        doing: &'static str,
        source: io::Error,
    },
}

impl Error {
    pub fn system(doing: &'static str, source: impl Into<io::Error>) -> Error {
        Error::System {
            doing,
            source: source.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::Command(e) => e.exit_code(),
            Error::Bind(_) | Error::System { .. } => exit_code::FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => f.write_str(message),
            Error::Command(e) => e.fmt(f),
            Error::Bind(e) => e.fmt(f),
            Error::System { doing, source } => write!(f, "failed to {doing}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Error {
        Error::Command(e)
    }
}
