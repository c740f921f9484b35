//! Tests of the artifact pin check: the streamed hash equals the whole-file hash at every size
//! around the buffer, and each refusal keeps its message.

use sha2::Digest;

use super::*;

fn custom(artifact: PathBuf, sha256: String) -> CustomIntegration {
    CustomIntegration {
        manifest: Manifest {
            domain: "acme".into(),
            name: "Acme".into(),
            version: semver::Version::new(1, 2, 3),
            integration_type: homecore::IntegrationType::Device,
            config_flow: true,
            platforms: vec!["climate".into()],
            dependencies: Vec::new(),
            iot_class: None,
            single_config_entry: false,
        },
        artifact,
        sha256,
    }
}

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Deterministic bytes that differ from one buffer to the next.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| u8::try_from((index * 31 + index / 997) % 251).expect("below 251"))
        .collect()
}

#[test]
fn the_streamed_hash_matches_the_whole_file_at_every_size_around_the_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = [
        0,
        1,
        ARTIFACT_HASH_BUFFER_LEN - 1,
        ARTIFACT_HASH_BUFFER_LEN,
        ARTIFACT_HASH_BUFFER_LEN + 1,
        3 * ARTIFACT_HASH_BUFFER_LEN + 12_345,
    ];
    for size in sizes {
        let path = dir.path().join(format!("artifact-{size}"));
        let bytes = content(size);
        std::fs::write(&path, &bytes).expect("writes");
        assert_eq!(
            sha256_of_file(&path).expect("reads"),
            hex(&bytes),
            "{size} bytes"
        );
        assert_eq!(verify_artifact(&custom(path.clone(), hex(&bytes))), Ok(()));
        // A pin written in capitals is the same pin.
        let upper = hex(&bytes).to_ascii_uppercase();
        assert_eq!(verify_artifact(&custom(path, upper)), Ok(()));
    }
    assert_eq!(
        hex(&[]),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_wrong_pin_is_refused_naming_both_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("artifact");
    let bytes = content(ARTIFACT_HASH_BUFFER_LEN * 2 + 7);
    std::fs::write(&path, &bytes).expect("writes");
    let pinned = "0".repeat(64);
    let error = verify_artifact(&custom(path, pinned.clone())).expect_err("refused");
    assert_eq!(
        error,
        format!(
            "the artifact of acme 1.2.3 does not match its pinned sha256 (expected {pinned}, found {}); refusing to run it",
            hex(&bytes)
        )
    );
}

#[test]
fn an_artifact_that_cannot_be_read_is_refused_with_the_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing =
        verify_artifact(&custom(dir.path().join("missing"), hex(b""))).expect_err("refused");
    assert!(
        missing.starts_with("cannot read the artifact of acme: ") && missing.contains("os error"),
        "{missing}"
    );
    // A folder opens but cannot be read: the error of the read, not of the open.
    let folder = verify_artifact(&custom(dir.path().to_owned(), hex(b""))).expect_err("refused");
    assert!(
        folder.starts_with("cannot read the artifact of acme: "),
        "{folder}"
    );
}
