//! Tests for the shared registry parts.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::{MemoryStoreBackend, StoreBackend, StoreKey};

#[test]
fn note_change_records_old_values_only_when_different() {
    let mut changes = Map::new();
    note_change(&mut changes, "same", &1, &1);
    note_change(&mut changes, "name", &Some("old"), &None::<&str>);
    assert_eq!(Value::Object(changes), json!({"name": "old"}));
}

#[tokio::test]
async fn registries_load_together_and_a_newer_store_version_is_refused() {
    let backend = Arc::new(MemoryStoreBackend::new());
    let stores = Stores::new(backend.clone());
    let bus = EventBus::new();
    let states = StateMachine::new(bus.clone());
    let registries = Registries::new(&bus, &stores, &states).unwrap();
    registries.areas.create("Office").unwrap();
    stores.flush_pending().await;
    let reloaded = Registries::new(&bus, &stores, &states).unwrap();
    reloaded.load().await.unwrap();
    assert_eq!(reloaded.areas.areas().len(), 1);

    // Data written by a newer major version must not be overwritten by starting empty.
    let key = StoreKey::new("core.device_registry").unwrap();
    let mut envelope = backend
        .get("core.device_registry")
        .unwrap_or(crate::store::StoreEnvelope {
            version: 1,
            minor_version: 1,
            key: key.to_string(),
            data: json!({"devices": []}),
        });
    envelope.version = 9;
    backend.save(&key, &envelope).await.unwrap();
    let err = Registries::new(&bus, &stores, &states)
        .unwrap()
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Store(StoreError::UnsupportedVersion { found: 9, .. })
        ),
        "{err}"
    );
}
