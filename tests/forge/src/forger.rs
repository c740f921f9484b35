//! The forging child: a sandbox stand-in that speaks the protocol just enough for main to route
//! an entry to it (`ready`, `ping`, entry setup and unload, `shutdown`), then forges the frames
//! of one [`ForgeScenario`] at main's trust gates and writes what main answered to a report.
//!
//! Entry setup always answers `loaded` and entry unload `ok`, so entries routed here load.
//!
//! Each scenario ends with an allowed control request proving the gate is not a blanket
//! refusal. A call's outcome is reported as `{"step", "ok": true, ...}` or
//! `{"step", "ok": false, "kind", "message"}`; a push, which has no answer, as
//! `{"step", "pushed": true}`; a scenario that could not run as `{"error"}`. The last line is
//! `{"done": true}`. The report is written whole (temp file, then rename).
//!
//! | scenario | forged frames |
//! |---|---|
//! | `foreign_entry` | `register_entity` for `--foreign-entry`, for an entry that does not exist, and for an entry of the group main did not load |
//! | `foreign_device` | `register_entity` whose device matches `--foreign-device` / `--foreign-connection` (the connection upper-cased); after the control, one listing the group's own device identifier and then `--foreign-device` |
//! | `unproxyable_domain` | `register_entity` of a `camera` and of an unknown domain for `--own-entry` |
//! | `service` | `register_service` of `persistent_notification.create`, `homeassistant.restart` and `--existing-service` |
//! | `event` | `fire_event` of core events (`homeassistant_stop`, `homeassistant_start`, `call_service`, `state_changed`, `service_registered`) and unowned ones (`zha_event`, `hue_event`); control `demo_forged_ok` |
//! | `store` | `store_save` with an over-long key, path-traversal keys, a value over 4 MiB; `store_load` of a traversal key |
//! | `context` | `state_changed` and `fire_event` with a context id main never issued, then a flood of distinct unknown ids; ends with `demo_flood_done` |
//! | `update_entry` | `update_entry` for `--foreign-entry` and for an entry that does not exist |
//! | `descriptions` | devices claiming another integration's identifier (directly and as `via_device`) or with a `javascript:` URL; an unknown device class; then, after the control entity, a re-description changing its domain, a push and an unregistration for an entity never registered, an unregistration of `--existing-service`, a service with an invalid name |
//! | `bounds` | an entity with attributes one byte over the bound, capabilities nested too deep, a name too long; after the control, a state push with 1 MiB of attributes, one with a 64 KiB context id, `update_entry` with deeply nested data, events with an over-long type and with data that is not an object, a store value nested too deep, one device merged into until it would hold more identifiers than the bound, a service `demo.big_reply` answering with 2 MiB |
//! | `entity_cap` | [`FORGE_ENTITY_CAP`] + 2 entities, then one unregistered and one more registered; then churn: entities of ever new unique ids registered and unregistered one at a time |
//! | `overload` | [`OVERLOAD_CALLS`] `store_load` calls at once, each awaited (bounded by [`OVERLOAD_ANSWER_GUARD`]); then a control call |
//! | `flow_results` | nothing at main's gates; answers `flow_init` as the flow's init data `{"forge": ...}` says: `deep_data` (a `create_entry` whose data nests too deep), `long_description` (a form with a 64 KiB description), `many_options` (a menu of 1,000 options), anything else a small `create_entry` |
//! | `budgets` | entities of [`heavy_entity`] registered and unregistered one by one until main refuses one (past the group's registry budget); then [`FAT_ENTITIES`] entities without unique ids, and a state push of [`fat_attributes`] for each (past the group's mirrored budget) |
//! | `before_ready` | `register_entity` and a state push *before* `ready`; the control after |

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sandbox_proto::wire::{
    self, EntrySetup, EntrySetupResult, EntryUnload, EntryUnloadResult, Ping, Pong, Ready,
    SetupOutcome, Shutdown, ShutdownResult,
};
use sandbox_proto::{
    CallError, Channel, ChannelBuilder, ChannelConfig, Transport, TransportUrl, version,
};
use serde_json::{Value, json};

/// Exit code after a normal stop.
pub const EXIT_OK: u8 = 0;
/// Exit code when the forger could not run (transport, runtime, handshake).
pub const EXIT_FAILED: u8 = 3;

/// How many distinct unknown context ids the `context` scenario floods main with: three times
/// main's context cache cap.
pub const CONTEXT_FLOOD: usize = 3 * sandbox_host::context_cache::MAX_CONTEXTS;

/// Calls the `overload` scenario sends at once: about four times main's
/// `MAX_HANDLERS_IN_FLIGHT`, so main must answer many of them `overloaded` while the rest wait.
pub const OVERLOAD_CALLS: usize = 4000;

/// How long the `overload` scenario waits for any one answer: a hang guard, far above what an
/// answer takes; a call still unanswered then is reported as missing.
pub const OVERLOAD_ANSWER_GUARD: Duration = Duration::from_secs(30);

/// The entity cap main sets on the group in the `entity_cap` check.
pub const FORGE_ENTITY_CAP: usize = 8;

/// One byte over the store server's value limit (4 MiB).
const OVER_VALUE_LIMIT: usize = 4 * 1024 * 1024 + 1;

/// How long the reply to `shutdown` may take to leave before the channel closes.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// What the child forges: one scenario per trust gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ForgeScenario {
    /// `register_entity` for entries of another group, or none.
    ForeignEntry,
    /// `register_entity` on a device owned outside the group.
    ForeignDevice,
    /// `register_entity` of domains that cannot be proxied.
    UnproxyableDomain,
    /// `register_service` outside the owned domains or over an existing service.
    Service,
    /// `fire_event` of core and unowned events.
    Event,
    /// Store requests over quota or with unsafe keys.
    Store,
    /// Context ids main never issued, and a flood of them.
    Context,
    /// `update_entry` for entries of another group, or none.
    UpdateEntry,
    /// Descriptions main must not take as they are: foreign identifiers, unsafe URLs, unknown
    /// device classes, domain changes, unknown entities, foreign services.
    Descriptions,
    /// Values over main's size and depth bounds.
    Bounds,
    /// More entities than the group's cap.
    EntityCap,
    /// Bridge requests before `ready`.
    BeforeReady,
    /// Far more calls at once than main runs or queues.
    Overload,
    /// Flow results over main's bounds (forged in answer to `flow_init`).
    FlowResults,
    /// The group's memory budgets: mirrored attributes, registry entries.
    Budgets,
}

impl ForgeScenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForeignEntry => "foreign_entry",
            Self::ForeignDevice => "foreign_device",
            Self::UnproxyableDomain => "unproxyable_domain",
            Self::Service => "service",
            Self::Event => "event",
            Self::Store => "store",
            Self::Context => "context",
            Self::UpdateEntry => "update_entry",
            Self::Descriptions => "descriptions",
            Self::Bounds => "bounds",
            Self::EntityCap => "entity_cap",
            Self::BeforeReady => "before_ready",
            Self::Overload => "overload",
            Self::FlowResults => "flow_results",
            Self::Budgets => "budgets",
        }
    }
}

/// Two strings given as one argument (`KIND=VALUE`, `DOMAIN.SERVICE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Before the separator.
    pub first: String,
    /// After it.
    pub second: String,
}

fn split(value: &str, separator: char) -> Result<Pair, String> {
    let (first, second) = value
        .split_once(separator)
        .ok_or_else(|| format!("{value:?} is not of the form A{separator}B"))?;
    Ok(Pair {
        first: first.to_owned(),
        second: second.to_owned(),
    })
}

fn kind_value(value: &str) -> Result<Pair, String> {
    split(value, '=')
}

fn domain_service(value: &str) -> Result<Pair, String> {
    split(value, '.')
}

/// The forger's command line; main's group manager adds `--name` and `--url`.
#[derive(Debug, Clone, Parser)]
#[command(about = "A sandbox stand-in forging frames at main's trust gates")]
pub struct ForgerArgs {
    /// The sandbox group this process serves (chosen by main).
    #[arg(long)]
    pub name: String,
    /// How to reach main: stdio:// (default) or unix:///absolute/path.
    #[arg(long, default_value = "stdio://")]
    pub url: String,
    /// What to forge, once main's bridge answers.
    #[arg(long, value_enum)]
    pub forge: ForgeScenario,
    /// Where to write one JSON line per forged attempt, then `{"done":true}`.
    #[arg(long)]
    pub forge_report: PathBuf,
    /// An entry main routed to this group (for the control requests).
    #[arg(long, default_value = "")]
    pub own_entry: String,
    /// An entry main did not route to this group.
    #[arg(long, default_value = "")]
    pub foreign_entry: String,
    /// An identifier of a device owned outside the group (`KIND=VALUE`).
    #[arg(long, value_parser = kind_value)]
    pub foreign_device: Option<Pair>,
    /// A connection of a device owned outside the group (`KIND=VALUE`).
    #[arg(long, value_parser = kind_value)]
    pub foreign_connection: Option<Pair>,
    /// A service main registered already (`DOMAIN.SERVICE`).
    #[arg(long, value_parser = domain_service)]
    pub existing_service: Option<Pair>,
}

/// Why the forger could not run.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The channel to main could not be opened.
    #[error("cannot open the channel to main: {0}")]
    Transport(#[from] sandbox_proto::TransportError),
    /// Main refused `ready`.
    #[error("main refused ready: {0}")]
    Ready(#[source] CallError),
    /// Main's bridge did not answer.
    #[error("main's bridge {0}")]
    Bridge(String),
    /// A push could not be sent.
    #[error("cannot push {step}: {source}")]
    Push {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: CallError,
    },
    /// The report could not be written.
    #[error("cannot write the forge report {path}: {source}")]
    Report {
        /// The report.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the forger to the end on its own single-threaded runtime; returns its exit code.
pub fn forger_main(args: ForgerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sandbox-forger: {}", ForgeError::Runtime(error));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run_forger(args)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            eprintln!("sandbox-forger: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The forger: connects to main, says `ready`, forges the scenario (writing the report) while
/// answering main's calls, and returns when main shuts it down or goes away.
pub async fn run_forger(args: ForgerArgs) -> Result<(), ForgeError> {
    let url = TransportUrl::parse(&args.url)?;
    let transport = Transport::open(&url).await?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let shutdown = Arc::clone(&stop);
    let channel = ChannelBuilder::new(ChannelConfig::named(args.name.clone()))
        .on_call::<Ping, _, _>(|ping, _| async move {
            Ok(Pong {
                nonce: ping.nonce,
                rss_bytes: 0,
                entities: 0,
            })
        })
        .on_call::<EntrySetup, _, _>(|_: EntrySetup, _| async move {
            Ok(EntrySetupResult {
                outcome: SetupOutcome::Loaded as i32,
                reason: String::new(),
                updated_entry: None,
            })
        })
        .on_call::<wire::CallService, _, _>(|call: wire::CallService, _| async move {
            // `big_reply` answers with more than main takes from a sandbox.
            let response_json = (call.service == "big_reply").then(|| {
                json!({"padding": "x".repeat(2 * 1024 * 1024)})
                    .to_string()
                    .into_bytes()
                    .into()
            });
            Ok(wire::CallServiceResult {
                response_json,
                outcomes: Vec::new(),
            })
        })
        .on_call::<wire::FlowInit, _, _>(|init: wire::FlowInit, _| async move {
            Ok(forged_flow_result(&init))
        })
        .on_call::<EntryUnload, _, _>(|_: EntryUnload, _| async move {
            Ok(EntryUnloadResult {
                ok: true,
                reason: String::new(),
            })
        })
        .on_call::<Shutdown, _, _>(move |_: Shutdown, _| {
            let stop = Arc::clone(&shutdown);
            async move {
                stop.notify_one();
                Ok(ShutdownResult {
                    restore_state_json: Default::default(),
                })
            }
        })
        .start(transport);
    let mut early = Vec::new();
    if args.forge == ForgeScenario::BeforeReady {
        let request = entity("light", "too_early", &args.own_entry, None);
        early.push(register(&channel, "register_before_ready", &request).await);
        early.push(pushed(
            "push_before_ready",
            channel
                .push(&state_change("light.too_early", "off", None))
                .await,
        )?);
    }
    let ready = Ready {
        protocol_version: version::PROTOCOL_VERSION.to_owned(),
        features: version::features(),
        group: args.name.clone(),
        runtime: "sandbox-forger".to_owned(),
        integrations: Vec::new(),
    };
    channel.call(&ready).await.map_err(ForgeError::Ready)?;

    let forging = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut lines = early;
            match forge_scenario(&channel, &args).await {
                Ok(more) => lines.extend(more),
                Err(error) => lines.push(json!({"error": error.to_string()})),
            }
            lines.push(json!({"done": true}));
            if let Err(error) = write_report(&args.forge_report, &lines) {
                eprintln!("sandbox-forger: {error}");
            }
        })
    };
    tokio::select! {
        () = stop.notified() => {
            channel.drain_inflight(SHUTDOWN_DRAIN).await;
            channel.close().await;
        }
        _ = channel.closed() => channel.close().await,
    }
    forging.abort();
    Ok(())
}

/// Entities the `budgets` scenario fattens: more than the group's mirrored budget holds.
pub const FAT_ENTITIES: usize = 40;

/// Registrations the `budgets` scenario tries at most before main refuses one.
pub const HEAVY_ATTEMPTS: usize = 1000;

/// Attributes as costly to hold as fit the per-entity bound: a list of zeros.
pub fn fat_attributes() -> Vec<u8> {
    let zeros = (sandbox_host::limits::MAX_STATE_ATTRIBUTES_BYTES - 32) / 2;
    format!("{{\"padding\":[{}0]}}", "0,".repeat(zeros - 1)).into_bytes()
}

/// An entity with capabilities as costly to hold as fit the bound, and a unique id of its own.
pub fn heavy_entity(entry_id: &str, index: usize) -> wire::RegisterEntity {
    let mut request = entity("light", &format!("heavy_{index}"), entry_id, None);
    let zeros = (sandbox_host::limits::MAX_CAPABILITIES_BYTES - 32) / 2;
    if let Some(description) = request.description.as_mut() {
        description.capabilities_json =
            format!("{{\"effect_list\":[{}0]}}", "0,".repeat(zeros - 1))
                .into_bytes()
                .into();
    }
    request
}

/// The answer to a `flow_init`, as its init data `{"forge": ...}` asks.
fn forged_flow_result(init: &wire::FlowInit) -> wire::FlowResult {
    use wire::FlowResultType as Type;
    let asked: Value = serde_json::from_slice(&init.data_json).unwrap_or(Value::Null);
    let mut result = wire::FlowResult {
        flow_id: "forged-flow".to_owned(),
        handler: init.handler.clone(),
        r#type: Type::CreateEntry as i32,
        title: "forged".to_owned(),
        data_json: json!({"host": "192.0.2.7"}).to_string().into_bytes().into(),
        version: 1,
        minor_version: 1,
        ..Default::default()
    };
    match asked["forge"].as_str() {
        Some("deep_data") => {
            result.data_json = format!("{{\"host\": {}}}", nested(64)).into_bytes().into();
        }
        Some("long_description") => {
            result.r#type = Type::Form as i32;
            result.step_id = "user".to_owned();
            result.description = "d".repeat(64 * 1024);
        }
        Some("many_options") => {
            result.r#type = Type::Menu as i32;
            result.step_id = "user".to_owned();
            result.menu_options = (0..1000)
                .map(|index| wire::MenuOption {
                    id: format!("option_{index}"),
                    label: String::new(),
                })
                .collect();
        }
        _ => {}
    }
    result
}

/// The outcome of one forged call, as a report line.
fn outcome<T>(step: &str, result: Result<T, CallError>, extra: impl FnOnce(&T) -> Value) -> Value {
    match result {
        Ok(reply) => {
            let mut line = json!({"step": step, "ok": true});
            if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra(&reply)) {
                line.extend(extra);
            }
            line
        }
        Err(error) => match error.remote() {
            Some(remote) => json!({
                "step": step,
                "ok": false,
                "kind": format!("{:?}", remote.kind),
                "message": remote.message,
            }),
            None => json!({
                "step": step,
                "ok": false,
                "kind": "transport",
                "message": error.to_string(),
            }),
        },
    }
}

fn pushed(step: &str, result: Result<(), CallError>) -> Result<Value, ForgeError> {
    result.map_err(|source| ForgeError::Push {
        step: step.to_owned(),
        source,
    })?;
    Ok(json!({"step": step, "pushed": true}))
}

fn string_pair(pair: &Pair) -> wire::StringPair {
    wire::StringPair {
        first: pair.first.clone(),
        second: pair.second.clone(),
    }
}

/// A `register_entity` of `domain.object_id` for `entry_id`.
fn entity(
    domain: &str,
    object_id: &str,
    entry_id: &str,
    device: Option<wire::DeviceInfo>,
) -> wire::RegisterEntity {
    wire::RegisterEntity {
        description: Some(wire::EntityDescription {
            entity_id: format!("{domain}.{object_id}"),
            entry_id: entry_id.to_owned(),
            platform: "demo".to_owned(),
            domain: domain.to_owned(),
            unique_id: Some(object_id.to_owned()),
            name: Some(object_id.replace('_', " ")),
            device,
            entity_registry_enabled_default: true,
            ..Default::default()
        }),
        state: Some(wire::EntityState {
            state: "on".to_owned(),
            attributes_json: b"{}".to_vec().into(),
            available: true,
        }),
        context_id: None,
    }
}

async fn register(channel: &Channel, step: &str, request: &wire::RegisterEntity) -> Value {
    outcome(
        step,
        channel.call(request).await,
        |reply| json!({"entity_id": reply.entity_id}),
    )
}

fn state_change(entity_id: &str, state: &str, context_id: Option<String>) -> wire::StateChanged {
    wire::StateChanged {
        entity_id: entity_id.to_owned(),
        state: state.to_owned(),
        attributes_json: b"{}".to_vec().into(),
        available: true,
        context_id,
    }
}

/// `depth` nested JSON arrays.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn envelope(key: &str, data: Value) -> Vec<u8> {
    json!({"version": 1, "minor_version": 1, "key": key, "data": data})
        .to_string()
        .into_bytes()
}

async fn save(channel: &Channel, step: &str, key: &str, envelope_json: Vec<u8>) -> Value {
    let request = wire::StoreSave {
        key: key.to_owned(),
        envelope_json: envelope_json.into(),
    };
    outcome(step, channel.call(&request).await, |_| Value::Null)
}

fn event(event_type: &str, context_id: Option<String>) -> wire::FireEvent {
    wire::FireEvent {
        event_type: event_type.to_owned(),
        data_json: json!({"forged": true}).to_string().into_bytes().into(),
        context_id,
    }
}

/// Runs the scenario; one report line per attempt.
async fn forge_scenario(channel: &Channel, args: &ForgerArgs) -> Result<Vec<Value>, ForgeError> {
    // Main installs its bridge before it acknowledges `ready`: everything forged from here
    // meets the gates.
    let own = args.own_entry.as_str();
    let foreign = args.foreign_entry.as_str();
    let mut lines = Vec::new();
    match args.forge {
        ForgeScenario::ForeignEntry => {
            let request = entity("light", "forged_foreign", foreign, None);
            lines.push(register(channel, "foreign_entry", &request).await);
            let request = entity("light", "forged_missing", "no-such-entry", None);
            lines.push(register(channel, "missing_entry", &request).await);
            let request = entity("light", "forged_idle", crate::hub::IDLE_ENTRY, None);
            lines.push(register(channel, "idle_entry", &request).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
        }
        ForgeScenario::ForeignDevice => {
            let device = |identifiers: Vec<wire::StringPair>, connections| wire::DeviceInfo {
                identifiers,
                connections,
                name: Some("forged device".to_owned()),
                ..Default::default()
            };
            if let Some(identifier) = &args.foreign_device {
                let forged = device(vec![string_pair(identifier)], Vec::new());
                let request = entity("light", "forged_by_identifier", own, Some(forged));
                lines.push(register(channel, "by_identifier", &request).await);
            }
            if let Some(connection) = &args.foreign_connection {
                // Main normalises connections: another spelling must match all the same.
                let upper = Pair {
                    first: connection.first.clone(),
                    second: connection.second.to_uppercase(),
                };
                let forged = device(Vec::new(), vec![string_pair(&upper)]);
                let request = entity("light", "forged_by_connection", own, Some(forged));
                lines.push(register(channel, "by_connection", &request).await);
            }
            let mine = device(
                vec![wire::StringPair {
                    first: "demo".to_owned(),
                    second: "sandbox-device".to_owned(),
                }],
                Vec::new(),
            );
            let request = entity("light", "control", own, Some(mine.clone()));
            lines.push(register(channel, "control", &request).await);
            if let Some(identifier) = &args.foreign_device {
                // The group's own device identifier first, then the foreign one: main must
                // look at every device the description matches, not only the first.
                let mut smuggled = mine;
                smuggled.identifiers.push(string_pair(identifier));
                let request = entity("light", "forged_smuggled", own, Some(smuggled));
                lines.push(register(channel, "smuggled", &request).await);
            }
        }
        ForgeScenario::UnproxyableDomain => {
            let request = entity("camera", "forged_camera", own, None);
            lines.push(register(channel, "camera", &request).await);
            let request = entity("no_such_domain", "forged_unknown", own, None);
            lines.push(register(channel, "unknown_domain", &request).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
        }
        ForgeScenario::Service => {
            let mut targets = vec![
                ("persistent_notification", "create"),
                ("homeassistant", "restart"),
            ];
            if let Some(existing) = &args.existing_service {
                targets.push((&existing.first, &existing.second));
            }
            targets.push(("demo", "forged_ok"));
            for (domain, service) in targets {
                let request = wire::RegisterService {
                    domain: domain.to_owned(),
                    service: service.to_owned(),
                    supports_response: wire::SupportsResponse::None as i32,
                    schema_json: Default::default(),
                };
                let step = format!("{domain}.{service}");
                lines.push(outcome(&step, channel.call(&request).await, |_| {
                    Value::Null
                }));
            }
        }
        ForgeScenario::Event => {
            for event_type in [
                "homeassistant_stop",
                "homeassistant_start",
                "call_service",
                "state_changed",
                "service_registered",
                "zha_event",
                "hue_event",
                "demo_forged_ok",
            ] {
                lines.push(pushed(
                    event_type,
                    channel.push(&event(event_type, None)).await,
                )?);
            }
        }
        ForgeScenario::Store => {
            let small = |key: &str| envelope(key, json!({"forged": true}));
            let long_key = "k".repeat(129);
            lines.push(save(channel, "long_key", &long_key, small(&long_key)).await);
            for (step, key) in [
                ("traversal", "../../etc/passwd"),
                ("absolute", "/etc/passwd"),
                ("dot_dot", ".."),
                ("hidden", ".hidden"),
                ("empty", ""),
            ] {
                lines.push(save(channel, step, key, small(key)).await);
            }
            let padding = "x".repeat(OVER_VALUE_LIMIT);
            lines.push(save(channel, "too_large", "big", envelope("big", json!(padding))).await);
            let load = wire::StoreLoad {
                key: "../../etc/passwd".to_owned(),
            };
            lines.push(outcome("load_traversal", channel.call(&load).await, |_| {
                Value::Null
            }));
            lines.push(save(channel, "control", "forged_ok", small("forged_ok")).await);
        }
        ForgeScenario::Context => {
            let request = entity("light", "context_probe", own, None);
            lines.push(register(channel, "control", &request).await);
            let forged = ulid::Ulid::new().to_string();
            let change = |state: &str, context_id: String| {
                state_change("light.context_probe", state, Some(context_id))
            };
            lines.push(pushed(
                "state_changed",
                channel.push(&change("off", forged.clone())).await,
            )?);
            lines.push(pushed(
                "demo_forged_context",
                channel
                    .push(&event("demo_forged_context", Some(forged.clone())))
                    .await,
            )?);
            lines.push(json!({"step": "forged_context", "context_id": forged}));
            for _ in 0..CONTEXT_FLOOD {
                let context_id = ulid::Ulid::new().to_string();
                pushed("the flood", channel.push(&change("off", context_id)).await)?;
            }
            lines.push(json!({"step": "flood", "pushed": CONTEXT_FLOOD}));
            lines.push(pushed(
                "demo_flood_done",
                channel.push(&event("demo_flood_done", None)).await,
            )?);
        }
        ForgeScenario::UpdateEntry => {
            let update = |entry_id: &str| wire::UpdateEntry {
                entry_id: entry_id.to_owned(),
                title: Some("renamed by the sandbox".to_owned()),
                data_json: Some(
                    json!({"host": "evil.example"})
                        .to_string()
                        .into_bytes()
                        .into(),
                ),
                options_json: None,
                unique_id: Some("stolen".to_owned()),
            };
            for (step, entry_id) in [
                ("foreign_entry", foreign),
                ("missing_entry", "no-such-entry"),
                ("control", own),
            ] {
                lines.push(outcome(step, channel.call(&update(entry_id)).await, |_| {
                    Value::Null
                }));
            }
        }
        ForgeScenario::Descriptions => {
            let device = |identifiers: Vec<(&str, &str)>| wire::DeviceInfo {
                identifiers: identifiers
                    .into_iter()
                    .map(|(first, second)| wire::StringPair {
                        first: first.to_owned(),
                        second: second.to_owned(),
                    })
                    .collect(),
                name: Some("claimed".to_owned()),
                manufacturer: Some("forger".to_owned()),
                ..Default::default()
            };
            // Another integration's device, before that integration ever set up.
            let claim = device(vec![("hue", "bridge-1")]);
            let request = entity("light", "claims_hue", own, Some(claim));
            lines.push(register(channel, "claim_identifier", &request).await);
            let mut via = device(vec![("demo", "lamp-1")]);
            via.via_device = Some(wire::StringPair {
                first: "hue".to_owned(),
                second: "bridge-1".to_owned(),
            });
            let request = entity("light", "via_hue", own, Some(via));
            lines.push(register(channel, "via_foreign", &request).await);
            let mut script = device(vec![("demo", "lamp-2")]);
            script.configuration_url = Some("javascript:alert(document.cookie)".to_owned());
            let request = entity("light", "scripted", own, Some(script));
            lines.push(register(channel, "javascript_url", &request).await);
            let mut classed = entity("binary_sensor", "classed", own, None);
            if let Some(description) = classed.description.as_mut() {
                description.device_class = Some("nonsense".to_owned());
            }
            lines.push(register(channel, "unknown_device_class", &classed).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
            let mut switched = entity("light", "control", own, None);
            if let Some(description) = switched.description.as_mut() {
                description.domain = "switch".to_owned();
            }
            lines.push(register(channel, "change_domain", &switched).await);
            lines.push(pushed(
                "unknown_state",
                channel
                    .push(&state_change("light.nobody", "on", None))
                    .await,
            )?);
            let request = wire::UnregisterEntity {
                entity_id: "light.nobody".to_owned(),
            };
            lines.push(outcome(
                "unregister_unknown",
                channel.call(&request).await,
                |_| Value::Null,
            ));
            if let Some(existing) = &args.existing_service {
                let request = wire::UnregisterService {
                    domain: existing.first.clone(),
                    service: existing.second.clone(),
                };
                lines.push(outcome(
                    "unregister_foreign_service",
                    channel.call(&request).await,
                    |_| Value::Null,
                ));
            }
            let request = wire::RegisterService {
                domain: "demo".to_owned(),
                service: "Not A Slug".to_owned(),
                supports_response: wire::SupportsResponse::None as i32,
                schema_json: Default::default(),
            };
            lines.push(outcome(
                "invalid_service_name",
                channel.call(&request).await,
                |_| Value::Null,
            ));
        }
        ForgeScenario::Bounds => {
            let padding = "x".repeat(sandbox_host::limits::MAX_STATE_ATTRIBUTES_BYTES);
            let mut huge = entity("light", "huge", own, None);
            if let Some(state) = huge.state.as_mut() {
                state.attributes_json = json!({"padding": padding}).to_string().into_bytes().into();
            }
            lines.push(register(channel, "huge_attributes", &huge).await);
            let mut deep = entity("light", "deep", own, None);
            if let Some(description) = deep.description.as_mut() {
                description.capabilities_json = format!(
                    "{{\"effect_list\": {}}}",
                    nested(sandbox_host::limits::MAX_JSON_DEPTH)
                )
                .into_bytes()
                .into();
            }
            lines.push(register(channel, "deep_capabilities", &deep).await);
            let mut named = entity("light", "named", own, None);
            if let Some(description) = named.description.as_mut() {
                description.name = Some("n".repeat(sandbox_host::limits::MAX_TEXT_BYTES + 1));
            }
            lines.push(register(channel, "long_name", &named).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
            let mut big_push = state_change("light.control", "off", None);
            big_push.attributes_json = json!({"padding": "x".repeat(1024 * 1024)})
                .to_string()
                .into_bytes()
                .into();
            lines.push(pushed("huge_state_push", channel.push(&big_push).await)?);
            lines.push(pushed(
                "long_context_id",
                channel
                    .push(&state_change(
                        "light.control",
                        "off",
                        Some("c".repeat(64 * 1024)),
                    ))
                    .await,
            )?);
            let update = wire::UpdateEntry {
                entry_id: own.to_owned(),
                title: None,
                data_json: Some(
                    format!("{{\"host\": {}}}", nested(5_000))
                        .into_bytes()
                        .into(),
                ),
                options_json: None,
                unique_id: None,
            };
            lines.push(outcome(
                "deep_entry_data",
                channel.call(&update).await,
                |_| Value::Null,
            ));
            let long_type = format!("demo_{}", "e".repeat(100));
            lines.push(pushed(
                "long_event_type",
                channel.push(&event(&long_type, None)).await,
            )?);
            let mut listed = event("demo_listed", None);
            listed.data_json = b"[1, 2, 3]".to_vec().into();
            lines.push(pushed(
                "event_data_not_an_object",
                channel.push(&listed).await,
            )?);
            let deep_value = envelope(
                "deep",
                serde_json::from_str(&nested(64)).unwrap_or(Value::Null),
            );
            lines.push(save(channel, "deep_store_value", "deep", deep_value).await);
            let request = wire::RegisterService {
                domain: "demo".to_owned(),
                service: "big_reply".to_owned(),
                supports_response: wire::SupportsResponse::Only as i32,
                schema_json: Default::default(),
            };
            lines.push(outcome(
                "big_reply_service",
                channel.call(&request).await,
                |_| Value::Null,
            ));
            // One device merged into by ever more descriptions, each adding an identifier.
            for index in 0..=sandbox_host::limits::MAX_DEVICE_KEYS {
                let grower = wire::DeviceInfo {
                    identifiers: [
                        ("demo", "hub".to_owned()),
                        ("demo", format!("part-{index}")),
                    ]
                    .into_iter()
                    .map(|(first, second)| wire::StringPair {
                        first: first.to_owned(),
                        second,
                    })
                    .collect(),
                    ..Default::default()
                };
                let request = entity("light", &format!("grow_{index}"), own, Some(grower));
                lines.push(register(channel, &format!("grow_{index}"), &request).await);
            }
            lines.push(pushed(
                "demo_bounds_done",
                channel.push(&event("demo_bounds_done", None)).await,
            )?);
        }
        ForgeScenario::EntityCap => {
            for index in 0..FORGE_ENTITY_CAP + 2 {
                let request = entity("light", &format!("capped_{index}"), own, None);
                lines.push(register(channel, &format!("entity_{index}"), &request).await);
            }
            let request = wire::UnregisterEntity {
                entity_id: "light.capped_0".to_owned(),
            };
            lines.push(outcome(
                "unregister_one",
                channel.call(&request).await,
                |_| Value::Null,
            ));
            let request = entity("light", "after_unregister", own, None);
            lines.push(register(channel, "after_unregister", &request).await);
            // Churn: ever new unique ids, never more than the cap alive at once; each leaves
            // an entity registry entry on main.
            let request = wire::UnregisterEntity {
                entity_id: "light.capped_1".to_owned(),
            };
            lines.push(outcome(
                "unregister_two",
                channel.call(&request).await,
                |_| Value::Null,
            ));
            for index in 0..FORGE_ENTITY_CAP {
                let request = entity("light", &format!("churn_{index}"), own, None);
                let line = register(channel, &format!("churn_{index}"), &request).await;
                let registered = line["ok"] == true;
                lines.push(line);
                if registered {
                    let request = wire::UnregisterEntity {
                        entity_id: format!("light.churn_{index}"),
                    };
                    lines.push(outcome(
                        &format!("unchurn_{index}"),
                        channel.call(&request).await,
                        |_| Value::Null,
                    ));
                }
            }
        }
        ForgeScenario::Overload => {
            let mut calls = tokio::task::JoinSet::new();
            for index in 0..OVERLOAD_CALLS {
                let channel = channel.clone();
                calls.spawn(async move {
                    let request = wire::StoreLoad {
                        key: format!("overload-{index}"),
                    };
                    channel.call_timeout(&request, OVERLOAD_ANSWER_GUARD).await
                });
            }
            let (mut ok, mut overloaded, mut other) = (0usize, 0usize, Vec::new());
            while let Some(answer) = calls.join_next().await {
                match answer {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(error))
                        if error.remote().is_some_and(|remote| {
                            remote.kind == sandbox_proto::error::ErrorKind::Overloaded
                        }) =>
                    {
                        overloaded += 1
                    }
                    Ok(Err(error)) => other.push(error.to_string()),
                    Err(join) => other.push(join.to_string()),
                }
            }
            other.truncate(8);
            lines.push(json!({
                "step": "overload",
                "calls": OVERLOAD_CALLS,
                "ok": ok,
                "overloaded": overloaded,
                "other": other,
            }));
            let request = wire::StoreLoad {
                key: "after-overload".to_owned(),
            };
            lines.push(outcome("control", channel.call(&request).await, |_| {
                Value::Null
            }));
        }
        ForgeScenario::Budgets => {
            // Registry first: each heavy entity is unregistered at once, so only the registry
            // budget fills; then the mirrored budget, with entities that have no registry entry.
            let mut registered = 0;
            for index in 0..HEAVY_ATTEMPTS {
                let line = register(
                    channel,
                    &format!("heavy_{index}"),
                    &heavy_entity(own, index),
                )
                .await;
                if line["ok"] != true {
                    lines.push(json!({"step": "heavy_refused", "index": index, "line": line}));
                    break;
                }
                registered += 1;
                let request = wire::UnregisterEntity {
                    entity_id: format!("light.heavy_{index}"),
                };
                let unregistered =
                    outcome("unheavy", channel.call(&request).await, |_| Value::Null);
                if unregistered["ok"] != true {
                    lines.push(unregistered);
                    break;
                }
            }
            lines.push(json!({"step": "heavy", "registered": registered}));
            for index in 0..FAT_ENTITIES {
                let mut request = entity("light", &format!("fat_{index}"), own, None);
                if let Some(description) = request.description.as_mut() {
                    // No registry entry: only the mirrored budget is at stake here.
                    description.unique_id = None;
                }
                lines.push(register(channel, &format!("fat_{index}"), &request).await);
            }
            for index in 0..FAT_ENTITIES {
                let mut change = state_change(&format!("light.fat_{index}"), "off", None);
                change.attributes_json = fat_attributes().into();
                lines.push(pushed(
                    &format!("fatten_{index}"),
                    channel.push(&change).await,
                )?);
            }
            lines.push(pushed(
                "demo_budgets_done",
                channel.push(&event("demo_budgets_done", None)).await,
            )?);
        }
        // Everything is forged in answer to main's `flow_init` calls.
        ForgeScenario::FlowResults => {}
        ForgeScenario::BeforeReady => {
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
        }
    }
    Ok(lines)
}

fn write_report(path: &Path, lines: &[Value]) -> Result<(), ForgeError> {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let temp = path.with_extension("partial");
    let failed = |source| ForgeError::Report {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&temp, text).map_err(failed)?;
    std::fs::rename(&temp, path).map_err(failed)?;
    Ok(())
}
