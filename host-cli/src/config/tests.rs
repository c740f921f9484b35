//! Tests of the configuration file: the defaults are the library's, overrides merge, every
//! refusal names its key path, and loading writes only the default file, atomically.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Parses `text` as the file of `dir`.
fn parse_in(dir: &Path, text: &str) -> Result<HubConfig, ConfigError> {
    parse(text, &dir.join(CONFIG_FILE_NAME), dir)
}

/// Parses `text` in a throwaway directory.
fn parse_text(text: &str) -> Result<HubConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    parse_in(dir.path(), text)
}

/// The refusal of `text`, as displayed.
fn refusal(text: &str) -> String {
    match parse_text(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error.to_string(),
    }
}

/// `config` with its names set to `name`, as debug text: `GroupConfig` has no `PartialEq`,
/// and its debug text shows every field.
fn debug_named(config: &GroupConfig, name: &str) -> String {
    let mut config = config.clone();
    config.name = name.to_owned();
    config.channel.name = name.to_owned();
    format!("{config:?}")
}

fn groups(config: &HubConfig) -> GroupsConfig {
    config.groups_config(PathBuf::from("/config"), vec![OsString::from("runtime")])
}

/// The default file with every `#key = value` and `#[table]` line uncommented.
fn uncommented_default() -> String {
    default_file()
        .lines()
        .map(|line| {
            let rest = line.strip_prefix('#').unwrap_or(line);
            let is_setting = rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(key, _)| {
                    key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            if line.starts_with('#') && is_setting {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_library_defaults(config: &HubConfig) {
    let library = GroupConfig::new("built-in");
    let groups = groups(config);
    assert_eq!(
        debug_named(&groups.group_defaults, "built-in"),
        format!("{library:?}")
    );
    assert_eq!(
        format!("{:?}", groups.group_config("built-in")),
        format!("{library:?}")
    );
    assert!(groups.group_overrides.is_empty());
    assert!(groups.custom_commands.is_empty());
    assert!(config.custom_integrations().is_empty());
    assert_eq!(
        config.listen,
        Listen {
            control_socket: None,
            http: "127.0.0.1:8123".parse().unwrap(),
        }
    );
    assert_eq!(
        config.log,
        Log {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    );
}

#[test]
fn the_default_file_parses_to_the_library_defaults() {
    assert_library_defaults(&parse_text(&default_file()).unwrap());
}

#[test]
fn every_commented_value_of_the_default_file_is_the_default() {
    let uncommented = uncommented_default();
    // Every table and every key with a default is really uncommented.
    for needle in [
        "\n[listen]",
        "\nhttp = ",
        "\n[defaults.restart]",
        "\nforgive_after = ",
        "\n[defaults.watchdog]",
        "\n[defaults.limits]",
        "\n[defaults.cpu_share]",
        "\nnice = ",
        "\nconfinement = ",
    ] {
        assert!(uncommented.contains(needle), "{needle} in\n{uncommented}");
    }
    assert_library_defaults(&parse_text(&uncommented).unwrap());
}

#[test]
fn an_empty_file_is_the_library_defaults() {
    assert_library_defaults(&parse_text("").unwrap());
}

#[test]
fn an_override_merges_over_the_defaults() {
    let config = parse_text(
        r#"
[defaults]
ready_timeout = "45s"
[defaults.restart]
max_starts = 5
[defaults.watchdog]
enabled = false
interval = "20s"

[groups."built-in"]
stop_grace = "2s"
uid = 1000
gid = 1001
[groups."built-in".restart]
window = "2m"
[groups."built-in".watchdog]
enabled = true
[groups."built-in".limits]
address_space = "2GiB"
open_files = 256

[groups."custom-acme"]
transport = "unix"
confinement = "off"
[groups."custom-acme".cpu_share]
enabled = false
"#,
    )
    .unwrap();
    let groups = groups(&config);
    let library = GroupConfig::new("x");

    let defaults = &groups.group_defaults;
    assert_eq!(defaults.ready_timeout, Duration::from_secs(45));
    assert_eq!(defaults.restart.max_starts, 5);
    assert_eq!(defaults.watchdog, None);

    let built_in = groups.group_config("built-in");
    assert_eq!(built_in.name, "built-in");
    assert_eq!(built_in.channel.name, "built-in");
    // Its own keys.
    assert_eq!(built_in.stop_grace, Duration::from_secs(2));
    assert_eq!(
        built_in.credentials,
        Some(Credentials {
            uid: 1000,
            gid: 1001
        })
    );
    assert_eq!(built_in.restart.window, Duration::from_secs(120));
    assert_eq!(built_in.limits.address_space_bytes, Some(2 << 30));
    assert_eq!(built_in.limits.open_files, Some(256));
    assert_eq!(built_in.limits.cpu_seconds, None);
    // The watchdog enabled here keeps the interval the defaults set while it was off.
    assert_eq!(
        built_in.watchdog,
        Some(WatchdogConfig {
            interval: Duration::from_secs(20),
            timeout: library.watchdog.unwrap().timeout,
        })
    );
    // The defaults' keys it does not set.
    assert_eq!(built_in.ready_timeout, Duration::from_secs(45));
    assert_eq!(built_in.restart.max_starts, 5);
    assert_eq!(built_in.restart.backoff_max, library.restart.backoff_max);
    assert_eq!(built_in.transport, ChildTransport::Stdio);
    assert_eq!(built_in.cpu_share, library.cpu_share);

    let acme = groups.group_config("custom-acme");
    assert_eq!(acme.transport, ChildTransport::Unix);
    assert_eq!(acme.confinement, ConfinementProfile::Off);
    assert_eq!(acme.cpu_share, None);
    assert_eq!(acme.watchdog, None);
    assert_eq!(acme.ready_timeout, Duration::from_secs(45));

    // A group without an override gets the defaults.
    assert_eq!(
        format!("{:?}", groups.group_config("custom-other")),
        debug_named(defaults, "custom-other")
    );
    // What the check prints names what changed.
    let loaded = Loaded {
        config,
        path: PathBuf::from("sandbox-host.toml"),
        created: false,
    };
    let summary = summary(&loaded, Path::new("/config"));
    assert!(
        summary.contains(&"defaults: changed ready_timeout, restart, watchdog".to_owned()),
        "{summary:#?}"
    );
    assert!(
        summary.contains(
            &"group \"custom-acme\": changed transport, cpu_share, confinement".to_owned()
        ),
        "{summary:#?}"
    );
}

#[test]
fn listen_log_and_sizes_accept_their_forms() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse_in(
        dir.path(),
        r#"
[listen]
control_socket = "run/control.sock"
http = "[::1]:9000"
[log]
level = "info,sandbox_host=debug"
format = "json"
[defaults.limits]
address_space = 1073741824
cpu_seconds = 60
[defaults.cpu_share]
limit = 1.5
nice = 0
"#,
    )
    .unwrap();
    assert_eq!(
        config.listen.control_socket,
        Some(dir.path().join("run/control.sock"))
    );
    assert_eq!(config.listen.http, "[::1]:9000".parse().unwrap());
    assert_eq!(config.log.level, "info,sandbox_host=debug");
    assert_eq!(config.log.format, LogFormat::Json);
    let defaults = groups(&config).group_defaults;
    assert_eq!(defaults.limits.address_space_bytes, Some(1 << 30));
    assert_eq!(defaults.limits.cpu_seconds, Some(60));
    let cpu_share = defaults.cpu_share.unwrap();
    assert_eq!((cpu_share.limit, cpu_share.nice), (1.5, 0));
    for level in ["error", "warn", "debug", "trace", "off"] {
        parse_text(&format!("[log]\nlevel = {level:?}\n")).unwrap();
    }
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("3 KiB"), Some(3 << 10));
    assert_eq!(parse_size("100B"), Some(100));
    assert_eq!(parse_size("1.5GiB"), None);
    assert_eq!(parse_size("GiB"), None);
    assert_eq!(parse_size("99999999999TiB"), None);
}

/// Each refused file, the key path its error must name, and a piece of the reason.
const REFUSALS: &[(&str, &str, &str)] = &[
    // Unknown keys, at every level.
    ("colour = 1", ": colour: ", "unknown field `colour`"),
    ("[listen]\nport = 1", ": listen.port: ", "unknown field"),
    (
        "[defaults]\nreadytimeout = \"1s\"",
        ": defaults.readytimeout: ",
        "unknown field",
    ),
    (
        "[defaults.restart]\nmax = 1",
        ": defaults.restart.max: ",
        "unknown field",
    ),
    (
        "[groups.\"built-in\".watchdog]\nperiod = \"1s\"",
        ": groups.\"built-in\".watchdog.period: ",
        "unknown field",
    ),
    (
        "[[custom]]\nartifact = \"a\"\nversion = \"1.0.0\"\nsha256 = \"a\"\npin = \"b\"",
        ": custom[0].pin: ",
        "unknown field",
    ),
    // Wrong types.
    (
        "[defaults.restart]\nmax_starts = \"3\"",
        ": defaults.restart.max_starts: ",
        "invalid type",
    ),
    (
        "[defaults.restart]\nwindow = 60",
        ": defaults.restart.window: ",
        "expected a duration string",
    ),
    (
        "[defaults.watchdog]\nenabled = \"yes\"",
        ": defaults.watchdog.enabled: ",
        "invalid type",
    ),
    ("listen = 3", ": listen: ", "invalid type"),
    (
        "[defaults]\ntransport = \"tcp\"",
        ": defaults.transport: ",
        "unknown variant `tcp`",
    ),
    (
        "[defaults]\nconfinement = \"paranoid\"",
        ": defaults.confinement: ",
        "unknown variant",
    ),
    (
        "[log]\nformat = \"xml\"",
        ": log.format: ",
        "unknown variant",
    ),
    (
        "[[custom]]\nartifact = \"a\"\nsha256 = \"a\"",
        ": custom[0]: ",
        "missing field `version`",
    ),
    // Durations.
    (
        "[defaults.restart]\nwindow = \"0s\"",
        ": defaults.restart.window: ",
        "must be above zero",
    ),
    (
        "[defaults]\nready_timeout = \"-5s\"",
        ": defaults.ready_timeout: ",
        "invalid duration \"-5s\"",
    ),
    (
        "[defaults]\nstop_grace = \"10 parsecs\"",
        ": defaults.stop_grace: ",
        "invalid duration",
    ),
    (
        "[defaults]\nready_timeout = \"30h\"",
        ": defaults.ready_timeout: ",
        "longer than the longest",
    ),
    (
        "[groups.\"built-in\"]\nready_timeout = \"0ms\"",
        ": groups.\"built-in\".ready_timeout: ",
        "must be above zero",
    ),
    (
        "[defaults.cpu_share]\ninterval = \"1ms\"",
        ": defaults.cpu_share.interval: ",
        "at least 10ms",
    ),
    // Budgets and relations.
    (
        "[defaults.restart]\nmax_starts = 0",
        ": defaults.restart.max_starts: ",
        "between 1 and",
    ),
    (
        "[defaults.restart]\nmax_starts = -1",
        ": defaults.restart.max_starts: ",
        "invalid value",
    ),
    (
        "[defaults.restart]\nmax_starts = 100000",
        ": defaults.restart.max_starts: ",
        "between 1 and",
    ),
    (
        "[defaults.restart]\nbackoff_initial = \"1m\"",
        ": defaults.restart.backoff_initial: ",
        "must not be above backoff_max (30s)",
    ),
    (
        "[defaults.watchdog]\ntimeout = \"5s\"",
        ": defaults.watchdog.timeout: ",
        "must be below its interval (5s)",
    ),
    (
        "[defaults.watchdog]\ninterval = \"2s\"",
        ": defaults.watchdog.interval: ",
        "must be below its interval (2s)",
    ),
    (
        "[defaults.watchdog]\ninterval = \"20s\"\n[groups.\"built-in\".watchdog]\ntimeout = \"30s\"",
        ": groups.\"built-in\".watchdog.timeout: ",
        "(30s) must be below its interval (20s)",
    ),
    (
        "[defaults.cpu_share]\nnice = 20",
        ": defaults.cpu_share.nice: ",
        "between 0 and 19, not 20",
    ),
    (
        "[defaults.cpu_share]\nnice = -1",
        ": defaults.cpu_share.nice: ",
        "between 0 and 19, not -1",
    ),
    (
        "[defaults.cpu_share]\nlimit = 0.0",
        ": defaults.cpu_share.limit: ",
        "greater than 0",
    ),
    (
        "[defaults.cpu_share]\nlimit = -0.5",
        ": defaults.cpu_share.limit: ",
        "greater than 0",
    ),
    (
        "[defaults.cpu_share]\nlimit = nan",
        ": defaults.cpu_share.limit: ",
        "greater than 0",
    ),
    (
        "[defaults]\nmax_entities = 0",
        ": defaults.max_entities: ",
        "between 1 and 10000",
    ),
    (
        "[defaults]\nmax_entities = 10001",
        ": defaults.max_entities: ",
        "between 1 and 10000",
    ),
    ("[defaults]\nuid = 1000", ": defaults.uid: ", "without gid"),
    (
        "[groups.\"built-in\"]\ngid = 1000",
        ": groups.\"built-in\".gid: ",
        "without uid",
    ),
    (
        "[defaults.limits]\naddress_space = \"2GB\"",
        ": defaults.limits.address_space: ",
        "invalid size \"2GB\"",
    ),
    (
        "[defaults.limits]\naddress_space = -1",
        ": defaults.limits.address_space: ",
        "cannot be negative",
    ),
    (
        "[defaults.limits]\naddress_space = 1024",
        ": defaults.limits.address_space: ",
        "at least 16 MiB",
    ),
    (
        "[defaults.limits]\nopen_files = 3",
        ": defaults.limits.open_files: ",
        "at least 16",
    ),
    (
        "[defaults.limits]\ncpu_seconds = 0",
        ": defaults.limits.cpu_seconds: ",
        "at least 1",
    ),
    // Group names.
    (
        "[groups.\"builtin\"]",
        ": groups.\"builtin\": ",
        "is not a group name",
    ),
    (
        "[groups.\"custom-Acme\"]",
        ": groups.\"custom-Acme\": ",
        "is not a group name",
    ),
    (
        "[groups.\"custom-\"]",
        ": groups.\"custom-\": ",
        "is not a group name",
    ),
    (
        "[groups.\"../etc\"]",
        ": groups.\"../etc\": ",
        "is not a group name",
    ),
    // Listen and log.
    (
        "[listen]\nhttp = \"localhost\"",
        ": listen.http: ",
        "is not a socket address",
    ),
    (
        "[listen]\nhttp = \"127.0.0.1:99999\"",
        ": listen.http: ",
        "is not a socket address",
    ),
    (
        "[listen]\ncontrol_socket = \"\"",
        ": listen.control_socket: ",
        "must not be empty",
    ),
    ("[log]\nlevel = \"inof\"", ": log.level: ", "is not a level"),
    (
        "[log]\nlevel = \"info,x=loud\"",
        ": log.level: ",
        "is not a valid log filter",
    ),
];

#[test]
fn every_refusal_names_the_file_the_key_path_and_the_reason() {
    for (text, key, reason) in REFUSALS {
        let message = refusal(text);
        assert!(message.contains(CONFIG_FILE_NAME), "{text:?}: {message}");
        assert!(
            message.contains(key),
            "{text:?}: {message} (wanted {key:?})"
        );
        assert!(
            message.contains(reason),
            "{text:?}: {message} (wanted {reason:?})"
        );
    }
}

#[test]
fn refusals_say_the_line_and_column() {
    let message = refusal("[log]\nlevel = \"info\"\n\n[defaults.restart]\nmax_starts = 0\n");
    assert!(
        message.contains("sandbox-host.toml:5:14: defaults.restart.max_starts: "),
        "{message}"
    );
    let message = refusal("[defaults]\n  ready_timeout = 30\n");
    assert!(
        message.contains("sandbox-host.toml:2:19: defaults.ready_timeout: "),
        "{message}"
    );
    let message = refusal("[defaults]\nready_timeout = \n");
    assert!(message.contains("sandbox-host.toml:2:"), "{message}");
    assert!(message.contains("not valid TOML"), "{message}");
}

/// A directory with an artifact `bin/acme-sandbox` and its manifest next to it.
struct Custom {
    dir: tempfile::TempDir,
    sha256: String,
}

const ACME_MANIFEST: &str =
    r#"{"domain": "acme", "name": "Acme", "version": "1.2.3", "platforms": ["sensor"]}"#;

fn custom_dir() -> Custom {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let artifact = dir.path().join("bin/acme-sandbox");
    std::fs::write(&artifact, b"#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(dir.path().join("bin/manifest.json"), ACME_MANIFEST).unwrap();
    let sha256 = sandbox_host::router::sha256_of_file(&artifact).unwrap();
    Custom { dir, sha256 }
}

fn custom_entry(artifact: &str, version: &str, sha256: &str, manifest: Option<&str>) -> String {
    let manifest = manifest
        .map(|manifest| format!("manifest = {manifest:?}\n"))
        .unwrap_or_default();
    format!(
        "[[custom]]\nartifact = {artifact:?}\n{manifest}version = {version:?}\nsha256 = {sha256:?}\n"
    )
}

#[test]
fn a_custom_integration_resolves_against_the_dir_and_is_verified() {
    let custom = custom_dir();
    let dir = custom.dir.path();
    let config = parse_in(
        dir,
        &custom_entry(
            "bin/acme-sandbox",
            "1.2.3",
            &custom.sha256.to_ascii_uppercase(),
            None,
        ),
    )
    .unwrap();
    let [integration] = config.custom_integrations() else {
        panic!("one custom integration");
    };
    assert_eq!(integration.artifact, dir.join("bin/acme-sandbox"));
    assert_eq!(integration.manifest.domain, "acme");
    assert_eq!(integration.manifest.version.to_string(), "1.2.3");
    assert_eq!(integration.sha256, custom.sha256);
    assert!(sandbox_host::router::verify_artifact(integration).is_ok());
    let groups = groups(&config);
    assert_eq!(
        groups.custom_commands,
        std::collections::HashMap::from([(
            "custom-acme".to_owned(),
            vec![dir.join("bin/acme-sandbox").into_os_string()]
        )])
    );

    // An explicit manifest elsewhere, relative to the dir too.
    std::fs::write(dir.join("acme.json"), ACME_MANIFEST).unwrap();
    std::fs::remove_file(dir.join("bin/manifest.json")).unwrap();
    let config = parse_in(
        dir,
        &custom_entry(
            "bin/acme-sandbox",
            "1.2.3",
            &custom.sha256,
            Some("acme.json"),
        ),
    )
    .unwrap();
    assert_eq!(config.custom_integrations().len(), 1);
}

#[test]
fn a_custom_integration_that_does_not_hold_is_refused() {
    let custom = custom_dir();
    let dir = custom.dir.path();
    let good = custom.sha256.as_str();
    let mut wrong = good.to_owned();
    wrong.replace_range(0..1, if good.starts_with('0') { "1" } else { "0" });
    std::fs::write(dir.join("not-json.json"), "{ not json").unwrap();
    std::fs::write(
        dir.join("bad-domain.json"),
        r#"{"domain": "Acme!", "name": "Acme", "version": "1.2.3"}"#,
    )
    .unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            custom_entry("bin/missing", "1.2.3", good, None),
            ": custom[0].artifact: ",
            "cannot read the artifact",
        ),
        (
            custom_entry("bin", "1.2.3", good, None),
            ": custom[0].artifact: ",
            "not a regular file",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", good, Some("none.json")),
            ": custom[0].manifest: ",
            "cannot read the manifest",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", good, Some("not-json.json")),
            ": custom[0].manifest: ",
            "is invalid: key must be a string",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", good, Some("bad-domain.json")),
            ": custom[0].manifest: ",
            "invalid manifest of Acme!",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.4", good, None),
            ": custom[0].version: ",
            "version 1.2.4 does not match the manifest's version 1.2.3",
        ),
        (
            custom_entry("bin/acme-sandbox", "one", good, None),
            ": custom[0].version: ",
            "is not a semantic version",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", "abc", None),
            ": custom[0].sha256: ",
            "is not a SHA-256",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", &"g".repeat(64), None),
            ": custom[0].sha256: ",
            "is not a SHA-256",
        ),
        (
            custom_entry("bin/acme-sandbox", "1.2.3", &wrong, None),
            ": custom[0].sha256: ",
            "does not match its pinned sha256",
        ),
        (
            format!(
                "{}{}",
                custom_entry("bin/acme-sandbox", "1.2.3", good, None),
                custom_entry("bin/acme-sandbox", "1.2.3", good, None)
            ),
            ": custom[1].manifest: ",
            "already configured by custom[0]",
        ),
    ];
    for (text, key, reason) in &cases {
        let message = match parse_in(dir, text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(error) => error.to_string(),
        };
        assert!(message.contains(key), "{text}: {message} (wanted {key:?})");
        assert!(
            message.contains(reason),
            "{text}: {message} (wanted {reason:?})"
        );
    }
    // The line of the pin is named.
    let message = parse_in(
        dir,
        &custom_entry("bin/acme-sandbox", "1.2.3", &wrong, None),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        message.contains("sandbox-host.toml:4:10: custom[0].sha256: "),
        "{message}"
    );
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = if path.is_dir() {
            Vec::new()
        } else {
            std::fs::read(&path).unwrap()
        };
        found.insert(path, bytes);
    }
    found
}

#[test]
fn an_absent_file_is_created_once_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_or_create(dir.path()).unwrap();
    assert!(loaded.created);
    assert_eq!(loaded.path, dir.path().join(CONFIG_FILE_NAME));
    assert_library_defaults(&loaded.config);
    // Only the file: no temporary file is left behind.
    let after_create = contents(dir.path());
    assert_eq!(
        after_create.keys().collect::<Vec<_>>(),
        [&dir.path().join(CONFIG_FILE_NAME)]
    );
    assert_eq!(
        after_create[&dir.path().join(CONFIG_FILE_NAME)],
        default_file().into_bytes()
    );
    // A second load reads it and writes nothing.
    let again = load_or_create(dir.path()).unwrap();
    assert!(!again.created);
    assert_eq!(contents(dir.path()), after_create);
}

#[test]
fn a_missing_dir_is_an_error_and_is_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-dir");
    let error = load_or_create(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::DirMissing(_)), "{error}");
    assert!(error.to_string().contains("does not exist"));
    assert!(!missing.exists());
    assert!(contents(parent.path()).is_empty());
}

#[test]
fn a_refused_file_changes_nothing() {
    let custom = custom_dir();
    let dir = custom.dir.path();
    for text in [
        "bogus = 1\n".to_owned(),
        "[defaults.restart]\nwindow = \"0s\"\n".to_owned(),
        custom_entry("bin/acme-sandbox", "1.2.3", &"0".repeat(64), None),
    ] {
        std::fs::write(dir.join(CONFIG_FILE_NAME), &text).unwrap();
        let before = contents(dir);
        let error = load_or_create(dir).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Malformed { .. }
                    | ConfigError::OutOfRange { .. }
                    | ConfigError::PinMismatch { .. }
            ),
            "{error}"
        );
        assert_eq!(contents(dir), before, "{text}");
    }
}

#[test]
fn the_documented_example_is_accepted() {
    let operating = include_str!("../../../docs/OPERATING.md");
    let example = operating
        .split("### A full example")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    // Its custom entry pins a made-up artifact: checked without it, and then for that.
    let (settings, custom) = example.split_once("[[custom]]").unwrap();
    let config = parse_text(settings).unwrap();
    let groups = groups(&config);
    assert_eq!(groups.group_config("built-in").restart.max_starts, 5);
    assert_eq!(
        groups.group_config("custom-acme_thermostat").credentials,
        Some(Credentials {
            uid: 1001,
            gid: 1001
        })
    );
    let message = refusal(&format!("[[custom]]{custom}"));
    assert!(
        message.contains("custom[0].artifact: cannot read the artifact"),
        "{message}"
    );
}

#[test]
fn a_group_may_ask_for_the_strict_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(CONFIG_FILE_NAME);
    let config = parse(
        "[groups.\"built-in\"]\nconfinement = \"strict\"\n",
        &file,
        dir.path(),
    )
    .expect("accepted");
    let groups = config.groups_config(dir.path().to_owned(), vec!["runtime".into()]);
    assert_eq!(
        groups.group_config("built-in").confinement,
        ConfinementProfile::Strict
    );
    assert_eq!(
        groups.group_config("custom-other").confinement,
        ConfinementProfile::Default
    );
}
