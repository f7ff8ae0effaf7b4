//! A notify datagram, as a worker (or anything in its tree) sends it (`notify::Message::parse`).
//! Properties: no panic; the status is one line, no longer than the datagram once invalid UTF-8
//! is replaced; READY and WATCHDOG_USEC only where the datagram says them; the message written
//! back as lines parses to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::worker_io::notify::{Message, Watchdog};

fuzz_target!(|data: &[u8]| {
    let message = Message::parse(data);
    if let Some(status) = &message.status {
        assert!(status.len() <= 3 * data.len());
        assert!(!status.contains('\n'));
    }
    if message.ready {
        assert!(data.windows(7).any(|w| w == b"READY=1"));
    }
    if let Some(Watchdog::Interval(_)) = message.watchdog {
        assert!(data.windows(14).any(|w| w == b"WATCHDOG_USEC="));
    }
    // Written back as lines, the same message.
    let mut lines = Vec::new();
    if message.ready {
        lines.push("READY=1".to_string());
    }
    if message.stopping {
        lines.push("STOPPING=1".to_string());
    }
    if let Some(status) = &message.status {
        lines.push(format!("STATUS={status}"));
    }
    match message.watchdog {
        Some(Watchdog::Ping) => lines.push("WATCHDOG=1".to_string()),
        Some(Watchdog::Trigger) => lines.push("WATCHDOG=trigger".to_string()),
        Some(Watchdog::Interval(usec)) => lines.push(format!("WATCHDOG_USEC={usec}")),
        None => {}
    }
    let again = Message::parse(lines.join("\n").as_bytes());
    // A status ending in '\r' loses it when a line follows ("\r\n" ends a line).
    if !message.status.as_deref().is_some_and(|s| s.ends_with('\r')) {
        assert_eq!(again, message);
    }
});
