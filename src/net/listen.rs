//! What `-l/--listen [NAME=]ADDR` means, parsed with `FromStr`: a name for `LISTEN_FDNAMES` and an
//! address — `HOST:PORT`, `[V6]:PORT`, `:PORT` (all interfaces) or `unix:PATH`. Nothing is bound
//! here (see `socket`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// systemd's default name for a socket without `FileDescriptorName=`.
pub const DEFAULT_NAME: &str = "listen";

/// The longest unix socket path (`sun_path` holds 108 bytes with the NUL).
const UNIX_PATH_MAX: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub name: String,
    pub address: ListenAddress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `host` is `None` for `:PORT` (every interface, IPv4 and IPv6).
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Unix(PathBuf),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp { host: None, port } => write!(f, ":{port}"),
            ListenAddress::Tcp {
                host: Some(host),
                port,
                // A host named unix, bare, would read as `unix:PATH`.
            } if host.contains(':') || host == "unix" => write!(f, "[{host}]:{port}"),
            ListenAddress::Tcp {
                host: Some(host),
                port,
            } => write!(f, "{host}:{port}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenSpec, String> {
        // A NAME= prefix has no ':' or '/' before its '=' (an address always has one of them).
        let (name, address) = match text.split_once('=') {
            Some((name, address)) if !name.contains([':', '/']) => (name, address),
            _ => (DEFAULT_NAME, text),
        };
        check_name(name)?;
        Ok(ListenSpec {
            name: name.to_string(),
            address: parse_address(address)?,
        })
    }
}

/// systemd's rule for `LISTEN_FDNAMES`: printable ASCII, no ':', at most 255 characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "the socket name '{name}' must have 1 to 255 characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(' '..='~').contains(&c) || c == ':')
    {
        return Err(format!(
            "the socket name '{name}' has {bad:?}: names are printable ASCII without ':'"
        ));
    }
    Ok(())
}

pub fn parse_address(text: &str) -> Result<ListenAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, as in unix:/run/app.sock".to_string());
        }
        if path.len() > UNIX_PATH_MAX {
            return Err(format!(
                "the unix socket path {path} is longer than {UNIX_PATH_MAX} bytes"
            ));
        }
        return Ok(ListenAddress::Unix(PathBuf::from(path)));
    }
    let hint = "write HOST:PORT, [IPV6]:PORT, :PORT or unix:PATH";
    if let Some((scheme, rest)) = text.split_once("://") {
        return Err(url_is_not_an_address(text, scheme, rest));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{text}' is not an address: {hint}"))?;
        (Some(host), port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' has no port: {hint}"))?;
        if host.contains(':') {
            return Err(format!(
                "'{text}': write an IPv6 address in brackets, as in [::1]:3000"
            ));
        }
        ((!host.is_empty()).then_some(host), port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{port}' in '{text}' is not a port (0 to 65535)"))?;
    if host == Some("") {
        return Err(format!("'{text}' has an empty host: {hint}"));
    }
    // No host has one; shown again, `[[x]:80` would read as another address.
    if host.is_some_and(|h| h.contains(['[', ']'])) {
        return Err(format!("'{text}' has a bracket in its host: {hint}"));
    }
    Ok(ListenAddress::Tcp {
        host: host.map(str::to_string),
        port,
    })
}

/// `http://127.0.0.1:8080/` given where an address goes: the address in it, in the form that
/// works (a scheme's usual port where the URL has none).
fn url_is_not_an_address(text: &str, scheme: &str, rest: &str) -> String {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let suggestion = match (authority.is_empty(), has_port, default_port) {
        (true, _, _) => "HOST:PORT".to_string(),
        (false, true, _) => authority.to_string(),
        (false, false, Some(port)) => format!("{authority}:{port}"),
        (false, false, None) => format!("{authority}:PORT"),
    };
    format!(
        "'{text}' is a URL, not an address: write {suggestion} (HOST:PORT, [IPV6]:PORT, :PORT or unix:PATH)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Option<&str>, port: u16) -> ListenAddress {
        ListenAddress::Tcp {
            host: host.map(str::to_string),
            port,
        }
    }

    #[test]
    fn a_url_is_refused_with_the_address_in_it() {
        for (url, form) in [
            ("http://127.0.0.1:8080", "write 127.0.0.1:8080 "),
            ("http://localhost/", "write localhost:80 "),
            ("https://[::1]/x", "write [::1]:443 "),
            ("tcp://0.0.0.0:9000", "write 0.0.0.0:9000 "),
        ] {
            let err = url.parse::<ListenSpec>().unwrap_err();
            assert!(err.contains("is a URL, not an address"), "{err}");
            assert!(err.contains(form), "{url}: {err}");
            assert!(!err.contains("brackets"), "{err}");
        }
    }

    #[test]
    fn parses_every_form_with_and_without_a_name() {
        let spec: ListenSpec = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(spec.name, "listen");
        assert_eq!(spec.address, tcp(Some("127.0.0.1"), 3000));
        assert_eq!(
            "[::1]:80".parse::<ListenSpec>().unwrap().address,
            tcp(Some("::1"), 80)
        );
        assert_eq!(
            ":8080".parse::<ListenSpec>().unwrap().address,
            tcp(None, 8080)
        );
        let named: ListenSpec = "http=localhost:80".parse().unwrap();
        assert_eq!(
            (named.name.as_str(), named.address),
            ("http", tcp(Some("localhost"), 80))
        );
        let unix: ListenSpec = "admin=unix:/run/a=b.sock".parse().unwrap();
        assert_eq!(unix.name, "admin");
        assert_eq!(unix.address, ListenAddress::Unix("/run/a=b.sock".into()));
        let unnamed: ListenSpec = "unix:/tmp/x=y".parse().unwrap();
        assert_eq!(unnamed.name, "listen");
    }

    #[test]
    fn rejects_what_is_not_an_address_with_a_hint() {
        for bad in [
            "3000",
            "host:",
            "host:99999",
            "::1:80",
            "[::1]80",
            "unix:",
            "a:b=:80",
            "=:80",
            // Found by fuzz/fuzz_targets/listen_address.rs: shown as "[x(xx:80", not an address.
            "[[x(xx]:80",
            "a]b:80",
        ] {
            let err = bad.parse::<ListenSpec>().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            "::1:80"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("brackets")
        );
    }

    #[test]
    fn displays_addresses_as_written() {
        // [unix]:8 was shown as unix:8, the unix socket 8 (found by fuzzing).
        for text in [
            "127.0.0.1:3000",
            "[::1]:80",
            ":8080",
            "unix:/tmp/s",
            "[unix]:8",
        ] {
            assert_eq!(
                text.parse::<ListenSpec>().unwrap().address.to_string(),
                text
            );
        }
    }
}
