//! The hub's configuration file, `sandbox-host.toml` in the configuration directory: where the
//! hub listens, how it logs, how its sandbox groups run and which custom integrations it pins.
//!
//! Every key is optional and defaults to the host library's own default. The file is checked
//! strictly, like a supervisor refusing a malformed sidecar: an unknown key, a wrong type, a
//! value out of its range, a custom integration whose artifact, manifest, version or pin does
//! not hold, each refuses the whole file with an error naming the file, the key path
//! (`defaults.restart.window`, `groups."built-in".ready_timeout`, `custom[0].sha256`), the
//! line and column where known, and the reason. A refused file changes nothing and starts
//! nothing. `docs/OPERATING.md` describes every key.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use homecore::integration::Manifest;
use sandbox_host::classifier::{BUILT_IN_GROUP, CUSTOM_GROUP_PREFIX};
use sandbox_host::confinement::ConfinementProfile;
use sandbox_host::cpu_share::CpuShareConfig;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::router::CustomIntegration;
use sandbox_host::{ChildTransport, Credentials, GroupConfig, WatchdogConfig};
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// The file's name in the configuration directory.
pub const CONFIG_FILE_NAME: &str = "sandbox-host.toml";

/// The HTTP API's address unless configured otherwise: loopback only, so nothing outside the
/// machine reaches it until the operator says so.
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:8123";

/// The log level unless configured otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The longest any configured duration may be: a timeout or window longer than a day is a
/// typo (`"30h"` for `"30s"`), not a setting.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest CPU-share sampling interval: CPU time is counted in ticks of 10 ms, so a
/// shorter interval measures nothing.
pub const MIN_CPU_SHARE_INTERVAL: Duration = Duration::from_millis(10);

/// The most starts a restart budget may allow in its window: more is no budget at all.
pub const MAX_RESTART_STARTS: u32 = 1000;

/// The smallest address-space limit: below it no sandbox runtime can even map its code.
pub const MIN_ADDRESS_SPACE_BYTES: u64 = 16 * 1024 * 1024;

/// The smallest open-files limit: stdio, the channel, the log pipe and a few sockets.
pub const MIN_OPEN_FILES: u64 = 16;

/// The nice values a demoted sandbox may be given (the kernel's unprivileged range).
pub const NICE_RANGE: std::ops::RangeInclusive<i64> = 0..=19;

/// Why the configuration could not be loaded. Every refusal of the file's content names the
/// file and the key path (see [`Place`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration directory does not exist (it is never created on the operator's
    /// behalf: a mistyped `--config` must not start an empty hub elsewhere).
    #[error("the configuration directory {} does not exist", .0.display())]
    DirMissing(PathBuf),
    /// The file (or the directory) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The default file could not be written.
    #[error("cannot write the default configuration {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{at}: not valid TOML: {message}")]
    Syntax {
        /// Where.
        at: Box<Place>,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown, a value has the wrong type or cannot be parsed.
    #[error("{at}: {message}")]
    Malformed {
        /// Where.
        at: Box<Place>,
        /// The deserializer's message.
        message: String,
    },
    /// A value is out of its range or contradicts another one.
    #[error("{at}: {reason}")]
    OutOfRange {
        /// Where.
        at: Box<Place>,
        /// What the value must be.
        reason: String,
    },
    /// A custom integration's artifact cannot be read.
    #[error("{at}: cannot read the artifact {}: {source}", artifact.display())]
    Artifact {
        /// Where.
        at: Box<Place>,
        /// The artifact's resolved path.
        artifact: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A custom integration's manifest cannot be read.
    #[error("{at}: cannot read the manifest {}: {source}", manifest.display())]
    ManifestUnreadable {
        /// Where.
        at: Box<Place>,
        /// The manifest's resolved path.
        manifest: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A custom integration's manifest is not a manifest, or not a valid one.
    #[error("{at}: the manifest {} is invalid: {message}", manifest.display())]
    ManifestInvalid {
        /// Where.
        at: Box<Place>,
        /// The manifest's resolved path.
        manifest: PathBuf,
        /// Why.
        message: String,
    },
    /// The configured version is not the manifest's.
    #[error("{at}: version {configured} does not match the manifest's version {manifest}")]
    VersionMismatch {
        /// Where.
        at: Box<Place>,
        /// What the file says.
        configured: String,
        /// What the manifest says.
        manifest: String,
    },
    /// The artifact is not the pinned one.
    #[error(
        "{at}: the artifact {} does not match its pinned sha256 (pinned {pinned}, found {actual})",
        artifact.display()
    )]
    PinMismatch {
        /// Where.
        at: Box<Place>,
        /// The artifact's resolved path.
        artifact: PathBuf,
        /// The configured pin.
        pinned: String,
        /// The artifact's real SHA-256.
        actual: String,
    },
}

/// A place in the configuration file: the file, the key path and, where the parser knows it,
/// the line and column (both from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// The key path (`defaults.restart.window`); empty for the whole document.
    pub key: String,
    /// Line and column.
    pub line_column: Option<(usize, usize)>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        Ok(())
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// A field of a table (`restart`).
    Field(String),
    /// A group's name in `[groups]`, always quoted (`"built-in"`).
    Group(String),
    /// An element of an array of tables (`[0]`).
    Index(usize),
}

/// Renders a key path as the file would spell it: `groups."built-in".restart.window`.
fn render_key(path: &[Key]) -> String {
    let mut out = String::new();
    for key in path {
        match key {
            Key::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Key::Group(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&format!("{name:?}"));
            }
            Key::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// How the hub's log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Where the hub listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The unix control socket, resolved against the configuration directory; `None` lets the
    /// program decide.
    pub control_socket: Option<PathBuf>,
    /// The HTTP API's address.
    pub http: SocketAddr,
}

/// How the hub logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A level (`info`) or a `tracing_subscriber::EnvFilter` directive string (checked to
    /// parse).
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where the hub listens.
    pub listen: Listen,
    /// How the hub logs.
    pub log: Log,
    /// Settings every group starts from.
    group_defaults: GroupConfig,
    /// Settings of the groups named in `[groups]`, merged over the defaults.
    group_overrides: BTreeMap<String, GroupConfig>,
    /// The custom integrations, their artifacts' pins and versions verified.
    custom: Vec<CustomIntegration>,
}

impl HubConfig {
    /// The groups' settings for the host library: the defaults, the overrides, and each custom
    /// integration's group `custom-<domain>` running its own artifact.
    pub fn groups_config(
        &self,
        config_dir: PathBuf,
        runtime_command: Vec<OsString>,
    ) -> GroupsConfig {
        GroupsConfig {
            config_dir,
            runtime_command,
            custom_commands: self
                .custom
                .iter()
                .map(|custom| {
                    (
                        custom_group(&custom.manifest.domain),
                        vec![custom.artifact.clone().into_os_string()],
                    )
                })
                .collect(),
            group_defaults: self.group_defaults.clone(),
            group_overrides: self
                .group_overrides
                .iter()
                .map(|(name, config)| (name.clone(), config.clone()))
                .collect::<HashMap<_, _>>(),
        }
    }

    /// The custom integrations, in the file's order, each one's manifest read and validated,
    /// its version matched and its artifact's SHA-256 checked against its pin at load.
    pub fn custom_integrations(&self) -> &[CustomIntegration] {
        &self.custom
    }
}

/// The group a custom integration runs in.
fn custom_group(domain: &str) -> String {
    format!("{CUSTOM_GROUP_PREFIX}{domain}")
}

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked configuration.
    pub config: HubConfig,
    /// The file it was read from.
    pub path: PathBuf,
    /// Whether the file was absent and the commented default was written.
    pub created: bool,
}

/// Loads `dir/sandbox-host.toml`, first writing the commented default file when it is absent
/// (atomically: a temporary file in `dir`, flushed to disk, renamed into place). `dir` must
/// exist. A refused file is left as it is and nothing is written.
pub fn load_or_create(dir: &Path) -> Result<Loaded, ConfigError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(ConfigError::Read {
                path: dir.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::DirMissing(dir.to_owned()));
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let path = dir.join(CONFIG_FILE_NAME);
    let (text, created) = match std::fs::read_to_string(&path) {
        Ok(text) => (text, false),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let text = default_file();
            // Check before writing: a default the program itself refuses must never land.
            parse(&text, &path, dir)?;
            write_atomically(dir, &path, &text)?;
            (text, true)
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let config = parse(&text, &path, dir)?;
    Ok(Loaded {
        config,
        path,
        created,
    })
}

/// Writes `text` to `path` through a temporary file in `dir`: a reader sees no file or the
/// whole file, never a part, and a crash leaves at most a stray temporary file. An existing
/// file (another process created it meanwhile) is kept, not overwritten.
fn write_atomically(dir: &Path, path: &Path, text: &str) -> Result<(), ConfigError> {
    let failed = |source| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".sandbox-host.toml.")
        .tempfile_in(dir)
        .map_err(failed)?;
    temporary.write_all(text.as_bytes()).map_err(failed)?;
    temporary.as_file().sync_all().map_err(failed)?;
    match temporary.persist_noclobber(path) {
        Ok(_) => {}
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(failed(error.error)),
    }
    // The rename itself is durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(failed)
}

/// Checks `text` (the content of `file`, whose relative paths resolve against `dir`).
pub fn parse(text: &str, file: &Path, dir: &Path) -> Result<HubConfig, ConfigError> {
    let document = toml::de::DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        at: Box::new(Place {
            file: file.to_owned(),
            key: String::new(),
            line_column: error.span().map(|span| line_column(text, span.start)),
        }),
        message: error.message().to_owned(),
    })?;
    let raw: RawFile = serde_path_to_error::deserialize(toml::de::Deserializer::from(
        document.clone(),
    ))
    .map_err(|error| {
        let key = key_of_serde_path(error.path(), error.inner().message());
        ConfigError::Malformed {
            at: Box::new(Place {
                file: file.to_owned(),
                key: render_key(&key),
                line_column: error
                    .inner()
                    .span()
                    .map(|span| line_column(text, span.start)),
            }),
            message: error.inner().message().to_owned(),
        }
    })?;
    let checker = Checker {
        text,
        document: document.get_ref(),
        file,
        dir,
    };
    checker.check(raw)
}

/// The key path of a deserialization error. For an unknown key the path ends at its table and
/// the key is named only in the message, so it is appended.
fn key_of_serde_path(path: &serde_path_to_error::Path, message: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => keys.push(Key::Index(*index)),
            serde_path_to_error::Segment::Map { key } => {
                if keys == [Key::Field("groups".to_owned())] {
                    keys.push(Key::Group(key.clone()));
                } else {
                    keys.push(Key::Field(key.clone()));
                }
            }
            serde_path_to_error::Segment::Enum { variant } => {
                keys.push(Key::Field(variant.clone()))
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
        && keys.last() != Some(&Key::Field(unknown.to_owned()))
    {
        keys.push(Key::Field(unknown.to_owned()));
    }
    keys
}

/// Line and column (from 1, the column in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// The file as written: every key optional, unknown keys refused.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    listen: RawListen,
    log: RawLog,
    defaults: RawGroup,
    groups: BTreeMap<String, RawGroup>,
    custom: Vec<RawCustom>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawListen {
    control_socket: Option<PathBuf>,
    http: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawGroup {
    transport: Option<Transport>,
    ready_timeout: Option<HumanDuration>,
    stop_grace: Option<HumanDuration>,
    max_entities: Option<u64>,
    confinement: Option<Confinement>,
    uid: Option<u32>,
    gid: Option<u32>,
    restart: RawRestart,
    watchdog: RawWatchdog,
    limits: RawLimits,
    cpu_share: RawCpuShare,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRestart {
    max_starts: Option<u32>,
    window: Option<HumanDuration>,
    backoff_initial: Option<HumanDuration>,
    backoff_max: Option<HumanDuration>,
    forgive_after: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWatchdog {
    enabled: Option<bool>,
    interval: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    address_space: Option<ByteSize>,
    open_files: Option<u64>,
    cpu_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCpuShare {
    enabled: Option<bool>,
    interval: Option<HumanDuration>,
    limit: Option<f64>,
    nice: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    artifact: PathBuf,
    #[serde(default)]
    manifest: Option<PathBuf>,
    version: String,
    sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    Stdio,
    Unix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Confinement {
    Default,
    Off,
    Strict,
}

/// A duration written for people: `"30s"`, `"500ms"`, `"2m"`, `"1h 30m"` (humantime's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string like "30s", "500ms" or "2m""#)
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                humantime::parse_duration(value)
                    .map(HumanDuration)
                    .map_err(|error| {
                        E::custom(format!(
                            r#"invalid duration {value:?} ({error}); write it like "30s", "500ms" or "2m""#
                        ))
                    })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A size in bytes: an integer, or a string with a binary unit (`"512MiB"`, `"2GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSize(u64);

/// The units a size string may use.
const SIZE_UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size: an integer of bytes or a string like "512MiB" or "2GiB""#)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({value})")))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(value))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                parse_size(value).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        r#"invalid size {value:?}; write an integer of bytes or a number with KiB, MiB, GiB or TiB, like "2GiB""#
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `"2GiB"` → 2147483648; `None` for anything else, or an overflow.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, multiplier) = SIZE_UNITS
        .iter()
        .find_map(|(unit, multiplier)| Some((text.strip_suffix(unit)?, *multiplier)))?;
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

// ---------------------------------------------------------------------------------------------
// Checking and merging.
// ---------------------------------------------------------------------------------------------

/// A group's settings while layers are merged: the watchdog and CPU share keep their values
/// while disabled, so an override that only enables one gets the configured interval.
#[derive(Debug, Clone)]
struct Layered {
    config: GroupConfig,
    watchdog_enabled: bool,
    watchdog: WatchdogConfig,
    cpu_share_enabled: bool,
    cpu_share: CpuShareConfig,
}

impl Layered {
    fn library_defaults() -> Self {
        let config = GroupConfig::new("defaults");
        Self {
            watchdog_enabled: config.watchdog.is_some(),
            watchdog: config.watchdog.unwrap_or_default(),
            cpu_share_enabled: config.cpu_share.is_some(),
            cpu_share: config.cpu_share.unwrap_or_default(),
            config,
        }
    }

    fn into_group_config(self, name: &str) -> GroupConfig {
        let mut config = self.config;
        config.name = name.to_owned();
        config.channel.name = name.to_owned();
        config.watchdog = self.watchdog_enabled.then_some(self.watchdog);
        config.cpu_share = self.cpu_share_enabled.then_some(self.cpu_share);
        config
    }
}

struct Checker<'a> {
    text: &'a str,
    document: &'a toml::de::DeTable<'a>,
    file: &'a Path,
    dir: &'a Path,
}

impl Checker<'_> {
    fn check(&self, raw: RawFile) -> Result<HubConfig, ConfigError> {
        let listen = self.listen(raw.listen)?;
        let log = self.log(raw.log)?;
        let defaults_path = [Key::Field("defaults".to_owned())];
        let defaults = self.layer(Layered::library_defaults(), &raw.defaults, &defaults_path)?;
        let mut group_overrides = BTreeMap::new();
        for (name, group) in &raw.groups {
            let path = [Key::Field("groups".to_owned()), Key::Group(name.clone())];
            if let Err(reason) = check_group_name(name) {
                return Err(self.out_of_range(&path, reason));
            }
            let merged = self.layer(defaults.clone(), group, &path)?;
            group_overrides.insert(name.clone(), merged.into_group_config(name));
        }
        let mut custom: Vec<CustomIntegration> = Vec::with_capacity(raw.custom.len());
        for (index, entry) in raw.custom.into_iter().enumerate() {
            let path = [Key::Field("custom".to_owned()), Key::Index(index)];
            let integration = self.custom(entry, &path)?;
            if let Some(first) = custom
                .iter()
                .position(|other| other.manifest.domain == integration.manifest.domain)
            {
                return Err(self.out_of_range(
                    &extend(&path, "manifest"),
                    format!(
                        "the domain {} is already configured by custom[{first}]",
                        integration.manifest.domain
                    ),
                ));
            }
            custom.push(integration);
        }
        Ok(HubConfig {
            listen,
            log,
            group_defaults: defaults.into_group_config("defaults"),
            group_overrides,
            custom,
        })
    }

    fn listen(&self, raw: RawListen) -> Result<Listen, ConfigError> {
        let http_text = raw.http.as_deref().unwrap_or(DEFAULT_HTTP_ADDRESS);
        let http = http_text.parse::<SocketAddr>().map_err(|_| {
            self.out_of_range(
                &[Key::Field("listen".to_owned()), Key::Field("http".to_owned())],
                format!(
                    "{http_text:?} is not a socket address; write an IP address and a port, like \"127.0.0.1:8123\" or \"[::1]:8123\""
                ),
            )
        })?;
        let control_socket = match raw.control_socket {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(self.out_of_range(
                    &[
                        Key::Field("listen".to_owned()),
                        Key::Field("control_socket".to_owned()),
                    ],
                    "must not be empty; leave the key out to let the program decide".to_owned(),
                ));
            }
            Some(path) => Some(self.dir.join(path)),
            None => None,
        };
        Ok(Listen {
            control_socket,
            http,
        })
    }

    fn log(&self, raw: RawLog) -> Result<Log, ConfigError> {
        let level = raw.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if let Err(reason) = check_log_level(&level) {
            return Err(self.out_of_range(
                &[Key::Field("log".to_owned()), Key::Field("level".to_owned())],
                reason,
            ));
        }
        Ok(Log {
            level,
            format: raw.format.unwrap_or(LogFormat::Text),
        })
    }

    /// Merges `raw` (at `path`) over `base`, checking each value it sets.
    fn layer(&self, base: Layered, raw: &RawGroup, path: &[Key]) -> Result<Layered, ConfigError> {
        let mut merged = base;
        let config = &mut merged.config;
        if let Some(transport) = raw.transport {
            config.transport = match transport {
                Transport::Stdio => ChildTransport::Stdio,
                Transport::Unix => ChildTransport::Unix,
            };
        }
        if let Some(confinement) = raw.confinement {
            config.confinement = match confinement {
                Confinement::Default => ConfinementProfile::Default,
                Confinement::Off => ConfinementProfile::Off,
                Confinement::Strict => ConfinementProfile::Strict,
            };
        }
        if let Some(timeout) = raw.ready_timeout {
            config.ready_timeout = self.duration(path, "ready_timeout", timeout)?;
        }
        if let Some(grace) = raw.stop_grace {
            config.stop_grace = self.duration(path, "stop_grace", grace)?;
        }
        if let Some(max_entities) = raw.max_entities {
            let max = sandbox_host::limits::MAX_ENTITIES_PER_GROUP;
            if max_entities == 0 || max_entities > max as u64 {
                return Err(self.out_of_range(
                    &extend(path, "max_entities"),
                    format!("must be between 1 and {max} (the host's bound), not {max_entities}"),
                ));
            }
            config.max_entities = max_entities as usize;
        }
        match (raw.uid, raw.gid) {
            (Some(uid), Some(gid)) => config.credentials = Some(Credentials { uid, gid }),
            (None, None) => {}
            (Some(_), None) => {
                return Err(self.out_of_range(
                    &extend(path, "uid"),
                    "uid is given without gid; give both or neither".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(self.out_of_range(
                    &extend(path, "gid"),
                    "gid is given without uid; give both or neither".to_owned(),
                ));
            }
        }

        let restart_path = extend(path, "restart");
        let restart = &raw.restart;
        if let Some(max_starts) = restart.max_starts {
            if max_starts == 0 || max_starts > MAX_RESTART_STARTS {
                return Err(self.out_of_range(
                    &extend(&restart_path, "max_starts"),
                    format!(
                        "must be between 1 and {MAX_RESTART_STARTS} (the first start counts), not {max_starts}"
                    ),
                ));
            }
            config.restart.max_starts = max_starts;
        }
        if let Some(window) = restart.window {
            config.restart.window = self.duration(&restart_path, "window", window)?;
        }
        if let Some(initial) = restart.backoff_initial {
            config.restart.backoff_initial =
                self.duration(&restart_path, "backoff_initial", initial)?;
        }
        if let Some(max) = restart.backoff_max {
            config.restart.backoff_max = self.duration(&restart_path, "backoff_max", max)?;
        }
        if let Some(forgive) = restart.forgive_after {
            config.restart.forgive_after =
                self.duration(&restart_path, "forgive_after", forgive)?;
        }
        if config.restart.backoff_initial > config.restart.backoff_max {
            let blamed = if restart.backoff_initial.is_some() {
                "backoff_initial"
            } else {
                "backoff_max"
            };
            return Err(self.out_of_range(
                &extend(&restart_path, blamed),
                format!(
                    "backoff_initial ({}) must not be above backoff_max ({})",
                    humantime::format_duration(config.restart.backoff_initial),
                    humantime::format_duration(config.restart.backoff_max)
                ),
            ));
        }

        let watchdog_path = extend(path, "watchdog");
        let watchdog = &raw.watchdog;
        if let Some(enabled) = watchdog.enabled {
            merged.watchdog_enabled = enabled;
        }
        if let Some(interval) = watchdog.interval {
            merged.watchdog.interval = self.duration(&watchdog_path, "interval", interval)?;
        }
        if let Some(timeout) = watchdog.timeout {
            merged.watchdog.timeout = self.duration(&watchdog_path, "timeout", timeout)?;
        }
        if merged.watchdog.timeout >= merged.watchdog.interval {
            let blamed = if watchdog.timeout.is_some() {
                "timeout"
            } else {
                "interval"
            };
            return Err(self.out_of_range(
                &extend(&watchdog_path, blamed),
                format!(
                    "the watchdog timeout ({}) must be below its interval ({})",
                    humantime::format_duration(merged.watchdog.timeout),
                    humantime::format_duration(merged.watchdog.interval)
                ),
            ));
        }

        let limits_path = extend(path, "limits");
        let limits = &raw.limits;
        let config = &mut merged.config;
        if let Some(ByteSize(bytes)) = limits.address_space {
            if bytes < MIN_ADDRESS_SPACE_BYTES {
                return Err(self.out_of_range(
                    &extend(&limits_path, "address_space"),
                    format!(
                        "must be at least {} MiB ({MIN_ADDRESS_SPACE_BYTES} bytes), not {bytes} bytes",
                        MIN_ADDRESS_SPACE_BYTES >> 20
                    ),
                ));
            }
            config.limits.address_space_bytes = Some(bytes);
        }
        if let Some(open_files) = limits.open_files {
            if open_files < MIN_OPEN_FILES {
                return Err(self.out_of_range(
                    &extend(&limits_path, "open_files"),
                    format!("must be at least {MIN_OPEN_FILES}, not {open_files}"),
                ));
            }
            config.limits.open_files = Some(open_files);
        }
        if let Some(cpu_seconds) = limits.cpu_seconds {
            if cpu_seconds == 0 {
                return Err(self.out_of_range(
                    &extend(&limits_path, "cpu_seconds"),
                    "must be at least 1".to_owned(),
                ));
            }
            config.limits.cpu_seconds = Some(cpu_seconds);
        }

        let cpu_path = extend(path, "cpu_share");
        let cpu = &raw.cpu_share;
        if let Some(enabled) = cpu.enabled {
            merged.cpu_share_enabled = enabled;
        }
        if let Some(interval) = cpu.interval {
            let interval = self.duration(&cpu_path, "interval", interval)?;
            if interval < MIN_CPU_SHARE_INTERVAL {
                return Err(self.out_of_range(
                    &extend(&cpu_path, "interval"),
                    format!(
                        "must be at least {} (CPU time is counted in 10 ms ticks), not {}",
                        humantime::format_duration(MIN_CPU_SHARE_INTERVAL),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            merged.cpu_share.interval = interval;
        }
        if let Some(limit) = cpu.limit {
            if !(limit.is_finite() && limit > 0.0) {
                return Err(self.out_of_range(
                    &extend(&cpu_path, "limit"),
                    format!(
                        "must be a share of one CPU greater than 0 (0.25: a quarter), not {limit}"
                    ),
                ));
            }
            merged.cpu_share.limit = limit;
        }
        if let Some(nice) = cpu.nice {
            if !NICE_RANGE.contains(&nice) {
                return Err(self.out_of_range(
                    &extend(&cpu_path, "nice"),
                    format!(
                        "must be between {} and {}, not {nice}",
                        NICE_RANGE.start(),
                        NICE_RANGE.end()
                    ),
                ));
            }
            merged.cpu_share.nice = nice as i32;
        }
        Ok(merged)
    }

    /// A duration at `path.key`, checked to be above zero and at most [`MAX_DURATION`].
    fn duration(
        &self,
        path: &[Key],
        key: &str,
        HumanDuration(duration): HumanDuration,
    ) -> Result<Duration, ConfigError> {
        if duration.is_zero() {
            return Err(self.out_of_range(&extend(path, key), "must be above zero".to_owned()));
        }
        if duration > MAX_DURATION {
            return Err(self.out_of_range(
                &extend(path, key),
                format!(
                    "{} is longer than the longest allowed, {}",
                    humantime::format_duration(duration),
                    humantime::format_duration(MAX_DURATION)
                ),
            ));
        }
        Ok(duration)
    }

    fn custom(&self, raw: RawCustom, path: &[Key]) -> Result<CustomIntegration, ConfigError> {
        let artifact = self.dir.join(&raw.artifact);
        let sha256_place = self.place(&extend(path, "sha256"));
        if raw.sha256.len() != 64 || !raw.sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ConfigError::OutOfRange {
                at: sha256_place,
                reason: format!(
                    "{:?} is not a SHA-256: write 64 hexadecimal digits",
                    raw.sha256
                ),
            });
        }
        let artifact_place = self.place(&extend(path, "artifact"));
        match std::fs::metadata(&artifact) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                return Err(ConfigError::Artifact {
                    at: artifact_place,
                    artifact,
                    source: std::io::Error::other("not a regular file"),
                });
            }
            Err(source) => {
                return Err(ConfigError::Artifact {
                    at: artifact_place,
                    artifact,
                    source,
                });
            }
        }
        let manifest_place = self.place(&extend(path, "manifest"));
        let manifest_path = match &raw.manifest {
            Some(manifest) => self.dir.join(manifest),
            None => artifact.parent().unwrap_or(self.dir).join("manifest.json"),
        };
        let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|source| {
            ConfigError::ManifestUnreadable {
                at: manifest_place.clone(),
                manifest: manifest_path.clone(),
                source,
            }
        })?;
        let manifest: Manifest =
            serde_json::from_str(&manifest_text).map_err(|error| ConfigError::ManifestInvalid {
                at: manifest_place.clone(),
                manifest: manifest_path.clone(),
                message: error.to_string(),
            })?;
        manifest
            .validate()
            .map_err(|error| ConfigError::ManifestInvalid {
                at: manifest_place.clone(),
                manifest: manifest_path.clone(),
                message: error.to_string(),
            })?;
        let version_place = self.place(&extend(path, "version"));
        let version =
            semver::Version::parse(&raw.version).map_err(|error| ConfigError::OutOfRange {
                at: version_place.clone(),
                reason: format!("{:?} is not a semantic version: {error}", raw.version),
            })?;
        if version != manifest.version {
            return Err(ConfigError::VersionMismatch {
                at: version_place,
                configured: version.to_string(),
                manifest: manifest.version.to_string(),
            });
        }
        let actual = sandbox_host::router::sha256_of_file(&artifact).map_err(|source| {
            ConfigError::Artifact {
                at: artifact_place,
                artifact: artifact.clone(),
                source,
            }
        })?;
        let pinned = raw.sha256.to_ascii_lowercase();
        if actual != pinned {
            return Err(ConfigError::PinMismatch {
                at: sha256_place,
                artifact,
                pinned,
                actual,
            });
        }
        Ok(CustomIntegration {
            manifest,
            artifact,
            sha256: pinned,
        })
    }

    fn out_of_range(&self, path: &[Key], reason: String) -> ConfigError {
        ConfigError::OutOfRange {
            at: self.place(path),
            reason,
        }
    }

    /// The place of `path`: its line and column when the key is written in the file (for a
    /// key that is not, its nearest written table's).
    fn place(&self, path: &[Key]) -> Box<Place> {
        Box::new(Place {
            file: self.file.to_owned(),
            key: render_key(path),
            line_column: locate(self.document, path).map(|offset| line_column(self.text, offset)),
        })
    }
}

/// `path` and then the field `key`.
fn extend(path: &[Key], key: &str) -> Vec<Key> {
    let mut extended = path.to_vec();
    extended.push(Key::Field(key.to_owned()));
    extended
}

/// The byte offset of the value at `path` in the parsed document, or of the deepest table on
/// the way that is written.
fn locate(document: &toml::de::DeTable<'_>, path: &[Key]) -> Option<usize> {
    let mut table = document;
    let mut found = None;
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for key in path {
        let value = match (key, array) {
            (Key::Index(index), Some(items)) => items.get(*index)?,
            (Key::Field(name) | Key::Group(name), None) => table
                .iter()
                .find(|(candidate, _)| candidate.get_ref().as_ref() == name.as_str())
                .map(|(_, value)| value)?,
            _ => return found,
        };
        found = Some(value.span().start);
        array = None;
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            toml::de::DeValue::Array(items) => array = Some(items),
            _ => {}
        }
    }
    found
}

/// A group name the host can have: `built-in`, or `custom-<domain>` with a valid domain.
fn check_group_name(name: &str) -> Result<(), String> {
    if name == BUILT_IN_GROUP {
        return Ok(());
    }
    match name.strip_prefix(CUSTOM_GROUP_PREFIX) {
        Some(domain) if homecore::entity_id::is_valid_domain(domain) => Ok(()),
        _ => Err(format!(
            "{name:?} is not a group name: a group is {BUILT_IN_GROUP:?} or \"{CUSTOM_GROUP_PREFIX}<domain>\" with a domain of lowercase letters, digits and '_'"
        )),
    }
}

/// The levels a bare `log.level` may name.
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// A level, or an `EnvFilter` directive string that parses. A single bare word must be a
/// level: `EnvFilter` would take `inof` as a target name and log nothing the operator meant.
fn check_log_level(level: &str) -> Result<(), String> {
    let bare_word = !level.contains(['=', ',', '[', ':']);
    if bare_word {
        if LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Ok(());
        }
        return Err(format!(
            "{level:?} is not a level ({}) nor a filter directive like \"info,sandbox_host=debug\"",
            LOG_LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|error| format!("{level:?} is not a valid log filter: {error}"))
}

// ---------------------------------------------------------------------------------------------
// The default file.
// ---------------------------------------------------------------------------------------------

/// The file written when none exists: every key commented out at its default (a line
/// `#key = value` that can be uncommented as it is), each with a line saying what it does.
pub fn default_file() -> String {
    let library = GroupConfig::new("defaults");
    let restart = &library.restart;
    let watchdog = library.watchdog.unwrap_or_default();
    let cpu_share = library.cpu_share.unwrap_or_default();
    let duration = |value: Duration| format!("\"{}\"", humantime::format_duration(value));
    let transport = match library.transport {
        ChildTransport::Stdio => "stdio",
        ChildTransport::Unix => "unix",
    };
    let confinement = match library.confinement {
        ConfinementProfile::Default => "default",
        ConfinementProfile::Off => "off",
        ConfinementProfile::Strict => "strict",
    };
    format!(
        r#"# The sandbox hub's configuration. Every key is optional: each line `#key = value` below
# shows the default; uncomment it and change the value to set it. See docs/OPERATING.md.
# Durations are strings like "30s", "500ms", "2m"; relative paths are relative to this
# file's directory. A file with an unknown key or a value out of range is refused whole.

#[listen]
# control_socket: the unix control socket's path (no default: the program decides).
#   e.g. control_socket = "sandbox-host.sock"
# The HTTP API's address (an IP address and a port).
#http = "{http}"

#[log]
# A level (error, warn, info, debug, trace) or a filter like "info,sandbox_host=debug".
#level = "{level}"
# text or json.
#format = "text"

# Settings every sandbox group starts from.
#[defaults]
# How the sandbox talks to main: stdio or unix (a unix socket).
#transport = "{transport}"
# How long a sandbox has to say it is ready, on every start.
#ready_timeout = {ready_timeout}
# How long a stopping sandbox has to exit before SIGTERM, and again before SIGKILL.
#stop_grace = {stop_grace}
# Most entities a group may have mirrored on main (1 to {max_entities}).
#max_entities = {max_entities}
# What the kernel forbids the sandbox: default, strict (also no network), or off (for
# diagnosing a sandbox the confinement stops).
#confinement = "{confinement}"
# uid, gid: run the sandboxes as this user and group (both or neither; the hub must be root).
#   e.g. uid = 1000 and gid = 1000

# The restart budget: at most max_starts starts within window, with backoff in between.
#[defaults.restart]
# Starts allowed within the window (the first start counts).
#max_starts = {max_starts}
# The sliding window the starts are counted in.
#window = {window}
# The delay before the first restart after a failure; it doubles with each further failure.
#backoff_initial = {backoff_initial}
# The longest delay between restarts.
#backoff_max = {backoff_max}
# A sandbox up at least this long before it fails has its failures forgiven.
#forgive_after = {forgive_after}

# The liveness watchdog: a ping every interval that a hung sandbox fails.
#[defaults.watchdog]
# Whether the watchdog runs.
#enabled = true
# Time between pings.
#interval = {watchdog_interval}
# How long a ping may go unanswered before the sandbox is killed (below the interval).
#timeout = {watchdog_timeout}

# OS limits of each sandbox process (no limit by default).
#[defaults.limits]
# address_space: the most virtual memory, bytes or a string with KiB, MiB, GiB or TiB.
#   e.g. address_space = "2GiB"
# open_files: the most open files.
#   e.g. open_files = 1024
# cpu_seconds: the most CPU seconds before the kernel kills the sandbox.
#   e.g. cpu_seconds = 3600

# A group using more than its share of a CPU is demoted to a lower priority.
#[defaults.cpu_share]
# Whether CPU shares are watched.
#enabled = true
# Time between two samples of a sandbox's CPU time.
#interval = {cpu_interval}
# The share of one CPU a sandbox may use before it is demoted (0.25: a quarter).
#limit = {cpu_limit:?}
# The nice value a demoted sandbox runs at (0 to 19).
#nice = {cpu_nice}

# A group's own settings: any of the keys of [defaults], merged over them. A group is
# "built-in" (the built-in integrations) or "custom-<domain>" (a custom integration).
#   e.g. [groups."built-in"]
#        ready_timeout = "1m"
#        [groups."built-in".restart]
#        max_starts = 5

# A custom integration: its own sandbox binary, pinned by version and SHA-256.
#   e.g. [[custom]]
#        artifact = "acme-thermostat-sandbox"
#        manifest = "manifest.json"   # default: manifest.json next to the artifact
#        version = "1.0.0"            # must be the manifest's version
#        sha256 = "<64 hex digits: the artifact's SHA-256>"
"#,
        http = DEFAULT_HTTP_ADDRESS,
        level = DEFAULT_LOG_LEVEL,
        ready_timeout = duration(library.ready_timeout),
        stop_grace = duration(library.stop_grace),
        max_entities = library.max_entities,
        max_starts = restart.max_starts,
        window = duration(restart.window),
        backoff_initial = duration(restart.backoff_initial),
        backoff_max = duration(restart.backoff_max),
        forgive_after = duration(restart.forgive_after),
        watchdog_interval = duration(watchdog.interval),
        watchdog_timeout = duration(watchdog.timeout),
        cpu_interval = duration(cpu_share.interval),
        cpu_limit = cpu_share.limit,
        cpu_nice = cpu_share.nice,
    )
}

// ---------------------------------------------------------------------------------------------
// `sandbox-host config check`.
// ---------------------------------------------------------------------------------------------

/// `sandbox-host config check --config DIR`: loads the file (writing the default when absent),
/// prints the effective settings that differ from the defaults; exit 0, or 2 with the error on
/// stderr for a refused file.
pub fn check_command(dir: &Path) -> ExitCode {
    let loaded = match load_or_create(dir) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("sandbox-host: configuration refused: {error}");
            return ExitCode::from(2);
        }
    };
    for line in summary(&loaded, dir) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// The lines `config check` prints.
pub fn summary(loaded: &Loaded, dir: &Path) -> Vec<String> {
    let config = &loaded.config;
    let mut lines = Vec::new();
    if loaded.created {
        lines.push(format!(
            "created the default configuration {}",
            loaded.path.display()
        ));
    }
    lines.push(format!("configuration {} is valid", loaded.path.display()));
    lines.push(format!(
        "listen: control socket {}, http {}",
        config.listen.control_socket.as_ref().map_or_else(
            || "decided by the program".to_owned(),
            |path| path.display().to_string()
        ),
        config.listen.http
    ));
    lines.push(format!(
        "log: level {}, format {}",
        config.log.level,
        config.log.format.as_str()
    ));
    let groups = config.groups_config(dir.to_owned(), Vec::new());
    let library = GroupConfig::new("defaults");
    let changed = differences(&library, &groups.group_defaults);
    if changed.is_empty() {
        lines.push("defaults: the host's".to_owned());
    } else {
        lines.push(format!("defaults: changed {}", changed.join(", ")));
    }
    if groups.group_overrides.is_empty() {
        lines.push("groups with their own settings: none".to_owned());
    } else {
        let mut names: Vec<&String> = groups.group_overrides.keys().collect();
        names.sort();
        for name in names {
            let config = groups.group_config(name);
            let mut defaults = groups.group_defaults.clone();
            defaults.name.clone_from(name);
            defaults.channel.name.clone_from(name);
            let changed = differences(&defaults, &config);
            lines.push(format!(
                "group {name:?}: {}",
                if changed.is_empty() {
                    "same as the defaults".to_owned()
                } else {
                    format!("changed {}", changed.join(", "))
                }
            ));
        }
    }
    let custom = config.custom_integrations();
    if custom.is_empty() {
        lines.push("custom integrations: none".to_owned());
    }
    for integration in custom {
        lines.push(format!(
            "custom integration {} {} in group {}: {} (sha256 {})",
            integration.manifest.domain,
            integration.manifest.version,
            custom_group(&integration.manifest.domain),
            integration.artifact.display(),
            integration.sha256
        ));
    }
    lines
}

/// The settings of `b` that differ from `a`, by the file's key names.
fn differences(a: &GroupConfig, b: &GroupConfig) -> Vec<&'static str> {
    let same = |x: &dyn fmt::Debug, y: &dyn fmt::Debug| format!("{x:?}") == format!("{y:?}");
    let fields: [(&'static str, bool); 11] = [
        ("transport", same(&a.transport, &b.transport)),
        ("ready_timeout", a.ready_timeout == b.ready_timeout),
        ("stop_grace", a.stop_grace == b.stop_grace),
        ("restart", a.restart == b.restart),
        ("watchdog", a.watchdog == b.watchdog),
        ("limits", a.limits == b.limits),
        ("uid/gid", a.credentials == b.credentials),
        ("channel", same(&a.channel, &b.channel)),
        ("max_entities", a.max_entities == b.max_entities),
        ("cpu_share", a.cpu_share == b.cpu_share),
        ("confinement", a.confinement == b.confinement),
    ];
    fields
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}
