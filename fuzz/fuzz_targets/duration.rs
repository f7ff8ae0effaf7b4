//! A duration (`--kill-timeout`, `--watchdog` and the other DUR flags, or their environment
//! twins: `cli::parse_duration`). Properties: no panic; a duration that parses can be added to
//! now (every timer does that); written back by humantime, it parses to the same duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::config::cli::parse_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = parse_duration(text) {
        assert!(
            std::time::Instant::now().checked_add(duration).is_some(),
            "{text:?}"
        );
        let written = humantime::format_duration(duration).to_string();
        assert_eq!(parse_duration(&written), Ok(duration), "{written}");
    }
});
