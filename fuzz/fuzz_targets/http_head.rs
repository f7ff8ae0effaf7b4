//! An admin HTTP request head, as any host that reaches `--admin` sends it (`admin::http`).
//! Properties: no panic; `head_end` points just past the first blank line; a parsed request holds
//! only pieces of the head (no field longer than it, no space in the method or target, no line
//! break anywhere); a refusal is a 400 or a 505 that can be written; the Host check answers for
//! every kind of listening address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::frontend::admin::http::{head_end, host_allowed, parse};
use recluster::net::listen::ListenAddress;

fuzz_target!(|data: &[u8]| {
    if let Some(end) = head_end(data) {
        assert!(end <= data.len());
        assert_eq!(&data[end - 4..end], b"\r\n\r\n");
        assert!(
            head_end(&data[..end - 1]).is_none(),
            "not the first blank line"
        );
    }
    let addresses = [
        ListenAddress::Tcp {
            host: None,
            port: 9000,
        },
        ListenAddress::Tcp {
            host: Some("127.0.0.1".into()),
            port: 9000,
        },
        ListenAddress::Tcp {
            host: Some("::".into()),
            port: 9000,
        },
        ListenAddress::Tcp {
            host: Some("admin.internal".into()),
            port: 9000,
        },
        ListenAddress::Unix("/run/admin.sock".into()),
    ];
    match parse(data) {
        Ok(request) => {
            let fields = [
                &request.method,
                &request.path,
                &request.query,
                &request.accept,
            ];
            let total: usize = fields.iter().map(|f| f.len()).sum::<usize>()
                + request.host.as_ref().map_or(0, String::len);
            assert!(total <= data.len());
            assert!(!request.method.contains(' ') && !request.path.contains(' '));
            for field in fields.into_iter().chain(request.host.as_ref()) {
                assert!(!field.contains("\r\n"), "{field:?}");
            }
            for address in &addresses {
                host_allowed(request.host.as_deref(), request.http10, address);
            }
        }
        Err(response) => {
            assert!(matches!(response.status, 400 | 505), "{}", response.status);
            assert!(!response.to_bytes(false).is_empty());
        }
    }
    if let Ok(host) = std::str::from_utf8(data) {
        for address in &addresses {
            host_allowed(Some(host), false, address);
        }
    }
});
