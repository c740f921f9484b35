//! The state machine: the current state of every entity, and `state_changed` / `state_reported` events.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::Context;
use crate::entity_id::{EntityIdError, SuffixHints, validate_entity_id};
use crate::event::{EVENT_STATE_CHANGED, EVENT_STATE_REPORTED, Event, EventBus};

#[cfg(test)]
mod tests;

/// Longest state string accepted, in characters (Home Assistant's `MAX_LENGTH_STATE_STATE`).
pub const MAX_STATE_LENGTH: usize = 255;

/// The state of one entity at one moment. Immutable once stored: a change stores a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Which entity this is the state of.
    pub entity_id: String,
    /// The state itself (`on`, `21.5`, `unavailable`, ...).
    pub state: String,
    /// Extra facts about the state; integers stay integers and floats stay floats.
    pub attributes: Map<String, Value>,
    /// When `state` last took a different value.
    pub last_changed: DateTime<Utc>,
    /// When the state was last written, changed or not.
    pub last_reported: DateTime<Utc>,
    /// When `state` or `attributes` last took a different value.
    pub last_updated: DateTime<Utc>,
    /// What caused the last change.
    pub context: Context,
}

impl State {
    /// The entity's domain (`light` of `light.kitchen`).
    pub fn domain(&self) -> &str {
        self.entity_id
            .split_once('.')
            .map_or("", |(domain, _)| domain)
    }

    /// The entity's object id (`kitchen` of `light.kitchen`).
    pub fn object_id(&self) -> &str {
        self.entity_id
            .split_once('.')
            .map_or("", |(_, object_id)| object_id)
    }
}

/// Why a state could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The entity id is malformed.
    #[error(transparent)]
    InvalidEntityId(#[from] EntityIdError),
    /// The state string is longer than [`MAX_STATE_LENGTH`].
    #[error("state for {entity_id} is {len} characters long; the maximum is {MAX_STATE_LENGTH}")]
    StateTooLong {
        /// The entity whose state was refused.
        entity_id: String,
        /// The refused state's length in characters.
        len: usize,
    },
}

/// The typed payload of a `state_changed` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChangedData {
    /// The entity that changed.
    pub entity_id: String,
    /// Its state before, `None` when it was just added.
    pub old_state: Option<State>,
    /// Its state after, `None` when it was removed.
    pub new_state: Option<State>,
}

impl StateChangedData {
    /// Reads the payload of a `state_changed` event; `None` for any other event or a malformed payload.
    pub fn from_event(event: &Event) -> Option<Self> {
        if event.event_type != EVENT_STATE_CHANGED {
            return None;
        }
        serde_json::from_value(Value::Object(event.data.clone())).ok()
    }
}

/// A synchronous reader of state changes: called with the entity id and its new state (`None`
/// when removed) for every change, in the order the changes are made, before the change's
/// event is fired. It runs while the state machine is locked for writing, so it must be quick
/// and must not touch the state machine.
pub type StateObserver = dyn Fn(&str, Option<&Arc<State>>) + Send + Sync;

/// The shared part of the state machine.
struct StateMachineInner {
    /// Current states by entity id.
    states: RwLock<HashMap<String, Arc<State>>>,
    /// Where changes are announced.
    bus: EventBus,
    /// Synchronous readers of every change (the sandbox's entity bridge), by id.
    observers: RwLock<Vec<(u64, Arc<StateObserver>)>>,
    next_observer_id: std::sync::atomic::AtomicU64,
    /// Where new entity ids are searched from. Every search counts an id with a state as
    /// taken, and every component reaches the same state machine, so the hints live here and
    /// a removed state lowers them.
    id_hints: SuffixHints,
}

impl std::fmt::Debug for StateMachineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineInner")
            .field("states", &self.states.read().len())
            .field("observers", &self.observers.read().len())
            .finish()
    }
}

/// Removes a state observer; dropping it leaves the observer in place.
#[derive(Debug)]
#[must_use = "an observer can only be removed through its handle"]
pub struct StateObserverHandle {
    machine: std::sync::Weak<StateMachineInner>,
    id: u64,
}

impl StateObserverHandle {
    /// Stops calling the observer.
    pub fn remove(self) {
        if let Some(machine) = self.machine.upgrade() {
            machine.observers.write().retain(|(id, _)| *id != self.id);
        }
    }
}

/// The state machine: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct StateMachine {
    /// Shared states.
    inner: Arc<StateMachineInner>,
}

impl StateMachine {
    /// An empty state machine announcing changes on `bus`.
    pub fn new(bus: EventBus) -> Self {
        Self {
            inner: Arc::new(StateMachineInner {
                states: RwLock::new(HashMap::new()),
                bus,
                observers: RwLock::default(),
                next_observer_id: std::sync::atomic::AtomicU64::new(0),
                id_hints: SuffixHints::default(),
            }),
        }
    }

    /// Calls `observer` for every state change from now on (see [`StateObserver`]): a typed,
    /// in-order view of the changes that costs no event and no task switch.
    pub fn observe(&self, observer: Arc<StateObserver>) -> StateObserverHandle {
        let id = self
            .inner
            .next_observer_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.observers.write().push((id, observer));
        StateObserverHandle {
            machine: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// Where searches for a free entity id start (see [`SuffixHints`]).
    pub(crate) fn id_hints(&self) -> &SuffixHints {
        &self.inner.id_hints
    }

    /// The current state of `entity_id`.
    pub fn get(&self, entity_id: &str) -> Option<Arc<State>> {
        self.inner.states.read().get(entity_id).cloned()
    }

    /// True when `entity_id` has a state.
    pub fn contains(&self, entity_id: &str) -> bool {
        self.inner.states.read().contains_key(entity_id)
    }

    /// All current states, optionally only those of one domain, sorted by entity id.
    pub fn all(&self, domain: Option<&str>) -> Vec<Arc<State>> {
        let mut states: Vec<Arc<State>> = self
            .inner
            .states
            .read()
            .values()
            .filter(|state| domain.is_none_or(|domain| state.domain() == domain))
            .cloned()
            .collect();
        states.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
        states
    }

    /// All entity ids with a state, optionally only those of one domain, sorted.
    pub fn entity_ids(&self, domain: Option<&str>) -> Vec<String> {
        self.all(domain)
            .iter()
            .map(|state| state.entity_id.clone())
            .collect()
    }

    /// Number of entities with a state.
    pub fn len(&self) -> usize {
        self.inner.states.read().len()
    }

    /// True when no entity has a state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the state of `entity_id` and announces it.
    ///
    /// When state and attributes are unchanged and `force_update` is false, only
    /// `last_reported` moves and `state_reported` is fired; otherwise `state_changed`
    /// carries the old and new state. `last_changed` moves only when the state string changes.
    pub fn set(
        &self,
        entity_id: &str,
        new_state: impl Into<String>,
        attributes: Map<String, Value>,
        force_update: bool,
        context: Option<Context>,
    ) -> Result<Arc<State>, StateError> {
        validate_entity_id(entity_id)?;
        let new_state = new_state.into();
        let len = new_state.chars().count();
        if len > MAX_STATE_LENGTH {
            return Err(StateError::StateTooLong {
                entity_id: entity_id.to_owned(),
                len,
            });
        }
        let now = Utc::now();
        let context = context.unwrap_or_default();
        // Events are fired under the write lock so listeners see one entity's changes in order.
        let mut states = self.inner.states.write();
        let old = states.get(entity_id).cloned();
        if let Some(old) = &old
            && !force_update
            && old.state == new_state
            && old.attributes == attributes
        {
            let reported = Arc::new(State {
                last_reported: now,
                ..(**old).clone()
            });
            states.insert(entity_id.to_owned(), Arc::clone(&reported));
            if !self.inner.bus.has_listeners_for(EVENT_STATE_REPORTED) {
                return Ok(reported);
            }
            let mut data = Map::new();
            data.insert("entity_id".into(), Value::String(entity_id.to_owned()));
            data.insert(
                "old_last_reported".into(),
                serde_json::json!(old.last_reported),
            );
            data.insert("new_state".into(), state_json(&reported));
            self.fire(EVENT_STATE_REPORTED, data, context);
            return Ok(reported);
        }
        let last_changed = match &old {
            Some(old) if old.state == new_state => old.last_changed,
            _ => now,
        };
        let stored = Arc::new(State {
            entity_id: entity_id.to_owned(),
            state: new_state,
            attributes,
            last_changed,
            last_reported: now,
            last_updated: now,
            context: context.clone(),
        });
        states.insert(entity_id.to_owned(), Arc::clone(&stored));
        self.fire_changed(entity_id, old.as_deref(), Some(&stored), context);
        Ok(stored)
    }

    /// Removes the state of `entity_id`, announcing it with a `state_changed` whose `new_state` is null.
    /// Returns the removed state, `None` when there was none.
    pub fn remove(&self, entity_id: &str, context: Option<Context>) -> Option<Arc<State>> {
        let mut states = self.inner.states.write();
        let old = states.remove(entity_id)?;
        self.inner.id_hints.freed(entity_id);
        self.fire_changed(entity_id, Some(&old), None, context.unwrap_or_default());
        Some(old)
    }

    fn fire_changed(
        &self,
        entity_id: &str,
        old: Option<&State>,
        new: Option<&Arc<State>>,
        context: Context,
    ) {
        for (_, observer) in self.inner.observers.read().iter() {
            observer(entity_id, new);
        }
        // The event's payload (both states as JSON) is the costly part of a write: built only
        // when someone will receive it.
        if !self.inner.bus.has_listeners_for(EVENT_STATE_CHANGED) {
            return;
        }
        let mut data = Map::new();
        data.insert("entity_id".into(), Value::String(entity_id.to_owned()));
        data.insert("old_state".into(), old.map_or(Value::Null, state_json));
        data.insert(
            "new_state".into(),
            new.map_or(Value::Null, |state| state_json(state)),
        );
        self.fire(EVENT_STATE_CHANGED, data, context);
    }

    fn fire(&self, event_type: &str, data: Map<String, Value>, context: Context) {
        if let Err(err) = self.inner.bus.fire(event_type, data, Some(context)) {
            // Both event types are constants within the limits; this cannot happen.
            tracing::error!(%err, event_type, "could not fire state event");
        }
    }
}

fn state_json(state: &State) -> Value {
    serde_json::to_value(state).unwrap_or(Value::Null)
}
