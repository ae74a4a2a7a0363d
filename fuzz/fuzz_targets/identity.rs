//! `Identity::from_json` on any bytes: never panics; an accepted identity has only safe names
//! (no ':' and no control characters, so channel keys cannot alias), no groups without a user,
//! sorted unique groups, and survives a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Identity;

fn safe(name: &str) -> bool {
    !name.is_empty() && !name.contains(':') && !name.chars().any(char::is_control)
}

fuzz_target!(|body: &[u8]| {
    let Ok(identity) = Identity::from_json(body) else {
        return;
    };
    if let Some(user) = &identity.user {
        assert!(safe(user.as_str()), "user {user:?}");
    } else {
        assert!(identity.groups.is_empty(), "groups without a user");
    }
    for group in &identity.groups {
        assert!(safe(group.as_str()), "group {group:?}");
    }
    assert!(
        identity.groups.windows(2).all(|w| w[0] < w[1]),
        "groups not sorted and unique"
    );
    if let Some(session) = &identity.session {
        assert!(safe(session.as_str()), "session {session:?}");
    }
    let json = serde_json::to_vec(&identity).expect("serialize");
    assert_eq!(Identity::from_json(&json).expect("round trip"), identity);
});
