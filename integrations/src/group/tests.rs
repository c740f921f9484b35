//! Tests of the group integration: the summary rules, the flow, and light and switch groups
//! over the demo's entities (state following members, services forwarded, unload).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{
    Core, CoreConfig, FlowContext, FlowStep, MemoryStoreBackend, ServiceRequest, ServiceTarget,
};

use super::entity::summarize;
use super::*;

fn member(state: &str, attributes: Value) -> Option<(String, Map<String, Value>)> {
    let Value::Object(attributes) = attributes else {
        panic!("attributes must be an object");
    };
    Some((state.to_owned(), attributes))
}

#[test]
fn the_group_is_on_when_any_member_is_on_or_all_with_the_all_option() {
    let members = [
        member("on", json!({"brightness": 100, "supported_features": 4})),
        member("off", json!({"supported_features": 32})),
        member("on", json!({"brightness": 201})),
        None,
    ];
    let any = summarize(&members, false);
    assert_eq!(any.state.as_deref(), Some("on"));
    assert!(any.available);
    assert_eq!(any.brightness, Some(150));
    assert_eq!(any.supported_features, 36);
    assert_eq!(summarize(&members, true).state.as_deref(), Some("off"));

    let offline = [member("unavailable", json!({})), None];
    let summary = summarize(&offline, false);
    assert!(!summary.available);
    assert_eq!(summary.state, None);
    let partly = [member("unknown", json!({})), member("off", json!({}))];
    assert_eq!(summarize(&partly, false).state.as_deref(), Some("off"));
    // With `all`, one member without a valid state makes the group unknown.
    assert_eq!(summarize(&partly, true).state, None);
    assert!(!summarize(&[], false).available);
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// A core with the demo (for member lights and switches) and the group integration.
async fn core() -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(crate::demo::DemoIntegration::new()) as Arc<dyn Integration>,
            Arc::new(GroupIntegration::new()),
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    let flows = core.config_entries().flow();
    let menu = flows
        .init(crate::demo::DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    flows
        .configure(
            &menu.flow_id,
            Some(map(json!({"next_step_id": "defaults"}))),
        )
        .await
        .unwrap();
    core
}

fn demo(core: &Core, domain: &str, key: &str) -> String {
    core.entity_registry()
        .entity_id_for(domain, crate::demo::DOMAIN, key)
        .unwrap()
}

async fn submit(core: &Core, group_type: &str, input: Value) -> FlowStep {
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let form = flows
        .configure(
            &menu.flow_id,
            Some(map(json!({"next_step_id": group_type}))),
        )
        .await
        .unwrap();
    flows
        .configure(&form.flow_id, Some(map(input)))
        .await
        .unwrap()
        .step
}

async fn create(core: &Core, group_type: &str, input: Value) -> String {
    let step = submit(core, group_type, input).await;
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = step
    else {
        panic!("expected an entry, got {step:?}");
    };
    core.entity_registry()
        .entity_id_for(group_type, DOMAIN, &entry_id)
        .unwrap()
}

fn state(core: &Core, entity_id: &str) -> String {
    core.states().get(entity_id).unwrap().state.clone()
}

async fn call(core: &Core, domain: &str, service: &str, entity_id: &str, data: Value) {
    core.services()
        .call(
            ServiceRequest::new(domain, service)
                .with_data(map(data))
                .with_target(ServiceTarget::entities([entity_id])),
        )
        .await
        .unwrap();
    core.bus().wait_idle().await;
}

#[tokio::test]
async fn the_flow_needs_a_name_and_members_of_the_groups_domain() {
    let core = core().await;
    let errors = |step: FlowStep| match step {
        FlowStep::Form { errors, .. } => errors,
        other => panic!("expected the form again, got {other:?}"),
    };
    let step = submit(&core, "light", json!({"name": "Lights", "entities": []})).await;
    assert_eq!(errors(step)["entities"], "members_required");
    let step = submit(
        &core,
        "switch",
        json!({"name": "", "entities": ["switch.a"]}),
    )
    .await;
    assert_eq!(errors(step)["name"], "name_empty");
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let form = flows
        .configure(&menu.flow_id, Some(map(json!({"next_step_id": "light"}))))
        .await
        .unwrap();
    let wrong_domain = flows
        .configure(
            &form.flow_id,
            Some(map(json!({"name": "Lights", "entities": ["switch.a"]}))),
        )
        .await;
    assert!(wrong_domain.is_err(), "{wrong_domain:?}");
}

#[tokio::test]
async fn a_light_group_follows_its_members_and_forwards_services_to_them() {
    let core = core().await;
    let ceiling = demo(&core, "light", "light_ceiling");
    let kitchen = demo(&core, "light", "light_kitchen");
    let group = create(
        &core,
        "light",
        json!({"name": "Downstairs", "entities": [ceiling, kitchen, "light.not_there"]}),
    )
    .await;
    assert_eq!(group, "light.downstairs");
    assert_eq!(state(&core, &group), "on");
    let attributes = core.states().get(&group).unwrap().attributes.clone();
    assert_eq!(
        attributes["entity_id"],
        json!([ceiling, kitchen, "light.not_there"])
    );

    call(&core, "light", "turn_off", &group, json!({})).await;
    assert_eq!(state(&core, &ceiling), "off");
    assert_eq!(state(&core, &kitchen), "off");
    assert_eq!(state(&core, &group), "off");

    call(
        &core,
        "light",
        "turn_on",
        &group,
        json!({"brightness": 120}),
    )
    .await;
    assert_eq!(state(&core, &kitchen), "on");
    assert_eq!(
        core.states().get(&kitchen).unwrap().attributes["brightness"],
        json!(120)
    );
    assert_eq!(state(&core, &group), "on");
    assert_eq!(
        core.states().get(&group).unwrap().attributes["brightness"],
        json!(120)
    );

    // A member changing on its own moves the group.
    call(&core, "light", "turn_off", &ceiling, json!({})).await;
    assert_eq!(state(&core, &group), "on");
    call(&core, "light", "turn_off", &kitchen, json!({})).await;
    assert_eq!(state(&core, &group), "off");
}

#[tokio::test]
async fn a_switch_group_toggles_its_members_and_all_mode_needs_every_member_on() {
    let core = core().await;
    let decorative = demo(&core, "switch", "switch_decorative_lights");
    let ac = demo(&core, "switch", "switch_ac");
    let any = create(
        &core,
        "switch",
        json!({"name": "Any switch", "entities": [decorative, ac]}),
    )
    .await;
    let all = create(
        &core,
        "switch",
        json!({"name": "Every switch", "entities": [decorative, ac], "all": true}),
    )
    .await;
    assert_eq!(state(&core, &any), "on");
    assert_eq!(state(&core, &all), "off");
    // Toggle of an `on` group turns every member off.
    call(&core, "switch", "toggle", &any, json!({})).await;
    assert_eq!(state(&core, &decorative), "off");
    assert_eq!(state(&core, &ac), "off");
    assert_eq!(state(&core, &any), "off");
    call(&core, "switch", "toggle", &all, json!({})).await;
    assert_eq!(state(&core, &ac), "on");
    assert_eq!(state(&core, &all), "on");

    // Entries come back in id order, not creation order: pick the `any` group by title.
    let entry_id = core
        .config_entries()
        .entries(Some(DOMAIN))
        .into_iter()
        .find(|entry| entry.title == "Any switch")
        .unwrap()
        .entry_id;
    assert!(core.config_entries().unload(&entry_id).await.unwrap());
    call(&core, "switch", "turn_off", &ac, json!({})).await;
    let after = core.states().get(&any).map(|s| s.state.clone());
    assert!(
        after.is_none() || after.as_deref() == Some("unavailable"),
        "{after:?}"
    );
}
