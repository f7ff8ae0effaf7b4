//! The command line as clap sees it: flags, their help text (the doc comments), defaults and
//! environment twins. Values are parsed here; what they mean together is checked in `config`.

use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::config::policy::{
    CgroupMode, ExitOn, MAX_WORKERS, PlanFormat, ReadyMode, RestartMode, Steer,
};
use crate::cpu::cpuset::CpuSet;
use crate::cpu::topology::Granularity;
use crate::net::listen::{ListenAddress, ListenSpec};
use crate::process::signal::Sig;

const ABOUT: &str = "Run any single-process program as a multi-core cluster: N workers, each with a \
stable WORKER_ID, signals relayed, crashed workers respawned with backoff, and a correct PID 1.";

const AFTER_HELP: &str = "\
Signals: INT, TERM, QUIT stop the cluster gracefully (a second one kills at once; the same one again within 1s is \
the same request); HUP replaces every \
worker in a rolling reload; TTIN / TTOU add or remove a worker; TSTP is forwarded and recluster stops \
itself; every other signal (USR1, USR2, WINCH, ...) is forwarded to every worker's process group.

Exit status: 0 when every worker ended with 0 or by recluster's stop signal; otherwise the status of \
the lowest WORKER_ID that did not (128+n for signal n); 1 when recluster itself failed; 2 for a usage \
error; 126 / 127 when the command cannot be executed / is not found.

Examples:
  recluster -n 4 -- ./server --port 3000
  recluster --restart on-failure --max-restarts 5 --restart-window 1m -- python3 consumer.py
  ENTRYPOINT [\"recluster\", \"--\", \"node\", \"server.js\"]";

/// After `-h`: the examples, and where the rest is.
const AFTER_SHORT_HELP: &str = "\
Examples:
  recluster -n 4 --listen :3000 -- ./server
  recluster ctl status

'--help' shows every option (some only there) and says more about each, the signals and the exit
status; 'recluster ctl --help' lists the verbs; 'man recluster' has it all.";

#[derive(Parser, Debug)]
#[command(
    name = "recluster",
    version = env!("RECLUSTER_VERSION"),
    about = ABOUT,
    after_help = AFTER_SHORT_HELP,
    after_long_help = AFTER_HELP,
    override_usage = "recluster [OPTIONS] [--] COMMAND [ARG]...\n       recluster ctl VERB [ARGS]...  (see 'recluster ctl --help')",
    max_term_width = 100
)]
pub struct Cli {
    /// Number of workers [default: the CPUs this process may use: its affinity mask, bounded by a
    /// cgroup CPU quota (v2 cpu.max, or v1 cpu.cfs_quota_us), rounded up]
    #[arg(help_heading = "Workers", help = "Number of workers [default: the CPUs recluster may use]", long_help, short = 'n', long, value_name = "N", env = "RECLUSTER_WORKERS", value_parser = parse_workers, allow_negative_numbers = true)]
    pub workers: Option<u32>,

    /// Bind ADDR before starting workers and pass the socket to each (fds 3, 4, ... in the order
    /// given; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and EINHORN_FD_*). ADDR: HOST:PORT,
    /// [V6]:PORT, :PORT (all interfaces) or unix:PATH; NAME goes to LISTEN_FDNAMES [default name:
    /// listen]. Repeatable
    #[arg(help_heading = "Sockets", help = "Bind ADDR and pass the socket to every worker (repeatable)", long_help, short = 'l', long, value_name = "[NAME=]ADDR", env = "RECLUSTER_LISTEN", value_parser = parse_listen)]
    pub listen: Vec<ListenSpec>,

    /// When a worker that exited is started again (systemd's Restart=): always; on-failure (not
    /// after exit status 0 or death by HUP, INT, TERM or PIPE); never
    #[arg(help_heading = "Workers", help = "When an exited worker is started again", long_help, long, value_enum, value_name = "WHEN", default_value_t = RestartMode::Always, env = "RECLUSTER_RESTART")]
    pub restart: RestartMode,

    /// Wait before restarting a worker that died before --min-uptime; doubles with each
    /// consecutive early death
    #[arg(help_heading = "Workers", help = "First wait before restarting a worker that died early (doubles)", long_help, long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration, env = "RECLUSTER_RESTART_DELAY")]
    pub restart_delay: Duration,

    /// The longest wait between restarts of one worker
    #[arg(hide_short_help = true, help_heading = "Workers", help = "Longest wait between restarts of one worker", long_help, long, value_name = "DUR", default_value = "30s", value_parser = parse_duration, env = "RECLUSTER_RESTART_MAX_DELAY")]
    pub restart_max_delay: Duration,

    /// Crash-loop limit: more than N restarts of one worker within --restart-window stops the
    /// cluster and exits with that worker's status [default: no limit]
    #[arg(help_heading = "Workers", help = "Give up after more than N restarts of one worker in --restart-window", long_help, long, value_name = "N", env = "RECLUSTER_MAX_RESTARTS", value_parser = parse_max_restarts, allow_negative_numbers = true)]
    pub max_restarts: Option<u32>,

    /// When the cluster ends because of its workers: any-exit (the first worker to end ends it,
    /// with its status), give-up (a crash-loop give-up, --max-restarts, ends it), below:K (it
    /// ends when fewer than K slots can run: a give-up stops only its slot, or with -f its group)
    #[arg(help_heading = "Workers", help = "When the cluster ends: any-exit, give-up, below:K [default: give-up]", long_help, long, value_name = "WHEN", default_value = "give-up", value_parser = parse_exit_on, env = "RECLUSTER_EXIT_ON")]
    pub exit_on: ExitOn,

    /// The window in which --max-restarts counts restarts [default: 10s, as systemd's
    /// StartLimitIntervalSec]
    #[arg(hide_short_help = true, help_heading = "Workers", help = "The window --max-restarts counts in [default: 10s]", long_help, long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_RESTART_WINDOW")]
    pub restart_window: Option<Duration>,

    /// How long a worker must stay up to count as healthy (resets the restart backoff)
    #[arg(help_heading = "Workers", help = "How long a worker must stay up to count as healthy", long_help, long, value_name = "DUR", default_value = "1s", value_parser = parse_duration, env = "RECLUSTER_MIN_UPTIME")]
    pub min_uptime: Duration,

    /// When a new worker counts as ready: started (it stayed up for --min-uptime); notify (it, or
    /// any process of its tree, sent READY=1 on the NOTIFY_SOCKET recluster gives it); listening
    /// or listening:PORT (a process of its process group listens on a TCP port, or on PORT: for
    /// workers that bind their own sockets)
    #[arg(help_heading = "Readiness and reload", help = "When a new worker counts as ready: started, notify, listening[:PORT]", long_help, long, value_name = "WHEN", default_value = "started", value_parser = parse_ready, env = "RECLUSTER_READY")]
    pub ready: ReadyMode,

    /// How long a new worker may take to become ready (--ready notify or listening) before it is
    /// stopped and restarted as a failed start, or its reload is abandoned [default: 90s,
    /// systemd's TimeoutStartSec]
    #[arg(help_heading = "Readiness and reload", help = "How long a new worker may take to become ready", long_help, long, value_name = "DUR", default_value = "90s", value_parser = parse_duration, env = "RECLUSTER_READY_TIMEOUT")]
    pub ready_timeout: Duration,

    /// How many worker slots a rolling reload (SIGHUP) replaces at a time: at most N + K workers
    /// are alive during a reload
    #[arg(help_heading = "Readiness and reload", help = "Worker slots a rolling reload (SIGHUP) replaces at a time", long_help, long, value_name = "K", default_value_t = 1, value_parser = parse_reload_batch, allow_negative_numbers = true, env = "RECLUSTER_RELOAD_BATCH")]
    pub reload_batch: u32,

    /// The signal sent when recluster itself decides to stop a worker (the old one after a reload,
    /// scale-down, a failed start, crash-loop give-up, end of the cluster): a name (TERM, SIGUSR1)
    /// or a number
    #[arg(help_heading = "Workers", help = "The signal recluster stops a worker with", long_help, long, value_name = "SIG", default_value = "TERM", value_parser = parse_stop_signal, env = "RECLUSTER_STOP_SIGNAL")]
    pub stop_signal: Sig,

    /// On a graceful stop (INT, TERM, QUIT, ctl stop): first turn /readyz to 503 and send
    /// STOPPING=1 to the service manager, keep every worker serving for DUR (so a load balancer
    /// stops routing here), then send the stop signal. A second INT, TERM or QUIT during the
    /// delay ends it at once (the same signal within 1s of the first is the same request)
    #[arg(help_heading = "Workers", help = "Keep serving for DUR after a stop is asked for, /readyz 503", long_help, long, value_name = "DUR", default_value = "0s", value_parser = parse_duration, env = "RECLUSTER_STOP_DELAY")]
    pub stop_delay: Duration,

    /// How long a stopping worker may take before its whole process group gets SIGKILL
    #[arg(help_heading = "Workers", help = "How long a stopping worker may take before SIGKILL", long_help, long, value_name = "DUR", default_value = "8s", value_parser = parse_duration, env = "RECLUSTER_KILL_TIMEOUT")]
    pub kill_timeout: Duration,

    /// One SO_REUSEPORT socket per TCP address per worker slot (the default): new connections are
    /// steered to the slots whose worker is ready; each slot's socket outlives its workers, and a
    /// scaled-down slot's worker serves its queue before it is stopped. Given, it is an error
    /// where it cannot run (no TCP address, or a kernel that refuses the steering program with
    /// Procfile groups) instead of one shared socket
    #[arg(hide_short_help = true, help_heading = "Sockets", help = "One steered SO_REUSEPORT socket per worker slot (the default)", long_help, long, requires = "listen", env = "RECLUSTER_SOCKET_PER_WORKER", value_parser = env_flag())]
    pub socket_per_worker: bool,

    /// One socket per address shared by every worker, one accept queue: whichever worker is free
    /// takes the next connection (better for short connections on workers that block; see the
    /// README's "which mode")
    #[arg(help_heading = "Sockets", help = "One socket per address shared by every worker", long_help, 
        long,
        requires = "listen",
        env = "RECLUSTER_SHARED_SOCKET",
        value_parser = env_flag()
    )]
    pub shared_socket: bool,

    /// How a new connection picks a worker's socket (per-worker sockets only): hash (its
    /// addresses and ports, evenly); client (the client's IP address, not its port: every
    /// connection of one client reaches the same worker while that worker lives); cpu (the ready
    /// worker pinned to the CPU that handles the connection, needs --pin=cpu or --pin=core; the
    /// hash choice where there is none) [default: hash]
    #[arg(
        help_heading = "Sockets",
        help = "How a connection picks a worker: hash, client, cpu",
        long_help,
        long,
        value_enum,
        value_name = "BY",
        env = "RECLUSTER_STEER"
    )]
    pub steer: Option<Steer>,

    /// Worker i gets PORT=BASE+i in its environment, for a program that binds the port it is
    /// given (behind a proxy that knows the N upstreams); --ready listening then waits for that
    /// port. recluster binds nothing for it
    #[arg(help_heading = "Sockets", help = "Give worker i PORT=BASE+i to bind itself", long_help, long, value_name = "BASE", env = "RECLUSTER_PORT_PER_WORKER", value_parser = clap::value_parser!(u16).range(1..))]
    pub port_per_worker: Option<u16>,

    /// The listen backlog of every socket recluster binds (the kernel caps it at
    /// net.core.somaxconn)
    #[arg(help_heading = "Sockets", help = "The listen backlog of every socket recluster binds", long_help, long, value_name = "N", default_value_t = 1024, value_parser = parse_backlog, allow_negative_numbers = true, env = "RECLUSTER_BACKLOG")]
    pub backlog: i32,

    /// The CPUs workers may use, in taskset/cpuset list syntax (0-3,8-11; strides 0-15:2); within
    /// the CPUs recluster may use itself [default: all of those]
    #[arg(help_heading = "CPUs", help = "The CPUs workers may use (0-3,8-11)", long_help, long, value_name = "LIST", value_parser = parse_cpus, env = "RECLUSTER_CPUS")]
    pub cpus: Option<CpuSet>,

    /// Bind every worker to one place of the allowed CPUs: a logical cpu, a physical core (its
    /// hyperthread siblings) or a NUMA node; worker i gets place i mod P, spread across nodes,
    /// then cores, siblings last [bare --pin: cpu]
    #[arg(help_heading = "CPUs", help = "Bind each worker to one CPU, core or NUMA node", long_help, long, value_enum, value_name = "PLACE", num_args = 0..=1, require_equals = true, default_missing_value = "cpu", env = "RECLUSTER_PIN")]
    pub pin: Option<Granularity>,

    /// Print how the worker count and CPU places are derived (each file read and its value, the
    /// topology, WORKER_ID → CPUs), then exit without starting anything; --plan=json for scripts
    #[arg(help_heading = "CPUs", help = "Print how workers and CPU places are derived, then exit", long_help, long, value_enum, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    pub plan: Option<PlanFormat>,

    /// With --ready notify: every worker must send WATCHDOG=1 on its NOTIFY_SOCKET at least every
    /// DUR once it is ready (WATCHDOG_USEC and WATCHDOG_PID tell it); one that misses it gets
    /// SIGABRT, SIGKILL after --kill-timeout, and is restarted as a failure
    #[arg(help_heading = "Guards", help = "With --ready notify: a worker must send WATCHDOG=1 every DUR", long_help, long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_WATCHDOG")]
    pub watchdog: Option<Duration>,

    /// Replace a worker whose process group uses more than SIZE of memory (512M, 2G; K, M, G
    /// are powers of 1024; a bare number is bytes, from 1048576 up) in 3 samples in a row: a new
    /// worker first, then the old one stopped. With cgroup v1 memory groups (--cgroups), no
    /// samples: the group's threshold wakes recluster, and one crossing replaces the worker
    #[arg(help_heading = "Guards", help = "Replace a worker whose process group uses more than SIZE", long_help, long, value_name = "SIZE", value_parser = parse_size, env = "RECLUSTER_MAX_MEMORY")]
    pub max_memory: Option<u64>,

    /// Replace a worker once it has run DUR (plus its share of --max-age-jitter), the way a
    /// rolling reload does: a new worker first, the old one stopped once the new one is ready;
    /// at most --reload-batch at a time, never during a reload. For programs that leak
    #[arg(help_heading = "Guards", help = "Replace a worker once it has run DUR (rolling, new one first)", long_help, long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_MAX_AGE")]
    pub max_age: Option<Duration>,

    /// With --max-age: each worker waits up to DUR more, its own share, so that workers started
    /// together are not replaced together [default: a tenth of --max-age]
    #[arg(hide_short_help = true, help_heading = "Guards", help = "With --max-age: spread the replacements over DUR [default: a tenth]", long_help, long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_MAX_AGE_JITTER")]
    pub max_age_jitter: Option<Duration>,

    /// How often --max-memory samples the workers' memory
    #[arg(hide_short_help = true, help_heading = "Guards", help = "How often --max-memory samples", long_help, long, value_name = "DUR", default_value = "5s", value_parser = parse_duration, env = "RECLUSTER_MEMORY_INTERVAL")]
    pub memory_interval: Duration,

    /// Run each worker in a cgroup of its own, made before it execs and removed once it is
    /// reaped: its whole tree is killed when it ends (a process that left its process group
    /// included). auto: where recluster may create cgroups (root, a delegated subtree), and said
    /// once at start where it may not; on: a missing permission is an error naming the path
    #[arg(help_heading = "Guards", help = "Run each worker in a cgroup of its own", long_help, long, value_enum, value_name = "WHEN", default_value_t = CgroupMode::Auto, env = "RECLUSTER_CGROUPS")]
    pub cgroups: CgroupMode,

    /// With --cgroups: each worker's group may use at most SIZE of memory (the hard limit:
    /// memory.max on v2, memory.limit_in_bytes on v1); a worker the kernel's OOM killer ends there
    /// is reported oom-killed (log, ctl status, /metrics, the oom hook)
    #[arg(help_heading = "Guards", help = "With --cgroups: the hard memory limit of each worker's group", long_help, long, value_name = "SIZE", value_parser = parse_size, env = "RECLUSTER_MEMORY_MAX")]
    pub memory_max: Option<u64>,

    /// With --cgroups: each worker's group may hold at most N processes and threads (pids.max), so
    /// a fork bomb in one worker stays there
    #[arg(hide_short_help = true, help_heading = "Guards", help = "With --cgroups: at most N processes in each worker's group", long_help, long, value_name = "N", value_parser = parse_pids_max, env = "RECLUSTER_PIDS_MAX")]
    pub pids_max: Option<u32>,

    /// With --cgroups: each worker's group gets CPU weight N, from 1 to 10000, 100 being the
    /// kernel's default (cpu.weight on v2 with the cpu controller; else cpu.shares, N * 1024 / 100,
    /// in v1's cpu hierarchy): under contention the workers share the CPU in proportion to it
    #[arg(hide_short_help = true, help_heading = "Guards", help = "With --cgroups: the CPU weight of each worker's group (1-10000, default 100)", long_help, long, value_name = "N", value_parser = parse_cpu_weight, env = "RECLUSTER_CPU_WEIGHT")]
    pub cpu_weight: Option<u32>,

    /// Run the workers as USER (a name or a number), with USER's groups, or GROUP as their
    /// primary group; recluster keeps its own identity (it binds the sockets). Needs root, or
    /// CAP_SETUID and CAP_SETGID
    #[arg(
        help_heading = "Workers",
        help = "Run the workers as USER (and GROUP)",
        long_help,
        long,
        value_name = "USER[:GROUP]",
        env = "RECLUSTER_USER"
    )]
    pub user: Option<String>,

    /// Give the workers the variables of a dotenv file (KEY=VALUE lines, `export `, comments,
    /// single and double quotes; nothing is expanded), on top of recluster's environment; later
    /// files win. Read again before every reload, so a reload picks up a changed file; a
    /// malformed file refuses the reload (the workers keep serving). The file, the directories
    /// above it and the symlinks on the way must belong to root or recluster's user. Repeatable
    #[arg(help_heading = "Workers", help = "Give the workers the variables of a dotenv file (repeatable)", long_help, long, value_name = "PATH", env = "RECLUSTER_ENV_FILE", value_parser = clap::value_parser!(std::path::PathBuf))]
    pub env_file: Vec<std::path::PathBuf>,

    /// Run COMMAND with /bin/sh -c when EVENT happens: spawn, ready, exit, reload-start,
    /// reload-done, reload-abandoned, scale, stop, oom (with RECLUSTER_EVENT, WORKER_ID, WORKER_PID,
    /// WORKER_GENERATION and, for exit, WORKER_EXIT). Repeatable
    #[arg(help_heading = "Operation", help = "Run COMMAND with /bin/sh -c on EVENT (repeatable)", long_help, long = "on", value_name = "EVENT=COMMAND", value_parser = parse_hook)]
    pub hooks: Vec<crate::supervisor::hooks::HookSpec>,

    /// How long a hook may run before its process group gets SIGKILL
    #[arg(hide_short_help = true, help_heading = "Operation", help = "How long a hook may run", long_help, long, value_name = "DUR", default_value = "30s", value_parser = parse_duration, env = "RECLUSTER_HOOK_TIMEOUT")]
    pub hook_timeout: Duration,

    /// Tag every line a worker prints with its slot ([3] ...), written whole on the stream it was
    /// printed on, so two workers' lines never mix; --prefix=json writes one JSON object per
    /// line (ts, worker, group, stream, line) [default: off, output passes straight through]
    #[arg(help_heading = "Output", help = "Tag every worker line with its slot; =json for one object per line", long_help, long, value_enum, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "text", env = "RECLUSTER_PREFIX")]
    pub prefix: Option<crate::worker_io::output::PrefixFormat>,

    /// Debug mode: bind the sockets, then execute the command in recluster's place as worker 0 of 1
    /// (WORKER_ID=0, LISTEN_PID its own pid), with no supervisor, so debuggers, strace and
    /// profilers see the program itself
    #[arg(help_heading = "Operation", help = "Debug mode: execute the command in recluster's place, no supervisor", long_help, long, env = "RECLUSTER_EXEC", value_parser = env_flag())]
    pub exec: bool,

    /// Where the control socket for 'recluster ctl' goes: PATH, or none for no control socket
    /// [default: $XDG_RUNTIME_DIR/recluster/, else /run/recluster/ for root, else
    /// $TMPDIR/recluster-UID/, in a directory only this user may enter; named PID.sock]
    #[arg(help_heading = "Operation", help = "Where the control socket for 'recluster ctl' goes, or none", long_help, long, value_name = "PATH|none", env = "RECLUSTER_CONTROL", value_parser = parse_control)]
    pub control: Option<crate::frontend::control::location::Placement>,

    /// Serve read-only HTTP on ADDR: /livez, /readyz, /status, /metrics (Prometheus) and a status
    /// page at / (127.0.0.1:PORT, [::1]:PORT, :PORT for every interface, or unix:PATH) [default:
    /// off]
    #[arg(help_heading = "Operation", help = "Serve /livez, /readyz, /status, /metrics and a status page on ADDR", long_help, long, value_name = "ADDR", env = "RECLUSTER_ADMIN", value_parser = crate::net::listen::parse_address)]
    pub admin: Option<ListenAddress>,

    /// The mode of an --admin unix:PATH socket, in octal, whatever the umask: 0600 (recluster's
    /// user only) unless told; 0660 lets the socket's group in too (the group of its directory
    /// when that directory is set-group-ID) [default: 0600]
    #[arg(hide_short_help = true, help_heading = "Operation", help = "The mode of an --admin unix:PATH socket [default: 0600]", long_help, long, value_name = "MODE", env = "RECLUSTER_ADMIN_MODE", value_parser = parse_socket_mode)]
    pub admin_mode: Option<u32>,

    /// How many ready workers /readyz needs: a count (at most the workers recluster starts with),
    /// or a percentage of N (rounded up; it follows scaling)
    #[arg(
        help_heading = "Readiness and reload",
        help = "How many ready workers /readyz needs (K or P%)",
        long_help,
        long,
        value_name = "K|P%",
        default_value = "1",
        env = "RECLUSTER_READY_QUORUM",
        allow_negative_numbers = true
    )]
    pub ready_quorum: crate::frontend::admin::probes::Quorum,

    /// Run the programs of a Procfile (`name: command` lines, each run with /bin/sh -c) as groups
    /// of workers, instead of COMMAND; each worker gets WORKER_GROUP and a WORKER_ID within it
    #[arg(
        help_heading = "Groups",
        help = "Run the programs of a Procfile as groups of workers",
        long_help,
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
        help_heading = "Groups",
        help = "With -f: workers per group, as web=4,jobs=2",
        long_help,
        short = 'm',
        long,
        value_name = "NAME=N,...",
        env = "RECLUSTER_FORMATION",
        requires = "procfile"
    )]
    pub formation: Option<String>,

    /// With -f: start group GROUP once every worker of DEPENDENCY is ready (or, for a --once
    /// group, has exited 0). Repeatable
    #[arg(
        help_heading = "Groups",
        help = "With -f: start GROUP once DEPENDENCY is ready (repeatable)",
        long_help,
        long,
        value_name = "GROUP=DEPENDENCY",
        requires = "procfile"
    )]
    pub after: Vec<String>,

    /// With -f: GROUP runs once to its end (not restarted); it must exit 0, or the cluster stops
    /// with its status. Repeatable
    #[arg(
        help_heading = "Groups",
        help = "With -f: GROUP runs once to its end (repeatable)",
        long_help,
        long,
        value_name = "GROUP",
        requires = "procfile"
    )]
    pub once: Vec<String>,

    /// Start a rolling reload when a file under PATH changes (a file, or a directory with
    /// everything under it). Changes within --watch-delay of each other are one; a change during
    /// a reload queues one more. Repeatable
    #[arg(
        help_heading = "Readiness and reload",
        help = "Reload when a file under PATH changes (repeatable)",
        long_help,
        long,
        value_name = "PATH",
        env = "RECLUSTER_WATCH"
    )]
    pub watch: Vec<std::path::PathBuf>,

    /// With --watch: changes to files or directories named GLOB do not count (* any run of
    /// characters, ? one; matched against names, not paths), besides the defaults: .git, .hg,
    /// .svn, node_modules, target, __pycache__ and editor swap and backup files (*.swp, *.swo,
    /// *.swx, *~, .#*, #*#, 4913). Repeatable
    #[arg(hide_short_help = true, help_heading = "Readiness and reload", help = "With --watch: names that do not count (repeatable)", long_help, long, value_name = "GLOB", env = "RECLUSTER_WATCH_IGNORE", value_parser = crate::watch::ignore::parse_glob)]
    pub watch_ignore: Vec<String>,

    /// With --watch: how long after a change recluster waits for the next one before it reloads
    /// (each change within it starts the wait again, for at most ten times DUR) [default: 300ms]
    #[arg(hide_short_help = true, help_heading = "Readiness and reload", help = "With --watch: how long changes are gathered before a reload [default: 300ms]", long_help, long, value_name = "DUR", value_parser = parse_duration, env = "RECLUSTER_WATCH_DELAY")]
    pub watch_delay: Option<Duration>,

    /// With -f: a crash-loop give-up in GROUP ends the cluster; once any group is named, a
    /// give-up in another group stops that group only, and the rest keeps serving. Repeatable
    #[arg(
        help_heading = "Groups",
        help = "With -f: a give-up in GROUP ends the cluster, others only stop their group (repeatable)",
        long_help,
        long,
        value_name = "GROUP",
        requires = "procfile"
    )]
    pub critical: Vec<String>,

    /// Give workers no message socket (RECLUSTER_MSG_FD) to talk to each other through recluster
    #[arg(help_heading = "Operation", help = "Give workers no message socket (RECLUSTER_MSG_FD)", long_help, long, env = "RECLUSTER_NO_MESSAGES", value_parser = env_flag())]
    pub no_messages: bool,

    /// A name for this cluster: its control socket is NAME.sock instead of PID.sock, and
    /// 'recluster ctl --name NAME' finds it
    #[arg(help_heading = "Operation", help = "Name this cluster (its control socket is NAME.sock)", long_help, long, value_name = "NAME", env = "RECLUSTER_NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Print a completion script for SHELL (bash, zsh, fish) and exit
    #[arg(
        hide_short_help = true,
        help_heading = "Operation",
        help = "Print a completion script for SHELL and exit",
        long_help,
        long,
        value_enum,
        value_name = "SHELL",
        exclusive = true
    )]
    pub completions: Option<CompletionShell>,

    /// How recluster writes its own lines: text (recluster: …), time (the same after an RFC 3339
    /// UTC timestamp), json (one object per line, the keys of --prefix=json's, worker null, and
    /// level) [default: json with --prefix=json, else text]
    #[arg(
        help_heading = "Output",
        help = "recluster's own lines: text, time (timestamped) or json",
        long_help,
        long,
        value_enum,
        value_name = "FORMAT",
        env = "RECLUSTER_LOG_FORMAT"
    )]
    pub log_format: Option<crate::logging::LogFormat>,

    /// More log detail (-v: debug, the details of each decision; -vv: trace, also every event the
    /// supervisor takes and every action it carries out)
    #[arg(help_heading = "Output", help = "More log detail (-v debug, -vv trace)", long_help, short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log detail (-q: warnings and errors, -qq: errors only, -qqq: nothing)
    #[arg(help_heading = "Output", help = "Less log detail (-q, -qq, -qqq)", long_help, short, long, action = ArgAction::Count)]
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

/// `--prefix json`, `--pin core`, `--plan json`: a flag whose value is optional takes the next word
/// too when that word is one of its values, as GNU tools do, by joining the two into
/// `--prefix=json` before clap parses. Any other next word stays where it is (`--prefix ./server`
/// runs ./server), and nothing after `--` or after the command's first word is touched. The
/// flags that take a value (`-n 4`, `--name web`) are read from the definition, so their values
/// are skipped, never mistaken for the command.
pub fn join_optional_values(args: Vec<OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    // Building fills in what the derive left implicit (how many values each flag takes).
    command.build();
    let takes_value = |arg: &clap::Arg| {
        arg.get_action().takes_values() && arg.get_num_args().is_some_and(|n| n.min_values() > 0)
    };
    let optional_values = |arg: &clap::Arg| -> Vec<String> {
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0)
            && arg.get_action().takes_values();
        if !optional {
            return Vec::new();
        }
        arg.get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect()
    };
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    if let Some(program) = rest.next() {
        out.push(program);
    }
    while let Some(word) = rest.next() {
        let Some(text) = word.to_str().map(str::to_string) else {
            out.push(word);
            break;
        };
        if text == "--" || !text.starts_with('-') || text == "-" {
            out.push(word);
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            out.push(word);
            if long.contains('=') {
                continue;
            }
            let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long)) else {
                continue;
            };
            if takes_value(arg) {
                out.extend(rest.next());
                continue;
            }
            let values = optional_values(arg);
            if values.is_empty() {
                continue;
            }
            let mut ahead = rest.clone();
            if let Some(next) = ahead
                .next()
                .filter(|n| values.iter().any(|v| n == v.as_str()))
            {
                let mut joined = out.pop().expect("the flag was just pushed");
                joined.push("=");
                joined.push(next);
                out.push(joined);
                rest = ahead;
            }
            continue;
        }
        // Short flags, possibly together (`-vn4`, `-vn 4`): a flag that takes a value takes the
        // rest of the word, or the next word.
        out.push(word);
        for (i, short) in text.char_indices().skip(1) {
            let arg = command
                .get_arguments()
                .find(|a| a.get_short() == Some(short));
            if arg.is_some_and(takes_value) {
                if i + short.len_utf8() == text.len() {
                    out.extend(rest.next());
                }
                break;
            }
        }
    }
    out.extend(rest);
    out
}

/// Whether the command line (recluster's own options: before `--` or the command) gives `arg`:
/// `--long`, `--long=V` or its short letter, alone or among others (`-vn4`).
pub fn given_on_command_line(arg: &clap::Arg, args: &[OsString]) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    for word in args.iter().skip(1) {
        let Some(text) = word.to_str() else {
            return false;
        };
        if text == "--" || !text.starts_with('-') {
            return false;
        }
        if let Some(long) = &long
            && (text == long || text.starts_with(&format!("{long}=")))
        {
            return true;
        }
        if !text.starts_with("--")
            && let Some(short) = arg.get_short()
            && text[1..].contains(short)
        {
            return true;
        }
    }
    false
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

fn parse_control(text: &str) -> Result<crate::frontend::control::location::Placement, String> {
    use crate::frontend::control::location::Placement;
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

fn parse_workers(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("the number of workers must be at least 1".to_string()),
        Ok(n) if n > MAX_WORKERS => Err(format!(
            "the number of workers must be at most {}",
            MAX_WORKERS
        )),
        Ok(n) => Ok(n),
        Err(_) if is_negative(text) => {
            Err("the number of workers must be positive (at least 1)".to_string())
        }
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

/// Whether `text` is a negative number (`-1`, `-2.5`): clap takes those as values only for the
/// flags that allow them, so the parser can say what is wrong instead of "unexpected argument".
fn is_negative(text: &str) -> bool {
    text.strip_prefix('-')
        .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
}

/// A whole number of at least `min` (`--max-restarts`, `--reload-batch`, `--backlog`).
fn parse_pids_max(text: &str) -> Result<u32, String> {
    parse_count(text, 1, 4_194_304)
}

/// `--cpu-weight`: v2's `cpu.weight` range.
fn parse_cpu_weight(text: &str) -> Result<u32, String> {
    parse_count(text, 1, 10_000)
}

fn parse_count(text: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n < min => Err(format!("it must be at least {min}")),
        Ok(n) if n > max => Err(format!("it must be at most {max}")),
        Ok(n) => Ok(n),
        Err(_) if is_negative(text) && min > 0 => {
            Err(format!("it must be positive (at least {min})"))
        }
        Err(_) if is_negative(text) => Err("it cannot be negative".to_string()),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

fn parse_exit_on(text: &str) -> Result<ExitOn, String> {
    match text {
        "any-exit" => Ok(ExitOn::AnyExit),
        "give-up" => Ok(ExitOn::GiveUp),
        _ => match text.strip_prefix("below:") {
            Some(k) => parse_count(k, 1, MAX_WORKERS).map(ExitOn::Below),
            None => Err(format!(
                "'{text}' is not a policy: write any-exit, give-up or below:K"
            )),
        },
    }
}

fn parse_max_restarts(text: &str) -> Result<u32, String> {
    parse_count(text, 0, u32::MAX)
}

fn parse_reload_batch(text: &str) -> Result<u32, String> {
    parse_count(text, 1, u32::MAX)
}

fn parse_backlog(text: &str) -> Result<i32, String> {
    parse_count(text, 1, i32::MAX as u32).map(|n| n as i32)
}

/// Below this, a size needs a unit: `--max-memory 512` is a mistake for 512M, never 512 bytes.
const MIN_BARE_SIZE: u64 = 1 << 20;

/// `150M`, `2G`, `512K`, `1048576`: bytes, with K, M, G, T as powers of 1024 (as systemd). A bare
/// number is bytes only from 1 MiB up (`512` is refused: "did you mean 512M?"); `512B` is bytes.
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
    if unit.is_empty() && number < MIN_BARE_SIZE {
        let guess = if number < 1 << 16 { "M" } else { "K" };
        return Err(format!(
            "'{text}' has no unit, and {number} bytes is less than any program needs: did you mean {number}{guess}? (K, M, G, T; a bare number is bytes, from 1048576 up; 512B for bytes)"
        ));
    }
    match number.checked_mul(factor) {
        Some(0) => Err("the size must be more than 0".to_string()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("'{text}' is too large")),
    }
}

fn parse_hook(text: &str) -> Result<crate::supervisor::hooks::HookSpec, String> {
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

/// An octal file mode of at most 0777 (`0660`, `660`).
fn parse_socket_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "'{text}' is not a socket mode: write permission bits in octal, such as 0600 or 0660"
        )),
    }
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

/// A clap error as one line: its first paragraph, and clap's tip when it found a similar
/// argument, verb or value (`unexpected argument '--workrs' (did you mean '--workers'?)`).
pub fn clap_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let line = one_line(&e.render().to_string());
    let suggested: Vec<String> = [
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedValue,
    ]
    .into_iter()
    .filter_map(|kind| match e.get(kind) {
        Some(ContextValue::String(name)) => Some(vec![name.clone()]),
        Some(ContextValue::Strings(names)) => Some(names.clone()),
        _ => None,
    })
    .flatten()
    .collect();
    if suggested.is_empty() {
        return line;
    }
    let names: Vec<String> = suggested.iter().map(|n| format!("'{n}'")).collect();
    let line = line.strip_suffix(" found").unwrap_or(&line);
    format!("{line} (did you mean {}?)", names.join(" or "))
}

/// The first paragraph of a clap message, on one line, without its `error: ` prefix.
fn one_line(message: &str) -> String {
    let first = message.split("\n\n").next().unwrap_or(message);
    let joined: Vec<&str> = first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = joined.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_messages_become_one_line() {
        let text = "error: the following required arguments were not provided:\n  <COMMAND>...\n\nUsage: x\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: <COMMAND>..."
        );
    }

    #[test]
    fn clap_tips_survive_the_one_line() {
        use clap::CommandFactory;
        let e = Cli::command()
            .try_get_matches_from(["recluster", "--workrs", "2", "./server"])
            .unwrap_err();
        assert_eq!(
            clap_line(&e),
            "unexpected argument '--workrs' (did you mean '--workers'?)"
        );
        let e = crate::frontend::control::client::CtlCli::command()
            .try_get_matches_from(["recluster ctl", "stauts"])
            .unwrap_err();
        assert_eq!(
            clap_line(&e),
            "unrecognized subcommand 'stauts' (did you mean 'restart' or 'status'?)"
        );
        let e = Cli::command()
            .try_get_matches_from(["recluster", "--restart", "alwys", "./server"])
            .unwrap_err();
        assert!(
            clap_line(&e).ends_with("(did you mean 'always'?)"),
            "{}",
            clap_line(&e)
        );
    }
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_is_grouped_common_first_and_h_is_short() {
        let mut command = Cli::command();
        let short = command.render_help().to_string();
        let long = command.render_long_help().to_string();
        let headings = [
            "Workers:",
            "Sockets:",
            "Readiness and reload:",
            "CPUs:",
            "Guards:",
            "Operation:",
            "Output:",
            "Groups:",
        ];
        for help in [&short, &long] {
            let at: Vec<usize> = headings
                .iter()
                .map(|h| {
                    help.find(&format!("\n{h}\n"))
                        .unwrap_or_else(|| panic!("{h}"))
                })
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
            assert!(help.contains("recluster ctl VERB"), "{help}");
        }
        assert!(short.lines().count() <= 120, "{}", short.lines().count());
        assert!(short.lines().count() * 2 < long.lines().count());
        // Every option is under a heading but help and version.
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                arg.get_help_heading().is_some() || ["help", "version", "command"].contains(&id),
                "{id} has no heading"
            );
        }
    }

    #[test]
    fn a_size_without_a_unit_must_be_plainly_bytes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4096B"), Ok(4096));
        let err = parse_size("512").unwrap_err();
        assert!(err.contains("did you mean 512M?"), "{err}");
        let err = parse_size("100000").unwrap_err();
        assert!(err.contains("did you mean 100000K?"), "{err}");
    }

    #[test]
    fn a_negative_count_is_a_value_that_is_too_small() {
        for (flag, text) in [
            ("-n", "must be positive"),
            ("--max-restarts", "cannot be negative"),
            ("--reload-batch", "must be positive"),
            ("--backlog", "must be positive"),
            ("--ready-quorum", "not a quorum"),
        ] {
            let err = Cli::try_parse_from(["recluster", flag, "-1", "./server"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
            assert!(err.to_string().contains(text), "{flag}: {err}");
        }
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

    fn joined(args: &[&str]) -> Vec<String> {
        join_optional_values(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn an_optional_value_after_a_space_is_taken_when_it_is_one_of_the_values() {
        assert_eq!(
            joined(&["recluster", "--prefix", "json", "--", "echo", "hi"]),
            ["recluster", "--prefix=json", "--", "echo", "hi"]
        );
        assert_eq!(
            joined(&["recluster", "-n", "2", "--pin", "core", "--", "./server"]),
            ["recluster", "-n", "2", "--pin=core", "--", "./server"]
        );
        assert_eq!(
            joined(&["recluster", "--plan", "json"]),
            ["recluster", "--plan=json"]
        );
        let cli =
            Cli::try_parse_from(joined(&["recluster", "--prefix", "json", "--", "echo"])).unwrap();
        assert_eq!(
            cli.prefix,
            Some(crate::worker_io::output::PrefixFormat::Json)
        );
        assert_eq!(cli.command, ["echo"]);
    }

    #[test]
    fn any_other_next_word_is_left_alone() {
        for args in [
            &["recluster", "--prefix", "--", "json"][..],
            &["recluster", "--prefix", "./server", "json"],
            &["recluster", "--pin", "-n", "2", "./server"],
            &["recluster", "--name", "--prefix", "json"],
            &["recluster", "-vn", "--prefix", "json"],
            &["recluster", "./server", "--prefix", "json"],
            &["recluster", "--", "./server", "--plan", "json"],
            &["recluster", "--prefix=text", "json"],
        ] {
            assert_eq!(joined(args), args, "{args:?}");
        }
        let cli = Cli::try_parse_from(joined(&["recluster", "--prefix", "--", "json"])).unwrap();
        assert_eq!(
            cli.prefix,
            Some(crate::worker_io::output::PrefixFormat::Text)
        );
        assert_eq!(cli.command, ["json"]);
    }
}
