//! `Facility::from_path` on any path: never panics; what it accepts is within the documented
//! limits (at most 200 bytes, no control characters) and parses again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Facility;

fuzz_target!(|path: &str| {
    for prefix in ["/ws/", "/"] {
        if let Ok(facility) = Facility::from_path(path, prefix) {
            let s = facility.as_str();
            assert!(
                s.len() <= Facility::MAX_LEN,
                "{} bytes from {path:?}",
                s.len()
            );
            assert!(
                !s.chars().any(char::is_control),
                "control character from {path:?}"
            );
            assert_eq!(Facility::parse(s).as_ref(), Ok(&facility));
        }
    }
    let _ = Facility::parse_encoded(path);
});
