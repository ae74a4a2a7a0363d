//! `Flags::from_query` on any query string: never panics, and the flags it finds survive a
//! round trip through their canonical names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Flags;

fuzz_target!(|query: &str| {
    let flags = Flags::from_query(query);
    let canonical: Vec<String> = flags.iter().map(|f| f.name()).collect();
    let again = Flags::from_query(&canonical.join("&"));
    assert_eq!(
        flags, again,
        "round trip of {query:?} through {canonical:?}"
    );
});
