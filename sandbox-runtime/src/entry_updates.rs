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
//!
//! A change main did not take for a passing reason (it was overloaded, the call timed out) is
//! sent again after [`UPDATE_RETRY_BACKOFF`], doubling, at most [`MAX_UPDATE_RETRIES`] times per
//! change; one main refused is not (it would refuse it again), and waits for the next write.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use homecore::{ConfigEntry, Core};
use parking_lot::Mutex;
use sandbox_proto::error::ErrorKind;
use sandbox_proto::{CallError, Channel, json, wire};
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// How many times one entry change main did not take for a passing reason is sent again
/// before it waits for the integration's next write to the entry.
pub const MAX_UPDATE_RETRIES: u32 = 3;

/// The wait before a change main did not take is sent again the first time; it doubles with
/// each retry of the same change (1 s, 2 s, 4 s), so a main that keeps failing sees at most
/// [`MAX_UPDATE_RETRIES`] more calls per change, spread over seconds.
pub const UPDATE_RETRY_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Per entry, the retries its latest change has had (see [`MAX_UPDATE_RETRIES`]); a new
    /// write to the entry starts again from none.
    retries: Mutex<HashMap<String, u32>>,
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
            retries: Mutex::default(),
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
                    shared.retries.lock().remove(&entry.entry_id);
                    mark(&shared, &entry.entry_id);
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
                    if forward(&shared, &channel, &entry_id).await == Forwarded::NotYet {
                        retry_later(&shared, &entry_id);
                    }
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

/// Queues `entry_id` for the worker (once, however often it is marked before the worker looks).
fn mark(shared: &Shared, entry_id: &str) {
    let mut marked = shared.marked.lock();
    if marked.queued.insert(entry_id.to_owned()) {
        marked.order.push_back(entry_id.to_owned());
    }
    drop(marked);
    shared.wake.notify_one();
}

/// Marks `entry_id` again after the backoff of its next retry, unless its change had
/// [`MAX_UPDATE_RETRIES`] already.
fn retry_later(shared: &Arc<Shared>, entry_id: &str) {
    let retry = {
        let mut retries = shared.retries.lock();
        let retry = retries.entry(entry_id.to_owned()).or_insert(0);
        *retry += 1;
        *retry
    };
    if retry > MAX_UPDATE_RETRIES {
        shared.retries.lock().remove(entry_id);
        tracing::warn!(
            entry_id,
            "main did not take the entry's change after {MAX_UPDATE_RETRIES} retries; it goes with the entry's next change"
        );
        return;
    }
    let delay = UPDATE_RETRY_BACKOFF.saturating_mul(1 << (retry - 1).min(16));
    let shared: Weak<Shared> = Arc::downgrade(shared);
    let entry_id = entry_id.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(shared) = shared.upgrade() {
            mark(&shared, &entry_id);
        }
    });
}

/// Whether a failed `update_entry` may succeed when sent again: main was busy or slow, not
/// refusing the change.
fn is_passing(error: &CallError) -> bool {
    match error {
        CallError::Timeout { .. } => true,
        CallError::Remote { error, .. } => {
            matches!(error.kind, ErrorKind::Overloaded | ErrorKind::Timeout)
        }
        _ => false,
    }
}

/// What became of an entry's change.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    /// Main took it, there was none, or sending it again would not help.
    Done,
    /// Main did not take it for a passing reason: worth sending again.
    NotYet,
}

fn next_marked(shared: &Shared) -> Option<String> {
    let mut marked = shared.marked.lock();
    let entry_id = marked.order.pop_front()?;
    marked.queued.remove(&entry_id);
    Some(entry_id)
}

/// Sends what differs between the private core's entry and main's copy, if anything.
async fn forward(shared: &Shared, channel: &Channel, entry_id: &str) -> Forwarded {
    let Some(entry) = shared.core.config_entries().entry(entry_id) else {
        return Forwarded::Done;
    };
    let now = MainCopy::of(&entry);
    let request = {
        let main = shared.main.lock();
        let Some(known) = main.get(entry_id) else {
            return Forwarded::Done;
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
        return Forwarded::Done;
    }
    match channel.call(&request).await {
        Ok(_) => {
            shared.retries.lock().remove(entry_id);
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
            Forwarded::Done
        }
        Err(error) if is_passing(&error) => {
            tracing::warn!(entry_id, %error, "main did not take the entry's change; it is sent again");
            Forwarded::NotYet
        }
        Err(error) => {
            tracing::warn!(entry_id, %error, "main did not take the entry's change");
            Forwarded::Done
        }
    }
}

#[cfg(test)]
mod tests;
