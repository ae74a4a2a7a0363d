//! A client that stops reading: big messages fill the kernel buffers and then its bounded
//! outgoing queue, and wsserver closes it as a slow consumer (1008, counted) while the other
//! subscribers of the same channel keep receiving, as promptly as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_tests::raw::{RawConn, Read};
use crier_tests::{wait_until, Event, Stack, StackOptions, WsClient};

const QUEUE_DEPTH: &str = "4";
const MESSAGE_BYTES: usize = 128 * 1024;
const FAST_CLIENTS: usize = 3;
/// Messages measured before the slow consumer connects.
const BEFORE: usize = 30;
/// Most messages published while waiting for the slow consumer to be closed (~50 MB).
const MAX_DURING: usize = 400;
/// Pause between publications: the stream is paced so that latency, not backlog, is measured.
const GAP: Duration = Duration::from_millis(15);

/// `lat:<seq>:<micros since epoch>|` padded to MESSAGE_BYTES.
fn message(seq: usize, epoch: Instant) -> String {
    let mut m = format!("lat:{seq}:{}|", epoch.elapsed().as_micros());
    m.extend(std::iter::repeat_n('x', MESSAGE_BYTES - m.len()));
    m
}

fn parse(text: &str) -> Option<(usize, u128)> {
    let rest = text.strip_prefix("lat:")?;
    let (seq, rest) = rest.split_once(':')?;
    let (micros, _) = rest.split_once('|')?;
    Some((seq.parse().ok()?, micros.parse().ok()?))
}

/// Reads `client` until `last` (the sequence number that ends the test) arrives; returns
/// (seq, latency) for every measured message, in arrival order, and the client (still open).
async fn measure(mut client: WsClient, epoch: Instant, last: usize) -> (Vec<(usize, Duration)>, WsClient) {
    let mut seen = Vec::new();
    loop {
        match client.recv(Duration::from_secs(20)).await {
            Some(Event::Text(text)) => {
                let Some((seq, sent)) = parse(&text) else {
                    continue; // sync probes
                };
                let latency = Duration::from_micros((epoch.elapsed().as_micros() - sent) as u64);
                seen.push((seq, latency));
                if seq == last {
                    return (seen, client);
                }
            }
            other => panic!("a fast client got {other:?} after {} messages", seen.len()),
        }
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_that_stops_is_closed_as_slow_consumer_without_slowing_the_others() {
    let stack = Arc::new(
        Stack::start(
            StackOptions::default().without_nginx().without_webserver().ws_args(&["--queue-depth", QUEUE_DEPTH]),
        )
        .await,
    );
    let channel = stack.broadcast_channel("feed");
    let path = "/ws/feed?subscribe-broadcast";
    let closes_before =
        stack.metric("crier_ws_slow_consumer_closes_total").await.expect("crier_ws_slow_consumer_closes_total");

    let mut fast = Vec::new();
    for _ in 0..FAST_CLIENTS {
        fast.push(stack.connect_direct(path).await);
    }
    stack.sync(&channel, &mut fast).await;
    let epoch = Instant::now();
    // The number of the message that ends the run is only known later; readers stop on it.
    let end_seq = usize::MAX;
    let readers: Vec<_> = fast.into_iter().map(|c| tokio::spawn(measure(c, epoch, end_seq))).collect();

    // Before: only attentive readers.
    let mut seq = 0;
    for _ in 0..BEFORE {
        stack.redis.publish(&channel, &message(seq, epoch)).await;
        seq += 1;
        tokio::time::sleep(GAP).await; // the paced stream under test, see GAP
    }
    let before_end = seq;

    // A client that reads its first message and then never reads again.
    let mut slow = RawConn::connect_with_small_buffer(stack.ws_addr(), 4096).await;
    slow.upgrade(path).await;
    let mut probe = 0;
    loop {
        stack.redis.publish(&channel, &format!("probe-{probe}")).await;
        probe += 1;
        match slow.read_frame(Duration::from_millis(200)).await {
            Ok(_) => break,
            Err(Read::TimedOut) if probe < 50 => continue,
            Err(e) => panic!("the slow client never got a first message: {e:?}"),
        }
    }
    let stopped_reading = Instant::now();

    // During: big messages until wsserver gives up on the slow client.
    let during_start = seq;
    let mut closed_after = None;
    for i in 0..MAX_DURING {
        stack.redis.publish(&channel, &message(seq, epoch)).await;
        seq += 1;
        tokio::time::sleep(GAP).await; // the paced stream under test, see GAP
        if i % 5 == 4 && stack.metric("crier_ws_slow_consumer_closes_total").await > Some(closes_before) {
            closed_after = Some(i + 1);
            break;
        }
    }
    let closed_after = closed_after.unwrap_or_else(|| {
        panic!(
            "the slow consumer was not closed after {MAX_DURING} messages of {MESSAGE_BYTES} bytes \
             with --queue-depth {QUEUE_DEPTH}"
        )
    });
    eprintln!(
        "slow consumer closed after {closed_after} big messages, {:?} after it stopped reading",
        stopped_reading.elapsed()
    );
    // A few more while (and after) the server tears it down.
    for _ in 0..10 {
        stack.redis.publish(&channel, &message(seq, epoch)).await;
        seq += 1;
        tokio::time::sleep(GAP).await; // the paced stream under test, see GAP
    }
    let during_end = seq;
    stack.redis.publish(&channel, &message(usize::MAX, epoch)).await;

    let mut before = Vec::new();
    let mut during = Vec::new();
    let mut fast = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (seen, client) = reader.await.expect("reader task");
        fast.push(client);
        let seqs: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
        let expected: Vec<usize> = (0..during_end).chain([usize::MAX]).collect();
        assert_eq!(seqs, expected, "fast client {i} must receive every message, in order");
        for (s, latency) in seen {
            if s < before_end {
                before.push(latency);
            } else if (during_start..during_end).contains(&s) {
                during.push(latency);
            }
        }
    }
    let (b50, b99) = (percentile(&mut before, 0.5), percentile(&mut before, 0.99));
    let (d50, d99) = (percentile(&mut during, 0.5), percentile(&mut during, 0.99));
    let dmax = *during.iter().max().expect("during latencies");
    eprintln!(
        "fast clients' latency for {MESSAGE_BYTES}-byte messages: before p50 {b50:?} p99 {b99:?}; \
         during p50 {d50:?} p99 {d99:?} max {dmax:?}"
    );
    assert!(
        d50 <= (b50 * 3).max(b50 + Duration::from_millis(30)),
        "median latency of the other subscribers rose from {b50:?} to {d50:?} while a slow consumer was connected"
    );
    assert!(
        dmax <= Duration::from_secs(1),
        "a message took {dmax:?} to reach an attentive subscriber while a slow consumer was connected"
    );

    assert_eq!(
        stack.metric("crier_ws_slow_consumer_closes_total").await,
        Some(closes_before + 1.0),
        "exactly one socket (the slow one) was closed as a slow consumer"
    );
    // Closed means gone: the server must not keep a socket (and its writer) for a client that
    // never reads again.
    let released = crier_tests::try_wait_until(Duration::from_secs(10), || async {
        stack.metric("crier_ws_sockets_open").await == Some(FAST_CLIENTS as f64)
    })
    .await;
    let open = stack.metric("crier_ws_sockets_open").await;

    // When the client finally reads, what is left ends in the 1008 close (or the connection
    // was already cut).
    match slow.read_close(Duration::from_secs(20)).await {
        Ok((code, reason)) => {
            assert_eq!(code, 1008, "slow consumer close code (reason {reason:?})");
            assert_eq!(reason, "slow consumer: outgoing queue full");
        }
        Err(Read::Eof | Read::Error(_)) => {}
        Err(Read::TimedOut) => {
            panic!("no close frame and no end of connection for the slow consumer")
        }
    }
    assert!(
        released,
        "the slow consumer's socket is still open on the server 10 s after it was declared slow \
         (crier_ws_sockets_open = {open:?}, expected {FAST_CLIENTS}): a client that never reads \
         again keeps its connection and writer task forever"
    );
    wait_until(Duration::from_secs(10), "crier_ws_sockets_open is back to the fast clients", || async {
        stack.metric("crier_ws_sockets_open").await == Some(FAST_CLIENTS as f64)
    })
    .await;
    drop(fast);
}
