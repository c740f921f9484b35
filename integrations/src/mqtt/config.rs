//! The mqtt entry's configuration: the broker and how to reach it (the entry's data), discovery
//! and the birth and last-will messages (its options, defaulted from the data), read and checked.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::topic::{check_filter, check_topic};

/// Port when none is given (MQTT over TCP).
pub const DEFAULT_PORT: u16 = 1883;
/// Home Assistant's discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
/// Home Assistant's status topic: the birth and last-will messages go there, and devices that
/// listen to it republish their discovery configs and states when the hub comes online.
pub const DEFAULT_STATUS_TOPIC: &str = "homeassistant/status";
/// The birth message's payload.
pub const DEFAULT_BIRTH_PAYLOAD: &str = "online";
/// The last-will message's payload.
pub const DEFAULT_WILL_PAYLOAD: &str = "offline";
/// Keep-alive asked of the broker: it declares the hub gone (and sends the will) after 1.5×.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Longest host name, user name, password, client id or path accepted, in bytes.
pub const MAX_SETTING_BYTES: usize = 1024;
/// Longest client id: MQTT 3.1.1 brokers must accept 23 bytes; most accept far more, but a
/// generated id stays within the bound every broker honours.
pub const GENERATED_CLIENT_ID_BYTES: usize = 23;

/// Why an entry's configuration is unusable; each names the flow field it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is absent or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A setting has the wrong type or is out of range.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The flow field the error is shown on.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing(field) | Self::Invalid { field, .. } => field,
        }
    }
}

/// A message the hub publishes about itself (birth or last will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessage {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: String,
}

/// Everything an entry needs: where the broker is, who we are, what to discover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryConfig {
    /// Host name or address of the broker.
    pub broker: String,
    /// Its port.
    pub port: u16,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// Password (with a user name).
    pub password: Option<String>,
    /// The client id; a generated one when absent.
    pub client_id: Option<String>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The CA certificates (PEM) the broker's certificate must chain to; the system's when absent.
    pub ca_file: Option<PathBuf>,
    /// Whether discovery is on.
    pub discovery: bool,
    /// The discovery prefix.
    pub discovery_prefix: String,
    /// Published (not retained) once connected, when set.
    pub birth: Option<StatusMessage>,
    /// Left with the broker to publish (retained) when the hub goes away, when set.
    pub will: Option<StatusMessage>,
}

fn text(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            if text.len() > MAX_SETTING_BYTES {
                return Err(ConfigError::Invalid {
                    field,
                    reason: format!("longer than {MAX_SETTING_BYTES} bytes"),
                });
            }
            let trimmed = text.trim();
            Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
        }
        Some(other) => Err(ConfigError::Invalid {
            field,
            reason: format!("expected text, got {other}"),
        }),
    }
}

fn flag(map: &Map<String, Value>, field: &'static str, default: bool) -> Result<bool, ConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(ConfigError::Invalid {
            field,
            reason: format!("expected true or false, got {other}"),
        }),
    }
}

fn port(map: &Map<String, Value>) -> Result<u16, ConfigError> {
    match map.get("port") {
        None | Some(Value::Null) => Ok(DEFAULT_PORT),
        Some(value) => value
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port > 0)
            .ok_or_else(|| ConfigError::Invalid {
                field: "port",
                reason: format!("{value} is not a port (1 to 65535)"),
            }),
    }
}

/// A status message from `enable`, `topic` and `payload` settings.
fn status_message(
    settings: &Map<String, Value>,
    enable: &'static str,
    topic: &'static str,
    payload: &'static str,
    default_payload: &str,
) -> Result<Option<StatusMessage>, ConfigError> {
    if !flag(settings, enable, true)? {
        return Ok(None);
    }
    let topic_text = text(settings, topic)?.unwrap_or_else(|| DEFAULT_STATUS_TOPIC.to_owned());
    check_topic(&topic_text).map_err(|err| ConfigError::Invalid {
        field: topic,
        reason: err.to_string(),
    })?;
    let payload = match settings.get(payload) {
        Some(Value::String(text)) if text.len() <= MAX_SETTING_BYTES => text.clone(),
        None | Some(Value::Null) => default_payload.to_owned(),
        Some(_) => {
            return Err(ConfigError::Invalid {
                field: payload,
                reason: format!("expected text of at most {MAX_SETTING_BYTES} bytes"),
            });
        }
    };
    Ok(Some(StatusMessage {
        topic: topic_text,
        payload,
    }))
}

impl EntryConfig {
    /// The configuration of an entry with `data` (the broker) and `options` (discovery,
    /// birth, will; each falls back to the data, then to Home Assistant's default).
    pub fn from_entry(
        data: &Map<String, Value>,
        options: &Map<String, Value>,
    ) -> Result<Self, ConfigError> {
        let broker = text(data, "broker")?.ok_or(ConfigError::Missing("broker"))?;
        let username = text(data, "username")?;
        let password = match data.get("password") {
            // A password is taken as typed: spaces may be part of it.
            Some(Value::String(password)) if password.len() <= MAX_SETTING_BYTES => {
                (!password.is_empty()).then(|| password.clone())
            }
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    field: "password",
                    reason: format!("expected text of at most {MAX_SETTING_BYTES} bytes"),
                });
            }
        };
        if password.is_some() && username.is_none() {
            return Err(ConfigError::Missing("username"));
        }
        let tls = flag(data, "tls", false)?;
        let ca_file = text(data, "ca_file")?.map(PathBuf::from);
        if ca_file.is_some() && !tls {
            return Err(ConfigError::Invalid {
                field: "ca_file",
                reason: "a CA file needs TLS on".to_owned(),
            });
        }
        let mut settings = data.clone();
        settings.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        let discovery_prefix = text(&settings, "discovery_prefix")?
            .unwrap_or_else(|| DEFAULT_DISCOVERY_PREFIX.to_owned());
        check_filter(&format!("{discovery_prefix}/#")).map_err(|err| ConfigError::Invalid {
            field: "discovery_prefix",
            reason: err.to_string(),
        })?;
        if discovery_prefix.contains(['+', '#']) {
            return Err(ConfigError::Invalid {
                field: "discovery_prefix",
                reason: "must not contain + or #".to_owned(),
            });
        }
        Ok(Self {
            broker,
            port: port(data)?,
            username,
            password,
            client_id: text(data, "client_id")?,
            tls,
            ca_file,
            discovery: flag(&settings, "discovery", true)?,
            discovery_prefix,
            birth: status_message(
                &settings,
                "birth_enable",
                "birth_topic",
                "birth_payload",
                DEFAULT_BIRTH_PAYLOAD,
            )?,
            will: status_message(
                &settings,
                "will_enable",
                "will_topic",
                "will_payload",
                DEFAULT_WILL_PAYLOAD,
            )?,
        })
    }

    /// `broker:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.broker, self.port)
    }
}
