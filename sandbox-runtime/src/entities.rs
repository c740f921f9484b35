//! The entity bridge: every entity an integration adds to the private core is registered with
//! main, its state changes are pushed in order, and its removal is mirrored.
//!
//! One worker task does all of it, so the races the reference had cannot happen here:
//! - a state change while the entity's registration is in flight is not lost: the worker reads
//!   the current state when it registers, and later changes are pushed after the registration
//!   (a change a service call's flush took from the queue meanwhile, skipped then, is covered by
//!   the entity's current state, sent right after the registration when newer);
//! - a removal while the registration is in flight leaves no ghost: the removal is processed
//!   after the registration returns, and unregisters what was just registered;
//! - states are pushed by one task in the order the core wrote them, and a change older than
//!   the state already sent is skipped, so main always ends on the entity's latest state.
//!
//! Registered entities hold an approval of their entity domain, released on every unregister
//! path. An entity is described from the live registries ([`describe_live`]: its entity registry
//! entry and its device as they are now, not as the entity was added), and an update of either
//! re-describes it (main updates the proxy and its registry entries in place); a description
//! equal to the one main last took is not sent again.
//!
//! Only entities of a config entry are mirrored, as main proxies only the entities of the
//! entries it routed to the group (it would refuse any other at its `foreign_entry` gate). An
//! entity added without an entry is counted ([`EntityBridge::entities_without_entry`]) and
//! logged, a line per [`sandbox_proto::log_limit::LOG_WINDOW`] at most.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use homecore::entity::{EntityDescription, EntityDeviceInfo};
use homecore::entity_component::{EntityObserver, ObserverHandle};
use homecore::state::StateObserverHandle;
use homecore::{Core, Event, ListenerHandle, State};
use parking_lot::Mutex;
use sandbox_proto::log_limit::{Admit, LogBudget};
use sandbox_proto::{Channel, json, wire};
use tokio::sync::Notify;

use crate::approvals::Approvals;

/// State changes waiting for the worker. The core hands every change over synchronously (no
/// event, no task switch); past this many waiting, a change is not queued but its entity is
/// marked, and the worker sends the entity's latest state after the queue: under a flood the
/// in-between transitions of some entities are skipped (and counted), main still ends on every
/// entity's latest state, and memory stays bounded.
pub const STATE_QUEUE_CAPACITY: usize = 4096;

/// State changes sent to main in one write at most (one `push_batch`).
pub const STATE_BATCH_MAX: usize = 256;

/// The entity registry's update event.
const EVENT_ENTITY_REGISTRY_UPDATED: &str = "entity_registry_updated";

/// The device registry's update event.
const EVENT_DEVICE_REGISTRY_UPDATED: &str = "device_registry_updated";

/// What main knows of one entity.
struct Tracked {
    /// Registered with main (and holding an approval).
    registered: bool,
    /// Removed from the core; to be unregistered.
    removed: bool,
    /// Its description changed; to be registered again.
    redescribe: bool,
    /// The entity domain whose approval it holds.
    domain: String,
    /// When the state last sent to main was written in the core.
    sent_updated: Option<DateTime<Utc>>,
    /// The description main last took.
    sent_description: Option<wire::EntityDescription>,
}

/// Changes handed over by the core's state observer, for the worker.
#[derive(Default)]
struct StateQueue {
    /// In write order, at most [`STATE_QUEUE_CAPACITY`].
    changes: VecDeque<Arc<State>>,
    /// Entities with a change that did not fit (each once: bounded by the entities).
    overflowed: HashSet<String>,
}

#[derive(Default)]
struct Pending {
    /// Entity ids with registration work, in arrival order, each once.
    queue: VecDeque<String>,
    queued: HashSet<String>,
}

struct Shared {
    core: Core,
    channel: Channel,
    approvals: Arc<Approvals>,
    entities: Mutex<HashMap<String, Tracked>>,
    pending: Mutex<Pending>,
    states: Mutex<StateQueue>,
    /// Held while changes are taken from the queue and written, so the worker and
    /// [`EntityBridge::flush_states`] never reorder them.
    push_lock: tokio::sync::Mutex<()>,
    /// Transitions skipped because the queue was full (their entity's latest state was sent).
    skipped: AtomicU64,
    wake: Notify,
    /// True while the worker settles an entity (a call to main may be in flight).
    busy: std::sync::atomic::AtomicBool,
    /// Entities added without a config entry, never mirrored.
    without_entry: AtomicU64,
    /// The log lines about them.
    without_entry_log: Mutex<LogBudget>,
}

impl Shared {
    fn enqueue(&self, entity_id: &str) {
        let mut pending = self.pending.lock();
        if pending.queued.insert(entity_id.to_owned()) {
            pending.queue.push_back(entity_id.to_owned());
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Marks a registered entity to be described again from the live registries and queues it
    /// (an entity not registered yet is described when it is).
    fn redescribe(&self, entity_id: &str) {
        let known = match self.entities.lock().get_mut(entity_id) {
            Some(tracked) if tracked.registered => {
                tracked.redescribe = true;
                true
            }
            _ => false,
        };
        if known {
            self.enqueue(entity_id);
        }
    }

    /// Counts and logs (within its budget) an entity that has no config entry to be mirrored
    /// under.
    fn skip_entity_without_entry(&self, description: &EntityDescription) {
        let skipped = self.without_entry.fetch_add(1, Ordering::Relaxed) + 1;
        if let Admit::Log { .. } = self.without_entry_log.lock().admit(0) {
            tracing::warn!(
                entity_id = %description.entity_id,
                platform = %description.platform,
                skipped,
                "an entity without a config entry is not mirrored to main, which shows only the \
                 entities of the entries it set up"
            );
        }
    }

    fn next_pending(&self) -> Option<String> {
        let mut pending = self.pending.lock();
        let entity_id = pending.queue.pop_front()?;
        pending.queued.remove(&entity_id);
        Some(entity_id)
    }
}

/// The core's observer: records the work, never blocks.
struct Observer(Weak<Shared>);

impl EntityObserver for Observer {
    fn entity_added(&self, description: &EntityDescription) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if description.config_entry_id.is_none() {
            shared.skip_entity_without_entry(description);
            return;
        }
        shared.entities.lock().insert(
            description.entity_id.clone(),
            Tracked {
                registered: false,
                removed: false,
                redescribe: false,
                domain: description.info.domain.clone(),
                sent_updated: None,
                sent_description: None,
            },
        );
        shared.enqueue(&description.entity_id);
    }

    fn entity_removed(&self, description: &EntityDescription) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if let Some(tracked) = shared.entities.lock().get_mut(&description.entity_id) {
            tracked.removed = true;
        }
        shared.enqueue(&description.entity_id);
    }
}

/// Mirrors the private core's entities to main.
pub struct EntityBridge {
    shared: Arc<Shared>,
    observer: Option<ObserverHandle>,
    state_observer: Option<StateObserverHandle>,
    listeners: Vec<ListenerHandle>,
    worker: tokio::task::JoinHandle<()>,
}

impl EntityBridge {
    /// Starts mirroring. Must run inside the runtime.
    pub fn install(
        core: Core,
        channel: Channel,
        approvals: Arc<Approvals>,
    ) -> Result<Self, homecore::event::EventError> {
        let shared = Arc::new(Shared {
            core: core.clone(),
            channel,
            approvals,
            entities: Mutex::default(),
            pending: Mutex::default(),
            states: Mutex::default(),
            push_lock: tokio::sync::Mutex::new(()),
            skipped: AtomicU64::new(0),
            wake: Notify::new(),
            busy: std::sync::atomic::AtomicBool::new(false),
            without_entry: AtomicU64::new(0),
            without_entry_log: Mutex::new(LogBudget::new(1, usize::MAX)),
        });
        let weak = Arc::downgrade(&shared);
        // Runs inside the core's state write (see `StateObserver`): only queues.
        let state_observer = core.states().observe(Arc::new(
            move |entity_id: &str, new_state: Option<&Arc<State>>| {
                // A removal (no new state) is handled by the entity observer.
                let (Some(shared), Some(new_state)) = (weak.upgrade(), new_state) else {
                    return;
                };
                let registered = match shared.entities.lock().get(entity_id) {
                    Some(tracked) => tracked.registered,
                    None => return,
                };
                if !registered {
                    // Its first state: now it can be registered (with the state it has then).
                    shared.enqueue(entity_id);
                }
                // The state this change wrote (not the entity's current one: every transition
                // reaches main, in order). Changes arriving while the registration is in flight
                // are pushed after it when not older than what the registration carried.
                let mut queue = shared.states.lock();
                if queue.changes.len() < STATE_QUEUE_CAPACITY {
                    queue.changes.push_back(Arc::clone(new_state));
                } else {
                    queue.overflowed.insert(entity_id.to_owned());
                    shared.skipped.fetch_add(1, Ordering::Relaxed);
                }
                drop(queue);
                shared.wake.notify_one();
            },
        ));
        let registry_listener =
            redescribe_on(&shared, EVENT_ENTITY_REGISTRY_UPDATED, |_, event| {
                event
                    .data
                    .get("entity_id")
                    .and_then(|id| id.as_str())
                    .map(|entity_id| vec![entity_id.to_owned()])
                    .unwrap_or_default()
            })?;
        // Every registered entity of a device describes it: each is described again (a renamed
        // device, a new software version).
        let device_listener =
            redescribe_on(&shared, EVENT_DEVICE_REGISTRY_UPDATED, |shared, event| {
                let Some(device_id) = event.data.get("device_id").and_then(|id| id.as_str()) else {
                    return Vec::new();
                };
                shared
                    .core
                    .entity_registry()
                    .entries_for_device(device_id)
                    .into_iter()
                    .map(|entry| entry.entity_id)
                    .collect()
            })?;
        let observer = core
            .entities()
            .add_observer(Arc::new(Observer(Arc::downgrade(&shared))));
        // Entities that already exist (added before the bridge) are mirrored too.
        for description in core.entities().descriptions() {
            Observer(Arc::downgrade(&shared)).entity_added(&description);
        }
        let worker = tokio::spawn(work(Arc::clone(&shared)));
        Ok(Self {
            shared,
            observer: Some(observer),
            state_observer: Some(state_observer),
            listeners: vec![registry_listener, device_listener],
            worker,
        })
    }

    /// Waits (at most `timeout`) until every registration and removal queued so far has been
    /// told to main; returns whether it got there. Shutdown uses it so the unregistrations of
    /// unloaded entities are on the wire before the channel closes.
    pub async fn wait_settled(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.pending.lock().queue.is_empty()
                && !self.shared.busy.load(std::sync::atomic::Ordering::Acquire);
            if idle {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Sends every change queued so far, now. A service call's handler calls it before it
    /// answers, so the states the call wrote reach main ahead of the reply: when main's caller
    /// resumes, its proxies already show them, as they would in-process.
    pub async fn flush_states(&self) {
        let _pushing = self.shared.push_lock.lock().await;
        loop {
            let changes = take_changes(&self.shared);
            if changes.is_empty() {
                return;
            }
            push_states(&self.shared, &changes).await;
        }
    }

    /// State transitions skipped under overload (the queue was full; the entity's latest state
    /// was sent instead).
    pub fn skipped_transitions(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Entities added without a config entry so far: never mirrored (main proxies only the
    /// entities of its entries).
    pub fn entities_without_entry(&self) -> u64 {
        self.shared.without_entry.load(Ordering::Relaxed)
    }

    /// Entities registered with main now.
    pub fn registered(&self) -> usize {
        self.shared
            .entities
            .lock()
            .values()
            .filter(|tracked| tracked.registered)
            .count()
    }
}

impl Drop for EntityBridge {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.remove();
        }
        if let Some(observer) = self.state_observer.take() {
            observer.remove();
        }
        for listener in self.listeners.drain(..) {
            listener.remove();
        }
        self.worker.abort();
    }
}

/// Listens to `event_type` on the private core's bus and re-describes the entities `affected`
/// names for each event (see [`Shared::redescribe`]); the listener holds the bridge weakly.
fn redescribe_on(
    shared: &Arc<Shared>,
    event_type: &str,
    affected: impl Fn(&Shared, &Event) -> Vec<String> + Send + Sync + 'static,
) -> Result<ListenerHandle, homecore::event::EventError> {
    let weak = Arc::downgrade(shared);
    let affected = Arc::new(affected);
    shared
        .core
        .bus()
        .listen(event_type, move |event: Arc<Event>| {
            let (weak, affected) = (weak.clone(), Arc::clone(&affected));
            async move {
                let Some(shared) = weak.upgrade() else { return };
                for entity_id in affected(&shared, &event) {
                    shared.redescribe(&entity_id);
                }
            }
        })
}

async fn work(shared: Arc<Shared>) {
    loop {
        // Registration work first: a state change of an entity not yet registered is covered
        // by the registration, which sends the entity's current state.
        while let Some(entity_id) = {
            shared.busy.store(true, Ordering::Release);
            shared.next_pending()
        } {
            settle(&shared, &entity_id).await;
        }
        let pushing = shared.push_lock.lock().await;
        let changes = take_changes(&shared);
        if changes.is_empty() {
            drop(pushing);
            shared.busy.store(false, Ordering::Release);
            shared.wake.notified().await;
            continue;
        }
        push_states(&shared, &changes).await;
    }
}

/// The next changes to send: up to [`STATE_BATCH_MAX`] queued ones, then (once the queue is
/// empty) the latest state of every entity whose changes did not fit.
fn take_changes(shared: &Shared) -> Vec<Arc<State>> {
    let (mut changes, overflowed) = {
        let mut queue = shared.states.lock();
        let take = queue.changes.len().min(STATE_BATCH_MAX);
        let changes: Vec<Arc<State>> = queue.changes.drain(..take).collect();
        let overflowed: Vec<String> = if queue.changes.is_empty() {
            queue.overflowed.drain().collect()
        } else {
            Vec::new()
        };
        (changes, overflowed)
    };
    changes.extend(
        overflowed
            .iter()
            .filter_map(|entity_id| shared.core.states().get(entity_id)),
    );
    changes
}

/// Sends the changes of registered entities not older than what main has, in one write.
async fn push_states(shared: &Shared, changes: &[Arc<State>]) {
    let pushes: Vec<wire::StateChanged> = {
        let mut entities = shared.entities.lock();
        changes
            .iter()
            .filter(|state| {
                let Some(tracked) = entities.get_mut(&state.entity_id) else {
                    return false;
                };
                if !tracked.registered || tracked.removed {
                    return false;
                }
                // Strictly older only: two writes can share a timestamp, and pushing the state
                // the registration already carried again is harmless (main sees it unchanged).
                if tracked
                    .sent_updated
                    .is_some_and(|sent| sent > state.last_updated)
                {
                    return false;
                }
                tracked.sent_updated = Some(state.last_updated);
                true
            })
            .map(|state| wire::StateChanged {
                entity_id: state.entity_id.clone(),
                state: state.state.clone(),
                attributes_json: json::object_to_bytes(&state.attributes),
                available: state.state != "unavailable",
                context_id: Some(sandbox_wire::context_to_wire(&state.context)),
            })
            .collect()
    };
    if pushes.is_empty() {
        return;
    }
    if let Err(error) = shared.channel.push_batch(&pushes).await {
        tracing::debug!(states = pushes.len(), %error, "states not pushed");
    }
}

/// Brings main's view of one entity in line with the core's.
async fn settle(shared: &Shared, entity_id: &str) {
    let (registered, removed, redescribe, domain) = match shared.entities.lock().get(entity_id) {
        Some(tracked) => (
            tracked.registered,
            tracked.removed,
            tracked.redescribe,
            tracked.domain.clone(),
        ),
        None => return,
    };
    if removed {
        shared.entities.lock().remove(entity_id);
        if registered {
            shared.approvals.release(&domain);
            let request = wire::UnregisterEntity {
                entity_id: entity_id.to_owned(),
            };
            if let Err(error) = shared.channel.call(&request).await {
                tracing::warn!(entity_id, %error, "main did not unregister the entity");
            }
        }
        return;
    }
    if registered && !redescribe {
        return;
    }
    let Some(description) = shared.core.entities().description(entity_id) else {
        return;
    };
    let state = shared.core.states().get(entity_id);
    if state.is_none() && !registered {
        // Not written yet: its first state change enqueues it again.
        return;
    }
    let live = describe_live(&shared.core, &description);
    if registered {
        let mut entities = shared.entities.lock();
        if let Some(tracked) = entities.get_mut(entity_id)
            && tracked.sent_description.as_ref() == Some(&live)
        {
            // A registry update that changes nothing main shows: nothing to send.
            tracked.redescribe = false;
            return;
        }
    }
    let request = wire::RegisterEntity {
        description: Some(live.clone()),
        state: Some(state.as_deref().map(entity_state).unwrap_or_default()),
        context_id: state
            .as_ref()
            .map(|state| sandbox_wire::context_to_wire(&state.context)),
    };
    match shared.channel.call(&request).await {
        Ok(_) => {
            {
                let mut entities = shared.entities.lock();
                if let Some(tracked) = entities.get_mut(entity_id) {
                    if !tracked.registered {
                        shared.approvals.approve(&domain);
                    }
                    tracked.registered = true;
                    tracked.redescribe = false;
                    tracked.sent_description = Some(live);
                    if let Some(state) = &state {
                        tracked.sent_updated = Some(state.last_updated);
                    }
                }
            }
            // A change written while the call was in flight may have been taken from the queue
            // by a flush (a service call's reply), which skips entities not registered yet:
            // the entity's current state goes now when newer than what the registration carried.
            let _pushing = shared.push_lock.lock().await;
            let current = shared.core.states().get(entity_id);
            if let (Some(sent), Some(current)) = (&state, current)
                && current.last_updated > sent.last_updated
            {
                push_states(shared, &[current]).await;
            }
        }
        Err(error) => {
            tracing::warn!(entity_id, %error, "main did not register the entity");
            // Not registered: forget it unless something else is pending for it.
            let mut entities = shared.entities.lock();
            if let Some(tracked) = entities.get(entity_id)
                && !tracked.registered
                && !tracked.removed
            {
                entities.remove(entity_id);
            }
        }
    }
}

fn entity_state(state: &State) -> wire::EntityState {
    wire::EntityState {
        state: state.state.clone(),
        attributes_json: json::object_to_bytes(&state.attributes),
        available: state.state != "unavailable",
    }
}

/// An entity's description as the wire carries it.
pub fn describe(description: &EntityDescription) -> wire::EntityDescription {
    wire::EntityDescription {
        entity_id: description.entity_id.clone(),
        entry_id: description.config_entry_id.clone().unwrap_or_default(),
        platform: description.platform.clone(),
        ..sandbox_wire::entity_info_to_wire(&description.info)
    }
}

/// An entity's description as the registries show it now: its entity registry entry's name, icon
/// and device class (what the integration or a person set since, over what the entity said;
/// a registry name is a whole name, so `has_entity_name` is then off), and its device as the
/// device registry holds it (name, versions, keys merged since). An entity without a registry
/// entry is described as it was added.
pub fn describe_live(core: &Core, description: &EntityDescription) -> wire::EntityDescription {
    let mut described = describe(description);
    let Some(entry) = core.entity_registry().get(&description.entity_id) else {
        return described;
    };
    match &entry.name {
        Some(name) => {
            described.name = Some(name.clone());
            described.has_entity_name = false;
        }
        None => {
            described.name = entry.original_name.clone();
            described.has_entity_name = entry.has_entity_name;
        }
    }
    described.icon = entry.icon.clone().or(entry.original_icon.clone());
    described.device_class = entry
        .device_class
        .clone()
        .or(entry.original_device_class.clone());
    let devices = core.device_registry();
    if let Some(device) = entry.device_id.as_deref().and_then(|id| devices.get(id)) {
        // The identifier the entity named, while the hub still has it; else the hub's first.
        let named_via = description
            .info
            .device_info
            .as_ref()
            .and_then(|device| device.via_device.clone());
        let via_device = device
            .via_device_id
            .as_deref()
            .and_then(|id| devices.get(id))
            .and_then(|via| {
                named_via
                    .filter(|named| via.identifiers.contains(named))
                    .or_else(|| via.identifiers.first().cloned())
            });
        described.device = Some(sandbox_wire::device_info_to_wire(&EntityDeviceInfo {
            identifiers: device.identifiers.clone(),
            connections: device.connections.clone(),
            name: device.name_by_user.clone().or(device.name.clone()),
            manufacturer: device.manufacturer.clone(),
            model: device.model.clone(),
            model_id: device.model_id.clone(),
            sw_version: device.sw_version.clone(),
            hw_version: device.hw_version.clone(),
            serial_number: device.serial_number.clone(),
            via_device,
            entry_type: device.entry_type,
            configuration_url: device.configuration_url.clone(),
            suggested_area: device.suggested_area.clone(),
        }));
    }
    described
}

#[cfg(test)]
mod tests;
