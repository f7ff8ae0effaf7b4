//! Counts in prose: a number and its noun, agreeing.

/// `1 worker`, `2 workers`: a count and its noun, agreeing.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}
