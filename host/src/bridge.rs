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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use homecore::entity_platform::EntityPlatform;
use homecore::event::EventOrigin;
use homecore::service::ServiceHandler;
use homecore::{ConfigEntryUpdate, Core, Schema, ServiceError, SupportsResponse};
use parking_lot::Mutex;
use sandbox_proto::{Channel, ChannelBuilder, RemoteError, json, wire};
use sandbox_runtime::convert::service_error_from_remote;

use crate::context_cache::ContextCache;
use crate::gates::{self, GateError};
use crate::proxy::{PROXY_CALL_TIMEOUT, ProxyEntity, ProxyLink};
use crate::store_server::{GroupStore, StoreServerError};

/// Refusals per gate, for a group's status.
#[derive(Debug, Default)]
pub struct GateCounters {
    /// `register_entity` for an entry of another group.
    pub foreign_entry: AtomicU64,
    /// A device merging into another group's device.
    pub foreign_device: AtomicU64,
    /// An entity of a domain that cannot be proxied.
    pub unproxyable: AtomicU64,
    /// `register_service` outside the owned domains, or over an existing service.
    pub service: AtomicU64,
    /// `fire_event` outside `<owned>_*`, or a core event.
    pub event: AtomicU64,
    /// Store requests over quota or with bad keys.
    pub store: AtomicU64,
}

/// One entity's proxy and where it is attached.
struct ProxyRecord {
    proxy: Arc<ProxyEntity>,
    entry_id: String,
    platform: EntityPlatform,
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
}

impl Bridge {
    /// A bridge for `group` over `channel`.
    pub fn new(
        core: Core,
        group: &str,
        channel: Channel,
        contexts: Arc<ContextCache>,
        refused: Arc<GateCounters>,
        joins_entity_calls: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            core,
            link: Arc::new(ProxyLink {
                group: group.to_owned(),
                channel,
                alive: AtomicBool::new(true),
                contexts,
                joins_entity_calls,
                open_batches: Mutex::default(),
            }),
            proxies: Mutex::default(),
            platforms: Mutex::default(),
            services: Mutex::default(),
            refused,
            torn_down: AtomicBool::new(false),
        })
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
        let proxy_domains: Vec<String> = self
            .platforms
            .lock()
            .keys()
            .map(|(_, domain)| domain.clone())
            .collect();
        gates::owned_domains(&self.core, self.group(), proxy_domains)
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
        self.proxies
            .lock()
            .retain(|_, record| record.entry_id != entry_id);
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
    }

    fn refuse(&self, counter: &AtomicU64, error: &GateError) -> RemoteError {
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(group = %self.group(), %error, "refused a sandbox request");
        RemoteError::refused(error.to_string())
    }

    /// `register_entity`: a new proxy, or an existing one re-described in place.
    pub async fn register_entity(
        &self,
        request: wire::RegisterEntity,
    ) -> Result<wire::RegisterEntityResult, RemoteError> {
        if self.torn_down.load(Ordering::Acquire) {
            return Err(RemoteError::refused("this channel's bridge was replaced"));
        }
        let description = request
            .description
            .ok_or_else(|| RemoteError::bad_request("register_entity needs a description"))?;
        let entry = gates::entry_of_group(&self.core, self.group(), &description.entry_id)
            .map_err(|error| self.refuse(&self.refused.foreign_entry, &error))?;
        let proxyable = homecore::catalog::catalog()
            .domain(&description.domain)
            .is_some_and(|spec| spec.proxyable);
        if !proxyable {
            let error = GateError::UnownedDomain {
                domain: description.domain.clone(),
                group: self.group().to_owned(),
            };
            return Err(self.refuse(&self.refused.unproxyable, &error));
        }
        if let Some(device) = &description.device {
            self.check_device(device)
                .map_err(|error| self.refuse(&self.refused.foreign_device, &error))?;
        }
        // Re-description of an entity already proxied (a registry update in the sandbox).
        let existing = self
            .proxies
            .lock()
            .get(&description.entity_id)
            .map(|record| Arc::clone(&record.proxy));
        if let Some(proxy) = existing {
            proxy.redescribe(description, request.state.as_ref());
            return Ok(wire::RegisterEntityResult {
                entity_id: proxy.entity_id().unwrap_or_default(),
            });
        }
        let platform = self.platform(&entry, &description.domain)?;
        let sandbox_entity_id = description.entity_id.clone();
        let proxy = Arc::new(ProxyEntity::new(
            Arc::clone(&self.link),
            description,
            request.state.as_ref(),
        ));
        let added = platform
            .add_entity(Arc::clone(&proxy) as Arc<dyn homecore::entity::Entity>)
            .await
            .map_err(|error| {
                RemoteError::handler(format!("the proxy could not be added: {error}"))
            })?;
        let entity_id = added.unwrap_or_default();
        self.proxies.lock().insert(
            sandbox_entity_id,
            ProxyRecord {
                proxy,
                entry_id: entry.entry_id.clone(),
                platform,
            },
        );
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

    /// A device may only merge into devices whose every config entry belongs to this group.
    /// Every device matching any identifier or connection is checked, not just the first: a
    /// description listing the group's own device first and a foreign identifier after it must
    /// not pull the foreign identifier into the group's device.
    fn check_device(&self, device: &wire::DeviceInfo) -> Result<(), GateError> {
        use homecore::device_registry::normalize_connection;
        let identifiers: Vec<(String, String)> = device
            .identifiers
            .iter()
            .map(|pair| (pair.first.clone(), pair.second.clone()))
            .collect();
        let connections: Vec<(String, String)> = device
            .connections
            .iter()
            .map(|pair| normalize_connection(&(pair.first.clone(), pair.second.clone())))
            .collect();
        for existing in self.core.device_registry().devices() {
            let matched = identifiers
                .iter()
                .find(|key| existing.identifiers.contains(key))
                .or_else(|| {
                    connections.iter().find(|key| {
                        existing
                            .connections
                            .iter()
                            .any(|known| normalize_connection(known) == **key)
                    })
                });
            let Some((kind, value)) = matched else {
                continue;
            };
            for entry_id in &existing.config_entries {
                if gates::entry_of_group(&self.core, self.group(), entry_id).is_err() {
                    return Err(GateError::ForeignDevice {
                        identifier: format!("({kind}, {value})"),
                        group: self.group().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `unregister_entity`.
    pub async fn unregister_entity(
        &self,
        request: wire::UnregisterEntity,
    ) -> wire::UnregisterEntityResult {
        let record = self.proxies.lock().remove(&request.entity_id);
        if let Some(record) = record
            && let Some(entity_id) = record.proxy.entity_id()
            && let Err(error) = record.platform.remove_entity(&entity_id).await
        {
            tracing::debug!(group = %self.group(), %entity_id, %error, "proxy already gone");
        }
        wire::UnregisterEntityResult {}
    }

    /// `state_changed`: applied in arrival order (an inline handler).
    pub fn state_changed(&self, change: wire::StateChanged) {
        if self.torn_down.load(Ordering::Acquire) {
            return;
        }
        let proxy = self
            .proxies
            .lock()
            .get(&change.entity_id)
            .map(|record| Arc::clone(&record.proxy));
        match proxy {
            Some(proxy) => {
                let context = self.link.contexts.resolve(change.context_id.as_deref());
                proxy.apply_state(&change, context);
            }
            None => {
                tracing::debug!(group = %self.group(), entity_id = %change.entity_id, "state of an unknown entity")
            }
        }
    }

    /// `register_service`: only in an owned domain, never over an existing service; calls are
    /// forwarded to the sandbox.
    pub fn register_service(
        self: &Arc<Self>,
        request: wire::RegisterService,
    ) -> Result<wire::RegisterServiceResult, RemoteError> {
        let owned = self.owned_domains();
        gates::may_register_service(
            &self.core,
            self.group(),
            &owned,
            &request.domain,
            &request.service,
        )
        .map_err(|error| self.refuse(&self.refused.service, &error))?;
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
        registered.map_err(|error| RemoteError::bad_request(error.to_string()))?;
        self.services
            .lock()
            .insert((request.domain, request.service));
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
        match result.response_json {
            Some(bytes) => json::from_bytes(&bytes)
                .map(Some)
                .map_err(|error| ServiceError::handler(format!("unreadable response: {error}"))),
            None => Ok(None),
        }
    }

    /// `unregister_service`: only services this group registered.
    pub fn unregister_service(
        &self,
        request: wire::UnregisterService,
    ) -> wire::UnregisterServiceResult {
        if self
            .services
            .lock()
            .remove(&(request.domain.clone(), request.service.clone()))
        {
            self.core
                .services()
                .remove(&request.domain, &request.service);
        }
        wire::UnregisterServiceResult {}
    }

    /// `fire_event`: only `<owned>_*`, never a core event; dropped otherwise.
    pub fn fire_event(&self, event: wire::FireEvent) {
        let owned = self.owned_domains();
        if let Err(error) = gates::may_fire_event(self.group(), &owned, &event.event_type) {
            let _ = self.refuse(&self.refused.event, &error);
            return;
        }
        let data = match json::object_from_bytes(&event.data_json) {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(group = %self.group(), %error, "dropped an event with unreadable data");
                return;
            }
        };
        let context = self.link.contexts.resolve(event.context_id.as_deref());
        if let Err(error) = self.core.bus().fire_with_origin(
            &event.event_type,
            data,
            Some(context),
            EventOrigin::Remote,
        ) {
            tracing::warn!(group = %self.group(), %error, "dropped an invalid event");
        }
    }

    /// `update_entry`: only entries of this group.
    pub fn update_entry(
        &self,
        request: wire::UpdateEntry,
    ) -> Result<wire::UpdateEntryResult, RemoteError> {
        gates::entry_of_group(&self.core, self.group(), &request.entry_id)
            .map_err(|error| self.refuse(&self.refused.foreign_entry, &error))?;
        let object = |bytes: Option<&bytes::Bytes>, field: &str| -> Result<_, RemoteError> {
            bytes
                .map(|bytes| {
                    json::object_from_bytes(bytes)
                        .map_err(|error| RemoteError::bad_request(format!("{field}: {error}")))
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

/// Answers a failed store request: refusals (bad keys, quotas) are counted and logged, IO
/// failures only logged.
fn store_refusal(refused: &GateCounters, key: &str, error: &StoreServerError) -> RemoteError {
    let remote = RemoteError::from(error);
    let is_refusal = matches!(
        remote.kind,
        sandbox_proto::error::ErrorKind::BadRequest | sandbox_proto::error::ErrorKind::Quota
    );
    if is_refusal {
        refused.store.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key, %error, "refused a sandbox store request");
    } else {
        tracing::error!(key, %error, "a sandbox store request failed");
    }
    remote
}

/// Where a group's channel handlers find the current bridge; empty until the group is ready.
pub type BridgeSlot = Arc<Mutex<Option<Arc<Bridge>>>>;

fn current(slot: &BridgeSlot) -> Result<Arc<Bridge>, RemoteError> {
    slot.lock()
        .clone()
        .ok_or_else(|| RemoteError::refused("the group is not ready yet"))
}

/// Adds main's handlers for a group's channel: the store server (usable before `ready`, for
/// the warm load) and the bridge's handlers (which need the group to be ready).
pub fn install_handlers(
    builder: ChannelBuilder,
    slot: &BridgeSlot,
    store: Arc<GroupStore>,
    refused: Arc<GateCounters>,
) -> ChannelBuilder {
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
    let s = Arc::clone(slot);
    let builder = builder.on_call::<wire::RegisterEntity, _, _>(move |request, _| {
        let bridge = current(&s);
        async move { bridge?.register_entity(request).await }
    });
    let s = Arc::clone(slot);
    let builder = builder.on_call::<wire::UnregisterEntity, _, _>(move |request, _| {
        let bridge = current(&s);
        async move { Ok(bridge?.unregister_entity(request).await) }
    });
    let s = Arc::clone(slot);
    let builder = builder.on_push_inline::<wire::StateChanged, _>(move |change| {
        if let Ok(bridge) = current(&s) {
            bridge.state_changed(change);
        }
    });
    let s = Arc::clone(slot);
    let builder = builder.on_call::<wire::RegisterService, _, _>(move |request, _| {
        let bridge = current(&s);
        async move { bridge?.register_service(request) }
    });
    let s = Arc::clone(slot);
    let builder = builder.on_call::<wire::UnregisterService, _, _>(move |request, _| {
        let bridge = current(&s);
        async move { Ok(bridge?.unregister_service(request)) }
    });
    let s = Arc::clone(slot);
    let builder = builder.on_push_inline::<wire::FireEvent, _>(move |event| {
        if let Ok(bridge) = current(&s) {
            bridge.fire_event(event);
        }
    });
    let s = Arc::clone(slot);
    builder.on_call::<wire::UpdateEntry, _, _>(move |request, _| {
        let bridge = current(&s);
        async move { bridge?.update_entry(request) }
    })
}
