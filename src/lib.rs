//! recluster runs one command as N workers and supervises them: see README.md for what it does and
//! `../shared/CONTRACT.md` for the external contract. `main` is the whole program, in phases: set up
//! the process, parse and validate the command line, check the command, start the signal thread,
//! run the supervisor, exit with its status.

pub mod config;
pub mod cpu;
pub mod error;
pub mod exit_code;
pub mod frontend;
pub mod logging;
pub mod net;
pub mod process;
pub mod supervisor;
pub mod text;
pub mod watch;
pub mod worker_io;

use std::ffi::OsString;

use clap::error::ErrorKind;

use crate::config::cli::Cli;
use crate::config::policy::{ReadyMode, Steer};
use crate::config::validated::{Config, RunMode, SharedBecause, SocketMode};
use crate::config::{cli, groups, plan};
use crate::error::Error;
use crate::frontend::{admin, control};
use crate::net::socket::Sockets;
use crate::net::{listen, socket};
use crate::process::spawn::Spawner;
use crate::process::{command, exec_mode, signal_thread, startup};
use crate::supervisor::cluster::Cluster;
use crate::supervisor::{event, hooks, snapshot};
use crate::worker_io::notify::{Manager, WorkerSockets};
use crate::worker_io::{messages, output};

/// The program; returns the exit status.
pub fn main() -> i32 {
    startup::share_one_malloc_arena();
    startup::ensure_standard_fds();
    let inherited = startup::ignore_sigpipe();
    startup::reset_sigchld();
    startup::builtin_name_services_only();
    std::panic::set_hook(Box::new(|info| {
        logging::print_error(&format!("internal error (please report it): {info}"));
    }));
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "ctl") {
        return control::client::main(args);
    }
    let config = match parse(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init(
        config.log_level,
        config.log_level_from_flags,
        config.log_format,
    );
    if let RunMode::Plan(format) = config.mode {
        print!("{}", plan::render(&config, format));
        return exit_code::SUCCESS;
    }
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let result = run(config, &inherited);
    // What was logged is written (unless stderr is never read) before recluster exits.
    logging::finish(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::print_error(&e.to_string());
            e.exit_code()
        }
    }
}

/// The command line, validated; on `Err`, what to exit with (the message is printed).
fn parse(args: Vec<OsString>) -> Result<Config, i32> {
    use clap::{CommandFactory, FromArgMatches};
    let given = args.clone();
    let parsed = Cli::command()
        .try_get_matches_from(cli::join_optional_values(args))
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let cli = match parsed {
        Ok((mut cli, matches)) => match cli::settle_socket_mode(&mut cli, &matches) {
            Ok(()) => cli,
            Err(e) => {
                logging::print_error(&e);
                return Err(exit_code::USAGE);
            }
        },
        Err(e) => return Err(report_clap_error(e, &given)),
    };
    if let Some(shell) = cli.completions {
        print_completions(shell);
        return Err(exit_code::SUCCESS);
    }
    Config::from_cli(cli).map_err(|e| {
        logging::print_error(&e.to_string());
        e.exit_code()
    })
}

/// `--completions SHELL`: the script for recluster and its `ctl` verbs, from the clap definitions.
fn print_completions(shell: cli::CompletionShell) {
    use clap::CommandFactory;
    use clap_complete::shells::{Bash, Fish, Zsh};
    let ctl = control::client::CtlCli::command().name("ctl");
    let mut command = Cli::command().subcommand(ctl);
    let out = &mut std::io::stdout();
    match shell {
        cli::CompletionShell::Bash => clap_complete::generate(Bash, &mut command, "recluster", out),
        cli::CompletionShell::Zsh => clap_complete::generate(Zsh, &mut command, "recluster", out),
        cli::CompletionShell::Fish => clap_complete::generate(Fish, &mut command, "recluster", out),
    }
}

/// Help and version go to stdout with status 0; a usage error becomes one line and status 2.
/// `args`: the command line, to tell a value given there from one in an environment twin.
fn report_clap_error(e: clap::Error, args: &[OsString]) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit_code::SUCCESS
        }
        _ => {
            logging::print_error(&format!(
                "{} (usage: recluster [OPTIONS] [--] COMMAND [ARG]...; see 'recluster --help')",
                name_the_env_twin(&e, cli::clap_line(&e), args)
            ));
            exit_code::USAGE
        }
    }
}

/// A refused value that came from an environment twin, not the command line, is named by its
/// variable (`RECLUSTER_WORKERS=abc: invalid value (the environment twin of --workers): …`): the
/// user never typed `--workers`.
fn name_the_env_twin(e: &clap::Error, line: String, args: &[OsString]) -> String {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(shown)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return line;
    };
    let command = Cli::command();
    let Some(arg) = command.get_arguments().find(|a| {
        a.get_long().is_some_and(|long| {
            shown == &format!("--{long}") || shown.starts_with(&format!("--{long} "))
        })
    }) else {
        return line;
    };
    let (Some(long), Some(var)) = (arg.get_long(), arg.get_env()) else {
        return line;
    };
    if std::env::var_os(var).as_deref() != Some(std::ffi::OsStr::new(value))
        || cli::given_on_command_line(arg, args)
    {
        return line;
    }
    let Some((_, rest)) = line.split_once(&format!("for '{shown}'")) else {
        return line;
    };
    format!(
        "{}={value}: invalid value (the environment twin of --{long}){rest}",
        var.to_string_lossy()
    )
}

fn run(mut config: Config, inherited: &startup::Inherited) -> Result<i32, Error> {
    let inherited = check_command_and_fds(&mut config, inherited)?;
    if config.mode == RunMode::Exec {
        let sockets = listening_sockets(&config)?;
        logging::finish(std::time::Duration::from_secs(2));
        let e = exec_mode::exec_in_place(&config, &sockets, &inherited);
        return Err(Error::system("execute the command", e));
    }
    if let Err(e) = startup::become_subreaper() {
        log::warn!(
            "cannot become a child subreaper ({e}): orphans of workers will not be reaped by recluster"
        );
    }
    startup::block_handled_signals().map_err(|e| Error::system("block signals", e))?;
    let sockets = listening_sockets(&config)?;
    let admin = bind_admin(&config)?;
    let (outlets, inbox) = event::channels();
    let sender = outlets.events;
    // Before any other thread starts: binding it sets the umask for a moment.
    let control =
        control::server::Server::start(&config.control, config.name.as_deref(), sender.clone());
    let admin = match admin {
        Some(bound) => {
            let local = bound.local.clone();
            let started = admin::server::Admin::start(bound, config.ready_quorum, sender.clone())
                .map_err(|e| Error::system("start the admin endpoint", e))?;
            log::info!("admin endpoint at http://{local}/ (/livez, /readyz, /status, /metrics)");
            Some(started)
        }
        None => None,
    };
    let identity = identity_of(&config, &sockets, control.as_ref());
    let relay = config
        .prefix
        .map(|format| output::Relay::new(format, sender.clone()));
    let mut spawner = Spawner::new(&config, &inherited, sockets, relay)
        .map_err(|e| Error::system("open /dev/null", e))?
        .with_cgroups(worker_cgroups(
            config.cgroups,
            process::cgroup::tree::Limits {
                memory_max: config.memory_max,
                pids_max: config.pids_max,
                cpu_weight: config.cpu_weight,
            },
        )?);
    let memory_events = watch_memory(&mut spawner, &config, &sender);
    let notify = match config.policy.ready {
        ReadyMode::Notify => Some(
            WorkerSockets::start(outlets.notify, config.user.as_ref().map(|u| (u.uid, u.gid)))
                .map_err(|e| Error::system("create the workers' notify sockets", e))?,
        ),
        ReadyMode::Started | ReadyMode::Listening(_) => None,
    };
    let messages = if config.messages {
        Some(
            messages::Messages::start(sender.clone(), config.groups.clone())
                .map_err(|e| Error::system("start the message thread", e))?,
        )
    } else {
        None
    };
    if let Some(watch) = config.watch.clone()
        && let Err(e) = watch::thread::start(watch, sender.clone())
    {
        log::warn!("--watch: not watching: {e}");
    }
    drop(sender);
    signal_thread::spawn(outlets.signals)
        .map_err(|e| Error::system("start the signal thread", e))?;
    let (stop_signal, kill_timeout) = (config.policy.stop_signal, config.policy.kill_timeout);
    let mut cluster = Cluster::new(config.policy, config.workers);
    if memory_events {
        cluster.memory_by_events();
    }
    let watched = config.watch.as_ref().map_or(&[][..], |w| &w.paths[..]);
    let formation = config
        .groups
        .clone()
        .map(|groups| supervisor::formation::Formation::new(groups).with_watch(watched));
    if let Some(formation) = &formation {
        formation.configure(&mut cluster);
    }
    let mut hooks = hooks::Hooks::new(config.hooks.clone(), config.hook_timeout)
        .with_groups(config.groups.clone());
    let control_replies = control.as_ref().map(|c| c.replies());
    let admin_replies = admin.as_ref().map(|a| a.replies());
    let requests = (control_replies.is_some() || admin_replies.is_some() || messages.is_some())
        .then(|| {
            let requests =
                supervisor::requests::Control::new(control_replies, admin_replies, identity)
                    .with_groups(config.groups.clone());
            match &messages {
                Some(messages) => requests.with_messages(messages),
                None => requests,
            }
        });
    let plumbing = supervisor::run::Plumbing {
        spawner: &mut spawner,
        notify,
        manager: Manager::from_env(),
        hooks: &mut hooks,
        stop_signal,
        control: requests,
        messages,
        formation,
    };
    let code = supervisor::run(cluster, plumbing, &inbox);
    // Threads waiting for room in a channel are let go before they are waited for.
    drop(inbox);
    // The last answers (a `stop --wait`) are written and the sockets are removed.
    drop(control);
    drop(admin);
    // Every line the workers wrote reaches recluster's output before it exits.
    spawner.drain_output(std::time::Duration::from_secs(2));
    // No hook outlives recluster: the stop hooks get up to --kill-timeout.
    hooks.finish(kill_timeout);
    spawner.finish_cgroups();
    Ok(code)
}

/// `--max-memory` with the workers' memory groups: a v1 threshold on each, or v2's `memory.high`
/// and `memory.events`, wakes the loop when it is crossed, instead of samples. Whether it is so.
fn watch_memory(
    spawner: &mut Spawner,
    config: &Config,
    sender: &crossbeam_channel::Sender<event::Event>,
) -> bool {
    let (Some((bytes, _)), Some(groups)) = (config.policy.max_memory, spawner.cgroups()) else {
        return false;
    };
    let events = sender.clone();
    let crossed = Box::new(move |token| events.send(event::Event::MemoryCrossed { token }).is_ok());
    match groups.watch_memory(bytes, crossed) {
        Ok(true) => {
            log::info!(
                "--max-memory: each worker's memory cgroup wakes recluster when it crosses the limit (no sampling)"
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            log::warn!("--max-memory samples /proc: cannot watch the memory cgroups: {e}");
            false
        }
    }
}

/// `--cgroups`: recluster's cgroup subtree, or none (said once, with `auto`, where recluster may
/// not create it).
fn worker_cgroups(
    mode: config::policy::CgroupMode,
    limits: process::cgroup::tree::Limits,
) -> Result<Option<process::cgroup::tree::Groups>, Error> {
    use process::cgroup::tree::{FALLBACK_MEANS, Groups, Limits, Setup};
    match Setup::make(mode, limits)
        .map_err(|e| Error::system("create the workers' cgroups (--cgroups on)", e))?
    {
        Setup::Off => {
            if limits != Limits::default() {
                log::warn!(
                    "--memory-max, --pids-max and --cpu-weight are not applied: they need per-worker cgroups (--cgroups off)"
                );
            }
            Ok(None)
        }
        Setup::Tree(tree) => {
            let groups = Groups::new(*tree);
            log::info!(
                "each worker runs in a cgroup of its own, under {}",
                groups.describe()
            );
            Ok(Some(groups))
        }
        Setup::Fallback(reason) => {
            if limits != Limits::default() {
                log::warn!(
                    "--memory-max, --pids-max and --cpu-weight are not applied: they need per-worker cgroups"
                );
            }
            log::info!(
                "no per-worker cgroups ({reason}; --cgroups on makes this an error): {FALLBACK_MEANS}"
            );
            Ok(None)
        }
    }
}

/// Before anything is bound: the command exists and may be run, the open-files limit covers what
/// the workers need (sharing the sockets if that is what it takes), and the descriptors recluster
/// inherited are kept from the workers. What the workers inherit, with the raised limit.
fn check_command_and_fds(
    config: &mut Config,
    inherited: &startup::Inherited,
) -> Result<startup::Inherited, Error> {
    let path_var = std::env::var_os("PATH");
    match &config.user {
        Some(user) => command::resolve_as(&config.command[0], path_var.as_deref(), user)?,
        None => command::resolve(&config.command[0], path_var.as_deref())?,
    };
    let mut inherited = inherited.clone();
    let mut raised = startup::raise_fd_limit(config.fds_needed());
    if raised.is_err() && config.share_sockets_for_fd_limit() {
        raised = startup::raise_fd_limit(config.fds_needed());
    }
    inherited.fd_limit = raised.map_err(|need| {
        Error::Usage(match describe_fd_users(config) {
            Some(users) => format!("{} workers with {users} need {need}", config.workers),
            None => format!("recluster needs {need}"),
        })
    })?;
    startup::close_inherited_fds_on_exec()
        .map_err(|e| Error::system("mark inherited file descriptors close-on-exec", e))?;
    Ok(inherited)
}

/// `--admin`: its socket, bound before any thread starts.
fn bind_admin(config: &Config) -> Result<Option<admin::bind::Bound>, Error> {
    let Some(address) = &config.admin else {
        return Ok(None);
    };
    let bound = admin::bind::bind(address, config.admin_mode).map_err(|e| {
        let port = match address {
            listen::ListenAddress::Tcp { port, .. } => Some(*port),
            listen::ListenAddress::Unix(_) => None,
        };
        Error::Bind(socket::BindError {
            address: address.to_string(),
            reason: socket::describe_bind_error(&e, port),
        })
    })?;
    Ok(Some(bound))
}

/// Who this cluster is, as `hello` and `status` tell it: its name, its sockets, its control path.
fn identity_of(
    config: &Config,
    sockets: &socket::Sockets,
    control: Option<&control::server::Server>,
) -> supervisor::requests::Identity {
    supervisor::requests::Identity {
        name: config.name.clone(),
        sockets: sockets
            .listeners()
            .iter()
            .map(|l| snapshot::SocketView {
                name: l.name.clone(),
                address: l.local.clone(),
                mode: match config.socket_mode.per_worker() && l.splits() {
                    true => "per_worker",
                    false => "shared",
                }
                .to_string(),
                steering: (config.socket_mode.per_worker() && l.splits() && sockets.steered())
                    .then(|| config.steer.name().to_string()),
            })
            .collect(),
        control: control.map(|c| c.path.display().to_string()),
    }
}

/// What makes each worker cost recluster file descriptors, for the open-files error.
fn describe_fd_users(config: &Config) -> Option<String> {
    let mut users = Vec::new();
    if config.policy.ready == ReadyMode::Notify {
        users.push("--ready notify");
    }
    if config.socket_mode.per_worker() {
        users.push("--socket-per-worker");
    }
    if config.prefix.is_some() {
        users.push("--prefix");
    }
    (!users.is_empty()).then(|| users.join(" and "))
}

/// The sockets a service manager passed to recluster, or those `--listen` names, bound now —
/// before any worker starts, so a bad address fails at once.
fn listening_sockets(config: &Config) -> Result<Sockets, Error> {
    let sockets = match Sockets::inherited().map_err(Error::Bind)? {
        Some(inherited) if !config.listen.is_empty() => {
            drop(inherited);
            return Err(Error::Usage(
                "recluster was started with sockets (LISTEN_FDS) and --listen: use one or the other".to_string(),
            ));
        }
        Some(_) if config.socket_mode.per_worker() => {
            return Err(Error::Usage(
                "--socket-per-worker cannot split the sockets recluster was started with (LISTEN_FDS): drop it".to_string(),
            ));
        }
        Some(inherited) => inherited,
        None => {
            let mut sockets = Sockets::bind(
                &config.listen,
                config.socket_mode.per_worker(),
                config.backlog,
            )
            .map_err(Error::Bind)?;
            // Each slot binds the sockets it takes, in slot order; until workers are ready, every
            // one of them shares the connections.
            let groups = config.groups.as_ref();
            sockets
                .bind_slots(config.workers, |listener, id| {
                    groups::socket_goes_to(groups, &listener.name, id)
                })
                .map_err(Error::Bind)?;
            sockets.set_steer(config.steer);
            let slots: Vec<u32> = (0..config.workers).collect();
            let targets = groups::steering_targets;
            sockets.steer(
                |listener| crate::net::steering::Targets {
                    ready: targets(groups, &slots, &listener.name),
                    members: targets(groups, &slots, &listener.name),
                },
                |slot| {
                    let cpus = config.placement.binding(slot);
                    cpus.map(|c| c.iter().collect()).unwrap_or_default()
                },
            );
            sockets
        }
    };
    for (i, listener) in sockets.listeners().iter().enumerate() {
        log::info!(
            "listening on {} (fd {} in each worker, named {}{})",
            listener.local,
            3 + i,
            listener.name,
            match (config.socket_mode, listener.splits()) {
                (SocketMode::PerWorker { .. }, true) if sockets.steered() => match config.steer {
                    Steer::Hash => ", one socket per worker, steered",
                    Steer::Client => ", one socket per worker, steered by client address",
                    Steer::Cpu => ", one socket per worker, steered by CPU",
                },
                (SocketMode::PerWorker { .. }, true) => ", one socket per worker, not steered",
                (SocketMode::Shared(SharedBecause::Asked), _) => ", shared: --shared-socket",
                _ => ", one socket shared by every worker",
            }
        );
    }
    if sockets.steered() && sockets.listeners().iter().any(|l| l.splits()) {
        if socket::tcp_migrate_req() {
            log::info!(
                "a worker that dies hands the connections waiting in its socket to the other workers (net.ipv4.tcp_migrate_req=1)"
            );
        } else {
            log::info!(
                "connections waiting in a dead worker's socket wait for its replacement (net.ipv4.tcp_migrate_req=0; 1 hands them to the other workers)"
            );
        }
    }
    if let Some(why) = config.socket_mode.why_shared() {
        log::info!("one socket per address, shared by every worker: {why}");
    }
    Ok(sockets)
}
