//! The control protocol, version 1, as both sides speak it: a request is one JSON object on one
//! line (`{"v":1,"cmd":"status"}`), at most `MAX_LINE` bytes; every answer line is one JSON
//! object. A request gets zero or more progress lines (`{"v":1,"progress":"…"}`) or event lines
//! (`{"v":1,"event":"ready",…}`), then one final line with `"ok"` (`true`, with the result, or
//! `false` with `"error"`). `events` never ends with a final line: it streams until the client
//! closes. The README documents every command and field.

use serde_json::{Map, Value, json};

use crate::frontend::request::{Request, ScaleBy, Target, WorkerRef, target_name};
use crate::process::signal::Sig;

pub const VERSION: u64 = 1;

/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 64 * 1024;

// The wire form of the neutral `Request` belongs to the protocol, so its `impl` lives here.
impl Request {
    /// The request as a line, without the newline.
    pub fn to_line(&self) -> String {
        let mut object = Map::new();
        object.insert("v".into(), json!(VERSION));
        let (cmd, wait) = match self {
            Request::Hello => ("hello", None),
            Request::Status => ("status", None),
            Request::Scale { by, group, wait } => {
                object.insert("workers".into(), json!(by.to_string()));
                if let Some(group) = group {
                    object.insert("group".into(), json!(group));
                }
                ("scale", Some(*wait))
            }
            Request::Restart { ids, wait } => {
                let ids: Vec<Value> = ids.iter().map(worker_json).collect();
                object.insert("ids".into(), json!(ids));
                ("restart", Some(*wait))
            }
            Request::Signal { signal, ids } => {
                // Its number: 32 and 33 have no name that parses.
                object.insert("signal".into(), json!(signal.number().to_string()));
                let ids: Vec<Value> = ids.iter().map(worker_json).collect();
                object.insert("ids".into(), json!(ids));
                ("signal", None)
            }
            Request::Reload { wait } => ("reload", Some(*wait)),
            Request::Stop { wait } => ("stop", Some(*wait)),
            Request::Events => ("events", None),
            Request::Send { to, data } => {
                object.insert("to".into(), json!(target_name(to)));
                object.insert("data".into(), data.clone());
                ("send", None)
            }
        };
        object.insert("cmd".into(), json!(cmd));
        if let Some(wait) = wait {
            object.insert("wait".into(), json!(wait));
        }
        Value::Object(object).to_string()
    }
}

/// A worker reference as a request line writes it: a bare id as a number.
fn worker_json(worker: &WorkerRef) -> Value {
    match worker {
        WorkerRef::Id(id) => json!(id),
        WorkerRef::InGroup(..) | WorkerRef::Group(_) => json!(worker.to_string()),
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: Value = crate::text::strict_json::from_slice(line)
        .map_err(|e| format!("not a JSON request ({e}); send one object per line, like {{\"v\":1,\"cmd\":\"status\"}}"))?;
    let Value::Object(object) = value else {
        return Err("a request is a JSON object, like {\"v\":1,\"cmd\":\"status\"}".to_string());
    };
    match object.get("v") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "protocol version {v} is not supported: this recluster speaks version {VERSION}"
            ));
        }
        None => return Err(format!("the request has no \"v\": send \"v\":{VERSION}")),
    }
    let cmd = object
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or("the request has no \"cmd\" string")?;
    let wait = match object.get("wait") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(wait)) => *wait,
        Some(_) => return Err("\"wait\" must be true or false".to_string()),
    };
    let ids = || -> Result<Vec<WorkerRef>, String> {
        match object.get("ids") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.parse(),
                    _ => item
                        .as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .map(WorkerRef::Id)
                        .ok_or_else(|| format!("\"ids\" holds {item}, which is not a WORKER_ID")),
                })
                .collect(),
            Some(_) => Err("\"ids\" must be an array of WORKER_IDs".to_string()),
        }
    };
    Ok(match cmd {
        "hello" => Request::Hello,
        "status" => Request::Status,
        "scale" => {
            let by = match object.get("workers") {
                Some(Value::String(text)) => text.parse()?,
                Some(Value::Number(n)) => ScaleBy::To(
                    n.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(format!("{n} is not a worker count"))?,
                ),
                _ => return Err("scale needs \"workers\": N, \"+K\" or \"-K\"".to_string()),
            };
            let group = match object.get("group") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name.clone()),
                Some(_) => return Err("\"group\" must be a group's name".to_string()),
            };
            Request::Scale { by, group, wait }
        }
        "restart" => {
            let ids = ids()?;
            if ids.is_empty() {
                return Err("restart needs \"ids\": the WORKER_IDs to restart".to_string());
            }
            Request::Restart { ids, wait }
        }
        "signal" => {
            let signal = object
                .get("signal")
                .and_then(Value::as_str)
                .ok_or("signal needs \"signal\": a name like \"USR1\" or a number")?;
            let signal: Sig = signal.parse().map_err(|e| format!("{e}"))?;
            Request::Signal {
                signal,
                ids: ids()?,
            }
        }
        "reload" => Request::Reload { wait },
        "stop" => Request::Stop { wait },
        "events" => Request::Events,
        "send" => {
            let to = object.get("to").and_then(Value::as_str).ok_or(
                "send needs \"to\": all, others, worker:ID, group:NAME or worker:GROUP.ID",
            )?;
            let to: Target = to.parse()?;
            if to == Target::Recluster {
                return Err("send delivers to workers, not to recluster".to_string());
            }
            Request::Send {
                to,
                data: object.get("data").cloned().unwrap_or(Value::Null),
            }
        }
        other => {
            return Err(format!(
                "unknown command \"{other}\": use status, scale, restart, signal, reload, stop, events or send"
            ));
        }
    })
}

/// The final line of a request that succeeded, with `fields` beside `"ok":true`.
pub fn ok(fields: Value) -> String {
    let mut object = Map::new();
    object.insert("v".into(), json!(VERSION));
    object.insert("ok".into(), json!(true));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object).to_string()
}

/// The final line of a request that failed or was refused.
pub fn error(message: &str) -> String {
    json!({"v": VERSION, "ok": false, "error": message}).to_string()
}

/// A progress line of a request that waits.
pub fn progress(message: &str) -> String {
    json!({"v": VERSION, "progress": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_survives_a_round_trip() {
        let requests = [
            Request::Hello,
            Request::Status,
            Request::Scale {
                by: ScaleBy::Down(2),
                group: None,
                wait: true,
            },
            Request::Scale {
                by: ScaleBy::To(8),
                group: Some("web".to_string()),
                wait: false,
            },
            Request::Restart {
                ids: vec![WorkerRef::Id(0), WorkerRef::InGroup("web".to_string(), 3)],
                wait: true,
            },
            Request::Signal {
                signal: Sig::HUP,
                ids: vec![],
            },
            Request::Reload { wait: true },
            Request::Stop { wait: false },
            Request::Events,
            Request::Send {
                to: Target::Worker(2),
                data: json!({"flush": ["a"]}),
            },
        ];
        for request in requests {
            assert_eq!(parse_request(request.to_line().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn a_signal_without_a_name_survives_a_round_trip() {
        // Found by fuzz/fuzz_targets/control_request.rs: 32 and 33 are below SIGRTMIN and have no
        // name; `ctl signal 33` sent "signal 33", which the server refused.
        for number in 1..=libc::SIGRTMAX() {
            let request = Request::Signal {
                signal: Sig::from_number(number).unwrap(),
                ids: vec![],
            };
            assert_eq!(parse_request(request.to_line().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("garbage", "not a JSON request"),
            ("[1]", "a request is a JSON object"),
            ("{\"cmd\":\"status\"}", "has no \"v\""),
            ("{\"v\":2,\"cmd\":\"status\"}", "version 2 is not supported"),
            ("{\"v\":1}", "no \"cmd\""),
            (
                "{\"v\":1,\"cmd\":\"status\",\"cmd\":\"stop\"}",
                "\"cmd\" appears twice",
            ),
            ("{\"v\":1,\"cmd\":\"dance\"}", "unknown command \"dance\""),
            ("{\"v\":1,\"cmd\":\"scale\"}", "scale needs"),
            (
                "{\"v\":1,\"cmd\":\"scale\",\"workers\":\"x\"}",
                "not a worker count",
            ),
            (
                "{\"v\":1,\"cmd\":\"restart\",\"ids\":[-1]}",
                "not a WORKER_ID",
            ),
            ("{\"v\":1,\"cmd\":\"signal\",\"signal\":\"NOPE\"}", "NOPE"),
            (
                "{\"v\":1,\"cmd\":\"reload\",\"wait\":1}",
                "\"wait\" must be",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_request(line.as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{line}: {error}");
        }
    }

    #[test]
    fn scale_targets_stay_in_range() {
        assert_eq!(ScaleBy::Up(2).target(3), Some(5));
        assert_eq!(ScaleBy::Down(3).target(3), None);
        assert_eq!(ScaleBy::To(7).target(3), Some(7));
        assert_eq!("+2".parse(), Ok(ScaleBy::Up(2)));
        assert_eq!("-1".parse(), Ok(ScaleBy::Down(1)));
        assert!("two".parse::<ScaleBy>().is_err());
    }
}
