//! What one command_line entry configures, read from the entry's data and checked.

use std::time::Duration;

use serde_json::{Map, Value};

/// Shortest timeout a command may be given, in seconds.
pub const MIN_COMMAND_TIMEOUT_SECS: i64 = 1;
/// Longest timeout a command may be given, in seconds: a poll must not be stuck for longer.
pub const MAX_COMMAND_TIMEOUT_SECS: i64 = 600;
/// Timeout of a command when none is configured (Home Assistant's `DEFAULT_TIMEOUT`), in seconds.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: i64 = 15;
/// Shortest polling interval, in seconds.
pub const MIN_SCAN_INTERVAL_SECS: i64 = 1;
/// Longest polling interval, in seconds (one day).
pub const MAX_SCAN_INTERVAL_SECS: i64 = 86_400;
/// Polling interval when none is configured (Home Assistant's command_line `SCAN_INTERVAL`), in seconds.
pub const DEFAULT_SCAN_INTERVAL_SECS: i64 = 60;
/// Longest command accepted, in bytes: far above any sensible one-liner, far below `ARG_MAX`.
pub const MAX_COMMAND_LENGTH: usize = 4096;
/// Default payload of a binary sensor's `on` state (Home Assistant's `DEFAULT_PAYLOAD_ON`).
pub const DEFAULT_PAYLOAD_ON: &str = "ON";
/// Default payload of a binary sensor's `off` state (Home Assistant's `DEFAULT_PAYLOAD_OFF`).
pub const DEFAULT_PAYLOAD_OFF: &str = "OFF";

/// The entity an entry configures, with what only that platform needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformConfig {
    /// A sensor whose state is the command's trimmed output.
    Sensor {
        /// The command printing the value.
        command: String,
        /// Unit of the value; when set, the output must be a number.
        unit_of_measurement: Option<String>,
    },
    /// A binary sensor: `on` when the output is `payload_on`, `off` when it is `payload_off`.
    BinarySensor {
        /// The command printing the payload.
        command: String,
        /// Output meaning `on`.
        payload_on: String,
        /// Output meaning `off`.
        payload_off: String,
    },
    /// A switch running one command to turn on and one to turn off.
    Switch {
        /// Run by `turn_on`.
        command_on: String,
        /// Run by `turn_off`.
        command_off: String,
        /// Polled for the state (exit code 0 = on); without it the switch is optimistic.
        command_state: Option<String>,
    },
}

impl PlatformConfig {
    /// The entity domain of this platform.
    pub fn domain(&self) -> &'static str {
        match self {
            Self::Sensor { .. } => "sensor",
            Self::BinarySensor { .. } => "binary_sensor",
            Self::Switch { .. } => "switch",
        }
    }

    /// The command polled for the state, if the entity polls.
    pub fn poll_command(&self) -> Option<&str> {
        match self {
            Self::Sensor { command, .. } | Self::BinarySensor { command, .. } => Some(command),
            Self::Switch { command_state, .. } => command_state.as_deref(),
        }
    }
}

/// One entry's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryConfig {
    /// The entity's name.
    pub name: String,
    /// The platform and its commands.
    pub platform: PlatformConfig,
    /// How long a command may run before it is killed.
    pub command_timeout: Duration,
    /// Time between two polls.
    pub scan_interval: Duration,
}

/// Why an entry's data is not a usable configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required key is missing or not a string.
    #[error("the entry has no {0:?} text")]
    Missing(&'static str),
    /// The platform is not one this integration provides.
    #[error("unknown platform {0:?}; expected sensor, binary_sensor or switch")]
    UnknownPlatform(String),
    /// A command is unusable.
    #[error("{field}: {problem}")]
    Command {
        /// The field holding it.
        field: &'static str,
        /// What is wrong with it.
        problem: CommandProblem,
    },
    /// A number is missing or out of its range.
    #[error("{field} must be a whole number of seconds within {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Lowest allowed.
        min: i64,
        /// Highest allowed.
        max: i64,
    },
    /// The binary sensor's two payloads are the same, so `off` could never be reported.
    #[error("payload_on and payload_off must differ")]
    PayloadsEqual,
}

/// What is wrong with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandProblem {
    /// Empty or only whitespace.
    #[error("the command is empty")]
    Empty,
    /// Longer than [`MAX_COMMAND_LENGTH`].
    #[error("the command is longer than {MAX_COMMAND_LENGTH} bytes")]
    TooLong,
    /// Holds a NUL byte, which no process argument can carry.
    #[error("the command contains a NUL byte")]
    NulByte,
}

impl CommandProblem {
    /// The flow's error key for this problem.
    pub fn error_key(self) -> &'static str {
        match self {
            Self::Empty => "command_empty",
            Self::TooLong => "command_too_long",
            Self::NulByte => "command_invalid",
        }
    }
}

/// Checks one command; returns it trimmed.
pub fn check_command(command: &str) -> Result<String, CommandProblem> {
    let command = command.trim();
    if command.is_empty() {
        return Err(CommandProblem::Empty);
    }
    if command.len() > MAX_COMMAND_LENGTH {
        return Err(CommandProblem::TooLong);
    }
    if command.contains('\0') {
        return Err(CommandProblem::NulByte);
    }
    Ok(command.to_owned())
}

fn text<'a>(data: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, ConfigError> {
    data.get(key)
        .and_then(Value::as_str)
        .ok_or(ConfigError::Missing(key))
}

fn optional_text(data: &Map<String, Value>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn command(data: &Map<String, Value>, field: &'static str) -> Result<String, ConfigError> {
    check_command(text(data, field)?).map_err(|problem| ConfigError::Command { field, problem })
}

fn seconds(
    data: &Map<String, Value>,
    field: &'static str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<Duration, ConfigError> {
    let value = match data.get(field) {
        None | Some(Value::Null) => default,
        Some(value) => value
            .as_i64()
            .ok_or(ConfigError::OutOfRange { field, min, max })?,
    };
    if !(min..=max).contains(&value) {
        return Err(ConfigError::OutOfRange { field, min, max });
    }
    Ok(Duration::from_secs(value.unsigned_abs()))
}

impl EntryConfig {
    /// Reads and checks an entry's data.
    pub fn from_data(data: &Map<String, Value>) -> Result<Self, ConfigError> {
        let name = text(data, "name")?.trim().to_owned();
        if name.is_empty() {
            return Err(ConfigError::Missing("name"));
        }
        let platform = match text(data, "platform")? {
            "sensor" => PlatformConfig::Sensor {
                command: command(data, "command")?,
                unit_of_measurement: optional_text(data, "unit_of_measurement"),
            },
            "binary_sensor" => {
                let payload_on = optional_text(data, "payload_on")
                    .unwrap_or_else(|| DEFAULT_PAYLOAD_ON.to_owned());
                let payload_off = optional_text(data, "payload_off")
                    .unwrap_or_else(|| DEFAULT_PAYLOAD_OFF.to_owned());
                if payload_on == payload_off {
                    return Err(ConfigError::PayloadsEqual);
                }
                PlatformConfig::BinarySensor {
                    command: command(data, "command")?,
                    payload_on,
                    payload_off,
                }
            }
            "switch" => PlatformConfig::Switch {
                command_on: command(data, "command_on")?,
                command_off: command(data, "command_off")?,
                command_state: match optional_text(data, "command_state") {
                    Some(state) => {
                        Some(
                            check_command(&state).map_err(|problem| ConfigError::Command {
                                field: "command_state",
                                problem,
                            })?,
                        )
                    }
                    None => None,
                },
            },
            other => return Err(ConfigError::UnknownPlatform(other.to_owned())),
        };
        Ok(Self {
            name,
            platform,
            command_timeout: seconds(
                data,
                "command_timeout",
                DEFAULT_COMMAND_TIMEOUT_SECS,
                MIN_COMMAND_TIMEOUT_SECS,
                MAX_COMMAND_TIMEOUT_SECS,
            )?,
            scan_interval: seconds(
                data,
                "scan_interval",
                DEFAULT_SCAN_INTERVAL_SECS,
                MIN_SCAN_INTERVAL_SECS,
                MAX_SCAN_INTERVAL_SECS,
            )?,
        })
    }
}
