//! Entry changes made inside the sandbox, forwarded to main: an integration writing a new token,
//! data or options into its own entry after setup, or a discovery flow's
//! `abort_if_unique_id_configured(updates)`, changes the private core's copy of the entry; main
//! owns the entry, so each change goes to main with `update_entry`, or main would set the entry
//! up with stale data next time.
//!
//! The private core tells of every entry update synchronously (an entry update observer); the
//! observer only marks the entry, and one worker sends, per marked entry, the fields that differ
//! from what main has. What main has is recorded from each `entry_setup` (main's copy) and after
//! each forwarded change, so main's own data arriving with a setup is never echoed back, and a
//! burst of writes to one entry leaves as at most one call per write the worker sees.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use homecore::{ConfigEntry, Core};
use parking_lot::Mutex;
use sandbox_proto::{Channel, json, wire};
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// What main stores of an entry, as far as `update_entry` can change it.
#[derive(Debug, Clone, PartialEq)]
struct MainCopy {
    title: String,
    data: Map<String, Value>,
    options: Map<String, Value>,
    unique_id: Option<String>,
}

impl MainCopy {
    fn of(entry: &ConfigEntry) -> Self {
        Self {
            title: entry.title.clone(),
            data: entry.data.clone(),
            options: entry.options.clone(),
            unique_id: entry.unique_id.clone(),
        }
    }
}

/// Entries to look at, each once, in the order they changed: bounded by the entries main set
/// up here.
#[derive(Default)]
struct Marked {
    order: VecDeque<String>,
    queued: HashSet<String>,
}

struct Shared {
    core: Core,
    /// Main's copy of each entry main set up here.
    main: Mutex<HashMap<String, MainCopy>>,
    marked: Mutex<Marked>,
    wake: Notify,
}

/// Forwards the private core's entry changes to main.
pub struct EntryUpdates {
    shared: Arc<Shared>,
    observer: u64,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EntryUpdates {
    /// Observes `core`'s entry updates; nothing is sent before [`Self::start`].
    pub fn install(core: &Core) -> Self {
        let shared = Arc::new(Shared {
            core: core.clone(),
            main: Mutex::default(),
            marked: Mutex::default(),
            wake: Notify::new(),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let observer =
            core.config_entries()
                .add_update_observer(Arc::new(move |entry: &ConfigEntry| {
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    if !shared.main.lock().contains_key(&entry.entry_id) {
                        return;
                    }
                    let mut marked = shared.marked.lock();
                    if marked.queued.insert(entry.entry_id.clone()) {
                        marked.order.push_back(entry.entry_id.clone());
                    }
                    drop(marked);
                    shared.wake.notify_one();
                }));
        Self {
            shared,
            observer,
            worker: Mutex::new(None),
        }
    }

    /// Starts sending over `channel` (once main acknowledged `update_entry`).
    pub fn start(&self, channel: Channel) {
        let shared = Arc::clone(&self.shared);
        let worker = tokio::spawn(async move {
            loop {
                while let Some(entry_id) = next_marked(&shared) {
                    forward(&shared, &channel, &entry_id).await;
                }
                shared.wake.notified().await;
            }
        });
        if let Some(previous) = self.worker.lock().replace(worker) {
            previous.abort();
        }
    }

    /// Records `entry` as main sent it (with an `entry_setup`): later changes are told relative
    /// to it.
    pub fn main_has(&self, entry: &ConfigEntry) {
        self.shared
            .main
            .lock()
            .insert(entry.entry_id.clone(), MainCopy::of(entry));
    }

    /// Forgets an entry main removed.
    pub fn forget(&self, entry_id: &str) {
        self.shared.main.lock().remove(entry_id);
    }
}

impl Drop for EntryUpdates {
    fn drop(&mut self) {
        self.shared
            .core
            .config_entries()
            .remove_update_observer(self.observer);
        if let Some(worker) = self.worker.lock().take() {
            worker.abort();
        }
    }
}

fn next_marked(shared: &Shared) -> Option<String> {
    let mut marked = shared.marked.lock();
    let entry_id = marked.order.pop_front()?;
    marked.queued.remove(&entry_id);
    Some(entry_id)
}

/// Sends what differs between the private core's entry and main's copy, if anything.
async fn forward(shared: &Shared, channel: &Channel, entry_id: &str) {
    let Some(entry) = shared.core.config_entries().entry(entry_id) else {
        return;
    };
    let now = MainCopy::of(&entry);
    let request = {
        let main = shared.main.lock();
        let Some(known) = main.get(entry_id) else {
            return;
        };
        wire::UpdateEntry {
            entry_id: entry_id.to_owned(),
            title: (now.title != known.title).then(|| now.title.clone()),
            data_json: (now.data != known.data).then(|| json::object_to_bytes(&now.data)),
            options_json: (now.options != known.options)
                .then(|| json::object_to_bytes(&now.options)),
            // The wire can set a unique id, never clear one.
            unique_id: now
                .unique_id
                .clone()
                .filter(|_| now.unique_id != known.unique_id),
        }
    };
    let nothing = request.title.is_none()
        && request.data_json.is_none()
        && request.options_json.is_none()
        && request.unique_id.is_none();
    if nothing {
        return;
    }
    match channel.call(&request).await {
        Ok(_) => {
            if let Some(known) = shared.main.lock().get_mut(entry_id) {
                if request.title.is_some() {
                    known.title = now.title;
                }
                if request.data_json.is_some() {
                    known.data = now.data;
                }
                if request.options_json.is_some() {
                    known.options = now.options;
                }
                if request.unique_id.is_some() {
                    known.unique_id = now.unique_id;
                }
            }
        }
        Err(error) => {
            tracing::warn!(entry_id, %error, "main did not take the entry's change");
        }
    }
}
