//! A listen address with its optional name (`-l/--listen`, `--admin`, or their environment twins:
//! `listen::ListenSpec`). Properties: no panic; an address written back (Display, as logs, status
//! and `--plan` show it) parses to the same address, and `NAME=` plus it to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::net::listen::{ListenSpec, parse_address};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<ListenSpec>() {
        let shown = spec.address.to_string();
        assert_eq!(
            parse_address(&shown).as_ref(),
            Ok(&spec.address),
            "{text:?} shown as {shown:?}"
        );
        let named = format!("{}={shown}", spec.name);
        assert_eq!(named.parse::<ListenSpec>(), Ok(spec), "{named:?}");
    }
});
