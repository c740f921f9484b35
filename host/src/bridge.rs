//! The per-group bridge: main's side of one sandbox channel.
//!
//! It answers what the sandbox sends — entity registrations, state pushes, service
//! registrations, events, entry updates, store IO — and enforces every trust gate from main's
//! own state first. A refused request is logged, counted per gate, and answered with a
//! `refused` error (a push is dropped); it never breaks the bridge.
//!
//! A bridge belongs to one channel (one generation of the group's process). When the process
//! dies its proxies turn unavailable at once; when a new process is ready, the displaced bridge
//! is torn down (its platforms unregistered, its services removed) before the group's entries
//! are set up again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use homecore::entity_platform::EntityPlatform;
use homecore::event::EventOrigin;
use homecore::service::ServiceHandler;
use homecore::{ConfigEntryUpdate, Core, Schema, ServiceError, SupportsResponse};
use parking_lot::Mutex;
use sandbox_proto::{Channel, ChannelBuilder, RemoteError, json, wire};
use sandbox_wire::service_error_from_remote;

use crate::context_cache::ContextCache;
use crate::gates::{self, GateError};
use crate::limits::{self, LimitError};
use crate::log_limit::{Admit, LogBudget};
use crate::proxy::{Mirrored, PROXY_CALL_TIMEOUT, ProxyEntity, ProxyLink};
use crate::refusals::{Gate, GateCounters};
use crate::store_server::{GroupStore, StoreServerError};

/// One entity's proxy and where it is attached.
struct ProxyRecord {
    proxy: Arc<ProxyEntity>,
    entry_id: String,
    platform: EntityPlatform,
    /// What its capabilities take once parsed ([`limits::held_size`]), fixed per description.
    capabilities_bytes: usize,
    /// What its attributes and capabilities take once parsed, counted in the group's
    /// [`limits::MAX_GROUP_MIRRORED_BYTES`].
    mirrored_bytes: usize,
}

/// Main's side of one group channel.
pub struct Bridge {
    core: Core,
    link: Arc<ProxyLink>,
    /// Proxies by the sandbox's entity id.
    proxies: Mutex<HashMap<String, ProxyRecord>>,
    /// Remote platforms by (entry id, entity domain).
    platforms: Mutex<HashMap<(String, String), EntityPlatform>>,
    /// Services this bridge registered on main.
    services: Mutex<HashSet<(String, String)>>,
    /// Refusals per gate, shared by every bridge of the group (store refusals are counted
    /// before any bridge exists).
    pub refused: Arc<GateCounters>,
    /// Set once torn down: late messages of this generation are ignored.
    torn_down: AtomicBool,
    /// The optional features both sides acknowledged at `ready`.
    features: BTreeSet<String>,
    /// Most entities the group may have proxied (`GroupConfig::max_entities`).
    max_entities: usize,
    /// Entities proxied or being added: a slot is taken before an entity is added, so
    /// concurrent registrations cannot overshoot `max_entities`.
    entity_slots: AtomicUsize,
    /// Bytes of attributes and capabilities JSON the proxies hold (guarded by `proxies`).
    mirrored_bytes: AtomicUsize,
    /// Entity registry entries of the group's config entries: counted at this bridge's start,
    /// then each new one. Registry entries outlive their proxies (as in Home Assistant), so a
    /// sandbox churning unique ids would grow main's registry without end past any live cap.
    registry_entries: AtomicUsize,
    /// Devices of the group's config entries, counted the same way.
    devices: AtomicUsize,
    /// What the group's registry entries and devices take on main, estimated
    /// ([`limits::registry_entry_size`], [`limits::device_size`]), counted the same way; a
    /// re-description, or a new registration of a known unique id or device, is charged what
    /// it changes of an existing entry or device ([`limits::refreshed_entry_size`],
    /// [`limits::merged_device_size`]).
    registry_bytes: AtomicUsize,
    /// The bound of `registry_bytes` ([`limits::MAX_GROUP_REGISTRY_BYTES`]).
    max_registry_bytes: usize,
    /// Held from a re-description's reservation until main's registries follow it, so that
    /// concurrent re-descriptions each measure what the registries hold after the other.
    redescriptions: Mutex<()>,
    /// Log lines about registry refreshes that failed, per window.
    refresh_log: Mutex<LogBudget>,
}

/// What one registration or re-description changes of main's registries, reserved before the
/// entity is added or re-described.
#[derive(Debug, Default)]
struct RegistryGrowth {
    /// A new entity registry entry.
    entry: bool,
    /// A new device.
    device: bool,
    /// Bytes taken of the group's registry budget: the estimated size of a new entry or
    /// device, and what an existing one grows by.
    bytes: usize,
    /// Bytes given back to the budget: what existing ones shrink by, net of the growth.
    freed: usize,
}

impl Bridge {
    /// A bridge for `group` over `channel`.
    pub fn new(
        core: Core,
        group: &str,
        channel: Channel,
        contexts: Arc<ContextCache>,
        refused: Arc<GateCounters>,
        features: &BTreeSet<String>,
        max_entities: usize,
    ) -> Arc<Self> {
        Self::with_registry_budget(
            core,
            group,
            channel,
            contexts,
            refused,
            features,
            max_entities,
            limits::MAX_GROUP_REGISTRY_BYTES,
        )
    }

    /// [`Self::new`] with another bound of the group's registry bytes (tests reach it with a
    /// few registrations).
    #[allow(clippy::too_many_arguments)]
    fn with_registry_budget(
        core: Core,
        group: &str,
        channel: Channel,
        contexts: Arc<ContextCache>,
        refused: Arc<GateCounters>,
        features: &BTreeSet<String>,
        max_entities: usize,
        max_registry_bytes: usize,
    ) -> Arc<Self> {
        let footprint = registry_footprint(&core, group);
        Arc::new(Self {
            core,
            link: Arc::new(ProxyLink {
                group: group.to_owned(),
                channel,
                alive: AtomicBool::new(true),
                contexts,
                refused: Arc::clone(&refused),
                joins_entity_calls: features.contains("entity_outcomes"),
                open_batches: Mutex::default(),
            }),
            proxies: Mutex::default(),
            platforms: Mutex::default(),
            services: Mutex::default(),
            refused,
            torn_down: AtomicBool::new(false),
            features: features.clone(),
            max_entities,
            entity_slots: AtomicUsize::new(0),
            mirrored_bytes: AtomicUsize::new(0),
            registry_entries: AtomicUsize::new(footprint.entries),
            devices: AtomicUsize::new(footprint.devices),
            registry_bytes: AtomicUsize::new(footprint.bytes),
            max_registry_bytes,
            redescriptions: Mutex::default(),
            refresh_log: Mutex::new(LogBudget::new(1, usize::MAX)),
        })
    }

    /// Most entity registry entries the group's config entries may have on main.
    pub fn max_registry_entries(&self) -> usize {
        self.max_entities
            .saturating_mul(limits::REGISTRY_ENTRIES_PER_ENTITY)
    }

    /// Takes one of `counter`'s slots below `max`; false when none is left.
    fn take_slot(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .is_ok()
    }

    /// Reserves what registering or re-describing `description` for `entry` changes of main's
    /// registries: a new entity registry entry (for a unique id not registered yet) and a new
    /// device (for an entity with a unique id whose device matches none) take one of the
    /// group's registry slots and their estimated size of its registry byte budget; an existing
    /// entry or device, which the core refreshes from the description, is charged what it grows
    /// by and gives back what it shrinks by. Undone by [`Self::release_registry`] if the entity
    /// is not added or re-described after all.
    fn reserve_registry_growth(
        &self,
        entry: &homecore::ConfigEntry,
        description: &wire::EntityDescription,
    ) -> Result<RegistryGrowth, (Gate, GateError)> {
        let mut growth = RegistryGrowth::default();
        let Some(unique_id) = &description.unique_id else {
            // No registry entry and, in the core, no device without a unique id.
            return Ok(growth);
        };
        let proxy_unique_id = format!("{}:{unique_id}", description.platform);
        let registry = self.core.entity_registry();
        let held_entry = registry
            .entity_id_for(&description.domain, &entry.domain, &proxy_unique_id)
            .and_then(|entity_id| registry.get(&entity_id));
        let cap = |what: &str, max: usize| {
            (
                Gate::EntityCap,
                GateError::RegistryCap {
                    group: self.group().to_owned(),
                    what: what.to_owned(),
                    max,
                },
            )
        };
        let (mut grown, mut shrunk) = (0, 0);
        let mut change = |before: usize, after: usize| {
            grown += after.saturating_sub(before);
            shrunk += before.saturating_sub(after);
        };
        match &held_entry {
            Some(held) => change(
                limits::registered_entry_size(held),
                limits::refreshed_entry_size(held, description),
            ),
            None => {
                if !Self::take_slot(&self.registry_entries, self.max_registry_entries()) {
                    return Err(cap("entity registry entries", self.max_registry_entries()));
                }
                growth.entry = true;
                change(0, limits::registry_entry_size(description));
            }
        }
        if let Some(device) = &description.device {
            let key = |pair: &wire::StringPair| (pair.first.clone(), pair.second.clone());
            let identifiers: Vec<_> = device.identifiers.iter().map(key).collect();
            let connections: Vec<_> = device.connections.iter().map(key).collect();
            // The device the core merges the description into: the first matching one.
            match self.core.device_registry().find(&identifiers, &connections) {
                Some(held) => change(
                    limits::registered_device_size(&held),
                    limits::merged_device_size(&held, device),
                ),
                None => {
                    if !Self::take_slot(&self.devices, self.max_entities) {
                        self.release_registry(&growth);
                        return Err(cap("devices", self.max_entities));
                    }
                    growth.device = true;
                    change(0, limits::device_size(device));
                }
            }
        }
        if shrunk > grown {
            let freed = shrunk - grown;
            let held = self
                .registry_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    Some(held.saturating_sub(freed))
                })
                .unwrap_or_default();
            growth.freed = freed.min(held);
            return Ok(growth);
        }
        let bytes = grown - shrunk;
        let taken = self
            .registry_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let next = held + bytes;
                (bytes == 0 || next <= self.max_registry_bytes).then_some(next)
            })
            .is_ok();
        if !taken {
            self.release_registry(&growth);
            return Err((
                Gate::Bounds,
                GateError::RegistryBytes {
                    group: self.group().to_owned(),
                    bytes,
                    max: self.max_registry_bytes,
                },
            ));
        }
        growth.bytes = bytes;
        Ok(growth)
    }

    /// Gives back what [`Self::reserve_registry_growth`] took, and takes back what it freed.
    fn release_registry(&self, growth: &RegistryGrowth) {
        if growth.entry {
            self.registry_entries.fetch_sub(1, Ordering::AcqRel);
        }
        if growth.device {
            self.devices.fetch_sub(1, Ordering::AcqRel);
        }
        if growth.bytes > 0 {
            self.registry_bytes
                .fetch_sub(growth.bytes, Ordering::AcqRel);
        }
        if growth.freed > 0 {
            self.registry_bytes
                .fetch_add(growth.freed, Ordering::AcqRel);
        }
    }

    /// Whether the sandbox of this bridge acknowledged the optional `feature` at `ready`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.link.group
    }

    /// The channel of this generation.
    pub fn channel(&self) -> &Channel {
        &self.link.channel
    }

    /// The contexts main issued to the group.
    pub fn contexts(&self) -> &Arc<ContextCache> {
        &self.link.contexts
    }

    /// The proxies' entity ids on main.
    pub fn proxy_entity_ids(&self) -> Vec<String> {
        self.proxies
            .lock()
            .values()
            .filter_map(|record| record.proxy.entity_id())
            .collect()
    }

    /// The domains this group owns now.
    pub fn owned_domains(&self) -> BTreeSet<String> {
        self.domain_sets().0
    }

    /// The domains this group owns now, and every other domain main knows.
    fn domain_sets(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let proxy_domains: Vec<String> = self
            .platforms
            .lock()
            .keys()
            .map(|(_, domain)| domain.clone())
            .collect();
        gates::domain_sets(&self.core, self.group(), proxy_domains)
    }

    /// Every proxy turns unavailable at once (the process is gone).
    pub fn mark_unavailable(&self) {
        self.link.alive.store(false, Ordering::Release);
        let proxies: Vec<Arc<ProxyEntity>> = self
            .proxies
            .lock()
            .values()
            .map(|record| Arc::clone(&record.proxy))
            .collect();
        for proxy in proxies {
            proxy.refresh();
        }
    }

    /// Releases everything of one entry on main: its remote platforms (removing the proxies
    /// and freeing the slots) — whether or not the sandbox is still there.
    pub async fn teardown_entry(&self, entry_id: &str) {
        let platforms: Vec<EntityPlatform> = {
            let mut platforms = self.platforms.lock();
            let keys: Vec<_> = platforms
                .keys()
                .filter(|(entry, _)| entry == entry_id)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|key| platforms.remove(&key))
                .collect()
        };
        {
            let mut proxies = self.proxies.lock();
            let (mut entities, mut bytes) = (0, 0);
            proxies.retain(|_, record| {
                let keep = record.entry_id != entry_id;
                if !keep {
                    entities += 1;
                    bytes += record.mirrored_bytes;
                }
                keep
            });
            self.entity_slots.fetch_sub(entities, Ordering::AcqRel);
            self.mirrored_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
        for platform in platforms {
            if let Some(component) = self.core.entities().component(platform.domain())
                && let Some(entry) = self.core.config_entries().entry(entry_id)
            {
                component.unregister_remote_platform(&entry).await;
            } else {
                platform.reset().await;
            }
        }
    }

    /// Tears the whole bridge down: every proxy platform and every service it registered.
    pub async fn teardown(&self) {
        self.torn_down.store(true, Ordering::Release);
        self.link.alive.store(false, Ordering::Release);
        let entries: BTreeSet<String> = self
            .platforms
            .lock()
            .keys()
            .map(|(entry, _)| entry.clone())
            .collect();
        for entry_id in entries {
            self.teardown_entry(&entry_id).await;
        }
        let services: Vec<(String, String)> = self.services.lock().drain().collect();
        for (domain, service) in services {
            self.core.services().remove(&domain, &service);
        }
        self.refused.flush_log();
    }

    /// Whether this bridge's process is alive and the bridge not torn down.
    pub fn is_live(&self) -> bool {
        self.link.alive.load(Ordering::Acquire) && !self.torn_down.load(Ordering::Acquire)
    }

    /// Entities proxied now (or being added).
    pub fn entity_count(&self) -> usize {
        self.entity_slots.load(Ordering::Acquire)
    }

    /// Bytes of attributes and capabilities JSON the group's proxies hold.
    pub fn mirrored_bytes(&self) -> usize {
        self.mirrored_bytes.load(Ordering::Acquire)
    }

    fn refuse(&self, gate: Gate, error: &GateError) -> RemoteError {
        self.refused.refuse(gate, error)
    }

    /// A value over a bound: refused at the `bounds` gate.
    fn over_bound(&self, error: LimitError) -> RemoteError {
        self.refused.over_bound(error)
    }

    /// Logs, within a budget per window, that main's registries did not follow a re-described
    /// proxy.
    fn log_refresh_failure(&self, entity_id: &str, error: &dyn std::fmt::Display) {
        let message = limits::bounded_text(&error.to_string(), limits::MAX_MESSAGE_BYTES);
        let admit = self.refresh_log.lock().admit(message.len());
        if let Admit::Log { suppressed } = admit {
            let suppressed = suppressed.map_or(0, |suppressed| suppressed.lines);
            tracing::warn!(group = %self.group(), %entity_id, error = %message, suppressed, "the re-described proxy's registries were not refreshed");
        }
    }

    /// Whether a context id the sandbox sent is no longer than a ULID; a longer one is
    /// refused (counted).
    fn context_id_fits(&self, id: &str) -> bool {
        match limits::check_text("context_id", id, limits::MAX_CONTEXT_ID_LEN) {
            Ok(()) => true,
            Err(error) => {
                let _ = self.refused.refuse(Gate::Context, &error);
                false
            }
        }
    }

    /// The context for an id the sandbox sent: an id longer than a ULID is refused (counted)
    /// and gets a fresh context, never a cache slot.
    fn context(&self, sandbox_id: Option<&str>) -> homecore::Context {
        match sandbox_id {
            Some(id) if !self.context_id_fits(id) => homecore::Context::new(),
            _ => self.link.contexts.resolve(sandbox_id),
        }
    }

    /// Takes `new` bytes of the group's mirrored budget in place of `old`; false (and nothing
    /// taken) when growing would pass [`limits::MAX_GROUP_MIRRORED_BYTES`].
    fn swap_mirrored(&self, old: usize, new: usize) -> bool {
        self.mirrored_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                let next = total.saturating_sub(old) + new;
                (new <= old || next <= limits::MAX_GROUP_MIRRORED_BYTES).then_some(next)
            })
            .is_ok()
    }

    fn mirrored_refusal(&self) -> RemoteError {
        self.refuse(
            Gate::Bounds,
            &GateError::MirroredBytes {
                group: self.group().to_owned(),
                max: limits::MAX_GROUP_MIRRORED_BYTES,
            },
        )
    }

    /// An entity state as sent, checked against its bounds.
    fn mirrored_state(&self, state: Option<&wire::EntityState>) -> Result<Mirrored, RemoteError> {
        let Some(state) = state else {
            return Ok(Mirrored::default());
        };
        limits::check_text("state", &state.state, limits::MAX_TEXT_BYTES)
            .map_err(|error| self.over_bound(error))?;
        let characters = state.state.chars().count();
        if characters > homecore::state::MAX_STATE_LENGTH {
            return Err(self.over_bound(LimitError::TooMany {
                field: "state characters".to_owned(),
                count: characters,
                max: homecore::state::MAX_STATE_LENGTH,
            }));
        }
        let attributes = limits::bounded_object(
            "attributes_json",
            &state.attributes_json,
            limits::MAX_STATE_ATTRIBUTES_BYTES,
        )
        .map_err(|error| self.over_bound(error))?;
        Ok(Mirrored {
            state: state.state.clone(),
            attributes,
            available: state.available,
        })
    }

    /// `register_entity`: a new proxy, or an existing one re-described in place.
    pub async fn register_entity(
        &self,
        request: wire::RegisterEntity,
    ) -> Result<wire::RegisterEntityResult, RemoteError> {
        if self.torn_down.load(Ordering::Acquire) {
            return Err(self.refuse(
                Gate::NotReady,
                &GateError::NotReady {
                    group: self.group().to_owned(),
                },
            ));
        }
        let Some(mut description) = request.description else {
            return Err(self.refused.refuse_as(
                Gate::Bounds,
                sandbox_proto::error::ErrorKind::BadRequest,
                &"register_entity needs a description",
            ));
        };
        limits::check_description(&description).map_err(|error| self.over_bound(error))?;
        let mirrored = self.mirrored_state(request.state.as_ref())?;
        let entry = gates::live_entry_of_group(&self.core, self.group(), &description.entry_id)
            .map_err(|error| self.refuse(Gate::ForeignEntry, &error))?;
        let proxyable = homecore::catalog::catalog()
            .domain(&description.domain)
            .is_some_and(|spec| spec.proxyable);
        if !proxyable {
            let error = GateError::UnownedDomain {
                domain: description.domain.clone(),
                group: self.group().to_owned(),
            };
            return Err(self.refuse(Gate::Unproxyable, &error));
        }
        gates::check_device_class(&description.domain, description.device_class.as_deref())
            .map_err(|error| self.refuse(Gate::Entity, &error))?;
        if let Some(device) = description.device.as_mut() {
            self.check_device(device).map_err(|error| {
                let gate = match error {
                    GateError::Limit(_) => Gate::Bounds,
                    _ => Gate::ForeignDevice,
                };
                self.refuse(gate, &error)
            })?;
        }
        if let Some(context_id) = request.context_id.as_deref() {
            // Only checked (a registration's first state is written without a cause): an
            // unknown id must not take a slot of the cache.
            self.context_id_fits(context_id);
        }
        let capabilities_bytes = limits::held_size(&description.capabilities_json);
        let state_bytes = request
            .state
            .as_ref()
            .map_or(0, |state| limits::held_size(&state.attributes_json));
        // A re-description is serialized with the others from its reservation until main's
        // registries follow it (no await in between).
        let redescription = self.redescriptions.lock();
        let redescribed = self
            .proxies
            .lock()
            .get(&description.entity_id)
            .map(|record| record.proxy.description());
        if let Some(previous) = &redescribed {
            // Main's unique id of a proxy is `{platform}:{unique_id}`: a change of either would
            // leave the registry entry behind and register another one.
            let error = if previous.unique_id != description.unique_id {
                Some(GateError::RedescribedUniqueId {
                    entity_id: description.entity_id.clone(),
                    unique_id: previous.unique_id.clone(),
                })
            } else if previous.platform != description.platform {
                Some(GateError::RedescribedPlatform {
                    entity_id: description.entity_id.clone(),
                    platform: previous.platform.clone(),
                })
            } else {
                None
            };
            if let Some(error) = error {
                return Err(self.refuse(Gate::Entity, &error));
            }
        }
        let unchanged = redescribed.as_ref() == Some(&description);
        // What the re-description changes of main's registries (a longer name, larger
        // capabilities, a device main has not seen): reserved like a registration's, and given
        // back when nothing is re-described after all.
        let redescription_growth = match &redescribed {
            Some(_) if !unchanged => self
                .reserve_registry_growth(&entry, &description)
                .map_err(|(gate, error)| self.refuse(gate, &error))?,
            _ => RegistryGrowth::default(),
        };
        // Re-description of an entity already proxied (a registry update in the sandbox): it
        // stays what it is on main, the entity of one domain and one entry.
        let existing = {
            let mut proxies = self.proxies.lock();
            match proxies.get_mut(&description.entity_id) {
                None => None,
                Some(record) => {
                    let domain = record.proxy.domain();
                    if domain != description.domain || record.entry_id != description.entry_id {
                        let error = GateError::Redescription {
                            entity_id: description.entity_id.clone(),
                            domain,
                            entry_id: record.entry_id.clone(),
                        };
                        drop(proxies);
                        self.release_registry(&redescription_growth);
                        return Err(self.refuse(Gate::Entity, &error));
                    }
                    let held = if request.state.is_some() {
                        capabilities_bytes + state_bytes
                    } else {
                        record
                            .mirrored_bytes
                            .saturating_sub(record.capabilities_bytes)
                            + capabilities_bytes
                    };
                    if !self.swap_mirrored(record.mirrored_bytes, held) {
                        drop(proxies);
                        self.release_registry(&redescription_growth);
                        return Err(self.mirrored_refusal());
                    }
                    record.mirrored_bytes = held;
                    record.capabilities_bytes = capabilities_bytes;
                    Some(Arc::clone(&record.proxy))
                }
            }
        };
        if let Some(proxy) = existing {
            proxy.redescribe(description, request.state.is_some().then_some(mirrored));
            let entity_id = proxy.entity_id().unwrap_or_default();
            if !unchanged {
                if entity_id.is_empty() {
                    // Not on main (a disabled entity): its registries are not refreshed.
                    self.release_registry(&redescription_growth);
                } else if let Err(error) = self.core.entities().refresh_registration(&entity_id) {
                    // Main's device and entity registry entries follow the new description (a
                    // renamed device, a new software version, a changed icon), in place. A
                    // refresh that found no entity (removed on main meanwhile) or no core wrote
                    // nothing: the reservation is given back. Past that, the device may have
                    // been merged before the failure: the reservation stays charged.
                    if matches!(
                        error,
                        homecore::EntityError::NotFound(_) | homecore::EntityError::CoreGone
                    ) {
                        self.release_registry(&redescription_growth);
                    }
                    self.log_refresh_failure(&entity_id, &error);
                }
            }
            drop(redescription);
            return Ok(wire::RegisterEntityResult { entity_id });
        }
        drop(redescription);
        // The entity went away meanwhile: this registers it anew, reserving on its own.
        self.release_registry(&redescription_growth);
        if !Self::take_slot(&self.entity_slots, self.max_entities) {
            let error = GateError::EntityCap {
                group: self.group().to_owned(),
                max: self.max_entities,
            };
            return Err(self.refuse(Gate::EntityCap, &error));
        }
        let growth = match self.reserve_registry_growth(&entry, &description) {
            Ok(growth) => growth,
            Err((gate, error)) => {
                self.entity_slots.fetch_sub(1, Ordering::AcqRel);
                return Err(self.refuse(gate, &error));
            }
        };
        let held = capabilities_bytes + state_bytes;
        if !self.swap_mirrored(0, held) {
            self.entity_slots.fetch_sub(1, Ordering::AcqRel);
            self.release_registry(&growth);
            return Err(self.mirrored_refusal());
        }
        let release = || {
            self.entity_slots.fetch_sub(1, Ordering::AcqRel);
            self.swap_mirrored(held, 0);
            self.release_registry(&growth);
        };
        let platform = match self.platform(&entry, &description.domain) {
            Ok(platform) => platform,
            Err(error) => {
                release();
                return Err(error);
            }
        };
        let sandbox_entity_id = description.entity_id.clone();
        let proxy = Arc::new(ProxyEntity::new(
            Arc::clone(&self.link),
            description,
            mirrored,
        ));
        let added = platform
            .add_entity(Arc::clone(&proxy) as Arc<dyn homecore::entity::Entity>)
            .await;
        let added = match added {
            Ok(added) => added,
            Err(error) => {
                release();
                return Err(RemoteError::handler(format!(
                    "the proxy could not be added: {error}"
                )));
            }
        };
        let entity_id = added.unwrap_or_default();
        let displaced = self.proxies.lock().insert(
            sandbox_entity_id,
            ProxyRecord {
                proxy,
                entry_id: entry.entry_id.clone(),
                platform,
                capabilities_bytes,
                mirrored_bytes: held,
            },
        );
        if let Some(displaced) = displaced {
            // Two registrations of one new entity raced: the later one stands.
            self.entity_slots.fetch_sub(1, Ordering::AcqRel);
            self.swap_mirrored(displaced.mirrored_bytes, 0);
            if let Some(old_id) = displaced.proxy.entity_id()
                && old_id != entity_id
            {
                let _ = displaced.platform.remove_entity(&old_id).await;
            }
        }
        Ok(wire::RegisterEntityResult { entity_id })
    }

    /// The remote platform of `entry` for `domain`, registered on first use.
    fn platform(
        &self,
        entry: &homecore::ConfigEntry,
        domain: &str,
    ) -> Result<EntityPlatform, RemoteError> {
        let key = (entry.entry_id.clone(), domain.to_owned());
        if let Some(platform) = self.platforms.lock().get(&key) {
            return Ok(platform.clone());
        }
        let platform = EntityPlatform::new(domain, &entry.domain, Some(&entry.entry_id));
        let component = self
            .core
            .entities()
            .ensure_component(domain)
            .map_err(|error| {
                RemoteError::handler(format!("no {domain} component on main: {error}"))
            })?;
        component
            .register_remote_platform(entry, platform.clone())
            .map_err(|error| {
                RemoteError::handler(format!("cannot attach the {domain} platform: {error}"))
            })?;
        self.platforms.lock().insert(key, platform.clone());
        Ok(platform)
    }

    /// Whether every entry of `device` belongs to this group.
    fn owns_device(&self, device: &homecore::DeviceEntry) -> bool {
        device
            .config_entries
            .iter()
            .all(|entry_id| gates::entry_of_group(&self.core, self.group(), entry_id).is_ok())
    }

    /// The device rules (see `docs/ARCHITECTURE.md`, "Devices"): identifiers and `via_device`
    /// only of the group's own integrations, and never naming a device with an entry outside
    /// the group (every identifier is checked, not just the first: a description listing the
    /// group's own device first and a foreign identifier after it must not pull the foreign
    /// identifier in); a configuration URL of an allowed scheme. A connection never merges
    /// across groups: one naming a device with an entry outside the group is dropped from the
    /// description, and the device stands on its identifiers (refused when none are left).
    fn check_device(&self, device: &mut wire::DeviceInfo) -> Result<(), GateError> {
        use homecore::device_registry::{DeviceKey, normalize_connection};
        let integrations = gates::integration_domains(&self.core, self.group());
        gates::check_device_rules(self.group(), &integrations, device)?;
        let registry = self.core.device_registry();
        let key = |pair: &wire::StringPair| (pair.first.clone(), pair.second.clone());
        let named: Vec<DeviceKey> = device
            .identifiers
            .iter()
            .chain(&device.via_device)
            .map(key)
            .collect();
        // Only the devices sharing a key, through the registry's indexes: a scan of every
        // device would make each registration cost O(devices).
        for existing in registry.find_all(&named, &[]) {
            if !self.owns_device(&existing) {
                let (kind, value) = named
                    .iter()
                    .find(|key| existing.identifiers.contains(key))
                    .cloned()
                    .unwrap_or_default();
                return Err(GateError::ForeignDevice {
                    identifier: format!("({kind}, {value})"),
                    group: self.group().to_owned(),
                });
            }
        }
        let mut dropped = None;
        device.connections.retain(|pair| {
            let keep = registry
                .find_all(&[], &[key(pair)])
                .iter()
                .all(|existing| self.owns_device(existing));
            if !keep {
                dropped = Some(pair.clone());
            }
            keep
        });
        if let Some(pair) = dropped {
            if device.identifiers.is_empty() && device.connections.is_empty() {
                return Err(GateError::ForeignDevice {
                    identifier: format!("({}, {})", pair.first, pair.second),
                    group: self.group().to_owned(),
                });
            }
            tracing::debug!(group = %self.group(), connection = ?(pair.first, pair.second), "a connection of another group's device was not merged");
        }
        // A device merged into by many descriptions must not grow without end either.
        let identifiers: Vec<DeviceKey> = device.identifiers.iter().map(key).collect();
        let connections: Vec<DeviceKey> = device
            .connections
            .iter()
            .map(|pair| normalize_connection(&key(pair)))
            .collect();
        for existing in registry.find_all(&identifiers, &connections) {
            let merged = |held: &[DeviceKey], more: &[DeviceKey]| {
                held.len() + more.iter().filter(|key| !held.contains(key)).count()
            };
            for (field, count) in [
                (
                    "device identifiers, merged",
                    merged(&existing.identifiers, &identifiers),
                ),
                (
                    "device connections, merged",
                    merged(&existing.connections, &connections),
                ),
            ] {
                if count > limits::MAX_DEVICE_KEYS {
                    return Err(GateError::Limit(LimitError::TooMany {
                        field: field.to_owned(),
                        count,
                        max: limits::MAX_DEVICE_KEYS,
                    }));
                }
            }
        }
        Ok(())
    }

    /// `unregister_entity`: only entities this group registered on this channel.
    pub async fn unregister_entity(
        &self,
        request: wire::UnregisterEntity,
    ) -> Result<wire::UnregisterEntityResult, RemoteError> {
        let record = self.proxies.lock().remove(&request.entity_id);
        let Some(record) = record else {
            return Err(self.refuse(
                Gate::Entity,
                &GateError::UnknownEntity {
                    entity_id: request.entity_id,
                    group: self.group().to_owned(),
                },
            ));
        };
        self.entity_slots.fetch_sub(1, Ordering::AcqRel);
        self.swap_mirrored(record.mirrored_bytes, 0);
        if let Some(entity_id) = record.proxy.entity_id()
            && let Err(error) = record.platform.remove_entity(&entity_id).await
        {
            tracing::debug!(group = %self.group(), %entity_id, %error, "proxy already gone");
        }
        Ok(wire::UnregisterEntityResult {})
    }

    /// `state_changed`: applied in arrival order (an inline handler). A push for an entity the
    /// group did not register, or over a bound, is dropped and counted.
    pub fn state_changed(&self, change: wire::StateChanged) {
        if self.torn_down.load(Ordering::Acquire) {
            return;
        }
        let state = wire::EntityState {
            state: change.state,
            attributes_json: change.attributes_json,
            available: change.available,
        };
        let Ok(mirrored) = self.mirrored_state(Some(&state)) else {
            return;
        };
        let proxy = {
            let mut proxies = self.proxies.lock();
            let Some(record) = proxies.get_mut(&change.entity_id) else {
                drop(proxies);
                let _ = self.refuse(
                    Gate::Entity,
                    &GateError::UnknownEntity {
                        entity_id: change.entity_id,
                        group: self.group().to_owned(),
                    },
                );
                return;
            };
            let held = record.capabilities_bytes + limits::held_size(&state.attributes_json);
            if !self.swap_mirrored(record.mirrored_bytes, held) {
                drop(proxies);
                let _ = self.mirrored_refusal();
                return;
            }
            record.mirrored_bytes = held;
            Arc::clone(&record.proxy)
        };
        let context = self.context(change.context_id.as_deref());
        proxy.apply_state(mirrored, context);
    }

    /// `register_service`: a valid name, only in an owned domain, never over an existing
    /// service; calls are forwarded to the sandbox.
    pub fn register_service(
        self: &Arc<Self>,
        request: wire::RegisterService,
    ) -> Result<wire::RegisterServiceResult, RemoteError> {
        gates::check_service_name(&request.domain, &request.service)
            .map_err(|error| self.refuse(Gate::Service, &error))?;
        let owned = self.owned_domains();
        gates::may_register_service(
            &self.core,
            self.group(),
            &owned,
            &request.domain,
            &request.service,
        )
        .map_err(|error| self.refuse(Gate::Service, &error))?;
        limits::check_json(
            "schema_json",
            &request.schema_json,
            limits::MAX_SCHEMA_BYTES,
        )
        .map_err(|error| self.over_bound(error))?;
        // A slot of the group's services, taken before registering so concurrent
        // registrations cannot overshoot the cap; given back if registering fails.
        let key = (request.domain.clone(), request.service.clone());
        {
            let mut services = self.services.lock();
            if services.len() >= limits::MAX_SERVICES_PER_GROUP {
                drop(services);
                return Err(self.refuse(
                    Gate::Service,
                    &GateError::ServiceCap {
                        group: self.group().to_owned(),
                        max: limits::MAX_SERVICES_PER_GROUP,
                    },
                ));
            }
            services.insert(key.clone());
        }
        let schema: Option<Schema> = if request.schema_json.is_empty() {
            None
        } else {
            // An unreadable schema degrades to none: main registers, the sandbox validates.
            serde_json::from_slice(&request.schema_json).ok()
        };
        let supports_response = match wire::SupportsResponse::try_from(request.supports_response) {
            Ok(wire::SupportsResponse::Optional) => SupportsResponse::Optional,
            Ok(wire::SupportsResponse::Only) => SupportsResponse::Only,
            _ => SupportsResponse::None,
        };
        let bridge = Arc::downgrade(self);
        let handler: ServiceHandler = Arc::new(move |call: homecore::ServiceCall| {
            let bridge = bridge.upgrade();
            Box::pin(async move {
                let Some(bridge) = bridge else {
                    return Err(ServiceError::handler("the sandbox group is gone"));
                };
                bridge.forward_service_call(call).await
            })
        });
        let registered = self.core.services().register_handler(
            &request.domain,
            &request.service,
            schema.clone(),
            supports_response,
            Arc::clone(&handler),
        );
        let registered = match registered {
            Err(ServiceError::InvalidSchema(_)) => self.core.services().register_handler(
                &request.domain,
                &request.service,
                None,
                supports_response,
                handler,
            ),
            other => other,
        };
        if let Err(error) = registered {
            self.services.lock().remove(&key);
            return Err(RemoteError::bad_request(error.to_string()));
        }
        Ok(wire::RegisterServiceResult {})
    }

    async fn forward_service_call(
        &self,
        call: homecore::ServiceCall,
    ) -> Result<Option<serde_json::Value>, ServiceError> {
        if !self.link.alive.load(Ordering::Acquire) {
            return Err(ServiceError::handler(format!(
                "sandbox group {} is not running",
                self.group()
            )));
        }
        let request = wire::CallService {
            domain: call.domain.clone(),
            service: call.service.clone(),
            entity_ids: Vec::new(),
            data_json: json::object_to_bytes(&call.data),
            context_id: self.link.contexts.remember(&call.context),
            return_response: call.return_response,
            per_entity: false,
        };
        let result = self
            .link
            .channel
            .call_timeout(&request, PROXY_CALL_TIMEOUT)
            .await
            .map_err(|error| match error {
                sandbox_proto::CallError::Remote { error, .. } => {
                    service_error_from_remote(&call.domain, &call.service, &error)
                }
                other => ServiceError::handler(format!("sandbox group {}: {other}", self.group())),
            })?;
        self.link
            .read_response(call.return_response, result.response_json)
    }

    /// `unregister_service`: only services this group registered.
    pub fn unregister_service(
        &self,
        request: wire::UnregisterService,
    ) -> Result<wire::UnregisterServiceResult, RemoteError> {
        let key = (request.domain, request.service);
        if !self.services.lock().remove(&key) {
            let (domain, service) = key;
            return Err(self.refuse(
                Gate::Service,
                &GateError::ForeignService {
                    domain,
                    service,
                    group: self.group().to_owned(),
                },
            ));
        }
        self.core.services().remove(&key.0, &key.1);
        Ok(wire::UnregisterServiceResult {})
    }

    /// `fire_event`: only `<owned>_*`, never a core event, data a bounded object; dropped and
    /// counted otherwise.
    pub fn fire_event(&self, event: wire::FireEvent) {
        if let Err(error) = limits::check_text(
            "event_type",
            &event.event_type,
            homecore::event::MAX_EVENT_TYPE_LENGTH,
        ) {
            let _ = self.refuse(Gate::Event, &GateError::Limit(error));
            return;
        }
        let (owned, others) = self.domain_sets();
        if let Err(error) = gates::may_fire_event(self.group(), &owned, &others, &event.event_type)
        {
            let _ = self.refuse(Gate::Event, &error);
            return;
        }
        let data = match limits::bounded_object(
            "event data_json",
            &event.data_json,
            limits::MAX_EVENT_DATA_BYTES,
        ) {
            Ok(data) => data,
            Err(error) => {
                let _ = self.refuse(Gate::Event, &GateError::Limit(error));
                return;
            }
        };
        let context = self.context(event.context_id.as_deref());
        if let Err(error) = self.core.bus().fire_with_origin(
            &event.event_type,
            data,
            Some(context),
            EventOrigin::Remote,
        ) {
            let _ = self.refused.refuse(Gate::Event, &error);
        }
    }

    /// `update_entry`: only entries of this group, data and options bounded.
    pub fn update_entry(
        &self,
        request: wire::UpdateEntry,
    ) -> Result<wire::UpdateEntryResult, RemoteError> {
        gates::entry_of_group(&self.core, self.group(), &request.entry_id)
            .map_err(|error| self.refuse(Gate::ForeignEntry, &error))?;
        let texts = [
            ("title", request.title.as_ref()),
            ("unique_id", request.unique_id.as_ref()),
        ];
        for (field, text) in texts {
            if let Some(text) = text {
                limits::check_text(field, text, limits::MAX_TEXT_BYTES)
                    .map_err(|error| self.over_bound(error))?;
            }
        }
        let object = |bytes: Option<&bytes::Bytes>, field: &str| -> Result<_, RemoteError> {
            bytes
                .map(|bytes| {
                    limits::bounded_object(field, bytes, limits::MAX_ENTRY_DATA_BYTES)
                        .map_err(|error| self.over_bound(error))
                })
                .transpose()
        };
        let update = ConfigEntryUpdate {
            title: request.title.clone(),
            data: object(request.data_json.as_ref(), "data_json")?,
            options: object(request.options_json.as_ref(), "options_json")?,
            unique_id: request.unique_id.clone().map(Some),
            ..ConfigEntryUpdate::default()
        };
        self.core
            .config_entries()
            .update_entry(&request.entry_id, update)
            .map_err(|error| RemoteError::bad_request(error.to_string()))?;
        Ok(wire::UpdateEntryResult {})
    }
}

/// What main's registries hold for a group's config entries.
struct RegistryFootprint {
    /// Entity registry entries.
    entries: usize,
    /// Devices.
    devices: usize,
    /// Their estimated size ([`limits::held_size`] of each one's JSON).
    bytes: usize,
}

/// The entity registry entries and devices main holds for `group`'s config entries: counted
/// once per bridge (per `ready`), then kept up to date by the registrations it takes.
fn registry_footprint(core: &Core, group: &str) -> RegistryFootprint {
    let entries: HashSet<String> = core
        .config_entries()
        .entries(None)
        .into_iter()
        .filter(|entry| entry.sandbox.as_deref() == Some(group))
        .map(|entry| entry.entry_id)
        .collect();
    let size =
        |value: serde_json::Result<Vec<u8>>| value.map_or(0, |json| limits::held_size(&json));
    let mut footprint = RegistryFootprint {
        entries: 0,
        devices: 0,
        bytes: 0,
    };
    for registered in core.entity_registry().entries() {
        if registered
            .config_entry_id
            .as_ref()
            .is_some_and(|entry_id| entries.contains(entry_id))
        {
            footprint.entries += 1;
            footprint.bytes += size(serde_json::to_vec(&registered));
        }
    }
    for device in core.device_registry().devices() {
        if device.config_entries.iter().any(|id| entries.contains(id)) {
            footprint.devices += 1;
            footprint.bytes += size(serde_json::to_vec(&device));
        }
    }
    footprint
}

/// Answers a failed store request: refusals (bad keys, values, quotas) are counted and logged
/// within budget, IO failures logged.
fn store_refusal(refused: &GateCounters, key: &str, error: &StoreServerError) -> RemoteError {
    let remote = RemoteError::from(error);
    let is_refusal = matches!(
        remote.kind,
        sandbox_proto::error::ErrorKind::BadRequest | sandbox_proto::error::ErrorKind::Quota
    );
    if is_refusal {
        refused.refuse_as(Gate::Store, remote.kind, &remote.message)
    } else {
        tracing::error!(group = %refused.group(), key = %key.chars().take(limits::MAX_TEXT_BYTES).collect::<String>(), %error, "a sandbox store request failed");
        remote
    }
}

/// Where a group's channel handlers find the current bridge; empty until the group is ready.
pub type BridgeSlot = Arc<Mutex<Option<Arc<Bridge>>>>;

/// The current bridge, or a counted `not_ready` refusal: before the first `ready`, and between
/// a crash and the respawned process's `ready` (the slot still holds the dead process's bridge
/// then, which must not serve the new process before it said `ready`).
fn current(slot: &BridgeSlot, refused: &GateCounters) -> Result<Arc<Bridge>, RemoteError> {
    match slot.lock().clone() {
        Some(bridge) if bridge.is_live() => Ok(bridge),
        _ => Err(refused.refuse(
            Gate::NotReady,
            &GateError::NotReady {
                group: refused.group().to_owned(),
            },
        )),
    }
}

/// Adds main's handlers for a group's channel: the store server (usable before `ready`, for
/// the warm load) and the bridge's handlers (which need the group to be ready).
pub fn install_handlers(
    builder: ChannelBuilder,
    slot: &BridgeSlot,
    store: Arc<GroupStore>,
    refused: Arc<GateCounters>,
) -> ChannelBuilder {
    // Every bridge handler finds the current bridge the same way: a request before `ready`
    // is a counted refusal.
    let bridge_of = {
        let (slot, refused) = (Arc::clone(slot), Arc::clone(&refused));
        move || current(&slot, &refused)
    };
    let (store_load, store_save, store_remove) = (Arc::clone(&store), Arc::clone(&store), store);
    let (load_refused, save_refused, remove_refused) =
        (Arc::clone(&refused), Arc::clone(&refused), refused);
    let builder = builder
        .on_call::<wire::StoreLoad, _, _>(move |request, _| {
            let (store, refused) = (Arc::clone(&store_load), Arc::clone(&load_refused));
            async move {
                let envelope_json = store
                    .load(&request.key)
                    .await
                    .map_err(|error| store_refusal(&refused, &request.key, &error))?;
                Ok(wire::StoreLoadResult { envelope_json })
            }
        })
        .on_call::<wire::StoreSave, _, _>(move |request, _| {
            let (store, refused) = (Arc::clone(&store_save), Arc::clone(&save_refused));
            async move {
                store
                    .save(&request.key, &request.envelope_json)
                    .await
                    .map_err(|error| store_refusal(&refused, &request.key, &error))?;
                Ok(wire::StoreSaveResult {})
            }
        })
        .on_call::<wire::StoreRemove, _, _>(move |request, _| {
            let (store, refused) = (Arc::clone(&store_remove), Arc::clone(&remove_refused));
            async move {
                store
                    .remove(&request.key)
                    .await
                    .map_err(|error| store_refusal(&refused, &request.key, &error))?;
                Ok(wire::StoreRemoveResult {})
            }
        });
    let b = bridge_of.clone();
    let builder = builder.on_call::<wire::RegisterEntity, _, _>(move |request, _| {
        let bridge = b();
        async move { bridge?.register_entity(request).await }
    });
    let b = bridge_of.clone();
    let builder = builder.on_call::<wire::UnregisterEntity, _, _>(move |request, _| {
        let bridge = b();
        async move { bridge?.unregister_entity(request).await }
    });
    let b = bridge_of.clone();
    let builder = builder.on_push_inline::<wire::StateChanged, _>(move |change| {
        if let Ok(bridge) = b() {
            bridge.state_changed(change);
        }
    });
    let b = bridge_of.clone();
    let builder = builder.on_call::<wire::RegisterService, _, _>(move |request, _| {
        let bridge = b();
        async move { bridge?.register_service(request) }
    });
    let b = bridge_of.clone();
    let builder = builder.on_call::<wire::UnregisterService, _, _>(move |request, _| {
        let bridge = b();
        async move { bridge?.unregister_service(request) }
    });
    let b = bridge_of.clone();
    let builder = builder.on_push_inline::<wire::FireEvent, _>(move |event| {
        if let Ok(bridge) = b() {
            bridge.fire_event(event);
        }
    });
    builder.on_call::<wire::UpdateEntry, _, _>(move |request, _| {
        let bridge = bridge_of();
        async move { bridge?.update_entry(request) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use homecore::config_entries::{ConfigEntryRouter, Routed, RoutedFlow, SetupError};
    use homecore::schema::{Field, FieldType, PathSegment};
    use homecore::{ConfigEntry, CoreConfig, FlowContext, FlowError, ServiceRequest};
    use sandbox_proto::ChannelConfig;
    use sandbox_proto::test_util::channel_pair;
    use serde_json::json;

    /// The group every test bridge serves.
    const GROUP: &str = "built-in";

    /// Takes every entry setup and unload as done elsewhere, the way the sandbox router takes
    /// a sandboxed entry's: entries load on a bare core without any local code.
    struct EntriesSetUpElsewhere;

    impl ConfigEntryRouter for EntriesSetUpElsewhere {
        fn create_flow<'a>(
            &'a self,
            _domain: &'a str,
            _context: &'a FlowContext,
            _data: Option<&'a serde_json::Map<String, serde_json::Value>>,
        ) -> BoxFuture<'a, Result<Routed<RoutedFlow>, FlowError>> {
            Box::pin(async { Ok(Routed::NotMine) })
        }

        fn setup_entry<'a>(
            &'a self,
            _entry: &'a ConfigEntry,
        ) -> BoxFuture<'a, Routed<Result<(), SetupError>>> {
            Box::pin(async { Routed::Taken(Ok(())) })
        }

        fn unload_entry<'a>(
            &'a self,
            _entry: &'a ConfigEntry,
        ) -> BoxFuture<'a, Routed<Result<(), String>>> {
            Box::pin(async { Routed::Taken(Ok(())) })
        }
    }

    /// Main with a loaded `demo` entry of [`GROUP`], a live bridge for it, and the in-memory
    /// sandbox on the other end of the bridge's channel, which counts the `call_service` calls
    /// it receives.
    struct Fixture {
        core: Core,
        bridge: Arc<Bridge>,
        entry_id: String,
        sandbox_calls: Arc<AtomicUsize>,
        main: Channel,
        sandbox: Channel,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Self {
            Self::with_registry_budget(limits::MAX_GROUP_REGISTRY_BYTES).await
        }

        /// A fixture whose group may hold `max_registry_bytes` of registry entries and devices.
        async fn with_registry_budget(max_registry_bytes: usize) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let core = Core::builder(CoreConfig::new(dir.path()))
                .build()
                .expect("core");
            core.config_entries()
                .set_router(Some(Arc::new(EntriesSetUpElsewhere)));
            let mut entry = ConfigEntry::new("demo", "Demo", serde_json::Map::new(), "user");
            entry.sandbox = Some(GROUP.to_owned());
            let entry = core.config_entries().add(entry).await.expect("entry added");
            assert_eq!(entry.state, homecore::ConfigEntryState::Loaded);
            let sandbox_calls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&sandbox_calls);
            let sandbox = ChannelBuilder::new(ChannelConfig::named("sandbox"))
                .on_call::<wire::CallService, _, _>(move |_, _| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { Ok(wire::CallServiceResult::default()) }
                });
            let (main, sandbox) =
                channel_pair(ChannelBuilder::new(ChannelConfig::named("main")), sandbox);
            let bridge = Bridge::with_registry_budget(
                core.clone(),
                GROUP,
                main.clone(),
                Arc::new(ContextCache::new()),
                Arc::new(GateCounters::new(GROUP)),
                &BTreeSet::from(["entity_outcomes".to_owned()]),
                limits::MAX_ENTITIES_PER_GROUP,
                max_registry_bytes,
            );
            Self {
                core,
                bridge,
                entry_id: entry.entry_id,
                sandbox_calls,
                main,
                sandbox,
                _dir: dir,
            }
        }

        /// A sensor of the demo entry, as the sandbox describes it.
        fn sensor(&self, name: &str, device_class: Option<&str>) -> wire::RegisterEntity {
            wire::RegisterEntity {
                description: Some(wire::EntityDescription {
                    entity_id: "sensor.outside".into(),
                    entry_id: self.entry_id.clone(),
                    platform: "demo".into(),
                    domain: "sensor".into(),
                    unique_id: Some("outside".into()),
                    name: Some(name.into()),
                    device_class: device_class.map(str::to_owned),
                    unit_of_measurement: Some("°C".into()),
                    entity_registry_enabled_default: true,
                    ..Default::default()
                }),
                state: Some(wire::EntityState {
                    state: "21.5".into(),
                    attributes_json: b"{}".to_vec().into(),
                    available: true,
                }),
                context_id: None,
            }
        }

        /// A sensor of the demo entry with unique id `unique_id` and a list of options of
        /// `capabilities` bytes (none for 0).
        fn sensor_with_options(
            &self,
            unique_id: &str,
            capabilities: usize,
        ) -> wire::RegisterEntity {
            let mut request = self.sensor("Outside", None);
            let description = request.description.as_mut().expect("a description");
            description.entity_id = format!("sensor.{unique_id}");
            description.unique_id = Some(unique_id.to_owned());
            if capabilities > 0 {
                let option = "x".repeat(capabilities - 64);
                description.capabilities_json = serde_json::to_vec(&json!({"options": [option]}))
                    .expect("capabilities serialize")
                    .into();
            }
            request
        }

        /// Bytes of capabilities the demo entry's entity registry entries hold on main.
        fn registered_capabilities_bytes(&self) -> usize {
            self.core
                .entity_registry()
                .entries_for_config_entry(&self.entry_id)
                .iter()
                .filter_map(|entry| entry.capabilities.as_ref())
                .map(|capabilities| serde_json::to_vec(capabilities).map_or(0, |json| json.len()))
                .sum()
        }

        fn service(&self, service: &str, schema: Option<&Schema>) -> wire::RegisterService {
            wire::RegisterService {
                domain: "demo".into(),
                service: service.into(),
                supports_response: wire::SupportsResponse::None as i32,
                schema_json: schema
                    .map(|schema| serde_json::to_vec(schema).expect("a schema serializes"))
                    .unwrap_or_default()
                    .into(),
            }
        }

        fn unregister(&self, domain: &str, service: &str) -> wire::UnregisterService {
            wire::UnregisterService {
                domain: domain.into(),
                service: service.into(),
            }
        }

        async fn close(self) {
            self.main.close().await;
            self.sandbox.close().await;
        }
    }

    #[tokio::test]
    async fn a_redescription_renames_the_proxy_and_drops_its_device_class() {
        let hub = Fixture::new().await;
        let registered = hub
            .bridge
            .register_entity(hub.sensor("Outside", Some("temperature")))
            .await
            .expect("registered");
        let entity_id = registered.entity_id;
        let state = hub.core.states().get(&entity_id).expect("a state");
        assert_eq!(
            state.attributes.get("friendly_name"),
            Some(&json!("Outside"))
        );
        assert_eq!(
            state.attributes.get("device_class"),
            Some(&json!("temperature"))
        );
        // The sandbox's registry renamed the entity and its device class went away.
        let redescribed = hub
            .bridge
            .register_entity(hub.sensor("Garden", None))
            .await
            .expect("re-described");
        assert_eq!(redescribed.entity_id, entity_id, "the same proxy");
        let state = hub.core.states().get(&entity_id).expect("a state");
        assert_eq!(
            state.attributes.get("friendly_name"),
            Some(&json!("Garden"))
        );
        assert_eq!(
            state.attributes.get("device_class"),
            None,
            "{:?}",
            state.attributes
        );
        let registry = hub.core.entity_registry().get(&entity_id).expect("entry");
        assert_eq!(registry.original_name.as_deref(), Some("Garden"));
        assert_eq!(registry.original_device_class, None);
        assert_eq!(hub.bridge.entity_count(), 1);
        assert!(
            hub.bridge
                .refused
                .snapshot()
                .iter()
                .all(|(_, count)| *count == 0),
            "{:?}",
            hub.bridge.refused.snapshot()
        );
        hub.close().await;
    }

    /// The registry byte budget of the tests below: room for a dozen entries with full
    /// capabilities.
    const SMALL_REGISTRY_BUDGET: usize = 256 * 1024;

    /// Registers a sensor with no capabilities, then has `grow` give its registry entry full
    /// capabilities, then unregisters it (its registry entry stays), for ever new unique ids;
    /// returns how many times `grow` was refused.
    async fn churn_registry_entries(
        hub: &Fixture,
        grow: impl Fn(&Fixture, String) -> BoxFuture<'_, Result<(), RemoteError>>,
    ) -> usize {
        let mut refused = 0;
        for index in 0..40 {
            let unique_id = format!("churn_{index}");
            hub.bridge
                .register_entity(hub.sensor_with_options(&unique_id, 0))
                .await
                .expect("a small registration fits");
            if let Err(error) = grow(hub, unique_id.clone()).await {
                assert_eq!(error.kind, sandbox_proto::error::ErrorKind::Refused);
                refused += 1;
            }
            let _ = hub
                .bridge
                .unregister_entity(wire::UnregisterEntity {
                    entity_id: format!("sensor.{unique_id}"),
                })
                .await;
            if refused > 0 {
                break;
            }
        }
        refused
    }

    #[tokio::test]
    async fn redescriptions_growing_registry_entries_are_held_to_the_registry_budget() {
        let hub = Fixture::with_registry_budget(SMALL_REGISTRY_BUDGET).await;
        // Shrinking gives bytes back, growing again takes them.
        hub.bridge
            .register_entity(hub.sensor_with_options("kept", limits::MAX_CAPABILITIES_BYTES))
            .await
            .expect("registered");
        let full = hub.bridge.registry_bytes.load(Ordering::Acquire);
        hub.bridge
            .register_entity(hub.sensor_with_options("kept", 0))
            .await
            .expect("re-described smaller");
        let emptied = hub.bridge.registry_bytes.load(Ordering::Acquire);
        assert!(
            emptied + limits::MAX_CAPABILITIES_BYTES <= full,
            "{emptied} after {full}"
        );
        hub.bridge
            .register_entity(hub.sensor_with_options("kept", limits::MAX_CAPABILITIES_BYTES))
            .await
            .expect("re-described larger again");
        assert_eq!(hub.bridge.registry_bytes.load(Ordering::Acquire), full);
        // Register small, re-describe large, unregister: the registry entries stay and grow.
        let refused = churn_registry_entries(&hub, |hub, unique_id| {
            Box::pin(async move {
                hub.bridge
                    .register_entity(
                        hub.sensor_with_options(&unique_id, limits::MAX_CAPABILITIES_BYTES),
                    )
                    .await
                    .map(drop)
            })
        })
        .await;
        assert_eq!(refused, 1, "the budget was never reached");
        assert_eq!(hub.bridge.refused.count(Gate::Bounds), 1);
        assert!(hub.bridge.registry_bytes.load(Ordering::Acquire) <= SMALL_REGISTRY_BUDGET);
        assert!(hub.registered_capabilities_bytes() <= SMALL_REGISTRY_BUDGET);
        hub.close().await;
    }

    #[tokio::test]
    async fn registering_a_known_unique_id_again_is_held_to_the_registry_budget() {
        let hub = Fixture::with_registry_budget(SMALL_REGISTRY_BUDGET).await;
        // Register small, unregister, register the same unique id large, unregister.
        let refused = churn_registry_entries(&hub, |hub, unique_id| {
            Box::pin(async move {
                hub.bridge
                    .unregister_entity(wire::UnregisterEntity {
                        entity_id: format!("sensor.{unique_id}"),
                    })
                    .await?;
                hub.bridge
                    .register_entity(
                        hub.sensor_with_options(&unique_id, limits::MAX_CAPABILITIES_BYTES),
                    )
                    .await
                    .map(drop)
            })
        })
        .await;
        assert_eq!(refused, 1, "the budget was never reached");
        assert_eq!(hub.bridge.refused.count(Gate::Bounds), 1);
        assert!(hub.bridge.registry_bytes.load(Ordering::Acquire) <= SMALL_REGISTRY_BUDGET);
        assert!(hub.registered_capabilities_bytes() <= SMALL_REGISTRY_BUDGET);
        hub.close().await;
    }

    #[tokio::test]
    async fn a_redescription_growing_the_device_is_charged_what_it_grows_by() {
        let hub = Fixture::new().await;
        let with_device = |name: &str, identifiers: &[&str]| {
            let mut request = hub.sensor("Outside", None);
            request.description.as_mut().expect("a description").device = Some(wire::DeviceInfo {
                identifiers: identifiers
                    .iter()
                    .map(|id| wire::StringPair {
                        first: "demo".into(),
                        second: (*id).into(),
                    })
                    .collect(),
                name: Some(name.into()),
                ..Default::default()
            });
            request
        };
        hub.bridge
            .register_entity(with_device("Hub", &["hub"]))
            .await
            .expect("registered");
        let before = hub.bridge.registry_bytes.load(Ordering::Acquire);
        let long_name = "n".repeat(200);
        hub.bridge
            .register_entity(with_device(&long_name, &["hub", "second"]))
            .await
            .expect("re-described");
        let grown = hub.bridge.registry_bytes.load(Ordering::Acquire);
        let device = &hub.core.device_registry().devices()[0];
        assert_eq!(device.identifiers.len(), 2, "merged into the device");
        assert_eq!(
            grown - before,
            long_name.len() - "Hub".len()
                + "demo".len()
                + "second".len()
                + limits::JSON_VALUE_OVERHEAD
        );
        // Back to the short name: the name's bytes come back, the merged identifier stays.
        hub.bridge
            .register_entity(with_device("Hub", &["hub"]))
            .await
            .expect("re-described");
        assert_eq!(
            hub.bridge.registry_bytes.load(Ordering::Acquire),
            before + "demo".len() + "second".len() + limits::JSON_VALUE_OVERHEAD
        );
        hub.close().await;
    }

    #[tokio::test]
    async fn a_redescription_may_not_change_the_platform() {
        let hub = Fixture::new().await;
        let registered = hub
            .bridge
            .register_entity(hub.sensor("Outside", None))
            .await
            .expect("registered");
        let mut moved = hub.sensor("Outside", None);
        moved.description.as_mut().expect("a description").platform = "other".into();
        let error = hub
            .bridge
            .register_entity(moved)
            .await
            .expect_err("another platform");
        assert_eq!(error.kind, sandbox_proto::error::ErrorKind::Refused);
        assert_eq!(hub.bridge.refused.count(Gate::Entity), 1);
        let entries: Vec<String> = hub
            .core
            .entity_registry()
            .entries_for_config_entry(&hub.entry_id)
            .into_iter()
            .map(|entry| entry.entity_id)
            .collect();
        assert_eq!(entries, [registered.entity_id]);
        let proxy = hub.bridge.proxies.lock()["sensor.outside"]
            .proxy
            .description();
        assert_eq!(proxy.platform, "demo");
        hub.close().await;
    }

    #[tokio::test]
    async fn a_redescription_whose_registries_are_not_refreshed_gives_its_reservation_back() {
        let hub = Fixture::new().await;
        let registered = hub
            .bridge
            .register_entity(hub.sensor_with_options("outside", 0))
            .await
            .expect("registered");
        // Main removed the entity behind the proxy's back: the refresh finds nothing.
        let platform = hub.bridge.proxies.lock()["sensor.outside"].platform.clone();
        platform
            .remove_entity(&registered.entity_id)
            .await
            .expect("removed");
        let before = hub.bridge.registry_bytes.load(Ordering::Acquire);
        hub.bridge
            .register_entity(hub.sensor_with_options("outside", limits::MAX_CAPABILITIES_BYTES))
            .await
            .expect("re-described");
        assert_eq!(hub.bridge.registry_bytes.load(Ordering::Acquire), before);
        hub.close().await;
    }

    #[tokio::test]
    async fn teardown_removes_the_groups_services_and_it_unregisters_only_its_own() {
        let hub = Fixture::new().await;
        for service in ["one", "two", "three"] {
            hub.bridge
                .register_service(hub.service(service, None))
                .expect("registered");
        }
        // Main's own services, in the group's domain and in another one.
        let handler: ServiceHandler = Arc::new(|_| Box::pin(async { Ok(None) }));
        for (domain, service) in [("demo", "mains_own"), ("homeassistant", "restart")] {
            hub.core
                .services()
                .register_handler(
                    domain,
                    service,
                    None,
                    SupportsResponse::None,
                    Arc::clone(&handler),
                )
                .expect("main registers");
        }
        hub.bridge
            .unregister_service(hub.unregister("demo", "one"))
            .expect("its own service");
        assert!(!hub.core.services().has_service("demo", "one"));
        assert!(hub.core.services().has_service("demo", "two"));
        for (domain, service) in [
            ("demo", "mains_own"),
            ("homeassistant", "restart"),
            ("demo", "one"),
        ] {
            let error = hub
                .bridge
                .unregister_service(hub.unregister(domain, service))
                .expect_err("not the group's");
            assert_eq!(error.kind, sandbox_proto::error::ErrorKind::Refused);
        }
        assert_eq!(hub.bridge.refused.count(Gate::Service), 3);
        assert!(hub.core.services().has_service("demo", "mains_own"));
        assert!(hub.core.services().has_service("homeassistant", "restart"));
        hub.bridge.teardown().await;
        for service in ["one", "two", "three"] {
            assert!(
                !hub.core.services().has_service("demo", service),
                "demo.{service} outlived the bridge"
            );
        }
        assert!(hub.core.services().has_service("demo", "mains_own"));
        assert!(hub.core.services().has_service("homeassistant", "restart"));
        hub.close().await;
    }

    #[tokio::test]
    async fn service_data_failing_the_registered_schema_never_reaches_the_sandbox() {
        let hub = Fixture::new().await;
        let schema = Schema::new(vec![
            Field::required("message", FieldType::string()),
            Field::optional(
                "advanced",
                FieldType::section(
                    Schema::new(vec![Field::optional(
                        "repeat",
                        FieldType::integer_range(1, 5),
                    )]),
                    true,
                ),
            ),
        ]);
        hub.bridge
            .register_service(hub.service("notify", Some(&schema)))
            .expect("registered");
        let call = |data: serde_json::Value| {
            let serde_json::Value::Object(data) = data else {
                panic!("service data is an object");
            };
            hub.core
                .services()
                .call(ServiceRequest::new("demo", "notify").with_data(data))
        };
        let Err(ServiceError::Validation(errors)) =
            call(json!({"message": "hi", "advanced": {"repeat": 9}})).await
        else {
            panic!("data out of range was not refused on main");
        };
        assert_eq!(
            errors
                .errors
                .iter()
                .map(|error| &error.path)
                .collect::<Vec<_>>(),
            vec![&vec![
                PathSegment::Key("advanced".into()),
                PathSegment::Key("repeat".into())
            ]],
            "{errors}"
        );
        let Err(ServiceError::Validation(errors)) = call(json!({})).await else {
            panic!("data without a required field was not refused on main");
        };
        assert_eq!(
            errors.errors[0].path,
            vec![PathSegment::Key("message".into())],
            "{errors}"
        );
        assert_eq!(
            hub.sandbox_calls.load(Ordering::SeqCst),
            0,
            "invalid data reached the sandbox"
        );
        // Valid data goes through: the count above can move.
        call(json!({"message": "hi", "advanced": {"repeat": "3"}}))
            .await
            .expect("valid data is forwarded");
        assert_eq!(hub.sandbox_calls.load(Ordering::SeqCst), 1);
        hub.close().await;
    }

    #[tokio::test]
    async fn a_dead_processs_bridge_serves_nobody_until_the_next_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = Core::builder(CoreConfig::new(dir.path()))
            .build()
            .expect("core");
        let (main, sandbox) = channel_pair(
            ChannelBuilder::new(ChannelConfig::named("main")),
            ChannelBuilder::new(ChannelConfig::named("sandbox")),
        );
        let refused = Arc::new(GateCounters::new("built-in"));
        let slot: BridgeSlot = Arc::default();
        assert!(current(&slot, &refused).is_err(), "before the first ready");
        let bridge = Bridge::new(
            core,
            "built-in",
            main.clone(),
            Arc::new(ContextCache::new()),
            Arc::clone(&refused),
            &BTreeSet::from(["entity_outcomes".to_owned()]),
            limits::MAX_ENTITIES_PER_GROUP,
        );
        *slot.lock() = Some(Arc::clone(&bridge));
        assert!(current(&slot, &refused).is_ok());
        // The process died: until the respawned one says ready, its requests find no bridge.
        bridge.mark_unavailable();
        let Err(error) = current(&slot, &refused) else {
            panic!("the dead process's bridge served a request");
        };
        assert_eq!(error.kind, sandbox_proto::error::ErrorKind::Refused);
        assert_eq!(refused.count(Gate::NotReady), 2);
        main.close().await;
        sandbox.close().await;
    }
}
