//! Tests for the event bus.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;

fn data(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test]
async fn callback_listener_gets_events_of_its_type_in_order() {
    let bus = EventBus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _handle = bus
        .listen("test_event", move |event| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().unwrap().push(event.data["n"].clone()) }
        })
        .unwrap();
    for n in 0..5 {
        bus.fire("test_event", data(json!({"n": n})), None).unwrap();
    }
    bus.fire("other_event", Map::new(), None).unwrap();
    bus.wait_idle().await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![json!(0), json!(1), json!(2), json!(3), json!(4)]
    );
}

#[tokio::test]
async fn match_all_sees_everything_but_the_excluded_types() {
    let bus = EventBus::new();
    let mut all = bus.subscribe(MATCH_ALL).unwrap();
    bus.fire("a", Map::new(), None).unwrap();
    bus.fire(EVENT_STATE_REPORTED, Map::new(), None).unwrap();
    bus.fire("b", Map::new(), None).unwrap();
    assert_eq!(all.recv().await.unwrap().event_type, "a");
    assert_eq!(all.recv().await.unwrap().event_type, "b");
    assert!(all.try_recv().is_none());
}

#[tokio::test]
async fn event_carries_data_context_and_origin() {
    let bus = EventBus::new();
    let mut sub = bus.subscribe("x").unwrap();
    let ctx = Context::with_user("u1");
    bus.fire_with_origin(
        "x",
        data(json!({"int": 1, "float": 0.5})),
        Some(ctx.clone()),
        EventOrigin::Remote,
    )
    .unwrap();
    let event = sub.recv().await.unwrap();
    assert_eq!(event.context, ctx);
    assert_eq!(event.origin, EventOrigin::Remote);
    assert!(event.data["int"].is_i64());
    assert!(event.data["float"].is_f64());
    let wire = serde_json::to_value(&*event).unwrap();
    assert_eq!(wire["origin"], "REMOTE");
    let back: Event = serde_json::from_value(wire).unwrap();
    assert_eq!(back, *event);
}

#[tokio::test]
async fn removed_listener_gets_nothing_more() {
    let bus = EventBus::new();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let handle = bus
        .listen("e", move |_| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    bus.fire("e", Map::new(), None).unwrap();
    bus.wait_idle().await;
    handle.remove();
    assert!(bus.listener_counts().is_empty());
    bus.fire("e", Map::new(), None).unwrap();
    bus.wait_idle().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn listen_once_fires_once_and_unregisters() {
    let bus = EventBus::new();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let _handle = bus
        .listen_once("e", move |_| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    bus.fire("e", Map::new(), None).unwrap();
    bus.fire("e", Map::new(), None).unwrap();
    bus.wait_idle().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(bus.listener_counts().is_empty());
}

#[tokio::test]
async fn a_blocked_listener_never_blocks_the_firer_and_overflow_is_counted() {
    let bus = EventBus::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::clone(&gate);
    let _handle = bus
        .listen("e", move |_| {
            let waiting = Arc::clone(&waiting);
            async move {
                let _permit = waiting.acquire().await;
            }
        })
        .unwrap();
    let mut fast = bus.subscribe("e").unwrap();
    let total = LISTENER_QUEUE_CAPACITY + 50;
    for _ in 0..total {
        bus.fire("e", Map::new(), None).unwrap();
    }
    // The firer returned although the listener handles nothing; the excess was dropped.
    assert!(bus.dropped_events() >= 49);
    let mut received = 0;
    while fast.try_recv().is_some() {
        received += 1;
    }
    assert_eq!(received, LISTENER_QUEUE_CAPACITY);
    gate.add_permits(total);
    tokio::time::timeout(Duration::from_secs(10), bus.wait_idle())
        .await
        .expect("listener drains its bounded queue");
}

#[tokio::test]
async fn a_panicking_listener_keeps_listening() {
    let bus = EventBus::new();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let _handle = bus
        .listen("e", move |event| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                assert!(event.data.is_empty(), "boom");
            }
        })
        .unwrap();
    bus.fire("e", data(json!({"x": 1})), None).unwrap();
    bus.fire("e", Map::new(), None).unwrap();
    bus.wait_idle().await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn event_type_limits_and_runtime_requirement() {
    let bus = EventBus::new();
    assert_eq!(
        bus.fire("", Map::new(), None).unwrap_err(),
        EventError::EmptyEventType
    );
    let long = "e".repeat(MAX_EVENT_TYPE_LENGTH + 1);
    assert!(matches!(
        bus.fire(&long, Map::new(), None),
        Err(EventError::EventTypeTooLong { .. })
    ));
    assert_eq!(
        bus.listen("e", |_| async {}).unwrap_err(),
        EventError::NoRuntime
    );
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let bus = EventBus::new();
    let sub = bus.subscribe("e").unwrap();
    assert_eq!(bus.listener_counts()["e"], 1);
    drop(sub);
    assert!(bus.listener_counts().is_empty());
}

#[tokio::test]
async fn a_filtered_match_all_listener_is_never_queued_what_it_refuses() {
    let bus = EventBus::new();
    assert!(!bus.has_listeners_for("state_changed"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let handle = bus
        .listen_all_where(
            |event_type| event_type != "state_changed",
            move |event| {
                let sink = Arc::clone(&sink);
                async move { sink.lock().unwrap().push(event.event_type.clone()) }
            },
        )
        .unwrap();
    assert!(!bus.has_listeners_for("state_changed"));
    assert!(bus.has_listeners_for("demo_event"));
    assert!(
        !bus.has_listeners_for(EVENT_STATE_REPORTED),
        "excluded from match-all"
    );
    bus.fire("state_changed", Map::new(), None).unwrap();
    bus.fire("demo_event", Map::new(), None).unwrap();
    bus.wait_idle().await;
    assert_eq!(*seen.lock().unwrap(), vec!["demo_event".to_owned()]);
    let _plain = bus.subscribe("state_changed").unwrap();
    assert!(bus.has_listeners_for("state_changed"));
    handle.remove();
    assert!(!bus.has_listeners_for("demo_event"));
}

/// Reads every non-test source file of this crate.
fn core_sources() -> Vec<(std::path::PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs")
                && path.file_name().is_some_and(|name| name != "tests.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut sources = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut sources,
    );
    sources
}

#[test]
fn every_event_the_core_fires_is_a_core_event() {
    let sources = core_sources();
    assert!(sources.len() > 10, "found the crate's sources");
    let mut declared = Vec::new();
    for (path, text) in &sources {
        for line in text.lines() {
            let line = line.trim();
            // Every event type is a named constant ...
            if let Some(rest) = line.strip_prefix("pub const EVENT_")
                && let Some((_, value)) = rest.split_once("&str = \"")
            {
                let value = value.trim_end_matches("\";");
                declared.push(value.to_owned());
                assert!(
                    CORE_EVENT_TYPES.contains(&value),
                    "{}: the core fires {value:?}, which CORE_EVENT_TYPES lacks",
                    path.display()
                );
            }
            // ... and nothing fires a literal the list could miss.
            for call in [".fire(\"", "fire_with_origin(\""] {
                assert!(
                    !line.contains(call),
                    "{}: fires an event type that is not a named constant: {line}",
                    path.display()
                );
            }
        }
    }
    for core in CORE_EVENT_TYPES {
        assert!(
            declared.iter().any(|value| value == core),
            "{core} is declared"
        );
    }
}
