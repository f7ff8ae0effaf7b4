//! Sets `RECLUSTER_VERSION`, what `recluster --version` prints after the name (and the admin
//! page's footer): `0.1.0 (abc1234, static)` — the package version, the commit it was built from
//! and whether the C library is linked in (`scripts/build-static`) or loaded at run time
//! (`dynamic`); and the last two alone as `RECLUSTER_COMMIT_ID` and `RECLUSTER_LINKING`, the
//! labels of `recluster_build_info`.
//!
//! The commit is `git rev-parse --short HEAD` when the package is its own git checkout (not a
//! tarball unpacked inside some other repository), else `RECLUSTER_COMMIT` if set, else `unknown`.
//! Cargo reruns this when HEAD, its branch or the reflog moves, so the hash follows every commit
//! and checkout without rebuilding on each source edit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RECLUSTER_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = git_commit(&dir)
        .or_else(|| std::env::var("RECLUSTER_COMMIT").ok())
        .unwrap_or_else(|| "unknown".to_string());
    // The target's features, as rustc sees them with this build's RUSTFLAGS.
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linking = if features.split(',').any(|f| f == "crt-static") {
        "static"
    } else {
        "dynamic"
    };
    let version = std::env::var("CARGO_PKG_VERSION").expect("set by cargo");
    println!("cargo:rustc-env=RECLUSTER_VERSION={version} ({commit}, {linking})");
    println!("cargo:rustc-env=RECLUSTER_COMMIT_ID={commit}");
    println!("cargo:rustc-env=RECLUSTER_LINKING={linking}");
}

/// The short hash of HEAD, if `dir` is the top of a git work tree and git runs; registers the
/// files whose change means a new HEAD.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec![
        "HEAD".to_string(),
        "logs/HEAD".to_string(),
        "packed-refs".to_string(),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo rerun this on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(dir, &["rev-parse", "--short", "HEAD"])
}

/// git's one line of output, or None if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}
