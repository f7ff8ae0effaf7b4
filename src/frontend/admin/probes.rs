//! What `/livez` and `/readyz` answer. Liveness is the supervisor loop answering at all: it never
//! depends on the workers, since recluster replaces a crashed worker itself and a kubelet that
//! restarted the pod for one would throw away the others. Readiness is the cluster running (not
//! stopping) with at least `--ready-quorum` workers ready; it stays so through a rolling reload,
//! whose new workers start before old ones stop.

use std::fmt::Write as _;

use crate::supervisor::snapshot::{ClusterState, Snapshot};

/// `--ready-quorum`: how many ready workers make the cluster ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    Count(u32),
    Percent(u32),
}

impl Quorum {
    /// The ready workers needed out of `workers`: at least 1.
    pub fn needed(self, workers: u32) -> u32 {
        match self {
            Quorum::Count(k) => k,
            Quorum::Percent(p) => (u64::from(workers) * u64::from(p)).div_ceil(100) as u32,
        }
        .max(1)
    }
}

impl std::str::FromStr for Quorum {
    type Err = String;

    fn from_str(text: &str) -> Result<Quorum, String> {
        let bad = || format!("'{text}' is not a quorum: write a count (2) or a percentage (50%)");
        match text.strip_suffix('%') {
            Some(p) => match p.parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Quorum::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.parse::<u32>() {
                Ok(k) if k >= 1 => Ok(Quorum::Count(k)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::Count(k) => write!(f, "{k}"),
            Quorum::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `/readyz`: whether the cluster is ready, and the checks for a person (`?verbose`).
pub fn readiness(snapshot: &Snapshot, quorum: Quorum) -> (bool, String) {
    let cluster = &snapshot.cluster;
    let needed = quorum.needed(cluster.workers);
    let not_stopping = cluster.state != ClusterState::Stopping;
    let enough = cluster.ready >= needed;
    let mut text = String::new();
    let mark = |ok: bool| if ok { "[+]" } else { "[-]" };
    let _ = writeln!(
        text,
        "{} not stopping (state: {})",
        mark(not_stopping),
        cluster.state.name()
    );
    let _ = writeln!(
        text,
        "{} quorum: {} of {} ready, {needed} needed (--ready-quorum {quorum})",
        mark(enough),
        cluster.ready,
        crate::text::plural::plural(cluster.workers, "worker", "workers")
    );
    let ready = not_stopping && enough;
    let _ = writeln!(
        text,
        "readyz check {}",
        if ready { "passed" } else { "failed" }
    );
    (ready, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_is_a_count_or_a_percentage_of_n_rounded_up() {
        assert_eq!("2".parse(), Ok(Quorum::Count(2)));
        assert_eq!("50%".parse(), Ok(Quorum::Percent(50)));
        assert!("0".parse::<Quorum>().is_err());
        assert!("150%".parse::<Quorum>().is_err());
        assert_eq!(Quorum::Percent(50).needed(3), 2);
        assert_eq!(Quorum::Percent(1).needed(4), 1);
        assert_eq!(Quorum::Percent(100).needed(4), 4);
        assert_eq!(Quorum::Count(1).needed(0), 1);
    }
}
