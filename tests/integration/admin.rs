//! `--admin`: every endpoint over real HTTP, the metrics through Prometheus's own parser, the
//! readiness probe at a stop, the Host check, slow clients, and the page in a real browser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Cluster, eventually, run_to_end};

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A raw request to `address` (HOST:PORT): `method path`, with these extra header lines.
fn request(address: &str, method: &str, path: &str, headers: &str) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let text = format!("{method} {path} HTTP/1.1\r\n{headers}\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_answer(&raw)
}

fn get(address: &str, path: &str) -> Answer {
    request(address, "GET", path, &format!("Host: {address}\r\n"))
}

/// Starts a cluster with `--admin 127.0.0.1:0` (and `args`); returns it and the address.
fn with_admin(args: &[&str], worker_args: &[&str]) -> (Cluster, String) {
    let mut all = vec!["--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut cluster = Cluster::start(&all, worker_args);
    let line = cluster.expect_log("admin endpoint at http://");
    let address = line
        .text
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    (cluster, address)
}

fn wait_ready(cluster: &Cluster, address: &str) {
    if !eventually(|| get(address, "/readyz").status == 200) {
        cluster.fail("/readyz never said 200");
    }
}

#[test]
fn every_endpoint_answers_as_documented() {
    let (mut cluster, address) = with_admin(&["-n", "2", "--min-uptime", "100ms"], &[]);
    let ready = cluster.ready(2);
    let pids: Vec<i64> = ready.iter().map(|l| l.num("pid") as i64).collect();
    // /readyz needs one ready worker (the default quorum); this test looks at both.
    if !eventually(|| {
        get(&address, "/readyz?verbose")
            .body
            .contains("2 of 2 workers ready")
    }) {
        cluster.fail("the two workers never were ready");
    }

    let livez = get(&address, "/livez");
    assert_eq!((livez.status, livez.body.as_str()), (200, "ok\n"));
    assert_eq!(livez.header("cache-control"), Some("no-store"));
    let verbose = get(&address, "/readyz?verbose");
    assert_eq!(verbose.status, 200);
    assert!(
        verbose.body.contains("[+] quorum: 2 of 2 workers ready"),
        "{}",
        verbose.body
    );

    let status = get(&address, "/status");
    assert_eq!(status.header("content-type"), Some("application/json"));
    let status: Value = serde_json::from_str(&status.body).unwrap();
    let shown: Vec<i64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(shown, pids);
    assert_eq!(status["cluster"]["pid"], cluster.pid);

    let metrics = get(&address, "/metrics");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        metrics
            .body
            .contains("recluster_worker_ready{worker_id=\"1\"} 1")
    );
    for pid in &pids {
        // As a label value: a bare pid can also be the digits of a figure (a start time, bytes).
        assert!(
            !metrics.body.contains(&format!("=\"{pid}\"")),
            "no series by pid"
        );
    }

    let page = get(&address, "/");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for pid in &pids {
        assert!(
            page.body.contains(&format!(">{pid}<")),
            "pid {pid} on the page"
        );
    }
    // The build it runs: the same words as `recluster --version`.
    let version = Command::new(crate::harness::recluster_bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.trim().trim_start_matches("recluster ");
    assert!(
        page.body.contains(&format!("recluster {version} ")),
        "{version:?} in the footer"
    );

    let head = request(&address, "HEAD", "/livez", &format!("Host: {address}\r\n"));
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("content-length"), Some("3"));
    let post = request(&address, "POST", "/livez", &format!("Host: {address}\r\n"));
    assert_eq!(post.status, 405, "read-only");
    assert_eq!(get(&address, "/nowhere").status, 404);
    let port = address.rsplit(':').next().unwrap();
    let localhost = request(
        &address,
        "GET",
        "/livez",
        &format!("Host: localhost:{port}\r\n"),
    );
    assert_eq!(localhost.status, 200);
    let foreign = request(
        &address,
        "GET",
        "/status",
        &format!("Host: rebound.example:{port}\r\n"),
    );
    assert_eq!(foreign.status, 403, "DNS rebinding");
    assert!(!foreign.body.contains(&pids[0].to_string()));
    let no_host = request(&address, "GET", "/status", "");
    assert_eq!(no_host.status, 403, "HTTP/1.1 without a Host");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

/// Runs Prometheus's own parser (prometheus_client, from PyPI) on `text`; returns the family
/// names it found, or what it said.
fn parse_with_prometheus_client(text: &str, openmetrics: bool) -> Result<Vec<String>, String> {
    let module = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        "import sys\nfrom {module} import text_string_to_metric_families as parse\n\
         for f in parse(sys.stdin.read()):\n    labels = sorted({{k for s in f.samples for k in s.labels}})\n    print(f.name, f.type, len(f.samples), ','.join(labels))\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

#[test]
fn metrics_pass_prometheus_own_parser_in_both_formats() {
    let (mut cluster, address) = with_admin(&["-n", "2", "--min-uptime", "100ms"], &[]);
    let ready = cluster.ready(2);
    wait_ready(&cluster, &address);
    // A restart, so a counter is not zero.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(ready[1].num("pid"), libc::SIGKILL) };
    cluster.expect("worker 1 again", |l| {
        l.is_worker("ready") && l.num("id") == 1
    });
    let text = get(&address, "/metrics").body;
    let families = parse_with_prometheus_client(&text, false)
        .unwrap_or_else(|e| panic!("the Prometheus parser refused it: {e}\n{text}"));
    for expected in [
        "recluster_workers gauge 5 state",
        "recluster_worker_ready gauge 2 worker_id",
        "recluster_worker_restarts counter 2 worker_id",
        "recluster_worker_start_time_seconds gauge 2 worker_id",
        "recluster_worker_cpu_seconds counter 2 worker_id",
        "recluster_worker_resident_memory_bytes gauge 2 worker_id",
        "recluster_worker_guard_actions counter 4 guard,worker_id",
        "recluster_generation gauge 1 ",
        "recluster_reloads counter 2 result",
        "recluster_build_info gauge 1 commit,linking,version",
        "process_cpu_seconds counter 1 ",
        "process_resident_memory_bytes gauge 1 ",
        "process_open_fds gauge 1 ",
    ] {
        assert!(
            families
                .iter()
                .any(|f| f == expected.trim_end() || f == expected),
            "no {expected:?} in {families:?}"
        );
    }
    assert!(
        text.contains("recluster_worker_restarts_total{worker_id=\"1\"} 1"),
        "{text}"
    );
    let open = request(
        &address,
        "GET",
        "/metrics",
        &format!("Host: {address}\r\nAccept: application/openmetrics-text; version=1.0.0\r\n"),
    );
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let families = parse_with_prometheus_client(&open.body, true)
        .unwrap_or_else(|e| panic!("the OpenMetrics parser refused it: {e}\n{}", open.body));
    assert!(
        families
            .iter()
            .any(|f| f.starts_with("recluster_build info")),
        "{families:?}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn readyz_fails_within_100ms_of_term_while_livez_stays_up() {
    let (mut cluster, address) = with_admin(
        &["-n", "2", "--min-uptime", "100ms", "--kill-timeout", "20s"],
        &["--ignore", "TERM"],
    );
    cluster.ready(2);
    wait_ready(&cluster, &address);
    let sent = Instant::now();
    cluster.send(libc::SIGTERM);
    let mut answer = get(&address, "/readyz");
    while answer.status == 200 && sent.elapsed() < Duration::from_secs(5) {
        answer = get(&address, "/readyz");
    }
    let took = sent.elapsed();
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("[-] not stopping"), "{}", answer.body);
    assert!(
        took < Duration::from_millis(100),
        "/readyz said 503 only after {took:?}"
    );
    // The workers still drain (they ignore TERM): recluster is alive and says so.
    cluster.expect("the workers got TERM", |l| l.is_worker("signal"));
    assert_eq!(get(&address, "/livez").status, 200);
    cluster.send(libc::SIGTERM); // a second one kills at once
    cluster.finish();
}

#[test]
fn readyz_stays_up_through_a_reload_and_follows_the_quorum() {
    let (mut cluster, address) = with_admin(&["-n", "2", "--min-uptime", "200ms"], &[]);
    cluster.ready(2);
    wait_ready(&cluster, &address);
    cluster.send(libc::SIGHUP);
    let mut answers = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get(&address, "/readyz");
        assert_eq!(answer.status, 200, "during the reload: {}", answer.body);
        answers += 1;
        let status: Value = serde_json::from_str(&get(&address, "/status").body).unwrap();
        if status["cluster"]["generation"] == 1 || Instant::now() > deadline {
            break;
        }
    }
    assert!(answers > 3, "{answers} probes during the reload");
    cluster.expect_log("reload to generation 1 complete");
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    // A count above N is refused at start; scaled below it, the cluster is not ready.
    let (mut cluster, address) = with_admin(&["-n", "3", "--ready-quorum", "3"], &[]);
    cluster.ready(3);
    cluster.expect_log("all 3 workers are ready");
    cluster.send(libc::SIGTTOU);
    let mut answer = get(&address, "/readyz");
    assert!(
        crate::harness::eventually(|| {
            answer = get(&address, "/readyz");
            answer.status == 503
        }),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("[-] quorum: 2 of 2 workers ready, 3 needed"),
        "{}",
        answer.body
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn three_hundred_slow_clients_from_one_address_do_not_keep_livez_from_answering() {
    let (mut cluster, address) = with_admin(&["-n", "1"], &[]);
    cluster.ready(1);
    let slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.").unwrap();
            s
        })
        .collect();
    let asked = Instant::now();
    let livez = get(&address, "/livez");
    let took = asked.elapsed();
    assert_eq!(livez.status, 200, "{}", livez.body);
    assert!(took < Duration::from_secs(1), "/livez took {took:?}");
    let answer = |mut stream: &TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        parse_answer(&raw)
    };
    // More than one peer may hold: the oldest made room for the newer ones.
    let evicted = answer(&slow[0]);
    assert_eq!(
        (evicted.status, evicted.body.as_str()),
        (503, "too many connections\n")
    );
    // A slow client that kept its place gets 408 once its time is up, not an answer.
    assert_eq!(answer(&slow[299]).status, 408);
    drop(slow);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn a_real_browser_shows_every_worker_on_the_page() {
    let (mut cluster, address) = with_admin(&["-n", "3", "--min-uptime", "100ms"], &[]);
    let ready = cluster.ready(3);
    // The page is checked for "3 / 3": every worker ready, not only the quorum.
    if !eventually(|| {
        get(&address, "/readyz?verbose")
            .body
            .contains("3 of 3 workers ready")
    }) {
        cluster.fail("the three workers never were ready");
    }
    let profile = std::env::temp_dir().join(format!("recluster-chromium-{}", std::process::id()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // No reaching for the network beyond loopback, and a profile of its own.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            // Time for the page's script to refresh the table from /status once.
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("http://{address}/"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("chromium (scripts/install-test-deps installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<tbody id=\"workers\">"), "{dom}");
    for line in &ready {
        let pid = line.num("pid");
        assert!(
            dom.contains(&format!(">{pid}<")),
            "pid {pid} not shown: {dom}"
        );
    }
    assert!(dom.contains("3 / 3"), "{dom}");
    assert!(
        dom.contains("id=\"live\">updated "),
        "the script refreshed the page from /status: {dom}"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}

#[test]
fn an_admin_address_in_use_exits_1_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run_to_end(&["--admin", &address, "--", "true"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{address}: address already in use")),
        "{stderr}"
    );
}

#[test]
fn every_interface_is_allowed_with_a_warning_and_a_unix_socket_works() {
    let mut cluster = Cluster::start(&["-n", "1", "--admin", ":0"], &[]);
    cluster.expect_log("is reachable beyond this host");
    cluster.ready(1);
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);

    let path = std::env::temp_dir().join(format!("recluster-admin-{}.sock", std::process::id()));
    let admin = format!("unix:{}", path.display());
    let mut cluster = Cluster::start(&["-n", "1", "--admin", &admin], &[]);
    cluster.ready(1);
    cluster.expect_log("admin endpoint at");
    let mut stream = UnixStream::connect(&path).unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_answer(&raw).status, 200);
    assert!(
        cluster.seen(|l| l.is_log("reachable beyond")).is_empty(),
        "a unix socket is local"
    );
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
    assert!(!path.exists(), "the socket is removed at exit");
}

#[test]
fn status_and_metrics_come_from_a_copy_rebuilt_at_most_once_a_second() {
    let (mut cluster, address) = with_admin(&["-n", "1"], &[]);
    cluster.ready(1);
    wait_ready(&cluster, &address);
    // Ask for 2.5 s: every answer in the same copy has the same uptime.
    let started = Instant::now();
    let mut copies: Vec<f64> = Vec::new();
    while started.elapsed() < Duration::from_millis(2500) {
        let status: Value = serde_json::from_str(&get(&address, "/status").body).unwrap();
        let uptime = status["cluster"]["uptime_seconds"].as_f64().unwrap();
        if copies.last() != Some(&uptime) {
            copies.push(uptime);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed().as_secs_f64();
    assert!(
        copies.len() >= 2 && copies.len() as f64 <= took.ceil() + 1.0,
        "{} copies in {took:.1} s: {copies:?}",
        copies.len()
    );
    for pair in copies.windows(2) {
        assert!(
            pair[1] - pair[0] >= 0.99,
            "rebuilt within a second: {copies:?}"
        );
    }
    cluster.send(libc::SIGTERM);
    assert_eq!(cluster.exit_code(), 0);
}
