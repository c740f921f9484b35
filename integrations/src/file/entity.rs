//! The file integration's entities: a sensor following a file's last line, and a notifier
//! appending messages to a file.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use homecore::state::MAX_STATE_LENGTH;
use homecore::{Entity, EntityHandle, EntityInfo, EntityServiceCall, ServiceError};

use super::tail;

/// What a file sensor reports.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    /// Whether the file could be read.
    available: bool,
    /// The state; `None` is `unknown`.
    state: Option<String>,
}

/// A sensor whose state is a file's last line, read every `scan_interval`.
pub(crate) struct FileSensor {
    /// Itself, weakly, for the polling task.
    me: Weak<FileSensor>,
    /// What it says about itself.
    info: EntityInfo,
    /// The file followed.
    path: PathBuf,
    /// Whether the line must be a number.
    numeric: bool,
    /// Time between two reads.
    scan_interval: Duration,
    /// What it reports.
    reading: Mutex<Reading>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
    /// The polling task, while added.
    poller: Mutex<Option<AbortHandle>>,
}

/// The state for a file's last line; `Err` makes the sensor unavailable, with the reason.
pub(crate) fn line_state(line: Option<String>, numeric: bool) -> Result<Option<String>, String> {
    let Some(line) = line else {
        return Ok(None);
    };
    if numeric {
        return match line.parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(Some(line)),
            _ => {
                tracing::warn!(line, "file sensor's last line is not a number");
                Ok(None)
            }
        };
    }
    if line.chars().count() > MAX_STATE_LENGTH {
        return Err(format!(
            "the last line is {} characters long; a state holds at most {MAX_STATE_LENGTH}",
            line.chars().count()
        ));
    }
    Ok(Some(line))
}

impl FileSensor {
    pub(crate) fn new(
        entry_id: &str,
        name: String,
        path: PathBuf,
        unit_of_measurement: Option<String>,
        numeric: bool,
        scan_interval: Duration,
    ) -> Arc<Self> {
        let mut info = EntityInfo::new("sensor");
        info.unique_id = Some(entry_id.to_owned());
        info.name = Some(name);
        info.icon = Some("mdi:file".to_owned());
        info.unit_of_measurement = unit_of_measurement;
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            info,
            path,
            numeric,
            scan_interval,
            reading: Mutex::new(Reading::default()),
            handle: Mutex::new(None),
            poller: Mutex::new(None),
        })
    }

    /// Reads the file once, logs a change of availability with its reason, writes the state.
    pub(crate) fn refresh(&self) {
        let next = match tail::last_line(&self.path) {
            Ok(line) => line_state(line, self.numeric),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{} does not exist", self.path.display()))
            }
            Err(err) => Err(format!("cannot read {}: {err}", self.path.display())),
        };
        let handle = self.handle.lock().clone();
        let entity_id = handle.as_ref().map(|h| h.entity_id().to_owned());
        {
            let mut reading = self.reading.lock();
            match &next {
                Err(reason) if reading.available || reading.state.is_none() => {
                    tracing::warn!(entity_id, reason, "file sensor is unavailable");
                }
                Ok(_) if !reading.available => {
                    tracing::info!(entity_id, "file sensor can read its file again");
                }
                _ => {}
            }
            *reading = match next {
                Ok(state) => Reading {
                    available: true,
                    state,
                },
                Err(_) => Reading {
                    available: false,
                    state: None,
                },
            };
        }
        if let Some(handle) = handle
            && let Err(err) = handle.write_state()
        {
            tracing::debug!(entity_id, %err, "file sensor state not written");
        }
    }
}

impl Entity for FileSensor {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn available(&self) -> bool {
        self.reading.lock().available
    }

    fn state(&self) -> Option<String> {
        self.reading.lock().state.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        attributes.insert(
            "file_path".to_owned(),
            json!(self.path.display().to_string()),
        );
        attributes
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.handle.lock() = Some(handle);
            let me = self.me.clone();
            let interval = self.scan_interval;
            let task = tokio::spawn(async move {
                loop {
                    let Some(sensor) = me.upgrade() else {
                        return;
                    };
                    sensor.refresh();
                    drop(sensor);
                    tokio::time::sleep(interval).await;
                }
            });
            if let Some(previous) = self.poller.lock().replace(task.abort_handle()) {
                previous.abort();
            }
        })
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(poller) = self.poller.lock().take() {
                poller.abort();
            }
        })
    }
}

impl Drop for FileSensor {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.get_mut().take() {
            poller.abort();
        }
    }
}

/// A notifier appending each message as one line to a file (created if missing).
pub(crate) struct FileNotify {
    /// What it says about itself.
    info: EntityInfo,
    /// The file written.
    path: PathBuf,
    /// Whether each line starts with the time it was written.
    timestamp: bool,
    /// When a message was last written (its state), ISO 8601.
    last_sent: Mutex<Option<String>>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
}

impl FileNotify {
    pub(crate) fn new(entry_id: &str, name: String, path: PathBuf, timestamp: bool) -> Self {
        let mut info = EntityInfo::new("notify");
        info.unique_id = Some(entry_id.to_owned());
        info.name = Some(name);
        info.icon = Some("mdi:file".to_owned());
        Self {
            info,
            path,
            timestamp,
            last_sent: Mutex::new(None),
            handle: Mutex::new(None),
        }
    }

    fn send(&self, data: &Map<String, Value>) -> Result<(), ServiceError> {
        let message = data
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| ServiceError::validation(&["message"], "message is required"))?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let line = tail::message_line(message, self.timestamp.then_some(now.as_str()));
        tail::append_line(&self.path, &line).map_err(|err| {
            ServiceError::handler(format!(
                "cannot write the message to {}: {err}",
                self.path.display()
            ))
        })?;
        *self.last_sent.lock() = Some(now);
        Ok(())
    }
}

impl Entity for FileNotify {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn state(&self) -> Option<String> {
        self.last_sent.lock().clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        attributes.insert(
            "file_path".to_owned(),
            json!(self.path.display().to_string()),
        );
        attributes
    }

    fn restores_state(&self) -> bool {
        // Home Assistant's notify entities keep the time of the last message across restarts.
        true
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(stored) = handle.last_state()
                && !matches!(stored.state.state.as_str(), "unknown" | "unavailable")
            {
                *self.last_sent.lock() = Some(stored.state.state.clone());
            }
            *self.handle.lock() = Some(handle);
        })
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            if call.service != "send_message" {
                return Err(ServiceError::handler(format!(
                    "{} is not a service of a file notifier",
                    call.service
                )));
            }
            self.send(&call.data)?;
            let handle = self.handle.lock().clone();
            if let Some(handle) = handle
                && let Err(err) = handle.write_state()
            {
                tracing::debug!(%err, "file notifier state not written");
            }
            Ok(None)
        })
    }
}
