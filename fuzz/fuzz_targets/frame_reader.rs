//! wsserver's strict `FrameReader` over arbitrary client bytes: never panics, never hangs,
//! never yields a message over the limit or invalid UTF-8 as text, and answers every violation
//! with 1002, 1007 or 1009. The first two input bytes choose the message limit.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use wsserver::frame_reader::{FrameReader, Message, ReadError};

/// Polls a future that never waits on anything but an in-memory reader.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("reading from memory did not complete");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 125 + usize::from(u16::from_be_bytes([data[0], data[1]]) % 4096);
    let mut io = &data[2..];
    let mut reader = FrameReader::new(max);
    // Every message consumes at least two bytes, so this bounds the loop.
    for _ in 0..=data.len() {
        match block_on(reader.next_message(&mut io)) {
            Ok(Message::Text(text)) => {
                assert!(
                    text.len() <= max,
                    "text of {} bytes, limit {max}",
                    text.len()
                );
                assert!(
                    std::str::from_utf8(&text).is_ok(),
                    "invalid UTF-8 passed as text"
                );
            }
            Ok(Message::Binary(bytes)) => assert!(bytes.len() <= max),
            Ok(Message::Ping(payload)) => assert!(payload.len() <= 125),
            Ok(Message::Pong) => {}
            Ok(Message::Close(code)) => {
                if let Some(code) = code {
                    assert!(
                        matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                        "close {code}"
                    );
                }
            }
            Err(ReadError::Gone) => return,
            Err(ReadError::Violation(v)) => {
                assert!(
                    matches!(v.code, 1002 | 1007 | 1009),
                    "violation code {}",
                    v.code
                );
                return;
            }
        }
    }
    panic!("more messages than input bytes");
});
