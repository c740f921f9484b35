//! Tests for restore state.

use serde_json::{Map, json};

use super::*;
use crate::event::EventBus;
use crate::store::MemoryStoreBackend;

fn setup() -> (RestoreState, StateMachine, Stores) {
    let stores = Stores::new(Arc::new(MemoryStoreBackend::new()));
    let states = StateMachine::new(EventBus::new());
    (
        RestoreState::new(&stores, states.clone()).unwrap(),
        states,
        stores,
    )
}

fn stored(entity_id: &str, state: &str, last_seen: DateTime<Utc>) -> StoredState {
    StoredState {
        state: State {
            entity_id: entity_id.into(),
            state: state.into(),
            attributes: Map::new(),
            last_changed: last_seen,
            last_reported: last_seen,
            last_updated: last_seen,
            context: crate::context::Context::new(),
        },
        extra_data: None,
        last_seen,
    }
}

#[tokio::test]
async fn saves_tracked_states_and_loads_them_back() {
    let (restore, states, stores) = setup();
    states
        .set("sensor.t", "21.5", Map::new(), false, None)
        .unwrap();
    states
        .set("sensor.untracked", "1", Map::new(), false, None)
        .unwrap();
    restore.track("sensor.t");
    restore.set_extra_data(
        "sensor.t",
        Some(json!({"native_value": 21.5, "unit": "°C"})),
    );
    restore.save().await.unwrap();

    let (fresh, _states, _) = (
        RestoreState::new(&stores, StateMachine::new(EventBus::new())).unwrap(),
        (),
        (),
    );
    fresh.load().await.unwrap();
    let last = fresh.last_state("sensor.t").unwrap();
    assert_eq!(last.state.state, "21.5");
    assert!(last.extra_data.unwrap()["native_value"].is_f64());
    assert!(fresh.last_state("sensor.untracked").is_none());
}

#[tokio::test]
async fn untracked_entities_keep_their_last_state_until_expiry() {
    let (restore, states, _stores) = setup();
    states
        .set("light.a", "on", Map::new(), false, None)
        .unwrap();
    restore.track("light.a");
    restore.untrack("light.a");
    assert_eq!(restore.last_state("light.a").unwrap().state.state, "on");
    assert!(restore.tracked().is_empty());
    let old = Utc::now() - chrono::Duration::days(8);
    restore.import(vec![stored("light.gone", "off", old)]);
    let dumped: Vec<String> = restore
        .dump()
        .iter()
        .map(|s| s.state.entity_id.clone())
        .collect();
    assert_eq!(dumped, vec!["light.a"], "expired states are not saved");
}

#[test]
fn import_keeps_the_newer_state_and_the_bound_holds() {
    let (restore, _states, _stores) = setup();
    let now = Utc::now();
    restore.import(vec![
        stored("a.b", "new", now),
        stored("a.b", "old", now - chrono::Duration::hours(1)),
    ]);
    assert_eq!(restore.last_state("a.b").unwrap().state.state, "new");
    let many: Vec<StoredState> = (0..MAX_RESTORE_STATES + 10)
        .map(|i| {
            stored(
                &format!("sensor.s{i}"),
                "x",
                now - chrono::Duration::seconds(i as i64),
            )
        })
        .collect();
    restore.import(many);
    assert!(restore.dump().len() <= MAX_RESTORE_STATES);
    assert!(
        restore.last_state("a.b").is_some(),
        "the newest survive eviction"
    );
    assert!(
        restore
            .last_state(&format!("sensor.s{}", MAX_RESTORE_STATES + 9))
            .is_none(),
        "the oldest go"
    );
}

#[tokio::test]
async fn malformed_data_loads_as_empty() {
    let (restore, _states, stores) = setup();
    stores
        .store(RESTORE_STATE_STORE_KEY, 1, 1)
        .unwrap()
        .save(json!({"not": "a list"}))
        .await
        .unwrap();
    restore.load().await.unwrap();
    assert!(restore.dump().is_empty());
}
