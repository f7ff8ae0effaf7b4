//! Which CPUs each worker gets: the allowed set (`--cpus`, within the affinity recluster
//! inherited and the online CPUs), and with `--pin` one place of it per worker — a pure function
//! of `WORKER_ID` (place `i mod P`), so a respawned, reloaded or added worker lands where its slot
//! always was.

use crate::cpu::cpuset::CpuSet;
use crate::cpu::topology::{Granularity, Topology};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The CPUs workers may use.
    pub allowed: CpuSet,
    /// Whether `--cpus` narrowed what recluster inherited (workers are then bound to it).
    pub narrowed: bool,
    /// With `--pin`: what a place is, and the places in the order workers get them.
    pub pin: Option<(Granularity, Vec<CpuSet>)>,
}

impl Placement {
    /// The CPUs worker `id` is bound to, if recluster binds it at all.
    pub fn binding(&self, id: u32) -> Option<&CpuSet> {
        match &self.pin {
            Some((_, places)) if !places.is_empty() => Some(&places[id as usize % places.len()]),
            _ if self.narrowed => Some(&self.allowed),
            _ => None,
        }
    }

    /// `WORKER_CPUS` for worker `id`: its place with `--pin`, the allowed set without.
    pub fn worker_cpus(&self, id: u32) -> &CpuSet {
        self.binding(id).unwrap_or(&self.allowed)
    }

    /// With more workers than places: "3 workers on 2 CPUs: workers 0 and 2 share CPU 0", for
    /// the first worker `id` that shares its place.
    pub fn sharing(&self, id: u32, workers: u32) -> Option<String> {
        let (granularity, places) = self.pin.as_ref()?;
        let p = places.len();
        if p == 0 || (id as usize) < p {
            return None;
        }
        let first = id as usize % p;
        Some(format!(
            "{workers} workers on {p} {}: workers {first} and {id} share {} {}",
            granularity.noun(p != 1),
            granularity.noun(false),
            places[first]
        ))
    }
}

/// The allowed set: `requested` (`--cpus`) if given, which must lie within what this process
/// may use (`inherited` ∩ `topology.online`); on error, the usage message.
pub fn allowed_cpus(
    requested: Option<&CpuSet>,
    inherited: &CpuSet,
    topology: &Topology,
) -> Result<(CpuSet, bool), String> {
    let mut usable = inherited.intersection(&topology.online);
    if usable.is_empty() {
        usable = inherited.clone(); // an odd sysfs: trust the affinity
    }
    let Some(requested) = requested else {
        return Ok((usable, false));
    };
    let outside = requested.difference(&usable);
    if !outside.is_empty() {
        return Err(format!(
            "--cpus {requested}: {outside} {} not among the CPUs this process may use ({usable})",
            if outside.len() == 1 { "is" } else { "are" }
        ));
    }
    Ok((requested.clone(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::topology::tests::fake_sysfs;

    #[test]
    fn cpus_outside_the_inherited_affinity_are_a_usage_error_naming_the_allowed_set() {
        let root = fake_sysfs("allowed", 1, 4, 1, &[3]);
        let topology = Topology::read(&root);
        let inherited: CpuSet = "0-1".parse().unwrap();
        let err = allowed_cpus(Some(&"7".parse().unwrap()), &inherited, &topology).unwrap_err();
        assert_eq!(
            err,
            "--cpus 7: 7 is not among the CPUs this process may use (0-1)"
        );
        let all: CpuSet = "0-3".parse().unwrap();
        let err = allowed_cpus(Some(&"2-3".parse().unwrap()), &all, &topology).unwrap_err();
        assert!(err.contains(": 3 is not among"), "offline CPU 3: {err}");
        let (allowed, narrowed) =
            allowed_cpus(Some(&"1".parse().unwrap()), &all, &topology).unwrap();
        assert_eq!((allowed.to_string(), narrowed), ("1".to_string(), true));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn places_wrap_by_worker_id_and_the_first_sharing_is_named() {
        let places: Vec<CpuSet> = vec!["0".parse().unwrap(), "1".parse().unwrap()];
        let placement = Placement {
            allowed: "0-1".parse().unwrap(),
            narrowed: false,
            pin: Some((Granularity::Cpu, places)),
        };
        let bound: Vec<String> = (0..5)
            .map(|id| placement.binding(id).unwrap().to_string())
            .collect();
        assert_eq!(bound, ["0", "1", "0", "1", "0"]);
        assert_eq!(placement.sharing(1, 3), None);
        assert_eq!(
            placement.sharing(2, 3).as_deref(),
            Some("3 workers on 2 CPUs: workers 0 and 2 share CPU 0")
        );
    }

    #[test]
    fn without_pin_workers_are_bound_only_when_cpus_narrowed_the_set() {
        let free = Placement {
            allowed: "0-3".parse().unwrap(),
            narrowed: false,
            pin: None,
        };
        assert_eq!(free.binding(0), None);
        assert_eq!(free.worker_cpus(0).to_string(), "0-3");
        let narrowed = Placement {
            narrowed: true,
            ..free
        };
        assert_eq!(
            narrowed.binding(5).map(ToString::to_string).as_deref(),
            Some("0-3")
        );
    }
}
