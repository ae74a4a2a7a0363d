//! Presence: the scope, and the recorder against a local redis-server.

use super::*;
use crate::test_redis::TestRedis;

fn facility(name: &str) -> Facility {
    Facility::parse(name).unwrap()
}

#[test]
fn the_scope_covers_what_was_listed() {
    let list = |items: &[&str]| PresenceScope::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(!list(&[]).covers(&facility("lobby")), "empty: off");
    assert!(!list(&[" ", ""]).covers(&facility("lobby")), "blank items are ignored");
    assert!(list(&["lobby", " game "]).covers(&facility("game")));
    assert!(!list(&["lobby"]).covers(&facility("game")));
    let all = list(&["*"]);
    assert!(all.covers(&facility("game")));
    let events = format!("{}lobby", protocol::presence::EVENTS_FACILITY_PREFIX);
    assert!(!all.covers(&facility(&events)), "the events facilities themselves never record presence");
}

#[tokio::test]
async fn a_user_joins_with_the_first_socket_and_leaves_with_the_last() {
    let redis = TestRedis::start().await;
    let prefix = KeyPrefix::new("").unwrap();
    let lobby = facility("lobby");
    let mut events = redis.client.get_async_pubsub().await.unwrap();
    events.subscribe(prefix.presence_events(&lobby).as_str()).await.unwrap();
    let conn = service::redis_link::command_connection(redis.client.clone()).unwrap();
    let (presence, recorder) = PresenceRecorder::new(conn, prefix.clone(), PresenceScope::All, Duration::from_secs(30));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(recorder.run(cancel.clone()));
    let mut events = events.into_on_message();
    async fn next_event(events: &mut (impl futures_core::Stream<Item = redis::Msg> + Unpin)) -> String {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx));
        let message = tokio::time::timeout(Duration::from_secs(10), next).await.expect("an event").unwrap();
        String::from_utf8(message.get_payload_bytes().to_vec()).unwrap()
    }
    let alice = Name::parse("alice").unwrap();
    let first = presence.enter(&lobby, &alice).expect("covered");
    let join = |event: &str| PresenceEvent { event: event.into(), user: "alice".into(), facility: "lobby".into() };
    assert_eq!(next_event(&mut events).await, join("join").to_json());
    let second = presence.enter(&lobby, &alice).expect("covered");
    drop(first);
    // The second socket's enter and the first one's leave publish nothing: the next event
    // is the leave of the last socket.
    drop(second);
    assert_eq!(next_event(&mut events).await, join("leave").to_json());
    let mut conn = redis.connection().await;
    let members: Vec<String> =
        redis::cmd("ZRANGE").arg(prefix.presence(&lobby)).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert!(members.is_empty(), "{members:?}");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}
