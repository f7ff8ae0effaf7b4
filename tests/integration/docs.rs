//! The man page must keep up with the command line.

use clap::CommandFactory;

#[test]
fn the_man_page_lists_every_flag() {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/recluster.1")).unwrap();
    let command = recluster::config::cli::Cli::command();
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(
                man.contains(&escaped),
                "man/recluster.1 does not mention --{long}"
            );
        }
        if let Some(short) = arg.get_short() {
            assert!(
                man.contains(&format!("\\-{short}")),
                "man/recluster.1 does not mention -{short}"
            );
        }
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(man.contains(env), "man/recluster.1 does not mention {env}");
        }
    }
}

#[test]
fn every_option_in_the_man_page_exists() {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/recluster.1")).unwrap();
    let command = recluster::config::cli::Cli::command();
    let ctl = recluster::frontend::control::client::CtlCli::command();
    let ctl_args = ctl
        .get_subcommands()
        .flat_map(|verb| verb.get_arguments())
        .chain(ctl.get_arguments());
    let longs: Vec<String> = command
        .get_arguments()
        .chain(ctl_args)
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    for line in man.lines().filter(|l| l.starts_with("\\fB\\-\\-")) {
        let flag = line.trim_start_matches("\\fB\\-\\-").replace("\\-", "-");
        let name = flag
            .split(|c: char| c == '\\' || c == '=' || c.is_whitespace())
            .next()
            .unwrap();
        assert!(
            longs.iter().any(|l| l == name),
            "man page documents --{name}, which recluster does not have"
        );
    }
}

#[test]
fn the_man_page_describes_every_ctl_verb_and_flag() {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/recluster.1")).unwrap();
    let ctl = recluster::frontend::control::client::CtlCli::command();
    for verb in ctl.get_subcommands() {
        let name = verb.get_name();
        if name == "help" {
            continue;
        }
        assert!(
            man.contains(&format!("\\fB{name}\\fR")),
            "man/recluster.1 does not describe 'ctl {name}'"
        );
        for arg in verb.get_arguments() {
            if let Some(long) = arg.get_long() {
                let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    man.contains(&escaped),
                    "man/recluster.1 does not mention 'ctl {name} --{long}'"
                );
            }
        }
    }
    for arg in ctl.get_arguments() {
        if let Some(long) = arg.get_long() {
            let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(
                man.contains(&escaped),
                "man/recluster.1 does not mention 'ctl --{long}'"
            );
        }
    }
}

#[test]
fn completions_cover_the_ctl_verbs_and_load_in_bash() {
    let recluster = crate::harness::recluster_bin();
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = crate::harness::run_to_end(&["--completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        for word in ["ctl", "reload", "socket-per-worker", "wait"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({} --completions bash) && complete -p recluster",
            recluster.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("_recluster"),
        "bash did not load them: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
}

/// Every `RECLUSTER_…` name in `text`.
fn env_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("RECLUSTER_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The environment twins and the options without one, from the CLI definition.
fn twins_and_the_rest() -> (std::collections::BTreeSet<String>, Vec<String>) {
    let command = recluster::config::cli::Cli::command();
    let mut twins = std::collections::BTreeSet::new();
    let mut without = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        match arg.get_env() {
            Some(env) => {
                twins.insert(env.to_str().unwrap().to_string());
            }
            None if ["help", "version"].contains(&long) => {}
            None => without.push(long.to_string()),
        }
    }
    (twins, without)
}

#[test]
fn the_man_pages_environment_list_is_the_clis_twins() {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/recluster.1")).unwrap();
    let section = man.split(".SH ENVIRONMENT").nth(1).unwrap();
    let list = section
        .split("recluster reads these:")
        .nth(1)
        .unwrap()
        .split("Defaults for the options")
        .next()
        .unwrap();
    let (twins, without) = twins_and_the_rest();
    assert_eq!(env_names(list), twins, "man/recluster.1 ENVIRONMENT");
    let after = section.split("Defaults for the options").nth(1).unwrap();
    let none = after.split(".TP").next().unwrap();
    for long in without {
        let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
        let short = long.chars().next().unwrap();
        assert!(
            none.contains(&escaped) || none.contains(&format!("\\-{short}\\fR")),
            "the man page does not say --{long} has no environment twin"
        );
    }
}

#[test]
fn the_readmes_environment_twins_are_the_clis() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let paragraph = readme
        .split("\n\n")
        .find(|p| p.contains("The twins:"))
        .expect("the README lists the environment twins");
    let (exceptions, list) = paragraph.split_once("The twins:").unwrap();
    let (twins, without) = twins_and_the_rest();
    assert_eq!(env_names(list), twins, "README.md's list of twins");
    for long in without {
        let short = long.chars().next().unwrap();
        assert!(
            exceptions.contains(&format!("`--{long}`"))
                || exceptions.contains(&format!("`-{short}")),
            "the README does not say --{long} has no environment twin"
        );
    }
}
