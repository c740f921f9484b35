//! The runtime against an in-memory main: start order, entries, flows, service and event
//! mirrors, service calls, store routing, ping and shutdown.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use homecore::data_entry_flow::FlowStepContext;
use homecore::integration::{Integration, Manifest};
use homecore::schema::Field;
use homecore::{
    ConfigEntry, Core, EntrySetupHandler, FieldType, FlowError, FlowHandler, FlowStep, Schema,
    SetupError, SupportsResponse,
};
use sandbox_proto::error::ErrorKind;
use sandbox_proto::test_util::duplex_transports;
use sandbox_proto::wire;
use sandbox_proto::{Channel, ChannelBuilder, ChannelConfig, json};
use sandbox_runtime::{Ending, Integrations, RuntimeConfig};
use serde_json::{Map, Value, json};

const HANG_GUARD: Duration = Duration::from_secs(30);

/// What main saw, in order.
#[derive(Default)]
struct Seen {
    log: Mutex<Vec<String>>,
    services: Mutex<Vec<(String, String)>>,
    events: Mutex<Vec<wire::FireEvent>>,
    saved: Mutex<Vec<(String, Value)>>,
    registered: Mutex<Vec<wire::RegisterEntity>>,
    states: Mutex<Vec<wire::StateChanged>>,
    /// When set, main holds each register_entity call until a permit is added.
    register_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// register_entity calls that reached main, held at the gate or not.
    register_arrived: std::sync::atomic::AtomicUsize,
}

impl Seen {
    fn push(&self, line: impl Into<String>) {
        self.log.lock().unwrap().push(line.into());
    }
}

/// A config flow: a form asking for a host, then create_entry at version 2 with options.
struct TestFlow;

impl FlowHandler for TestFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            match (step_id, input) {
                ("user", None) => Ok(FlowStep::form(
                    "user",
                    Some(Schema::new(vec![Field::required(
                        "host",
                        FieldType::string(),
                    )])),
                )),
                ("user", Some(input)) => {
                    let host = input["host"].as_str().unwrap_or_default().to_owned();
                    let unique_id = format!("testint-{host}");
                    flow.set_unique_id(Some(&unique_id), false)?;
                    Ok(FlowStep::CreateEntry {
                        title: format!("Test {host}"),
                        data: input,
                        options: json!({"interval": 30}).as_object().cloned().unwrap(),
                        version: 2,
                        minor_version: 1,
                        description: None,
                        description_placeholders: Default::default(),
                        entry_id: None,
                    })
                }
                _ => Err(FlowError::UnknownStep {
                    handler: "testint".into(),
                    step_id: step_id.into(),
                }),
            }
        })
    }
}

/// Entry setup: registers a service (before its domain is approved), saves to the store, and
/// fires events; fails while `fail` is set.
struct TestSetup {
    fail: Arc<AtomicBool>,
}

impl EntrySetupHandler for TestSetup {
    fn version(&self) -> (u32, u32) {
        (2, 1)
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(SetupError::Failed("the device refused".into()));
            }
            let schema = Schema::new(vec![Field::required(
                "level",
                FieldType::integer_range(0, 10),
            )]);
            let bus = core.bus().clone();
            core.services()
                .register(
                    "testint",
                    "status",
                    Some(schema),
                    SupportsResponse::Optional,
                    move |call| {
                        let bus = bus.clone();
                        async move {
                            let level = call.data.get("level").cloned().unwrap_or(Value::Null);
                            let data = json!({"level": level}).as_object().cloned().unwrap();
                            bus.fire(
                                "testint_status_read",
                                data.clone(),
                                Some(call.context.clone()),
                            )
                            .unwrap();
                            bus.fire("other_event", data, Some(call.context.clone()))
                                .unwrap();
                            Ok(Some(json!({"level": level, "ratio": 0.5})))
                        }
                    },
                )
                .map_err(|error| SetupError::Failed(error.to_string()))?;
            let store = core
                .stores()
                .store("testint.data", 1, 1)
                .map_err(|e| SetupError::Failed(e.to_string()))?;
            store
                .save(json!({"entry": entry.entry_id, "count": 1}))
                .await
                .map_err(|e| SetupError::Failed(e.to_string()))?;
            let platform = core
                .entities()
                .forward_entry_setup(entry, "light")
                .map_err(|e| SetupError::Failed(e.to_string()))?;
            let light = TestLight {
                on: Mutex::new(false),
                handle: Mutex::new(None),
            };
            platform
                .add_entity(Arc::new(light))
                .await
                .map_err(|e| SetupError::Failed(e.to_string()))?;
            Ok(())
        })
    }

    fn unload_entry<'a>(
        &'a self,
        core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            core.services().remove("testint", "status");
            core.entities()
                .unload_entry_platforms(&_entry.entry_id)
                .await;
            Ok(())
        })
    }
}

/// A light whose state lives in memory.
struct TestLight {
    on: Mutex<bool>,
    handle: Mutex<Option<homecore::entity::EntityHandle>>,
}

impl homecore::entity::Entity for TestLight {
    fn info(&self) -> homecore::entity::EntityInfo {
        let mut info = homecore::entity::EntityInfo::new("light");
        info.unique_id = Some("lamp-1".into());
        info.name = Some("Lamp".into());
        info.capabilities = json!({"supported_color_modes": ["onoff"]})
            .as_object()
            .cloned()
            .unwrap();
        info.device_info = Some(homecore::entity::EntityDeviceInfo {
            identifiers: vec![("testint".into(), "hub-1".into())],
            name: Some("Hub".into()),
            ..Default::default()
        });
        info
    }

    fn state(&self) -> Option<String> {
        Some(
            if *self.on.lock().unwrap() {
                "on"
            } else {
                "off"
            }
            .to_owned(),
        )
    }

    fn added_to_core(&self, handle: homecore::entity::EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock().unwrap() = Some(handle);
        Box::pin(async {})
    }

    fn call_service(
        &self,
        call: homecore::entity::EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, homecore::ServiceError>> {
        Box::pin(async move {
            *self.on.lock().unwrap() = call.service == "turn_on";
            let handle = self.handle.lock().unwrap().clone().unwrap();
            handle.write_state_with_context(call.context).unwrap();
            Ok(None)
        })
    }
}

/// The test integration: `TestFlow` as its config flow, `TestSetup` for its entries.
struct TestIntegration {
    manifest: Manifest,
    setup: TestSetup,
}

impl Integration for TestIntegration {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(TestFlow))
    }

    fn entry_version(&self) -> (u32, u32) {
        self.setup.version()
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        self.setup.setup_entry(core, entry)
    }

    fn unload_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.setup.unload_entry(core, entry)
    }

    fn translations(&self, _language: &str) -> Option<Map<String, Value>> {
        json!({"title": "Test integration", "config": {"step": {"user": {"title": "Connect"}}}})
            .as_object()
            .cloned()
    }
}

fn integrations(fail: Arc<AtomicBool>) -> Integrations {
    let manifest = Manifest {
        domain: "testint".into(),
        name: "Test".into(),
        version: semver::Version::new(1, 2, 0),
        integration_type: Default::default(),
        config_flow: true,
        platforms: vec!["light".into()],
        dependencies: vec![],
        iot_class: None,
        single_config_entry: false,
    };
    Integrations::new(vec![Arc::new(TestIntegration {
        manifest,
        setup: TestSetup { fail },
    })])
}

struct Harness {
    main: Channel,
    seen: Arc<Seen>,
    run: tokio::task::JoinHandle<Result<Ending, sandbox_runtime::RuntimeError>>,
    fail: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

fn main_builder(seen: &Arc<Seen>) -> ChannelBuilder {
    let s = seen.clone();
    let builder = ChannelBuilder::new(ChannelConfig::named("main")).on_call::<wire::Ready, _, _>(
        move |ready, _| {
            let s = s.clone();
            async move {
                for integration in &ready.integrations {
                    s.push(format!(
                        "announces {} {}",
                        integration.domain, integration.version
                    ));
                }
                s.push(format!("ready {}", ready.group));
                Ok(wire::ReadyAck {
                    protocol_version: ready.protocol_version,
                    features: ready.features,
                })
            }
        },
    );
    let s = seen.clone();
    let builder = builder.on_call::<wire::StoreLoad, _, _>(move |load, _| {
        let s = s.clone();
        async move {
            s.push(format!("store_load {}", load.key));
            Ok(wire::StoreLoadResult {
                envelope_json: None,
            })
        }
    });
    let s = seen.clone();
    let builder = builder.on_call::<wire::StoreSave, _, _>(move |save, _| {
        let s = s.clone();
        async move {
            let envelope: Value = serde_json::from_slice(&save.envelope_json).unwrap();
            s.push(format!("store_save {}", save.key));
            s.saved.lock().unwrap().push((save.key, envelope));
            Ok(wire::StoreSaveResult {})
        }
    });
    let s = seen.clone();
    let builder = builder.on_call::<wire::RegisterService, _, _>(move |register, _| {
        let s = s.clone();
        async move {
            s.push(format!(
                "register_service {}.{}",
                register.domain, register.service
            ));
            s.services
                .lock()
                .unwrap()
                .push((register.domain, register.service));
            Ok(wire::RegisterServiceResult {})
        }
    });
    let s = seen.clone();
    let builder = builder.on_call::<wire::UnregisterService, _, _>(move |unregister, _| {
        let s = s.clone();
        async move {
            s.push(format!(
                "unregister_service {}.{}",
                unregister.domain, unregister.service
            ));
            Ok(wire::UnregisterServiceResult {})
        }
    });
    let s = seen.clone();
    let builder = builder.on_push::<wire::FireEvent, _, _>(move |event, _| {
        let s = s.clone();
        async move { s.events.lock().unwrap().push(event) }
    });
    let s = seen.clone();
    let builder = builder.on_call::<wire::RegisterEntity, _, _>(move |register, _| {
        let s = s.clone();
        async move {
            s.register_arrived.fetch_add(1, Ordering::SeqCst);
            let gate = s.register_gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let entity_id = register.description.as_ref().unwrap().entity_id.clone();
            s.push(format!("register_entity {entity_id}"));
            s.registered.lock().unwrap().push(register);
            Ok(wire::RegisterEntityResult { entity_id })
        }
    });
    let s = seen.clone();
    let builder = builder.on_call::<wire::UnregisterEntity, _, _>(move |unregister, _| {
        let s = s.clone();
        async move {
            s.push(format!("unregister_entity {}", unregister.entity_id));
            Ok(wire::UnregisterEntityResult {})
        }
    });
    let s = seen.clone();
    builder.on_push_inline::<wire::StateChanged, _>(move |change| {
        s.push(format!(
            "state_changed {} {}",
            change.entity_id, change.state
        ));
        s.states.lock().unwrap().push(change);
    })
}

async fn start() -> Harness {
    let seen = Arc::new(Seen::default());
    let (main_transport, sandbox_transport) = duplex_transports();
    let main = main_builder(&seen).start(main_transport);
    let fail = Arc::new(AtomicBool::new(false));
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        group: "built-in".into(),
        config_dir: dir.path().to_owned(),
    };
    let run = tokio::spawn(sandbox_runtime::run(
        config,
        integrations(fail.clone()),
        sandbox_transport,
    ));
    let harness = Harness {
        main,
        seen,
        run,
        fail,
        _dir: dir,
    };
    wait_for(&harness.seen, |log| {
        log.iter().any(|line| line == "ready built-in")
    })
    .await;
    harness
}

async fn wait_for(seen: &Seen, condition: impl Fn(&[String]) -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !condition(&seen.log.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; main saw {:?}", seen.log.lock().unwrap()));
}

fn entry(entry_id: &str) -> wire::ConfigEntry {
    wire::ConfigEntry {
        entry_id: entry_id.into(),
        domain: "testint".into(),
        title: "Test".into(),
        data_json: json::to_bytes(&json!({"host": "10.0.0.2"})),
        source: "user".into(),
        version: 2,
        minor_version: 1,
        ..Default::default()
    }
}

async fn setup(main: &Channel, entry_id: &str) -> wire::EntrySetupResult {
    main.call_timeout(
        &wire::EntrySetup {
            entry: Some(entry(entry_id)),
            ..Default::default()
        },
        HANG_GUARD,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn ready_is_the_last_start_step_after_the_warm_load() {
    let harness = start().await;
    let log = harness.seen.log.lock().unwrap().clone();
    let ready = log
        .iter()
        .position(|line| line == "ready built-in")
        .unwrap();
    assert!(
        log.iter().any(|line| line == "announces testint 1.2.0"),
        "{log:?}"
    );
    let warm = log
        .iter()
        .position(|line| line == "store_load core.restore_state")
        .expect("restore state loaded");
    assert!(warm < ready, "{log:?}");
    // Right after ready, an entry setup finds its handler in place.
    let result = setup(&harness.main, "e1").await;
    assert_eq!(
        result.outcome,
        wire::SetupOutcome::Loaded as i32,
        "{result:?}"
    );
}

#[tokio::test]
async fn entry_setup_mirrors_early_services_routes_the_store_and_unload_releases() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    // The service was registered during setup, before the domain was approved: replayed.
    wait_for(&harness.seen, |log| {
        log.iter()
            .any(|line| line == "register_service testint.status")
    })
    .await;
    let saved = harness.seen.saved.lock().unwrap().clone();
    assert!(
        saved
            .iter()
            .any(|(key, envelope)| key == "testint.data" && envelope["data"]["count"] == 1),
        "{saved:?}"
    );
    let unloaded = harness
        .main
        .call_timeout(
            &wire::EntryUnload {
                entry_id: "e1".into(),
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    assert!(unloaded.ok);
    wait_for(&harness.seen, |log| {
        log.iter()
            .any(|line| line == "unregister_service testint.status")
    })
    .await;
    // Setting it up again works and mirrors the service again.
    assert_eq!(
        setup(&harness.main, "e1").await.outcome,
        wire::SetupOutcome::Loaded as i32
    );
    wait_for(&harness.seen, |log| {
        log.iter()
            .filter(|line| *line == "register_service testint.status")
            .count()
            == 2
    })
    .await;
}

#[tokio::test]
async fn a_failed_setup_leaves_nothing_behind_so_a_retry_works() {
    let harness = start().await;
    harness.fail.store(true, Ordering::SeqCst);
    let failed = setup(&harness.main, "e1").await;
    assert_eq!(failed.outcome, wire::SetupOutcome::SetupError as i32);
    assert_eq!(failed.reason, "the device refused");
    harness.fail.store(false, Ordering::SeqCst);
    let retried = setup(&harness.main, "e1").await;
    assert_eq!(
        retried.outcome,
        wire::SetupOutcome::Loaded as i32,
        "{retried:?}"
    );
}

#[tokio::test]
async fn an_unknown_integration_is_refused_clearly() {
    let harness = start().await;
    let mut unknown = entry("e2");
    unknown.domain = "nosuch".into();
    let result = harness
        .main
        .call_timeout(
            &wire::EntrySetup {
                entry: Some(unknown),
                ..Default::default()
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    assert_eq!(result.outcome, wire::SetupOutcome::SetupError as i32);
    assert_eq!(
        result.reason,
        "integration `nosuch` is not available in sandbox group `built-in`"
    );
}

#[tokio::test]
async fn a_config_flow_ends_in_create_entry_for_main_and_no_local_entry() {
    let harness = start().await;
    let init = wire::FlowInit {
        kind: wire::FlowKind::Config as i32,
        handler: "testint".into(),
        source: "user".into(),
        ..Default::default()
    };
    let form = harness.main.call_timeout(&init, HANG_GUARD).await.unwrap();
    assert_eq!(form.r#type, wire::FlowResultType::Form as i32);
    assert_eq!(form.step_id, "user");
    let schema: Value = serde_json::from_slice(&form.data_schema_json).unwrap();
    assert_eq!(schema["fields"][0]["name"], "host");

    // Invalid input is a validation error with its path; the flow stays.
    let bad = wire::FlowStep {
        flow_id: form.flow_id.clone(),
        user_input_json: json::to_bytes(&json!({})),
    };
    let error = harness
        .main
        .call_timeout(&bad, HANG_GUARD)
        .await
        .unwrap_err();
    let remote = error.remote().unwrap();
    assert_eq!(remote.kind, ErrorKind::Validation);
    assert_eq!(remote.field_errors[0].path, ["host"]);

    let step = wire::FlowStep {
        flow_id: form.flow_id.clone(),
        user_input_json: json::to_bytes(&json!({"host": "10.0.0.9"})),
    };
    let created = harness.main.call_timeout(&step, HANG_GUARD).await.unwrap();
    assert_eq!(
        created.r#type,
        wire::FlowResultType::CreateEntry as i32,
        "{created:?}"
    );
    assert_eq!(created.title, "Test 10.0.0.9");
    assert_eq!((created.version, created.minor_version), (2, 1));
    assert_eq!(
        json::from_bytes(&created.options_json).unwrap(),
        json!({"interval": 30})
    );
    assert_eq!(created.unique_id.as_deref(), Some("testint-10.0.0.9"));
    // The flow is over: stepping it again says so.
    let again = harness
        .main
        .call_timeout(&step, HANG_GUARD)
        .await
        .unwrap_err();
    assert_eq!(again.remote().unwrap().kind, ErrorKind::NotFound);
    // A second flow for the same device is not wedged on already_in_progress.
    let second = harness.main.call_timeout(&init, HANG_GUARD).await.unwrap();
    let step = wire::FlowStep {
        flow_id: second.flow_id,
        user_input_json: json::to_bytes(&json!({"host": "10.0.0.9"})),
    };
    assert_eq!(
        harness
            .main
            .call_timeout(&step, HANG_GUARD)
            .await
            .unwrap()
            .r#type,
        wire::FlowResultType::CreateEntry as i32
    );
}

#[tokio::test]
async fn aborting_a_flow_removes_it_and_aborting_twice_is_fine() {
    let harness = start().await;
    let init = wire::FlowInit {
        kind: wire::FlowKind::Config as i32,
        handler: "testint".into(),
        ..Default::default()
    };
    let form = harness.main.call_timeout(&init, HANG_GUARD).await.unwrap();
    let abort = wire::FlowAbort {
        flow_id: form.flow_id.clone(),
    };
    harness.main.call_timeout(&abort, HANG_GUARD).await.unwrap();
    harness.main.call_timeout(&abort, HANG_GUARD).await.unwrap();
    let step = wire::FlowStep {
        flow_id: form.flow_id,
        user_input_json: json::to_bytes(&json!({"host": "x"})),
    };
    assert_eq!(
        harness
            .main
            .call_timeout(&step, HANG_GUARD)
            .await
            .unwrap_err()
            .remote()
            .unwrap()
            .kind,
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn service_calls_return_responses_and_typed_errors() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    let call = wire::CallService {
        domain: "testint".into(),
        service: "status".into(),
        data_json: json::to_bytes(&json!({"level": 7})),
        return_response: true,
        ..Default::default()
    };
    let result = harness.main.call_timeout(&call, HANG_GUARD).await.unwrap();
    let response = json::from_bytes(&result.response_json.unwrap()).unwrap();
    assert!(
        response["level"].is_u64(),
        "the integer stays an integer: {response}"
    );
    assert!(response["ratio"].is_f64());

    let invalid = wire::CallService {
        data_json: json::to_bytes(&json!({"level": 99})),
        ..call.clone()
    };
    let error = harness
        .main
        .call_timeout(&invalid, HANG_GUARD)
        .await
        .unwrap_err();
    assert_eq!(error.remote().unwrap().kind, ErrorKind::Validation);
    assert_eq!(error.remote().unwrap().field_errors[0].path, ["level"]);

    let missing = wire::CallService {
        service: "nope".into(),
        ..call
    };
    let error = harness
        .main
        .call_timeout(&missing, HANG_GUARD)
        .await
        .unwrap_err();
    assert_eq!(error.remote().unwrap().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn a_joined_entity_call_answers_every_entity_on_its_own() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    wait_for(&harness.seen, |_| {
        last_state(&harness.seen, "light.lamp").is_some()
    })
    .await;
    let joined = wire::CallService {
        domain: "light".into(),
        service: "turn_on".into(),
        entity_ids: vec!["light.lamp".into(), "light.missing".into()],
        data_json: json::to_bytes(&json!({})),
        return_response: false,
        per_entity: true,
        ..Default::default()
    };
    let result = harness
        .main
        .call_timeout(&joined, HANG_GUARD)
        .await
        .unwrap();
    assert_eq!(result.outcomes.len(), 2);
    assert_eq!(result.outcomes[0].entity_id, "light.lamp");
    assert!(
        result.outcomes[0].error.is_none(),
        "{:?}",
        result.outcomes[0]
    );
    assert_eq!(result.outcomes[1].entity_id, "light.missing");
    let error = result.outcomes[1].error.clone().unwrap();
    assert_eq!(error.kind(), ErrorKind::Validation);
    assert!(error.message.contains("not loaded"), "{}", error.message);
    // The lamp's new state left before the reply.
    assert_eq!(
        last_state(&harness.seen, "light.lamp").as_deref(),
        Some("on")
    );
}

#[tokio::test]
async fn only_approved_domain_events_are_forwarded_with_only_their_context_id() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    // Fire events in the sandbox through a service the test integration does not have: use the
    // status service's context to check the id travels.
    let context_id = ulid::Ulid::new().to_string();
    let call = wire::CallService {
        domain: "testint".into(),
        service: "status".into(),
        data_json: json::to_bytes(&json!({"level": 1})),
        context_id: context_id.clone(),
        return_response: true,
        entity_ids: vec![],
        per_entity: false,
    };
    harness.main.call_timeout(&call, HANG_GUARD).await.unwrap();
    tokio::time::timeout(HANG_GUARD, async {
        while harness.seen.events.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    // Give any wrongly forwarded event (other_event, call_service) time to arrive too.
    harness
        .main
        .call_timeout(&wire::Ping { nonce: 1 }, HANG_GUARD)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = harness.seen.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, "testint_status_read");
    assert_eq!(events[0].context_id.as_deref(), Some(context_id.as_str()));
    assert_eq!(
        json::from_bytes(&events[0].data_json).unwrap(),
        json!({"level": 1})
    );
}

#[tokio::test]
async fn ping_reports_memory() {
    let harness = start().await;
    let pong = harness
        .main
        .call_timeout(&wire::Ping { nonce: 5 }, HANG_GUARD)
        .await
        .unwrap();
    assert_eq!(pong.nonce, 5);
    assert!(pong.rss_bytes > 0);
}

#[tokio::test]
async fn shutdown_unloads_replies_with_restore_state_and_closes() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    let result = harness
        .main
        .call_timeout(
            &wire::Shutdown {
                reason: "test".into(),
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    assert!(
        json::from_bytes(&result.restore_state_json)
            .unwrap()
            .is_array()
    );
    let ending = tokio::time::timeout(HANG_GUARD, harness.run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ending, Ending::Shutdown);
    // The core's final write went through main: restore state saved.
    assert!(
        harness
            .seen
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line == "store_save core.restore_state")
    );
    assert_eq!(
        tokio::time::timeout(HANG_GUARD, harness.main.closed())
            .await
            .unwrap(),
        sandbox_proto::CloseReason::Eof
    );
}

#[tokio::test]
async fn main_going_away_stops_the_runtime() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    harness.main.close().await;
    let ending = tokio::time::timeout(HANG_GUARD, harness.run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ending, Ending::MainGone);
}

#[tokio::test]
async fn main_refusing_ready_fails_the_start() {
    let (main_transport, sandbox_transport) = duplex_transports();
    let main = ChannelBuilder::new(ChannelConfig::named("main"))
        .on_call::<wire::StoreLoad, _, _>(|_, _| async {
            Ok(wire::StoreLoadResult {
                envelope_json: None,
            })
        })
        .on_call::<wire::Ready, _, _>(|_, _| async {
            Err(sandbox_proto::RemoteError::new(
                ErrorKind::IncompatibleVersion,
                "upgrade the sandbox",
            ))
        })
        .start(main_transport);
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        group: "g".into(),
        config_dir: dir.path().to_owned(),
    };
    let outcome = tokio::time::timeout(
        HANG_GUARD,
        sandbox_runtime::run(config, integrations(Arc::default()), sandbox_transport),
    )
    .await
    .unwrap();
    let error = outcome.unwrap_err();
    assert!(error.to_string().contains("upgrade the sandbox"), "{error}");
    main.close().await;
}

fn last_state(seen: &Seen, entity_id: &str) -> Option<String> {
    let registered = seen
        .registered
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.description.as_ref().unwrap().entity_id == entity_id)
        .map(|r| r.state.as_ref().unwrap().state.clone());
    let pushed = seen
        .states
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c.entity_id == entity_id)
        .map(|c| c.state.clone());
    pushed.or(registered)
}

#[tokio::test]
async fn entities_are_registered_with_description_device_and_state_then_follow_service_calls() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    wait_for(&harness.seen, |log| {
        log.iter().any(|line| line == "register_entity light.lamp")
    })
    .await;
    let registered = harness.seen.registered.lock().unwrap()[0].clone();
    let description = registered.description.unwrap();
    assert_eq!(description.domain, "light");
    assert_eq!(description.platform, "testint");
    assert_eq!(description.entry_id, "e1");
    assert_eq!(description.unique_id.as_deref(), Some("lamp-1"));
    let device = description.device.unwrap();
    assert_eq!(device.identifiers[0].second, "hub-1");
    assert_eq!(registered.state.unwrap().state, "off");

    let context_id = ulid::Ulid::new().to_string();
    let call = wire::CallService {
        domain: "light".into(),
        service: "turn_on".into(),
        entity_ids: vec!["light.lamp".into()],
        context_id: context_id.clone(),
        ..Default::default()
    };
    harness.main.call_timeout(&call, HANG_GUARD).await.unwrap();
    wait_for(&harness.seen, |log| {
        log.iter().any(|line| line == "state_changed light.lamp on")
    })
    .await;
    let change = harness.seen.states.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        change.context_id.as_deref(),
        Some(context_id.as_str()),
        "the call's context id comes back"
    );
    assert_eq!(
        harness
            .main
            .call_timeout(&wire::Ping { nonce: 1 }, HANG_GUARD)
            .await
            .unwrap()
            .entities,
        1
    );

    harness
        .main
        .call_timeout(
            &wire::EntryUnload {
                entry_id: "e1".into(),
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    wait_for(&harness.seen, |log| {
        log.iter()
            .any(|line| line == "unregister_entity light.lamp")
    })
    .await;
    assert_eq!(
        harness
            .main
            .call_timeout(&wire::Ping { nonce: 1 }, HANG_GUARD)
            .await
            .unwrap()
            .entities,
        0
    );
}

#[tokio::test]
async fn a_state_change_racing_the_registration_is_not_lost() {
    let harness = start().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *harness.seen.register_gate.lock().unwrap() = Some(gate.clone());
    setup(&harness.main, "e1").await;
    // The registration carrying "off" is in flight: main holds its reply.
    tokio::time::timeout(HANG_GUARD, async {
        while harness.seen.register_arrived.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(harness.seen.registered.lock().unwrap().len(), 0);
    // Meanwhile the light turns on (the call's reply flushes the states it wrote).
    let turn_on = wire::CallService {
        domain: "light".into(),
        service: "turn_on".into(),
        entity_ids: vec!["light.lamp".into()],
        ..Default::default()
    };
    harness
        .main
        .call_timeout(&turn_on, HANG_GUARD)
        .await
        .unwrap();
    gate.add_permits(10);
    wait_for(&harness.seen, |log| {
        log.iter().any(|line| line == "register_entity light.lamp")
    })
    .await;
    let registered = harness.seen.registered.lock().unwrap()[0].clone();
    assert_eq!(registered.state.unwrap().state, "off", "the race happened");
    wait_for(&harness.seen, |_| {
        last_state(&harness.seen, "light.lamp").as_deref() == Some("on")
    })
    .await;
}

#[tokio::test]
async fn a_removal_racing_the_registration_leaves_no_ghost() {
    let harness = start().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *harness.seen.register_gate.lock().unwrap() = Some(gate.clone());
    setup(&harness.main, "e1").await;
    // The entity is removed while main still holds its registration.
    harness
        .main
        .call_timeout(
            &wire::EntryUnload {
                entry_id: "e1".into(),
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    gate.add_permits(10);
    wait_for(&harness.seen, |log| {
        let registered = log
            .iter()
            .position(|line| line == "register_entity light.lamp");
        let unregistered = log
            .iter()
            .position(|line| line == "unregister_entity light.lamp");
        matches!((registered, unregistered), (Some(r), Some(u)) if r < u)
    })
    .await;
}

#[tokio::test]
async fn translations_are_answered_for_the_requested_domains() {
    let harness = start().await;
    let request = wire::GetTranslations {
        language: "en".into(),
        domains: vec!["testint".into(), "nosuch".into()],
    };
    let result = harness
        .main
        .call_timeout(&request, HANG_GUARD)
        .await
        .unwrap();
    let strings = json::from_bytes(&result.strings_json).unwrap();
    assert_eq!(strings["testint"]["title"], "Test integration");
    assert!(strings.get("nosuch").is_none(), "{strings}");
}

#[tokio::test]
async fn entity_queries_reach_the_entity_and_unknown_methods_are_refused() {
    let harness = start().await;
    setup(&harness.main, "e1").await;
    wait_for(&harness.seen, |log| {
        log.iter().any(|line| line == "register_entity light.lamp")
    })
    .await;
    let query = wire::EntityQuery {
        entity_id: "light.lamp".into(),
        method: "get_events".into(),
        ..Default::default()
    };
    let error = harness
        .main
        .call_timeout(&query, HANG_GUARD)
        .await
        .unwrap_err();
    assert_eq!(error.remote().unwrap().kind, ErrorKind::Validation);
    let missing = wire::EntityQuery {
        entity_id: "light.nope".into(),
        method: "get_events".into(),
        ..Default::default()
    };
    let error = harness
        .main
        .call_timeout(&missing, HANG_GUARD)
        .await
        .unwrap_err();
    assert!(error.remote().is_some(), "{error}");
}
