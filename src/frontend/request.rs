//! The neutral vocabulary of asking recluster, which every front end speaks and the supervisor
//! answers: the `Request` the control socket, the admin endpoint and the message thread turn their
//! input into, how it names workers (`WorkerRef`), counts (`ScaleBy`) and message targets
//! (`Target`), and the `Frontend` its answer goes back to. It imports none of them, so each can
//! depend on it; the wire format is `control::protocol`'s.

use std::str::FromStr;

use serde_json::Value;

use crate::process::signal::Sig;

/// How the answer to a `Send` that found the message thread's queue full begins: `ctl send`
/// tries again for a while when it reads it.
pub const SEND_BUSY: &str = "the message thread is busy";

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Who is there: pid and name (what `ctl` uses to find a cluster).
    Hello,
    Status,
    /// With groups, `group` names the one to scale (none: every group that can).
    Scale {
        by: ScaleBy,
        group: Option<String>,
        wait: bool,
    },
    Restart {
        ids: Vec<WorkerRef>,
        wait: bool,
    },
    Signal {
        signal: Sig,
        ids: Vec<WorkerRef>,
    },
    Reload {
        wait: bool,
    },
    Stop {
        wait: bool,
    },
    Events,
    /// Deliver `data` to the workers `to` names, from `{"ctl": true}`.
    Send {
        to: Target,
        data: Value,
    },
}

impl Request {
    /// Whether it changes the cluster (and is logged with who asked).
    /// (`send` changes nothing: a message service may send many, and each would be a log line.)
    pub fn changes_something(&self) -> bool {
        !matches!(
            self,
            Request::Hello | Request::Status | Request::Events | Request::Send { .. }
        )
    }
}

/// A worker as a request names it: `3`, or with Procfile groups `web.3`; `web.*` is every
/// worker of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerRef {
    Id(u32),
    InGroup(String, u32),
    Group(String),
}

impl std::str::FromStr for WorkerRef {
    type Err = String;

    fn from_str(text: &str) -> Result<WorkerRef, String> {
        let id = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                format!("'{text}' is not a worker: write its WORKER_ID (3), or GROUP.ID (web.3) with groups")
            })
        };
        match text.rsplit_once('.') {
            Some((group, "*")) if !group.is_empty() => Ok(WorkerRef::Group(group.to_string())),
            Some((group, n)) if !group.is_empty() => {
                Ok(WorkerRef::InGroup(group.to_string(), id(n)?))
            }
            _ => Ok(WorkerRef::Id(id(text)?)),
        }
    }
}

impl std::fmt::Display for WorkerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerRef::Id(id) => write!(f, "{id}"),
            WorkerRef::InGroup(group, id) => write!(f, "{group}.{id}"),
            WorkerRef::Group(group) => write!(f, "{group}.*"),
        }
    }
}

/// `scale N`, `scale +K`, `scale -K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleBy {
    To(u32),
    Up(u32),
    Down(u32),
}

impl ScaleBy {
    /// The count it asks for, from `current`; `None` when that is below 1 or overflows.
    pub fn target(self, current: u32) -> Option<u32> {
        match self {
            ScaleBy::To(n) => Some(n),
            ScaleBy::Up(k) => current.checked_add(k),
            ScaleBy::Down(k) => current.checked_sub(k).filter(|&n| n > 0),
        }
    }
}

impl std::str::FromStr for ScaleBy {
    type Err = String;

    fn from_str(text: &str) -> Result<ScaleBy, String> {
        let number = |digits: &str| {
            digits.parse::<u32>().map_err(|_| {
                format!("'{text}' is not a worker count: write N, +K or -K (for example 4, +2, -1)")
            })
        };
        match text.as_bytes().first() {
            Some(b'+') => number(&text[1..]).map(ScaleBy::Up),
            Some(b'-') => number(&text[1..]).map(ScaleBy::Down),
            _ => number(text).map(ScaleBy::To),
        }
    }
}

impl std::fmt::Display for ScaleBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleBy::To(n) => write!(f, "{n}"),
            ScaleBy::Up(k) => write!(f, "+{k}"),
            ScaleBy::Down(k) => write!(f, "-{k}"),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Others,
    Worker(u32),
    Group(String),
    GroupWorker(String, u32),
    Recluster,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        let id = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("'{s}' in '{text}' is not a WORKER_ID"))
        };
        match text {
            "all" => Ok(Target::All),
            "others" => Ok(Target::Others),
            "recluster" => Ok(Target::Recluster),
            _ => {
                if let Some(group) = text.strip_prefix("group:").filter(|g| !g.is_empty()) {
                    return Ok(Target::Group(group.to_string()));
                }
                if let Some(rest) = text.strip_prefix("worker:") {
                    return match rest.rsplit_once('.') {
                        Some((group, n)) if !group.is_empty() => {
                            Ok(Target::GroupWorker(group.to_string(), id(n)?))
                        }
                        _ => Ok(Target::Worker(id(rest)?)),
                    };
                }
                Err(format!(
                    "'{text}' is not a target: write all, others, worker:ID, group:NAME, worker:GROUP.ID or recluster"
                ))
            }
        }
    }
}

/// A target as it is written (`worker:3`).
pub fn target_name(target: &Target) -> String {
    match target {
        Target::All => "all".to_string(),
        Target::Others => "others".to_string(),
        Target::Worker(id) => format!("worker:{id}"),
        Target::Group(name) => format!("group:{name}"),
        Target::GroupWorker(name, id) => format!("worker:{name}.{id}"),
        Target::Recluster => "recluster".to_string(),
    }
}

/// Which thread a request came from, and so where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// The control socket (`recluster ctl`).
    Control,
    /// The `--admin` HTTP endpoint.
    Admin,
    /// The message thread, asking for `info` on a worker's behalf.
    Messages,
}
