//! A message line on `RECLUSTER_MSG_FD`, as a worker sends it (`messages::parse`), and the
//! target names in it (`request::Target`). Properties: no panic; a target written back as its
//! name (`request::target_name`) parses to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recluster::frontend::request::{Target, target_name};
use recluster::worker_io::messages::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok((to, _)) = parse(data) {
        assert_eq!(target_name(&to).parse::<Target>(), Ok(to));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(target) = text.parse::<Target>()
    {
        let name = target_name(&target);
        assert!(name.len() <= text.len() + 16);
        assert_eq!(name.parse::<Target>(), Ok(target));
    }
});
