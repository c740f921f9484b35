//! Tests of the template integration: the expression language, the flow's checks, and the
//! sensor recomputed on its sources' `state_changed`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{Core, CoreConfig, FlowContext, FlowStep, MemoryStoreBackend};

use super::expression::*;
use super::*;

#[test]
fn aggregates_skip_non_numeric_sources_except_difference() {
    let values = [Some(4.0), None, Some(1.0), Some(7.0)];
    assert_eq!(aggregate(Operation::Sum, &values), Some(12.0));
    assert_eq!(aggregate(Operation::Mean, &values), Some(4.0));
    assert_eq!(aggregate(Operation::Median, &values), Some(4.0));
    assert_eq!(
        aggregate(Operation::Median, &[Some(1.0), Some(2.0)]),
        Some(1.5)
    );
    assert_eq!(aggregate(Operation::Min, &values), Some(1.0));
    assert_eq!(aggregate(Operation::Max, &values), Some(7.0));
    assert_eq!(aggregate(Operation::Range, &values), Some(6.0));
    assert_eq!(aggregate(Operation::Sum, &[None, None]), None);
    assert_eq!(
        aggregate(Operation::Difference, &[Some(10.0), Some(3.0), Some(2.5)]),
        Some(4.5)
    );
    assert_eq!(aggregate(Operation::Difference, &values), None);
    assert_eq!(aggregate(Operation::Difference, &[]), None);
    assert_eq!(numeric(" 2.5 "), Some(2.5));
    assert_eq!(numeric("unavailable"), None);
    assert_eq!(numeric("inf"), None);
    assert_eq!(format_number(2.0 / 3.0, 2), "0.67");
    assert_eq!(format_number(-0.001, 2), "0.00");
    assert_eq!(format_number(5.0, 0), "5");
}

#[test]
fn format_strings_name_entities_in_braces_and_escape_doubled_braces() {
    let parts = parse_format("{sensor.a} °C {{ok}} {Sensor.B}").unwrap();
    assert_eq!(
        parts,
        [
            Part::Entity("sensor.a".into()),
            Part::Text(" °C {ok} ".into()),
            Part::Entity("sensor.b".into()),
        ]
    );
    let rendered = render(&parts, |id| (id == "sensor.a").then(|| "21".to_owned()));
    assert_eq!(rendered, "21 °C {ok} unknown");
    assert_eq!(parse_format("{sensor.a"), Err(FormatError::Unclosed(0)));
    assert_eq!(
        parse_format("x } {sensor.a}"),
        Err(FormatError::Unopened(2))
    );
    assert_eq!(
        parse_format("{not an id}"),
        Err(FormatError::NotAnEntityId("not an id".into()))
    );
    assert_eq!(parse_format("plain text"), Err(FormatError::NoEntity));
    assert_eq!(
        parse_format(&"x".repeat(MAX_FORMAT_LENGTH + 1)),
        Err(FormatError::TooBig)
    );
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

async fn core() -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(TemplateIntegration::new()) as Arc<dyn Integration>
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    core
}

async fn submit(core: &Core, input: Value) -> FlowStep {
    let flows = core.config_entries().flow();
    let form = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    flows
        .configure(&form.flow_id, Some(map(input)))
        .await
        .unwrap()
        .step
}

async fn create(core: &Core, input: Value) -> String {
    let step = submit(core, input).await;
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = step
    else {
        panic!("expected an entry, got {step:?}");
    };
    core.entity_registry()
        .entity_id_for("sensor", DOMAIN, &entry_id)
        .unwrap()
}

fn set(core: &Core, entity_id: &str, state: &str) {
    core.states()
        .set(entity_id, state, Map::new(), false, None)
        .unwrap();
}

async fn state_after_events(core: &Core, entity_id: &str) -> String {
    core.bus().wait_idle().await;
    core.states().get(entity_id).unwrap().state.clone()
}

#[tokio::test]
async fn the_flow_refuses_an_aggregate_without_sources_and_a_bad_format() {
    let core = core().await;
    let errors = |step: FlowStep| match step {
        FlowStep::Form { errors, .. } => errors,
        other => panic!("expected the form again, got {other:?}"),
    };
    let step = submit(&core, json!({"name": "Total", "operation": "sum"})).await;
    assert_eq!(errors(step)["entity_ids"], "entities_required");
    let step = submit(
        &core,
        json!({"name": "Text", "operation": "format", "format": "{oops"}),
    )
    .await;
    assert_eq!(errors(step)["format"], "format_invalid");
    let step = submit(&core, json!({"name": " ", "entity_ids": ["sensor.a"]})).await;
    assert_eq!(errors(step)["name"], "name_empty");
    assert!(core.config_entries().entries(Some(DOMAIN)).is_empty());
}

#[tokio::test]
async fn an_aggregate_sensor_follows_its_sources() {
    let core = core().await;
    set(&core, "sensor.a", "2");
    set(&core, "sensor.b", "3.5");
    let entity_id = create(
        &core,
        json!({"name": "Total power", "operation": "sum", "entity_ids": ["sensor.a", "sensor.b", "sensor.c"], "unit_of_measurement": "W", "round": 1}),
    )
    .await;
    assert_eq!(entity_id, "sensor.total_power");
    assert_eq!(state_after_events(&core, &entity_id).await, "5.5");
    let state = core.states().get(&entity_id).unwrap();
    assert_eq!(state.attributes["unit_of_measurement"], json!("W"));
    assert_eq!(
        state.attributes["entity_id"],
        json!(["sensor.a", "sensor.b", "sensor.c"])
    );
    set(&core, "sensor.c", "10");
    assert_eq!(state_after_events(&core, &entity_id).await, "15.5");
    set(&core, "sensor.a", "unavailable");
    assert_eq!(state_after_events(&core, &entity_id).await, "13.5");
    // A change of an entity it does not read leaves it alone.
    let before = core.states().get(&entity_id).unwrap().last_updated;
    set(&core, "sensor.other", "99");
    core.bus().wait_idle().await;
    assert_eq!(core.states().get(&entity_id).unwrap().last_updated, before);
}

#[tokio::test]
async fn a_format_sensor_substitutes_states_and_stops_after_unload() {
    let core = core().await;
    set(&core, "sensor.outside", "12");
    let entity_id = create(
        &core,
        json!({"name": "Weather", "operation": "format", "format": "{sensor.outside} °C, {sensor.wind}"}),
    )
    .await;
    assert_eq!(
        state_after_events(&core, &entity_id).await,
        "12 °C, unknown"
    );
    set(&core, "sensor.wind", "calm");
    assert_eq!(state_after_events(&core, &entity_id).await, "12 °C, calm");

    let entry_id = core.config_entries().entries(Some(DOMAIN))[0]
        .entry_id
        .clone();
    assert!(core.config_entries().unload(&entry_id).await.unwrap());
    set(&core, "sensor.wind", "storm");
    core.bus().wait_idle().await;
    let after = core.states().get(&entity_id).map(|s| s.state.clone());
    assert!(
        after.is_none() || after.as_deref() == Some("unavailable"),
        "{after:?}"
    );
}
