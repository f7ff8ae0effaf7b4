//! Just enough HTTP/1.x for a read-only endpoint: a request head (request line and headers, at
//! most `MAX_HEAD` bytes) is parsed into a `Request`; a `Response` is written whole, with
//! `Connection: close`. The Host check refuses names that are not the address recluster listens
//! on: a page on another site cannot reach the endpoint through a DNS name that it points at
//! 127.0.0.1 (DNS rebinding), since the browser then sends that name as Host.

use std::net::IpAddr;

use crate::net::listen::ListenAddress;

/// The longest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: Option<String>,
    pub accept: String,
    /// HTTP/1.0: Host is optional there.
    pub http10: bool,
}

/// Where the head ends (the index after its blank line), if it is complete.
pub fn head_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Parses a complete head; `Err` is the response to send.
pub fn parse(head: &[u8]) -> Result<Request, Response> {
    let text =
        std::str::from_utf8(head).map_err(|_| Response::text(400, "the request is not text\n"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "a malformed request line\n"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Err(Response::text(
                505,
                "only HTTP/1.0 and HTTP/1.1 are spoken here\n",
            ));
        }
    };
    let mut host = None;
    let mut accept = String::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Response::text(400, "a malformed header line\n"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(Response::text(400, "more than one Host header\n"));
            }
            host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("accept") {
            accept = value.to_string();
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        host,
        accept,
        http10,
    })
}

/// Whether a request's `Host` may be served by the endpoint at `address`: `localhost`, the host
/// recluster was told to listen on, a loopback IP where it listens on loopback, or any IP literal
/// where it listens on every interface (a kubelet or Prometheus names the pod by its IP). A DNS
/// name other than those is refused.
pub fn host_allowed(host: Option<&str>, http10: bool, address: &ListenAddress) -> bool {
    let Some(host) = host else {
        return http10;
    };
    let name = strip_port(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal: Option<IpAddr> = name.parse().ok();
    match address {
        ListenAddress::Unix(_) => literal.is_some_and(|ip| ip.is_loopback()),
        ListenAddress::Tcp { host: None, .. } => literal.is_some(),
        ListenAddress::Tcp {
            host: Some(configured),
            ..
        } => {
            if name.eq_ignore_ascii_case(configured) {
                return true;
            }
            let configured: Option<IpAddr> = configured.parse().ok();
            match (literal, configured) {
                (Some(_), Some(bound)) if bound.is_unspecified() => true,
                (Some(ip), Some(bound)) => ip == bound || (ip.is_loopback() && bound.is_loopback()),
                _ => false,
            }
        }
    }
}

/// `host:port`, `[v6]:port`, `host` → the host part, without brackets.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The status line and headers, up to the blank line.
    pub fn head(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes()
    }

    /// The whole response; `head_only` for HEAD.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = self.head();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Option<&str>) -> ListenAddress {
        ListenAddress::Tcp {
            host: host.map(str::to_string),
            port: 9000,
        }
    }

    #[test]
    fn parses_a_request_head() {
        let head =
            b"GET /readyz?verbose HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nAccept: text/plain\r\n\r\n";
        let request = parse(&head[..head_end(head).unwrap()]).unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/readyz");
        assert_eq!(request.query, "verbose");
        assert_eq!(request.host.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n").unwrap_err().status, 505);
        assert_eq!(parse(b"GET /\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn only_the_listening_address_localhost_and_ip_literals_pass_the_host_check() {
        let loopback = tcp(Some("127.0.0.1"));
        assert!(host_allowed(Some("127.0.0.1:9000"), false, &loopback));
        assert!(host_allowed(Some("localhost:9000"), false, &loopback));
        assert!(host_allowed(Some("[::1]:9000"), false, &loopback));
        assert!(
            !host_allowed(Some("evil.example:9000"), false, &loopback),
            "DNS rebinding"
        );
        assert!(!host_allowed(Some("10.0.0.5:9000"), false, &loopback));
        assert!(
            !host_allowed(None, false, &loopback),
            "HTTP/1.1 needs a Host"
        );
        assert!(host_allowed(None, true, &loopback));
        let every = tcp(None);
        assert!(
            host_allowed(Some("10.1.2.3:9000"), false, &every),
            "a kubelet names the pod IP"
        );
        assert!(!host_allowed(Some("attacker.example"), false, &every));
        let named = tcp(Some("admin.internal"));
        assert!(host_allowed(Some("admin.internal:9000"), false, &named));
        assert!(!host_allowed(Some("other.internal:9000"), false, &named));
    }
}
