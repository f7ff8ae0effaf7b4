//! What the two sides of the message channel share: a worker's line and where it goes (`parse`),
//! the records the spawning side writes on the thread's control socket (`REGISTER`, `FORGET`)
//! and the orders it queues (`Command`), and what the thread refused, by reason (`Counters`,
//! `Drops`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::frontend::request::Target;
use crate::supervisor::snapshot::MessageCounts;

/// The longest message, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Messages dropped for each slot whose queue was full, by `WORKER_ID`.
pub type Drops = Arc<Mutex<HashMap<u32, u64>>>;

/// What the thread refused, by reason, since the start (every worker together).
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) too_long: AtomicU64,
    pub(super) invalid: AtomicU64,
    pub(super) busy: AtomicU64,
    pub(super) queue_full: AtomicU64,
    pub(super) throttled: AtomicU64,
}

impl Counters {
    pub fn read(&self) -> MessageCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MessageCounts {
            too_long: get(&self.too_long),
            invalid: get(&self.invalid),
            busy: get(&self.busy),
            queue_full: get(&self.queue_full),
            throttled: get(&self.throttled),
        }
    }

    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) enum Command {
    /// `recluster ctl send`.
    Deliver { to: Target, data: Value },
}

/// What the spawning side tells the thread on the control socket, one message each (a spawn or
/// an exit costs one `sendmsg`): `r`, the token, the slot and the pid of a worker just started,
/// with recluster's end of its pair attached; `f` and the pid of a worker that ended; `w`, look
/// at the channels.
pub(super) const REGISTER: u8 = b'r';
pub(super) const FORGET: u8 = b'f';
pub(super) const REGISTER_LEN: usize = 1 + 8 + 4 + 4;

/// A worker's message: where to, and what.
pub fn parse(bytes: &[u8]) -> Result<(Target, Value), String> {
    let value: Value = crate::text::strict_json::from_slice(bytes).map_err(|e| {
        format!("a message is one JSON object, {{\"to\": TARGET, \"data\": ANY}} ({e})")
    })?;
    let Value::Object(mut object) = value else {
        return Err("a message is one JSON object, {\"to\": TARGET, \"data\": ANY}".to_string());
    };
    let to = object
        .get("to")
        .and_then(Value::as_str)
        .ok_or("a message needs \"to\": all, others, worker:ID, group:NAME or recluster")?
        .parse()?;
    Ok((to, object.remove("data").unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_parse_and_mistakes_are_named() {
        assert_eq!("all".parse(), Ok(Target::All));
        assert_eq!("others".parse(), Ok(Target::Others));
        assert_eq!("worker:3".parse(), Ok(Target::Worker(3)));
        assert_eq!("group:web".parse(), Ok(Target::Group("web".to_string())));
        assert_eq!(
            "worker:web.2".parse(),
            Ok(Target::GroupWorker("web".to_string(), 2))
        );
        assert!(
            "worker:x"
                .parse::<Target>()
                .unwrap_err()
                .contains("not a WORKER_ID")
        );
        assert!(
            "everyone"
                .parse::<Target>()
                .unwrap_err()
                .contains("not a target")
        );
    }

    #[test]
    fn a_message_names_its_target_and_carries_any_data() {
        let (to, data) =
            parse(br#"{"to":"worker:1","data":{"k":[1,2]},"from":{"id":99}}"#).unwrap();
        assert_eq!(to, Target::Worker(1));
        assert_eq!(data, json!({"k": [1, 2]}));
        assert!(parse(b"[1]").is_err());
        assert!(
            parse(br#"{"to":"worker:1","to":"all","data":1}"#)
                .unwrap_err()
                .contains("\"to\" appears twice")
        );
        assert!(
            parse(br#"{"data":1}"#)
                .unwrap_err()
                .contains("needs \"to\"")
        );
    }
}
