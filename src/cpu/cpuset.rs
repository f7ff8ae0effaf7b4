//! Sets of CPUs, read and written in the list syntax of `taskset -c`, cpusets and sysfs:
//! `0-3,8-11`, single CPUs `5`, and strides `0-15:2` (every second CPU of the range).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The most CPUs a set can name (the kernel's `CPU_SETSIZE` for `sched_setaffinity`).
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> CpuSet {
        CpuSet(cpus.into_iter().collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// The CPUs of `self` that `other` lacks.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// The set as a `cpu_set_t` for `sched_setaffinity`.
    pub fn to_libc(&self) -> libc::cpu_set_t {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in self.iter().filter(|&c| c < MAX_CPUS) {
            // SAFETY: CPU_SET writes one bit inside the set, checked to be in range above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }

    /// The affinity of the calling thread.
    pub fn of_this_process() -> Option<CpuSet> {
        let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
        let cpus = (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false));
        Some(CpuSet::from_cpus(cpus))
    }
}

impl FromStr for CpuSet {
    type Err = String;

    /// `0-3,8-11`, `5`, `0-15:2`; blanks around items are allowed, an empty list is not.
    fn from_str(text: &str) -> Result<CpuSet, String> {
        let mut cpus = BTreeSet::new();
        for item in text.trim().split(',') {
            let item = item.trim();
            let number = |s: &str| -> Result<usize, String> {
                let n: usize = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{item:?} is not a CPU number or range"))?;
                if n >= MAX_CPUS {
                    return Err(format!(
                        "CPU {n} is beyond the most there can be ({MAX_CPUS})"
                    ));
                }
                Ok(n)
            };
            let (range, stride) = match item.split_once(':') {
                Some((range, stride)) => {
                    let stride = number(stride)?;
                    if stride == 0 {
                        return Err(format!("{item:?}: a stride must be at least 1"));
                    }
                    (range, stride)
                }
                None => (item, 1),
            };
            let (first, last) = match range.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None if stride == 1 => (number(range)?, number(range)?),
                None => return Err(format!("{item:?}: a stride needs a range (0-15:2)")),
            };
            if first > last {
                return Err(format!("{item:?}: the range runs backwards"));
            }
            cpus.extend((first..=last).step_by(stride));
        }
        Ok(CpuSet(cpus))
    }
}

impl fmt::Display for CpuSet {
    /// The shortest list form, as sysfs writes it: `0-3,8-11`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut cpus = self.iter().peekable();
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end = cpus.next().expect("peeked");
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> CpuSet {
        text.parse().unwrap()
    }

    #[test]
    fn parses_the_taskset_list_syntax() {
        assert_eq!(
            set("0-3,8-11").iter().collect::<Vec<_>>(),
            [0, 1, 2, 3, 8, 9, 10, 11]
        );
        assert_eq!(set("5").iter().collect::<Vec<_>>(), [5]);
        assert_eq!(set("0-15:4").iter().collect::<Vec<_>>(), [0, 4, 8, 12]);
        assert_eq!(set(" 1 , 3-4 ").iter().collect::<Vec<_>>(), [1, 3, 4]);
    }

    #[test]
    fn refuses_what_is_not_a_list_and_says_which_part() {
        for (text, fragment) in [
            ("", "is not a CPU number"),
            ("a", "\"a\""),
            ("3-1", "backwards"),
            ("0-7:0", "stride"),
            ("4:2", "needs a range"),
            ("99999", "beyond"),
            ("1,,2", "is not a CPU number"),
        ] {
            let err = text.parse::<CpuSet>().unwrap_err();
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }

    #[test]
    fn writes_the_shortest_list() {
        assert_eq!(set("0,1,2,3,8,10,11").to_string(), "0-3,8,10-11");
        assert_eq!(set("0-15:2").to_string(), "0,2,4,6,8,10,12,14");
        assert_eq!(CpuSet::default().to_string(), "");
    }
}
