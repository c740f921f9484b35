//! `sandbox-host config check --config DIR` over the real binary: an absent file is created
//! and accepted; a refused file exits 2, names the key, and leaves the directory as it was.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG_FILE: &str = "sandbox-host.toml";

fn check(dir: &Path) -> Output {
    Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .args(["config", "check", "--config"])
        .arg(dir)
        .output()
        .unwrap()
}

/// Every entry under `dir` (recursively) with its bytes; a folder has none.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
                found.insert(path, Vec::new());
            } else {
                found.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// The example custom integration's artifact and manifest, and the artifact's SHA-256.
fn custom_example() -> (PathBuf, PathBuf, String) {
    let artifact = sandbox_tests::binary(sandbox_tests::Binary {
        package: "custom-example",
        name: "acme-thermostat-sandbox",
    });
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../custom-example/manifest.json")
        .canonicalize()
        .unwrap();
    let sha256 = sandbox_host::router::sha256_of_file(&artifact).unwrap();
    (artifact, manifest, sha256)
}

fn custom_entry(artifact: &Path, manifest: &Path, version: &str, sha256: &str) -> String {
    format!(
        "[[custom]]\nartifact = {:?}\nmanifest = {:?}\nversion = {version:?}\nsha256 = {sha256:?}\n",
        artifact.display().to_string(),
        manifest.display().to_string(),
    )
}

#[test]
fn an_empty_dir_gets_the_default_file_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let output = check(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = dir.path().join(CONFIG_FILE);
    assert!(
        stdout.contains("created the default configuration"),
        "{stdout}"
    );
    assert!(stdout.contains(&file.display().to_string()), "{stdout}");
    // Only the file, commented out whole.
    let after = contents(dir.path());
    assert_eq!(after.keys().collect::<Vec<_>>(), [&file]);
    let text = String::from_utf8(after[&file].clone()).unwrap();
    assert!(text.contains("#[defaults.restart]"), "{text}");
    assert!(
        text.lines()
            .all(|line| line.is_empty() || line.starts_with('#')),
        "{text}"
    );

    // Checked again: read, not rewritten.
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("created"));
    assert_eq!(contents(dir.path()), after);
}

#[test]
fn a_pinned_custom_integration_and_an_override_are_summarised() {
    let (artifact, manifest, sha256) = custom_example();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[groups.\"custom-acme_thermostat\"]\nready_timeout = \"1m\"\n\n{}",
        custom_entry(&artifact, &manifest, "1.0.0", &sha256)
    );
    std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
    let output = check(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("custom integration acme_thermostat 1.0.0 in group custom-acme_thermostat"),
        "{stdout}"
    );
    assert!(
        stdout.contains("group \"custom-acme_thermostat\": changed ready_timeout"),
        "{stdout}"
    );
}

#[test]
fn a_refused_file_exits_2_names_the_key_and_changes_nothing() {
    let (artifact, manifest, sha256) = custom_example();
    let mut wrong = sha256.clone();
    wrong.replace_range(0..1, if sha256.starts_with('0') { "1" } else { "0" });
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "[defaults.restart]\nmax_starts = 3\nretries = 5\n".to_owned(),
            "defaults.restart.retries",
            "unknown field",
        ),
        (
            "[defaults]\nready_timeout = 30\n".to_owned(),
            "defaults.ready_timeout",
            "invalid type",
        ),
        (
            "[groups.\"built-in\"]\nstop_grace = \"-1s\"\n".to_owned(),
            "groups.\"built-in\".stop_grace",
            "invalid duration",
        ),
        (
            "[defaults.watchdog]\ntimeout = \"0s\"\n".to_owned(),
            "defaults.watchdog.timeout",
            "must be above zero",
        ),
        (
            custom_entry(
                &artifact.with_extension("missing"),
                &manifest,
                "1.0.0",
                &sha256,
            ),
            "custom[0].artifact",
            "cannot read the artifact",
        ),
        (
            custom_entry(&artifact, &manifest, "1.0.0", "not-a-sha"),
            "custom[0].sha256",
            "is not a SHA-256",
        ),
        (
            custom_entry(&artifact, &manifest, "1.0.0", &wrong),
            "custom[0].sha256",
            "does not match its pinned sha256",
        ),
        (
            custom_entry(&artifact, &manifest, "2.0.0", &sha256),
            "custom[0].version",
            "does not match the manifest's version 1.0.0",
        ),
    ];
    for (text, key, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), &text).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let before = contents(dir.path());
        let output = check(dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(CONFIG_FILE), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr} (wanted {key:?})");
        assert!(
            stderr.contains(reason),
            "{text}: {stderr} (wanted {reason:?})"
        );
        assert!(output.stdout.is_empty(), "{text}");
        assert_eq!(contents(dir.path()), before, "{text}");
    }
}

#[test]
fn a_missing_dir_exits_2_and_is_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("absent");
    let output = check(&missing);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
    assert!(!missing.exists());
}
