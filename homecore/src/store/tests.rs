//! Tests for stores: keys, versions, migration and delayed saves.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;

fn memory() -> (Stores, Arc<MemoryStoreBackend>) {
    let backend = Arc::new(MemoryStoreBackend::new());
    (Stores::new(backend.clone()), backend)
}

#[test]
fn keys_are_validated() {
    for good in [
        "core.entity_registry",
        "http.auth",
        "a",
        "lovelace.map-dash_2",
        &"k".repeat(128),
    ] {
        assert!(StoreKey::new(good).is_ok(), "{good}");
    }
    for (bad, reason) in [
        ("", "must not be empty"),
        ("../etc/passwd", "only ASCII"),
        ("a/b", "only ASCII"),
        ("a..b", "must not contain '..'"),
        (".hidden", "must not start with '.'"),
        ("sp ace", "only ASCII"),
        ("ünï", "only ASCII"),
        ("a\0b", "only ASCII"),
    ] {
        let err = StoreKey::new(bad).unwrap_err();
        assert!(err.to_string().contains(reason), "{bad}: {err}");
    }
    assert!(
        StoreKey::new("k".repeat(129))
            .unwrap_err()
            .to_string()
            .contains("longer than 128")
    );
    assert!(serde_json::from_value::<StoreKey>(json!("../x")).is_err());
}

#[tokio::test]
async fn save_then_load_writes_the_envelope() {
    let (stores, backend) = memory();
    let store = stores.store("test.data", 2, 3).unwrap();
    assert_eq!(store.load().await.unwrap(), None);
    store.save(json!({"int": 1, "float": 0.5})).await.unwrap();
    let envelope = backend.get("test.data").unwrap();
    assert_eq!((envelope.version, envelope.minor_version), (2, 3));
    assert_eq!(envelope.key, "test.data");
    let data = store.load().await.unwrap().unwrap();
    assert!(data["int"].is_i64());
    assert!(data["float"].is_f64());
    store.remove().await.unwrap();
    assert_eq!(store.load().await.unwrap(), None);
}

#[tokio::test]
async fn newer_major_is_refused_and_older_is_migrated_and_resaved() {
    let (stores, backend) = memory();
    stores
        .store("k", 3, 1)
        .unwrap()
        .save(json!({"v": 3}))
        .await
        .unwrap();
    let old_reader = stores.store("k", 2, 1).unwrap();
    assert!(matches!(
        old_reader.load().await,
        Err(StoreError::UnsupportedVersion {
            found: 3,
            supported: 2,
            ..
        })
    ));

    stores
        .store("m", 1, 1)
        .unwrap()
        .save(json!({"name": "x"}))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let migrating =
        stores
            .store("m", 2, 1)
            .unwrap()
            .with_migration(move |major, minor, mut data| {
                counted.fetch_add(1, Ordering::SeqCst);
                assert_eq!((major, minor), (1, 1));
                data["migrated"] = json!(true);
                Ok(data)
            });
    assert_eq!(migrating.load().await.unwrap().unwrap()["migrated"], true);
    assert_eq!(backend.get("m").unwrap().version, 2);
    migrating.load().await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "migrated once, then read as current"
    );

    stores
        .store("n", 1, 1)
        .unwrap()
        .save(json!(1))
        .await
        .unwrap();
    assert!(matches!(
        stores.store("n", 2, 1).unwrap().load().await,
        Err(StoreError::Migration { .. })
    ));
    let failing = stores
        .store("n", 2, 1)
        .unwrap()
        .with_migration(|_, _, _| Err("bad data".into()));
    assert!(
        failing
            .load()
            .await
            .unwrap_err()
            .to_string()
            .contains("bad data")
    );
}

#[tokio::test]
async fn a_different_minor_version_reads_without_migration() {
    let (stores, _backend) = memory();
    stores
        .store("k", 1, 4)
        .unwrap()
        .save(json!("newer minor"))
        .await
        .unwrap();
    assert_eq!(
        stores.store("k", 1, 2).unwrap().load().await.unwrap(),
        Some(json!("newer minor"))
    );
}

#[tokio::test(start_paused = true)]
async fn delayed_save_waits_debounces_and_reads_pending_data() {
    let (stores, backend) = memory();
    let store = stores.store("delayed", 1, 1).unwrap();
    let value = Arc::new(AtomicUsize::new(1));
    let source = Arc::clone(&value);
    store.delay_save(
        move || json!(source.load(Ordering::SeqCst)),
        Duration::from_secs(10),
    );
    assert_eq!(stores.pending_keys(), vec!["delayed"]);
    assert_eq!(
        store.load().await.unwrap(),
        Some(json!(1)),
        "pending data is what load sees"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(backend.get("delayed").is_none());
    // Rescheduling restarts the delay.
    let source = Arc::clone(&value);
    store.delay_save(
        move || json!(source.load(Ordering::SeqCst) * 10),
        Duration::from_secs(10),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(backend.get("delayed").is_none());
    value.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The data function runs at write time.
    assert_eq!(backend.get("delayed").unwrap().data, json!(20));
    assert!(stores.pending_keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn flush_writes_every_pending_save_now() {
    let (stores, backend) = memory();
    stores
        .store("a", 1, 1)
        .unwrap()
        .delay_save(|| json!("a"), Duration::from_secs(3600));
    stores
        .store("b", 1, 1)
        .unwrap()
        .delay_save(|| json!("b"), Duration::from_secs(3600));
    assert!(stores.flush_pending().await.is_empty());
    assert_eq!(backend.keys(), vec!["a", "b"]);
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(backend.get("a").unwrap().data, json!("a"));
}

#[tokio::test(start_paused = true)]
async fn an_immediate_save_or_remove_cancels_the_delayed_one() {
    let (stores, backend) = memory();
    let store = stores.store("k", 1, 1).unwrap();
    store.delay_save(|| json!("late"), Duration::from_secs(1));
    store.save(json!("now")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(backend.get("k").unwrap().data, json!("now"));
    store.delay_save(|| json!("late"), Duration::from_secs(1));
    store.remove().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(backend.get("k").is_none());
}

/// A backend that fails every write, as a remote backend might when its peer is gone.
struct FailingBackend;

impl StoreBackend for FailingBackend {
    fn load<'a>(
        &'a self,
        _key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        _: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            Err(StoreError::Backend {
                key: key.to_string(),
                message: "quota exceeded".into(),
            })
        })
    }
    fn remove<'a>(&'a self, _key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn backend_failures_surface_from_save_and_flush() {
    let stores = Stores::new(Arc::new(FailingBackend));
    let store = stores.store("k", 1, 1).unwrap();
    assert!(
        store
            .save(json!(1))
            .await
            .unwrap_err()
            .to_string()
            .contains("quota exceeded")
    );
    store.delay_save(|| json!(1), Duration::from_secs(60));
    let failures = stores.flush_pending().await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0.as_str(), "k");
}

#[test]
fn invalid_key_is_refused_by_the_store_factory() {
    let (stores, _backend) = memory();
    assert!(matches!(
        stores.store("../x", 1, 1),
        Err(StoreError::InvalidKey { .. })
    ));
}
