//! The one command_line entity type: a sensor, binary sensor or switch driven by shell commands.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use homecore::state::MAX_STATE_LENGTH;
use homecore::{Entity, EntityHandle, EntityInfo, EntityServiceCall, ServiceError};

use super::DOMAIN;
use super::config::{EntryConfig, PlatformConfig};
use super::runner::{CommandError, CommandRunner};

/// What the entity reports right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Status {
    /// Whether the last command could be run and understood.
    available: bool,
    /// The state; `None` is `unknown`.
    state: Option<String>,
}

/// A command_line entity; made with [`CommandLineEntity::new`] and owned through an `Arc`.
pub(crate) struct CommandLineEntity {
    /// Itself, weakly, for the polling task (which must not keep a removed entity alive).
    me: Weak<CommandLineEntity>,
    /// What it says about itself.
    info: EntityInfo,
    /// Its entry's configuration.
    config: EntryConfig,
    /// Runs its commands.
    runner: Arc<dyn CommandRunner>,
    /// What it reports.
    status: Mutex<Status>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
    /// The polling task, while added.
    poller: Mutex<Option<AbortHandle>>,
    /// Held while a command runs, so a poll and a service call never run commands at once
    /// (a state read racing a `turn_on` would report the old state last).
    run_lock: tokio::sync::Mutex<()>,
}

impl CommandLineEntity {
    /// The entity of the entry `entry_id` configured by `config`.
    pub(crate) fn new(
        entry_id: &str,
        config: EntryConfig,
        runner: Arc<dyn CommandRunner>,
    ) -> Arc<Self> {
        let mut info = EntityInfo::new(config.platform.domain());
        info.unique_id = Some(entry_id.to_owned());
        info.name = Some(config.name.clone());
        if let PlatformConfig::Sensor {
            unit_of_measurement,
            ..
        } = &config.platform
        {
            info.unit_of_measurement = unit_of_measurement.clone();
        }
        // A switch without a state command is optimistic and starts off (Home Assistant's
        // `_attr_is_on = False`); every polled entity is unknown until its first poll.
        let optimistic = matches!(
            &config.platform,
            PlatformConfig::Switch {
                command_state: None,
                ..
            }
        );
        let status = Status {
            available: true,
            state: optimistic.then(|| "off".to_owned()),
        };
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            info,
            config,
            runner,
            status: Mutex::new(status),
            handle: Mutex::new(None),
            poller: Mutex::new(None),
            run_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn entity_id(&self) -> String {
        self.handle
            .lock()
            .as_ref()
            .map_or_else(|| self.config.name.clone(), |h| h.entity_id().to_owned())
    }

    /// Records `next` and writes it; logs when availability changes, with the reason.
    fn set(&self, next: Result<Option<String>, String>) {
        let entity_id = self.entity_id();
        {
            let mut status = self.status.lock();
            match &next {
                Err(reason) if status.available => {
                    tracing::warn!(entity_id, reason, "command_line entity is unavailable");
                }
                Ok(_) if !status.available => {
                    tracing::info!(entity_id, "command_line entity is available again");
                }
                _ => {}
            }
            *status = match next {
                Ok(state) => Status {
                    available: true,
                    state,
                },
                Err(_) => Status {
                    available: false,
                    state: status.state.clone(),
                },
            };
        }
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle
            && let Err(err) = handle.write_state()
        {
            tracing::debug!(entity_id, %err, "command_line state not written");
        }
    }

    /// Runs `command` (one at a time per entity) within the configured timeout.
    async fn run(&self, command: &str) -> Result<super::runner::CommandOutput, CommandError> {
        let _running = self.run_lock.lock().await;
        let output = self
            .runner
            .run(command, self.config.command_timeout)
            .await?;
        if output.truncated {
            tracing::warn!(
                entity_id = self.entity_id(),
                limit = super::runner::MAX_OUTPUT_BYTES,
                "command output was cut at its size limit"
            );
        }
        Ok(output)
    }

    /// Polls once: runs the state command and turns its outcome into the state.
    pub(crate) async fn refresh(&self) {
        let Some(command) = self.config.platform.poll_command() else {
            return;
        };
        let outcome = self.run(command).await;
        let next = match &self.config.platform {
            PlatformConfig::Switch { .. } => match outcome {
                // Home Assistant: the switch is on when the state command exits with 0.
                Ok(output) => Ok(Some(if output.success() { "on" } else { "off" }.to_owned())),
                Err(err) => Err(err.to_string()),
            },
            PlatformConfig::Sensor {
                unit_of_measurement,
                ..
            } => outcome
                .and_then(|output| output.into_success(command))
                .map_err(|err| err.to_string())
                .and_then(|output| sensor_state(&output.stdout, unit_of_measurement.is_some())),
            PlatformConfig::BinarySensor {
                payload_on,
                payload_off,
                ..
            } => outcome
                .and_then(|output| output.into_success(command))
                .map_err(|err| err.to_string())
                .map(|output| binary_state(&output.stdout, payload_on, payload_off)),
        };
        self.set(next);
    }

    fn is_on(&self) -> bool {
        self.status.lock().state.as_deref() == Some("on")
    }

    async fn switch(&self, service: &str) -> Result<Option<Value>, ServiceError> {
        let PlatformConfig::Switch {
            command_on,
            command_off,
            command_state,
        } = &self.config.platform
        else {
            return Err(ServiceError::handler(format!(
                "{service} is not a service of {}",
                self.entity_id()
            )));
        };
        let turn_on = match service {
            "turn_on" => true,
            "turn_off" => false,
            "toggle" => !self.is_on(),
            other => {
                return Err(ServiceError::handler(format!(
                    "{other} is not a service of a command_line switch"
                )));
            }
        };
        let command = if turn_on { command_on } else { command_off };
        self.run(command)
            .await
            .and_then(|output| output.into_success(command))
            .map_err(|err| {
                ServiceError::handler(format!(
                    "{} could not turn {}: {err}",
                    self.entity_id(),
                    if turn_on { "on" } else { "off" }
                ))
            })?;
        if command_state.is_some() {
            self.refresh().await;
        } else {
            self.set(Ok(Some(if turn_on { "on" } else { "off" }.to_owned())));
        }
        Ok(None)
    }
}

/// The state a sensor shows for a command's output (trimmed, like Home Assistant's `strip()`);
/// `Err` makes the sensor unavailable, with the reason.
pub(crate) fn sensor_state(stdout: &str, numeric: bool) -> Result<Option<String>, String> {
    let value = stdout.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_STATE_LENGTH {
        return Err(format!(
            "the output is {} characters long; a state holds at most {MAX_STATE_LENGTH}",
            value.chars().count()
        ));
    }
    if numeric
        && value
            .parse::<f64>()
            .map_or(true, |number| !number.is_finite())
    {
        return Err(format!(
            "the output {value:?} is not a number, but the sensor has a unit of measurement"
        ));
    }
    Ok(Some(value.to_owned()))
}

/// The state a binary sensor shows for a command's output: `on`, `off`, or unknown for any
/// other payload (Home Assistant leaves the state unset then).
pub(crate) fn binary_state(stdout: &str, payload_on: &str, payload_off: &str) -> Option<String> {
    let value = stdout.trim();
    if value == payload_on {
        Some("on".to_owned())
    } else if value == payload_off {
        Some("off".to_owned())
    } else {
        tracing::warn!(
            value,
            payload_on,
            payload_off,
            "command_line binary sensor got neither payload"
        );
        None
    }
}

impl Entity for CommandLineEntity {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn available(&self) -> bool {
        self.status.lock().available
    }

    fn state(&self) -> Option<String> {
        self.status.lock().state.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        if matches!(
            &self.config.platform,
            PlatformConfig::Switch {
                command_state: None,
                ..
            }
        ) {
            // Home Assistant marks a switch without a state command as assumed.
            attributes.insert("assumed_state".to_owned(), json!(true));
        }
        attributes
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.handle.lock() = Some(handle);
            if self.config.platform.poll_command().is_none() {
                return;
            }
            let me = self.me.clone();
            let interval = self.config.scan_interval;
            let task = tokio::spawn(async move {
                loop {
                    let Some(entity) = me.upgrade() else {
                        return;
                    };
                    entity.refresh().await;
                    drop(entity);
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

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move { self.switch(&call.service).await })
    }
}

impl Drop for CommandLineEntity {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.get_mut().take() {
            poller.abort();
        }
    }
}

impl std::fmt::Debug for CommandLineEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLineEntity")
            .field("domain", &DOMAIN)
            .field("config", &self.config)
            .field("status", &*self.status.lock())
            .finish()
    }
}
