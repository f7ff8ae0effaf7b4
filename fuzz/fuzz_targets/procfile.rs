//! A Procfile, as an application's repository ships it (`groups::parse_procfile`). Properties: no
//! panic; every entry has a valid, unique name and a one-line command with no blanks around it;
//! the entries written back as `name: command` lines parse to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::config::groups::parse_procfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = parse_procfile(text) else {
        return;
    };
    assert!(!entries.is_empty());
    for (i, (name, command)) in entries.iter().enumerate() {
        assert!(!name.is_empty());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert!(!command.is_empty() && !command.contains('\n'));
        assert_eq!(command.trim(), command);
        assert!(entries[..i].iter().all(|(other, _)| other != name));
    }
    let written: String = entries.iter().map(|(n, c)| format!("{n}: {c}\n")).collect();
    assert_eq!(parse_procfile(&written), Ok(entries));
});
