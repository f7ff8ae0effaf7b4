//! Which CPUs workers run on. `cpus` parses the CPU lists and counts, `cpuset` reads the cgroup's
//! allowed set, `topology` the machine's cores and caches, `placement` gives each worker its CPUs.

pub mod cpus;
pub mod cpuset;
pub mod placement;
pub mod topology;
