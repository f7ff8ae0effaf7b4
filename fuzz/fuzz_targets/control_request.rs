//! A control request line, as a local client sends it (`control::protocol::parse_request`), and
//! the worker references and scale counts inside it. Properties: no panic; a request that parses
//! writes back (`to_line`) as a line that parses to the same request, not much longer than the
//! input; `WorkerRef` and `ScaleBy` survive Display → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::frontend::control::protocol::parse_request;
use recluster::frontend::request::{ScaleBy, WorkerRef};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_request(data) {
        let line = request.to_line();
        assert!(
            line.len() <= 4 * data.len() + 64,
            "{} bytes written back from {}",
            line.len(),
            data.len()
        );
        assert_eq!(parse_request(line.as_bytes()), Ok(request), "{line}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(worker) = text.parse::<WorkerRef>() {
            assert_eq!(worker.to_string().parse::<WorkerRef>(), Ok(worker));
        }
        if let Ok(by) = text.parse::<ScaleBy>() {
            assert_eq!(by.to_string().parse::<ScaleBy>(), Ok(by));
            // A cluster has a worker at least; only `To(0)` asks for none.
            for current in [1, 2, u32::MAX] {
                if let Some(n) = by.target(current) {
                    assert!(n > 0 || by == ScaleBy::To(0));
                }
            }
        }
    }
});
