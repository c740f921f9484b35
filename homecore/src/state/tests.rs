//! Tests for the state machine.

use serde_json::json;

use super::*;
use crate::event::EventSubscription;

fn attrs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn machine() -> (StateMachine, EventSubscription, EventSubscription) {
    let bus = EventBus::new();
    let changed = bus.subscribe(EVENT_STATE_CHANGED).unwrap();
    let reported = bus.subscribe(EVENT_STATE_REPORTED).unwrap();
    (StateMachine::new(bus), changed, reported)
}

#[tokio::test]
async fn set_get_and_state_changed_with_old_and_new() {
    let (states, mut changed, _reported) = machine();
    let ctx = Context::new();
    states
        .set(
            "light.kitchen",
            "on",
            attrs(json!({"brightness": 255, "level": 0.5})),
            false,
            Some(ctx.clone()),
        )
        .unwrap();
    let event = changed.recv().await.unwrap();
    assert_eq!(event.context, ctx);
    let data = StateChangedData::from_event(&event).unwrap();
    assert_eq!(data.entity_id, "light.kitchen");
    assert!(data.old_state.is_none());
    let new = data.new_state.unwrap();
    assert_eq!(new.state, "on");
    assert!(new.attributes["brightness"].is_i64());
    assert!(new.attributes["level"].is_f64());

    states
        .set("light.kitchen", "off", Map::new(), false, None)
        .unwrap();
    let data = StateChangedData::from_event(&changed.recv().await.unwrap()).unwrap();
    assert_eq!(data.old_state.unwrap().state, "on");
    assert_eq!(data.new_state.unwrap().state, "off");
    assert_eq!(states.get("light.kitchen").unwrap().state, "off");
}

#[tokio::test]
async fn identical_write_only_reports() {
    let (states, mut changed, mut reported) = machine();
    let first = states
        .set("sensor.t", "21", attrs(json!({"unit": "°C"})), false, None)
        .unwrap();
    changed.recv().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let again = states
        .set("sensor.t", "21", attrs(json!({"unit": "°C"})), false, None)
        .unwrap();
    let event = reported.recv().await.unwrap();
    assert_eq!(event.data["entity_id"], "sensor.t");
    assert!(
        changed.try_recv().is_none(),
        "no state_changed for an identical write"
    );
    assert_eq!(again.last_changed, first.last_changed);
    assert_eq!(again.last_updated, first.last_updated);
    assert!(again.last_reported > first.last_reported);
    assert_eq!(again.context, first.context);
}

#[tokio::test]
async fn attribute_change_keeps_last_changed_and_force_update_fires() {
    let (states, mut changed, mut reported) = machine();
    let first = states
        .set("sensor.t", "21", Map::new(), false, None)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = states
        .set("sensor.t", "21", attrs(json!({"a": 1})), false, None)
        .unwrap();
    assert_eq!(second.last_changed, first.last_changed);
    assert!(second.last_updated > first.last_updated);
    states
        .set("sensor.t", "21", attrs(json!({"a": 1})), true, None)
        .unwrap();
    for _ in 0..3 {
        changed.recv().await.unwrap();
    }
    assert!(reported.try_recv().is_none());
}

#[tokio::test]
async fn integer_and_float_attributes_are_a_change() {
    let (states, mut changed, mut reported) = machine();
    states
        .set("sensor.t", "1", attrs(json!({"v": 1})), false, None)
        .unwrap();
    let after = states
        .set("sensor.t", "1", attrs(json!({"v": 1.0})), false, None)
        .unwrap();
    assert!(after.attributes["v"].is_f64());
    changed.recv().await.unwrap();
    changed.recv().await.unwrap();
    assert!(reported.try_recv().is_none());
}

#[tokio::test]
async fn remove_fires_changed_with_null_new_state() {
    let (states, mut changed, _reported) = machine();
    states
        .set("switch.a", "on", Map::new(), false, None)
        .unwrap();
    changed.recv().await.unwrap();
    assert!(states.remove("switch.a", None).is_some());
    let data = StateChangedData::from_event(&changed.recv().await.unwrap()).unwrap();
    assert!(data.new_state.is_none());
    assert_eq!(data.old_state.unwrap().state, "on");
    assert!(states.remove("switch.a", None).is_none());
    assert!(states.get("switch.a").is_none());
}

#[test]
fn bad_entity_id_and_overlong_state_are_refused() {
    let (states, _changed, _reported) = machine();
    assert!(matches!(
        states.set("Light.Kitchen", "on", Map::new(), false, None),
        Err(StateError::InvalidEntityId(_))
    ));
    assert!(matches!(
        states.set("kitchen", "on", Map::new(), false, None),
        Err(StateError::InvalidEntityId(_))
    ));
    let err = states
        .set(
            "sensor.a",
            "x".repeat(MAX_STATE_LENGTH + 1),
            Map::new(),
            false,
            None,
        )
        .unwrap_err();
    assert_eq!(
        err,
        StateError::StateTooLong {
            entity_id: "sensor.a".into(),
            len: MAX_STATE_LENGTH + 1
        }
    );
    // The limit counts characters, not bytes.
    states
        .set(
            "sensor.a",
            "é".repeat(MAX_STATE_LENGTH),
            Map::new(),
            false,
            None,
        )
        .unwrap();
    assert_eq!(states.len(), 1);
}

#[test]
fn all_and_entity_ids_filter_by_domain() {
    let (states, _changed, _reported) = machine();
    for id in ["light.b", "light.a", "switch.c"] {
        states.set(id, "on", Map::new(), false, None).unwrap();
    }
    assert_eq!(states.entity_ids(Some("light")), vec!["light.a", "light.b"]);
    assert_eq!(states.all(None).len(), 3);
    assert_eq!(states.get("light.a").unwrap().domain(), "light");
    assert_eq!(states.get("light.a").unwrap().object_id(), "a");
}

#[tokio::test]
async fn observers_see_every_change_in_order_and_events_are_built_only_for_listeners() {
    let bus = EventBus::new();
    let states = StateMachine::new(bus.clone());
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let observer = states.observe(Arc::new(
        move |entity_id: &str, new: Option<&Arc<State>>| {
            sink.lock()
                .push((entity_id.to_owned(), new.map(|state| state.state.clone())));
        },
    ));
    // Nobody listens yet: the change is observed, no event exists for anyone.
    states
        .set("light.a", "on", Map::new(), false, None)
        .unwrap();
    let mut changed = bus.subscribe(EVENT_STATE_CHANGED).unwrap();
    states
        .set("light.a", "off", Map::new(), false, None)
        .unwrap();
    // Unchanged: a report, not a change.
    states
        .set("light.a", "off", Map::new(), false, None)
        .unwrap();
    states.remove("light.a", None);
    assert_eq!(
        *seen.lock(),
        vec![
            ("light.a".to_owned(), Some("on".to_owned())),
            ("light.a".to_owned(), Some("off".to_owned())),
            ("light.a".to_owned(), None),
        ]
    );
    let first = StateChangedData::from_event(&changed.try_recv().unwrap()).unwrap();
    assert_eq!(first.old_state.unwrap().state, "on");
    assert_eq!(first.new_state.unwrap().state, "off");
    let removed = StateChangedData::from_event(&changed.try_recv().unwrap()).unwrap();
    assert!(removed.new_state.is_none());
    assert!(changed.try_recv().is_none());
    observer.remove();
    states
        .set("light.b", "on", Map::new(), false, None)
        .unwrap();
    assert_eq!(seen.lock().len(), 3);
}
