//! The command line as clap sees it: flags, their help text (the doc comments), defaults and
//! environment twins. Values are parsed here; what they mean together is checked in `config`.

use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::cpuset::CpuSet;
use crate::listen::{ListenAddress, ListenSpec};
use crate::signal::Sig;
use crate::topology::Granularity;

const ABOUT: &str = "Run any single-process program as a multi-core cluster: N workers, each with a \
stable WORKER_ID, signals relayed, crashed workers respawned with backoff, and a correct PID 1.";

const AFTER_HELP: &str = "\
Signals: INT, TERM, QUIT stop the cluster gracefully (a second one kills at once); HUP replaces every \
worker in a rolling reload; TTIN / TTOU add or remove a worker; TSTP is forwarded and recluster stops \
itself; every other signal (USR1, USR2, WINCH, ...) is forwarded to every worker's process group.

Exit status: 0 when every worker ended with 0 or by recluster's stop signal; otherwise the status of \
the lowest WORKER_ID that did not (128+n for signal n); 1 when recluster itself failed; 2 for a usage \
error; 126 / 127 when the command cannot be executed / is not found.

Examples:
  recluster -n 4 -- ./server --port 3000
  recluster --restart on-failure --max-restarts 5 --restart-window 1m -- python3 consumer.py
  ENTRYPOINT [\"recluster\", \"--\", \"node\", \"server.js\"]";

#[derive(Parser, Debug)]
#[command(
    name = "recluster",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    override_usage = "recluster [OPTIONS] [--] COMMAND [ARG]...",
    max_term_width = 100
)]
pub struct Cli {
    /// Number of workers [default: the CPUs this process may use: its affinity mask, bounded by a
    /// cgroup CPU quota (v2 cpu.max, or v1 cpu.cfs_quota_us), rounded up]
    #[arg(short = 'n', long, value_name = "N", env = "RECLUSTER_WORKERS", value_parser = parse_workers)]
    pub workers: Option<u32>,

    /// When a worker that exited is started again (systemd's Restart=): always; on-failure (not
    /// after exit status 0 or death by HUP, INT, TERM or PIPE); never
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = RestartMode::Always, env = "RECLUSTER_RESTART")]
    pub restart: RestartMode,

    /// Wait before restarting a worker that died before --min-uptime; doubles with each
    /// consecutive early death
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration, env = "RECLUSTER_RESTART_DELAY")]
    pub restart_delay: Duration,

    /// The longest wait between restarts of one worker
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration, env = "RECLUSTER_RESTART_MAX_DELAY")]
    pub restart_max_delay: Duration,

    /// Crash-loop limit: more than N restarts of one worker within --restart-window stops the
    /// cluster and exits with that worker's status [default: no limit]
    #[arg(long, value_name = "N", env = "RECLUSTER_MAX_RESTARTS")]
    pub max_restarts: Option<u32>,

    /// The window in which --max-restarts counts restarts [default: 10s, as systemd's
    /// StartLimitIntervalSec]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_RESTART_WINDOW")]
    pub restart_window: Option<Duration>,

    /// How long a worker must stay up to count as healthy (resets the restart backoff)
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration, env = "RECLUSTER_MIN_UPTIME")]
    pub min_uptime: Duration,

    /// When a new worker counts as ready: started (it stayed up for --min-uptime); notify (it, or
    /// any process of its tree, sent READY=1 on the NOTIFY_SOCKET recluster gives it); listening
    /// or listening:PORT (a process of its process group listens on a TCP port, or on PORT: for
    /// workers that bind their own sockets)
    #[arg(long, value_name = "WHEN", default_value = "started", value_parser = parse_ready, env = "RECLUSTER_READY")]
    pub ready: ReadyMode,

    /// How long a new worker may take to become ready (--ready notify or listening) before it is
    /// stopped and restarted as a failed start, or its reload is abandoned [default: 90s,
    /// systemd's TimeoutStartSec]
    #[arg(long, value_name = "DUR", default_value = "90s", value_parser = parse_duration, env = "RECLUSTER_READY_TIMEOUT")]
    pub ready_timeout: Duration,

    /// How many worker slots a rolling reload (SIGHUP) replaces at a time: at most N + K workers
    /// are alive during a reload
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), env = "RECLUSTER_RELOAD_BATCH")]
    pub reload_batch: u32,

    /// The signal sent when recluster itself decides to stop a worker (the old one after a reload,
    /// scale-down, a failed start, crash-loop give-up, end of the cluster): a name (TERM, SIGUSR1)
    /// or a number
    #[arg(long, value_name = "SIG", default_value = "TERM", value_parser = parse_stop_signal, env = "RECLUSTER_STOP_SIGNAL")]
    pub stop_signal: Sig,

    /// How long a stopping worker may take before its whole process group gets SIGKILL
    #[arg(long, value_name = "DUR", default_value = "8s", value_parser = parse_duration, env = "RECLUSTER_KILL_TIMEOUT")]
    pub kill_timeout: Duration,

    /// Bind ADDR before starting workers and pass the socket to each (fds 3, 4, ... in the order
    /// given; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and EINHORN_FD_*). ADDR: HOST:PORT,
    /// [V6]:PORT, :PORT (all interfaces) or unix:PATH; NAME goes to LISTEN_FDNAMES [default name:
    /// listen]. Repeatable
    #[arg(short = 'l', long, value_name = "[NAME=]ADDR", env = "RECLUSTER_LISTEN", value_parser = parse_listen)]
    pub listen: Vec<ListenSpec>,

    /// One SO_REUSEPORT socket per TCP address per worker slot (the default): new connections are
    /// steered to the slots whose worker is ready; each slot's socket outlives its workers, and a
    /// scaled-down slot's worker serves its queue before it is stopped. Given, it is an error
    /// where it cannot run (no TCP address, or a kernel that refuses the steering program with
    /// Procfile groups) instead of one shared socket
    #[arg(long, requires = "listen", env = "RECLUSTER_SOCKET_PER_WORKER", value_parser = env_flag())]
    pub socket_per_worker: bool,

    /// One socket per address shared by every worker, one accept queue: whichever worker is free
    /// takes the next connection (better for short connections on workers that block; see the
    /// README's "which mode")
    #[arg(
        long,
        requires = "listen",
        env = "RECLUSTER_SHARED_SOCKET",
        value_parser = env_flag()
    )]
    pub shared_socket: bool,

    /// The listen backlog of every socket recluster binds (the kernel caps it at
    /// net.core.somaxconn)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..), env = "RECLUSTER_BACKLOG")]
    pub backlog: i32,

    /// The CPUs workers may use, in taskset/cpuset list syntax (0-3,8-11; strides 0-15:2); within
    /// the CPUs recluster may use itself [default: all of those]
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, env = "RECLUSTER_CPUS")]
    pub cpus: Option<CpuSet>,

    /// Bind every worker to one place of the allowed CPUs: a logical cpu, a physical core (its
    /// hyperthread siblings) or a NUMA node; worker i gets place i mod P, spread across nodes,
    /// then cores, siblings last [bare --pin: cpu]
    #[arg(long, value_enum, value_name = "PLACE", num_args = 0..=1, require_equals = true, default_missing_value = "cpu", env = "RECLUSTER_PIN")]
    pub pin: Option<Granularity>,

    /// Print how the worker count and CPU places are derived (each file read and its value, the
    /// topology, WORKER_ID → CPUs), then exit without starting anything; --plan=json for scripts
    #[arg(long, value_enum, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    pub plan: Option<PlanFormat>,

    /// With --ready notify: every worker must send WATCHDOG=1 on its NOTIFY_SOCKET at least every
    /// DUR once it is ready (WATCHDOG_USEC and WATCHDOG_PID tell it); one that misses it gets
    /// SIGABRT, SIGKILL after --kill-timeout, and is restarted as a failure
    #[arg(long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_WATCHDOG")]
    pub watchdog: Option<Duration>,

    /// Replace a worker whose process group uses more than SIZE of memory (512M, 2G; K, M, G
    /// are powers of 1024) in 3 samples in a row: a new worker first, then the old one stopped
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "RECLUSTER_MAX_MEMORY")]
    pub max_memory: Option<u64>,

    /// How often --max-memory samples the workers' memory
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration, env = "RECLUSTER_MEMORY_INTERVAL")]
    pub memory_interval: Duration,

    /// Run the workers as USER (a name or a number), with USER's groups, or GROUP as their
    /// primary group; recluster keeps its own identity (it binds the sockets). Needs root, or
    /// CAP_SETUID and CAP_SETGID
    #[arg(long, value_name = "USER[:GROUP]", env = "RECLUSTER_USER")]
    pub user: Option<String>,

    /// Run COMMAND with /bin/sh -c when EVENT happens: spawn, ready, exit, reload-start,
    /// reload-done, reload-abandoned, scale, stop (with RECLUSTER_EVENT, WORKER_ID, WORKER_PID,
    /// WORKER_GENERATION and, for exit, WORKER_EXIT). Repeatable
    #[arg(long = "on", value_name = "EVENT=COMMAND", value_parser = parse_hook)]
    pub hooks: Vec<crate::hooks::HookSpec>,

    /// How long a hook may run before its process group gets SIGKILL
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration, env = "RECLUSTER_HOOK_TIMEOUT")]
    pub hook_timeout: Duration,

    /// Tag every line a worker prints with its slot ([3] ...), written whole on the stream it was
    /// printed on, so two workers' lines never mix; --prefix=json writes one JSON object per
    /// line (ts, worker, group, stream, line) [default: off, output passes straight through]
    #[arg(long, value_enum, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "text", env = "RECLUSTER_PREFIX")]
    pub prefix: Option<crate::output::PrefixFormat>,

    /// Debug mode: bind the sockets, then execute the command in recluster's place as worker 0 of 1
    /// (WORKER_ID=0, LISTEN_PID its own pid), with no supervisor, so debuggers, strace and
    /// profilers see the program itself
    #[arg(long, env = "RECLUSTER_EXEC", value_parser = env_flag())]
    pub exec: bool,

    /// Where the control socket for 'recluster ctl' goes: PATH, or none for no control socket
    /// [default: $XDG_RUNTIME_DIR/recluster/, else /run/recluster/ for root, else
    /// $TMPDIR/recluster-UID/, in a directory only this user may enter; named PID.sock]
    #[arg(long, value_name = "PATH|none", env = "RECLUSTER_CONTROL", value_parser = parse_control)]
    pub control: Option<crate::control::location::Placement>,

    /// Serve read-only HTTP on ADDR: /livez, /readyz, /status, /metrics (Prometheus) and a status
    /// page at / (127.0.0.1:PORT, [::1]:PORT, :PORT for every interface, or unix:PATH) [default:
    /// off]
    #[arg(long, value_name = "ADDR", env = "RECLUSTER_ADMIN", value_parser = crate::listen::parse_address)]
    pub admin: Option<ListenAddress>,

    /// How many ready workers /readyz needs: a count, or a percentage of N (rounded up)
    #[arg(
        long,
        value_name = "K|P%",
        default_value = "1",
        env = "RECLUSTER_READY_QUORUM"
    )]
    pub ready_quorum: crate::admin::probes::Quorum,

    /// Run the programs of a Procfile (`name: command` lines, each run with /bin/sh -c) as groups
    /// of workers, instead of COMMAND; each worker gets WORKER_GROUP and a WORKER_ID within it
    #[arg(
        short = 'f',
        long,
        value_name = "PATH",
        env = "RECLUSTER_PROCFILE",
        conflicts_with = "workers"
    )]
    pub procfile: Option<std::path::PathBuf>,

    /// With -f: how many workers each group runs, as web=4,jobs=2 (all=N for every group)
    /// [default: 1 each]
    #[arg(
        short = 'm',
        long,
        value_name = "NAME=N,...",
        env = "RECLUSTER_FORMATION",
        requires = "procfile"
    )]
    pub formation: Option<String>,

    /// With -f: start group GROUP once every worker of DEPENDENCY is ready (or, for a --once
    /// group, has exited 0). Repeatable
    #[arg(long, value_name = "GROUP=DEPENDENCY", requires = "procfile")]
    pub after: Vec<String>,

    /// With -f: GROUP runs once to its end (not restarted); it must exit 0, or the cluster stops
    /// with its status. Repeatable
    #[arg(long, value_name = "GROUP", requires = "procfile")]
    pub once: Vec<String>,

    /// Give workers no message socket (RECLUSTER_MSG_FD) to talk to each other through recluster
    #[arg(long, env = "RECLUSTER_NO_MESSAGES", value_parser = env_flag())]
    pub no_messages: bool,

    /// A name for this cluster: its control socket is NAME.sock instead of PID.sock, and
    /// 'recluster ctl --name NAME' finds it
    #[arg(long, value_name = "NAME", env = "RECLUSTER_NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Print a completion script for SHELL (bash, zsh, fish) and exit
    #[arg(long, value_enum, value_name = "SHELL", exclusive = true)]
    pub completions: Option<CompletionShell>,

    /// More log detail (-v: debug, -vv: trace)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log detail (-q: warnings and errors, -qq: errors only, -qqq: nothing)
    #[arg(short, long, action = ArgAction::Count)]
    pub quiet: u8,

    /// The program every worker runs, found through PATH and executed directly (no shell), with its
    /// arguments
    #[arg(
        value_name = "COMMAND",
        required_unless_present_any = ["plan", "completions", "procfile"],
        conflicts_with = "procfile",
        num_args = 1..,
        trailing_var_arg = true,
        value_parser = clap::value_parser!(OsString)
    )]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyMode {
    Started,
    Notify,
    /// A listening TCP socket in the worker's process group, on this port or any.
    Listening(Option<u16>),
}

fn parse_ready(text: &str) -> Result<ReadyMode, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("'{p}' is not a port (1 to 65535)"))
    };
    match text {
        "started" => Ok(ReadyMode::Started),
        "notify" => Ok(ReadyMode::Notify),
        "listening" => Ok(ReadyMode::Listening(None)),
        _ => match text.strip_prefix("listening:") {
            Some(p) => Ok(ReadyMode::Listening(Some(port(p)?))),
            None => Err(format!(
                "'{text}' is not a readiness: write started, notify, listening or listening:PORT"
            )),
        },
    }
}

/// The shells `--completions` writes for (only these are linked in: each costs binary size, and
/// so resident memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// How `--plan` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

fn parse_control(text: &str) -> Result<crate::control::location::Placement, String> {
    use crate::control::location::Placement;
    if text == "none" {
        return Ok(Placement::Off);
    }
    if text.is_empty() {
        return Err("give a path for the control socket, or none".to_string());
    }
    let path = std::path::Path::new(text);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot make {text} absolute: {e}"))?
            .join(path)
    };
    Ok(Placement::Path(path))
}

/// A cluster's name: letters, digits, `.`, `_`, `-`, not starting with `.`, at most 64.
pub fn parse_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "'{text}' is not a cluster name: use up to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

fn parse_cpus(text: &str) -> Result<CpuSet, String> {
    let set: CpuSet = text.parse()?;
    if set.is_empty() {
        return Err("the list names no CPU".to_string());
    }
    Ok(set)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
}

fn parse_workers(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("the number of workers must be at least 1".to_string()),
        Ok(n) if n > crate::config::MAX_WORKERS => Err(format!(
            "the number of workers must be at most {}",
            crate::config::MAX_WORKERS
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

/// `150M`, `2G`, `512K`, `1048576`: bytes, with K, M, G, T as powers of 1024 (as systemd).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(['K', 'M', 'G', 'T', 'B', 'I']);
    let unit = &upper[digits.len()..];
    let factor: u64 = match unit {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "'{text}' is not a size (write 512M, 2G or a number of bytes)"
            ));
        }
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size (write 512M, 2G or a number of bytes)"))?;
    match number.checked_mul(factor) {
        Some(0) => Err("the size must be more than 0".to_string()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("'{text}' is too large")),
    }
}

fn parse_hook(text: &str) -> Result<crate::hooks::HookSpec, String> {
    text.parse()
}

/// `--socket-per-worker` and `--shared-socket` both set: the one on the command line wins over
/// the other's environment twin (an image's default, overridden by hand); both on the command
/// line, or both in the environment, contradict each other.
pub fn settle_socket_mode(cli: &mut Cli, matches: &clap::ArgMatches) -> Result<(), String> {
    use clap::parser::ValueSource::CommandLine;
    if !(cli.socket_per_worker && cli.shared_socket) {
        return Ok(());
    }
    let given = |id: &str| matches.value_source(id) == Some(CommandLine);
    match (given("socket_per_worker"), given("shared_socket")) {
        (true, false) => cli.shared_socket = false,
        (false, true) => cli.socket_per_worker = false,
        (true, true) => {
            return Err(
                "--socket-per-worker and --shared-socket contradict each other: give one".into(),
            );
        }
        (false, false) => {
            return Err(
                "RECLUSTER_SOCKET_PER_WORKER and RECLUSTER_SHARED_SOCKET are both set: unset one"
                    .into(),
            );
        }
    }
    Ok(())
}

/// A flag's environment twin: 1, true, yes, on set it; 0, false, no, off or empty leave it off.
fn env_flag() -> clap::builder::FalseyValueParser {
    clap::builder::FalseyValueParser::new()
}

fn parse_listen(text: &str) -> Result<ListenSpec, String> {
    text.parse()
}

/// The longest duration a flag takes: every timer adds its duration to the clock, and
/// humantime parses up to 2^64 seconds, more than `Instant` holds (which panics).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 500ms, 10s or 2m)"))?;
    if duration > MAX_DURATION {
        return Err(format!("'{text}' is longer than 100 years"));
    }
    Ok(duration)
}

fn parse_stop_signal(text: &str) -> Result<Sig, String> {
    let sig: Sig = text.parse().map_err(|e| format!("{e}"))?;
    if sig.is_job_control() || sig == Sig::CHLD {
        return Err(format!("{sig} does not end a process"));
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_mistyped_flag_is_not_taken_for_the_command() {
        let err = Cli::try_parse_from(["recluster", "--workrs", "2", "./server"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn a_duration_too_long_for_the_clock_is_refused() {
        // Found by fuzz/fuzz_targets/duration.rs: a --hook-timeout this long aborted recluster at
        // its first hook (overflow when adding duration to instant).
        let err = parse_duration(" 5555555555551month4d").unwrap_err();
        assert!(err.contains("longer than 100 years"), "{err}");
        assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
    }

    #[test]
    fn everything_after_the_command_belongs_to_it() {
        let cli =
            Cli::try_parse_from(["recluster", "-n", "2", "./server", "-n", "--port", "3"]).unwrap();
        assert_eq!(cli.workers, Some(2));
        assert_eq!(cli.command, ["./server", "-n", "--port", "3"]);
    }
}
