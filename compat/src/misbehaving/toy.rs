//! The one entity type of the misbehaving integrations: a sensor whose state the integration
//! sets, or a switch that follows `turn_on`/`turn_off`/`toggle`.

use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;

use homecore::entity::EntityDeviceInfo;
use homecore::{Entity, EntityHandle, EntityInfo, EntityServiceCall, ServiceError};

/// Called with a switch's new state after each switch service.
pub type OnSwitch = Box<dyn Fn(&str) + Send + Sync>;

/// A sensor or switch with a settable state; made with [`ToyEntity::sensor`] or
/// [`ToyEntity::switch`].
pub struct ToyEntity {
    info: EntityInfo,
    state: Mutex<String>,
    handle: Mutex<Option<EntityHandle>>,
    /// Called with the new state after each switch service.
    on_switch: Option<OnSwitch>,
}

impl std::fmt::Debug for ToyEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToyEntity")
            .field("unique_id", &self.info.unique_id)
            .field("state", &*self.state.lock())
            .finish()
    }
}

impl ToyEntity {
    fn new(domain: &str, unique_id: &str, name: &str, state: &str) -> Self {
        let mut info = EntityInfo::new(domain);
        info.unique_id = Some(unique_id.to_owned());
        info.name = Some(name.to_owned());
        Self {
            info,
            state: Mutex::new(state.to_owned()),
            handle: Mutex::new(None),
            on_switch: None,
        }
    }

    /// A sensor in state `state`.
    pub fn sensor(unique_id: &str, name: &str, state: &str) -> Self {
        Self::new("sensor", unique_id, name, state)
    }

    /// A switch, off; `on_switch` (if any) runs after each switch service with the new state.
    pub fn switch(unique_id: &str, name: &str, on_switch: Option<OnSwitch>) -> Self {
        let mut toy = Self::new("switch", unique_id, name, "off");
        toy.on_switch = on_switch;
        toy
    }

    /// The same entity, on `device`.
    pub fn with_device(mut self, device: EntityDeviceInfo) -> Self {
        self.info.device_info = Some(device);
        self
    }

    /// Its entity id, once added.
    pub fn entity_id(&self) -> Option<String> {
        self.handle
            .lock()
            .as_ref()
            .map(|handle| handle.entity_id().to_owned())
    }

    /// Sets its state and writes it (nothing is written before it is added).
    pub fn set(&self, state: impl Into<String>) {
        *self.state.lock() = state.into();
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle
            && let Err(error) = handle.write_state()
        {
            tracing::debug!(%error, "toy state not written");
        }
    }

    /// As an entity reference for a platform.
    pub fn into_ref(self: &Arc<Self>) -> homecore::EntityRef {
        Arc::clone(self) as homecore::EntityRef
    }
}

impl Entity for ToyEntity {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn state(&self) -> Option<String> {
        Some(self.state.lock().clone())
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        self.handle.lock().take();
        Box::pin(async {})
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            if self.info.domain != "switch" {
                return Err(ServiceError::handler(format!(
                    "{} is not implemented by this entity",
                    call.service
                )));
            }
            let next = match call.service.as_str() {
                "turn_on" => "on".to_owned(),
                "turn_off" => "off".to_owned(),
                "toggle" if *self.state.lock() == "on" => "off".to_owned(),
                "toggle" => "on".to_owned(),
                other => {
                    return Err(ServiceError::handler(format!(
                        "{other} is not implemented by this switch"
                    )));
                }
            };
            *self.state.lock() = next.clone();
            let handle = self.handle.lock().clone();
            if let Some(handle) = handle {
                handle
                    .write_state_with_context(call.context)
                    .map_err(|error| ServiceError::handler(error.to_string()))?;
            }
            if let Some(on_switch) = &self.on_switch {
                on_switch(&next);
            }
            Ok(None)
        })
    }
}
