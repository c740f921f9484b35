//! The service and event mirrors: what the private core's integrations register and fire in an
//! approved domain is told to main.
//!
//! - A service registered in an approved domain is registered on main; one registered before
//!   its domain was approved (an integration registering services during setup) is replayed when
//!   the domain is approved. Removals are mirrored.
//! - An event `<approved_domain>_...` is pushed to main with its context id, never its user or
//!   parent. Past events of a domain approved later are not replayed: events are transient.
//! - Entity domains (`light`, `sensor`, ...) are never mirrored as services: main has its own
//!   and reaches sandboxed entities through proxies.

use std::collections::HashSet;
use std::sync::Arc;

use homecore::event::{EVENT_SERVICE_REGISTERED, EVENT_SERVICE_REMOVED};
use homecore::{Core, Event, ListenerHandle, SupportsResponse};
use parking_lot::Mutex;
use sandbox_proto::{Channel, json, wire};

use crate::approvals::Approvals;

/// Core events a sandbox never forwards, whatever domain prefix they seem to have.
pub const CORE_EVENTS: &[&str] = &[
    "call_service",
    "state_changed",
    "state_reported",
    "service_registered",
    "service_removed",
    "component_loaded",
    "core_config_updated",
    "entity_registry_updated",
    "device_registry_updated",
    "area_registry_updated",
    "data_entry_flow_progressed",
];

/// Mirrors services and events of approved domains to main.
pub struct Mirror {
    core: Core,
    channel: Channel,
    approvals: Arc<Approvals>,
    /// Domains never mirrored as services (the entity domains of the catalog).
    entity_domains: HashSet<String>,
    /// Services registered on main, so a replay does not register twice.
    mirrored: Mutex<HashSet<(String, String)>>,
    /// The bus listeners, removed when the mirror is dropped.
    listeners: Mutex<Vec<ListenerHandle>>,
}

impl Mirror {
    /// Starts mirroring. Must run inside the runtime.
    pub fn install(
        core: Core,
        channel: Channel,
        approvals: Arc<Approvals>,
        entity_domains: HashSet<String>,
    ) -> Result<Arc<Self>, homecore::event::EventError> {
        let mirror = Arc::new(Self {
            core: core.clone(),
            channel,
            approvals: Arc::clone(&approvals),
            entity_domains,
            mirrored: Mutex::default(),
            listeners: Mutex::default(),
        });
        let bus = core.bus();
        let mut listeners = Vec::new();
        // The listeners hold the mirror weakly: dropping the mirror removes them.
        let this = Arc::downgrade(&mirror);
        listeners.push(
            bus.listen(EVENT_SERVICE_REGISTERED, move |event: Arc<Event>| {
                let this = this.upgrade();
                async move {
                    if let (Some(this), Some((domain, service))) = (this, service_of(&event)) {
                        this.register(&domain, &service).await;
                    }
                }
            })?,
        );
        let this = Arc::downgrade(&mirror);
        listeners.push(bus.listen(EVENT_SERVICE_REMOVED, move |event: Arc<Event>| {
            let this = this.upgrade();
            async move {
                if let (Some(this), Some((domain, service))) = (this, service_of(&event)) {
                    this.unregister(&domain, &service).await;
                }
            }
        })?);
        let this = Arc::downgrade(&mirror);
        // Core events never leave the sandbox: filtered in the firer, so state changes (the
        // bulk of all events) never wake this listener.
        listeners.push(bus.listen_all_where(
            |event_type| !is_core_event(event_type),
            move |event: Arc<Event>| {
                let this = this.upgrade();
                async move {
                    if let Some(this) = this {
                        this.forward_event(&event).await;
                    }
                }
            },
        )?);
        *mirror.listeners.lock() = listeners;
        let weak = Arc::downgrade(&mirror);
        approvals.on_approved(Arc::new(move |domain| {
            if let Some(this) = weak.upgrade() {
                let domain = domain.to_owned();
                tokio::spawn(async move { this.replay(&domain).await });
            }
        }));
        Ok(mirror)
    }

    /// Registers every service of a freshly approved domain not yet on main.
    async fn replay(&self, domain: &str) {
        let services: Vec<String> = self
            .core
            .services()
            .services()
            .get(domain)
            .map(|by_name| by_name.keys().cloned().collect())
            .unwrap_or_default();
        for service in services {
            self.register(domain, &service).await;
        }
    }

    async fn register(&self, domain: &str, service: &str) {
        if self.entity_domains.contains(domain) || !self.approvals.is_approved(domain) {
            return;
        }
        let key = (domain.to_owned(), service.to_owned());
        if !self.mirrored.lock().insert(key.clone()) {
            return;
        }
        let Some(description) = self.core.services().describe(domain, service) else {
            self.mirrored.lock().remove(&key);
            return;
        };
        let request = wire::RegisterService {
            domain: domain.to_owned(),
            service: service.to_owned(),
            supports_response: match description.supports_response {
                SupportsResponse::None => wire::SupportsResponse::None,
                SupportsResponse::Optional => wire::SupportsResponse::Optional,
                SupportsResponse::Only => wire::SupportsResponse::Only,
            } as i32,
            schema_json: description
                .schema
                .as_ref()
                .map(|schema| json::to_bytes(&json::to_json_safe(schema)))
                .unwrap_or_default(),
        };
        if let Err(error) = self.channel.call(&request).await {
            tracing::warn!(domain, service, %error, "main did not register the service");
            self.mirrored.lock().remove(&key);
        }
    }

    async fn unregister(&self, domain: &str, service: &str) {
        if !self
            .mirrored
            .lock()
            .remove(&(domain.to_owned(), service.to_owned()))
        {
            return;
        }
        let request = wire::UnregisterService {
            domain: domain.to_owned(),
            service: service.to_owned(),
        };
        if let Err(error) = self.channel.call(&request).await {
            tracing::warn!(domain, service, %error, "main did not unregister the service");
        }
    }

    async fn forward_event(&self, event: &Event) {
        if is_core_event(&event.event_type) || !self.approvals.covers_event(&event.event_type) {
            return;
        }
        let push = wire::FireEvent {
            event_type: event.event_type.clone(),
            data_json: json::object_to_bytes(&event.data),
            context_id: Some(sandbox_wire::context_to_wire(&event.context)),
        };
        if let Err(error) = self.channel.push(&push).await {
            tracing::debug!(event_type = %event.event_type, %error, "event not forwarded");
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        for listener in self.listeners.lock().drain(..) {
            listener.remove();
        }
    }
}

/// Events of the sandbox's private core that main never hears of.
fn is_core_event(event_type: &str) -> bool {
    CORE_EVENTS.contains(&event_type) || event_type.starts_with("homeassistant_")
}

fn service_of(event: &Event) -> Option<(String, String)> {
    let domain = event.data.get("domain")?.as_str()?.to_owned();
    let service = event.data.get("service")?.as_str()?.to_owned();
    Some((domain, service))
}
