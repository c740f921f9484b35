//! `bench_lights`: N plain lights for the benchmarks, and a `flood` service that changes their
//! states as fast as the pipeline takes them, stamping each state with a sequence number and the
//! monotonic time it was written (comparable across processes on one machine).

use std::sync::Arc;

use futures::future::BoxFuture;
use homecore::data_entry_flow::FlowStepContext;
use homecore::entity::{Entity, EntityHandle, EntityInfo, EntityServiceCall};
use homecore::integration::{IntegrationType, Manifest};
use homecore::{
    ConfigEntry, Core, FlowError, FlowHandler, FlowStep, Integration, ServiceError, SetupError,
    SupportsResponse,
};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// The integration's domain.
pub const DOMAIN: &str = "bench_lights";

/// Lights per entry unless the entry says otherwise.
pub const DEFAULT_LIGHTS: usize = 100;

/// The most lights one entry may create.
pub const MAX_LIGHTS: usize = 1000;

/// The most state changes one `flood` call may make.
pub const MAX_FLOOD: u64 = 10_000_000;

/// Writes between two yields during a flood: often enough that the state listeners downstream
/// keep up (their queues are bounded), rarely enough not to cost throughput.
pub const FLOOD_YIELD_EVERY: u64 = 16;

/// Nanoseconds of the system's monotonic clock (the same clock in every process).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(time) => time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// The benchmark integration.
pub struct BenchLights {
    manifest: Manifest,
    lights: Arc<Mutex<Vec<Arc<BenchLight>>>>,
}

impl BenchLights {
    /// A fresh instance, for one core.
    pub fn new() -> Self {
        Self {
            manifest: Manifest {
                domain: DOMAIN.into(),
                name: "Benchmark lights".into(),
                version: semver::Version::new(1, 0, 0),
                integration_type: IntegrationType::Hub,
                config_flow: true,
                platforms: vec!["light".into()],
                dependencies: vec![],
                iot_class: Some("local_push".into()),
                single_config_entry: false,
            },
            lights: Arc::default(),
        }
    }
}

impl Default for BenchLights {
    fn default() -> Self {
        Self::new()
    }
}

/// One light.
struct BenchLight {
    index: usize,
    entry_id: String,
    state: Mutex<LightState>,
    handle: Mutex<Option<EntityHandle>>,
}

#[derive(Default)]
struct LightState {
    on: bool,
    seq: u64,
    sent_ns: u64,
}

impl BenchLight {
    fn write(&self, context: Option<homecore::Context>) {
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle {
            let _ = match context {
                Some(context) => handle.write_state_with_context(context),
                None => handle.write_state(),
            };
        }
    }
}

impl Entity for BenchLight {
    fn info(&self) -> EntityInfo {
        let mut info = EntityInfo::new("light");
        info.unique_id = Some(format!("{}-{}", self.entry_id, self.index));
        info.name = Some(format!("Bench light {}", self.index));
        info.capabilities = json!({"supported_color_modes": ["onoff"]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        info
    }

    fn state(&self) -> Option<String> {
        Some(if self.state.lock().on { "on" } else { "off" }.to_owned())
    }

    fn attributes(&self) -> Map<String, Value> {
        let state = self.state.lock();
        Map::from_iter([
            ("seq".to_owned(), json!(state.seq)),
            ("sent_ns".to_owned(), json!(state.sent_ns)),
        ])
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            {
                let mut state = self.state.lock();
                state.on = match call.service.as_str() {
                    "turn_on" => true,
                    "turn_off" => false,
                    "toggle" => !state.on,
                    other => {
                        return Err(ServiceError::handler(format!(
                            "{other} is not a light service"
                        )));
                    }
                };
                state.sent_ns = monotonic_ns();
            }
            self.write(Some(call.context));
            Ok(None)
        })
    }
}

/// The one-step config flow: `count` lights.
struct BenchFlow;

impl FlowHandler for BenchFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        _step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            let count = input
                .as_ref()
                .and_then(|input| input.get("count"))
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_LIGHTS as u64);
            Ok(FlowStep::create_entry(
                format!("{count} benchmark lights"),
                Map::from_iter([("count".to_owned(), json!(count))]),
            ))
        })
    }
}

impl Integration for BenchLights {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn setup<'a>(&'a self, core: &'a Core) -> BoxFuture<'a, Result<(), SetupError>> {
        let lights = Arc::clone(&self.lights);
        Box::pin(async move {
            core.services()
                .register(
                    DOMAIN,
                    "flood",
                    None,
                    SupportsResponse::Optional,
                    move |call| {
                        let lights = Arc::clone(&lights);
                        async move { flood(&lights, &call.data).await }
                    },
                )
                .map_err(|error| SetupError::Failed(error.to_string()))
        })
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(BenchFlow))
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let count = entry
                .data
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_LIGHTS as u64) as usize;
            if count == 0 || count > MAX_LIGHTS {
                return Err(SetupError::Failed(format!(
                    "count must be 1..={MAX_LIGHTS}, got {count}"
                )));
            }
            let platform = core
                .entities()
                .forward_entry_setup(entry, "light")
                .map_err(|error| SetupError::Failed(error.to_string()))?;
            for index in 0..count {
                let light = Arc::new(BenchLight {
                    index,
                    entry_id: entry.entry_id.clone(),
                    state: Mutex::default(),
                    handle: Mutex::new(None),
                });
                self.lights.lock().push(Arc::clone(&light));
                platform
                    .add_entity(light)
                    .await
                    .map_err(|error| SetupError::Failed(error.to_string()))?;
            }
            Ok(())
        })
    }

    /// Forgets the entry's lights (the core releases their platform afterwards).
    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.lights
            .lock()
            .retain(|light| light.entry_id != entry.entry_id);
        Box::pin(async { Ok(()) })
    }
}

/// `bench_lights.flood {count, interval_ms?, offset_us?}`: toggles the lights round-robin `count`
/// times (one per `interval_ms` when given, the first after `offset_us`, else as fast as it
/// can), each state carrying its sequence number and send time; answers the number written.
async fn flood(
    lights: &Mutex<Vec<Arc<BenchLight>>>,
    data: &Map<String, Value>,
) -> Result<Option<Value>, ServiceError> {
    let count = data
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(1000)
        .min(MAX_FLOOD);
    let lights: Vec<Arc<BenchLight>> = lights.lock().clone();
    if lights.is_empty() {
        return Err(ServiceError::handler("no benchmark lights are set up"));
    }
    // Paced (`interval_ms`): one change per interval, as a steady load; else as fast as it can.
    let mut pace = data
        .get("interval_ms")
        .and_then(Value::as_u64)
        .filter(|ms| *ms > 0)
        .map(|ms| {
            let mut ticks = tokio::time::interval(std::time::Duration::from_millis(ms));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
    // `offset_us`: when the first paced change is written (groups of one run spread their
    // changes over the interval instead of all writing at the same instant).
    if pace.is_some()
        && let Some(offset) = data.get("offset_us").and_then(Value::as_u64)
    {
        tokio::time::sleep(std::time::Duration::from_micros(offset.min(1_000_000))).await;
        if let Some(ticks) = pace.as_mut() {
            ticks.reset();
        }
    }
    for seq in 1..=count {
        if let Some(ticks) = pace.as_mut() {
            ticks.tick().await;
        }
        let light = &lights[(seq as usize - 1) % lights.len()];
        {
            let mut state = light.state.lock();
            state.on = !state.on;
            state.seq = seq;
            state.sent_ns = monotonic_ns();
        }
        light.write(None);
        if seq % FLOOD_YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(Some(json!({"written": count})))
}
