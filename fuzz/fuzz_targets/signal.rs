//! A signal name or number (`ctl signal`, the control request's `"signal"`, `--stop-signal`:
//! `signal::Sig`). Properties: no panic; a signal that parses is in 1..=SIGRTMAX; its number
//! (what requests carry) and its name, where it has one (32 and 33 have none), parse to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::process::signal::Sig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sig) = text.parse::<Sig>() {
        assert!((1..=libc::SIGRTMAX()).contains(&sig.number()));
        assert_eq!(sig.number().to_string().parse::<Sig>(), Ok(sig), "{text:?}");
        let name = sig.to_string();
        if name.starts_with("SIG") {
            assert_eq!(name.parse::<Sig>(), Ok(sig), "{text:?}");
        }
    }
});
