//! `recluster ctl`: find a running cluster's control socket, send one request, print the answer.
//! Exit status: 0 it took, 1 it failed (the reason on stderr), 2 usage, 3 no cluster reachable.
//! With `--wait`, progress lines go to stderr (a terminal's or a CI log's alike). `discovery` finds the
//! socket; ctl talks only to what `trust` accepts, reads answers through `answers` (bounded in
//! size and time), and prints
//! everything a server or a worker wrote with control characters escaped (`escape`).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use super::answers::{self, ANSWER_TIMEOUT, Deadline, Lines, ReadError};
use super::discovery::{self, NotFound};
use super::trust;
use crate::frontend::request::{self, Request, ScaleBy, Target, WorkerRef};
use crate::logging::print_error;
use crate::process::signal::Sig;
use crate::text::{escape, strict_json};

/// `ctl`'s own exit statuses (CONTRACT.md and the README).
pub mod exit {
    /// It took.
    pub const OK: i32 = 0;
    /// It failed: the cluster refused it, or the outcome `--wait` waited for did not come.
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    /// No cluster could be reached (none running, permission denied, not answering).
    pub const UNREACHABLE: i32 = 3;
}

/// See and steer a running recluster through its control socket
#[derive(Parser, Debug)]
#[command(
    name = "recluster ctl",
    version,
    max_term_width = 100,
    after_help = "Exit status: 0 it took; 1 it failed (the reason on stderr); 2 usage error; 3 no cluster reachable.\n\nWithout --pid, --name or --control (before or after the verb), ctl finds the only cluster this user runs."
)]
pub struct CtlCli {
    /// The cluster whose recluster has this pid
    #[arg(long, value_name = "PID", global = true, conflicts_with_all = ["name", "control"])]
    pub pid: Option<u32>,

    /// The cluster started with --name NAME
    #[arg(long, value_name = "NAME", global = true, value_parser = crate::config::cli::parse_name, conflicts_with = "control")]
    pub name: Option<String>,

    /// The control socket at PATH (as given to recluster --control)
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,

    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// The cluster and each worker: pid, state, generation, restarts, last exit, CPU, memory
    Status {
        /// One JSON object (the schema is in the README)
        #[arg(long)]
        json: bool,
    },
    /// Run N workers, or K more (+K) or fewer (-K)
    Scale {
        #[arg(value_name = "N|+K|-K", allow_hyphen_values = true, value_parser = parse_scale)]
        workers: ScaleBy,
        /// With Procfile groups: scale this group only (it may go to 0); without it, every
        /// group that can scale changes by the same step (or to N)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Return once the new workers are ready and the removed ones have exited
        #[arg(long)]
        wait: bool,
    },
    /// Replace these workers: a new one starts, and once it is ready the old one is stopped
    /// (with groups: GROUP.ID, or every worker of --group)
    Restart {
        #[arg(value_name = "ID", required_unless_present = "group", value_parser = parse_worker)]
        ids: Vec<WorkerRef>,
        /// With Procfile groups: the group the IDs are in (without IDs: all of it, one at a time)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Return once every new worker is ready and every old one has exited
        #[arg(long)]
        wait: bool,
    },
    /// Send SIG to the workers with these IDs (every worker without IDs)
    Signal {
        #[arg(value_name = "SIG", value_parser = parse_signal)]
        signal: Sig,
        #[arg(value_name = "ID", value_parser = parse_worker)]
        ids: Vec<WorkerRef>,
        /// With Procfile groups: the group the IDs are in (without IDs: all of it)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// Rolling reload, as SIGHUP does (with --group, a rolling restart of that group alone)
    Reload {
        /// With Procfile groups: replace this group's workers only, one at a time
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Return once every worker runs the new generation (exit 1 if it was abandoned)
        #[arg(long)]
        wait: bool,
    },
    /// Stop the cluster gracefully, as SIGTERM does (with --stop-signal for the workers)
    Stop {
        /// Return once recluster has exited
        #[arg(long)]
        wait: bool,
    },
    /// Print what happens, one JSON object per line, until interrupted
    Events,
    /// Deliver a message to workers (TARGET: all, others, worker:ID), from {"ctl": true}
    Send {
        #[arg(value_name = "TARGET", value_parser = parse_target)]
        to: Target,
        /// Any JSON value: the message's data
        #[arg(value_name = "JSON", value_parser = parse_json)]
        data: serde_json::Value,
    },
}

fn parse_target(text: &str) -> Result<Target, String> {
    match text.parse()? {
        Target::Recluster => Err("send delivers to workers; 'recluster' is not one".to_string()),
        target => Ok(target),
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    strict_json::from_str(text)
        .map_err(|e| format!("not JSON ({e}); quote it for the shell, as in '{{\"flush\":true}}'"))
}

fn parse_worker(text: &str) -> Result<WorkerRef, String> {
    text.parse()
}

fn parse_scale(text: &str) -> Result<ScaleBy, String> {
    text.parse()
}

fn parse_signal(text: &str) -> Result<Sig, String> {
    text.parse().map_err(|e| format!("{e}"))
}

/// `recluster ctl ARGS…` (`args` starts with the program name and `ctl`).
pub fn main(args: Vec<OsString>) -> i32 {
    let args = std::iter::once(OsString::from("recluster ctl")).chain(args.into_iter().skip(2));
    let cli = match CtlCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return exit::OK;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                print_error(
                    "ctl needs a command: status, scale, restart, signal, reload, stop or events (see 'recluster ctl --help')",
                );
                return exit::USAGE;
            }
            print_error(&format!(
                "{} (see 'recluster ctl --help')",
                crate::config::cli::clap_line(&e)
            ));
            return exit::USAGE;
        }
    };
    // clap checks conflicts level by level: `--pid 1 status --name web` gets past it.
    let chosen: Vec<&str> = [
        ("--pid", cli.pid.is_some()),
        ("--name", cli.name.is_some()),
        ("--control", cli.control.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if chosen.len() > 1 {
        print_error(&format!(
            "{} each choose the cluster: give one (see 'recluster ctl --help')",
            chosen.join(" and ")
        ));
        return exit::USAGE;
    }
    let path = match &cli.control {
        Some(path) => path.clone(),
        None => match discovery::find(cli.name.as_deref(), cli.pid) {
            Ok(path) => path,
            Err(NotFound::Unreachable(message)) => {
                print_error(&message);
                return exit::UNREACHABLE;
            }
            Err(NotFound::Ambiguous(message)) => {
                print_error(&message);
                return exit::USAGE;
            }
        },
    };
    run(&cli.verb, &path, cli.pid)
}

/// The request a verb sends.
fn request(verb: &Verb) -> Request {
    match verb {
        Verb::Status { .. } => Request::Status,
        Verb::Scale {
            workers,
            group,
            wait,
        } => Request::Scale {
            by: *workers,
            group: group.clone(),
            wait: *wait,
        },
        Verb::Restart { ids, group, wait } => Request::Restart {
            ids: in_group(ids, group),
            wait: *wait,
        },
        Verb::Signal { signal, ids, group } => Request::Signal {
            signal: *signal,
            ids: in_group(ids, group),
        },
        Verb::Reload {
            group: Some(group),
            wait,
        } => Request::Restart {
            ids: vec![WorkerRef::Group(group.clone())],
            wait: *wait,
        },
        Verb::Reload { group: None, wait } => Request::Reload { wait: *wait },
        Verb::Stop { wait } => Request::Stop { wait: *wait },
        Verb::Events => Request::Events,
        Verb::Send { to, data } => Request::Send {
            to: to.clone(),
            data: data.clone(),
        },
    }
}

/// IDs as the request names them: with `--group NAME`, ids in that group (`3` → `NAME.3`), or
/// the whole group when none is given.
fn in_group(ids: &[WorkerRef], group: &Option<String>) -> Vec<WorkerRef> {
    match group {
        None => ids.to_vec(),
        Some(group) if ids.is_empty() => vec![WorkerRef::Group(group.clone())],
        Some(group) => ids
            .iter()
            .map(|id| match id {
                WorkerRef::Id(n) => WorkerRef::InGroup(group.clone(), *n),
                other => other.clone(),
            })
            .collect(),
    }
}

/// The connection to the control socket at `path`, from a server `trust` accepts (`named`: the
/// pid `--pid` gave, which root may reach whoever runs it); else the exit status (the reason is
/// printed).
fn connect(path: &Path, named: Option<u32>) -> Result<std::os::unix::net::UnixStream, i32> {
    let stream = match crate::net::socket::connect_unix_now(path) {
        Ok(stream) => stream,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "permission denied: the control socket belongs to another user (run ctl as that user or as root)".to_string()
                }
                Some(libc::ECONNREFUSED) => {
                    "nothing answers there (that recluster has exited)".to_string()
                }
                Some(libc::ENOENT) => "no such socket".to_string(),
                Some(libc::EAGAIN) => {
                    "recluster takes no connection (its queue is full: is it stuck? its log may say)"
                        .to_string()
                }
                _ => e.to_string(),
            };
            print_error(&format!(
                "{}: {why}",
                escape::controls(&path.display().to_string())
            ));
            return Err(exit::UNREACHABLE);
        }
    };
    if let Err(refusal) = trust::server(&stream, path, named) {
        print_error(&refusal);
        return Err(exit::UNREACHABLE);
    }
    Ok(stream)
}

/// Sends `verb` to the cluster at `path` (`named`: see `connect`).
/// How long `ctl send` tries again while the message thread's queue is full.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Asks once; `ctl send` asks again (waiting 5 ms, doubling up to 100 ms, for `BUSY_RETRY` at
/// most) while recluster answers that the message thread is busy, as a script would want.
fn run(verb: &Verb, path: &Path, named: Option<u32>) -> i32 {
    let deadline = Instant::now() + BUSY_RETRY;
    let mut pause = Duration::from_millis(5);
    loop {
        match ask(verb, path, named) {
            Asked::Ended(code) => return code,
            Asked::Busy(error) if Instant::now() + pause >= deadline => {
                print_error(&escape::controls(&error));
                return exit::FAILED;
            }
            Asked::Busy(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// How one exchange with recluster ended.
enum Asked {
    /// With this exit status (anything to print has been).
    Ended(i32),
    /// `Send` refused for now: the message thread's queue is full (the error, unprinted).
    Busy(String),
}

fn ask(verb: &Verb, path: &Path, named: Option<u32>) -> Asked {
    let mut stream = match connect(path, named) {
        Ok(stream) => stream,
        Err(code) => return Asked::Ended(code),
    };
    let request = request(verb);
    let streaming = matches!(
        request,
        Request::Events
            | Request::Stop { wait: true }
            | Request::Reload { wait: true }
            | Request::Scale { wait: true, .. }
            | Request::Restart { wait: true, .. }
    );
    let deadline = if streaming {
        Deadline::OnceBegun(ANSWER_TIMEOUT)
    } else {
        Deadline::At(Instant::now() + ANSWER_TIMEOUT)
    };
    // A refused peer may find the connection closed before its request is written: what
    // recluster answered (why it refused) is read all the same.
    let sent = writeln!(stream, "{}", request.to_line());
    let unsent = |e: &std::io::Error| {
        print_error(&format!(
            "{}: cannot send the request: {e}",
            escape::controls(&path.display().to_string())
        ));
        exit::UNREACHABLE
    };
    let mut stdout = std::io::stdout().lock();
    let mut lines = Lines::new(stream);
    loop {
        let line = match lines.next_line(deadline) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(ReadError::TimedOut) if streaming => {
                print_error(&format!(
                    "recluster began a line and did not end it within {}s",
                    ANSWER_TIMEOUT.as_secs()
                ));
                return Asked::Ended(exit::FAILED);
            }
            Err(ReadError::TimedOut) => {
                print_error(&format!(
                    "recluster did not answer within {}s",
                    ANSWER_TIMEOUT.as_secs()
                ));
                return Asked::Ended(exit::FAILED);
            }
            Err(ReadError::TooLong) => {
                print_error(&format!(
                    "recluster sent a line of more than {} MiB; stopped reading it",
                    answers::MAX_LINE >> 20
                ));
                return Asked::Ended(exit::FAILED);
            }
            Err(ReadError::Io(e)) => {
                if let Err(e) = &sent {
                    return Asked::Ended(unsent(e));
                }
                print_error(&format!("reading the answer: {e}"));
                return Asked::Ended(exit::FAILED);
            }
        };
        let answer = match strict_json::from_slice(&line) {
            Ok(answer) => answer,
            Err(e) => {
                print_error(&format!(
                    "recluster sent something that is not a JSON answer ({e}): {}",
                    shown(&line)
                ));
                return Asked::Ended(exit::FAILED);
            }
        };
        if answer.get("event").is_some() {
            if writeln!(stdout, "{}", escape::json(&answer))
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return Asked::Ended(exit::OK); // the reader went away (ctl events | head)
            }
            continue;
        }
        if let Some(text) = answer.get("progress").and_then(Value::as_str) {
            // A terminal's or a CI log's alike; a closed stderr is no reason to stop waiting.
            let _ = writeln!(
                std::io::stderr(),
                "recluster ctl: {}",
                escape::controls(text)
            );
            continue;
        }
        if answer["ok"] == Value::Bool(true) {
            let _ = write!(stdout, "{}", render(verb, &answer));
            return Asked::Ended(exit::OK);
        }
        let error = answer["error"].as_str().unwrap_or("failed");
        if matches!(verb, Verb::Send { .. }) && error.starts_with(request::SEND_BUSY) {
            return Asked::Busy(error.to_string());
        }
        print_error(&escape::controls(error));
        return Asked::Ended(
            if error.starts_with("permission denied") || error.starts_with("too many clients") {
                exit::UNREACHABLE
            } else {
                exit::FAILED
            },
        );
    }
    if let Err(e) = &sent {
        return Asked::Ended(unsent(e));
    }
    Asked::Ended(match verb {
        // The connection closes when recluster exits: that is how a stop ends.
        Verb::Stop { .. } | Verb::Events => exit::OK,
        _ => {
            print_error("recluster closed the connection before answering (it may have exited)");
            exit::FAILED
        }
    })
}

/// Part of a line that was not understood, as an error shows it: at most 200 characters, escaped.
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    escape::controls(&short).into_owned()
}

/// What a successful answer prints: every line escaped, since the server's strings (a worker's
/// `STATUS=`, group names) reach the terminal.
fn render(verb: &Verb, answer: &Value) -> String {
    let text = render_plain(verb, answer);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(&escape::controls(line));
        out.push('\n');
    }
    out
}

/// What a successful answer says, before escaping.
fn render_plain(verb: &Verb, answer: &Value) -> String {
    match verb {
        Verb::Status { json: true } => format!("{}\n", escape::json(answer)),
        Verb::Status { json: false } => {
            match serde_json::from_value::<crate::supervisor::snapshot::Snapshot>(answer.clone()) {
                Ok(snapshot) => snapshot.table(),
                Err(_) => format!("{}\n", escape::json(answer)),
            }
        }
        Verb::Scale { wait, .. } => {
            let n = &answer["workers"];
            let groups = match answer["groups"].as_array() {
                Some(groups) => {
                    let sizes: Vec<String> = groups
                        .iter()
                        .map(|g| format!("{}={}", g["name"].as_str().unwrap_or("?"), g["workers"]))
                        .collect();
                    format!(" ({})", sizes.join(","))
                }
                None => String::new(),
            };
            let n = match n.as_u64() {
                Some(n) => crate::text::plural::plural(n, "worker", "workers"),
                None => format!("{n} workers"),
            };
            if *wait {
                format!("{n}{groups}\n")
            } else {
                format!("scaling to {n}{groups}\n")
            }
        }
        Verb::Restart { ids, wait, .. } => {
            let ids = ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            if *wait {
                format!("restarted {ids}\n")
            } else {
                format!("restarting {ids}\n")
            }
        }
        Verb::Signal { signal, .. } => {
            format!("sent {signal} to {} process groups\n", answer["groups"])
        }
        Verb::Reload { wait, group: None } => {
            let generation = &answer["generation"];
            if *wait {
                format!("reloaded: generation {generation}\n")
            } else {
                format!("reloading to generation {generation}\n")
            }
        }
        Verb::Reload {
            wait,
            group: Some(group),
        } => {
            if *wait {
                format!("restarted every worker of {group}\n")
            } else {
                format!("restarting every worker of {group}, one at a time\n")
            }
        }
        Verb::Stop { wait: true } => match answer["status"].as_i64() {
            Some(code) => format!("stopped (exit status {code})\n"),
            None => "stopped\n".to_string(),
        },
        Verb::Stop { wait: false } => "stopping\n".to_string(),
        Verb::Events => String::new(),
        Verb::Send { to, .. } => format!("sent to {}\n", request::target_name(to)),
    }
}
