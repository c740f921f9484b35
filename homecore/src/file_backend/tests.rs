//! Tests for the atomic file backend.

use serde_json::json;

use super::*;

fn envelope(key: &str, data: serde_json::Value) -> StoreEnvelope {
    StoreEnvelope {
        version: 1,
        minor_version: 1,
        key: key.into(),
        data,
    }
}

#[tokio::test]
async fn saves_to_dot_storage_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileStoreBackend::new(dir.path());
    let key = StoreKey::new("core.test").unwrap();
    assert_eq!(backend.load(&key).await.unwrap(), None);
    backend
        .save(&key, &envelope("core.test", json!({"n": 1, "f": 1.5})))
        .await
        .unwrap();
    let path = dir.path().join(".storage").join("core.test");
    assert!(path.is_file());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "{\"version\":1,\"minor_version\":1,\"key\":\"core.test\",\"data\":{\"n\":1,\"f\":1.5}}\n",
        "written compact"
    );
    let loaded = backend.load(&key).await.unwrap().unwrap();
    assert!(loaded.data["n"].is_i64() && loaded.data["f"].is_f64());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    backend.remove(&key).await.unwrap();
    backend.remove(&key).await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn a_crash_between_temp_write_and_rename_leaves_the_old_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileStoreBackend::new(dir.path());
    let key = StoreKey::new("core.test").unwrap();
    backend
        .save(&key, &envelope("core.test", json!({"generation": "old"})))
        .await
        .unwrap();
    let before = std::fs::read(backend.path(&key)).unwrap();

    // The process dies after the temp file is durable but before the rename.
    let temp = backend
        .write_temp(
            &key,
            br#"{"version": 1, "key": "core.test", "data": {"generation": "new"}}"#,
        )
        .unwrap();
    assert!(temp.exists());
    assert_eq!(std::fs::read(backend.path(&key)).unwrap(), before);
    let loaded = backend.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.data["generation"], "old");

    // A half-written temp file (crash mid-write) is equally harmless.
    std::fs::write(
        dir.path().join(".storage").join(".tmp-torn-core.test"),
        b"{\"vers",
    )
    .unwrap();
    assert_eq!(
        backend.load(&key).await.unwrap().unwrap().data["generation"],
        "old"
    );

    // On the next start the leftovers are swept and writes carry on.
    assert_eq!(backend.remove_stale_temp_files().unwrap(), 2);
    backend
        .save(&key, &envelope("core.test", json!({"generation": "next"})))
        .await
        .unwrap();
    assert_eq!(
        backend.load(&key).await.unwrap().unwrap().data["generation"],
        "next"
    );
    let names: Vec<String> = std::fs::read_dir(backend.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["core.test"]);
}

#[tokio::test]
async fn a_corrupt_file_is_a_clear_error_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileStoreBackend::new(dir.path());
    let key = StoreKey::new("core.bad").unwrap();
    std::fs::create_dir_all(backend.dir()).unwrap();
    std::fs::write(backend.path(&key), b"{ not json").unwrap();
    let err = backend.load(&key).await.unwrap_err();
    let StoreError::Corrupt {
        key: bad_key,
        moved_to,
        ..
    } = &err
    else {
        panic!("expected corrupt, got {err:?}");
    };
    assert_eq!(bad_key, "core.bad");
    let moved_to = moved_to.as_ref().unwrap();
    assert!(
        moved_to
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("core.bad.corrupt.")
    );
    assert_eq!(std::fs::read(moved_to).unwrap(), b"{ not json");
    assert!(err.to_string().contains("corrupt"));
    // The key reads as empty afterwards, so the next save starts clean.
    assert_eq!(backend.load(&key).await.unwrap(), None);

    // Valid JSON that is not an envelope is corrupt too.
    std::fs::write(backend.path(&key), b"[1, 2]").unwrap();
    assert!(matches!(
        backend.load(&key).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn older_files_without_minor_version_read_as_minor_one() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileStoreBackend::new(dir.path());
    let key = StoreKey::new("old").unwrap();
    std::fs::create_dir_all(backend.dir()).unwrap();
    std::fs::write(
        backend.path(&key),
        br#"{"version": 1, "key": "old", "data": {}}"#,
    )
    .unwrap();
    assert_eq!(backend.load(&key).await.unwrap().unwrap().minor_version, 1);
}

#[tokio::test]
async fn write_failure_is_an_io_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the storage folder should be makes every write fail.
    std::fs::write(dir.path().join(STORAGE_DIR), b"").unwrap();
    let backend = FileStoreBackend::new(dir.path());
    let key = StoreKey::new("k").unwrap();
    let err = backend
        .save(&key, &envelope("k", json!(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                operation: "write",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("store k: write failed"));
}
