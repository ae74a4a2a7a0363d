//! The history in a real redis-server: append-and-publish (offsets, epoch, positioned payload,
//! ws4redis last message, bounds by size and TTL) and the read a reconnecting socket makes
//! (recovered, too old, epoch changed after a Redis restart without persistence).

use std::time::Duration;

use crier_tests::{wait_until, Redis};
use protocol::{
    ChannelName, Facility, GapReason, HistoryFacilities, HistorySettings, KeyPrefix, Position, Recover, Status,
};
use service::history::History;

fn history(size: u32, ttl_s: u64) -> History {
    let settings = HistorySettings::new(HistoryFacilities::All, size, Duration::from_secs(ttl_s)).unwrap();
    History::new(settings, KeyPrefix::new("ws4redis").unwrap())
}

fn channel(facility: &str) -> ChannelName {
    KeyPrefix::new("ws4redis").unwrap().broadcast(&Facility::parse(facility).unwrap())
}

fn reconnect(at: Position) -> Recover {
    Recover { positions: vec![at] }
}

async fn publish(redis: &Redis, h: &History, c: &ChannelName, text: &str, expire: u64) -> Position {
    let mut conn = redis.conn().await;
    h.append_and_publish(&mut conn, std::slice::from_ref(c), text.as_bytes(), expire).await.unwrap()[0].position
}

#[tokio::test]
async fn appends_get_growing_offsets_and_are_published_with_their_position() {
    let redis = Redis::start().await;
    let h = history(100, 60);
    let c = channel("chat");
    // A plain subscriber, as a foreign client of the channel would be.
    let mut sub = redis.client().get_connection().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = c.as_str().to_owned();
    let listener = std::thread::spawn(move || {
        let mut pubsub = sub.as_pubsub();
        pubsub.subscribe(&name).unwrap();
        pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ready_tx.send(()).unwrap();
        (0..2).map(|_| pubsub.get_message().unwrap().get_payload_bytes().to_vec()).collect::<Vec<_>>()
    });
    ready_rx.recv().unwrap();
    wait_until(Duration::from_secs(10), "the listener subscribed", || async { redis.numsub(c.as_str()).await == 1 })
        .await;

    let first = publish(&redis, &h, &c, "one", 0).await;
    let second = publish(&redis, &h, &c, "two", 30).await;
    assert_eq!((first.offset, second.offset), (1, 2));
    assert_eq!(first.epoch, second.epoch);

    let raw = tokio::task::spawn_blocking(move || listener.join().unwrap()).await.unwrap();
    let decoded: Vec<_> = raw.iter().map(|r| protocol::positioned::decode(r)).collect();
    assert_eq!(decoded[0].position, Some(first));
    assert_eq!(decoded[0].payload, b"one");
    assert_eq!(decoded[1].position, Some(second));
    assert_eq!(decoded[1].payload, b"two");

    // The ws4redis last message is the plain payload, only when expire > 0.
    assert_eq!(redis.get(c.as_str()).await.as_deref(), Some("two"));
    assert!((1..=30).contains(&redis.ttl(c.as_str()).await));
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    assert!((1..=60).contains(&redis.ttl(&prefix.history_stream(&c)).await));
    assert!(redis.ttl(&prefix.history_meta(&c)).await > 60);
}

#[tokio::test]
async fn a_reconnect_reads_what_it_missed() {
    let redis = Redis::start().await;
    let h = history(100, 60);
    let c = channel("chat");
    let mut conn = redis.conn().await;
    let first = h.read(&mut conn, std::slice::from_ref(&c), &Recover::default()).await.unwrap().remove(0);
    assert_eq!(first.top.offset, 0, "a first connection gets a position even before any publish");
    let start = first.recovery(&Recover::default());
    let Status::Position(Some(at)) = start.status else { panic!("{:?}", start.status) };
    for i in 1..=5 {
        let p = publish(&redis, &h, &c, &format!("m{i}"), 0).await;
        assert_eq!(p.epoch, at.epoch, "the epoch created by the read is the one publishes use");
    }
    let read = h.read(&mut conn, std::slice::from_ref(&c), &reconnect(Position { epoch: at.epoch, offset: 2 })).await;
    let r = read.unwrap().remove(0).recovery(&reconnect(Position { epoch: at.epoch, offset: 2 }));
    assert_eq!(r.status, Status::Recovered { position: Position { epoch: at.epoch, offset: 2 }, missed: 3 });
    let texts: Vec<_> = r.missed.iter().map(|e| (e.offset, String::from_utf8(e.payload.clone()).unwrap())).collect();
    assert_eq!(texts, vec![(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]);
    assert_eq!(r.live_after, Some(Position { epoch: at.epoch, offset: 5 }));
}

#[tokio::test]
async fn history_is_bounded_by_size_and_a_position_older_than_it_is_a_gap() {
    let redis = Redis::start().await;
    let h = history(10, 60);
    let c = channel("chat");
    let mut last = None;
    for i in 1..=13 {
        last = Some(publish(&redis, &h, &c, &format!("m{i}"), 0).await);
    }
    let last = last.unwrap();
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    let len: u64 = redis.query(redis::cmd("XLEN").arg(prefix.history_stream(&c))).await;
    assert!(len >= 10, "at least size 10 stored after 13 messages, got {len}");

    let mut conn = redis.conn().await;
    let served = Recover { positions: vec![Position { epoch: last.epoch, offset: 3 }] };
    let r = h.read(&mut conn, std::slice::from_ref(&c), &served).await.unwrap().remove(0).recovery(&served);
    assert_eq!(r.status, Status::Recovered { position: Position { epoch: last.epoch, offset: 3 }, missed: 10 });
    let too_old = Recover { positions: vec![Position { epoch: last.epoch, offset: 2 }] };
    let r = h.read(&mut conn, std::slice::from_ref(&c), &too_old).await.unwrap().remove(0).recovery(&too_old);
    assert_eq!(r.status, Status::Gap { reason: GapReason::TooOld, continue_from: Some(last) });
    assert!(r.missed.is_empty());
}

/// The stream is trimmed approximately (whole nodes): Redis stores between `size` and `size` + one
/// node's entries, but a reconnect is served exactly the last `size` messages, and a position
/// one further back is a gap even while the stream still holds the message after it.
#[tokio::test]
async fn approximate_trimming_stores_a_bounded_surplus_and_serves_exactly_size() {
    let redis = Redis::start().await;
    let size = 10;
    let h = history(size, 60);
    let c = channel("chat");
    let mut last = None;
    for i in 1..=250 {
        last = Some(publish(&redis, &h, &c, &format!("m{i}"), 0).await);
    }
    let last = last.unwrap();
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    let stream = prefix.history_stream(&c);
    let node: Vec<String> = redis.query(redis::cmd("CONFIG").arg("GET").arg("stream-node-max-entries")).await;
    let node: u64 = node[1].parse().unwrap();
    let len: u64 = redis.query(redis::cmd("XLEN").arg(&stream)).await;
    assert!(len >= u64::from(size) && len <= u64::from(size) + node, "stored {len} of 250 (size {size}, node {node})");
    assert!(len > u64::from(size), "this test needs a surplus to show it is not served");
    let beyond = format!("{}-0", last.offset - u64::from(size));
    let held: Vec<redis::Value> = redis.query(redis::cmd("XRANGE").arg(&stream).arg(&beyond).arg(&beyond)).await;
    assert_eq!(held.len(), 1, "the message just beyond the bound is still stored");

    let mut conn = redis.conn().await;
    let at = |offset| Recover { positions: vec![Position { epoch: last.epoch, offset }] };
    let served = at(last.offset - u64::from(size));
    let r = h.read(&mut conn, std::slice::from_ref(&c), &served).await.unwrap().remove(0).recovery(&served);
    assert_eq!(r.status, Status::Recovered { position: Position { epoch: last.epoch, offset: 240 }, missed: 10 });
    let offsets: Vec<u64> = r.missed.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (241..=250).collect::<Vec<_>>());
    assert_eq!(r.missed[9].payload, b"m250");
    let too_old = at(last.offset - u64::from(size) - 1);
    let r = h.read(&mut conn, std::slice::from_ref(&c), &too_old).await.unwrap().remove(0).recovery(&too_old);
    assert_eq!(r.status, Status::Gap { reason: GapReason::TooOld, continue_from: Some(last) });
    assert!(r.missed.is_empty());
}

#[tokio::test]
async fn history_expires_after_its_ttl_but_the_epoch_stays() {
    let redis = Redis::start().await;
    let h = history(100, 1);
    let c = channel("chat");
    let p = publish(&redis, &h, &c, "soon gone", 0).await;
    let stream = KeyPrefix::new("ws4redis").unwrap().history_stream(&c);
    wait_until(Duration::from_secs(10), "the history expired", || async { !redis.exists(&stream).await }).await;
    let mut conn = redis.conn().await;
    let behind = Recover { positions: vec![Position { epoch: p.epoch, offset: 0 }] };
    let r = h.read(&mut conn, std::slice::from_ref(&c), &behind).await.unwrap().remove(0).recovery(&behind);
    assert_eq!(r.status, Status::Gap { reason: GapReason::TooOld, continue_from: Some(p) });
    let next = publish(&redis, &h, &c, "after", 0).await;
    assert_eq!(next, Position { epoch: p.epoch, offset: 2 }, "offsets keep growing in the same epoch");
}

#[tokio::test]
async fn redis_restarted_without_persistence_starts_a_new_epoch() {
    let mut redis = Redis::start().await;
    let h = history(100, 60);
    let c = channel("chat");
    let before = publish(&redis, &h, &c, "before", 0).await;
    redis.restart().await;
    // A new server does not know the script either: EVALSHA falls back to loading it.
    let after = publish(&redis, &h, &c, "after", 0).await;
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(after.offset, 1);
    let mut conn = redis.conn().await;
    let old = reconnect(before);
    let r = h.read(&mut conn, std::slice::from_ref(&c), &old).await.unwrap().remove(0).recovery(&old);
    assert_eq!(r.status, Status::Gap { reason: GapReason::EpochChanged, continue_from: Some(after) });
}

#[tokio::test]
async fn a_lost_meta_key_starts_a_new_epoch_instead_of_failing() {
    let redis = Redis::start().await;
    let h = history(100, 60);
    let c = channel("chat");
    for i in 0..3 {
        publish(&redis, &h, &c, &format!("m{i}"), 0).await;
    }
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    // As an eviction would: the meta goes, the stream (ids up to 3) stays.
    let _: i64 = redis.query(redis::cmd("DEL").arg(prefix.history_meta(&c))).await;
    let _: () = redis.query(redis::cmd("SCRIPT").arg("FLUSH")).await;
    let p = publish(&redis, &h, &c, "fresh", 0).await;
    assert_eq!(p.offset, 1);
    let len: u64 = redis.query(redis::cmd("XLEN").arg(prefix.history_stream(&c))).await;
    assert_eq!(len, 1, "the stale stream was cleared");
}

#[tokio::test]
async fn a_meta_key_that_expired_starts_a_new_epoch_and_clears_the_stream() {
    let redis = Redis::start().await;
    let h = history(100, 60);
    let c = channel("chat");
    let mut before = None;
    for i in 0..3 {
        before = Some(publish(&redis, &h, &c, &format!("m{i}"), 0).await);
    }
    let before = before.unwrap();
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    let meta = prefix.history_meta(&c);
    let _: i64 = redis.query(redis::cmd("PEXPIRE").arg(&meta).arg(1)).await;
    wait_until(Duration::from_secs(10), "the meta expired", || async { !redis.exists(&meta).await }).await;
    let after = publish(&redis, &h, &c, "fresh", 0).await;
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(after.offset, 1);
    let len: u64 = redis.query(redis::cmd("XLEN").arg(prefix.history_stream(&c))).await;
    assert_eq!(len, 1, "the stream of the old epoch was cleared");
    let mut conn = redis.conn().await;
    let old = reconnect(before);
    let r = h.read(&mut conn, std::slice::from_ref(&c), &old).await.unwrap().remove(0).recovery(&old);
    assert_eq!(r.status, Status::Gap { reason: GapReason::EpochChanged, continue_from: Some(after) });
}

#[tokio::test]
async fn one_publish_to_several_channels_appends_to_each() {
    let redis = Redis::start().await;
    let h = history(100, 60);
    let prefix = KeyPrefix::new("ws4redis").unwrap();
    let f = Facility::parse("game").unwrap();
    let channels: Vec<ChannelName> =
        ["ann", "bob", "cat"].iter().map(|u| prefix.user(&protocol::Name::parse(u).unwrap(), &f)).collect();
    let mut conn = redis.conn().await;
    let first = h.append_and_publish(&mut conn, &channels, b"hello", 0).await.unwrap();
    let second = h.append_and_publish(&mut conn, &channels, b"again", 0).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|a| a.position.offset == 1));
    assert!(second.iter().all(|a| a.position.offset == 2));
    let epochs: std::collections::HashSet<_> = first.iter().map(|a| a.position.epoch).collect();
    assert_eq!(epochs.len(), 3, "each channel history has its own epoch");
}
