//! Tests of the channel: every guarantee in the module docs has a test that fails without it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Barrier, Notify};

use super::*;
use crate::test_util::{RawPeer, channel_pair, faulty};
use crate::transport::UnixSocketListener;
use crate::wire::{FireEvent, Ping, Pong, StateChanged, StoreLoad, StoreLoadResult};

/// A hang guard: generous, so a loaded machine never trips it, but a deadlock fails the test.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn guard<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .expect("test hung")
}

fn builder(name: &str) -> ChannelBuilder {
    ChannelBuilder::new(ChannelConfig::named(name))
}

fn echo_ping(builder: ChannelBuilder) -> ChannelBuilder {
    builder.on_call::<Ping, _, _>(|ping, _| async move {
        Ok(Pong {
            nonce: ping.nonce + 1,
            ..Pong::default()
        })
    })
}

async fn expect_remote(outcome: Result<impl std::fmt::Debug, CallError>) -> RemoteError {
    match outcome {
        Err(CallError::Remote { error, .. }) => error,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn call_gets_its_typed_reply() {
    let (main, sandbox) = channel_pair(builder("main"), echo_ping(builder("sandbox")));
    let pong = guard(main.call(&Ping { nonce: 41 })).await.expect("reply");
    assert_eq!(pong.nonce, 42);
    assert_eq!(main.stats().calls_sent, 1);
    assert_eq!(sandbox.stats().calls_handled, 1);
}

#[tokio::test]
async fn calls_and_pushes_work_over_a_real_unix_socket() {
    let listener = UnixSocketListener::bind_private().expect("bind");
    let url = listener.url();
    let socket_path = listener.path().to_owned();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    let connect = async {
        let crate::TransportUrl::Unix(path) = url else {
            panic!("unix url")
        };
        echo_ping(builder("sandbox")).start(
            crate::Transport::connect_unix(&path)
                .await
                .expect("connect"),
        )
    };
    let (accepted, sandbox) = tokio::join!(listener.accept(), connect);
    let main = builder("main")
        .on_push::<FireEvent, _, _>(move |event, _| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(event.event_type).await;
            }
        })
        .start(accepted.expect("accept"));
    assert_eq!(
        guard(main.call(&Ping { nonce: 1 }))
            .await
            .expect("reply")
            .nonce,
        2
    );
    sandbox
        .push(&FireEvent {
            event_type: "demo_button_pressed".into(),
            ..FireEvent::default()
        })
        .await
        .expect("push");
    assert_eq!(
        guard(seen_rx.recv()).await.as_deref(),
        Some("demo_button_pressed")
    );
    guard(sandbox.close()).await;
    assert_eq!(guard(main.closed()).await, CloseReason::Eof);
    guard(main.close()).await;
    drop(listener);
    assert!(
        !socket_path.exists(),
        "the socket file is removed with the listener"
    );
}

#[tokio::test]
async fn unknown_call_type_gets_no_handler_error() {
    let (main, _sandbox) = channel_pair(builder("main"), builder("sandbox"));
    let error = expect_remote(guard(main.call(&Ping { nonce: 1 })).await).await;
    assert_eq!(error.kind, ErrorKind::NoHandler);
    assert_eq!(error.message, "no handler for ping");
}

#[tokio::test]
async fn unknown_push_is_dropped_and_counted() {
    let (main, sandbox) = channel_pair(builder("main"), echo_ping(builder("sandbox")));
    main.push(&StateChanged::default()).await.expect("push");
    // A call after the push proves the push was read first (frames are read in order).
    guard(main.call(&Ping::default())).await.expect("reply");
    assert_eq!(sandbox.stats().pushes_unhandled, 1);
}

#[tokio::test]
async fn call_to_a_push_type_and_push_to_a_call_type_are_refused() {
    let (transport, mut peer) = RawPeer::new();
    let channel = echo_ping(builder("main"))
        .on_push_inline::<StateChanged, _>(|_| {})
        .start(transport);
    peer.send_request(7, "state_changed", &StateChanged::default())
        .await
        .expect("send");
    let reply = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("frame");
    let Some(wire::frame::Body::Response(wire::Response {
        outcome: Some(wire::response::Outcome::Error(error)),
    })) = reply.body
    else {
        panic!("expected an error reply, got {reply:?}")
    };
    assert_eq!(error.kind, ErrorKind::BadRequest as i32);
    assert_eq!(error.message, "`state_changed` is a push, not a call");
    peer.send_request(0, "ping", &Ping::default())
        .await
        .expect("send");
    peer.send_call(8, &Ping { nonce: 1 }).await.expect("send");
    let reply = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("frame");
    assert_eq!(reply.id, 8);
    assert_eq!(channel.stats().pushes_unhandled, 1);
}

#[tokio::test]
async fn undecodable_frames_are_dropped_and_counted_and_the_channel_goes_on() {
    let (transport, mut peer) = RawPeer::new();
    let channel = echo_ping(builder("main")).start(transport);
    // A well-framed body that is not a Frame (an invalid wire type), then one with no body.
    peer.send_raw(&framing::prefix(&[0xff, 0xff, 0xff]).expect("prefix"))
        .await
        .expect("send");
    peer.send_frame(&wire::Frame {
        id: 3,
        r#type: "ping".into(),
        body: None,
    })
    .await
    .expect("send");
    peer.send_call(9, &Ping { nonce: 1 }).await.expect("send");
    let reply = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("frame");
    assert_eq!(reply.id, 9);
    assert_eq!(channel.stats().undecodable_frames, 2);
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn undecodable_request_payload_is_a_bad_request() {
    let (main, _sandbox) = channel_pair(builder("main"), echo_ping(builder("sandbox")));
    let error = expect_remote(guard(main.call_raw("ping", &[0xff, 0xff], None)).await).await;
    assert_eq!(error.kind, ErrorKind::BadRequest);
    assert!(
        error.message.starts_with("cannot decode `ping`"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn announced_frame_over_the_cap_aborts_the_channel_and_fails_pending_calls() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let pending = tokio::spawn({
        let channel = channel.clone();
        async move { channel.call(&Ping::default()).await }
    });
    let _ = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("the call");
    peer.send_raw(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes())
        .await
        .expect("send");
    let reason = guard(channel.closed()).await;
    assert_eq!(
        reason,
        CloseReason::FrameTooLarge(FrameError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    assert!(
        reason
            .to_string()
            .contains("exceeds the 16777216-byte limit"),
        "{reason}"
    );
    let outcome = guard(pending).await.expect("task");
    assert!(
        matches!(
            outcome,
            Err(CallError::Closed {
                reason: CloseReason::FrameTooLarge(_),
                ..
            })
        ),
        "{outcome:?}"
    );
    guard(channel.close()).await;
}

#[tokio::test]
async fn request_over_the_cap_is_refused_locally_and_the_channel_stays_open() {
    let config = ChannelConfig {
        max_frame_len: 64,
        ..ChannelConfig::named("main")
    };
    let (main, _sandbox) = channel_pair(ChannelBuilder::new(config), echo_ping(builder("sandbox")));
    let big = StoreLoad {
        key: "k".repeat(100),
    };
    let outcome = main.call(&big).await;
    assert!(
        matches!(outcome, Err(CallError::TooLarge { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        guard(main.call(&Ping { nonce: 1 }))
            .await
            .expect("reply")
            .nonce,
        2
    );
}

#[tokio::test]
async fn remote_errors_keep_kind_and_field_paths() {
    let sandbox = builder("sandbox").on_call::<Ping, _, _>(|_, _| async {
        Err(RemoteError::validation(
            "invalid input",
            vec![crate::error::FieldError {
                path: vec!["advanced".into(), "port".into()],
                message: "expected int".into(),
            }],
        ))
    });
    let (main, _sandbox) = channel_pair(builder("main"), sandbox);
    let error = expect_remote(guard(main.call(&Ping::default())).await).await;
    assert_eq!(error.kind, ErrorKind::Validation);
    assert_eq!(error.field_errors[0].path, vec!["advanced", "port"]);
}

#[tokio::test]
async fn an_error_too_large_for_a_frame_still_answers_the_call() {
    let sandbox = builder("sandbox").on_call::<Ping, _, _>(|_, _| async {
        Err(RemoteError::bad_request("x".repeat(MAX_FRAME_LEN + 1)))
    });
    let (main, _sandbox) = channel_pair(builder("main"), sandbox);
    let error = expect_remote(guard(main.call(&Ping::default())).await).await;
    assert_eq!(error.kind, ErrorKind::BadRequest);
    assert_eq!(error.message, "the error was too large to send");
    // And the channel goes on.
    let error = expect_remote(guard(main.call(&Ping::default())).await).await;
    assert_eq!(error.kind, ErrorKind::BadRequest);
}

#[test]
fn type_names_are_quoted_at_most_a_label_long() {
    assert_eq!(type_label("ping"), "ping");
    let long = "é".repeat(1000);
    let label = type_label(&long);
    assert!(label.len() <= MAX_TYPE_LABEL_BYTES);
    assert!(long.starts_with(label));
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_channel_goes_on() {
    let sandbox = builder("sandbox")
        .on_call::<StoreLoad, _, _>(|_, _| async { panic!("integration bug") })
        .on_call::<Ping, _, _>(|ping, _| async move {
            Ok(Pong {
                nonce: ping.nonce,
                ..Pong::default()
            })
        });
    let (main, sandbox) = channel_pair(builder("main"), sandbox);
    let error = expect_remote(guard(main.call(&StoreLoad::default())).await).await;
    assert_eq!(error.kind, ErrorKind::Internal);
    assert_eq!(
        guard(main.call(&Ping { nonce: 5 }))
            .await
            .expect("reply")
            .nonce,
        5
    );
    assert_eq!(sandbox.stats().handler_panics, 1);
}

#[tokio::test]
async fn at_most_max_running_handlers_run_at_once() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let sandbox = builder("sandbox").on_call::<Ping, _, _>({
        let (running, peak, gate) = (running.clone(), peak.clone(), gate.clone());
        move |ping, _| {
            let (running, peak, gate) = (running.clone(), peak.clone(), gate.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.expect("gate open").forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(Pong {
                    nonce: ping.nonce,
                    ..Pong::default()
                })
            }
        }
    });
    let (main, sandbox) = channel_pair(builder("main"), sandbox);
    let calls: Vec<_> = (0..40)
        .map(|nonce| {
            let main = main.clone();
            tokio::spawn(async move { main.call(&Ping { nonce }).await })
        })
        .collect();
    // Wait until all 40 are in the sandbox (16 running, 24 queued for a slot).
    tokio::time::timeout(HANG_GUARD, async {
        while sandbox.stats().in_flight < 40 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("all calls arrive");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(running.load(Ordering::SeqCst), MAX_RUNNING_HANDLERS);
    gate.add_permits(40);
    for call in calls {
        guard(call).await.expect("task").expect("reply");
    }
    assert_eq!(peak.load(Ordering::SeqCst), MAX_RUNNING_HANDLERS);
}

#[tokio::test]
async fn past_the_in_flight_limit_calls_are_overloaded_and_pushes_shed() {
    const LIMIT: usize = 4;
    let config = ChannelConfig {
        max_running_handlers: 1,
        max_handlers_in_flight: LIMIT,
        ..ChannelConfig::named("main")
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (transport, mut peer) = RawPeer::new();
    let channel = gated_ping(ChannelBuilder::new(config), gate.clone())
        .on_push::<FireEvent, _, _>(|_, _| async {})
        .start(transport);
    for id in 1..=(LIMIT as u64 + 3) {
        peer.send_call(id, &Ping { nonce: id }).await.expect("send");
    }
    peer.send_push(&FireEvent::default()).await.expect("send");
    // The three calls past the limit are answered at once, in order, with `overloaded`.
    for expected in (LIMIT as u64 + 1)..=(LIMIT as u64 + 3) {
        let reply = guard(peer.recv_frame())
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(reply.id, expected);
        let Some(wire::frame::Body::Response(wire::Response {
            outcome: Some(wire::response::Outcome::Error(error)),
        })) = reply.body
        else {
            panic!("expected an error")
        };
        assert_eq!(error.kind, ErrorKind::Overloaded as i32);
    }
    let probe = channel.stats();
    assert_eq!(probe.calls_shed, 3);
    assert_eq!(probe.in_flight, LIMIT as u64);
    tokio::time::timeout(HANG_GUARD, async {
        while channel.stats().pushes_shed == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the push was shed");
    gate.add_permits(LIMIT);
    for _ in 0..LIMIT {
        let reply = guard(peer.recv_frame())
            .await
            .expect("read")
            .expect("frame");
        assert!(reply.id >= 1 && reply.id <= LIMIT as u64);
    }
    assert_eq!(channel.stats().calls_handled, LIMIT as u64);
}

#[tokio::test]
async fn replies_are_never_shed_even_when_handlers_saturate() {
    // Main's only handler slots are all taken by pushes that wait; its own call still completes,
    // because the reply is routed inline by the reader, not through a handler slot.
    let config = ChannelConfig {
        max_running_handlers: 1,
        max_handlers_in_flight: 2,
        ..ChannelConfig::named("main")
    };
    let gate = Arc::new(Notify::new());
    let main_builder = ChannelBuilder::new(config).on_push::<FireEvent, _, _>({
        let gate = gate.clone();
        move |_, _| {
            let gate = gate.clone();
            async move { gate.notified().await }
        }
    });
    let (main, sandbox) = channel_pair(main_builder, echo_ping(builder("sandbox")));
    for _ in 0..5 {
        sandbox.push(&FireEvent::default()).await.expect("push");
    }
    assert_eq!(
        guard(main.call(&Ping { nonce: 1 }))
            .await
            .expect("reply")
            .nonce,
        2
    );
    assert_eq!(main.stats().pushes_shed, 3);
    gate.notify_waiters();
}

#[tokio::test]
async fn a_handler_can_call_the_peer_without_deadlock() {
    // main -> sandbox `ping`; the sandbox's handler asks main `store_load` before answering, and
    // main's store handler in turn pings the sandbox again: three levels, each awaiting the next.
    let sandbox = builder("sandbox").on_call::<Ping, _, _>(|ping, channel| async move {
        if ping.nonce == 0 {
            return Ok(Pong {
                nonce: 100,
                ..Pong::default()
            });
        }
        let loaded = channel
            .call(&StoreLoad {
                key: "core.restore_state".into(),
            })
            .await
            .map_err(|error| RemoteError::handler(format!("nested call failed: {error}")))?;
        let envelope = loaded
            .envelope_json
            .map(|bytes| bytes.len() as u64)
            .unwrap_or_default();
        Ok(Pong {
            nonce: ping.nonce + envelope,
            ..Pong::default()
        })
    });
    let main = builder("main").on_call::<StoreLoad, _, _>(|_, channel| async move {
        let inner = channel
            .call(&Ping { nonce: 0 })
            .await
            .map_err(|error| RemoteError::handler(error.to_string()))?;
        Ok(StoreLoadResult {
            envelope_json: Some(vec![0; inner.nonce as usize].into()),
        })
    });
    let (main, _sandbox) = channel_pair(main, sandbox);
    let pongs = futures::future::join_all((1..=50).map(|nonce| {
        let main = main.clone();
        async move { main.call(&Ping { nonce }).await }
    }));
    for (index, pong) in guard(pongs).await.into_iter().enumerate() {
        assert_eq!(pong.expect("reply").nonce, index as u64 + 1 + 100);
    }
}

#[tokio::test]
async fn inline_pushes_keep_their_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let main_builder = builder("main").on_push_inline::<StateChanged, _>({
        let seen = seen.clone();
        move |change| {
            seen.lock()
                .expect("lock")
                .push(change.state.parse::<u32>().expect("number"))
        }
    });
    let (main, sandbox) = channel_pair(main_builder, echo_ping(builder("sandbox")));
    let main_pinger = main.clone();
    for number in 0..2000u32 {
        sandbox
            .push(&StateChanged {
                entity_id: "light.a".into(),
                state: number.to_string(),
                ..StateChanged::default()
            })
            .await
            .expect("push");
    }
    // Main's ping to the sandbox is answered after the pushes were written before the reply;
    // wait until every push has been handled.
    guard(main_pinger.call(&Ping::default()))
        .await
        .expect("reply");
    tokio::time::timeout(HANG_GUARD, async {
        while seen.lock().expect("lock").len() < 2000 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("all pushes arrive");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, (0..2000).collect::<Vec<_>>());
    assert_eq!(main.stats().pushes_handled, 2000);
}

/// Feeds `backlog` to a channel only once all of it is buffered, with another task counting
/// its own turns on the same (current-thread) runtime; returns, for each push the channel
/// handled, how many turns the other task had taken by then.
async fn turns_seen_by_pushes(backlog: &[StateChanged]) -> Vec<usize> {
    let bytes: usize = backlog.iter().map(|push| push.encoded_len() + 64).sum();
    let (transport, mut peer) = RawPeer::with_pipe_buffer(bytes);
    for push in backlog {
        peer.send_push(push).await.expect("buffered");
    }
    let other_turns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::with_capacity(backlog.len())));
    let channel = builder("main")
        .on_push_inline::<StateChanged, _>({
            let (other_turns, seen) = (Arc::clone(&other_turns), Arc::clone(&seen));
            move |_| {
                seen.lock()
                    .expect("lock")
                    .push(other_turns.load(Ordering::Relaxed))
            }
        })
        .start(transport);
    let other = tokio::spawn({
        let other_turns = Arc::clone(&other_turns);
        async move {
            loop {
                other_turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    guard(async {
        while seen.lock().expect("lock").len() < backlog.len() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    other.abort();
    drop((channel, peer));
    seen.lock().expect("lock").clone()
}

/// The longest run of pushes handled without the other task taking a turn in between.
///
/// Tokio wakes the tasks that yielded in the reverse order of their yields, so two tasks that
/// keep yielding run in pairs (other, reader, reader, other, other, ...): the other task's turn
/// comes after at most two of the reader's.
fn longest_run_between_other_turns(turns_seen: &[usize]) -> usize {
    turns_seen
        .chunk_by(|a, b| a == b)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_backlog_of_pushes_is_handled_in_turns_that_let_other_tasks_run() {
    let backlog: Vec<StateChanged> = (0..5000u32)
        .map(|number| StateChanged {
            entity_id: "light.flood".into(),
            state: number.to_string(),
            ..StateChanged::default()
        })
        .collect();
    let turns_seen = turns_seen_by_pushes(&backlog).await;
    assert_eq!(turns_seen.len(), backlog.len());
    let longest = longest_run_between_other_turns(&turns_seen);
    assert!(
        longest <= 2 * READER_TURN_FRAMES,
        "{longest} pushes handled while the other task waited (at most two turns of {READER_TURN_FRAMES})"
    );
}

#[tokio::test]
async fn large_pushes_end_a_readers_turn_by_their_bytes() {
    let attributes = format!("{{\"padding\":\"{}\"}}", "x".repeat(READER_TURN_BYTES / 4));
    let backlog: Vec<StateChanged> = (0..200u32)
        .map(|number| StateChanged {
            entity_id: "light.flood".into(),
            state: number.to_string(),
            attributes_json: attributes.clone().into_bytes().into(),
            ..StateChanged::default()
        })
        .collect();
    let turns_seen = turns_seen_by_pushes(&backlog).await;
    let longest = longest_run_between_other_turns(&turns_seen);
    assert!(
        longest <= 2 * 4,
        "{longest} pushes of over a quarter of READER_TURN_BYTES each handled while the other task waited"
    );
}

#[tokio::test]
async fn a_push_batch_arrives_as_separate_pushes_in_order_and_skips_only_the_oversized() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let main_builder = builder("main").on_push_inline::<StateChanged, _>({
        let seen = seen.clone();
        move |change| seen.lock().expect("lock").push(change.state)
    });
    let config = ChannelConfig {
        max_frame_len: 4096,
        ..ChannelConfig::named("sandbox")
    };
    let (main, sandbox) = channel_pair(main_builder, echo_ping(ChannelBuilder::new(config)));
    // Enough frames for several joined writes (each at most WRITE_BUFFER_CAPACITY bytes).
    let mut batch: Vec<StateChanged> = (0..3000u32)
        .map(|number| StateChanged {
            entity_id: "light.a".into(),
            state: number.to_string(),
            ..StateChanged::default()
        })
        .collect();
    batch[1500].state = "x".repeat(5000);
    let outcome = guard(sandbox.push_batch(&batch)).await;
    assert!(
        matches!(outcome, Err(CallError::TooLarge { .. })),
        "{outcome:?}"
    );
    guard(main.call(&Ping::default())).await.expect("reply");
    tokio::time::timeout(HANG_GUARD, async {
        while seen.lock().expect("lock").len() < 2999 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("all pushes arrive");
    let expected: Vec<String> = (0..3000u32)
        .filter(|number| *number != 1500)
        .map(|number| number.to_string())
        .collect();
    assert_eq!(*seen.lock().expect("lock"), expected);
    assert_eq!(sandbox.stats().pushes_sent, 2999);
    assert_eq!(main.stats().pushes_handled, 2999);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_fails_the_call_and_a_late_reply_is_counted() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let outcome = channel
        .call_timeout(&Ping::default(), Duration::from_secs(3))
        .await;
    assert!(
        matches!(outcome, Err(CallError::Timeout { ref type_name, after }) if type_name == "ping" && after == Duration::from_secs(3))
    );
    let (id, _, _) = peer
        .recv_request::<Ping>()
        .await
        .expect("the call was sent");
    peer.reply::<Ping>(id, &Pong::default())
        .await
        .expect("reply");
    tokio::time::timeout(HANG_GUARD, async {
        while channel.stats().late_replies == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("late reply counted");
}

#[tokio::test]
async fn a_reply_of_another_type_is_a_mismatch() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { channel.call(&Ping::default()).await }
    });
    let (id, _, _) = guard(peer.recv_request::<Ping>()).await.expect("call");
    peer.reply::<StoreLoad>(id, &StoreLoadResult::default())
        .await
        .expect("reply");
    let outcome = guard(call).await.expect("task");
    assert!(
        matches!(outcome, Err(CallError::MismatchedReply { ref got, .. }) if got == "store_load"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn pending_calls_fail_when_the_peer_hangs_up() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { channel.call(&Ping::default()).await }
    });
    let _ = guard(peer.recv_request::<Ping>()).await.expect("call");
    peer.hang_up_writes().await.expect("hang up");
    let outcome = guard(call).await.expect("task");
    assert!(
        matches!(
            outcome,
            Err(CallError::Closed {
                reason: CloseReason::Eof,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(
        channel
            .call(&Ping::default())
            .await
            .expect_err("closed")
            .is_closed()
    );
    assert!(
        channel
            .push(&FireEvent::default())
            .await
            .expect_err("closed")
            .is_closed()
    );
}

#[tokio::test]
async fn eof_in_the_middle_of_a_frame_is_reported_as_truncated() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let frame =
        framing::encode_request(1, "ping", &Ping { nonce: 3 }, MAX_FRAME_LEN).expect("encode");
    peer.send_raw(&frame[..frame.len() - 1])
        .await
        .expect("send");
    peer.hang_up_writes().await.expect("hang up");
    assert_eq!(guard(channel.closed()).await, CloseReason::Truncated);
}

#[tokio::test]
async fn close_is_idempotent_and_concurrent_closers_all_return() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let (a, b) = (channel.clone(), channel.clone());
    guard(async { tokio::join!(a.close(), b.close()) }).await;
    guard(channel.close()).await;
    assert_eq!(channel.close_reason(), Some(CloseReason::Local));
    assert!(
        guard(peer.recv_frame()).await.expect("read").is_none(),
        "the peer reads EOF"
    );
}

#[tokio::test]
async fn close_after_eof_still_closes_the_transport_and_awaits_handlers_exactly_once() {
    let (transport, mut peer) = RawPeer::new();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let channel = builder("main")
        .on_call::<Ping, _, _>({
            let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
            move |ping, _| {
                let (started, release, finished) =
                    (started.clone(), release.clone(), finished.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(Pong {
                        nonce: ping.nonce,
                        ..Pong::default()
                    })
                }
            }
        })
        .start(transport);
    peer.send_call(1, &Ping { nonce: 9 }).await.expect("send");
    guard(started.notified()).await;
    peer.hang_up_writes().await.expect("hang up");
    assert_eq!(guard(channel.closed()).await, CloseReason::Eof);

    let closing = tokio::spawn({
        let channel = channel.clone();
        async move { channel.close().await }
    });
    tokio::task::yield_now().await;
    assert!(
        !closing.is_finished(),
        "close waits for the in-flight handler"
    );
    release.notify_one();
    guard(closing).await.expect("close");
    guard(channel.close()).await;
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    // The handler's reply went out before the writing half was shut down, then EOF.
    let reply = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("the reply");
    assert_eq!(reply.id, 1);
    assert!(guard(peer.recv_frame()).await.expect("read").is_none());
}

#[tokio::test(start_paused = true)]
async fn close_cancels_handlers_that_outlive_the_grace() {
    let (transport, mut peer) = RawPeer::new();
    let config = ChannelConfig {
        close_grace: Duration::from_secs(2),
        ..ChannelConfig::named("main")
    };
    let channel = ChannelBuilder::new(config)
        .on_call::<Ping, _, _>(|_, _| async {
            std::future::pending::<()>().await;
            Ok(Pong::default())
        })
        .start(transport);
    peer.send_call(1, &Ping::default()).await.expect("send");
    tokio::time::timeout(HANG_GUARD, async {
        while channel.stats().in_flight == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("handler started");
    let before = tokio::time::Instant::now();
    channel.close().await;
    assert!(before.elapsed() >= Duration::from_secs(2));
    let reply = peer
        .recv_frame()
        .await
        .expect("read")
        .expect("a cancellation reply");
    let Some(wire::frame::Body::Response(wire::Response {
        outcome: Some(wire::response::Outcome::Error(error)),
    })) = reply.body
    else {
        panic!("expected an error")
    };
    assert_eq!(error.kind, ErrorKind::Timeout as i32);
}

#[tokio::test]
async fn drain_inflight_waits_for_a_stalled_reply_to_be_written() {
    let (transport, mut peer) = RawPeer::new();
    let (transport, faults) = faulty(transport);
    let answered = Arc::new(Notify::new());
    let channel = builder("sandbox")
        .on_call::<Ping, _, _>({
            let answered = answered.clone();
            move |ping, _| {
                let answered = answered.clone();
                async move {
                    answered.notify_one();
                    Ok(Pong {
                        nonce: ping.nonce,
                        rss_bytes: 1 << 20,
                        ..Pong::default()
                    })
                }
            }
        })
        .start(transport);
    faults.stall_writes();
    peer.send_call(5, &Ping { nonce: 77 }).await.expect("send");
    guard(answered.notified()).await;
    assert!(
        !channel.drain_inflight(Duration::from_millis(50)).await,
        "the reply cannot be written yet"
    );
    let resume = {
        let faults = faults.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            faults.resume_writes();
        })
    };
    assert!(guard(channel.drain_inflight(HANG_GUARD)).await);
    resume.await.expect("resume");
    guard(channel.close()).await;
    let reply = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("reply before EOF");
    assert_eq!(reply.id, 5);
    assert!(guard(peer.recv_frame()).await.expect("read").is_none());
}

#[tokio::test]
async fn a_write_failure_closes_the_channel_and_fails_callers() {
    let (transport, _peer) = RawPeer::new();
    let (transport, faults) = faulty(transport);
    let channel = builder("main").start(transport);
    faults.fail_writes();
    let outcome = guard(channel.call(&Ping::default())).await;
    assert!(
        matches!(
            outcome,
            Err(CallError::Closed {
                reason: CloseReason::WriteFailed(_),
                ..
            })
        ),
        "{outcome:?}"
    );
    guard(channel.close()).await;
}

#[tokio::test]
async fn dropping_every_handle_stops_the_channel() {
    let (transport, mut peer) = RawPeer::new();
    let channel = builder("main").start(transport);
    let clone = channel.clone();
    drop(channel);
    drop(clone);
    assert!(
        guard(peer.recv_frame()).await.expect("read").is_none(),
        "the transport is closed"
    );
}

#[tokio::test]
async fn handlers_registered_at_runtime_take_effect_and_can_be_removed() {
    let (main, sandbox) = channel_pair(builder("main"), builder("sandbox"));
    sandbox.on_call::<Ping, _, _>(|ping, _| async move {
        Ok(Pong {
            nonce: ping.nonce,
            ..Pong::default()
        })
    });
    assert_eq!(
        guard(main.call(&Ping { nonce: 3 }))
            .await
            .expect("reply")
            .nonce,
        3
    );
    assert!(sandbox.remove_handler("ping"));
    let error = expect_remote(guard(main.call(&Ping::default())).await).await;
    assert_eq!(error.kind, ErrorKind::NoHandler);
}

#[tokio::test]
async fn many_concurrent_callers_each_get_their_own_reply() {
    let (main, _sandbox) = channel_pair(builder("main"), echo_ping(builder("sandbox")));
    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64u64)
        .map(|nonce| {
            let (main, barrier) = (main.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                (nonce, main.call(&Ping { nonce }).await)
            })
        })
        .collect();
    for task in tasks {
        let (nonce, reply) = guard(task).await.expect("task");
        assert_eq!(reply.expect("reply").nonce, nonce + 1);
    }
}

#[test]
fn defaults_are_the_documented_constants() {
    let config = ChannelConfig::default();
    assert_eq!(config.max_running_handlers, 16);
    assert_eq!(config.max_handlers_in_flight, 1024);
    assert_eq!(config.max_frame_len, 16 * 1024 * 1024);
}

#[tokio::test]
async fn a_reply_already_on_its_way_is_delivered_after_a_write_failure() {
    // The peer answers and exits; our next write fails before we read its answer. The answer
    // must still reach its caller (a sandbox's shutdown reply racing its exit).
    let (transport, mut peer) = RawPeer::new();
    let (transport, faults) = faulty(transport);
    let channel = builder("main").start(transport);
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { channel.call(&Ping { nonce: 4 }).await }
    });
    let (id, _, _) = guard(peer.recv_request::<Ping>()).await.expect("call");
    faults.fail_writes();
    let failed = channel.push(&FireEvent::default()).await;
    assert!(
        matches!(
            failed,
            Err(CallError::Closed {
                reason: CloseReason::WriteFailed(_),
                ..
            })
        ),
        "{failed:?}"
    );
    peer.reply::<Ping>(
        id,
        &Pong {
            nonce: 4,
            ..Pong::default()
        },
    )
    .await
    .expect("reply");
    let pong = guard(call)
        .await
        .expect("task")
        .expect("the reply is delivered");
    assert_eq!(pong.nonce, 4);
    peer.hang_up_writes().await.expect("hang up");
    assert!(matches!(
        guard(channel.closed()).await,
        CloseReason::WriteFailed(_)
    ));
    guard(channel.close()).await;
}

/// A call handler that holds every call until `gate` gives it a permit.
fn gated_ping(builder: ChannelBuilder, gate: Arc<tokio::sync::Semaphore>) -> ChannelBuilder {
    builder.on_call::<Ping, _, _>(move |ping, _| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.expect("gate open").forget();
            Ok(Pong {
                nonce: ping.nonce,
                ..Pong::default()
            })
        }
    })
}

/// Waits (hang-guarded) until the channel has read `frames` frames.
async fn until_read(channel: &Channel, frames: u64) {
    tokio::time::timeout(HANG_GUARD, async {
        while channel.stats().frames_in < frames {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the channel reads every frame");
}

#[tokio::test]
async fn every_pipelined_call_gets_exactly_one_answer_when_the_peer_reads_late() {
    // A hostile peer pipelines calls without reading, through a pipe that holds only a few
    // frames. Handlers block, so past MAX_HANDLERS_IN_FLIGHT every call is refused `overloaded`
    // while the writer is stuck: the refusals outnumber what the write buffer and the write
    // queue hold together (about 1,000 each), so the reader must park them rather than drop
    // them. Then the peer reads everything.
    const CALLS: u64 = 4000;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (transport, mut peer) = RawPeer::with_pipe_buffer(4096);
    let channel = gated_ping(builder("main"), gate.clone()).start(transport);
    for id in 1..=CALLS {
        peer.send_call(id, &Ping { nonce: id }).await.expect("send");
    }
    until_read(&channel, CALLS).await;
    let shed = channel.stats().calls_shed;
    assert_eq!(shed, CALLS - MAX_HANDLERS_IN_FLIGHT as u64);

    let reading = tokio::spawn(async move {
        let mut answers = Vec::new();
        while let Some(frame) = peer.recv_frame().await.expect("read") {
            answers.push(frame);
        }
        answers
    });
    gate.add_permits(CALLS as usize);
    assert!(guard(channel.drain_inflight(HANG_GUARD)).await, "drained");
    guard(channel.close()).await;
    let answers = guard(reading).await.expect("reader task");

    let mut seen = HashMap::new();
    let (mut ok, mut overloaded) = (0u64, 0u64);
    for frame in &answers {
        *seen.entry(frame.id).or_insert(0u32) += 1;
        match &frame.body {
            Some(wire::frame::Body::Response(wire::Response {
                outcome: Some(wire::response::Outcome::Result(_)),
            })) => ok += 1,
            Some(wire::frame::Body::Response(wire::Response {
                outcome: Some(wire::response::Outcome::Error(error)),
            })) if error.kind == ErrorKind::Overloaded as i32 => overloaded += 1,
            other => panic!("unexpected answer to {}: {other:?}", frame.id),
        }
    }
    let missing: Vec<u64> = (1..=CALLS).filter(|id| !seen.contains_key(id)).collect();
    let twice: Vec<u64> = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missing.is_empty(),
        "{} calls got no answer (first: {:?})",
        missing.len(),
        missing.first()
    );
    assert!(twice.is_empty(), "answered twice: {twice:?}");
    assert_eq!(answers.len() as u64, CALLS);
    assert_eq!(ok, MAX_HANDLERS_IN_FLIGHT as u64);
    assert_eq!(overloaded, shed);
}

/// Pipelines calls built by `call` until the channel closes; fails past `cap` calls (a channel
/// that keeps taking calls it cannot answer is holding unbounded memory).
async fn call_until_closed(
    channel: &Channel,
    peer: &mut RawPeer,
    cap: u64,
    call: impl Fn(u64) -> Bytes,
) -> CloseReason {
    for id in 1..=cap {
        let frame = call(id);
        tokio::select! {
            sent = peer.send_raw(&frame) => sent.expect("send"),
            reason = channel.closed() => return reason,
        }
    }
    match channel.close_reason() {
        Some(reason) => reason,
        None => panic!("{cap} calls went unread and the channel is still open"),
    }
}

#[tokio::test]
async fn a_peer_that_calls_and_never_reads_gets_the_channel_closed() {
    // Quick handlers answer inline, their replies fill the pipe, the write buffer and the write
    // queue; then replies wait in tasks holding in-flight slots, then calls are refused, then
    // the refusals fill their queue: the channel closes, having held a bounded amount.
    let (transport, mut peer) = RawPeer::with_pipe_buffer(4096);
    let channel = echo_ping(builder("main")).start(transport);
    let reason = guard(call_until_closed(&channel, &mut peer, 50_000, |id| {
        framing::encode_request(id, "ping", &Ping { nonce: id }, MAX_FRAME_LEN).expect("encode")
    }))
    .await;
    let CloseReason::ErrorRepliesOverflow {
        replies,
        max_replies,
        max_bytes,
        ..
    } = reason
    else {
        panic!("expected the error-reply overflow, got {reason:?}")
    };
    assert_eq!(replies, MAX_PENDING_ERROR_REPLIES + 1);
    assert_eq!(max_replies, MAX_PENDING_ERROR_REPLIES);
    assert_eq!(max_bytes, MAX_PENDING_ERROR_REPLY_BYTES);
    assert!(
        reason
            .to_string()
            .contains("does not read its error replies"),
        "{reason}"
    );
    let stats = channel.stats();
    assert!(
        stats.in_flight <= MAX_HANDLERS_IN_FLIGHT as u64,
        "{stats:?}"
    );
    assert!(
        stats.error_replies_deferred <= MAX_PENDING_ERROR_REPLIES as u64 + 1,
        "{stats:?}"
    );
    // The peer goes away; the writes waiting for it fail and the close completes.
    drop(peer);
    guard(channel.close()).await;
    assert_eq!(channel.stats().in_flight, 0);
}

#[tokio::test]
async fn refusals_echoing_huge_type_names_are_bounded_in_bytes() {
    // Each refusal echoes the peer's type name (twice: the type and the message), so a few
    // calls under 300 KiB names pass the byte bound long before the count bound.
    let (transport, mut peer) = RawPeer::with_pipe_buffer(4096);
    let channel = builder("main").start(transport);
    let type_name = "x".repeat(300 * 1024);
    let reason = guard(call_until_closed(&channel, &mut peer, 100, |id| {
        framing::encode_request(id, &type_name, &Ping::default(), MAX_FRAME_LEN).expect("encode")
    }))
    .await;
    let CloseReason::ErrorRepliesOverflow { bytes, replies, .. } = reason else {
        panic!("expected the error-reply overflow, got {reason:?}")
    };
    assert!(bytes > MAX_PENDING_ERROR_REPLY_BYTES, "{bytes}");
    assert!(replies < 10, "{replies}");
    drop(peer);
    guard(channel.close()).await;
}

#[test]
fn an_announced_frame_reserves_memory_only_as_its_bytes_arrive() {
    let mut buf = ReadBuffer::new(MAX_FRAME_LEN);
    // A prefix announcing the largest frame allowed, and a few bytes of it.
    buf.extend(&(MAX_FRAME_LEN as u32).to_be_bytes());
    buf.extend(&[0; 10]);
    assert!(buf.next_frame().expect("within the cap").is_none());
    assert!(
        buf.capacity() <= 2 * READ_BUFFER_CAPACITY,
        "an announcement alone reserved {} bytes",
        buf.capacity()
    );
    // As the body arrives, what is held stays within about twice what arrived.
    let chunk = vec![0; READ_BUFFER_CAPACITY];
    for _ in 0..32 {
        buf.extend(&chunk);
        assert!(
            buf.capacity() <= 2 * buf.len() + 2 * READ_BUFFER_CAPACITY,
            "{} bytes reserved for {} received",
            buf.capacity(),
            buf.len()
        );
    }
    // The whole frame still decodes once it is all there.
    let rest = MAX_FRAME_LEN + framing::LENGTH_PREFIX_LEN - buf.len();
    buf.extend(&vec![0; rest]);
    let frame = buf.next_frame().expect("within the cap").expect("whole");
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    assert!(buf.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_frame_stalled_mid_body_closes_the_channel_at_the_deadline_and_not_before() {
    let (transport, mut peer) = RawPeer::new();
    let channel = echo_ping(builder("main")).start(transport);
    peer.send_raw(&(MAX_FRAME_LEN as u32).to_be_bytes())
        .await
        .expect("send");
    peer.send_raw(&[0; 10]).await.expect("send");
    // The clock is paused: the reader takes those bytes before any time passes.
    let started = tokio::time::Instant::now();
    tokio::time::sleep(FRAME_BODY_DEADLINE - Duration::from_millis(1)).await;
    assert_eq!(channel.close_reason(), None, "closed before the deadline");
    let reason = tokio::time::timeout(FRAME_BODY_DEADLINE, channel.closed())
        .await
        .expect("closed at the deadline");
    assert_eq!(started.elapsed(), FRAME_BODY_DEADLINE);
    assert_eq!(
        reason,
        CloseReason::FrameStalled {
            len: Some(MAX_FRAME_LEN),
            received: 10,
            after: FRAME_BODY_DEADLINE,
        }
    );
    assert_eq!(
        reason.to_string(),
        "the peer's frame of 16777216 bytes stalled after 10 bytes: not complete within 30s"
    );
    guard(channel.close()).await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_completed_within_its_deadline_decodes_however_slowly_it_came() {
    let (transport, mut peer) = RawPeer::new();
    let channel = echo_ping(builder("main")).start(transport);
    let almost = FRAME_BODY_DEADLINE - Duration::from_millis(1);
    let call = |id: u64| {
        framing::encode_request(id, "ping", &Ping { nonce: id }, MAX_FRAME_LEN).expect("encode")
    };
    // Half a frame, then the rest just before the deadline, in one write with the beginning
    // of the next frame.
    let (first, second) = (call(1), call(2));
    peer.send_raw(&first[..6]).await.expect("send");
    tokio::time::sleep(almost).await;
    peer.send_raw(&[&first[6..], &second[..3]].concat())
        .await
        .expect("send");
    // The next frame's clock started with its first bytes, not with the first frame: it may
    // take almost the whole deadline too, here a byte at a time, evenly spread.
    let rest = &second[3..];
    let step = Duration::from_millis(
        ((FRAME_BODY_DEADLINE - Duration::from_secs(1)) / rest.len() as u32).as_millis() as u64,
    );
    for byte in rest {
        tokio::time::sleep(step).await;
        peer.send_raw(std::slice::from_ref(byte))
            .await
            .expect("send");
    }
    for expected in 1..=2 {
        let reply = tokio::time::timeout(FRAME_BODY_DEADLINE, peer.recv_frame())
            .await
            .unwrap_or_else(|_| panic!("no answer; closed: {:?}", channel.close_reason()))
            .expect("read")
            .expect("frame");
        assert_eq!(reply.id, expected);
    }
    assert_eq!(channel.close_reason(), None);
    guard(channel.close()).await;
}

#[tokio::test]
async fn inline_pushes_are_still_delivered_while_calls_are_shed() {
    const LIMIT: usize = 2;
    let config = ChannelConfig {
        max_running_handlers: 1,
        max_handlers_in_flight: LIMIT,
        ..ChannelConfig::named("main")
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (transport, mut peer) = RawPeer::new();
    let channel = gated_ping(ChannelBuilder::new(config), gate.clone())
        .on_push_inline::<StateChanged, _>({
            let seen = seen.clone();
            move |change| seen.lock().expect("lock").push(change.state)
        })
        .start(transport);
    // Every handler slot is taken: the next call is shed...
    for id in 1..=(LIMIT as u64 + 1) {
        peer.send_call(id, &Ping { nonce: id }).await.expect("send");
    }
    let shed = guard(peer.recv_frame())
        .await
        .expect("read")
        .expect("frame");
    assert_eq!(shed.id, LIMIT as u64 + 1);
    assert_eq!(channel.stats().calls_shed, 1);
    // ...but states pushed meanwhile take no slot and are all delivered, in order.
    for number in 0..100 {
        peer.send_push(&StateChanged {
            state: number.to_string(),
            ..StateChanged::default()
        })
        .await
        .expect("send");
    }
    until_read(&channel, LIMIT as u64 + 1 + 100).await;
    let expected: Vec<String> = (0..100).map(|number| number.to_string()).collect();
    assert_eq!(*seen.lock().expect("lock"), expected);
    let stats = channel.stats();
    assert_eq!(stats.pushes_shed, 0);
    assert_eq!(stats.pushes_handled, 100);
    gate.add_permits(LIMIT);
    for _ in 0..LIMIT {
        guard(peer.recv_frame())
            .await
            .expect("read")
            .expect("frame");
    }
}

#[tokio::test]
async fn a_panicking_inline_push_handler_is_counted_and_the_channel_goes_on() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let main_builder = builder("main").on_push_inline::<StateChanged, _>({
        let seen = seen.clone();
        move |change| {
            assert_ne!(change.state, "boom", "integration bug");
            seen.lock().expect("lock").push(change.state);
        }
    });
    let (main, sandbox) = channel_pair(main_builder, echo_ping(builder("sandbox")));
    for state in ["1", "boom", "2"] {
        sandbox
            .push(&StateChanged {
                state: state.into(),
                ..StateChanged::default()
            })
            .await
            .expect("push");
    }
    // The pushes were written before the ping's reply, which main reads after them.
    guard(main.call(&Ping::default())).await.expect("reply");
    assert_eq!(*seen.lock().expect("lock"), ["1", "2"]);
    let stats = main.stats();
    assert_eq!(stats.handler_panics, 1);
    assert_eq!(stats.pushes_handled, 2);
    assert!(!main.is_closed(), "the reader survived the panic");
}

#[tokio::test]
async fn a_reply_too_large_to_send_becomes_a_remote_error_and_the_channel_goes_on() {
    let config = ChannelConfig {
        max_frame_len: 1024,
        ..ChannelConfig::named("sandbox")
    };
    let sandbox = echo_ping(ChannelBuilder::new(config)).on_call::<StoreLoad, _, _>(|_, _| async {
        Ok(StoreLoadResult {
            envelope_json: Some(vec![b'x'; 2048].into()),
        })
    });
    let (main, sandbox) = channel_pair(builder("main"), sandbox);
    let error = expect_remote(guard(main.call(&StoreLoad::default())).await).await;
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error
            .message
            .starts_with("the reply to `store_load` was not sent"),
        "{}",
        error.message
    );
    assert_eq!(
        guard(main.call(&Ping { nonce: 4 }))
            .await
            .expect("the channel is alive")
            .nonce,
        5
    );
    assert!(!sandbox.is_closed());
}

#[test]
fn a_reader_rests_only_once_its_share_of_the_window_is_spent() {
    let start = tokio::time::Instant::now();
    let mut share = ReaderShare::new(start);
    let step = READER_SHARE_BUSY / 5;
    // Busy less than its share across the window: never rests.
    for tick in 1..5u32 {
        share.charge(step, start + step * tick);
        assert_eq!(share.rest_until(), None);
    }
    // The share spent: rests until the window ends, and starts the next one clean.
    share.charge(step, start + step * 5);
    assert_eq!(share.rest_until(), Some(start + READER_SHARE_WINDOW));
    assert_eq!(share.rest_until(), None);
    // A window that ended forgets what was charged in it.
    let later = start + 3 * READER_SHARE_WINDOW;
    share.charge(READER_SHARE_BUSY - step, later);
    assert_eq!(share.rest_until(), None);
    share.charge(step, later + step);
    assert_eq!(
        share.rest_until(),
        Some(later + READER_SHARE_WINDOW),
        "the window starts at the first charge after the last one ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_kept_busy_by_a_flooding_peer_rests_between_its_shares() {
    // Pushes whose inline handling keeps the reader's thread busy 1 ms each: handled back to
    // back they would take about as long as they keep it busy; held to its share, the reader
    // rests as long as it works. A loaded machine only makes the wall time longer, so the
    // bound cannot fail for want of speed.
    const PUSHES: u32 = 60;
    const COST: Duration = Duration::from_millis(1);
    let handled = Arc::new(AtomicUsize::new(0));
    let main_builder = builder("main").on_push_inline::<StateChanged, _>({
        let handled = Arc::clone(&handled);
        move |_| {
            std::thread::sleep(COST);
            handled.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (_main, sandbox) = channel_pair(main_builder, builder("sandbox"));
    let flood: Vec<StateChanged> = (0..PUSHES)
        .map(|number| StateChanged {
            entity_id: "light.flood".into(),
            state: number.to_string(),
            ..StateChanged::default()
        })
        .collect();
    let started = std::time::Instant::now();
    guard(sandbox.push_batch(&flood)).await.expect("pushed");
    guard(async {
        while handled.load(Ordering::Relaxed) < PUSHES as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let busy = COST * PUSHES;
    let wall = started.elapsed();
    assert!(
        wall >= busy * 3 / 2,
        "{PUSHES} pushes costing {busy:?} of the reader's thread were handled in {wall:?}: the reader never rested"
    );
}

#[tokio::test]
async fn traffic_is_counted_per_message_type_and_answered_calls_by_latency() {
    let sandbox = echo_ping(builder("sandbox")).on_push::<StateChanged, _, _>(|_, _| async {});
    let (main, sandbox) = channel_pair(builder("main"), sandbox);
    for nonce in 0..3 {
        guard(main.call(&Ping { nonce })).await.expect("pong");
    }
    guard(main.push_batch(&[StateChanged::default(), StateChanged::default()]))
        .await
        .expect("pushed");
    guard(main.push(&StateChanged::default()))
        .await
        .expect("pushed");
    // A call nobody answers with a result still has a latency: the peer's error.
    assert!(guard(main.call(&StoreLoad::default())).await.is_err());
    guard(async {
        while sandbox
            .stats()
            .messages
            .iter()
            .all(|count| count.type_name != "state_changed" || count.received < 3)
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let count = |stats: &ChannelStats, type_name: &str| {
        stats
            .messages
            .iter()
            .find(|count| count.type_name == type_name)
            .map(|count| (count.sent, count.received))
    };
    let main_stats = main.stats();
    assert_eq!(count(&main_stats, "ping"), Some((3, 0)));
    assert_eq!(count(&main_stats, "state_changed"), Some((3, 0)));
    assert_eq!(count(&main_stats, "store_load"), Some((1, 0)));
    assert_eq!(
        count(&main_stats, "fire_event"),
        None,
        "only types with traffic are listed"
    );
    let sandbox_stats = sandbox.stats();
    assert_eq!(count(&sandbox_stats, "ping"), Some((0, 3)));
    assert_eq!(count(&sandbox_stats, "state_changed"), Some((0, 3)));
    assert_eq!(
        count(&sandbox_stats, "store_load"),
        None,
        "a call no handler takes is refused, not received"
    );
    let latency = &main_stats.call_latency;
    assert_eq!(latency.count, 4);
    assert_eq!(latency.buckets.iter().sum::<u64>(), 4);
    assert_eq!(latency.buckets.len(), LATENCY_BUCKETS_US.len() + 1);
    assert!(latency.quantile_us(0.99).is_some());
    assert_eq!(sandbox_stats.call_latency.count, 0, "it sent no call");
}

#[test]
fn a_quantile_is_the_bound_of_the_bucket_holding_its_rank() {
    let mut buckets = vec![0; LATENCY_BUCKETS_US.len() + 1];
    buckets[0] = 98; // ≤ 16 µs
    buckets[3] = 1; // ≤ 128 µs
    buckets[LATENCY_BUCKETS_US.len()] = 1; // above the last bound
    let histogram = LatencyHistogram {
        buckets,
        count: 100,
        sum_us: 0,
    };
    assert_eq!(histogram.quantile_us(0.5), Some(16));
    assert_eq!(histogram.quantile_us(0.98), Some(16));
    assert_eq!(histogram.quantile_us(0.99), Some(128));
    assert_eq!(histogram.quantile_us(1.0), Some(u64::MAX));
    assert_eq!(LatencyHistogram::default().quantile_us(0.5), None);
    assert_eq!(LATENCY_BUCKETS_US[0], 16);
    assert_eq!(LATENCY_BUCKETS_US[LATENCY_BUCKETS_US.len() - 1], 16 << 22);
}

#[test]
fn every_message_type_counts_at_its_own_catalog_position() {
    use crate::messages::{CATALOG, Call as _, Push as _, catalog_position};
    assert_eq!(CATALOG[Ping::INDEX].type_name, "ping");
    assert_eq!(CATALOG[StateChanged::INDEX].type_name, "state_changed");
    assert_eq!(CATALOG[FireEvent::INDEX].type_name, "fire_event");
    for (index, spec) in CATALOG.iter().enumerate() {
        assert_eq!(catalog_position(spec.type_name), index);
    }
    assert_eq!(catalog_position("no_such_type"), CATALOG.len());
}
