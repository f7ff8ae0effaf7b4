//! `--plan`: how the worker count and the CPU places were derived — each file read and its value,
//! the topology, and `WORKER_ID → CPUs` — for a person (text) or a script (JSON); and where the
//! workers' cgroups would go (`--cgroups`), or why they would not.

use std::fmt::Write;

use crate::config::policy::{CgroupMode, PlanFormat};
use crate::config::validated::Config;
use crate::cpu::cpuset::CpuSet;
use crate::process::cgroup::tree::Setup;
use crate::text::json_string::quote;

/// The plan, ready to print.
pub fn render(config: &Config, format: PlanFormat) -> String {
    match format {
        PlanFormat::Text => text(config),
        PlanFormat::Json => json(config),
    }
}

fn text(config: &Config) -> String {
    let d = &config.cpu_derivation;
    let p = &config.placement;
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<44} {value}");
    };
    line(
        "CPUs recluster may use (its affinity)",
        &d.inherited.to_string(),
    );
    line(
        "online CPUs (/sys/devices/system/cpu/online)",
        &d.topology.online.to_string(),
    );
    match &d.cgroup_cpuset {
        Some((path, value)) => line(&format!("cgroup cpuset ({})", path.display()), value),
        None => line("cgroup cpuset", "not found"),
    }
    line(
        "allowed CPUs",
        &format!(
            "{} ({}{})",
            p.allowed,
            count(p.allowed.len(), "CPU", "CPUs"),
            if p.narrowed { ", from --cpus" } else { "" }
        ),
    );
    if !d.budget.sources.is_empty() {
        line("CPU quota files read", "");
    }
    for (path, value) in &d.budget.sources {
        line(&format!("  {}", path.display()), value);
    }
    line(
        "CPU quota (the tightest, rounded up)",
        &d.budget
            .quota
            .map_or("none".to_string(), |q| count(q as usize, "CPU", "CPUs")),
    );
    let workers = if d.workers_given {
        format!("{} (-n)", config.workers)
    } else {
        format!(
            "{} (the allowed CPUs, bounded by the quota)",
            config.workers
        )
    };
    line("workers", &workers);
    line(
        "topology of the allowed CPUs",
        &d.topology.describe(&p.allowed),
    );
    let pinning = match &p.pin {
        Some((granularity, places)) => format!(
            "--pin={}: {}",
            granularity.noun(false).to_lowercase(),
            count(places.len(), "place", "places")
        ),
        None if p.narrowed => "off: every worker may use the allowed CPUs".to_string(),
        None => "off: workers keep recluster's affinity".to_string(),
    };
    line("pinning", &pinning);
    line(
        &format!("worker cgroups (--cgroups {})", cgroup_mode(config)),
        &Setup::plan(config.cgroups),
    );
    let _ = writeln!(out, "\n{:<10} CPUs", "WORKER_ID");
    for id in 0..config.workers.min(MAX_ROWS) {
        let _ = writeln!(out, "{id:<10} {}", p.worker_cpus(id));
    }
    if config.workers > MAX_ROWS {
        let _ = writeln!(out, "… {} more", config.workers - MAX_ROWS);
    }
    out
}

/// Rows of the text table at most (the JSON has them all).
const MAX_ROWS: u32 = 256;

fn json(config: &Config) -> String {
    let d = &config.cpu_derivation;
    let p = &config.placement;
    let string = |s: &str| quote(s);
    let set = |s: &CpuSet| quote(&s.to_string());
    let files: Vec<String> = d
        .budget
        .sources
        .iter()
        .map(|(path, value)| {
            format!(
                "{{\"file\":{},\"value\":{}}}",
                string(&path.display().to_string()),
                string(value)
            )
        })
        .collect();
    let cpuset = d
        .cgroup_cpuset
        .as_ref()
        .map_or("null".to_string(), |(path, value)| {
            format!(
                "{{\"file\":{},\"value\":{}}}",
                string(&path.display().to_string()),
                string(value)
            )
        });
    let (pin, places) = match &p.pin {
        Some((granularity, places)) => (
            string(&granularity.noun(false).to_lowercase()),
            format!("[{}]", places.iter().map(set).collect::<Vec<_>>().join(",")),
        ),
        None => ("null".to_string(), "null".to_string()),
    };
    let workers: Vec<String> = (0..config.workers)
        .map(|id| format!("{{\"id\":{id},\"cpus\":{}}}", set(p.worker_cpus(id))))
        .collect();
    format!(
        "{{\"inherited\":{},\"online\":{},\"cgroup_cpuset\":{cpuset},\"allowed\":{},\"narrowed_by_cpus\":{},\"quota\":{{\"cpus\":{},\"files\":[{}]}},\"workers\":{},\"workers_given\":{},\"topology\":{},\"pin\":{pin},\"places\":{places},\"worker_cpus\":[{}],\"cgroups\":{}}}\n",
        set(&d.inherited),
        set(&d.topology.online),
        set(&p.allowed),
        p.narrowed,
        d.budget.quota.map_or("null".to_string(), |q| q.to_string()),
        files.join(","),
        config.workers,
        d.workers_given,
        string(&d.topology.describe(&p.allowed)),
        workers.join(","),
        string(&Setup::plan(config.cgroups))
    )
}

/// `--cgroups`'s value as it is written.
fn cgroup_mode(config: &Config) -> &'static str {
    match config.cgroups {
        CgroupMode::Auto => "auto",
        CgroupMode::Off => "off",
        CgroupMode::On => "on",
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
