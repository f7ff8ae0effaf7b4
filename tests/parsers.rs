//! Property tests of every parser that reads what a less trusted party wrote (the same parsers
//! `fuzz/` fuzzes, at a fraction of the time): control request lines, admin HTTP heads, notify
//! datagrams, worker messages, Procfiles, env files, durations, sizes, listen addresses and signals. Each
//! takes arbitrary input without a panic, and input built from its grammar parses to the value it
//! was built from. 256 cases per property: the whole file runs in about two seconds.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use recluster::config::cli::{MAX_DURATION, parse_duration, parse_size};
use recluster::config::env_file;
use recluster::config::groups::parse_procfile;
use recluster::frontend::admin::http;
use recluster::frontend::control::protocol::parse_request;
use recluster::frontend::request::{Request, ScaleBy, Target, WorkerRef, target_name};
use recluster::net::listen::{ListenAddress, ListenSpec, parse_address};
use recluster::process::signal::Sig;
use recluster::worker_io::messages;
use recluster::worker_io::notify::{Message, Watchdog};

/// 256 cases per property (proptest's default; `PROPTEST_CASES=N` for more); a failure prints
/// its smallest input, to be kept as a test of its own (nothing is written to disk).
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value a worker or a client may send as `data`, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sig() -> impl Strategy<Value = Sig> {
    (1..=libc::SIGRTMAX()).prop_map(|n| Sig::from_number(n).unwrap())
}

fn worker_ref() -> impl Strategy<Value = WorkerRef> {
    prop_oneof![
        any::<u32>().prop_map(WorkerRef::Id),
        (".{1,10}", any::<u32>()).prop_map(|(g, n)| WorkerRef::InGroup(g, n)),
        ".{1,10}".prop_map(WorkerRef::Group),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::All),
        Just(Target::Others),
        Just(Target::Recluster),
        any::<u32>().prop_map(Target::Worker),
        ".{1,10}".prop_map(Target::Group),
        (".{1,10}", any::<u32>()).prop_map(|(g, n)| Target::GroupWorker(g, n)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let scale_by = prop_oneof![
        any::<u32>().prop_map(ScaleBy::To),
        any::<u32>().prop_map(ScaleBy::Up),
        any::<u32>().prop_map(ScaleBy::Down),
    ];
    let ids = prop::collection::vec(worker_ref(), 0..4);
    prop_oneof![
        Just(Request::Hello),
        Just(Request::Status),
        Just(Request::Events),
        any::<bool>().prop_map(|wait| Request::Reload { wait }),
        any::<bool>().prop_map(|wait| Request::Stop { wait }),
        (scale_by, prop::option::of(".{0,10}"), any::<bool>())
            .prop_map(|(by, group, wait)| Request::Scale { by, group, wait }),
        (prop::collection::vec(worker_ref(), 1..4), any::<bool>())
            .prop_map(|(ids, wait)| Request::Restart { ids, wait }),
        (sig(), ids).prop_map(|(signal, ids)| Request::Signal { signal, ids }),
        (
            target().prop_filter("not recluster", |t| *t != Target::Recluster),
            json_value()
        )
            .prop_map(|(to, data)| Request::Send { to, data }),
    ]
}

proptest! {
    #![proptest_config(config())]

    // Control requests (a local client).

    #[test]
    fn a_control_line_of_any_bytes_is_answered_without_a_panic(line in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_request(&line);
    }

    #[test]
    fn a_control_line_of_json_is_answered_without_a_panic(value in json_value(), cmd in "[a-z]{0,8}") {
        let mut object = json!({"v": 1, "cmd": cmd});
        object["workers"] = value.clone();
        object["ids"] = value.clone();
        object["signal"] = value.clone();
        object["to"] = value.clone();
        object["wait"] = value;
        let _ = parse_request(object.to_string().as_bytes());
    }

    #[test]
    fn every_request_parses_back_from_its_line(request in request()) {
        prop_assert_eq!(parse_request(request.to_line().as_bytes()), Ok(request));
    }

    #[test]
    fn worker_refs_and_scale_counts_parse_back_from_their_text(worker in worker_ref(), by in any::<u32>(), text in ".{0,12}") {
        prop_assert_eq!(worker.to_string().parse::<WorkerRef>(), Ok(worker));
        for scale in [ScaleBy::To(by), ScaleBy::Up(by), ScaleBy::Down(by)] {
            prop_assert_eq!(scale.to_string().parse::<ScaleBy>(), Ok(scale));
        }
        let _ = text.parse::<WorkerRef>();
        let _ = text.parse::<ScaleBy>();
    }

    // Signals (a control request, --stop-signal).

    #[test]
    fn a_signal_parses_from_its_number_and_its_name(sig in sig()) {
        prop_assert_eq!(sig.number().to_string().parse::<Sig>(), Ok(sig));
        let name = sig.to_string();
        if let Some(bare) = name.strip_prefix("SIG") {
            prop_assert_eq!(name.parse::<Sig>(), Ok(sig));
            prop_assert_eq!(bare.to_ascii_lowercase().parse::<Sig>(), Ok(sig));
        }
    }

    #[test]
    fn any_signal_text_is_refused_or_in_range(
        text in ".{0,12}",
        offset in prop_oneof![any::<i32>(), Just(i32::MAX), Just(i32::MIN)],
    ) {
        for text in [text, format!("RTMIN+{offset}"), format!("SIGRTMAX-{offset}"), format!("rtmin{offset}")] {
            if let Ok(sig) = text.parse::<Sig>() {
                prop_assert!((1..=libc::SIGRTMAX()).contains(&sig.number()), "{}", text);
            }
        }
    }

    // Admin HTTP heads (any host that reaches --admin).

    #[test]
    fn an_http_head_of_any_bytes_is_answered_without_a_panic(head in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Some(end) = http::head_end(&head) {
            prop_assert_eq!(&head[end - 4..end], b"\r\n\r\n");
        }
        match http::parse(&head) {
            Ok(request) => {
                let address = ListenAddress::Tcp { host: Some("127.0.0.1".into()), port: 9000 };
                http::host_allowed(request.host.as_deref(), request.http10, &address);
            }
            Err(response) => prop_assert!(matches!(response.status, 400 | 505)),
        }
    }

    #[test]
    fn an_http_head_parses_to_what_it_was_built_from(
        method in "[A-Z]{1,7}",
        path in "/[!-~&&[^?]]{0,20}",
        query in prop::option::of("[!-~]{0,12}"),
        http10 in any::<bool>(),
        host in prop::option::of("[!-~]{1,20}"),
        accept in "[!-~]([ -~]{0,20}[!-~])?",
        other in "[A-Za-z-]{1,10}",
    ) {
        let mut head = format!("{method} {path}");
        if let Some(query) = &query {
            head += &format!("?{query}");
        }
        head += if http10 { " HTTP/1.0\r\n" } else { " HTTP/1.1\r\n" };
        if let Some(host) = &host {
            head += &format!("hOsT:  {host} \r\n");
        }
        if !other.eq_ignore_ascii_case("host") && !other.eq_ignore_ascii_case("accept") {
            head += &format!("{other}: x\r\n");
        }
        head += &format!("Accept:{accept}\r\n\r\n");
        prop_assert_eq!(http::head_end(head.as_bytes()), Some(head.len()));
        let request = http::parse(head.as_bytes()).unwrap();
        prop_assert_eq!(request, http::Request {
            method,
            path,
            query: query.unwrap_or_default(),
            host,
            accept,
            http10,
        });
    }

    // Notify datagrams (a worker, or anything in its tree).

    #[test]
    fn a_notify_datagram_of_any_bytes_parses_without_a_panic(datagram in prop::collection::vec(any::<u8>(), 0..256)) {
        let message = Message::parse(&datagram);
        if let Some(status) = message.status {
            prop_assert!(!status.contains('\n'));
            prop_assert!(status.len() <= 3 * datagram.len());
        }
    }

    #[test]
    fn a_notify_datagram_parses_to_what_it_was_built_from(
        ready in any::<bool>(),
        stopping in any::<bool>(),
        status in prop::option::of("[^\r\n]{0,40}"),
        watchdog in prop::option::of(prop_oneof![
            Just(Watchdog::Ping),
            Just(Watchdog::Trigger),
            any::<u64>().prop_map(Watchdog::Interval),
        ]),
        unknown in prop::collection::vec("[A-Z_]{1,8}=[^\n]{0,10}", 0..3),
    ) {
        let mut lines: Vec<String> = unknown
            .into_iter()
            .filter(|l| !["READY=", "STOPPING=", "STATUS=", "WATCHDOG=", "WATCHDOG_USEC="].iter().any(|k| l.starts_with(k)))
            .collect();
        if ready {
            lines.push("READY=1".into());
        }
        if stopping {
            lines.push("STOPPING=1".into());
        }
        if let Some(status) = &status {
            lines.push(format!("STATUS={status}"));
        }
        match watchdog {
            Some(Watchdog::Ping) => lines.push("WATCHDOG=1".into()),
            Some(Watchdog::Trigger) => lines.push("WATCHDOG=trigger".into()),
            Some(Watchdog::Interval(usec)) => lines.push(format!("WATCHDOG_USEC={usec}")),
            None => {}
        }
        let message = Message::parse(lines.join("\n").as_bytes());
        prop_assert_eq!(message, Message { ready, stopping, status, watchdog });
    }

    // Worker messages (a worker, on RECLUSTER_MSG_FD).

    #[test]
    fn a_worker_message_of_any_bytes_is_answered_without_a_panic(line in prop::collection::vec(any::<u8>(), 0..256), text in ".{0,16}") {
        let _ = messages::parse(&line);
        if let Ok(target) = text.parse::<Target>() {
            prop_assert_eq!(target_name(&target).parse::<Target>(), Ok(target));
        }
    }

    #[test]
    fn a_worker_message_parses_to_its_target_and_data(to in target(), data in json_value()) {
        let line = json!({"from": {"id": 99}, "to": target_name(&to), "data": data}).to_string();
        prop_assert_eq!(messages::parse(line.as_bytes()), Ok((to, data)));
    }

    // Procfiles (an application's repository).

    #[test]
    fn a_procfile_of_any_text_is_read_without_a_panic(text in "(.{0,20}\n?){0,8}") {
        if let Ok(entries) = parse_procfile(&text) {
            prop_assert!(!entries.is_empty());
        }
    }

    #[test]
    fn a_procfile_parses_to_the_entries_it_was_written_from(
        entries in prop::collection::btree_map("[A-Za-z0-9_-]{1,10}", "[^\\s#]([^\n]{0,20}[^\\s])?", 1..6),
        padding in prop::collection::vec(prop_oneof![Just(""), Just("# a comment: x"), Just("  \t")], 6),
        crlf in any::<bool>(),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        for ((name, command), padding) in entries.iter().zip(&padding) {
            text += &format!("{padding}{end} {name} :\t{command} {end}");
        }
        let expected: Vec<(String, String)> = entries.into_iter().collect();
        prop_assert_eq!(parse_procfile(&text), Ok(expected));
    }

    // Env files (`--env-file`: an application's repository, a deploy tool).

    #[test]
    fn an_env_file_of_any_bytes_is_read_without_a_panic(
        bytes in prop::collection::vec(prop_oneof![
            any::<u8>(),
            prop::sample::select(b"=#'\"\\$`{}( \t\r\nAx_".to_vec()),
        ], 0..200),
    ) {
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        match env_file::parse(&bytes) {
            Ok(vars) => for (key, value) in vars {
                prop_assert!(!key.is_empty());
                prop_assert!(!value.as_encoded_bytes().contains(&0));
            },
            Err(e) => prop_assert!((1..=lines).contains(&e.line), "{e:?} of {lines} lines"),
        }
    }

    #[test]
    fn an_env_file_parses_to_the_values_it_was_written_from(
        vars in prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", prop::collection::vec(1..=255u8, 0..24), 0..3usize, any::<bool>()), 1..8),
        crlf in any::<bool>(),
    ) {
        use std::os::unix::ffi::OsStrExt;
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text: Vec<u8> = Vec::new();
        let mut expected = Vec::new();
        for (key, value, form, export) in &vars {
            let reserved = recluster::process::environment::reserved(std::ffi::OsStr::new(key));
            if reserved || key == "export" {
                continue;
            }
            let bare_ok = !value.is_empty()
                && value.iter().all(|b| b.is_ascii_alphanumeric() || b"_-./:,+".contains(b));
            let single_ok = !value.contains(&b'\'');
            text.extend_from_slice(format!("# {key}{end}").as_bytes());
            if *export {
                text.extend_from_slice(b"export ");
            }
            text.extend_from_slice(key.as_bytes());
            text.extend_from_slice(b" = ");
            match form {
                0 if bare_ok => text.extend_from_slice(value),
                1 if single_ok => {
                    text.push(b'\'');
                    text.extend_from_slice(value);
                    text.push(b'\'');
                }
                _ => {
                    text.push(b'"');
                    for &b in value {
                        match b {
                            b'"' | b'\\' | b'$' | b'`' => text.extend_from_slice(&[b'\\', b]),
                            b'\n' => text.extend_from_slice(b"\\n"),
                            b'\r' => text.extend_from_slice(b"\\r"),
                            _ => text.push(b),
                        }
                    }
                    text.push(b'"');
                }
            }
            text.extend_from_slice(format!("  # note{end}{end}").as_bytes());
            expected.push((key.clone(), value.clone()));
        }
        let parsed = env_file::parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?} in {:?}", String::from_utf8_lossy(&text))))?;
        let parsed: Vec<(String, Vec<u8>)> = parsed
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    // Durations and sizes (flags and their environment twins).

    #[test]
    fn a_duration_parses_back_from_how_it_is_written(nanos in 0..=MAX_DURATION.as_nanos() as u64, text in ".{0,16}") {
        let duration = Duration::from_nanos(nanos);
        let written = humantime::format_duration(duration).to_string();
        prop_assert_eq!(parse_duration(&written), Ok(duration));
        prop_assert_eq!(parse_duration(&format!("{nanos}ns")), Ok(duration));
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(duration <= MAX_DURATION);
        }
    }

    #[test]
    fn a_duration_beyond_the_clock_is_refused(secs in MAX_DURATION.as_secs() + 1..) {
        let text = format!("{secs}s");
        prop_assert!(parse_duration(&text).is_err());
    }

    #[test]
    fn a_size_is_its_number_times_its_unit(number in 1..=u64::MAX, unit in 0..5usize, spelling in 0..3usize, lower in any::<bool>(), text in ".{0,12}") {
        let letters = ["", "K", "M", "G", "T"][unit];
        let suffix = match (unit, spelling) {
            (0, 1) => "B".to_string(),
            (0, _) => String::new(),
            (_, 0) => letters.to_string(),
            (_, 1) => format!("{letters}B"),
            _ => format!("{letters}iB"),
        };
        let mut written = format!("{number}{suffix}");
        if lower {
            written = written.to_lowercase();
        }
        match number.checked_mul(1 << (10 * unit)) {
            Some(bytes) => prop_assert_eq!(parse_size(&written), Ok(bytes)),
            None => prop_assert!(parse_size(&written).is_err()),
        }
        if let Ok(bytes) = parse_size(&text) {
            prop_assert!(bytes > 0);
        }
    }

    // Listen addresses (-l, --admin, their environment twins).

    #[test]
    fn a_listen_address_parses_back_from_how_it_is_shown(
        host in prop::option::of(prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            Just("unix".to_string()),
            "[^\\[\\]]{1,20}",
        ]),
        port in any::<u16>(),
        path in prop::option::of("[^\0]{1,40}"),
        name in prop::option::of("[ -~&&[^:/=]]{1,20}"),
    ) {
        let address = match path {
            Some(path) => ListenAddress::Unix(path.into()),
            None => ListenAddress::Tcp { host, port },
        };
        let shown = address.to_string();
        // A unix path is limited in bytes (sun_path), and 40 characters may be 160 bytes.
        if let ListenAddress::Unix(path) = &address
            && path.as_os_str().len() > 107
        {
            let refused = parse_address(&shown);
            prop_assert!(
                refused.as_ref().is_err_and(|e| e.contains("longer than 107 bytes")),
                "{}: {:?}", shown, refused
            );
            return Ok(());
        }
        // A host with `://` in it is read as a URL, and the answer says what to write instead.
        if let ListenAddress::Tcp { host: Some(host), .. } = &address
            && host.contains("://")
        {
            let refused = parse_address(&shown);
            prop_assert!(
                refused.as_ref().is_err_and(|e| e.contains("is a URL")),
                "{}: {:?}", shown, refused
            );
            return Ok(());
        }
        prop_assert_eq!(parse_address(&shown), Ok(address.clone()), "{}", shown);
        let spec = match &name {
            Some(name) => format!("{name}={shown}"),
            // Unnamed, `a=b:80` is the name a and the address b:80, as documented.
            None if shown.split_once('=').is_some_and(|(n, _)| !n.contains([':', '/'])) => {
                return Ok(());
            }
            None => shown,
        };
        let expected = ListenSpec { name: name.unwrap_or_else(|| "listen".into()), address };
        prop_assert_eq!(spec.parse::<ListenSpec>(), Ok(expected));
    }

    #[test]
    fn any_listen_text_is_refused_or_shown_as_it_parses(text in ".{0,24}") {
        if let Ok(spec) = text.parse::<ListenSpec>() {
            prop_assert_eq!(parse_address(&spec.address.to_string()), Ok(spec.address));
        }
    }
}

// What fuzzing found, kept as it was found.

#[test]
fn a_number_in_a_message_reaches_the_targets_unchanged() {
    // fuzz/fuzz_targets/control_request.rs: without serde_json's float_roundtrip, a float (or an
    // integer past u64) came out of recluster one unit in the last place off.
    let line = br#"{"v":1,"cmd":"send","to":"worker:b.2","data":{"k":[0,444444444444444444444444444444444444444444444444444444444444444444444444444205,"x"]}}"#;
    let request = parse_request(line).unwrap();
    assert_eq!(parse_request(request.to_line().as_bytes()), Ok(request));
    let (_, data) = messages::parse(br#"{"to":"all","data":-1.1454602446514469e29}"#).unwrap();
    assert_eq!(data.to_string(), "-1.1454602446514469e+29");
}
