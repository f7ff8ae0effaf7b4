//! How a worker is started, signalled and reaped. `command` finds the program, `user` the
//! account it runs as, `shell_line` how a Procfile line runs; `fd_table` and `startup` prepare the
//! child's descriptors and its first steps; `spawn` forks and execs it (nothing allocates between
//! the two) with the environment `environment` says it inherits; `exec_mode` is `--exec`, the same preparation without a supervisor. `signal` and
//! `signal_thread` turn signals into values on one thread; `reaper` is the one owner of `waitpid`;
//! `status` says how a process ended; `pidfd`, `descendants`, `procfs` and `usage` look at live
//! processes (pid handles, process trees, /proc fields, memory and CPU time).

pub mod cgroup;
pub mod command;
pub mod descendants;
pub mod environment;
pub mod exec_mode;
pub mod fd_table;
pub mod pidfd;
pub mod procfs;
pub mod reaper;
pub mod shell_line;
pub mod signal;
pub mod signal_thread;
pub mod spawn;
pub mod startup;
pub mod status;
pub mod usage;
pub mod user;
