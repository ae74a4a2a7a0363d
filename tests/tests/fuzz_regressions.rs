//! Inputs from fuzzing, replayed on every test run through the same functions and checks as the
//! cargo-fuzz targets in `fuzz/fuzz_targets/` (see scripts/fuzz.sh): the committed seeds in
//! `fuzz/seeds/<target>/` and every crash turned into a regression in
//! `fuzz/regressions/<target>/` (drop the crashing input from `fuzz/artifacts/<target>/` there,
//! with a name saying what it broke). No crash has been found so far.

use std::collections::HashSet;
use std::path::PathBuf;

use protocol::{Facility, Flags, Identity, KeyPrefix, PublishRequest};
use wsserver::frame_reader::{FrameReader, Message, ReadError};

/// Every input file for `target`, seeds first.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).expect("read fuzz input");
            out.push((path, bytes));
        }
    }
    assert!(!out.is_empty(), "no inputs for {target} under {}", fuzz.display());
    out
}

fn safe(name: &str) -> bool {
    !name.is_empty() && !name.contains(':') && !name.chars().any(char::is_control)
}

#[test]
fn flags_inputs() {
    for (path, bytes) in inputs("flags") {
        let Ok(query) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let flags = Flags::from_query(query);
        let canonical: Vec<String> = flags.iter().map(|f| f.name()).collect();
        assert_eq!(flags, Flags::from_query(&canonical.join("&")), "{}", path.display());
    }
}

#[test]
fn facility_inputs() {
    for (path, bytes) in inputs("facility") {
        let Ok(raw) = std::str::from_utf8(&bytes) else {
            continue;
        };
        for prefix in ["/ws/", "/"] {
            if let Ok(facility) = Facility::from_path(raw, prefix) {
                let s = facility.as_str();
                assert!(s.len() <= Facility::MAX_LEN, "{}", path.display());
                assert!(!s.chars().any(char::is_control), "{}", path.display());
                assert_eq!(Facility::parse(s).as_ref(), Ok(&facility), "{}", path.display());
            }
        }
        let _ = Facility::parse_encoded(raw);
    }
}

#[test]
fn identity_inputs() {
    for (path, bytes) in inputs("identity") {
        let Ok(identity) = Identity::from_json(&bytes) else {
            continue;
        };
        let what = path.display();
        match &identity.user {
            Some(user) => assert!(safe(user.as_str()), "{what}"),
            None => assert!(identity.groups.is_empty(), "{what}"),
        }
        assert!(identity.groups.iter().all(|g| safe(g.as_str())), "{what}");
        assert!(identity.groups.windows(2).all(|w| w[0] < w[1]), "{what}");
        let json = serde_json::to_vec(&identity).expect("serialize");
        assert_eq!(Identity::from_json(&json).expect("round trip"), identity, "{what}");
    }
}

#[test]
fn publish_request_inputs() {
    let prefix = KeyPrefix::new("fz").expect("prefix");
    for (path, bytes) in inputs("publish_request") {
        let Ok(request) = PublishRequest::from_json(&bytes) else {
            continue;
        };
        let Ok(publication) = request.into_publication(&prefix, 3600) else {
            continue;
        };
        let what = path.display();
        let n = publication.channels.len();
        assert!((1..=PublishRequest::MAX_CHANNELS).contains(&n), "{what}");
        let unique: HashSet<&str> = publication.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(unique.len(), n, "{what}");
        assert!(publication.channels.iter().all(|c| c.as_str().starts_with("fz:")), "{what}");
    }
}

#[tokio::test]
async fn frame_reader_inputs() {
    for (path, data) in inputs("frame_reader") {
        if data.len() < 2 {
            continue;
        }
        let what = path.display();
        let max = 125 + usize::from(u16::from_be_bytes([data[0], data[1]]) % 4096);
        let mut io = &data[2..];
        let mut reader = FrameReader::new(max);
        for _ in 0..=data.len() {
            match reader.next_message(&mut io).await {
                Ok(Message::Text(text)) => {
                    assert!(text.len() <= max && std::str::from_utf8(&text).is_ok(), "{what}")
                }
                Ok(Message::Binary(bytes)) => assert!(bytes.len() <= max, "{what}"),
                Ok(Message::Ping(payload)) => assert!(payload.len() <= 125, "{what}"),
                Ok(Message::Pong | Message::Close(_)) => {}
                Err(ReadError::Gone) => break,
                Err(ReadError::Violation(v)) => {
                    assert!(matches!(v.code, 1002 | 1007 | 1009), "{what}: {}", v.code);
                    break;
                }
            }
        }
    }
}
