//! The trust gates: what a sandbox group may register and fire, decided from main's own state
//! only (which entries main routed to the group, which proxy platforms it holds), never from
//! anything the sandbox says about itself.

use std::collections::BTreeSet;

use homecore::{ConfigEntry, Core};

/// Core events no sandbox may fire, whatever domains it owns (`homeassistant_*` too).
pub const CORE_CONTROL_EVENTS: &[&str] = &[
    "call_service",
    "state_changed",
    "state_reported",
    "service_registered",
    "service_removed",
    "component_loaded",
    "core_config_updated",
];

/// The prefix of the core's lifecycle events.
pub const CORE_EVENT_PREFIX: &str = "homeassistant_";

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
}

/// The domains `group` owns: its entries' integration domains plus the entity domains of its
/// proxy platforms.
pub fn owned_domains(
    core: &Core,
    group: &str,
    proxy_domains: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let mut owned: BTreeSet<String> = core
        .config_entries()
        .entries(None)
        .into_iter()
        .filter(|entry| entry.sandbox.as_deref() == Some(group))
        .map(|entry| entry.domain)
        .collect();
    owned.extend(proxy_domains);
    owned
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

/// Whether `group` may fire `event_type`: `<owned_domain>_...`, never a core event.
pub fn may_fire_event(
    group: &str,
    owned: &BTreeSet<String>,
    event_type: &str,
) -> Result<(), GateError> {
    if CORE_CONTROL_EVENTS.contains(&event_type) || event_type.starts_with(CORE_EVENT_PREFIX) {
        return Err(GateError::CoreEvent {
            event_type: event_type.to_owned(),
        });
    }
    let owned_prefix = owned.iter().any(|domain| {
        event_type.len() > domain.len() + 1
            && event_type.starts_with(domain.as_str())
            && event_type.as_bytes()[domain.len()] == b'_'
    });
    if !owned_prefix {
        return Err(GateError::UnownedEvent {
            event_type: event_type.to_owned(),
            group: group.to_owned(),
        });
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
        assert!(may_fire_event("g", &owned, "demo_button_pressed").is_ok());
        assert!(may_fire_event("g", &owned, "command_line_ran").is_ok());
        for forged in [
            "zha_event",
            "hue_event",
            "demox_event",
            "demo",
            "command_event",
        ] {
            assert!(
                matches!(
                    may_fire_event("g", &owned, forged),
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
                    may_fire_event("g", &owned, core),
                    Err(GateError::CoreEvent { .. })
                ),
                "{core}"
            );
        }
        // Owning a domain named like a core event's prefix does not open core events.
        let sneaky = BTreeSet::from(["homeassistant".to_owned(), "call".to_owned()]);
        assert!(may_fire_event("g", &sneaky, "homeassistant_stop").is_err());
        assert!(may_fire_event("g", &sneaky, "call_service").is_err());
    }
}
