//! Tests of framing: round trips, chunked reads, the cap, and arbitrary input.

use super::*;
use proptest::prelude::*;

fn unprefixed(bytes: &Bytes) -> wire::Frame {
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = decode_frame(&mut buf, MAX_FRAME_LEN)
        .expect("within cap")
        .expect("whole frame");
    assert!(buf.is_empty(), "exactly one frame");
    wire::Frame::decode(frame).expect("decodes")
}

#[test]
fn request_encoding_matches_prost() {
    let ping = wire::Ping { nonce: 42 };
    let encoded = encode_request(7, "ping", &ping, MAX_FRAME_LEN).expect("encodes");
    let expected = wire::Frame {
        id: 7,
        r#type: "ping".into(),
        body: Some(wire::frame::Body::Request(ping.encode_to_vec().into())),
    };
    assert_eq!(unprefixed(&encoded), expected);
    assert_eq!(
        encoded,
        encode_frame(&expected, MAX_FRAME_LEN).expect("encodes")
    );
}

#[test]
fn push_has_id_zero_and_empty_message_still_has_a_body() {
    let encoded = encode_request(
        0,
        "state_changed",
        &wire::StateChanged::default(),
        MAX_FRAME_LEN,
    )
    .expect("encodes");
    let frame = unprefixed(&encoded);
    assert_eq!(frame.id, 0);
    assert_eq!(frame.body, Some(wire::frame::Body::Request(Bytes::new())));
}

#[test]
fn response_encodings_match_prost() {
    let pong = wire::Pong {
        nonce: 1,
        rss_bytes: 2,
        entities: 3,
    };
    let ok = encode_response(9, "ping", &pong, MAX_FRAME_LEN).expect("encodes");
    assert_eq!(
        unprefixed(&ok),
        wire::Frame {
            id: 9,
            r#type: "ping".into(),
            body: Some(wire::frame::Body::Response(wire::Response {
                outcome: Some(wire::response::Outcome::Result(pong.encode_to_vec().into())),
            })),
        }
    );
    let error = wire::Error {
        kind: wire::ErrorKind::Validation as i32,
        message: "bad".into(),
        field_errors: vec![],
    };
    let failed = encode_error_response(9, "ping", &error, MAX_FRAME_LEN).expect("encodes");
    assert_eq!(
        unprefixed(&failed),
        wire::Frame {
            id: 9,
            r#type: "ping".into(),
            body: Some(wire::frame::Body::Response(wire::Response {
                outcome: Some(wire::response::Outcome::Error(error))
            })),
        }
    );
}

#[test]
fn announced_length_over_the_cap_is_refused() {
    let mut buf = BytesMut::new();
    buf.put_u32(MAX_FRAME_LEN as u32 + 1);
    assert_eq!(
        decode_frame(&mut buf, MAX_FRAME_LEN),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
}

#[test]
fn encoding_over_the_cap_is_refused() {
    let big = wire::StoreSave {
        key: "k".into(),
        envelope_json: vec![b'x'; 100].into(),
    };
    assert!(matches!(
        encode_request(1, "store_save", &big, 50),
        Err(FrameError::TooLarge { max: 50, .. })
    ));
}

#[test]
fn partial_prefix_and_partial_body_need_more_bytes() {
    let encoded =
        encode_request(3, "ping", &wire::Ping { nonce: 5 }, MAX_FRAME_LEN).expect("encodes");
    for cut in 0..encoded.len() {
        let mut buf = BytesMut::from(&encoded[..cut]);
        assert_eq!(
            decode_frame(&mut buf, MAX_FRAME_LEN),
            Ok(None),
            "cut at {cut}"
        );
        assert_eq!(buf.len(), cut, "nothing consumed");
        assert!(bytes_needed(&buf) > cut);
    }
}

fn arb_frame() -> impl Strategy<Value = wire::Frame> {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| wire::frame::Body::Request(b.into())),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| wire::frame::Body::Response(
            wire::Response {
                outcome: Some(wire::response::Outcome::Result(b.into()))
            }
        )),
        (any::<i32>(), ".{0,40}").prop_map(|(kind, message)| wire::frame::Body::Response(
            wire::Response {
                outcome: Some(wire::response::Outcome::Error(wire::Error {
                    kind,
                    message,
                    field_errors: vec![]
                }))
            }
        )),
    ];
    (any::<u64>(), "[a-z_]{0,20}", body).prop_map(|(id, ty, body)| wire::Frame {
        id,
        r#type: ty,
        body: Some(body),
    })
}

proptest! {
    #[test]
    fn frames_round_trip_through_any_chunking(frames in proptest::collection::vec(arb_frame(), 1..8), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&encode_frame(frame, MAX_FRAME_LEN).expect("encodes"));
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decode_frame(&mut buf, MAX_FRAME_LEN).expect("within cap") {
                decoded.push(wire::Frame::decode(frame).expect("decodes"));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn single_pass_request_encoding_equals_prost(id in any::<u64>(), ty in "[a-z_]{0,20}", payload in proptest::collection::vec(any::<u8>(), 0..500)) {
        let fast = encode_request_bytes(id, &ty, &payload, MAX_FRAME_LEN).expect("encodes");
        let slow = encode_frame(&wire::Frame { id, r#type: ty, body: Some(wire::frame::Body::Request(payload.into())) }, MAX_FRAME_LEN).expect("encodes");
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), max in 0usize..4096) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(frame)) = decode_frame(&mut buf, max) {
            let _ = wire::Frame::decode(frame);
        }
    }
}

#[test]
fn the_worked_example_in_protocol_md_is_exact() {
    let call = encode_request(1, "ping", &wire::Ping { nonce: 5 }, MAX_FRAME_LEN).expect("encodes");
    assert_eq!(
        call[..],
        [
            0, 0, 0, 0x0c, 0x08, 0x01, 0x12, 0x04, b'p', b'i', b'n', b'g', 0x1a, 0x02, 0x08, 0x05
        ]
    );
    let reply = encode_response(
        1,
        "ping",
        &wire::Pong {
            nonce: 5,
            ..wire::Pong::default()
        },
        MAX_FRAME_LEN,
    )
    .expect("encodes");
    assert_eq!(
        reply[..],
        [
            0, 0, 0, 0x0e, 0x08, 0x01, 0x12, 0x04, b'p', b'i', b'n', b'g', 0x22, 0x04, 0x0a, 0x02,
            0x08, 0x05
        ]
    );
    let doc = include_str!("../../../docs/PROTOCOL.md");
    assert!(doc.contains("call:   00 00 00 0c  08 01  12 04 70 69 6e 67  1a 02 08 05"));
    assert!(doc.contains("reply:  00 00 00 0e  08 01  12 04 70 69 6e 67  22 04 0a 02 08 05"));
}
