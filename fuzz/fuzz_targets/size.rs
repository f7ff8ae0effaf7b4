//! A size (`--max-memory` or `RECLUSTER_MAX_MEMORY`: `cli::parse_size`). Properties: no panic; a
//! size is more than 0; written back in bytes, or in the largest unit that divides it, it parses
//! to the same size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::config::cli::parse_size;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = parse_size(text) {
        assert!(bytes > 0);
        assert_eq!(parse_size(&bytes.to_string()), Ok(bytes));
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if bytes % (1 << shift) == 0 {
                assert_eq!(parse_size(&format!("{}{unit}", bytes >> shift)), Ok(bytes));
                break;
            }
        }
    }
});
