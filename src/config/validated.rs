//! The validated meaning of the command line: every usage error comes from here or from the value
//! parsers in `cli`. Nothing after this point needs to second-guess a value.

use std::ffi::OsString;
use std::time::Duration;

use crate::config::cli::Cli;
use crate::config::policy::{
    CgroupMode, ExitOn, MAX_WORKERS, PlanFormat, ReadyMode, RestartMode, Steer,
};
use crate::cpu::cpus::{self, Budget};
use crate::cpu::cpuset::CpuSet;
use crate::cpu::placement::{self, Placement};
use crate::cpu::topology::Topology;
use crate::error::Error;
use crate::net::listen::{ListenAddress, ListenSpec};
use crate::process::signal::Sig;

/// systemd's DefaultStartLimitIntervalSec, used when only --max-restarts is given.
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(10);

/// What recluster does with a configuration: one of them, never two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Run the workers and supervise them (the normal case).
    Run,
    /// `--plan`: print how the worker count and CPU places are derived, and exit (it takes
    /// precedence over `--exec`).
    Plan(PlanFormat),
    /// `--exec`: run the command in recluster's place, as worker 0 of 1, with no supervisor.
    Exec,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub workers: u32,
    pub policy: Policy,
    pub log_level: log::LevelFilter,
    /// Whether -v/-q were given (they take precedence over RUST_LOG).
    pub log_level_from_flags: bool,
    /// `--log-format`, or json under `--prefix=json`.
    pub log_format: crate::logging::LogFormat,
    pub command: Vec<OsString>,
    pub listen: Vec<ListenSpec>,
    pub socket_mode: SocketMode,
    /// `--steer`: how connections pick among the per-worker sockets.
    pub steer: Steer,
    /// `--port-per-worker`: worker i gets `PORT=BASE+i`.
    pub port_per_worker: Option<u16>,
    pub backlog: i32,
    /// Which CPUs each worker gets.
    pub placement: Placement,
    /// How the CPU figures were derived, for `--plan`.
    pub cpu_derivation: CpuDerivation,
    /// What recluster does with all this: supervise, `--plan` or `--exec`.
    pub mode: RunMode,
    /// Warnings about the combination of values, logged once logging is set up.
    pub warnings: Vec<String>,
    /// `--prefix`: how workers' lines are tagged (none: output passes straight through).
    pub prefix: Option<crate::worker_io::output::PrefixFormat>,
    /// `--user`: the identity workers run as.
    pub user: Option<crate::process::user::Identity>,
    /// `--cgroups`: whether each worker runs in a cgroup of its own.
    pub cgroups: CgroupMode,
    /// `--memory-max`: the hard memory limit of each worker's group, in bytes.
    pub memory_max: Option<u64>,
    /// `--pids-max`: the most processes in each worker's group.
    pub pids_max: Option<u32>,
    /// `--cpu-weight`: the CPU weight of each worker's group (v2's scale).
    pub cpu_weight: Option<u32>,
    /// `--on`: lifecycle hooks, and `--hook-timeout`.
    pub hooks: Vec<crate::supervisor::hooks::HookSpec>,
    pub hook_timeout: Duration,
    /// `--control`, `--name`.
    pub control: crate::frontend::control::location::Placement,
    pub name: Option<String>,
    /// `--admin`, `--ready-quorum`.
    pub admin: Option<ListenAddress>,
    /// `--admin-mode`: the mode of a `unix:` admin socket.
    pub admin_mode: u32,
    pub ready_quorum: crate::frontend::admin::probes::Quorum,
    /// Whether workers get a message socket (not `--no-messages`).
    pub messages: bool,
    /// `-f`: the Procfile's groups.
    pub groups: Option<crate::config::groups::Groups>,
    /// `--watch`, `--watch-ignore`, `--watch-delay`.
    pub watch: Option<crate::watch::thread::Watch>,
    /// `--env-file`: the files, and what they held at the start.
    pub env_files: crate::config::env_file::EnvFiles,
    pub env: crate::config::env_file::EnvLayer,
}

/// How the sockets of `--listen` reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// One `SO_REUSEPORT` socket per TCP address per slot, steered to the slots whose worker is
    /// ready (a unix address stays one shared socket). `asked`: `--socket-per-worker` (or
    /// `--steer`) was given, so where it cannot run is an error rather than a shared socket.
    PerWorker { asked: bool },
    /// One socket per address shared by every worker, and why.
    Shared(SharedBecause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedBecause {
    /// `--shared-socket`.
    Asked,
    /// No `--listen` TCP address (none at all, only unix sockets, or sockets from a service
    /// manager).
    NoTcpAddress,
    /// Procfile groups, where the kernel refuses a steering program.
    GroupsWithoutSteering,
    /// The hard open-files limit leaves no room for a socket per worker.
    FdLimit,
    /// `--exec`: one process, nothing to steer.
    Exec,
}

impl SocketMode {
    pub fn per_worker(self) -> bool {
        matches!(self, SocketMode::PerWorker { .. })
    }

    /// Why the sockets are shared, for the start-up log, where the user did not ask for it.
    pub fn why_shared(self) -> Option<&'static str> {
        match self {
            SocketMode::Shared(SharedBecause::GroupsWithoutSteering) => Some(
                "the kernel refuses a steering program, which Procfile groups need for a socket per worker",
            ),
            SocketMode::Shared(SharedBecause::FdLimit) => Some(
                "the hard open-files limit leaves no room for a socket per worker (raise it, or pass --shared-socket to choose this)",
            ),
            _ => None,
        }
    }
}

/// What the worker count and the CPU places were derived from.
#[derive(Debug, Clone)]
pub struct CpuDerivation {
    pub inherited: CpuSet,
    pub topology: Topology,
    pub cgroup_cpuset: Option<(std::path::PathBuf, String)>,
    pub budget: Budget,
    /// Whether `-n` was given (else: the allowed CPUs, bounded by the quota).
    pub workers_given: bool,
}

/// What the supervisor decides with: when to restart, how to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub restart: RestartMode,
    pub restart_delay: Duration,
    pub restart_max_delay: Duration,
    pub crash_limit: Option<CrashLimit>,
    pub min_uptime: Duration,
    pub ready: ReadyMode,
    pub ready_timeout: Duration,
    pub reload_batch: u32,
    pub stop_signal: Sig,
    pub kill_timeout: Duration,
    /// `--socket-per-worker`: connections are steered to ready slots, and a scaled-down slot's
    /// worker drains its queue before it is stopped.
    pub steered: bool,
    /// `--watchdog`: how often a ready worker must say it is alive.
    pub watchdog: Option<Duration>,
    /// `--max-memory` in bytes, and `--memory-interval`.
    pub max_memory: Option<(u64, Duration)>,
    /// `--max-age`, `--max-age-jitter`: when a worker is replaced for having run long enough.
    pub max_age: Option<MaxAge>,
    /// `--exit-on`, and with groups `--critical` (their indexes).
    pub exit_on: ExitOn,
    pub critical: Vec<u32>,
    /// `--stop-delay`: how long every worker keeps serving after a graceful stop is asked for
    /// (`/readyz` 503, `STOPPING=1`) before it gets the stop signal.
    pub stop_delay: Duration,
}

/// `--max-age`: a worker that has run `age`, plus its own share of `jitter`, is replaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxAge {
    pub age: Duration,
    /// Each worker waits a further part of this, its own, so that slots started together do not
    /// recycle together.
    pub jitter: Duration,
    /// Mixed into each worker's share of the jitter: random per run, so that clusters started
    /// together (replicas of one deployment) do not recycle in step either.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashLimit {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, Error> {
        let crash_limit = crash_limit(&cli)?;
        let max_age = max_age(&cli)?;
        let watch = watch(&cli)?;
        let tcp = cli
            .listen
            .iter()
            .any(|s| matches!(s.address, ListenAddress::Tcp { .. }));
        check_flag_pairs(&cli, tcp)?;
        let user = user(&cli)?;
        let mut warnings = Vec::new();
        let (placement, cpu_derivation, default_workers) = cpu_places(&cli, &mut warnings)?;
        if let Some(address) = cli.admin.as_ref().filter(|a| !is_loopback(a)) {
            warnings.push(format!(
                "--admin {address} is reachable beyond this host: whoever reaches it sees the workers' status (pids, states, memory, STATUS= lines); it changes nothing"
            ));
        }
        let log_level = log_level(cli.verbose, cli.quiet);
        let groups = procfile_groups(&cli, &mut warnings)?;
        let socket_mode = socket_mode(&cli, tcp, groups.is_some())?;
        let steer = steer(&cli, socket_mode)?;
        let workers = if cli.exec {
            1
        } else if let Some(groups) = &groups {
            groups.total()
        } else {
            cli.workers.unwrap_or(default_workers)
        };
        if let (Some(_), crate::frontend::admin::probes::Quorum::Count(k)) =
            (&cli.admin, cli.ready_quorum)
            && k > workers
        {
            // A count above N is reached only by a scale-up nothing promises: until then /readyz
            // answers 503 and no traffic comes. A percentage follows scaling.
            return Err(Error::Usage(format!(
                "--ready-quorum {k} needs {k} ready workers, but the cluster starts with {workers}, so /readyz would answer 503 until someone scales it up: give at most {workers}, or a percentage of the workers (such as 50%)"
            )));
        }
        if let Some(base) = cli.port_per_worker {
            port_per_worker(base, workers, &cli)?;
        }
        let critical = critical_groups(&cli, groups.as_ref(), workers)?;
        let env_files = crate::config::env_file::EnvFiles {
            paths: cli.env_file.clone(),
        };
        let env = env_files.read().map_err(Error::Usage)?;
        let command = match &groups {
            // What is checked before any worker starts: the shell every line runs with.
            Some(groups) => groups.groups[0].command.clone(),
            None => cli.command,
        };
        Ok(Config {
            workers,
            policy: Policy {
                restart: cli.restart,
                restart_delay: cli.restart_delay,
                restart_max_delay: cli.restart_max_delay,
                crash_limit,
                min_uptime: cli.min_uptime,
                ready: cli.ready,
                ready_timeout: cli.ready_timeout,
                reload_batch: cli.reload_batch,
                stop_signal: cli.stop_signal,
                kill_timeout: cli.kill_timeout,
                steered: socket_mode.per_worker(),
                watchdog: cli.watchdog,
                max_memory: cli.max_memory.map(|bytes| (bytes, cli.memory_interval)),
                max_age,
                stop_delay: cli.stop_delay,
                exit_on: cli.exit_on,
                critical,
            },
            log_level,
            log_level_from_flags: cli.verbose > 0 || cli.quiet > 0,
            log_format: cli.log_format.unwrap_or(match cli.prefix {
                Some(crate::worker_io::output::PrefixFormat::Json) => {
                    crate::logging::LogFormat::Json
                }
                _ => crate::logging::LogFormat::Text,
            }),
            cgroups: cli.cgroups,
            memory_max: cli.memory_max,
            pids_max: cli.pids_max,
            cpu_weight: cli.cpu_weight,
            command,
            listen: cli.listen,
            socket_mode,
            steer,
            port_per_worker: cli.port_per_worker,
            backlog: cli.backlog,
            placement,
            cpu_derivation,
            mode: match (cli.plan, cli.exec) {
                (Some(format), _) => RunMode::Plan(format),
                (None, true) => RunMode::Exec,
                (None, false) => RunMode::Run,
            },
            warnings,
            prefix: cli.prefix,
            user,
            hooks: cli.hooks,
            hook_timeout: cli.hook_timeout,
            control: cli
                .control
                .unwrap_or(crate::frontend::control::location::Placement::Default),
            name: cli.name,
            admin: cli.admin,
            admin_mode: cli
                .admin_mode
                .unwrap_or(crate::frontend::admin::bind::DEFAULT_MODE),
            ready_quorum: cli.ready_quorum,
            messages: !cli.no_messages,
            groups,
            watch,
            env_files,
            env,
        })
    }
}

impl Config {
    /// Falls back from the default per-worker sockets to shared ones (where the open-files limit
    /// leaves no room for them); whether it did.
    pub fn share_sockets_for_fd_limit(&mut self) -> bool {
        if self.socket_mode != (SocketMode::PerWorker { asked: false }) {
            return false;
        }
        self.socket_mode = SocketMode::Shared(SharedBecause::FdLimit);
        self.policy.steered = false;
        true
    }

    /// The file descriptors recluster holds at most with N workers (and K more during a reload):
    /// a notify socket per live worker, each slot's own listening sockets, two relayed pipes per
    /// live worker with `--prefix`.
    pub fn fds_needed(&self) -> u64 {
        let workers = u64::from(self.workers);
        let alive = workers + u64::from(self.policy.reload_batch);
        let notify = if self.policy.ready == ReadyMode::Notify {
            alive
        } else {
            0
        };
        let listeners = self.listen.len() as u64;
        let sockets = if self.socket_mode.per_worker() {
            listeners * workers
        } else {
            listeners
        };
        // --prefix: the read ends of each live worker's stdout and stderr pipes.
        let relayed = if self.prefix.is_some() { 2 * alive } else { 0 };
        // A pidfd per live worker (see `pidfd`).
        let pidfds = alive;
        crate::process::startup::RESERVED_FDS + notify + sockets + relayed + pidfds
    }
}

/// `--critical` (group names, as indexes), and `--exit-on below:K` within the workers.
fn critical_groups(
    cli: &Cli,
    groups: Option<&crate::config::groups::Groups>,
    workers: u32,
) -> Result<Vec<u32>, Error> {
    if let ExitOn::Below(k) = cli.exit_on
        && k > workers
    {
        return Err(Error::Usage(format!(
            "--exit-on below:{k} needs {k} slots that can run, but the cluster starts with {workers}, so it would stop at once: give at most below:{workers}"
        )));
    }
    if cli.critical.is_empty() {
        return Ok(Vec::new());
    }
    if cli.exit_on == ExitOn::AnyExit {
        return Err(Error::Usage(
            "--critical and --exit-on any-exit contradict each other: with any-exit, every worker's end ends the cluster"
                .to_string(),
        ));
    }
    let Some(groups) = groups else {
        return Err(Error::Usage(
            "--critical needs -f (Procfile groups)".to_string(),
        ));
    };
    let mut critical = Vec::new();
    for name in &cli.critical {
        let g = groups.find(name).ok_or_else(|| {
            let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
            Error::Usage(format!(
                "--critical {name}: there is no group {name} in the Procfile (the groups: {})",
                names.join(", ")
            ))
        })?;
        critical.push(g as u32);
    }
    Ok(critical)
}

/// `--restart-delay` within `--restart-max-delay`; the crash-loop limit (`--max-restarts`,
/// `--restart-window`).
fn crash_limit(cli: &Cli) -> Result<Option<CrashLimit>, Error> {
    if cli.restart_delay > cli.restart_max_delay {
        return Err(Error::Usage(format!(
            "--restart-delay ({}) is longer than --restart-max-delay ({}): raise --restart-max-delay or lower --restart-delay",
            humantime::format_duration(cli.restart_delay),
            humantime::format_duration(cli.restart_max_delay)
        )));
    }
    let crash_limit = match (cli.max_restarts, cli.restart_window) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::Usage(
                "--restart-window needs --max-restarts: give both to limit crash loops".to_string(),
            ));
        }
        (Some(max_restarts), window) => Some(CrashLimit {
            max_restarts,
            window: window.unwrap_or(DEFAULT_RESTART_WINDOW),
        }),
    };
    if crash_limit.is_some_and(|limit| limit.window.is_zero()) {
        return Err(Error::Usage(
            "--restart-window must be longer than 0s".to_string(),
        ));
    }
    Ok(crash_limit)
}

/// Flags that need another flag, or exclude one: `--socket-per-worker` and TCP, `--exec` and
/// what needs a supervisor, `--admin-mode` and a unix `--admin`, `--watchdog` and `--ready notify`.
fn check_flag_pairs(cli: &Cli, tcp: bool) -> Result<(), Error> {
    if cli.socket_per_worker && !tcp {
        return Err(Error::Usage(format!(
            "--socket-per-worker needs a TCP address: {} cannot be split per worker (SO_REUSEPORT balances TCP only); drop --socket-per-worker or listen on HOST:PORT",
            cli.listen
                .first()
                .map_or("a unix socket".to_string(), |s| s.address.to_string())
        )));
    }
    if cli.exec
        && let Some(n) = cli.workers.filter(|&n| n != 1)
    {
        return Err(Error::Usage(format!(
            "--exec runs the command itself, as worker 0 of 1: drop -n {n}"
        )));
    }
    if cli.exec {
        let supervised = [
            ("--prefix", cli.prefix.is_some()),
            ("--watchdog", cli.watchdog.is_some()),
            ("--max-memory", cli.max_memory.is_some()),
            ("--max-age", cli.max_age.is_some()),
            ("--watch", !cli.watch.is_empty()),
            ("--on", !cli.hooks.is_empty()),
        ];
        if let Some((flag, _)) = supervised.iter().find(|(_, given)| *given) {
            return Err(Error::Usage(format!(
                "{flag} needs recluster to supervise the workers; --exec leaves none: drop one of them"
            )));
        }
    }
    if cli.admin_mode.is_some() && !matches!(cli.admin, Some(ListenAddress::Unix(_))) {
        return Err(Error::Usage(
            "--admin-mode is the mode of an --admin unix:PATH socket: add one, or drop --admin-mode"
                .to_string(),
        ));
    }
    if let Some(interval) = cli.watchdog {
        if cli.ready != ReadyMode::Notify {
            return Err(Error::Usage(
                "--watchdog needs --ready notify (the workers ping it on their NOTIFY_SOCKET): add --ready notify"
                    .to_string(),
            ));
        }
        if interval.is_zero() {
            return Err(Error::Usage(
                "--watchdog must be longer than 0s".to_string(),
            ));
        }
    }
    Ok(())
}

/// `--watch`: every path must exist at start (a typo would watch nothing, silently).
/// `--watch-delay` or `--watch-ignore` given without it (or their environment twins) would be
/// ignored, silently: a usage error, as `--max-age-jitter` without `--max-age`.
fn watch(cli: &Cli) -> Result<Option<crate::watch::thread::Watch>, Error> {
    if cli.watch.is_empty() {
        let given = [
            ("--watch-delay", cli.watch_delay.is_some()),
            ("--watch-ignore", !cli.watch_ignore.is_empty()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(Error::Usage(format!(
                "{flag} tells --watch how to watch: add --watch, or drop {flag}"
            )));
        }
        return Ok(None);
    }
    for path in &cli.watch {
        if let Err(e) = std::fs::metadata(path) {
            return Err(Error::Usage(format!(
                "--watch {}: {}",
                path.display(),
                e.to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_lowercase()
            )));
        }
    }
    Ok(Some(crate::watch::thread::Watch {
        paths: cli.watch.clone(),
        ignore: crate::watch::ignore::Ignore::new(&cli.watch_ignore),
        delay: cli
            .watch_delay
            .unwrap_or(crate::watch::thread::DEFAULT_DELAY),
    }))
}

/// `--max-age` and its jitter (a tenth of it unless given).
fn max_age(cli: &Cli) -> Result<Option<MaxAge>, Error> {
    let Some(age) = cli.max_age else {
        if cli.max_age_jitter.is_some() {
            return Err(Error::Usage(
                "--max-age-jitter spreads --max-age: add --max-age, or drop --max-age-jitter"
                    .to_string(),
            ));
        }
        return Ok(None);
    };
    if age.is_zero() {
        return Err(Error::Usage("--max-age must be longer than 0s".to_string()));
    }
    let seed = {
        use std::hash::{BuildHasher, Hasher};
        // The standard library's hasher keys come from the operating system's randomness.
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    Ok(Some(MaxAge {
        age,
        jitter: cli.max_age_jitter.unwrap_or(age / 10),
        seed,
    }))
}

/// `--user`: the identity workers run as, and whether recluster may switch to it.
fn user(cli: &Cli) -> Result<Option<crate::process::user::Identity>, Error> {
    Ok(match cli.user.as_deref() {
        None => None,
        Some(spec) => {
            let identity = crate::process::user::Identity::resolve(spec).map_err(Error::Usage)?;
            if !crate::process::user::may_switch() {
                return Err(Error::Usage(format!(
                    "--user {spec}: recluster must run as root (or with CAP_SETUID and CAP_SETGID) to start workers as {}",
                    identity.name
                )));
            }
            Some(identity)
        }
    })
}

/// The CPUs workers may use and how they are placed (`--cpus`, `--pin`), how that was derived
/// (for `--plan`), and the default worker count: the CPU quota, or the allowed CPUs.
fn cpu_places(
    cli: &Cli,
    warnings: &mut Vec<String>,
) -> Result<(Placement, CpuDerivation, u32), Error> {
    // Each CPU's topology files, and the cgroup's cpuset, only where they are used.
    let sysfs = std::path::Path::new("/sys/devices/system");
    let topology = if cli.pin.is_some() || cli.plan.is_some() {
        Topology::read(sysfs)
    } else {
        Topology::read_online(sysfs)
    };
    let inherited = CpuSet::of_this_process().unwrap_or_else(|| topology.online.clone());
    let (allowed, narrowed) =
        placement::allowed_cpus(cli.cpus.as_ref(), &inherited, &topology).map_err(Error::Usage)?;
    let budget = cpus::budget();
    let default_workers = budget
        .quota
        .map_or(allowed.len(), |q| (q as usize).min(allowed.len()))
        .clamp(1, MAX_WORKERS as usize) as u32;
    if let (Some(_), Some(quota)) = (cli.pin, budget.quota)
        && (quota as usize) < allowed.len()
    {
        warnings.push(format!(
            "--pin with a CPU quota of {quota} over {} CPUs ({allowed}): the quota is a share of time, not these CPUs; in a shared pool (Kubernetes without a static cpuset) pinning stacks every tenant on the same CPUs: drop --pin, or give recluster a cpuset of its own",
            allowed.len()
        ));
    }
    let pin = cli
        .pin
        .map(|granularity| (granularity, topology.places(&allowed, granularity)));
    let placement = Placement {
        allowed,
        narrowed,
        pin,
    };
    let cpu_derivation = CpuDerivation {
        inherited,
        topology,
        cgroup_cpuset: cli.plan.and_then(|_| cpus::cgroup_cpuset()),
        budget,
        workers_given: cli.workers.is_some(),
    };
    Ok((placement, cpu_derivation, default_workers))
}

/// `-v`/`-q`.
fn log_level(verbose: u8, quiet: u8) -> log::LevelFilter {
    match (verbose, quiet) {
        (0, 0) => log::LevelFilter::Info,
        (1, _) => log::LevelFilter::Debug,
        (v, _) if v >= 2 => log::LevelFilter::Trace,
        (_, 1) => log::LevelFilter::Warn,
        (_, 2) => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    }
}

/// `--procfile` and what names its groups (`--formation`, `--after`, `--once`).
fn procfile_groups(
    cli: &Cli,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::config::groups::Groups>, Error> {
    Ok(match &cli.procfile {
        None => {
            let given = [
                ("--formation", cli.formation.is_some()),
                ("--after", !cli.after.is_empty()),
                ("--once", !cli.once.is_empty()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(Error::Usage(format!(
                    "{flag} names Procfile groups: give the Procfile with --procfile (-f)"
                )));
            }
            None
        }
        Some(path) => {
            if cli.exec {
                return Err(Error::Usage(
                    "--exec runs one command in place: it does not take a Procfile (-f)"
                        .to_string(),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "--procfile {}: {}",
                    path.display(),
                    crate::net::socket::describe_error(&e)
                ))
            })?;
            let entries = crate::config::groups::parse_procfile(&text)
                .map_err(|e| Error::Usage(format!("--procfile {}: {e}", path.display())))?;
            if !cli.listen.is_empty() {
                for (name, line) in &entries {
                    if !crate::process::shell_line::keeps_the_pid(line) {
                        warnings.push(format!(
                                "--procfile {}: {name}'s line is compound, so /bin/sh forks its program and LISTEN_PID names the shell (libsystemd, go-systemd and gunicorn then ignore the sockets): write exec before the program ('cd app && exec ./server')",
                                path.display()
                            ));
                    }
                }
            }
            Some(
                crate::config::groups::Groups::build(
                    entries,
                    cli.formation.as_deref(),
                    &cli.after,
                    &cli.once,
                )
                .map_err(Error::Usage)?,
            )
        }
    })
}

/// Whether each worker gets its own sockets (`--socket-per-worker`, `--shared-socket`), and
/// why not where it cannot.
fn socket_mode(cli: &Cli, tcp: bool, grouped: bool) -> Result<SocketMode, Error> {
    Ok(if cli.shared_socket {
        SocketMode::Shared(SharedBecause::Asked)
    } else if cli.exec {
        SocketMode::Shared(SharedBecause::Exec)
    } else if !tcp {
        SocketMode::Shared(SharedBecause::NoTcpAddress)
    } else if grouped && !crate::net::steering::supported() {
        // A group's socket is bound for every slot, in slot order, and only steering keeps
        // connections off the slots of other groups.
        if cli.socket_per_worker {
            return Err(Error::Usage(
                    "--socket-per-worker with Procfile groups needs a steering program (SO_ATTACH_REUSEPORT_CBPF), which this kernel refuses: drop --socket-per-worker".to_string(),
                ));
        }
        SocketMode::Shared(SharedBecause::GroupsWithoutSteering)
    } else {
        SocketMode::PerWorker {
            asked: cli.socket_per_worker || cli.steer.is_some(),
        }
    })
}

/// `--steer`: it steers the per-worker sockets, so it needs them; `cpu` needs workers pinned to
/// CPUs or cores.
fn steer(cli: &Cli, socket_mode: SocketMode) -> Result<Steer, Error> {
    let Some(steer) = cli.steer else {
        return Ok(Steer::Hash);
    };
    let flag = format!("--steer {}", steer.name());
    let why = match socket_mode {
        SocketMode::PerWorker { .. } => None,
        SocketMode::Shared(SharedBecause::Asked) => Some(format!(
            "{flag} picks among the sockets of each worker, and --shared-socket gives them one socket to share: drop one of them"
        )),
        SocketMode::Shared(SharedBecause::NoTcpAddress) if cli.listen.is_empty() => Some(format!(
            "{flag} steers the sockets recluster binds, and without --listen the workers bind their own: add --listen HOST:PORT or drop {flag}"
        )),
        SocketMode::Shared(SharedBecause::NoTcpAddress) => Some(format!(
            "{flag} needs a TCP address (a unix socket is not split per worker): listen on HOST:PORT or drop {flag}"
        )),
        SocketMode::Shared(SharedBecause::Exec) => Some(format!(
            "{flag}: --exec runs one process, there is nothing to steer"
        )),
        SocketMode::Shared(SharedBecause::GroupsWithoutSteering | SharedBecause::FdLimit) => {
            Some(format!(
                "{flag} needs a steering program (SO_ATTACH_REUSEPORT_CBPF), which this kernel refuses"
            ))
        }
    };
    if let Some(why) = why {
        return Err(Error::Usage(why));
    }
    if steer == Steer::Cpu
        && !matches!(
            cli.pin,
            Some(crate::cpu::topology::Granularity::Cpu | crate::cpu::topology::Granularity::Core)
        )
    {
        return Err(Error::Usage(
            "--steer cpu sends a connection to the worker pinned to the CPU that handles it: add --pin=cpu or --pin=core".to_string(),
        ));
    }
    Ok(steer)
}

/// `--port-per-worker BASE`: every worker's port must exist; one process, or Procfile groups
/// (whose WORKER_ID is the group's), have no port per worker.
fn port_per_worker(base: u16, workers: u32, cli: &Cli) -> Result<(), Error> {
    if cli.exec {
        return Err(Error::Usage(
            "--port-per-worker: --exec runs one process, give it PORT yourself".to_string(),
        ));
    }
    if cli.procfile.is_some() {
        return Err(Error::Usage(
            "--port-per-worker cannot be used with Procfile groups (-f): set PORT in each line"
                .to_string(),
        ));
    }
    let last = u32::from(base) + workers - 1;
    if last > u32::from(u16::MAX) {
        return Err(Error::Usage(format!(
            "--port-per-worker {base} with {workers} workers needs ports up to {last}, past 65535: give a lower BASE"
        )));
    }
    Ok(())
}

/// Whether an address is reachable from this host only: loopback, or a unix socket.
fn is_loopback(address: &ListenAddress) -> bool {
    match address {
        ListenAddress::Unix(_) => true,
        ListenAddress::Tcp { host: None, .. } => false,
        ListenAddress::Tcp {
            host: Some(host), ..
        } => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Config, Error> {
        let mut full = vec!["recluster"];
        full.extend_from_slice(args);
        full.push("true");
        Config::from_cli(Cli::try_parse_from(full).unwrap())
    }

    #[test]
    fn restart_window_alone_is_a_usage_error_naming_both_flags() {
        let err = config(&["--restart-window", "1m"]).unwrap_err();
        assert!(err.to_string().contains("--max-restarts"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn max_restarts_alone_uses_systemds_window() {
        let limit = config(&["--max-restarts", "3"])
            .unwrap()
            .policy
            .crash_limit
            .unwrap();
        assert_eq!(limit.window, Duration::from_secs(10));
    }

    #[test]
    fn a_delay_longer_than_its_maximum_is_refused() {
        let err = config(&["--restart-delay", "5s", "--restart-max-delay", "1s"]).unwrap_err();
        assert!(err.to_string().contains("--restart-max-delay"), "{err}");
    }

    #[test]
    fn verbosity_flags_map_to_levels() {
        assert_eq!(config(&[]).unwrap().log_level, log::LevelFilter::Info);
        assert_eq!(config(&["-v"]).unwrap().log_level, log::LevelFilter::Debug);
        assert_eq!(config(&["-qq"]).unwrap().log_level, log::LevelFilter::Error);
    }

    #[test]
    fn sockets_are_per_worker_by_default_where_they_can_be() {
        let mode = |args: &[&str]| config(args).unwrap().socket_mode;
        assert_eq!(
            mode(&["-l", ":3000"]),
            SocketMode::PerWorker { asked: false }
        );
        assert_eq!(
            mode(&["-l", ":3000", "--socket-per-worker"]),
            SocketMode::PerWorker { asked: true }
        );
        assert_eq!(
            mode(&["-l", ":3000", "--shared-socket"]),
            SocketMode::Shared(SharedBecause::Asked)
        );
        assert_eq!(
            mode(&["-l", "unix:/tmp/x.sock"]),
            SocketMode::Shared(SharedBecause::NoTcpAddress)
        );
        assert_eq!(
            mode(&["-l", "unix:/tmp/x.sock", "-l", "127.0.0.1:0"]),
            SocketMode::PerWorker { asked: false },
            "the TCP address splits, the unix one stays shared"
        );
        assert_eq!(mode(&[]), SocketMode::Shared(SharedBecause::NoTcpAddress));
        assert!(config(&["-l", "unix:/tmp/x.sock", "--socket-per-worker"]).is_err());
        let mut tight = config(&["-l", ":3000"]).unwrap();
        assert!(tight.share_sockets_for_fd_limit());
        assert_eq!(
            tight.socket_mode,
            SocketMode::Shared(SharedBecause::FdLimit)
        );
        assert!(!tight.policy.steered);
        let mut asked = config(&["-l", ":3000", "--socket-per-worker"]).unwrap();
        assert!(
            !asked.share_sockets_for_fd_limit(),
            "asked for: an error instead"
        );
        let mut steered = config(&["-l", ":3000", "--steer", "client"]).unwrap();
        assert!(!steered.share_sockets_for_fd_limit(), "--steer asks too");
    }

    #[test]
    fn port_per_worker_needs_a_port_for_every_worker() {
        assert_eq!(
            config(&["-n", "3", "--port-per-worker", "8000"])
                .unwrap()
                .port_per_worker,
            Some(8000)
        );
        assert!(config(&["-n", "2", "--port-per-worker", "65535"]).is_err());
        assert!(config(&["-n", "1", "--port-per-worker", "65535"]).is_ok());
        let err = config(&["--port-per-worker", "8000", "--steer", "client"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
    }

    #[test]
    fn steer_needs_per_worker_sockets_and_cpu_needs_pinning() {
        let steer = |args: &[&str]| config(args).map(|c| c.steer);
        assert_eq!(steer(&["-l", ":3000"]).unwrap(), Steer::Hash);
        assert_eq!(
            steer(&["-l", ":3000", "--steer", "client"]).unwrap(),
            Steer::Client
        );
        for args in [
            &["-l", ":3000", "--steer", "client", "--shared-socket"][..],
            &["--steer", "client"],
            &["-l", "unix:/tmp/x.sock", "--steer", "hash"],
            &["-l", ":3000", "--steer", "cpu"],
            &["-l", ":3000", "--steer", "cpu", "--pin=node"],
        ] {
            let err = steer(args).unwrap_err();
            assert!(err.to_string().contains("--steer"), "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        assert!(
            steer(&["--steer", "client"])
                .unwrap_err()
                .to_string()
                .contains("--listen")
        );
        assert!(
            steer(&["-l", ":3000", "--steer", "client", "--shared-socket"])
                .unwrap_err()
                .to_string()
                .contains("--shared-socket")
        );
    }
}
