//! recluster's own messages: levels from -v/-q and RUST_LOG, the `recluster:` prefix.

use crate::harness::{Cluster, Launch, Stream, cluster_args};

fn stop_and_collect(mut cluster: Cluster) -> Vec<String> {
    cluster.send(libc::SIGUSR1);
    cluster.expect("USR1 forwarded", |l| l.is_worker("signal"));
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    cluster
        .history
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .map(|l| l.text.clone())
        .collect()
}

#[test]
fn lifecycle_events_are_logged_at_info_with_the_prefix() {
    let mut cluster = Cluster::start(&["-n", "1"], &[]);
    cluster.ready(1);
    let logs = stop_and_collect(cluster);
    assert!(
        logs.iter().all(|l| l.starts_with("recluster: ")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l.contains("worker 0 started")));
    assert!(
        !logs.iter().any(|l| l.contains("debug:")),
        "no details at info: {logs:?}"
    );
}

#[test]
fn quiet_and_rust_log_silence_info_and_verbose_shows_details() {
    let mut quiet = Cluster::start(&["-n", "1", "-q"], &[]);
    quiet.ready(1);
    assert_eq!(stop_and_collect(quiet), Vec::<String>::new());

    let mut from_env = Launch::new(cluster_args(&["-n", "1"], &[]))
        .env("RUST_LOG", "warn")
        .start();
    from_env.ready(1);
    assert_eq!(stop_and_collect(from_env), Vec::<String>::new());

    let mut verbose = Cluster::start(&["-n", "1", "-v"], &[]);
    verbose.ready(1);
    let logs = stop_and_collect(verbose);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("recluster: debug: forwarding SIGUSR1")),
        "{logs:?}"
    );
}
