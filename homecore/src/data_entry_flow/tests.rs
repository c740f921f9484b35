//! Tests for the flow engine, driven through config and options flows of a test integration.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::config_entries::{HandlerTable, SOURCE_USER};
use crate::core::CoreConfig;
use crate::schema::{Field, FieldType};
use crate::store::MemoryStoreBackend;

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A flow exercising every result type: user -> menu -> (form | external | progress).
struct TourFlow {
    removed: Arc<AtomicUsize>,
}

fn connection_schema() -> Schema {
    Schema::new(vec![
        Field::required("host", FieldType::string()),
        Field::required(
            "advanced",
            FieldType::section(
                Schema::new(vec![
                    Field::optional("port", FieldType::integer_range(1, 65535))
                        .with_default(json!(80)),
                ]),
                true,
            ),
        ),
    ])
}

impl FlowHandler for TourFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            match (step_id, input) {
                ("user", _) => Ok(FlowStep::menu(
                    "user",
                    &[
                        ("manual", "Enter by hand"),
                        ("cloud", "Sign in"),
                        ("scan", "Scan"),
                    ],
                )),
                ("manual", None) => Ok(FlowStep::form("manual", Some(connection_schema()))),
                ("manual", Some(input)) => {
                    if input["host"] == "explode" {
                        panic!("the manual step panics on purpose");
                    }
                    if input["host"] == "unreachable" {
                        return Ok(FlowStep::form_with_errors(
                            "manual",
                            Some(connection_schema()),
                            &[("base", "cannot_connect")],
                        ));
                    }
                    let host = input["host"].as_str().unwrap_or_default().to_owned();
                    flow.set_unique_id(Some(&host), true)?;
                    flow.abort_if_unique_id_configured(None, false).await?;
                    let mut step = FlowStep::create_entry(host, input);
                    if let FlowStep::CreateEntry {
                        version,
                        minor_version,
                        options,
                        ..
                    } = &mut step
                    {
                        *version = 2;
                        *minor_version = 3;
                        options.insert("poll".into(), json!(30));
                    }
                    Ok(step)
                }
                ("cloud", None) => Ok(FlowStep::ExternalStep {
                    step_id: "cloud".into(),
                    url: "https://example.invalid/auth".into(),
                    description_placeholders: Placeholders::new(),
                }),
                ("cloud", Some(_)) => Ok(FlowStep::ExternalStepDone {
                    step_id: "cloud_done".into(),
                }),
                ("cloud_done", _) => Err(FlowError::abort("cloud_finished")),
                ("scan", _) => Ok(FlowStep::ShowProgress {
                    step_id: "scan_check".into(),
                    progress_action: "scanning".into(),
                    description_placeholders: Placeholders::new(),
                }),
                ("scan_check", Some(_)) => Ok(FlowStep::ShowProgressDone {
                    step_id: "scan_result".into(),
                }),
                ("scan_check", None) => Ok(FlowStep::form("oops", None)),
                ("scan_result", _) => Ok(FlowStep::abort("no_devices_found")),
                ("claim", Some(input)) => {
                    flow.set_unique_id(input["host"].as_str(), true)?;
                    Ok(FlowStep::form("manual", Some(connection_schema())))
                }
                ("fail", _) => Err(FlowError::Handler("exploded".into())),
                ("panic", _) => panic!("the first step panics on purpose"),
                (other, _) => Err(FlowError::UnknownStep {
                    handler: flow.handler().into(),
                    step_id: other.into(),
                }),
            }
        })
    }

    fn on_remove(&mut self) -> BoxFuture<'_, ()> {
        self.removed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

async fn core_with_tour() -> (Core, Arc<AtomicUsize>) {
    let removed = Arc::new(AtomicUsize::new(0));
    let table = HandlerTable::new();
    let counter = Arc::clone(&removed);
    table.register_config_flow("tour", move || {
        Box::new(TourFlow {
            removed: Arc::clone(&counter),
        })
    });
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.config_entries().set_handlers(Arc::new(table));
    (core, removed)
}

fn user() -> FlowContext {
    FlowContext::new(SOURCE_USER)
}

#[tokio::test]
async fn menu_form_with_section_and_create_entry() {
    let (core, removed) = core_with_tour().await;
    let flows = core.config_entries().flow();
    let menu = flows.init("tour", user(), None).await.unwrap();
    let FlowStep::Menu { menu_options, .. } = &menu.step else {
        panic!("{menu:?}")
    };
    assert_eq!(
        menu_options
            .iter()
            .map(|o| o.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["manual", "cloud", "scan"]
    );
    assert_eq!(menu_options[1].label.as_deref(), Some("Sign in"));
    assert_eq!(flows.progress().len(), 1);

    // Asked again without a choice, the menu shows itself again (a front end showing the
    // flow's current step); a choice it does not offer is refused.
    let shown_again = flows.configure(&menu.flow_id, None).await.unwrap();
    assert_eq!(shown_again, menu);
    let err = flows
        .configure(&menu.flow_id, Some(obj(json!({"next_step_id": "nope"}))))
        .await
        .unwrap_err();
    assert!(matches!(err, FlowError::InvalidData(_)));
    let form = flows
        .configure(&menu.flow_id, Some(obj(json!({"next_step_id": "manual"}))))
        .await
        .unwrap();
    assert_eq!(form.step.step_id(), Some("manual"));

    // Schema errors come back with their path and leave the flow where it was.
    let err = flows
        .configure(
            &form.flow_id,
            Some(obj(json!({"host": "h", "advanced": {"port": 0}}))),
        )
        .await
        .unwrap_err();
    let FlowError::InvalidData(errors) = err else {
        panic!()
    };
    assert_eq!(errors.errors[0].path_strings(), vec!["advanced", "port"]);

    let again = flows
        .configure(&form.flow_id, Some(obj(json!({"host": "unreachable"}))))
        .await
        .unwrap();
    let FlowStep::Form { errors, .. } = &again.step else {
        panic!()
    };
    assert_eq!(errors["base"], "cannot_connect");

    let done = flows
        .configure(&form.flow_id, Some(obj(json!({"host": "10.0.0.1"}))))
        .await
        .unwrap();
    let FlowStep::CreateEntry {
        entry_id,
        version,
        minor_version,
        data,
        ..
    } = &done.step
    else {
        panic!("{done:?}")
    };
    assert_eq!((*version, *minor_version), (2, 3));
    assert_eq!(
        data["advanced"],
        json!({"port": 80}),
        "section defaults applied"
    );
    let entry = core
        .config_entries()
        .entry(entry_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(entry.unique_id.as_deref(), Some("10.0.0.1"));
    assert_eq!(entry.options["poll"], 30);
    assert_eq!((entry.version, entry.minor_version), (2, 3));
    assert!(flows.progress().is_empty());
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(matches!(
        flows.configure(&form.flow_id, None).await,
        Err(FlowError::UnknownFlow(_))
    ));

    // The same unique id again is already configured.
    let menu = flows.init("tour", user(), None).await.unwrap();
    flows
        .configure(&menu.flow_id, Some(obj(json!({"next_step_id": "manual"}))))
        .await
        .unwrap();
    let result = flows
        .configure(&menu.flow_id, Some(obj(json!({"host": "10.0.0.1"}))))
        .await
        .unwrap();
    assert_eq!(result.step, FlowStep::abort("already_configured"));
}

#[tokio::test]
async fn unique_id_in_progress_aborts_the_second_flow() {
    let (core, _removed) = core_with_tour().await;
    let flows = core.config_entries().flow();
    let first = flows
        .init(
            "tour",
            FlowContext::new("claim"),
            Some(obj(json!({"host": "dup"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        flows.progress()[0].context.unique_id.as_deref(),
        Some("dup")
    );
    let second = flows.init("tour", user(), None).await.unwrap();
    flows
        .configure(
            &second.flow_id,
            Some(obj(json!({"next_step_id": "manual"}))),
        )
        .await
        .unwrap();
    let result = flows
        .configure(&second.flow_id, Some(obj(json!({"host": "dup"}))))
        .await
        .unwrap();
    assert_eq!(result.step, FlowStep::abort("already_in_progress"));
    assert_eq!(flows.progress().len(), 1);
    // The first flow finishes normally.
    let done = flows
        .configure(&first.flow_id, Some(obj(json!({"host": "dup"}))))
        .await
        .unwrap();
    assert!(matches!(done.step, FlowStep::CreateEntry { .. }));
    assert_eq!(core.config_entries().entries(Some("tour")).len(), 1);
}

#[tokio::test]
async fn external_and_progress_steps_fire_progressed_and_enforce_transitions() {
    let (core, _removed) = core_with_tour().await;
    let mut progressed = core
        .bus()
        .subscribe(crate::event::EVENT_DATA_ENTRY_FLOW_PROGRESSED)
        .unwrap();
    let flows = core.config_entries().flow();

    let menu = flows.init("tour", user(), None).await.unwrap();
    let external = flows
        .configure(&menu.flow_id, Some(obj(json!({"next_step_id": "cloud"}))))
        .await
        .unwrap();
    assert!(matches!(external.step, FlowStep::ExternalStep { .. }));
    let done = flows
        .configure(&menu.flow_id, Some(obj(json!({"code": "abc"}))))
        .await
        .unwrap();
    assert_eq!(
        done.step,
        FlowStep::ExternalStepDone {
            step_id: "cloud_done".into()
        }
    );
    assert_eq!(
        progressed.recv().await.unwrap().data["flow_id"],
        json!(menu.flow_id)
    );
    let end = flows.configure(&menu.flow_id, None).await.unwrap();
    assert_eq!(end.step, FlowStep::abort("cloud_finished"));

    let menu = flows.init("tour", user(), None).await.unwrap();
    let progress = flows
        .configure(&menu.flow_id, Some(obj(json!({"next_step_id": "scan"}))))
        .await
        .unwrap();
    assert!(matches!(progress.step, FlowStep::ShowProgress { .. }));
    // A progress step may not jump to a form.
    assert!(matches!(
        flows.configure(&menu.flow_id, None).await,
        Err(FlowError::InvalidTransition(_))
    ));
    let done = flows
        .configure(&menu.flow_id, Some(Map::new()))
        .await
        .unwrap();
    assert_eq!(
        done.step,
        FlowStep::ShowProgressDone {
            step_id: "scan_result".into()
        }
    );
    progressed.recv().await.unwrap();
    assert_eq!(
        flows.configure(&menu.flow_id, None).await.unwrap().step,
        FlowStep::abort("no_devices_found")
    );
}

#[tokio::test]
async fn aborting_removes_the_flow_and_unknown_things_are_errors() {
    let (core, removed) = core_with_tour().await;
    let flows = core.config_entries().flow();
    let menu = flows.init("tour", user(), None).await.unwrap();
    flows.abort(&menu.flow_id).await.unwrap();
    assert!(flows.progress().is_empty());
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(matches!(
        flows.abort(&menu.flow_id).await,
        Err(FlowError::UnknownFlow(_))
    ));
    assert!(matches!(
        flows.configure("missing", None).await,
        Err(FlowError::UnknownFlow(_))
    ));
    assert!(matches!(
        flows.init("nothing_here", user(), None).await,
        Err(FlowError::UnknownHandler(_))
    ));
    assert!(matches!(
        flows.init("Bad Domain", user(), None).await,
        Err(FlowError::UnknownHandler(_))
    ));
    // A first step that fails leaves no flow behind.
    assert!(matches!(
        flows.init("tour", FlowContext::new("fail"), None).await,
        Err(FlowError::Handler(_))
    ));
    assert!(flows.progress().is_empty());
}

#[test]
fn results_serialize_with_home_assistant_type_names() {
    let result = FlowResult {
        flow_id: "f".into(),
        handler: "h".into(),
        step: FlowStep::ShowProgress {
            step_id: "s".into(),
            progress_action: "a".into(),
            description_placeholders: Placeholders::new(),
        },
    };
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(
        json,
        json!({"flow_id": "f", "handler": "h", "type": "progress", "step_id": "s", "progress_action": "a"})
    );
    for (step, name) in [
        (FlowStep::form("s", None), "form"),
        (FlowStep::create_entry("t", Map::new()), "create_entry"),
        (FlowStep::abort("r"), "abort"),
        (
            FlowStep::ExternalStepDone {
                step_id: "s".into(),
            },
            "external_done",
        ),
        (
            FlowStep::ShowProgressDone {
                step_id: "s".into(),
            },
            "progress_done",
        ),
        (FlowStep::menu("m", &[("a", "A")]), "menu"),
    ] {
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(json["type"], name);
        assert_eq!(serde_json::from_value::<FlowStep>(json).unwrap(), step);
    }
    let form = FlowStep::form("user", Some(connection_schema()));
    let back: FlowStep = serde_json::from_str(&serde_json::to_string(&form).unwrap()).unwrap();
    assert_eq!(back, form, "schemas with sections survive the round trip");
}

#[tokio::test]
async fn a_panicking_step_ends_its_flow_with_a_handler_error_and_flows_go_on() {
    let (core, removed) = core_with_tour().await;
    let flows = core.config_entries().flow();

    // A first step that panics: no flow is left behind, and the handler was told.
    let error = flows
        .init("tour", FlowContext::new("panic"), None)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        FlowError::Handler(
            "flow step panic of tour panicked: the first step panics on purpose".into()
        )
    );
    assert!(flows.progress().is_empty());
    assert_eq!(removed.load(Ordering::SeqCst), 1);

    // A later step that panics ends its flow too (its handler is not trusted with another step).
    let claimed = flows
        .init(
            "tour",
            FlowContext::new("claim"),
            Some(obj(json!({"host": "lamp"}))),
        )
        .await
        .unwrap();
    let error = flows
        .configure(&claimed.flow_id, Some(obj(json!({"host": "explode"}))))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FlowError::Handler(reason) if reason.contains("flow step manual of tour panicked")),
        "{error}"
    );
    assert!(flows.progress().is_empty());
    assert_eq!(removed.load(Ordering::SeqCst), 2);
    assert!(matches!(
        flows.configure(&claimed.flow_id, None).await,
        Err(FlowError::UnknownFlow(_))
    ));

    // Flows go on, the ended flow's unique id no longer in progress.
    let again = flows
        .init(
            "tour",
            FlowContext::new("claim"),
            Some(obj(json!({"host": "lamp"}))),
        )
        .await
        .unwrap();
    let done = flows
        .configure(&again.flow_id, Some(obj(json!({"host": "lamp"}))))
        .await
        .unwrap();
    assert!(
        matches!(done.step, FlowStep::CreateEntry { .. }),
        "{done:?}"
    );
}

/// A flow whose `on_remove` panics; its first step shows a form, the next creates an entry.
struct FragileFlow;

impl FlowHandler for FragileFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        _input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            match step_id {
                "user" => Ok(FlowStep::form("confirm", None)),
                _ => Ok(FlowStep::create_entry("Fragile", Map::new())),
            }
        })
    }

    fn on_remove(&mut self) -> BoxFuture<'_, ()> {
        panic!("on_remove panics on purpose")
    }
}

#[tokio::test]
async fn a_panicking_on_remove_neither_blocks_an_abort_nor_a_finished_flow() {
    let table = HandlerTable::new();
    table.register_config_flow("fragile", || Box::new(FragileFlow));
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.config_entries().set_handlers(Arc::new(table));
    let flows = core.config_entries().flow();

    let form = flows.init("fragile", user(), None).await.unwrap();
    flows.abort(&form.flow_id).await.unwrap();
    assert!(flows.progress().is_empty());

    let form = flows.init("fragile", user(), None).await.unwrap();
    let done = flows.configure(&form.flow_id, None).await.unwrap();
    let FlowStep::CreateEntry { entry_id, .. } = &done.step else {
        panic!("{done:?}")
    };
    assert!(flows.progress().is_empty());
    let entry_id = entry_id.as_deref().unwrap();
    assert!(core.config_entries().entry(entry_id).is_some());
}
