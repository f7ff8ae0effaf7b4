//! What recluster was asked to do, in two layers: `cli` is the command line as clap parses it
//! (flags, their env twins, the `ctl` subcommand), `validated` turns it into the checked `Config`
//! the rest of the program runs on. `env_file` reads `--env-file`'s dotenv files, which `env_path` opens only
//! where root or recluster's user controls every part of the path; `groups` reads a Procfile and lays its groups out as slots;
//! `plan` prints what a configuration would do (`--plan`) without starting anything; `policy` holds
//! the modes and limits all of them share, and imports none of them.

pub mod cli;
pub mod env_file;
pub mod env_path;
pub mod groups;
pub mod plan;
pub mod policy;
pub mod validated;
