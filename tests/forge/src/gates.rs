//! One check per trust gate. Each runs a hub whose `built-in` group is a real forging child
//! process (`forger` is its command prefix), and proves main refuses the forgery with the right
//! error kind, counts it on the bridge, lets nothing into its bus, services, states, registries
//! or disk, and stays up: the group keeps running on the same process and still answers a ping.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use homecore::event::EventOrigin;
use homecore::{DeviceInfo, Event, ServiceRequest};
use sandbox_host::context_cache::MAX_CONTEXTS;
use sandbox_host::refusals::Gate;
use sandbox_proto::error::ErrorKind;
use serde_json::{Value, json};

use crate::forger::ForgeScenario;
use crate::hub::{
    FOREIGN_ENTRY, GROUP, HANG_GUARD, Hub, MAIN_ENTRY, OWN_ENTRY, Report, ensure, ensure_eq,
    entity_ids, files_under, listing, only_counted, wait_until,
};
use crate::{CheckError, GateCheck};

/// Every gate check, in the order of the gate table.
pub fn checks() -> Vec<GateCheck> {
    vec![
        GateCheck {
            name: "register_entity_for_an_entry_of_another_group_is_refused",
            gate: "B4",
            rule: "`register_entity` only for entries main routed to the group",
            run: |forger| {
                Box::pin(register_entity_for_an_entry_of_another_group_is_refused(
                    forger,
                ))
            },
        },
        GateCheck {
            name: "a_device_merging_into_a_device_owned_outside_the_group_is_refused",
            gate: "B2",
            rule: "no device merging into a device of an entry outside the group",
            run: |forger| {
                Box::pin(a_device_merging_into_a_device_owned_outside_the_group_is_refused(forger))
            },
        },
        GateCheck {
            name: "a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused",
            gate: "B2",
            rule: "every device a description matches is checked, not only the first",
            run: |forger| {
                Box::pin(a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused(forger))
            },
        },
        GateCheck {
            name: "register_entity_of_a_domain_that_cannot_be_proxied_is_refused",
            gate: "B1",
            rule: "only proxyable catalog domains get proxies",
            run: |forger| {
                Box::pin(register_entity_of_a_domain_that_cannot_be_proxied_is_refused(forger))
            },
        },
        GateCheck {
            name: "register_service_outside_owned_domains_or_over_an_existing_one_is_refused",
            gate: "B5",
            rule: "`register_service` only in owned domains, never over an existing service",
            run: |forger| {
                Box::pin(
                    register_service_outside_owned_domains_or_over_an_existing_one_is_refused(
                        forger,
                    ),
                )
            },
        },
        GateCheck {
            name: "core_and_unowned_events_never_reach_mains_bus",
            gate: "B6",
            rule: "`fire_event` only `<owned>_*`, never a core control-plane event",
            run: |forger| Box::pin(core_and_unowned_events_never_reach_mains_bus(forger)),
        },
        GateCheck {
            name: "contexts_main_never_issued_are_never_adopted_and_stay_bounded",
            gate: "B7",
            rule: "unknown context ids get fresh main contexts; the cache stays bounded",
            run: |forger| {
                Box::pin(contexts_main_never_issued_are_never_adopted_and_stay_bounded(forger))
            },
        },
        GateCheck {
            name: "store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing",
            gate: "B10",
            rule: "store keys path-safe and short, values and groups under quota",
            run: |forger| {
                Box::pin(
                    store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing(
                        forger,
                    ),
                )
            },
        },
        GateCheck {
            name: "update_entry_for_an_entry_of_another_group_is_refused",
            gate: "B4",
            rule: "`update_entry` only for entries of the group",
            run: |forger| {
                Box::pin(update_entry_for_an_entry_of_another_group_is_refused(
                    forger,
                ))
            },
        },
        GateCheck {
            name: "descriptions_claiming_what_the_group_does_not_own_are_refused",
            gate: "B2",
            rule: "devices only of the group's integrations, safe URLs, catalog device classes, fixed domains, own entities and services only",
            run: |forger| {
                Box::pin(descriptions_claiming_what_the_group_does_not_own_are_refused(forger))
            },
        },
        GateCheck {
            name: "values_over_mains_bounds_are_refused_and_kept_nowhere",
            gate: "B3",
            rule: "every value bounded in size and depth before main keeps, stores or logs it",
            run: |forger| {
                Box::pin(values_over_mains_bounds_are_refused_and_kept_nowhere(
                    forger,
                ))
            },
        },
        GateCheck {
            name: "registrations_past_the_entity_cap_are_refused",
            gate: "B4",
            rule: "at most `max_entities` proxies per group",
            run: |forger| Box::pin(registrations_past_the_entity_cap_are_refused(forger)),
        },
        GateCheck {
            name: "bridge_requests_before_ready_are_refused_and_counted",
            gate: "B4",
            rule: "nothing of the bridge before `ready`",
            run: |forger| Box::pin(bridge_requests_before_ready_are_refused_and_counted(forger)),
        },
        GateCheck {
            name: "flow_results_over_mains_bounds_never_become_entries_or_forms",
            gate: "B3",
            rule: "a flow result is bounded before main shows it or makes it a config entry",
            run: |forger| {
                Box::pin(flow_results_over_mains_bounds_never_become_entries_or_forms(forger))
            },
        },
        GateCheck {
            name: "a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets",
            gate: "B3",
            rule: "what a group's proxies and registry entries hold on main is bounded in bytes",
            run: |forger| {
                Box::pin(
                    a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets(forger),
                )
            },
        },
        GateCheck {
            name: "every_call_of_a_flood_gets_exactly_one_answer",
            gate: "W5",
            rule: "past the in-flight bound calls are answered `overloaded`, never left unanswered",
            run: |forger| Box::pin(every_call_of_a_flood_gets_exactly_one_answer(forger)),
        },
    ]
}

/// Flow results main must bound before it shows a form or creates a config entry from them.
pub async fn flow_results_over_mains_bounds_never_become_entries_or_forms(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::FlowResults, &[], flow_results).await
}

async fn flow_results(hub: &mut Hub) -> Result<(), CheckError> {
    use crate::hub::FLOW_DOMAIN;
    hub.add_own_entry().await?;
    let flows = hub.core.config_entries().flow();
    for (forge, says) in [
        ("deep_data", "data_json nests deeper than 32 levels"),
        (
            "long_description",
            "description is 65536 bytes; the limit is 4096",
        ),
        (
            "many_options",
            "menu_options has 1000 items; the limit is 64",
        ),
    ] {
        let data = serde_json::Map::from_iter([("forge".to_owned(), json!(forge))]);
        let started = tokio::time::timeout(
            HANG_GUARD,
            flows.init(FLOW_DOMAIN, homecore::FlowContext::new("user"), Some(data)),
        )
        .await
        .map_err(|_| CheckError::Hung(format!("the {forge} flow")))?;
        match started {
            Err(error) => ensure!(
                error.to_string().contains(says),
                "the {forge} flow failed with {error}, not saying {says:?}"
            ),
            Ok(result) => {
                return Err(CheckError::Failed(format!(
                    "the {forge} flow went through: {result:?}"
                )));
            }
        }
    }
    let control = tokio::time::timeout(
        HANG_GUARD,
        flows.init(FLOW_DOMAIN, homecore::FlowContext::new("user"), None),
    )
    .await
    .map_err(|_| CheckError::Hung("the control flow".to_owned()))?
    .map_err(|error| CheckError::Failed(format!("the control flow failed: {error}")))?;
    ensure!(
        matches!(control.step, homecore::FlowStep::CreateEntry { .. }),
        "the control flow did not create an entry: {control:?}"
    );
    let group = hub
        .plugin
        .groups()
        .get(&format!("custom-{FLOW_DOMAIN}"))
        .ok_or_else(|| CheckError::Failed("the flow group is missing".to_owned()))?;
    let counted: Vec<(&str, u64)> = group
        .refused
        .snapshot()
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(gate, count)| (gate.name(), count))
        .collect();
    ensure_eq(counted, vec![("bounds", 3)], "the flow group's refusals")?;
    let entries = hub.core.config_entries().entries(Some(FLOW_DOMAIN));
    ensure_eq(entries.len(), 1, "entries of the forged flows")?;
    ensure_eq(
        entries[0].data.get("host"),
        Some(&json!("192.0.2.7")),
        "the control entry's data",
    )?;
    only_counted(&hub.bridge()?, &[])?;
    hub.still_up().await
}

/// The group's budgets: attributes past the mirrored budget are dropped, registry entries past
/// the registry budget refused, exactly where the budgets say.
pub async fn a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Budgets, &[], budgets).await
}

async fn budgets(hub: &mut Hub) -> Result<(), CheckError> {
    use crate::forger::{FAT_ENTITIES, fat_attributes, heavy_entity};
    use sandbox_host::limits::{
        MAX_GROUP_MIRRORED_BYTES, MAX_GROUP_REGISTRY_BYTES, held_size, registry_entry_size,
    };
    let events = hub.record_events()?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    wait_until("the control event", || events.seen("demo_budgets_done")).await?;
    // What the budgets let through, from the same estimates main charges.
    let empty = held_size(b"{}");
    let fat = held_size(&fat_attributes());
    let mut mirrored = FAT_ENTITIES * empty;
    let mut fattened = 0;
    while fattened < FAT_ENTITIES && mirrored - empty + fat <= MAX_GROUP_MIRRORED_BYTES {
        mirrored = mirrored - empty + fat;
        fattened += 1;
    }
    ensure!(
        fattened < FAT_ENTITIES,
        "the scenario stays within the budget"
    );
    let mut registry = 0;
    let mut heavy = 0;
    loop {
        let Some(description) = heavy_entity(OWN_ENTRY, heavy).description else {
            return Err(CheckError::Failed(
                "a heavy entity without description".into(),
            ));
        };
        let next = registry + registry_entry_size(&description);
        if next > MAX_GROUP_REGISTRY_BYTES {
            break;
        }
        registry = next;
        heavy += 1;
    }
    ensure_eq(
        report.step("heavy")?["registered"].as_u64(),
        Some(heavy as u64),
        "heavy entities registered",
    )?;
    let refused = report.step("heavy_refused")?;
    let message = refused["line"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("registry entries and devices would take more than"),
        "the heavy entity was refused with {refused}"
    );
    let bridge = hub.bridge()?;
    ensure_eq(bridge.mirrored_bytes(), mirrored, "mirrored bytes held")?;
    only_counted(
        &bridge,
        &[(Gate::Bounds, (FAT_ENTITIES - fattened) as u64 + 1)],
    )?;
    // The entities fattened before the budget ran out show it; the rest kept their state.
    for index in 0..FAT_ENTITIES {
        let entity_id = format!("light.fat_{index}");
        let state = hub
            .core
            .states()
            .get(&entity_id)
            .ok_or_else(|| CheckError::Failed(format!("{entity_id} has no state")))?;
        let expected = if index < fattened { "off" } else { "on" };
        ensure_eq(state.state.as_str(), expected, &entity_id)?;
    }
    hub.still_up().await
}

/// W5: a sandbox sending far more calls at once than main runs or queues gets one answer for
/// each: a reply or `overloaded`, never silence.
pub async fn every_call_of_a_flood_gets_exactly_one_answer(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Overload, &[], overload).await
}

async fn overload(hub: &mut Hub) -> Result<(), CheckError> {
    use crate::forger::OVERLOAD_CALLS;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    let line = report.step("overload")?;
    ensure_eq(
        line["other"].clone(),
        json!([]),
        "answers other than a reply or overloaded",
    )?;
    let answered =
        line["ok"].as_u64().unwrap_or_default() + line["overloaded"].as_u64().unwrap_or_default();
    ensure_eq(answered, OVERLOAD_CALLS as u64, "calls answered")?;
    report.ok("control")?;
    only_counted(&hub.bridge()?, &[])?;
    hub.still_up().await
}

/// B2, B3, B5: descriptions claiming what the group does not own.
pub async fn descriptions_claiming_what_the_group_does_not_own_are_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(
        &forger,
        ForgeScenario::Descriptions,
        &[("--existing-service", "demo.main_only")],
        descriptions,
    )
    .await
}

async fn descriptions(hub: &mut Hub) -> Result<(), CheckError> {
    hub.register_main_service()?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    let not_ours =
        format!("device identifier (hue, bridge-1) is not of an integration of group {GROUP}");
    report.refused("claim_identifier", ErrorKind::Refused, &not_ours)?;
    report.refused("via_foreign", ErrorKind::Refused, &not_ours)?;
    report.refused(
        "javascript_url",
        ErrorKind::Refused,
        "is not http, https or homeassistant://",
    )?;
    report.refused(
        "unknown_device_class",
        ErrorKind::Refused,
        "binary_sensor has no device class \"nonsense\"",
    )?;
    let control = report.text("control", "entity_id")?;
    report.refused(
        "change_domain",
        ErrorKind::Refused,
        "a re-description may not change that",
    )?;
    report.refused(
        "unregister_unknown",
        ErrorKind::Refused,
        &format!("entity light.nobody is not an entity of group {GROUP}"),
    )?;
    report.refused(
        "unregister_foreign_service",
        ErrorKind::Refused,
        &format!("service demo.main_only was not registered by group {GROUP}"),
    )?;
    report.refused(
        "invalid_service_name",
        ErrorKind::Refused,
        "invalid service name",
    )?;
    only_counted(
        &hub.bridge()?,
        &[
            (Gate::ForeignDevice, 3),
            (Gate::Entity, 4),
            (Gate::Service, 2),
        ],
    )?;

    ensure_eq(
        entity_ids(&hub.core),
        vec![control.clone()],
        "states on main",
    )?;
    ensure!(control.starts_with("light."), "the control is {control}");
    ensure!(
        hub.core.services().has_service("demo", "main_only"),
        "main's own service was removed"
    );
    let devices = hub.core.device_registry();
    ensure_eq(devices.devices().len(), 0, "devices on main")?;
    // The rightful integration arrives later: its device is its own, nothing of the forger's.
    hub.add_main_entry().await?;
    let bridge = devices
        .get_or_create(DeviceInfo {
            config_entry_id: MAIN_ENTRY.to_owned(),
            identifiers: vec![("hue".into(), "bridge-1".into())],
            name: Some("Hue Bridge".into()),
            ..DeviceInfo::default()
        })
        .map_err(|error| CheckError::Setup(error.to_string()))?;
    ensure_eq(
        bridge.config_entries,
        vec![MAIN_ENTRY.to_owned()],
        "the bridge's entries",
    )?;
    ensure_eq(
        bridge.name.as_deref(),
        Some("Hue Bridge"),
        "the bridge's name",
    )?;
    ensure_eq(bridge.manufacturer, None, "the bridge's manufacturer")?;
    hub.still_up().await
}

/// Every bound of `sandbox_host::limits`, crossed once each.
pub async fn values_over_mains_bounds_are_refused_and_kept_nowhere(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Bounds, &[], bounds).await
}

async fn bounds(hub: &mut Hub) -> Result<(), CheckError> {
    let events = hub.record_events()?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.refused(
        "huge_attributes",
        ErrorKind::Refused,
        "attributes_json is 65550 bytes; the limit is 65536",
    )?;
    report.refused(
        "deep_capabilities",
        ErrorKind::Refused,
        "capabilities_json nests deeper than 32 levels",
    )?;
    report.refused(
        "long_name",
        ErrorKind::Refused,
        &format!(
            "name is {} bytes; the limit is {}",
            sandbox_host::limits::MAX_TEXT_BYTES + 1,
            sandbox_host::limits::MAX_TEXT_BYTES
        ),
    )?;
    let control = report.text("control", "entity_id")?;
    report.refused(
        "deep_entry_data",
        ErrorKind::Refused,
        "data_json nests deeper than 32 levels",
    )?;
    report.refused(
        "deep_store_value",
        ErrorKind::BadRequest,
        "value for deep nests deeper than 36 levels",
    )?;
    let keys = sandbox_host::limits::MAX_DEVICE_KEYS;
    let mut grown = Vec::new();
    for index in 0..keys - 1 {
        grown.push(report.text(&format!("grow_{index}"), "entity_id")?);
    }
    for index in keys - 1..=keys {
        report.refused(
            &format!("grow_{index}"),
            ErrorKind::Refused,
            &format!(
                "device identifiers, merged has {} items; the limit is {keys}",
                keys + 1
            ),
        )?;
    }
    wait_until("the control event", || events.seen("demo_bounds_done")).await?;
    report.ok("big_reply_service")?;
    let reply = tokio::time::timeout(
        HANG_GUARD,
        hub.core
            .services()
            .call(ServiceRequest::new("demo", "big_reply").with_response()),
    )
    .await
    .map_err(|_| CheckError::Hung("the big reply".to_owned()))?;
    match reply {
        Ok(_) => {
            return Err(CheckError::Failed(
                "a 2 MiB reply reached the caller".to_owned(),
            ));
        }
        Err(error) => ensure!(
            error.to_string().contains("response_json is"),
            "the big reply failed with {error}, not over the bound"
        ),
    }
    only_counted(
        &hub.bridge()?,
        &[
            (Gate::Bounds, 8),
            (Gate::Context, 1),
            (Gate::Event, 2),
            (Gate::Store, 1),
        ],
    )?;
    // The over-long context id was refused, not the state it came with.
    let state = hub
        .core
        .states()
        .get(&control)
        .ok_or_else(|| CheckError::Failed(format!("{control} has no state")))?;
    ensure_eq(state.state.as_str(), "off", "the control's state")?;
    ensure!(
        !state.attributes.contains_key("padding"),
        "the huge attributes reached the proxy"
    );
    ensure!(
        state.context.id.to_string().len() == 26,
        "the state kept the forged context id"
    );
    grown.push(control);
    grown.sort();
    ensure_eq(entity_ids(&hub.core), grown, "states on main")?;
    let devices = hub.core.device_registry().devices();
    ensure!(
        devices
            .iter()
            .all(|device| device.identifiers.len() <= keys),
        "a device grew past the bound: {devices:?}"
    );
    let entry = hub
        .core
        .config_entries()
        .entry(OWN_ENTRY)
        .ok_or_else(|| CheckError::Failed("the entry is gone".to_owned()))?;
    ensure_eq(
        entry.data.get("host"),
        Some(&json!("192.0.2.1")),
        "the entry's data",
    )?;
    let leaked: Vec<String> = events
        .all()?
        .iter()
        .filter(|event| {
            event.origin == EventOrigin::Remote && event.event_type != "demo_bounds_done"
        })
        .map(|event| event.event_type.clone())
        .collect();
    ensure!(leaked.is_empty(), "events reached main: {leaked:?}");
    let stored = listing(&hub.config_dir.join(".storage/sandbox").join(GROUP))?;
    ensure!(
        !stored.iter().any(|name| name.contains("deep")),
        "the deep value was stored: {stored:?}"
    );
    ensure!(
        hub.bridge()?.contexts().len() <= 1,
        "the long context id took a cache slot"
    );
    hub.still_up().await
}

/// The entity cap: past it, registrations are refused; a removal frees a slot.
pub async fn registrations_past_the_entity_cap_are_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::EntityCap, &[], entity_cap).await
}

async fn entity_cap(hub: &mut Hub) -> Result<(), CheckError> {
    use crate::forger::FORGE_ENTITY_CAP;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    for index in 0..FORGE_ENTITY_CAP {
        report.ok(&format!("entity_{index}"))?;
    }
    for index in FORGE_ENTITY_CAP..FORGE_ENTITY_CAP + 2 {
        report.refused(
            &format!("entity_{index}"),
            ErrorKind::Refused,
            &format!("group {GROUP} has {FORGE_ENTITY_CAP} entities, its limit"),
        )?;
    }
    report.ok("unregister_one")?;
    report.ok("after_unregister")?;
    report.ok("unregister_two")?;
    // The registry already holds FORGE_ENTITY_CAP + 1 entries; churn fills it to twice the cap.
    let registry_cap = 2 * FORGE_ENTITY_CAP;
    let churned = registry_cap - (FORGE_ENTITY_CAP + 1);
    for index in 0..churned {
        report.ok(&format!("churn_{index}"))?;
        report.ok(&format!("unchurn_{index}"))?;
    }
    for index in churned..FORGE_ENTITY_CAP {
        report.refused(
            &format!("churn_{index}"),
            ErrorKind::Refused,
            &format!("group {GROUP} has {registry_cap} entity registry entries on main, its limit"),
        )?;
    }
    let bridge = hub.bridge()?;
    let refused = 2 + (FORGE_ENTITY_CAP - churned) as u64;
    only_counted(&bridge, &[(Gate::EntityCap, refused)])?;
    ensure_eq(
        bridge.entity_count(),
        FORGE_ENTITY_CAP - 1,
        "entities counted",
    )?;
    ensure_eq(
        entity_ids(&hub.core).len(),
        FORGE_ENTITY_CAP - 1,
        "states on main",
    )?;
    ensure_eq(
        hub.core
            .entity_registry()
            .entries_for_config_entry(OWN_ENTRY)
            .len(),
        registry_cap,
        "registry entries of the group's entry",
    )?;
    hub.still_up().await
}

/// Nothing of the bridge answers before `ready`, and every attempt is counted.
pub async fn bridge_requests_before_ready_are_refused_and_counted(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::BeforeReady, &[], before_ready).await
}

async fn before_ready(hub: &mut Hub) -> Result<(), CheckError> {
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.refused(
        "register_before_ready",
        ErrorKind::Refused,
        &format!("group {GROUP} is not ready"),
    )?;
    let control = report.text("control", "entity_id")?;
    only_counted(&hub.bridge()?, &[(Gate::NotReady, 2)])?;
    ensure_eq(entity_ids(&hub.core), vec![control], "states on main")?;
    hub.still_up().await
}

/// B4: `register_entity` only for entries main routed to this group.
pub async fn register_entity_for_an_entry_of_another_group_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::ForeignEntry, &[], foreign_entry).await
}

async fn foreign_entry(hub: &mut Hub) -> Result<(), CheckError> {
    hub.add_foreign_entry().await?;
    hub.add_idle_entry().await?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;

    report.refused(
        "foreign_entry",
        ErrorKind::Refused,
        &format!("config entry {FOREIGN_ENTRY} does not belong to group {GROUP}"),
    )?;
    report.refused(
        "missing_entry",
        ErrorKind::Refused,
        "config entry no-such-entry does not exist",
    )?;
    report.refused(
        "idle_entry",
        ErrorKind::Refused,
        "config entry idle-group-entry is not_loaded: it takes no entities",
    )?;
    report.ok("control")?;
    let control = report.text("control", "entity_id")?;
    let bridge = hub.bridge()?;
    only_counted(&bridge, &[(Gate::ForeignEntry, 3)])?;

    // Nothing leaked: only the control proxy exists, in states and in the registry.
    ensure_eq(
        entity_ids(&hub.core),
        vec![control.clone()],
        "states on main",
    )?;
    ensure_eq(bridge.proxy_entity_ids(), vec![control], "proxies")?;
    let registry = hub.core.entity_registry();
    let foreign = registry.entries_for_config_entry(FOREIGN_ENTRY);
    ensure!(
        foreign.is_empty(),
        "the foreign entry got registry entries: {foreign:?}"
    );
    let entries = registry.entries();
    ensure!(
        entries
            .iter()
            .all(|registered| registered.config_entry_id.as_deref() == Some(OWN_ENTRY)),
        "registry entries outside the group's entry: {entries:?}"
    );
    hub.still_up().await
}

/// A hub forging `foreign_device` against main's device (identifiers `demo/main-owned-device` and `hue/main-owned-device`,
/// connection `mac/aa:bb:cc:dd:ee:ff`, of a main-only entry). With `group_device_first`, the
/// group's own device (`demo/sandbox-device`) is older than main's. Returns main's device and
/// the child's report.
async fn device_setup(
    hub: &mut Hub,
    group_device_first: bool,
) -> Result<(homecore::DeviceEntry, Report), CheckError> {
    hub.add_main_entry().await?;
    let devices = hub.core.device_registry();
    let device_error = |error: homecore::RegistryError| CheckError::Setup(error.to_string());
    let group_device = if group_device_first {
        let device = devices
            .get_or_create(DeviceInfo {
                config_entry_id: OWN_ENTRY.to_owned(),
                identifiers: vec![("demo".into(), "sandbox-device".into())],
                ..DeviceInfo::default()
            })
            .map_err(device_error)?;
        // Device ids are ULIDs: a later millisecond makes main's device sort after it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some(device)
    } else {
        None
    };
    let main_device = devices
        .get_or_create(DeviceInfo {
            config_entry_id: MAIN_ENTRY.to_owned(),
            // An identifier of the group's integration (so only ownership can refuse it) and
            // one of another.
            identifiers: vec![
                ("demo".into(), "main-owned-device".into()),
                ("hue".into(), "main-owned-device".into()),
            ],
            connections: vec![("mac".into(), "aa:bb:cc:dd:ee:ff".into())],
            name: Some("Main's bridge".into()),
            ..DeviceInfo::default()
        })
        .map_err(device_error)?;
    if let Some(group_device) = &group_device {
        ensure!(
            group_device.id < main_device.id,
            "precondition: the group's device is older than main's"
        );
    }
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    Ok((main_device, report))
}

/// The flags of the device checks: main's device, by identifier and by connection.
const DEVICE_FLAGS: &[(&str, &str)] = &[
    ("--foreign-device", "demo=main-owned-device"),
    ("--foreign-connection", "mac=aa:bb:cc:dd:ee:ff"),
];

fn device_refusals(report: &Report) -> Result<(), CheckError> {
    let says = format!("belongs to a config entry outside group {GROUP}");
    report.refused("by_identifier", ErrorKind::Refused, &says)?;
    report.refused("by_connection", ErrorKind::Refused, &says)?;
    report.refused("smuggled", ErrorKind::Refused, &says)
}

/// B2: a device that would merge into a device of an entry outside the group is refused.
pub async fn a_device_merging_into_a_device_owned_outside_the_group_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(
        &forger,
        ForgeScenario::ForeignDevice,
        DEVICE_FLAGS,
        device_merge,
    )
    .await
}

async fn device_merge(hub: &mut Hub) -> Result<(), CheckError> {
    let (main_device, report) = device_setup(hub, false).await?;
    device_refusals(&report)?;
    report.ok("control")?;
    let control = report.text("control", "entity_id")?;
    only_counted(&hub.bridge()?, &[(Gate::ForeignDevice, 3)])?;

    // Main's device is untouched: same entries, identifiers, connections and name.
    let devices = hub.core.device_registry();
    ensure_eq(
        devices.get(&main_device.id),
        Some(main_device),
        "main's device",
    )?;
    // The forged entities exist nowhere; the control one hangs off the sandbox's own device.
    ensure_eq(entity_ids(&hub.core), vec![control], "states on main")?;
    let own_devices = devices.devices_for_config_entry(OWN_ENTRY);
    ensure!(
        own_devices.len() == 1,
        "the group's entry has {} devices: {own_devices:?}",
        own_devices.len()
    );
    ensure_eq(
        own_devices[0].config_entries.clone(),
        vec![OWN_ENTRY.to_owned()],
        "the group's device's entries",
    )?;
    ensure_eq(
        own_devices[0].identifiers.clone(),
        vec![("demo".to_owned(), "sandbox-device".to_owned())],
        "the group's device's identifiers",
    )?;
    ensure_eq(devices.devices().len(), 2, "devices on main")?;
    hub.still_up().await
}

/// B2: a description listing the group's own (older) device first and a foreign identifier
/// after it: every matching device is checked, so the foreign identifier is not smuggled in.
pub async fn a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(
        &forger,
        ForgeScenario::ForeignDevice,
        DEVICE_FLAGS,
        device_smuggle,
    )
    .await
}

async fn device_smuggle(hub: &mut Hub) -> Result<(), CheckError> {
    let (main_device, report) = device_setup(hub, true).await?;
    device_refusals(&report)?;
    report.ok("control")?;
    only_counted(&hub.bridge()?, &[(Gate::ForeignDevice, 3)])?;
    let devices = hub.core.device_registry();
    let main_identifier = ("demo".to_owned(), "main-owned-device".to_owned());
    ensure_eq(
        devices.get(&main_device.id),
        Some(main_device.clone()),
        "main's device itself",
    )?;
    let own = devices.devices_for_config_entry(OWN_ENTRY);
    ensure!(own.len() == 1, "the group's entry has devices {own:?}");
    ensure!(
        !own[0].identifiers.contains(&main_identifier),
        "the sandbox's device took main's identifier: {own:?}"
    );
    let found = devices
        .find(std::slice::from_ref(&main_identifier), &[])
        .map(|device| device.id);
    ensure_eq(
        found,
        Some(main_device.id),
        "the device main's identifier resolves to",
    )?;
    hub.still_up().await
}

/// B1/B4: only proxyable domains get proxies, whatever entry they claim.
pub async fn register_entity_of_a_domain_that_cannot_be_proxied_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::UnproxyableDomain, &[], unproxyable).await
}

async fn unproxyable(hub: &mut Hub) -> Result<(), CheckError> {
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.refused(
        "camera",
        ErrorKind::Refused,
        &format!("group {GROUP} does not own domain camera"),
    )?;
    report.refused(
        "unknown_domain",
        ErrorKind::Refused,
        &format!("group {GROUP} does not own domain no_such_domain"),
    )?;
    report.ok("control")?;
    let control = report.text("control", "entity_id")?;
    let bridge = hub.bridge()?;
    only_counted(&bridge, &[(Gate::Unproxyable, 2)])?;

    ensure_eq(entity_ids(&hub.core), vec![control], "states on main")?;
    ensure!(
        hub.core.entities().component("camera").is_none(),
        "a camera component appeared on main"
    );
    ensure!(
        hub.core.entities().component("no_such_domain").is_none(),
        "a no_such_domain component appeared on main"
    );
    let owned = bridge.owned_domains();
    ensure!(
        !owned.contains("camera"),
        "the group owns camera: {owned:?}"
    );
    hub.still_up().await
}

/// B5: `register_service` only in owned domains, never over an existing service.
pub async fn register_service_outside_owned_domains_or_over_an_existing_one_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(
        &forger,
        ForgeScenario::Service,
        &[("--existing-service", "demo.main_only")],
        services,
    )
    .await
}

async fn services(hub: &mut Hub) -> Result<(), CheckError> {
    // A service main registered itself, in a domain the group will own.
    hub.register_main_service()?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;

    let unowned = |domain: &str| format!("group {GROUP} does not own domain {domain}");
    report.refused(
        "persistent_notification.create",
        ErrorKind::Refused,
        &unowned("persistent_notification"),
    )?;
    report.refused(
        "homeassistant.restart",
        ErrorKind::Refused,
        &unowned("homeassistant"),
    )?;
    report.refused(
        "demo.main_only",
        ErrorKind::Refused,
        "service demo.main_only already exists",
    )?;
    report.ok("demo.forged_ok")?;
    only_counted(&hub.bridge()?, &[(Gate::Service, 3)])?;

    let services = hub.core.services();
    ensure!(
        !services.has_service("persistent_notification", "create"),
        "persistent_notification.create reached main"
    );
    ensure!(
        !services.has_service("homeassistant", "restart"),
        "homeassistant.restart reached main"
    );
    ensure!(
        services.has_service("demo", "forged_ok"),
        "the control service demo.forged_ok is missing"
    );
    // Never clobbered: main's own handler still answers.
    let response = tokio::time::timeout(
        HANG_GUARD,
        services.call(ServiceRequest::new("demo", "main_only").with_response()),
    )
    .await
    .map_err(|_| CheckError::Hung("main's own service".to_owned()))?
    .map_err(|error| CheckError::Failed(format!("main's own service failed: {error}")))?;
    ensure_eq(
        response.map(Value::Object),
        Some(json!({"answered_by": "main"})),
        "main's own service's answer",
    )?;
    hub.still_up().await
}

/// B6: `fire_event` only `<owned>_*`, never a core control-plane event.
pub async fn core_and_unowned_events_never_reach_mains_bus(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Event, &[], events).await
}

async fn events(hub: &mut Hub) -> Result<(), CheckError> {
    let events = hub.record_events()?;
    // `state_reported`/`homeassistant_close` aside, a match-all listener sees every event;
    // `homeassistant_stop` gets its own listener too, since it would stop the whole hub.
    let stops = Arc::new(AtomicU64::new(0));
    let stop_count = Arc::clone(&stops);
    let stop_listener = hub
        .core
        .bus()
        .listen(homecore::event::EVENT_HOMEASSISTANT_STOP, move |_| {
            stop_count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .map_err(|error| CheckError::Setup(format!("stop listener: {error}")))?;
    hub.keep_listener(stop_listener);
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    for step in [
        "homeassistant_stop",
        "homeassistant_start",
        "call_service",
        "state_changed",
        "service_registered",
        "zha_event",
        "hue_event",
        "demo_forged_ok",
    ] {
        ensure!(
            report.step(step)?["pushed"] == true,
            "the child did not push {step}"
        );
    }
    // Pushes are handled in arrival order: once the control event is on the bus, every forged
    // one before it has been decided.
    wait_until("the control event", || events.seen("demo_forged_ok")).await?;
    let control = events.of("demo_forged_ok")?;
    ensure_eq(control.len(), 1, "control events on main")?;
    ensure_eq(
        control[0].origin,
        EventOrigin::Remote,
        "the control's origin",
    )?;

    only_counted(&hub.bridge()?, &[(Gate::Event, 7)])?;
    let leaked: Vec<String> = events
        .all()?
        .iter()
        .filter(|event| {
            event.event_type != "demo_forged_ok"
                && (event.origin == EventOrigin::Remote || event.data.contains_key("forged"))
        })
        .map(|event| event.event_type.clone())
        .collect();
    ensure!(leaked.is_empty(), "forged events reached main: {leaked:?}");
    ensure_eq(
        stops.load(Ordering::SeqCst),
        0,
        "homeassistant_stop events on main",
    )?;
    hub.still_up().await
}

/// B10: store keys path-safe and short, values and groups under quota; nothing written
/// otherwise.
pub async fn store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Store, &[], store).await
}

async fn store(hub: &mut Hub) -> Result<(), CheckError> {
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.refused(
        "long_key",
        ErrorKind::BadRequest,
        "129 bytes; the limit is 128",
    )?;
    for step in ["traversal", "absolute", "dot_dot", "hidden", "empty"] {
        report.refused(step, ErrorKind::BadRequest, "invalid store key")?;
    }
    report.refused("too_large", ErrorKind::Quota, "the limit is 4194304")?;
    report.refused("load_traversal", ErrorKind::BadRequest, "invalid store key")?;
    report.ok("control")?;

    // On disk: the group's folder holds the control key only, and no forged key landed
    // anywhere else under the config folder.
    let sandbox_dir = hub.config_dir.join(".storage").join("sandbox");
    ensure_eq(
        listing(&sandbox_dir)?,
        vec![GROUP.to_owned()],
        "group folders",
    )?;
    ensure_eq(
        listing(&sandbox_dir.join(GROUP))?,
        vec!["forged_ok".to_owned()],
        "the group's store keys",
    )?;
    let strays: Vec<PathBuf> = files_under(&hub.config_dir)?
        .into_iter()
        .filter(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.contains("passwd") || name == "big" || name.starts_with("kkkk")
        })
        .collect();
    ensure!(strays.is_empty(), "forged store files on disk: {strays:?}");
    ensure!(
        !hub.config_dir.join("etc").exists(),
        "a forged etc folder on disk"
    );
    only_counted(&hub.bridge()?, &[(Gate::Store, 8)])?;
    hub.still_up().await
}

/// B7: an unknown context id gets a fresh main-minted context, never the sandbox's ULID, and a
/// flood of unknown ids keeps the cache bounded.
pub async fn contexts_main_never_issued_are_never_adopted_and_stay_bounded(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::Context, &[], contexts).await
}

async fn contexts(hub: &mut Hub) -> Result<(), CheckError> {
    let events = hub.record_events()?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.ok("control")?;
    let proxy = report.text("control", "entity_id")?;
    let forged = report.text("forged_context", "context_id")?;
    ensure_eq(
        report.step("flood")?["pushed"].clone(),
        json!(3 * MAX_CONTEXTS),
        "unknown context ids pushed",
    )?;
    wait_until("the end of the flood", || events.seen("demo_flood_done")).await?;

    // The event fired with the forged id carries a context main minted, with no user.
    let forged_event = events.of("demo_forged_context")?;
    ensure_eq(forged_event.len(), 1, "demo_forged_context events on main")?;
    let minted = &forged_event[0].context;
    ensure!(
        minted.id.to_string() != forged,
        "main adopted the forged context id {forged}"
    );
    ensure_eq(minted.user_id.clone(), None, "the minted context's user")?;
    ensure_eq(minted.parent_id, None, "the minted context's parent")?;
    // The state change with the forged id: main's own context there too.
    let changes: Vec<Arc<Event>> = events
        .of("state_changed")?
        .into_iter()
        .filter(|event| event.data.get("entity_id") == Some(&json!(proxy)))
        .collect();
    let to_off = changes
        .iter()
        .find(|event| event.data["new_state"]["state"] == "off")
        .ok_or_else(|| {
            CheckError::Failed("the forged state change never reached the proxy".to_owned())
        })?;
    ensure!(
        to_off.context.id.to_string() != forged,
        "the state change kept the forged context id"
    );
    ensure_eq(to_off.context.user_id.clone(), None, "the change's user")?;
    // One sandbox cause, one main context.
    ensure_eq(to_off.context.id, minted.id, "the change's context")?;
    let state = hub
        .core
        .states()
        .get(&proxy)
        .ok_or_else(|| CheckError::Failed(format!("{proxy} has no state")))?;
    ensure_eq(state.state.as_str(), "off", "the proxy's state")?;
    ensure!(
        state.context.id.to_string() != forged,
        "the proxy's state kept the forged context id"
    );
    ensure_eq(state.context.user_id.clone(), None, "the state's user")?;
    // No event or state on main carries the forged id.
    ensure!(
        events
            .all()?
            .iter()
            .all(|event| event.context.id.to_string() != forged),
        "an event on main carries the forged context id"
    );

    // The flood of 3x the cap: the cache holds at most the cap.
    let cached = hub.bridge()?.contexts().len();
    ensure!(
        cached > 0 && cached <= MAX_CONTEXTS,
        "{cached} contexts cached after a flood of {}",
        3 * MAX_CONTEXTS
    );
    only_counted(&hub.bridge()?, &[])?;
    hub.still_up().await
}

/// B4 (entries): `update_entry` only for entries of this group.
pub async fn update_entry_for_an_entry_of_another_group_is_refused(
    forger: Vec<OsString>,
) -> Result<(), CheckError> {
    Hub::check(&forger, ForgeScenario::UpdateEntry, &[], update_entry).await
}

async fn update_entry(hub: &mut Hub) -> Result<(), CheckError> {
    let foreign = hub.add_foreign_entry().await?;
    hub.add_own_entry().await?;
    let report = hub.report().await?;
    report.refused(
        "foreign_entry",
        ErrorKind::Refused,
        &format!("config entry {FOREIGN_ENTRY} does not belong to group {GROUP}"),
    )?;
    report.refused(
        "missing_entry",
        ErrorKind::Refused,
        "config entry no-such-entry does not exist",
    )?;
    report.ok("control")?;
    only_counted(&hub.bridge()?, &[(Gate::ForeignEntry, 2)])?;

    // The other group's entry is exactly as it was; the group's own entry took the update.
    let entries = hub.core.config_entries();
    ensure_eq(
        entries.entry(FOREIGN_ENTRY),
        Some(foreign),
        "the other group's entry",
    )?;
    ensure!(
        entries.entry("no-such-entry").is_none(),
        "an entry no-such-entry was created"
    );
    let own = entries
        .entry(OWN_ENTRY)
        .ok_or_else(|| CheckError::Failed("the group's entry is gone".to_owned()))?;
    ensure_eq(
        own.title.as_str(),
        "renamed by the sandbox",
        "the group's entry's title",
    )?;
    ensure_eq(
        own.unique_id.as_deref(),
        Some("stolen"),
        "the group's entry's unique id",
    )?;
    ensure_eq(
        own.sandbox.as_deref(),
        Some(GROUP),
        "the group's entry's group (main alone decides)",
    )?;
    hub.still_up().await
}
