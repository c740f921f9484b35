//! A light or switch group: its state follows its members (Home Assistant's rules) and its
//! services are forwarded to them through the core's service registry.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use homecore::event::EVENT_STATE_CHANGED;
use homecore::{
    Core, Entity, EntityHandle, EntityInfo, EntityServiceCall, ListenerHandle, ServiceError,
    ServiceRequest, ServiceTarget,
};

/// What the group reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Summary {
    /// False when every member is unavailable or missing.
    pub(crate) available: bool,
    /// `on`/`off`; `None` (unknown) when no member has a valid state.
    pub(crate) state: Option<String>,
    /// Mean brightness of the members that are on (lights only).
    pub(crate) brightness: Option<i64>,
    /// Union of the members' feature flags (lights only).
    pub(crate) supported_features: u64,
}

/// Summarizes members' `(state, attributes)`, as Home Assistant's group does: valid when any
/// (or, with `all`, every) member is neither unknown nor unavailable; on when any (every) is on;
/// available unless every member is unavailable or missing.
pub(crate) fn summarize(members: &[Option<(String, Map<String, Value>)>], all: bool) -> Summary {
    let states: Vec<&(String, Map<String, Value>)> = members.iter().flatten().collect();
    // Home Assistant's `mode`: `any`, or `all` (which is false for no members).
    let mode = |test: &dyn Fn(&str) -> bool| {
        if all {
            !states.is_empty() && states.iter().all(|(state, _)| test(state))
        } else {
            states.iter().any(|(state, _)| test(state))
        }
    };
    let valid = mode(&|state| state != "unknown" && state != "unavailable");
    let on = mode(&|state| state == "on");
    let brightness: Vec<i64> = states
        .iter()
        .filter(|(state, _)| state == "on")
        .filter_map(|(_, attributes)| attributes.get("brightness").and_then(Value::as_i64))
        .collect();
    Summary {
        available: states.iter().any(|(state, _)| state != "unavailable"),
        state: valid.then(|| if on { "on" } else { "off" }.to_owned()),
        brightness: (!brightness.is_empty())
            .then(|| brightness.iter().sum::<i64>() / brightness.len() as i64),
        supported_features: states
            .iter()
            .filter_map(|(_, attributes)| {
                attributes.get("supported_features").and_then(Value::as_u64)
            })
            .fold(0, |union, features| union | features),
    }
}

/// A group entity over members of its own domain (`light` or `switch`).
pub(crate) struct GroupEntity {
    /// Itself, weakly, for the bus listener.
    me: Weak<GroupEntity>,
    /// Its domain: `light` or `switch`.
    domain: &'static str,
    /// What it says about itself (features are recomputed from the members).
    info: EntityInfo,
    /// Member entity ids, without itself once added (a group forwarding to itself would loop).
    members: Mutex<Vec<String>>,
    /// On only when every member is on.
    all: bool,
    /// The last summary.
    summary: Mutex<Summary>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
    /// Its `state_changed` listener, while added.
    listener: Mutex<Option<ListenerHandle>>,
}

impl GroupEntity {
    pub(crate) fn new(
        entry_id: &str,
        domain: &'static str,
        name: String,
        members: Vec<String>,
        all: bool,
    ) -> Arc<Self> {
        let mut info = EntityInfo::new(domain);
        info.unique_id = Some(entry_id.to_owned());
        info.name = Some(name);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            domain,
            info,
            members: Mutex::new(members),
            all,
            summary: Mutex::new(Summary::default()),
            handle: Mutex::new(None),
            listener: Mutex::new(None),
        })
    }

    fn summarize(&self, core: &Core) -> Summary {
        let members: Vec<Option<(String, Map<String, Value>)>> = self
            .members
            .lock()
            .iter()
            .map(|id| {
                core.states()
                    .get(id)
                    .map(|state| (state.state.clone(), state.attributes.clone()))
            })
            .collect();
        let mut summary = summarize(&members, self.all);
        if self.domain != "light" {
            summary.brightness = None;
            summary.supported_features = 0;
        }
        summary
    }

    fn update(&self) {
        let Some(handle) = self.handle.lock().clone() else {
            return;
        };
        let Some(core) = handle.core() else {
            return;
        };
        *self.summary.lock() = self.summarize(&core);
        if let Err(err) = handle.write_state() {
            tracing::debug!(entity_id = handle.entity_id(), %err, "group state not written");
        }
    }

    async fn forward(&self, call: EntityServiceCall) -> Result<Option<Value>, ServiceError> {
        let handle = self.handle.lock().clone();
        let core = handle
            .and_then(|handle| handle.core())
            .ok_or_else(|| ServiceError::handler("the group is not loaded"))?;
        let service = match call.service.as_str() {
            "turn_on" | "turn_off" => call.service.clone(),
            // Home Assistant's toggle of a group: off when it is on, else on.
            "toggle" if self.summary.lock().state.as_deref() == Some("on") => "turn_off".to_owned(),
            "toggle" => "turn_on".to_owned(),
            other => {
                return Err(ServiceError::handler(format!(
                    "{other} is not a service of a {} group",
                    self.domain
                )));
            }
        };
        let mut data = call.data.clone();
        if service == "turn_off" {
            // Members are only told what turning off accepts (Home Assistant keeps the transition).
            data.retain(|key, _| key == "transition");
        }
        // Members without a state do not exist (yet): Home Assistant skips them.
        let targets: Vec<String> = self
            .members
            .lock()
            .iter()
            .filter(|id| core.states().contains(id))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        core.services()
            .call(
                ServiceRequest::new(self.domain, service)
                    .with_data(data)
                    .with_target(ServiceTarget::entities(targets))
                    .with_context(call.context),
            )
            .await?;
        Ok(None)
    }
}

impl Entity for GroupEntity {
    fn info(&self) -> EntityInfo {
        let mut info = self.info.clone();
        info.supported_features = self.summary.lock().supported_features;
        info
    }

    fn available(&self) -> bool {
        self.summary.lock().available
    }

    fn state(&self) -> Option<String> {
        self.summary.lock().state.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        attributes.insert("entity_id".to_owned(), json!(*self.members.lock()));
        if let Some(brightness) = self.summary.lock().brightness {
            attributes.insert("brightness".to_owned(), json!(brightness));
        }
        attributes
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let own_id = handle.entity_id().to_owned();
            self.members.lock().retain(|id| *id != own_id);
            let core = handle.core();
            if let Some(core) = &core {
                *self.summary.lock() = self.summarize(core);
            }
            *self.handle.lock() = Some(handle);
            let Some(core) = core else {
                return;
            };
            let me = self.me.clone();
            let listened = core.bus().listen(EVENT_STATE_CHANGED, move |event| {
                let me = me.clone();
                async move {
                    let Some(group) = me.upgrade() else {
                        return;
                    };
                    let changed = event.data.get("entity_id").and_then(Value::as_str);
                    if changed.is_some_and(|id| group.members.lock().iter().any(|m| m == id)) {
                        group.update();
                    }
                }
            });
            match listened {
                Ok(listener) => *self.listener.lock() = Some(listener),
                Err(err) => tracing::error!(%err, "group cannot follow its members"),
            }
        })
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(listener) = self.listener.lock().take() {
                listener.remove();
            }
        })
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(self.forward(call))
    }
}
