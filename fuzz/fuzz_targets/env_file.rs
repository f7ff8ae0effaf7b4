//! An env file, as an application's repository or a deploy tool writes it (`--env-file`:
//! `env_file::parse`). Properties: no panic; an error names a line the input has; every variable
//! has a valid name and a value without NUL; the variables written back in double quotes (every
//! special byte escaped) parse to the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::config::env_file::parse;

fuzz_target!(|data: &[u8]| {
    let vars = match parse(data) {
        Ok(vars) => vars,
        Err(e) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!((1..=lines).contains(&e.line), "{e:?}");
            return;
        }
    };
    let mut written = Vec::new();
    for (key, value) in &vars {
        let key = key.as_encoded_bytes();
        let value = value.as_encoded_bytes();
        assert!(!key.is_empty() && !key[0].is_ascii_digit());
        assert!(key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_'));
        assert!(!value.contains(&0));
        written.extend_from_slice(key);
        written.extend_from_slice(b"=\"");
        for &b in value {
            match b {
                b'"' | b'\\' | b'$' | b'`' => written.extend_from_slice(&[b'\\', b]),
                _ => written.push(b),
            }
        }
        written.extend_from_slice(b"\"\n");
    }
    assert_eq!(parse(&written).ok().as_ref(), Some(&vars));
});
