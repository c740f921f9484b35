//! The demo's one entity type: a state and attributes changed by catalog services through [`super::effects`].

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use homecore::{Entity, EntityHandle, EntityInfo, EntityServiceCall, ServiceError};

use super::DemoShared;
use super::effects::{self, SideEffect};

/// What a demo entity is right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DemoState {
    /// The state; `None` is `unknown`.
    pub(crate) state: Option<String>,
    /// State attributes (only keys present from the start are ever written or restored).
    pub(crate) attributes: Map<String, Value>,
    /// Data behind the state that is not an attribute (calendar events, learned commands,
    /// the simulated clock); kept across restarts as restore extra data.
    pub(crate) extra: Map<String, Value>,
}

/// A demo entity of any domain.
pub(crate) struct DemoEntity {
    /// Its key within the demo (`light_ceiling`), also its unique id.
    pub(crate) key: String,
    /// What it says about itself.
    pub(crate) info: EntityInfo,
    /// Its current state.
    pub(crate) state: Mutex<DemoState>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
    /// The entry's shared data (store, counters, sibling entities), weakly: the entry owns it.
    shared: Weak<DemoShared>,
}

impl DemoEntity {
    pub(crate) fn new(
        key: String,
        info: EntityInfo,
        state: DemoState,
        shared: Weak<DemoShared>,
    ) -> Self {
        Self {
            key,
            info,
            state: Mutex::new(state),
            handle: Mutex::new(None),
            shared,
        }
    }

    /// Writes its state (and keeps its extra data for restore).
    pub(crate) fn write(&self) {
        let Some(handle) = self.handle.lock().clone() else {
            return;
        };
        let extra = self.state.lock().extra.clone();
        handle.set_restore_extra_data(Some(Value::Object(extra)));
        if let Err(err) = handle.write_state() {
            tracing::debug!(entity = %self.key, %err, "demo entity state not written");
        }
    }

    /// Applies an effect caused by another entity (a doorbell rung by a button).
    pub(crate) fn trigger(&self, event_type: &str) {
        effects::trigger_event(&mut self.state.lock(), event_type);
        self.write();
    }

    async fn run_side_effects(&self, side_effects: Vec<SideEffect>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let entity_id = self
            .handle
            .lock()
            .as_ref()
            .map(|handle| handle.entity_id().to_owned());
        for side_effect in side_effects {
            shared.apply(side_effect, entity_id.as_deref()).await;
        }
    }
}

impl Entity for DemoEntity {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn state(&self) -> Option<String> {
        self.state.lock().state.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        self.state.lock().attributes.clone()
    }

    fn restores_state(&self) -> bool {
        true
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(stored) = handle.last_state() {
                let mut state = self.state.lock();
                let last = &stored.state;
                if last.state != "unavailable" {
                    state.state = (last.state != "unknown").then(|| last.state.clone());
                    let keys: Vec<String> = state.attributes.keys().cloned().collect();
                    for key in keys {
                        if let Some(value) = last.attributes.get(&key) {
                            state.attributes.insert(key, value.clone());
                        }
                    }
                    if let Some(Value::Object(extra)) = &stored.extra_data {
                        state.extra = extra.clone();
                    }
                }
            }
            handle.set_restore_extra_data(Some(Value::Object(self.state.lock().extra.clone())));
            *self.handle.lock() = Some(handle);
        })
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            let outcome = {
                let mut state = self.state.lock();
                effects::apply(&self.info, &mut state, &call.service, &call.data)?
            };
            self.write();
            self.run_side_effects(outcome.side_effects).await;
            Ok(outcome.response)
        })
    }

    fn query<'a>(
        &'a self,
        method: &'a str,
        args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ServiceError>> {
        Box::pin(async move {
            let state = self.state.lock().clone();
            effects::query(&self.info, &state, method, &args)
        })
    }
}

/// Shared pointer to a demo entity.
pub(crate) type DemoEntityRef = Arc<DemoEntity>;
