//! The trust gates: what a sandbox group may register and fire, decided from main's own state
//! only (which entries main routed to the group, which proxy platforms it holds), never from
//! anything the sandbox says about itself.

use std::collections::BTreeSet;

use homecore::{ConfigEntry, ConfigEntryState, Core};

/// Events Home Assistant's own components fire that this core does not (yet): no sandbox may
/// fire them either, whatever domains it owns, so a client of main's bus can trust them.
pub const RESERVED_EVENT_TYPES: &[&str] = &[
    "config_entry_discovered",
    "logbook_entry",
    "user_added",
    "user_removed",
    "user_updated",
    "panels_updated",
    "themes_updated",
    "lovelace_updated",
    "label_registry_updated",
    "floor_registry_updated",
    "category_registry_updated",
    "repairs_issue_registry_updated",
    "persistent_notifications_updated",
    "automation_triggered",
    "automation_reloaded",
    "script_started",
    "logging_changed",
    "recorder_5min_statistics_generated",
    "recorder_hourly_statistics_generated",
];

/// The prefix of the core's lifecycle events (`homeassistant_start`, `homeassistant_stop`, ...):
/// every event under it is the core's, including ones it may add later.
pub const CORE_EVENT_PREFIX: &str = "homeassistant_";

/// Domains no custom integration may take, besides every entity domain of the catalog and every
/// domain whose `<domain>_` prefixes a core event: the core's own domains.
pub const CORE_DOMAINS: &[&str] = &[
    "homeassistant",
    "persistent_notification",
    "sandbox",
    "system_log",
    "logger",
    "recorder",
    "api",
    "websocket_api",
    "http",
    "frontend",
    "auth",
    "person",
    "zone",
];

/// Whether `event_type` is the core's: one it fires, one Home Assistant reserves, or any
/// `homeassistant_*` event.
pub fn is_core_event(event_type: &str) -> bool {
    homecore::event::CORE_EVENT_TYPES.contains(&event_type)
        || RESERVED_EVENT_TYPES.contains(&event_type)
        || event_type.starts_with(CORE_EVENT_PREFIX)
}

/// Why a custom integration may not have `domain`, if it may not: a core domain, an entity
/// domain, a domain whose events would be the core's (a custom `device` could fire
/// `device_registry_updated` as an "owned" event), or a prefix of another integration's or
/// entity domain (a custom `command` could fire `command_line_*`). `others` are the other
/// integrations main knows.
pub fn custom_domain_refusal(domain: &str, others: &[&str]) -> Option<String> {
    let prefix = format!("{domain}_");
    if let Some(longer) = others.iter().find(|other| other.starts_with(&prefix)) {
        return Some(format!(
            "{domain} would own the events of {longer} (`{longer}_*` starts `{prefix}`)"
        ));
    }
    if let Some(longer) = homecore::catalog::catalog()
        .domains()
        .find(|spec| spec.domain.starts_with(&prefix))
    {
        return Some(format!(
            "{domain} would own the events of the entity domain {}",
            longer.domain
        ));
    }
    if CORE_DOMAINS.contains(&domain) {
        return Some(format!("{domain} is a core domain"));
    }
    if homecore::catalog::catalog().domain(domain).is_some() {
        return Some(format!("{domain} is an entity domain"));
    }
    homecore::event::CORE_EVENT_TYPES
        .iter()
        .chain(RESERVED_EVENT_TYPES)
        .chain(&[CORE_EVENT_PREFIX])
        .find(|event| event.starts_with(&prefix))
        .map(|event| format!("{domain} would own the core event {event}"))
}

/// Why a gate refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The entry does not exist on main.
    #[error("config entry {entry_id} does not exist")]
    UnknownEntry {
        /// The entry.
        entry_id: String,
    },
    /// The entry exists but main routed it to another group (or to none).
    #[error("config entry {entry_id} does not belong to group {group}")]
    EntryNotInGroup {
        /// The entry.
        entry_id: String,
        /// The group that asked.
        group: String,
    },
    /// The entry is not setting up or loaded.
    #[error("config entry {entry_id} is {state}: it takes no entities")]
    EntryNotLive {
        /// The entry.
        entry_id: String,
        /// Its state.
        state: &'static str,
    },
    /// A device would merge into a device of an entry outside the group.
    #[error("device {identifier} belongs to a config entry outside group {group}")]
    ForeignDevice {
        /// The identifier or connection that matched.
        identifier: String,
        /// The group that asked.
        group: String,
    },
    /// The domain is not one the group owns.
    #[error("group {group} does not own domain {domain}")]
    UnownedDomain {
        /// The domain.
        domain: String,
        /// The group.
        group: String,
    },
    /// The service exists already; a sandbox never replaces one.
    #[error("service {domain}.{service} already exists")]
    ServiceExists {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
    },
    /// A core control-plane event.
    #[error("event {event_type} is a core event")]
    CoreEvent {
        /// The event.
        event_type: String,
    },
    /// An event outside the group's domains.
    #[error("event {event_type} is not in a domain group {group} owns")]
    UnownedEvent {
        /// The event.
        event_type: String,
        /// The group.
        group: String,
    },
    /// A device identifier (or `via_device`) of a domain none of the group's entries has.
    #[error("device identifier ({domain}, {id}) is not of an integration of group {group}")]
    ForeignIdentifier {
        /// Its domain.
        domain: String,
        /// Its id.
        id: String,
        /// The group.
        group: String,
    },
    /// A device's configuration URL of a scheme other than http, https or homeassistant.
    #[error("configuration_url {url:?} is not http, https or homeassistant://")]
    ConfigurationUrl {
        /// The URL.
        url: String,
    },
    /// A device class the domain does not have.
    #[error("{domain} has no device class {device_class:?}")]
    DeviceClass {
        /// The entity domain.
        domain: String,
        /// The class sent.
        device_class: String,
    },
    /// A re-description changing what main proxies.
    #[error(
        "entity {entity_id} is a {domain} entity of entry {entry_id}; a re-description may not change that"
    )]
    Redescription {
        /// The sandbox's entity id.
        entity_id: String,
        /// Its domain on main.
        domain: String,
        /// Its entry on main.
        entry_id: String,
    },
    /// A re-description changing the entity's unique id (its registry entry on main).
    #[error(
        "entity {entity_id} has the unique id {unique_id:?} on main; a re-description may not change that"
    )]
    RedescribedUniqueId {
        /// The sandbox's entity id.
        entity_id: String,
        /// Its unique id as first registered.
        unique_id: Option<String>,
    },
    /// A re-description changing the entity's platform (part of its unique id on main).
    #[error(
        "entity {entity_id} is of platform {platform} on main; a re-description may not change that"
    )]
    RedescribedPlatform {
        /// The sandbox's entity id.
        entity_id: String,
        /// Its platform as first registered.
        platform: String,
    },
    /// The group has as many entities as it may.
    #[error("group {group} has {max} entities, its limit")]
    EntityCap {
        /// The group.
        group: String,
        /// The limit.
        max: usize,
    },
    /// The group's config entries have as many registry entries (or devices) as they may.
    #[error("group {group} has {max} {what} on main, its limit")]
    RegistryCap {
        /// The group.
        group: String,
        /// Entity registry entries, or devices.
        what: String,
        /// The limit.
        max: usize,
    },
    /// The group's registry entries and devices take as much as they may.
    #[error(
        "group {group}'s registry entries and devices would take more than {max} bytes on main (this one {bytes})"
    )]
    RegistryBytes {
        /// The group.
        group: String,
        /// What this registration would add.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The group's proxies hold as much mirrored data as they may.
    #[error("group {group} would hold more than {max} bytes of attributes and capabilities")]
    MirroredBytes {
        /// The group.
        group: String,
        /// The limit.
        max: usize,
    },
    /// A state push, unregistration or re-description for an entity the group never
    /// registered on this channel.
    #[error("entity {entity_id} is not an entity of group {group}")]
    UnknownEntity {
        /// The sandbox's entity id.
        entity_id: String,
        /// The group.
        group: String,
    },
    /// The group has as many services as it may.
    #[error("group {group} has {max} services, its limit")]
    ServiceCap {
        /// The group.
        group: String,
        /// The limit.
        max: usize,
    },
    /// An unregistration of a service this group did not register.
    #[error("service {domain}.{service} was not registered by group {group}")]
    ForeignService {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// The group.
        group: String,
    },
    /// A domain or service name that is not a valid slug.
    #[error("invalid service name {domain:?}.{service:?}: {reason}")]
    InvalidServiceName {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A request sent before the group said `ready` (or after its bridge was replaced).
    #[error("group {group} is not ready")]
    NotReady {
        /// The group.
        group: String,
    },
    /// A value over one of [`crate::limits`]' bounds.
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
}

/// The domains `group` owns: its entries' integration domains plus the entity domains of its
/// proxy platforms.
pub fn owned_domains(
    core: &Core,
    group: &str,
    proxy_domains: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    domain_sets(core, group, proxy_domains).0
}

/// The domains `group` owns (see [`owned_domains`]), and every other domain main knows: other
/// config entries' (of any group, or main) and the catalog's entity domains. One read of the
/// entries for both, on every event a group fires.
pub fn domain_sets(
    core: &Core,
    group: &str,
    proxy_domains: impl IntoIterator<Item = String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut owned, mut others) = (BTreeSet::new(), BTreeSet::new());
    for (domain, sandbox) in core.config_entries().domains_and_groups() {
        if sandbox.as_deref() == Some(group) {
            owned.insert(domain);
        } else {
            others.insert(domain);
        }
    }
    owned.extend(proxy_domains);
    others.extend(
        homecore::catalog::catalog()
            .domains()
            .map(|spec| spec.domain.clone()),
    );
    others.retain(|domain| !owned.contains(domain));
    (owned, others)
}

/// The entry `entry_id`, if main routed it to `group`.
pub fn entry_of_group(core: &Core, group: &str, entry_id: &str) -> Result<ConfigEntry, GateError> {
    let entry = core
        .config_entries()
        .entry(entry_id)
        .ok_or_else(|| GateError::UnknownEntry {
            entry_id: entry_id.to_owned(),
        })?;
    if entry.sandbox.as_deref() != Some(group) {
        return Err(GateError::EntryNotInGroup {
            entry_id: entry_id.to_owned(),
            group: group.to_owned(),
        });
    }
    Ok(entry)
}

/// The entry `entry_id`, if main routed it to `group` and it is setting up or loaded: what a
/// sandbox may register entities for. An entry being unloaded, failed, disabled or not loaded
/// gets no proxies, whatever a sandbox sends after main stopped expecting them.
pub fn live_entry_of_group(
    core: &Core,
    group: &str,
    entry_id: &str,
) -> Result<ConfigEntry, GateError> {
    let entry = entry_of_group(core, group, entry_id)?;
    match entry.state {
        ConfigEntryState::SetupInProgress | ConfigEntryState::Loaded => Ok(entry),
        state => Err(GateError::EntryNotLive {
            entry_id: entry_id.to_owned(),
            state: state.as_str(),
        }),
    }
}

/// Whether `group` may register `domain.service`.
pub fn may_register_service(
    core: &Core,
    group: &str,
    owned: &BTreeSet<String>,
    domain: &str,
    service: &str,
) -> Result<(), GateError> {
    if !owned.contains(domain) {
        return Err(GateError::UnownedDomain {
            domain: domain.to_owned(),
            group: group.to_owned(),
        });
    }
    if core.services().has_service(domain, service) {
        return Err(GateError::ServiceExists {
            domain: domain.to_owned(),
            service: service.to_owned(),
        });
    }
    Ok(())
}

/// Whether `event_type` is `<domain>_...`.
fn is_event_of(domain: &str, event_type: &str) -> bool {
    event_type.len() > domain.len() + 1
        && event_type.starts_with(domain)
        && event_type.as_bytes()[domain.len()] == b'_'
}

/// Whether `group` may fire `event_type`: `<owned_domain>_...`, never a core event, and never
/// one that belongs to a longer domain the group does not own (owning `command` does not make
/// `command_line_*` events the group's). `others` are the other domains main knows (every
/// config entry's, every entity domain).
pub fn may_fire_event(
    group: &str,
    owned: &BTreeSet<String>,
    others: &BTreeSet<String>,
    event_type: &str,
) -> Result<(), GateError> {
    if is_core_event(event_type) {
        return Err(GateError::CoreEvent {
            event_type: event_type.to_owned(),
        });
    }
    let longest = |domains: &BTreeSet<String>| {
        domains
            .iter()
            .filter(|domain| is_event_of(domain, event_type))
            .map(String::len)
            .max()
    };
    let unowned = |owner: &usize| longest(others).is_some_and(|other| other > *owner);
    match longest(owned) {
        Some(owner) if !unowned(&owner) => Ok(()),
        _ => Err(GateError::UnownedEvent {
            event_type: event_type.to_owned(),
            group: group.to_owned(),
        }),
    }
}

/// The integration domains of `group`'s entries: the only domains its device identifiers may
/// have. (Proxy platform domains are not among them: owning lights does not make a group
/// `hue`.)
pub fn integration_domains(core: &Core, group: &str) -> BTreeSet<String> {
    owned_domains(core, group, std::iter::empty())
}

/// The rules on a device a sandbox describes, besides who already owns it (see
/// `Bridge::check_device`): every identifier and `via_device` of one of the group's
/// integrations, and a configuration URL of an allowed scheme.
pub fn check_device_rules(
    group: &str,
    integrations: &BTreeSet<String>,
    device: &sandbox_proto::wire::DeviceInfo,
) -> Result<(), GateError> {
    for pair in device.identifiers.iter().chain(&device.via_device) {
        if !integrations.contains(&pair.first) {
            return Err(GateError::ForeignIdentifier {
                domain: pair.first.clone(),
                id: pair.second.clone(),
                group: group.to_owned(),
            });
        }
    }
    if let Some(url) = &device.configuration_url
        && !crate::limits::is_safe_link(url)
    {
        return Err(GateError::ConfigurationUrl {
            url: crate::limits::bounded_text(url, crate::limits::MAX_MESSAGE_BYTES),
        });
    }
    Ok(())
}

/// An entity's device class must be one of its domain's (or none).
pub fn check_device_class(domain: &str, device_class: Option<&str>) -> Result<(), GateError> {
    let Some(device_class) = device_class else {
        return Ok(());
    };
    let known = homecore::catalog::catalog()
        .domain(domain)
        .is_some_and(|spec| {
            spec.device_classes
                .iter()
                .any(|known| known == device_class)
        });
    if known {
        Ok(())
    } else {
        Err(GateError::DeviceClass {
            domain: domain.to_owned(),
            device_class: device_class.to_owned(),
        })
    }
}

/// A service a sandbox registers must have a valid domain and service name (lowercase slugs),
/// as every service main registers itself.
pub fn check_service_name(domain: &str, service: &str) -> Result<(), GateError> {
    let invalid = |reason: String| GateError::InvalidServiceName {
        domain: domain.to_owned(),
        service: service.to_owned(),
        reason,
    };
    homecore::entity_id::validate_domain(domain).map_err(|error| invalid(error.to_string()))?;
    let slug = !service.is_empty()
        && service.len() <= crate::limits::MAX_TEXT_BYTES
        && service
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if !slug {
        return Err(invalid(
            "a service name is lowercase letters, digits and underscores".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(domains: &[&str]) -> BTreeSet<String> {
        domains.iter().map(|domain| (*domain).to_owned()).collect()
    }

    #[test]
    fn events_of_owned_domains_pass_and_core_events_never_do() {
        let owned = owned(&["demo", "command_line"]);
        assert!(may_fire_event("g", &owned, &BTreeSet::new(), "demo_button_pressed").is_ok());
        assert!(may_fire_event("g", &owned, &BTreeSet::new(), "command_line_ran").is_ok());
        for forged in [
            "zha_event",
            "hue_event",
            "demox_event",
            "demo",
            "command_event",
        ] {
            assert!(
                matches!(
                    may_fire_event("g", &owned, &BTreeSet::new(), forged),
                    Err(GateError::UnownedEvent { .. })
                ),
                "{forged}"
            );
        }
        for core in [
            "homeassistant_stop",
            "homeassistant_start",
            "call_service",
            "state_changed",
            "service_registered",
        ] {
            assert!(
                matches!(
                    may_fire_event("g", &owned, &BTreeSet::new(), core),
                    Err(GateError::CoreEvent { .. })
                ),
                "{core}"
            );
        }
        // Owning a prefix of another domain does not open that domain's events.
        let others = BTreeSet::from(["command_line".to_owned()]);
        let command = BTreeSet::from(["command".to_owned()]);
        assert!(may_fire_event("g", &command, &others, "command_ran").is_ok());
        assert!(may_fire_event("g", &command, &others, "command_line_ran").is_err());
        let both = BTreeSet::from(["command".to_owned(), "command_line".to_owned()]);
        assert!(may_fire_event("g", &both, &BTreeSet::new(), "command_line_ran").is_ok());
        // Owning a domain named like a core event's prefix does not open core events.
        let sneaky = BTreeSet::from(["homeassistant".to_owned(), "call".to_owned()]);
        assert!(may_fire_event("g", &sneaky, &BTreeSet::new(), "homeassistant_stop").is_err());
        assert!(may_fire_event("g", &sneaky, &BTreeSet::new(), "call_service").is_err());
    }

    #[test]
    fn every_event_the_core_fires_is_denied_whatever_a_group_owns() {
        // Owning every domain a core event starts with opens none of them.
        let greedy: BTreeSet<String> = homecore::event::CORE_EVENT_TYPES
            .iter()
            .chain(RESERVED_EVENT_TYPES)
            .filter_map(|event| event.split('_').next())
            .map(str::to_owned)
            .collect();
        for event in homecore::event::CORE_EVENT_TYPES
            .iter()
            .chain(RESERVED_EVENT_TYPES)
            .chain(&["homeassistant_something_new"])
        {
            assert!(
                matches!(
                    may_fire_event("g", &greedy, &BTreeSet::new(), event),
                    Err(GateError::CoreEvent { .. })
                ),
                "{event}"
            );
        }
        for event in [
            "device_registry_updated",
            "entity_registry_updated",
            "area_registry_updated",
            "data_entry_flow_progressed",
            "config_entry_discovered",
        ] {
            assert!(is_core_event(event), "{event}");
        }
    }

    #[test]
    fn custom_domains_colliding_with_core_names_are_refused() {
        for domain in [
            "device",
            "entity",
            "area",
            "state",
            "call",
            "service",
            "homeassistant",
            "light",
            "sensor",
            "persistent_notification",
            "config",
            "data",
            "component",
            "core",
        ] {
            assert!(custom_domain_refusal(domain, &[]).is_some(), "{domain}");
        }
        for domain in ["acme_thermostat", "hue", "mqtt"] {
            assert_eq!(
                custom_domain_refusal(domain, &["demo", "command_line"]),
                None,
                "{domain}"
            );
        }
        for domain in ["command", "binary", "media", "acme"] {
            assert!(
                custom_domain_refusal(domain, &["command_line", "acme_extra"]).is_some(),
                "{domain}"
            );
        }
    }

    #[test]
    fn devices_name_only_the_groups_integrations_and_safe_urls() {
        use sandbox_proto::wire::{DeviceInfo, StringPair};
        let pair = |first: &str, second: &str| StringPair {
            first: first.into(),
            second: second.into(),
        };
        let mine = owned(&["demo"]);
        let device = |identifiers: Vec<StringPair>, url: Option<&str>| DeviceInfo {
            identifiers,
            configuration_url: url.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            check_device_rules(
                "g",
                &mine,
                &device(vec![pair("demo", "1")], Some("https://x.example/a"))
            ),
            Ok(())
        );
        assert_eq!(
            check_device_rules(
                "g",
                &mine,
                &device(vec![], Some("homeassistant://config/x"))
            ),
            Ok(())
        );
        assert!(matches!(
            check_device_rules(
                "g",
                &mine,
                &device(vec![pair("demo", "1"), pair("hue", "2")], None)
            ),
            Err(GateError::ForeignIdentifier { .. })
        ));
        for url in [
            "javascript:alert(1)",
            "JAVASCRIPT://x",
            "file:///etc/passwd",
            "data:text/html,x",
            "http:",
            "https://",
            "ftp://x",
        ] {
            assert!(
                matches!(
                    check_device_rules("g", &mine, &device(vec![], Some(url))),
                    Err(GateError::ConfigurationUrl { .. })
                ),
                "{url}"
            );
        }
        let mut via = device(vec![pair("demo", "1")], None);
        via.via_device = Some(pair("hue", "bridge"));
        assert!(matches!(
            check_device_rules("g", &mine, &via),
            Err(GateError::ForeignIdentifier { .. })
        ));
    }

    #[test]
    fn device_classes_come_from_the_catalog_and_service_names_are_slugs() {
        assert_eq!(check_device_class("binary_sensor", Some("motion")), Ok(()));
        assert_eq!(check_device_class("light", None), Ok(()));
        assert!(check_device_class("binary_sensor", Some("temperature")).is_err());
        assert!(check_device_class("light", Some("motion")).is_err());
        assert!(check_device_class("sensor", Some("<script>")).is_err());
        assert_eq!(check_service_name("demo", "get_status"), Ok(()));
        for (domain, service) in [
            ("demo", ""),
            ("demo", "Get"),
            ("demo", "a.b"),
            ("Demo", "x"),
            ("", "x"),
            ("demo", "a b"),
        ] {
            assert!(
                check_service_name(domain, service).is_err(),
                "{domain}.{service}"
            );
        }
    }
}
