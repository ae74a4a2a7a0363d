//! Protocol violations sent as raw bytes after a real handshake: each one is answered with its
//! close code (1002 protocol error, 1007 invalid data, 1009 too big), a client's own close is
//! echoed, and another client on the same server keeps being served throughout.

use std::time::Duration;

use crier_tests::raw::{frames, FrameBuilder, RawConn, Read};
use crier_tests::{Stack, StackOptions, WsClient};

const MAX_MESSAGE: usize = 1024;
const CLOSE_WAIT: Duration = Duration::from_secs(5);

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    code: u16,
}

fn case(name: &'static str, parts: &[FrameBuilder], code: u16) -> Case {
    Case { name, bytes: frames(parts), code }
}

fn violations() -> Vec<Case> {
    use FrameBuilder as F;
    let over = vec![b'a'; MAX_MESSAGE + 1];
    let half = vec![b'a'; MAX_MESSAGE / 2 + 1];
    vec![
        case("unmasked text frame", &[F::text(b"hi").unmasked()], 1002),
        case("RSV1 set (no extension negotiated)", &[F::text(b"hi").rsv(0x40)], 1002),
        case("RSV2 set", &[F::text(b"hi").rsv(0x20)], 1002),
        case("RSV3 set", &[F::binary(b"hi").rsv(0x10)], 1002),
        case("reserved data opcode 0x3", &[F::new(0x3, b"hi")], 1002),
        case("reserved control opcode 0xB", &[F::new(0xB, b"")], 1002),
        case("fragmented ping", &[F::ping(b"p").not_fin()], 1002),
        case("ping over 125 bytes", &[F::ping(&[b'p'; 126])], 1002),
        case("close with a 1-byte payload", &[F::new(0x8, &[0x03])], 1002),
        case("close code 999", &[F::close(999, b"")], 1002),
        case("close code 1004 (reserved)", &[F::close(1004, b"")], 1002),
        case("close code 1005 (never on the wire)", &[F::close(1005, b"")], 1002),
        case("close code 1006 (never on the wire)", &[F::close(1006, b"")], 1002),
        case("close code 2000 (unassigned)", &[F::close(2000, b"")], 1002),
        case("close code 5000", &[F::close(5000, b"")], 1002),
        case("continuation without a message", &[F::continuation(b"x")], 1002),
        case("new text message inside a fragmented one", &[F::text(b"a").not_fin(), F::text(b"b")], 1002),
        case("64-bit length with the top bit set", &[F::binary(b"").declared_len(1 << 63).header_only()], 1002),
        case("invalid UTF-8 in a text frame", &[F::text(&[b'a', 0xff, b'b'])], 1007),
        case("overlong UTF-8 encoding", &[F::text(&[0xc0, 0xaf])], 1007),
        case("UTF-16 surrogate encoded in UTF-8", &[F::text(&[0xed, 0xa0, 0x80])], 1007),
        case("invalid UTF-8 across fragments", &[F::text(&[b'a', 0xce]).not_fin(), F::continuation(&[0x28])], 1007),
        case("invalid UTF-8 in a close reason", &[F::close(1000, &[0xff, 0xfe])], 1007),
        case("one frame over --max-message-size", &[F::binary(&over)], 1009),
        case(
            "declared length over the limit, payload never sent",
            &[F::binary(b"").declared_len(1 << 40).header_only()],
            1009,
        ),
        case(
            "fragments adding up to more than --max-message-size",
            &[F::text(&half).not_fin(), F::continuation(&half)],
            1009,
        ),
    ]
}

/// A bystander on the same server: still echoed to after every case.
async fn assert_still_served(bystander: &mut WsClient, after: &str) {
    let probe = format!("still here after: {after}");
    bystander.send_text(&probe).await.expect("bystander send");
    match bystander.recv(Duration::from_secs(5)).await {
        Some(crier_tests::Event::Text(text)) if text == probe => {}
        other => panic!("the bystander was not served after {after:?}: {other:?}"),
    }
}

fn stack_options() -> StackOptions {
    StackOptions::default().without_nginx().without_webserver().ws_args(&[
        "--echo-test-facility",
        "echo",
        "--max-message-size",
        &MAX_MESSAGE.to_string(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_violation_gets_its_close_code_and_others_are_still_served() {
    let stack = Stack::start(stack_options()).await;
    let mut bystander = stack.connect_direct("/ws/echo").await;
    let errors_before = stack.metric("crier_ws_protocol_errors_total").await.expect("crier_ws_protocol_errors_total");
    let cases = violations();
    let mut wrong = Vec::new();
    for case in &cases {
        let mut conn = RawConn::websocket(stack.ws_addr(), "/ws/echo").await;
        // A write may fail once the server has closed (it can refuse from the header alone).
        let _ = conn.try_send(&case.bytes).await;
        match conn.read_close(CLOSE_WAIT).await {
            Ok((code, reason)) if code == case.code => {
                // After its close frame the server ends the connection.
                if let Err(e) = conn.read_to_end(CLOSE_WAIT).await {
                    wrong.push(format!(
                        "{}: closed with {code} ({reason:?}) but the connection stayed open: {e:?}",
                        case.name
                    ));
                }
            }
            Ok((code, reason)) => {
                wrong.push(format!("{}: close {code} ({reason:?}), expected {}", case.name, case.code))
            }
            Err(e) => wrong.push(format!("{}: no close frame ({e:?}), expected {}", case.name, case.code)),
        }
        assert_still_served(&mut bystander, case.name).await;
    }
    assert!(
        wrong.is_empty(),
        "{} of {} violations were not answered as expected:\n  {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n  ")
    );
    let errors_after = stack.metric("crier_ws_protocol_errors_total").await.expect("crier_ws_protocol_errors_total");
    assert_eq!(
        errors_after - errors_before,
        cases.len() as f64,
        "every violation counted in crier_ws_protocol_errors_total"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_codes_are_echoed_and_legal_frames_pass() {
    let stack = Stack::start(stack_options()).await;
    use FrameBuilder as F;

    // Legal edge cases first: fragmented text with a ping in between, split UTF-8, empty
    // messages, a 125-byte ping, exactly --max-message-size.
    let mut conn = RawConn::websocket(stack.ws_addr(), "/ws/echo").await;
    let euro = "€".as_bytes();
    conn.send(&frames(&[
        F::text(&[b'a', euro[0]]).not_fin(),
        F::ping(&[b'p'; 125]),
        F::continuation(&euro[1..]).not_fin(),
        F::continuation(b"z"),
        F::text(b""),
        F::binary(&vec![7u8; MAX_MESSAGE]),
    ]))
    .await;
    let pong = conn.read_frame(CLOSE_WAIT).await.expect("pong");
    assert_eq!((pong.opcode, pong.payload.len()), (0xA, 125), "pong");
    let text = conn.read_frame(CLOSE_WAIT).await.expect("echo");
    assert_eq!((text.opcode, text.payload.as_slice()), (0x1, "a€z".as_bytes()));
    let empty = conn.read_frame(CLOSE_WAIT).await.expect("empty echo");
    assert_eq!((empty.opcode, empty.payload.len()), (0x1, 0));
    let full = conn.read_frame(CLOSE_WAIT).await.expect("max-size echo");
    assert_eq!((full.opcode, full.payload.len()), (0x2, MAX_MESSAGE));

    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut conn = RawConn::websocket(stack.ws_addr(), "/ws/echo").await;
        conn.send(&F::close(code, b"bye").build()).await;
        let answer = conn.read_close(CLOSE_WAIT).await;
        assert_eq!(answer.as_ref().map(|(c, _)| *c), Ok(code), "close {code} is echoed");
        assert!(
            matches!(conn.read_to_end(CLOSE_WAIT).await, Ok(Read::Eof | Read::Error(_))),
            "connection ends after the close handshake ({code})"
        );
    }
    // An empty close is answered (with 1000 or an empty close).
    let mut conn = RawConn::websocket(stack.ws_addr(), "/ws/echo").await;
    conn.send(&F::new(0x8, b"").build()).await;
    let (code, _) = conn.read_close(CLOSE_WAIT).await.expect("close answer");
    assert!(code == 1000 || code == 1005, "empty close answered with {code}");

    // The server never negotiates an extension, even when offered one, so RSV bits can never
    // be legal.
    let mut conn = RawConn::connect(stack.ws_addr()).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";
    conn.send(crier_tests::raw::upgrade_request("/ws/echo", &[offer]).as_bytes()).await;
    let answer = conn.read_response(CLOSE_WAIT).await.expect("101");
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_eq!(answer.header("sec-websocket-extensions"), None, "101 must not accept an extension: {answer:?}");
}
