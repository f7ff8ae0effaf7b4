//! A worker's start fails when a step of its setup fails: the child does not go on to exec in
//! recluster's process group or with recluster's descriptors, and the log names the step.

use crate::harness::{Launch, cluster_args};

/// tests/programs/deny_syscall.c: runs a command with one system call failing.
fn deny_syscall() -> String {
    crate::harness::c_program("deny_syscall", &[])
}

/// recluster with `syscall` failing with `errno`, one worker restarted slowly.
fn start_with_failing(syscall: libc::c_long, errno: i32) -> crate::harness::Cluster {
    let wrapper = deny_syscall();
    let (nr, errno) = (syscall.to_string(), errno.to_string());
    Launch::wrapped(
        &[&wrapper, &nr, &errno],
        cluster_args(&["-n", "1", "--restart-delay", "5s"], &[]),
    )
    .start()
}

#[test]
fn a_worker_whose_setpgid_fails_is_a_failed_start_not_a_worker_in_recluster_s_group() {
    let mut cluster = start_with_failing(libc::SYS_setpgid, libc::EPERM);
    let line = cluster.expect_log("setpgid before exec");
    assert!(line.text.contains("worker 0"), "{}", line.text);
    assert!(
        cluster.seen(|l| l.is_worker("ready")).is_empty(),
        "the worker ran without a process group of its own"
    );
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

#[test]
fn a_worker_whose_close_range_fails_is_a_failed_start() {
    let mut cluster = start_with_failing(libc::SYS_close_range, libc::EPERM);
    cluster.expect_log("close_range before exec");
    assert!(cluster.seen(|l| l.is_worker("ready")).is_empty());
    cluster.send(libc::SIGTERM);
    cluster.finish();
}

#[test]
fn a_kernel_without_close_range_still_starts_workers() {
    // Before Linux 5.11 (ENOSYS before 5.9, EINVAL for the flag on 5.9 and 5.10): recluster
    // marked its inherited descriptors close-on-exec at start instead.
    for errno in [libc::ENOSYS, libc::EINVAL] {
        let mut cluster = start_with_failing(libc::SYS_close_range, errno);
        cluster.ready(1);
        cluster.send(libc::SIGTERM);
        assert_eq!(cluster.exit_code(), 0, "close_range failing with {errno}");
    }
}
