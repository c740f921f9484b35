//! Tests of the store server: round trips, atomic files, every quota, hostile keys.

use super::*;
use serde_json::json;

fn envelope(key: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"version": 1, "minor_version": 1, "key": key, "data": data}))
        .expect("encodes")
}

#[tokio::test]
async fn save_load_remove_round_trip_in_the_group_folder() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    assert_eq!(store.dir(), config.path().join(".storage/sandbox/built-in"));
    assert!(store.load("demo.data").await.expect("loads").is_none());
    store
        .save(
            "demo.data",
            &envelope("demo.data", json!({"count": 3, "ratio": 0.5})),
        )
        .await
        .expect("saves");
    assert!(store.dir().join("demo.data").is_file());
    let loaded: serde_json::Value = serde_json::from_slice(
        &store
            .load("demo.data")
            .await
            .expect("loads")
            .expect("stored"),
    )
    .expect("json");
    assert_eq!(loaded["data"], json!({"count": 3, "ratio": 0.5}));
    assert!(loaded["data"]["count"].is_u64());
    store.remove("demo.data").await.expect("removes");
    assert!(store.load("demo.data").await.expect("loads").is_none());
}

#[tokio::test]
async fn hostile_keys_are_refused_and_nothing_is_written() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for key in ["../escape", "a/b", ".hidden", "", long.as_str(), "x\0y"] {
        let error = store
            .save(key, &envelope(key, json!(1)))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, StoreServerError::InvalidKey(_)),
            "{key:?}: {error}"
        );
        assert_eq!(RemoteError::from(&error).kind, ErrorKind::BadRequest);
    }
    assert!(!store.dir().exists(), "nothing was written");
    assert!(GroupStore::new(config.path(), "../other").is_err());
}

#[tokio::test]
async fn an_oversized_value_is_refused_whole() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "g").expect("valid group");
    let big = envelope("big", json!("x".repeat(MAX_VALUE_BYTES)));
    let error = store.save("big", &big).await.expect_err("too large");
    assert!(matches!(error, StoreServerError::ValueTooLarge { .. }));
    assert_eq!(RemoteError::from(&error).kind, ErrorKind::Quota);
    assert!(!store.dir().join("big").exists());
}

#[tokio::test]
async fn the_key_count_quota_holds_but_overwrites_are_fine() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "g").expect("valid group");
    for index in 0..MAX_GROUP_KEYS {
        let key = format!("k{index}");
        store
            .save(&key, &envelope(&key, json!(index)))
            .await
            .expect("within quota");
    }
    let error = store
        .save("one.more", &envelope("one.more", json!(0)))
        .await
        .expect_err("over quota");
    assert!(
        matches!(error, StoreServerError::TooManyKeys { .. }),
        "{error}"
    );
    store
        .save("k0", &envelope("k0", json!("updated")))
        .await
        .expect("overwriting is not a new key");
}

#[tokio::test]
async fn the_group_byte_quota_holds() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "g").expect("valid group");
    let chunk = "x".repeat(MAX_VALUE_BYTES - 200);
    let mut saved = 0;
    let error = loop {
        let key = format!("chunk{saved}");
        match store.save(&key, &envelope(&key, json!(chunk))).await {
            Ok(()) => saved += 1,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, StoreServerError::GroupTooLarge { .. }),
        "{error}"
    );
    assert_eq!(saved, 8, "32 MiB holds eight values just under 4 MiB");
}

#[tokio::test]
async fn a_non_envelope_is_refused() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "g").expect("valid group");
    let error = store
        .save("k", b"[1, 2, 3]")
        .await
        .expect_err("not an envelope");
    assert!(matches!(error, StoreServerError::InvalidEnvelope { .. }));
}

/// `depth` nested arrays, `width` of them side by side, as compact JSON.
fn nested_arrays(depth: usize, width: usize) -> serde_json::Value {
    let one = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    serde_json::from_str(&format!("[{}]", vec![one; width].join(","))).expect("json")
}

#[tokio::test]
async fn what_lands_on_disk_is_never_larger_than_what_was_counted() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    // Nested as deep as allowed and wide: pretty-printed, this would grow ~15 times.
    let sent = envelope(
        "deep",
        nested_arrays(crate::limits::MAX_JSON_DEPTH - 3, 8_000),
    );
    assert!(sent.len() > 400_000);
    store.save("deep", &sent).await.expect("saves");
    let written = std::fs::metadata(store.dir().join("deep"))
        .expect("written")
        .len();
    assert!(
        written <= sent.len() as u64,
        "{written} bytes written for {} sent",
        sent.len()
    );
    let loaded = store.load("deep").await.expect("loads").expect("stored");
    assert!(loaded.len() <= sent.len());
}

#[tokio::test]
async fn values_nested_deeper_than_the_bound_are_refused_and_nothing_is_written() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    // The envelope and the array around the nested arrays are two levels more.
    let sent = envelope(
        "deep",
        nested_arrays(crate::limits::MAX_STORED_JSON_DEPTH - 1, 1),
    );
    let error = store.save("deep", &sent).await.expect_err("too deep");
    assert!(matches!(error, StoreServerError::TooDeep { .. }), "{error}");
    assert_eq!(RemoteError::from(&error).kind, ErrorKind::BadRequest);
    assert!(!store.dir().join("deep").exists());
}

#[tokio::test]
async fn a_stored_file_over_the_value_bound_is_never_read_whole() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    store
        .save("big", &envelope("big", json!("small")))
        .await
        .expect("saves");
    // A file larger than this server ever writes (an older pretty-printed one, or one put
    // there by hand) is refused on load instead of being parsed into main's memory.
    let huge = envelope("big", json!("x".repeat(MAX_VALUE_BYTES)));
    std::fs::write(store.dir().join("big"), &huge).expect("written");
    let error = store.load("big").await.expect_err("too large");
    assert!(
        matches!(error, StoreServerError::ValueTooLarge { .. }),
        "{error}"
    );
    assert_eq!(RemoteError::from(&error).kind, ErrorKind::Quota);
}

#[tokio::test]
async fn a_load_hands_back_the_stored_bytes_as_they_are() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    let sent = envelope("demo.data", json!({"n": 1, "f": 0.5, "list": [1, 2]}));
    store.save("demo.data", &sent).await.expect("saves");
    let on_disk = std::fs::read(store.dir().join("demo.data")).expect("read");
    let loaded = store
        .load("demo.data")
        .await
        .expect("loads")
        .expect("stored");
    assert_eq!(&loaded[..], &on_disk[..]);
}

/// An object nesting `depth` levels of objects (itself the first), as attributes are sent.
fn nested_objects(depth: usize) -> serde_json::Map<String, serde_json::Value> {
    let mut value = json!({});
    for _ in 1..depth {
        value = json!({ "inner": value });
    }
    match value {
        serde_json::Value::Object(object) => object,
        _ => unreachable!("built from an object"),
    }
}

#[tokio::test]
async fn a_restore_state_of_states_main_accepted_is_stored_whole() {
    // Attributes and extra data as deep as main accepts from a sandbox...
    let deepest = nested_objects(crate::limits::MAX_JSON_DEPTH);
    let attributes = serde_json::to_vec(&deepest).expect("encodes");
    crate::limits::check_json(
        "attributes_json",
        &attributes,
        crate::limits::MAX_STATE_ATTRIBUTES_BYTES,
    )
    .expect("main accepts these attributes");
    // ...in the restore state the sandbox's core saves at its stop, built by the core itself.
    let sandbox_dir = tempfile::tempdir().expect("tempdir");
    let core = homecore::Core::builder(homecore::CoreConfig::new(sandbox_dir.path()))
        .build()
        .expect("core");
    core.states()
        .set("light.deep", "on", deepest.clone(), false, None)
        .expect("state written");
    core.restore_state().track("light.deep");
    core.restore_state()
        .set_extra_data("light.deep", Some(serde_json::Value::Object(deepest)));
    let states = core.restore_state().dump();
    let sent = serde_json::to_vec(&homecore::StoreEnvelope {
        version: 1,
        minor_version: 1,
        key: "core.restore_state".into(),
        data: serde_json::to_value(&states).expect("encodes"),
    })
    .expect("encodes");

    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    store
        .save("core.restore_state", &sent)
        .await
        .expect("a restore state of accepted states is stored");
    let loaded = store
        .load("core.restore_state")
        .await
        .expect("loads")
        .expect("stored");
    let loaded: homecore::StoreEnvelope = serde_json::from_slice(&loaded).expect("envelope");
    let back: Vec<homecore::restore_state::StoredState> =
        serde_json::from_value(loaded.data).expect("restore state");
    assert_eq!(back, states, "every level comes back");
}

#[tokio::test]
async fn groups_never_see_each_others_stores_and_a_group_finds_its_own_again() {
    let config = tempfile::tempdir().expect("tempdir");
    let built_in = GroupStore::new(config.path(), "built-in").expect("valid group");
    let custom = GroupStore::new(config.path(), "custom-acme").expect("valid group");
    built_in
        .save(
            "shared.name",
            &envelope("shared.name", json!({"owner": "built-in"})),
        )
        .await
        .expect("saves");
    assert!(
        custom.load("shared.name").await.expect("loads").is_none(),
        "another group's key is not visible"
    );
    custom
        .save(
            "shared.name",
            &envelope("shared.name", json!({"owner": "custom"})),
        )
        .await
        .expect("saves");
    custom.remove("shared.name").await.expect("removes");
    // A respawned process of the group gets a store of the same folder: its data is there,
    // untouched by the other group's writes and removal.
    let respawned = GroupStore::new(config.path(), "built-in").expect("valid group");
    let loaded: serde_json::Value = serde_json::from_slice(
        &respawned
            .load("shared.name")
            .await
            .expect("loads")
            .expect("stored"),
    )
    .expect("json");
    assert_eq!(loaded["data"], json!({"owner": "built-in"}));
}

#[tokio::test]
async fn an_entrys_keys_are_removed_and_no_other() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    assert_eq!(
        store
            .remove_entry_keys("01J0ENTRY")
            .await
            .expect("nothing to remove"),
        Vec::<String>::new()
    );
    for key in [
        "demo.01j0entry",
        "token.01J0ENTRY.cache",
        "demo.01j0other",
        "core.restore_state",
    ] {
        store
            .save(key, &envelope(key, json!({})))
            .await
            .expect("saves");
    }
    let removed = store.remove_entry_keys("01J0ENTRY").await.expect("removes");
    assert_eq!(removed, vec!["demo.01j0entry", "token.01J0ENTRY.cache"]);
    assert!(store.load("demo.01j0other").await.expect("loads").is_some());
    assert!(
        store
            .load("core.restore_state")
            .await
            .expect("loads")
            .is_some()
    );
    assert_eq!(
        store.remove_entry_keys("").await.expect("nothing"),
        Vec::<String>::new(),
        "an empty id names no entry"
    );
}

#[tokio::test]
async fn an_entry_id_matches_only_whole_tokens_of_a_key_and_its_leftovers_go_too() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    for key in [
        "demo_01j0entry",
        "demo-01J0ENTRY-token",
        "demo.x01j0entry",
        "demo.01j0entryx",
        "core.restore_state",
    ] {
        store
            .save(key, &envelope(key, json!({})))
            .await
            .expect("saves");
    }
    // What a corrupt file and an interrupted write of the entry's key leave behind.
    let leftovers = [
        "demo.01j0entry.corrupt.1700000000",
        ".tmp-01J0ZZZZZZZZZZZZZZZZZZZZZZ-demo.01j0entry",
    ];
    for name in leftovers {
        std::fs::write(store.dir().join(name), b"{}").expect("writes");
    }
    let removed = store.remove_entry_keys("01J0ENTRY").await.expect("removes");
    assert_eq!(
        removed,
        vec![
            ".tmp-01J0ZZZZZZZZZZZZZZZZZZZZZZ-demo.01j0entry",
            "demo-01J0ENTRY-token",
            "demo.01j0entry.corrupt.1700000000",
            "demo_01j0entry",
        ]
    );
    for kept in ["demo.x01j0entry", "demo.01j0entryx", "core.restore_state"] {
        assert!(store.dir().join(kept).exists(), "{kept} is kept");
    }
}

#[tokio::test]
async fn an_entry_id_too_short_or_not_plain_deletes_nothing() {
    let config = tempfile::tempdir().expect("tempdir");
    let store = GroupStore::new(config.path(), "built-in").expect("valid group");
    let keys = [
        "core.restore_state",
        "demo.a",
        "a",
        "demo.1234567",
        "demo.01J0-ENTRY",
    ];
    for key in keys {
        store
            .save(key, &envelope(key, json!({})))
            .await
            .expect("saves");
    }
    for entry_id in [
        "a",
        "state",
        "1234567",
        "01J0-ENTRY",
        "restore_state",
        "ENTRY/01J0",
    ] {
        assert_eq!(
            store.remove_entry_keys(entry_id).await.expect("nothing"),
            Vec::<String>::new(),
            "{entry_id} deletes nothing"
        );
    }
    for key in keys {
        assert!(store.dir().join(key).exists(), "{key} is kept");
    }
}
