//! Finding 7 of the trust audit: a hook gets the environment a worker inherits, never the
//! variables recluster's own service manager (systemd, einhorn) addressed to recluster.

use crate::harness::{FakeManager, Launch, cluster_args, eventually};

/// What recluster's own parent tells it, as systemd (socket activation for another pid, so that
/// recluster binds its own sockets; a notify socket the test owns; a watchdog) and einhorn would.
const ADDRESSED_TO_RECLUSTER: [(&str, &str); 8] = [
    ("LISTEN_FDS", "2"),
    ("LISTEN_PID", "1"),
    ("LISTEN_FDNAMES", "planted:names"),
    ("WATCHDOG_USEC", "600000000"),
    ("WATCHDOG_PID", "1"),
    ("EINHORN_FD_COUNT", "0"),
    ("EINHORN_SOCK_PATH", "/nonexistent/einhorn.sock"),
    ("EINHORN_MASTER_PID", "1"),
];

#[test]
fn a_hook_never_sees_what_recluster_s_service_manager_addressed_to_recluster() {
    let manager = FakeManager::new("hook-env");
    let dump = std::env::temp_dir().join(format!("recluster-hook-env-{}", std::process::id()));
    let _ = std::fs::remove_file(&dump);
    // Written whole, then renamed: the test never reads half a dump.
    let hook = format!("spawn=env > {0}.tmp && mv {0}.tmp {0}", dump.display());
    let mut launch = Launch::new(cluster_args(&["-n", "1", "--on", &hook], &[]))
        .env("NOTIFY_SOCKET", &manager.path)
        .env("RECLUSTER_TEST_CANARY", "inherited");
    for (key, value) in ADDRESSED_TO_RECLUSTER {
        launch = launch.env(key, value);
    }
    let mut cluster = launch.start();
    cluster.ready(1);
    assert!(
        eventually(|| dump.exists()),
        "the spawn hook wrote no environment"
    );
    let text = std::fs::read_to_string(&dump).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(names.contains(&"RECLUSTER_TEST_CANARY"), "{text}");
    assert!(text.contains("RECLUSTER_EVENT=spawn"), "{text}");
    let leaked: Vec<&str> = text
        .lines()
        .filter(|line| {
            let name = line.split('=').next().unwrap_or("");
            name == "NOTIFY_SOCKET" || ADDRESSED_TO_RECLUSTER.iter().any(|(k, _)| *k == name)
        })
        .collect();
    assert!(leaked.is_empty(), "the hook inherited {leaked:?}");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    let _ = std::fs::remove_file(&dump);
}
