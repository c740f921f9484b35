//! What one file entry configures, and the path checks shared by the flow and setup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LENGTH: usize = 4096;
/// Shortest polling interval of a sensor, in seconds.
pub const MIN_SCAN_INTERVAL_SECS: i64 = 1;
/// Longest polling interval of a sensor, in seconds (one day).
pub const MAX_SCAN_INTERVAL_SECS: i64 = 86_400;
/// Polling interval of a sensor when none is configured (Home Assistant's sensor default), in seconds.
pub const DEFAULT_SCAN_INTERVAL_SECS: i64 = 30;

/// Why a path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty.
    #[error("the path is empty")]
    Empty,
    /// Not absolute (a relative path would depend on the process's working directory).
    #[error("the path {0:?} is not absolute")]
    NotAbsolute(String),
    /// Longer than [`MAX_PATH_LENGTH`] or holding a NUL byte.
    #[error("the path is not a usable file name")]
    Invalid,
    /// Names a directory, not a file.
    #[error("the path {0:?} is a directory")]
    IsDirectory(String),
    /// The folder a notify file would be created in does not exist.
    #[error("the folder of {0:?} does not exist")]
    NoParent(String),
}

impl PathError {
    /// The flow's error key.
    pub fn error_key(&self) -> &'static str {
        match self {
            Self::Empty => "path_empty",
            Self::NotAbsolute(_) => "path_not_absolute",
            Self::Invalid => "path_invalid",
            Self::IsDirectory(_) => "path_is_directory",
            Self::NoParent(_) => "parent_missing",
        }
    }
}

/// Checks a path for a sensor (`must_have_parent` false: the file may appear later) or a
/// notifier (`must_have_parent` true: the file is created in an existing folder).
pub fn check_path(path: &str, must_have_parent: bool) -> Result<PathBuf, PathError> {
    let text = path.trim();
    if text.is_empty() {
        return Err(PathError::Empty);
    }
    if text.len() > MAX_PATH_LENGTH || text.contains('\0') {
        return Err(PathError::Invalid);
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute(text.to_owned()));
    }
    if path.is_dir() {
        return Err(PathError::IsDirectory(text.to_owned()));
    }
    if must_have_parent && !path.parent().is_some_and(Path::is_dir) {
        return Err(PathError::NoParent(text.to_owned()));
    }
    Ok(path.to_path_buf())
}

/// The entity an entry configures.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryConfig {
    /// A sensor following the file's last line.
    Sensor {
        /// Its name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Unit of the value.
        unit_of_measurement: Option<String>,
        /// Whether the line must be a number.
        numeric: bool,
        /// Time between two reads.
        scan_interval: Duration,
    },
    /// A notifier appending messages to the file.
    Notify {
        /// Its name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Whether each line starts with the time it was written.
        timestamp: bool,
    },
}

/// Why an entry's data is not a usable configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required key is missing or not text.
    #[error("the entry has no {0:?} text")]
    Missing(&'static str),
    /// The platform is neither `sensor` nor `notify`.
    #[error("unknown platform {0:?}; expected sensor or notify")]
    UnknownPlatform(String),
    /// The path is unusable.
    #[error("file_path: {0}")]
    Path(#[from] PathError),
    /// The interval is out of range.
    #[error(
        "scan_interval must be within {MIN_SCAN_INTERVAL_SECS}..={MAX_SCAN_INTERVAL_SECS} seconds"
    )]
    ScanInterval,
}

fn text<'a>(data: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, ConfigError> {
    data.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .ok_or(ConfigError::Missing(key))
}

impl EntryConfig {
    /// Reads and checks an entry's data. The notify folder is not required here: it may be
    /// mounted later, and a failed write says so clearly.
    pub fn from_data(data: &Map<String, Value>) -> Result<Self, ConfigError> {
        let name = text(data, "name")?.to_owned();
        let path = check_path(text(data, "file_path")?, false)?;
        match text(data, "platform")? {
            "sensor" => {
                let seconds = data
                    .get("scan_interval")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_SCAN_INTERVAL_SECS);
                if !(MIN_SCAN_INTERVAL_SECS..=MAX_SCAN_INTERVAL_SECS).contains(&seconds) {
                    return Err(ConfigError::ScanInterval);
                }
                Ok(Self::Sensor {
                    name,
                    path,
                    unit_of_measurement: data
                        .get("unit_of_measurement")
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|unit| !unit.is_empty())
                        .map(str::to_owned),
                    numeric: data
                        .get("numeric")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    scan_interval: Duration::from_secs(seconds.unsigned_abs()),
                })
            }
            "notify" => Ok(Self::Notify {
                name,
                path,
                timestamp: data
                    .get("timestamp")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }),
            other => Err(ConfigError::UnknownPlatform(other.to_owned())),
        }
    }
}
