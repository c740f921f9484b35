//! The event bus: fire events with data and context; listeners per event type or for all.
//!
//! Every listener owns a bounded queue drained by its own task, so a slow
//! listener never blocks the code that fires (see [`LISTENER_QUEUE_CAPACITY`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc};

use crate::context::Context;

#[cfg(test)]
mod tests;

/// Events queued for one listener before new ones are dropped for it.
///
/// A listener that falls this far behind is broken or overloaded; dropping its
/// newest events (and counting them, see [`EventBus::dropped_events`]) keeps the
/// firer and every other listener unaffected and memory bounded. Size it to
/// absorb a burst such as a whole sandbox's entities changing at once.
pub const LISTENER_QUEUE_CAPACITY: usize = 1024;

/// Longest event type accepted, in bytes (Home Assistant's `MAX_LENGTH_EVENT_EVENT_TYPE`).
pub const MAX_EVENT_TYPE_LENGTH: usize = 64;

/// Listen to every event type (except those in [`EVENTS_EXCLUDED_FROM_MATCH_ALL`]).
pub const MATCH_ALL: &str = "*";

/// A state changed: data `entity_id`, `old_state`, `new_state` (either may be null).
pub const EVENT_STATE_CHANGED: &str = "state_changed";
/// A state was set again unchanged: data `entity_id`, `old_last_reported`, `new_state`.
pub const EVENT_STATE_REPORTED: &str = "state_reported";
/// A service is being called: data `domain`, `service`, `service_data`.
pub const EVENT_CALL_SERVICE: &str = "call_service";
/// A service was registered: data `domain`, `service`.
pub const EVENT_SERVICE_REGISTERED: &str = "service_registered";
/// A service was removed: data `domain`, `service`.
pub const EVENT_SERVICE_REMOVED: &str = "service_removed";
/// An integration finished loading: data `component`.
pub const EVENT_COMPONENT_LOADED: &str = "component_loaded";
/// The core has started.
pub const EVENT_HOMEASSISTANT_START: &str = "homeassistant_start";
/// The core is fully running.
pub const EVENT_HOMEASSISTANT_STARTED: &str = "homeassistant_started";
/// The core is stopping: integrations should stop their work.
pub const EVENT_HOMEASSISTANT_STOP: &str = "homeassistant_stop";
/// Last chance to write data to disk.
pub const EVENT_HOMEASSISTANT_FINAL_WRITE: &str = "homeassistant_final_write";
/// The core is closing down.
pub const EVENT_HOMEASSISTANT_CLOSE: &str = "homeassistant_close";
/// The core configuration changed: data is the changed fields.
pub const EVENT_CORE_CONFIG_UPDATED: &str = "core_config_updated";
/// A data entry flow made progress outside the user's view (external or progress step done).
pub const EVENT_DATA_ENTRY_FLOW_PROGRESSED: &str = "data_entry_flow_progressed";

/// Every event type the core itself fires, here and in the registries. Nothing but the core may
/// fire one of these: a sandbox that could would forge the hub's own control plane. The test
/// `every_event_the_core_fires_is_a_core_event` fails when the core gains an event this list lacks.
pub const CORE_EVENT_TYPES: &[&str] = &[
    EVENT_STATE_CHANGED,
    EVENT_STATE_REPORTED,
    EVENT_CALL_SERVICE,
    EVENT_SERVICE_REGISTERED,
    EVENT_SERVICE_REMOVED,
    EVENT_COMPONENT_LOADED,
    EVENT_HOMEASSISTANT_START,
    EVENT_HOMEASSISTANT_STARTED,
    EVENT_HOMEASSISTANT_STOP,
    EVENT_HOMEASSISTANT_FINAL_WRITE,
    EVENT_HOMEASSISTANT_CLOSE,
    EVENT_CORE_CONFIG_UPDATED,
    EVENT_DATA_ENTRY_FLOW_PROGRESSED,
    crate::entity_registry::EVENT_ENTITY_REGISTRY_UPDATED,
    crate::device_registry::EVENT_DEVICE_REGISTRY_UPDATED,
    crate::area_registry::EVENT_AREA_REGISTRY_UPDATED,
];

/// Event types a [`MATCH_ALL`] listener does not receive (as in Home Assistant:
/// `state_reported` is too frequent and `homeassistant_close` comes after everything stopped).
pub const EVENTS_EXCLUDED_FROM_MATCH_ALL: &[&str] =
    &[EVENT_STATE_REPORTED, EVENT_HOMEASSISTANT_CLOSE];

/// Where an event was fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventOrigin {
    /// Fired by this core.
    #[default]
    Local,
    /// Fired elsewhere and relayed here (e.g. by a bridge).
    Remote,
}

/// One event on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened; listeners subscribe by it.
    pub event_type: String,
    /// Free-form JSON payload.
    pub data: Map<String, Value>,
    /// Whether this core fired it or relayed it.
    pub origin: EventOrigin,
    /// When it was fired.
    pub time_fired: DateTime<Utc>,
    /// What caused it.
    pub context: Context,
}

/// Why an event could not be fired or listened to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event type is empty.
    #[error("event type must not be empty")]
    EmptyEventType,
    /// The event type is longer than [`MAX_EVENT_TYPE_LENGTH`].
    #[error(
        "event type {event_type:?} is {len} bytes long; the maximum is {MAX_EVENT_TYPE_LENGTH}"
    )]
    EventTypeTooLong {
        /// The refused event type.
        event_type: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A callback listener needs a Tokio runtime to run its task.
    #[error("listening with a callback requires a running Tokio runtime")]
    NoRuntime,
}

/// Checks an event type against Home Assistant's limits.
pub fn validate_event_type(event_type: &str) -> Result<(), EventError> {
    if event_type.is_empty() {
        return Err(EventError::EmptyEventType);
    }
    if event_type.len() > MAX_EVENT_TYPE_LENGTH {
        return Err(EventError::EventTypeTooLong {
            event_type: event_type.to_owned(),
            len: event_type.len(),
        });
    }
    Ok(())
}

/// The part of a listener its delivery task shares with the bus.
#[derive(Debug, Default)]
struct ListenerState {
    /// Set on removal so queued events are not delivered afterwards.
    removed: AtomicBool,
    /// Events dropped because the queue was full.
    dropped: AtomicU64,
}

/// Which event types a [`MATCH_ALL`] listener wants, decided by the firer before anything is
/// queued or built.
pub type EventTypeFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One registered listener, as the bus sees it.
struct Slot {
    /// Identifies the listener for removal.
    id: u64,
    /// Only for [`MATCH_ALL`] listeners registered with [`EventBus::listen_all_where`].
    wants: Option<EventTypeFilter>,
    /// The listener's bounded queue.
    sender: mpsc::Sender<Arc<Event>>,
    /// Fire-once listeners are removed after their first event.
    once: bool,
    /// Set when a fire-once listener has been handed its event.
    fired: AtomicBool,
    /// Callback listeners count toward [`EventBus::wait_idle`]; subscriptions do not
    /// (their events wait for a reader that may never come).
    tracked: bool,
    /// Shared with the delivery task.
    state: Arc<ListenerState>,
}

/// The bus's shared state.
#[derive(Default)]
struct BusInner {
    /// Listeners by event type ([`MATCH_ALL`] for all).
    listeners: RwLock<HashMap<String, Vec<Arc<Slot>>>>,
    /// Source of listener ids.
    next_id: AtomicU64,
    /// Events queued to or being handled by callback listeners.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
}

impl BusInner {
    /// Unregisters a listener; `discard_queued` also stops delivery of events already queued to it.
    fn remove(&self, event_type: &str, id: u64, discard_queued: bool) {
        let mut listeners = self.listeners.write();
        if let Some(slots) = listeners.get_mut(event_type) {
            slots.retain(|slot| {
                if slot.id == id {
                    if discard_queued {
                        slot.state.removed.store(true, Ordering::SeqCst);
                    }
                    false
                } else {
                    true
                }
            });
            if slots.is_empty() {
                listeners.remove(event_type);
            }
        }
    }

    fn finish_one(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The event bus: a cheap-to-clone handle.
#[derive(Clone, Default)]
pub struct EventBus {
    /// Shared listeners and counters.
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("listeners", &self.listener_counts())
            .finish()
    }
}

impl EventBus {
    /// A bus with no listeners.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires a local event with a fresh context unless one is given.
    pub fn fire(
        &self,
        event_type: &str,
        data: Map<String, Value>,
        context: Option<Context>,
    ) -> Result<Arc<Event>, EventError> {
        self.fire_with_origin(event_type, data, context, EventOrigin::Local)
    }

    /// Fires an event, stating its origin.
    pub fn fire_with_origin(
        &self,
        event_type: &str,
        data: Map<String, Value>,
        context: Option<Context>,
        origin: EventOrigin,
    ) -> Result<Arc<Event>, EventError> {
        validate_event_type(event_type)?;
        let event = Arc::new(Event {
            event_type: event_type.to_owned(),
            data,
            origin,
            time_fired: Utc::now(),
            context: context.unwrap_or_default(),
        });
        self.deliver(&event);
        Ok(event)
    }

    /// Queues `event` to every matching listener without waiting for any of them.
    fn deliver(&self, event: &Arc<Event>) {
        let mut finished_once = Vec::new();
        {
            let listeners = self.inner.listeners.read();
            let specific = listeners
                .get(&event.event_type)
                .into_iter()
                .flatten()
                .map(|slot| (event.event_type.as_str(), slot));
            let to_all = if EVENTS_EXCLUDED_FROM_MATCH_ALL.contains(&event.event_type.as_str()) {
                None
            } else {
                listeners.get(MATCH_ALL)
            };
            let to_all = to_all.into_iter().flatten().map(|slot| (MATCH_ALL, slot));
            for (registered_type, slot) in specific.chain(to_all) {
                if slot
                    .wants
                    .as_ref()
                    .is_some_and(|wants| !wants(&event.event_type))
                {
                    continue;
                }
                if slot.once && slot.fired.swap(true, Ordering::SeqCst) {
                    continue;
                }
                if slot.tracked {
                    self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
                }
                match slot.sender.try_send(Arc::clone(event)) {
                    Ok(()) => {
                        if slot.once {
                            finished_once.push((registered_type.to_owned(), slot.id));
                        }
                    }
                    Err(err) => {
                        if slot.tracked {
                            self.inner.finish_one();
                        }
                        if slot.once {
                            // Let the next event try again: this one never reached it.
                            slot.fired.store(false, Ordering::SeqCst);
                        }
                        if matches!(err, mpsc::error::TrySendError::Full(_)) {
                            let dropped = slot.state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            if dropped.is_power_of_two() {
                                tracing::warn!(
                                    event_type = %event.event_type,
                                    listener = slot.id,
                                    dropped,
                                    capacity = LISTENER_QUEUE_CAPACITY,
                                    "event listener queue full; dropping events for this listener"
                                );
                            }
                        }
                    }
                }
            }
        }
        for (event_type, id) in finished_once {
            self.inner.remove(&event_type, id, false);
        }
    }

    /// True when an event of `event_type` fired now would reach some listener. Firers of costly
    /// events (the state machine's) skip building them when nobody listens.
    pub fn has_listeners_for(&self, event_type: &str) -> bool {
        let listeners = self.inner.listeners.read();
        if listeners
            .get(event_type)
            .is_some_and(|slots| !slots.is_empty())
        {
            return true;
        }
        if EVENTS_EXCLUDED_FROM_MATCH_ALL.contains(&event_type) {
            return false;
        }
        listeners.get(MATCH_ALL).is_some_and(|slots| {
            slots
                .iter()
                .any(|slot| slot.wants.as_ref().is_none_or(|wants| wants(event_type)))
        })
    }

    fn add_slot(
        &self,
        event_type: &str,
        once: bool,
        tracked: bool,
        wants: Option<EventTypeFilter>,
    ) -> (Arc<Slot>, mpsc::Receiver<Arc<Event>>) {
        let (sender, receiver) = mpsc::channel(LISTENER_QUEUE_CAPACITY);
        let slot = Arc::new(Slot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            wants,
            sender,
            once,
            fired: AtomicBool::new(false),
            tracked,
            state: Arc::new(ListenerState::default()),
        });
        self.inner
            .listeners
            .write()
            .entry(event_type.to_owned())
            .or_default()
            .push(Arc::clone(&slot));
        (slot, receiver)
    }

    /// Calls `callback` for every event of `event_type` ([`MATCH_ALL`] for all), in order,
    /// on a task of its own. Must be called inside a Tokio runtime.
    pub fn listen<F, Fut>(
        &self,
        event_type: &str,
        callback: F,
    ) -> Result<ListenerHandle, EventError>
    where
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.listen_inner(event_type, false, None, callback)
    }

    /// Listens to every event type `wants` accepts (a [`MATCH_ALL`] listener whose filter runs
    /// in the firer: events it refuses are never queued to it, so a listener interested in a
    /// few types does not wake for every state change). `wants` must be cheap and must not
    /// touch the bus.
    pub fn listen_all_where<W, F, Fut>(
        &self,
        wants: W,
        callback: F,
    ) -> Result<ListenerHandle, EventError>
    where
        W: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.listen_inner(MATCH_ALL, false, Some(Arc::new(wants)), callback)
    }

    /// Like [`EventBus::listen`], but removes itself after the first event.
    pub fn listen_once<F, Fut>(
        &self,
        event_type: &str,
        callback: F,
    ) -> Result<ListenerHandle, EventError>
    where
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.listen_inner(event_type, true, None, callback)
    }

    fn listen_inner<F, Fut>(
        &self,
        event_type: &str,
        once: bool,
        wants: Option<EventTypeFilter>,
        callback: F,
    ) -> Result<ListenerHandle, EventError>
    where
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if event_type != MATCH_ALL {
            validate_event_type(event_type)?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EventError::NoRuntime)?;
        let (slot, mut receiver) = self.add_slot(event_type, once, true, wants);
        let state = Arc::clone(&slot.state);
        let bus = Arc::downgrade(&self.inner);
        let listened_type = event_type.to_owned();
        runtime.spawn(async move {
            while let Some(event) = receiver.recv().await {
                if !state.removed.load(Ordering::SeqCst) {
                    let outcome = std::panic::AssertUnwindSafe(callback(event)).catch_unwind().await;
                    if outcome.is_err() {
                        tracing::error!(event_type = %listened_type, "event listener panicked; it stays registered");
                    }
                }
                if let Some(bus) = bus.upgrade() {
                    bus.finish_one();
                }
                if once {
                    break;
                }
            }
            // Events still queued will never be handled; release their idle accounting.
            receiver.close();
            while receiver.try_recv().is_ok() {
                if let Some(bus) = bus.upgrade() {
                    bus.finish_one();
                }
            }
        });
        Ok(ListenerHandle {
            bus: Arc::downgrade(&self.inner),
            event_type: event_type.to_owned(),
            id: slot.id,
        })
    }

    /// A pull-style subscription to `event_type` ([`MATCH_ALL`] for all); dropping it unsubscribes.
    pub fn subscribe(&self, event_type: &str) -> Result<EventSubscription, EventError> {
        if event_type != MATCH_ALL {
            validate_event_type(event_type)?;
        }
        let (slot, receiver) = self.add_slot(event_type, false, false, None);
        Ok(EventSubscription {
            receiver,
            handle: ListenerHandle {
                bus: Arc::downgrade(&self.inner),
                event_type: event_type.to_owned(),
                id: slot.id,
            },
        })
    }

    /// Number of listeners per event type.
    pub fn listener_counts(&self) -> HashMap<String, usize> {
        self.inner
            .listeners
            .read()
            .iter()
            .map(|(event_type, slots)| (event_type.clone(), slots.len()))
            .collect()
    }

    /// Total events dropped so far because some listener's queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.inner
            .listeners
            .read()
            .values()
            .flatten()
            .map(|slot| slot.state.dropped.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every callback listener has handled every event queued to it,
    /// including events fired by those callbacks (Home Assistant's `async_block_till_done`
    /// for the bus). Do not call it from inside a listener: it would wait for itself.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Identifies a registered listener so it can be removed. Dropping it leaves the listener registered.
#[derive(Debug)]
#[must_use = "a listener can only be removed through its handle"]
pub struct ListenerHandle {
    /// The bus, weakly: a handle must not keep a stopped core alive.
    bus: Weak<BusInner>,
    /// The type the listener was registered for.
    event_type: String,
    /// The listener's id on the bus.
    id: u64,
}

impl ListenerHandle {
    /// Removes the listener; events already queued to it are not delivered.
    pub fn remove(self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.remove(&self.event_type, self.id, true);
        }
    }
}

/// Events of one type, pulled with [`EventSubscription::recv`]; unsubscribes on drop.
#[derive(Debug)]
pub struct EventSubscription {
    /// The bounded queue the bus fills.
    receiver: mpsc::Receiver<Arc<Event>>,
    /// Removes the slot on drop.
    handle: ListenerHandle,
}

impl EventSubscription {
    /// The next event, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.receiver.recv().await
    }

    /// The next queued event without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        if let Some(bus) = self.handle.bus.upgrade() {
            bus.remove(&self.handle.event_type, self.handle.id, true);
        }
    }
}
