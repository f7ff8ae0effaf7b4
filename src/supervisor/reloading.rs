//! How the loop begins a rolling reload, whoever asked for it (SIGHUP, `ctl reload`, `--watch`): the
//! `--env-file` files are read again first, so the new generation gets their content. A file
//! that cannot be read or parsed refuses the reload before the cluster hears of it: no
//! generation number is used up, no worker is touched, and the reason names `PATH:LINE`.

use std::time::Instant;

use crate::process::spawn::Spawner;

use super::action::Action;
use super::cluster::Cluster;
use super::report::Origin;

/// Begins a reload with the env files as they are now; the generation it brings the workers to.
pub fn begin_reload(
    cluster: &mut Cluster,
    spawner: &mut Spawner,
    origin: Origin,
    now: Instant,
) -> Result<(u32, Vec<Action>), String> {
    cluster.accepts_changes()?;
    let layer = spawner.reread_env_files().map_err(|e| {
        let reason = format!("reload refused: {e}; the workers keep serving");
        let asked = match origin {
            Origin::Signal => "received HUP",
            Origin::Control => "reload requested",
            Origin::Watch => "files changed (--watch)",
        };
        log::warn!("{asked}: {reason}");
        reason
    })?;
    let (target, actions) = cluster.request_reload(origin, now)?;
    if let Some(layer) = layer {
        log::debug!(
            "generation {target}: env files with sha256 {} ({} variables)",
            layer.digest,
            layer.vars.len()
        );
        spawner.adopt_env(target, layer);
    }
    spawner.forget_env_before(cluster.oldest_generation());
    Ok((target, actions))
}

/// `--watch`: files changed. The env files are read again for the reload that the change starts
/// now, or queues behind the one running (either way the next generation); a file that cannot
/// be read or parsed refuses it, as for any reload.
pub fn reload_for_changes(
    cluster: &mut Cluster,
    spawner: &mut Spawner,
    scope: super::cluster::Scope,
    now: Instant,
) -> Vec<Action> {
    match spawner.reread_env_files() {
        Err(e) => {
            log::warn!("files changed (--watch): reload refused: {e}; the workers keep serving");
            Vec::new()
        }
        Ok(layer) => {
            if let Some(layer) = layer {
                spawner.adopt_env(cluster.next_generation(), layer);
            }
            spawner.forget_env_before(cluster.oldest_generation());
            cluster.reload_for_changes(scope, now)
        }
    }
}
