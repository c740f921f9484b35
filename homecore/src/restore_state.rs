//! Restore state: the last state of entities, saved on stop under `core.restore_state`, read back after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{State, StateMachine};
use crate::store::{Store, StoreError, Stores};

#[cfg(test)]
mod tests;

/// Store key of the restore state.
pub const RESTORE_STATE_STORE_KEY: &str = "core.restore_state";
/// Major version of the stored data.
const STORE_VERSION: u32 = 1;
/// Minor version of the stored data.
const STORE_MINOR_VERSION: u32 = 1;
/// How often a running core saves restore state, so a crash loses at most this much (Home Assistant's interval).
pub const STATE_DUMP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// States of entities not seen for this long are forgotten (Home Assistant keeps a week).
pub const STATE_EXPIRATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most states remembered; the least recently seen go first. Bounds memory and file size
/// even for a peer that registers entities without end.
pub const MAX_RESTORE_STATES: usize = 16_384;

/// One remembered state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// The entity's last state.
    pub state: State,
    /// Extra data the entity asked to keep (e.g. a native value with its unit).
    #[serde(default)]
    pub extra_data: Option<Value>,
    /// When the entity last existed.
    pub last_seen: DateTime<Utc>,
}

/// Shared part of the restore state.
#[derive(Debug)]
struct RestoreStateInner {
    /// States loaded or remembered, by entity id.
    last_states: Mutex<HashMap<String, StoredState>>,
    /// Entities that want their state kept, with their current extra data.
    tracked: Mutex<HashMap<String, Option<Value>>>,
    /// Where the states persist.
    store: Store,
    /// Where current states are read.
    states: StateMachine,
}

/// Restore state of one core: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct RestoreState {
    /// Shared state.
    inner: Arc<RestoreStateInner>,
}

impl RestoreState {
    /// Restore state persisting through `stores`, reading current states from `states`.
    pub fn new(stores: &Stores, states: StateMachine) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(RestoreStateInner {
                last_states: Mutex::new(HashMap::new()),
                tracked: Mutex::new(HashMap::new()),
                store: stores.store(RESTORE_STATE_STORE_KEY, STORE_VERSION, STORE_MINOR_VERSION)?,
                states,
            }),
        })
    }

    /// Reads the stored states (a corrupt store is logged and read as empty).
    pub async fn load(&self) -> Result<(), StoreError> {
        let data = match self.inner.store.load().await {
            Ok(data) => data,
            Err(err @ StoreError::Corrupt { .. }) => {
                tracing::error!(%err, "restore state store is corrupt; starting empty");
                None
            }
            Err(err) => return Err(err),
        };
        let stored: Vec<StoredState> = match data {
            Some(data) => serde_json::from_value(data).unwrap_or_else(|err| {
                tracing::error!(%err, "restore state data is malformed; starting empty");
                Vec::new()
            }),
            None => Vec::new(),
        };
        self.import(stored);
        Ok(())
    }

    /// The key the states are stored under.
    pub fn store_key(&self) -> &crate::store::StoreKey {
        self.inner.store.key()
    }

    /// The last state `entity_id` had before the restart (or before it was removed).
    pub fn last_state(&self, entity_id: &str) -> Option<StoredState> {
        self.inner.last_states.lock().get(entity_id).cloned()
    }

    /// Keeps `entity_id`'s state from now on (an entity that restores state calls this when added).
    pub fn track(&self, entity_id: &str) {
        self.inner
            .tracked
            .lock()
            .entry(entity_id.to_owned())
            .or_insert(None);
    }

    /// Sets the extra data kept with `entity_id`'s state.
    pub fn set_extra_data(&self, entity_id: &str, extra_data: Option<Value>) {
        if let Some(slot) = self.inner.tracked.lock().get_mut(entity_id) {
            *slot = extra_data;
        }
    }

    /// Stops tracking `entity_id`, remembering its current state so a re-added entity gets it back.
    pub fn untrack(&self, entity_id: &str) {
        let extra = self.inner.tracked.lock().remove(entity_id);
        if let (Some(extra_data), Some(state)) = (extra, self.inner.states.get(entity_id)) {
            self.remember(StoredState {
                state: (*state).clone(),
                extra_data,
                last_seen: Utc::now(),
            });
        }
    }

    /// Entities currently tracked, sorted.
    pub fn tracked(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.tracked.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Adds states (e.g. a sandbox's, collected at its shutdown), keeping the newer per entity.
    pub fn import(&self, stored: Vec<StoredState>) {
        for state in stored {
            self.remember(state);
        }
    }

    fn remember(&self, stored: StoredState) {
        let mut last_states = self.inner.last_states.lock();
        let newer = last_states
            .get(&stored.state.entity_id)
            .is_none_or(|existing| existing.last_seen <= stored.last_seen);
        if newer {
            last_states.insert(stored.state.entity_id.clone(), stored);
        }
        if last_states.len() > MAX_RESTORE_STATES {
            evict_oldest(&mut last_states, MAX_RESTORE_STATES);
        }
    }

    /// What would be saved now: tracked entities' current states, plus remembered
    /// states of other entities seen within [`STATE_EXPIRATION`], newest first, bounded.
    pub fn dump(&self) -> Vec<StoredState> {
        let now = Utc::now();
        let tracked: Vec<(String, Option<Value>)> = self
            .inner
            .tracked
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        let mut current = HashSet::new();
        for (entity_id, extra_data) in tracked {
            if let Some(state) = self.inner.states.get(&entity_id) {
                current.insert(entity_id);
                out.push(StoredState {
                    state: (*state).clone(),
                    extra_data,
                    last_seen: now,
                });
            }
        }
        let expiry = chrono::Duration::from_std(STATE_EXPIRATION).unwrap_or(chrono::Duration::MAX);
        for stored in self.inner.last_states.lock().values() {
            if !current.contains(&stored.state.entity_id) && now - stored.last_seen < expiry {
                out.push(stored.clone());
            }
        }
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.state.entity_id.cmp(&b.state.entity_id))
        });
        out.truncate(MAX_RESTORE_STATES);
        out
    }

    /// Saves [`RestoreState::dump`] now.
    pub async fn save(&self) -> Result<(), StoreError> {
        let dump = self.dump();
        let data = serde_json::to_value(&dump).map_err(|err| StoreError::Backend {
            key: RESTORE_STATE_STORE_KEY.into(),
            message: format!("cannot serialize restore state: {err}"),
        })?;
        self.inner.store.save(data).await
    }
}

fn evict_oldest(states: &mut HashMap<String, StoredState>, keep: usize) {
    let mut by_age: Vec<(DateTime<Utc>, String)> = states
        .values()
        .map(|s| (s.last_seen, s.state.entity_id.clone()))
        .collect();
    by_age.sort();
    let excess = states.len().saturating_sub(keep);
    for (_, entity_id) in by_age.into_iter().take(excess) {
        states.remove(&entity_id);
    }
}
