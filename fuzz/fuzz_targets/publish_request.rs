//! `PublishRequest::from_json` + `into_publication` on any bytes: never panics; an accepted
//! publication addresses 1 to MAX_CHANNELS distinct channels, all under the prefix, with an
//! expire within the limit.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use protocol::{KeyPrefix, PublishRequest};

fuzz_target!(|body: &[u8]| {
    let Ok(request) = PublishRequest::from_json(body) else {
        return;
    };
    let prefix = KeyPrefix::new("fz").expect("prefix");
    let Ok(publication) = request.into_publication(&prefix, 3600) else {
        return;
    };
    let n = publication.channels.len();
    assert!(
        (1..=PublishRequest::MAX_CHANNELS).contains(&n),
        "{n} channels"
    );
    assert!(publication.expire <= PublishRequest::MAX_EXPIRE);
    let unique: HashSet<&str> = publication.channels.iter().map(|c| c.as_str()).collect();
    assert_eq!(unique.len(), n, "duplicate channels");
    for channel in &publication.channels {
        let name = channel.as_str();
        assert!(name.starts_with("fz:"), "{name:?} outside the prefix");
        assert!(
            !name.chars().any(char::is_control),
            "control character in {name:?}"
        );
    }
});
