//! Signals as values: `Sig` parses the forms users type (`TERM`, `SIGTERM`, `15`, `RTMIN+2`) and
//! prints the conventional name in logs. Nothing here sends or receives a signal.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal number, valid on this system (1..=SIGRTMAX).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Sig(i32);

impl Sig {
    pub const HUP: Sig = Sig(libc::SIGHUP);
    pub const INT: Sig = Sig(libc::SIGINT);
    pub const QUIT: Sig = Sig(libc::SIGQUIT);
    pub const ABRT: Sig = Sig(libc::SIGABRT);
    pub const KILL: Sig = Sig(libc::SIGKILL);
    pub const TERM: Sig = Sig(libc::SIGTERM);
    pub const CHLD: Sig = Sig(libc::SIGCHLD);
    pub const CONT: Sig = Sig(libc::SIGCONT);
    pub const STOP: Sig = Sig(libc::SIGSTOP);
    pub const TSTP: Sig = Sig(libc::SIGTSTP);
    pub const TTIN: Sig = Sig(libc::SIGTTIN);
    pub const TTOU: Sig = Sig(libc::SIGTTOU);

    /// The signal with this number, if the system has one.
    pub fn from_number(number: i32) -> Option<Sig> {
        (1..=libc::SIGRTMAX())
            .contains(&number)
            .then_some(Sig(number))
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// Signals that only pause or resume a process: never a way to stop one.
    pub fn is_job_control(self) -> bool {
        [Sig::STOP, Sig::TSTP, Sig::TTIN, Sig::TTOU, Sig::CONT].contains(&self)
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Ok(signal) = Signal::try_from(self.0) {
            return f.write_str(signal.as_str());
        }
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        match self.0 {
            n if n == min => f.write_str("SIGRTMIN"),
            n if n == max => f.write_str("SIGRTMAX"),
            n if n > min && n < max => write!(f, "SIGRTMIN+{}", n - min),
            n => write!(f, "signal {n}"),
        }
    }
}

/// Why a text is not a signal.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownSignal(String);

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a signal: give a name such as TERM, SIGUSR1, RTMIN+1 or a number from 1 to {}",
            self.0,
            libc::SIGRTMAX()
        )
    }
}

impl std::error::Error for UnknownSignal {}

impl FromStr for Sig {
    type Err = UnknownSignal;

    fn from_str(text: &str) -> Result<Sig, UnknownSignal> {
        let unknown = || UnknownSignal(text.to_string());
        if let Ok(number) = text.parse::<i32>() {
            return Sig::from_number(number).ok_or_else(unknown);
        }
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(number) = parse_realtime(bare) {
            return Sig::from_number(number).ok_or_else(unknown);
        }
        Signal::from_str(&format!("SIG{bare}"))
            .map(|signal| Sig(signal as i32))
            .map_err(|_| unknown())
    }
}

/// `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n`, within the real-time range.
fn parse_realtime(bare: &str) -> Option<i32> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Option<i32> {
        match rest.strip_prefix(sign) {
            None if rest.is_empty() => Some(0),
            Some(n) => n.parse::<i32>().ok(),
            None => None,
        }
    };
    let number = if let Some(rest) = bare.strip_prefix("RTMIN") {
        min.checked_add(offset(rest, '+')?)?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        max.checked_sub(offset(rest, '-')?)?
    } else {
        return None;
    };
    (min..=max).contains(&number).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix_and_numbers() {
        assert_eq!("TERM".parse(), Ok(Sig::TERM));
        assert_eq!("sigterm".parse(), Ok(Sig::TERM));
        assert_eq!("SIGUSR1".parse::<Sig>().unwrap().number(), libc::SIGUSR1);
        assert_eq!("9".parse(), Ok(Sig::KILL));
        assert_eq!(
            "RTMIN+2".parse::<Sig>().unwrap().number(),
            libc::SIGRTMIN() + 2
        );
        assert_eq!("RTMAX".parse::<Sig>().unwrap().number(), libc::SIGRTMAX());
    }

    #[test]
    fn rejects_unknown_and_out_of_range() {
        // The last two overflowed i32 (a panic where overflow is checked; found by
        // tests/parsers.rs).
        for bad in [
            "",
            "0",
            "-1",
            "999",
            "FOO",
            "SIG",
            "RTMIN+99",
            "RTMIN-1",
            "RTMIN+2147483647",
            "RTMAX--2147483648",
        ] {
            assert!(bad.parse::<Sig>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn displays_conventional_names() {
        assert_eq!(Sig::TERM.to_string(), "SIGTERM");
        assert_eq!(
            Sig::from_number(libc::SIGRTMIN() + 1).unwrap().to_string(),
            "SIGRTMIN+1"
        );
    }
}
