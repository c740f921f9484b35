//! One thermostat per entry: its state, its `climate` entity and its temperature `sensor`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use homecore::entity::EntityDeviceInfo;
use homecore::{
    ConfigEntry, Context, Core, Entity, EntityError, EntityHandle, EntityInfo, EntityServiceCall,
    ServiceError, catalog,
};

use super::{
    BOOST_DEGREES, DEFAULT_TARGET, DOMAIN, INITIAL_ROOM_TEMPERATURE, MAX_TEMP, MIN_TEMP, TICK,
};

/// How far the room temperature moves towards the target per [`TICK`] while heating, °C.
const DRIFT_PER_TICK: f64 = 0.5;

/// What a thermostat knows.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    /// `off` or `heat`.
    mode: &'static str,
    /// Target, °C.
    target: f64,
    /// Room temperature, °C.
    room: f64,
}

/// One entry's thermostat: shared by its two entities, owned by the integration.
pub struct Thermostat {
    entry_id: String,
    name: String,
    status: Mutex<Status>,
    climate: Mutex<Option<EntityHandle>>,
    sensor: Mutex<Option<EntityHandle>>,
    /// The simulation task and the running boost's end, while loaded.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for Thermostat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thermostat")
            .field("entry_id", &self.entry_id)
            .field("status", &*self.status.lock())
            .finish()
    }
}

fn clamp(temperature: f64) -> f64 {
    temperature.clamp(MIN_TEMP, MAX_TEMP)
}

impl Thermostat {
    /// The thermostat of `entry` (name and target from its data), heating.
    pub(crate) fn new(entry: &ConfigEntry) -> Arc<Self> {
        let name = entry
            .data
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&entry.title)
            .to_owned();
        let target = entry
            .data
            .get("target_temperature")
            .and_then(Value::as_f64)
            .map_or(DEFAULT_TARGET, clamp);
        Arc::new(Self {
            entry_id: entry.entry_id.clone(),
            name,
            status: Mutex::new(Status {
                mode: "heat",
                target,
                room: INITIAL_ROOM_TEMPERATURE,
            }),
            climate: Mutex::new(None),
            sensor: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn device(&self) -> EntityDeviceInfo {
        EntityDeviceInfo {
            identifiers: vec![(DOMAIN.to_owned(), self.entry_id.clone())],
            name: Some(self.name.clone()),
            manufacturer: Some("Acme".to_owned()),
            model: Some("T-1000".to_owned()),
            sw_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            ..EntityDeviceInfo::default()
        }
    }

    /// Adds its entities to `core` for `entry` and starts the simulation.
    pub(crate) async fn add_to(
        self: &Arc<Self>,
        core: &Core,
        entry: &ConfigEntry,
    ) -> Result<(), EntityError> {
        let climate = core.entities().forward_entry_setup(entry, "climate")?;
        climate
            .add_entity(Arc::new(ClimateEntity(Arc::downgrade(self))))
            .await?;
        let sensor = core.entities().forward_entry_setup(entry, "sensor")?;
        sensor
            .add_entity(Arc::new(RoomSensor(Arc::downgrade(self))))
            .await?;
        let weak = Arc::downgrade(self);
        let ticker = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
            loop {
                ticks.tick().await;
                let Some(thermostat) = weak.upgrade() else {
                    return;
                };
                thermostat.step();
            }
        });
        self.tasks.lock().push(ticker.abort_handle());
        Ok(())
    }

    /// Stops its tasks (the entry unloads).
    pub(crate) fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// One simulation step: the room drifts towards the target while heating, and cools
    /// towards the initial temperature otherwise.
    fn step(&self) {
        {
            let mut status = self.status.lock();
            let goal = if status.mode == "heat" {
                status.target
            } else {
                INITIAL_ROOM_TEMPERATURE
            };
            let delta = (goal - status.room).clamp(-DRIFT_PER_TICK, DRIFT_PER_TICK);
            status.room += delta;
        }
        self.write(None);
    }

    fn write(&self, context: Option<Context>) {
        for slot in [&self.climate, &self.sensor] {
            let handle = slot.lock().clone();
            let Some(handle) = handle else { continue };
            let written = match &context {
                Some(context) => handle.write_state_with_context(context.clone()),
                None => handle.write_state(),
            };
            if let Err(error) = written {
                tracing::debug!(%error, "thermostat state not written");
            }
        }
    }

    /// Raises the target by [`BOOST_DEGREES`] for `minutes`, heating; answers what it did.
    pub(crate) fn boost(self: &Arc<Self>, minutes: i64, context: Context) -> Value {
        let (before, target) = {
            let mut status = self.status.lock();
            let before = status.target;
            status.target = clamp(before + BOOST_DEGREES);
            status.mode = "heat";
            (before, status.target)
        };
        self.write(Some(context));
        let weak = Arc::downgrade(self);
        let seconds = u64::try_from(minutes.max(1)).unwrap_or(1) * 60;
        let end = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            if let Some(thermostat) = weak.upgrade() {
                thermostat.status.lock().target = before;
                thermostat.write(None);
            }
        });
        self.tasks.lock().push(end.abort_handle());
        let entity_id = self
            .climate
            .lock()
            .as_ref()
            .map(|handle| handle.entity_id().to_owned());
        json!({
            "entity_id": entity_id,
            "previous_target_temperature": before,
            "target_temperature": target,
            "minutes": minutes,
        })
    }

    fn call(&self, call: &EntityServiceCall) -> Result<(), ServiceError> {
        let mut status = self.status.lock();
        match call.service.as_str() {
            "turn_on" => status.mode = "heat",
            "turn_off" => status.mode = "off",
            "toggle" => status.mode = if status.mode == "off" { "heat" } else { "off" },
            "set_hvac_mode" | "set_temperature" => {
                if let Some(mode) = call.data.get("hvac_mode").and_then(Value::as_str) {
                    status.mode = match mode {
                        "off" => "off",
                        "heat" => "heat",
                        other => {
                            return Err(ServiceError::handler(format!(
                                "hvac mode {other} is not supported (off, heat)"
                            )));
                        }
                    };
                }
                if let Some(target) = call.data.get("temperature").and_then(Value::as_f64) {
                    status.target = clamp(target);
                }
            }
            other => {
                return Err(ServiceError::handler(format!(
                    "{other} is not supported by this thermostat"
                )));
            }
        }
        Ok(())
    }
}

fn features(names: &[&str]) -> u64 {
    let Some(spec) = catalog().domain("climate") else {
        return 0;
    };
    names
        .iter()
        .filter_map(|name| spec.feature_bit(name))
        .fold(0, |bits, bit| bits | bit)
}

/// The `climate` entity.
struct ClimateEntity(Weak<Thermostat>);

impl Entity for ClimateEntity {
    fn info(&self) -> EntityInfo {
        let mut info = EntityInfo::new("climate");
        let Some(thermostat) = self.0.upgrade() else {
            return info;
        };
        info.unique_id = Some(format!("{}-climate", thermostat.entry_id));
        info.has_entity_name = true;
        info.device_info = Some(thermostat.device());
        info.supported_features = features(&["TARGET_TEMPERATURE", "TURN_ON", "TURN_OFF"]);
        info.unit_of_measurement = Some("°C".to_owned());
        info.capabilities = json!({
            "hvac_modes": ["off", "heat"],
            "min_temp": MIN_TEMP,
            "max_temp": MAX_TEMP,
            "target_temp_step": 0.5,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        info
    }

    fn available(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn state(&self) -> Option<String> {
        let thermostat = self.0.upgrade()?;
        Some(thermostat.status.lock().mode.to_owned())
    }

    fn attributes(&self) -> Map<String, Value> {
        let Some(thermostat) = self.0.upgrade() else {
            return Map::new();
        };
        let status = thermostat.status.lock().clone();
        let action = match status.mode {
            "off" => "off",
            _ if status.room < status.target => "heating",
            _ => "idle",
        };
        json!({
            "current_temperature": status.room,
            "temperature": status.target,
            "hvac_action": action,
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        if let Some(thermostat) = self.0.upgrade() {
            *thermostat.climate.lock() = Some(handle);
        }
        Box::pin(async {})
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        if let Some(thermostat) = self.0.upgrade() {
            thermostat.climate.lock().take();
        }
        Box::pin(async {})
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            let thermostat = self
                .0
                .upgrade()
                .ok_or_else(|| ServiceError::handler("the thermostat is unloaded"))?;
            thermostat.call(&call)?;
            thermostat.write(Some(call.context));
            Ok(None)
        })
    }
}

/// The room temperature `sensor`.
struct RoomSensor(Weak<Thermostat>);

impl Entity for RoomSensor {
    fn info(&self) -> EntityInfo {
        let mut info = EntityInfo::new("sensor");
        let Some(thermostat) = self.0.upgrade() else {
            return info;
        };
        info.unique_id = Some(format!("{}-temperature", thermostat.entry_id));
        info.has_entity_name = true;
        info.name = Some("Temperature".to_owned());
        info.device_class = Some("temperature".to_owned());
        info.unit_of_measurement = Some("°C".to_owned());
        info.state_class = Some("measurement".to_owned());
        info.device_info = Some(thermostat.device());
        info
    }

    fn state(&self) -> Option<String> {
        let thermostat = self.0.upgrade()?;
        let room = thermostat.status.lock().room;
        Some(format!("{room:.1}"))
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        if let Some(thermostat) = self.0.upgrade() {
            *thermostat.sensor.lock() = Some(handle);
        }
        Box::pin(async {})
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        if let Some(thermostat) = self.0.upgrade() {
            thermostat.sensor.lock().take();
        }
        Box::pin(async {})
    }
}
