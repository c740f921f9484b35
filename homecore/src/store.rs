//! `Store`: versioned JSON data saved by key through a per-core, pluggable backend.
//!
//! Every read and write — immediate, delayed, and the final-write flush on stop —
//! goes through the core's [`StoreBackend`], so a host can route all storage IO
//! elsewhere (for example to another process) by installing its own backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;

#[cfg(test)]
mod tests;

/// Longest store key accepted, in bytes.
pub const MAX_STORE_KEY_LENGTH: usize = 128;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a safe file name.
    #[error("invalid store key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Reading or writing the backing storage failed.
    #[error("store {key}: {operation} failed: {source}")]
    Io {
        /// The key being accessed.
        key: String,
        /// What was being done (`read`, `write`, ...).
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stored data is not a valid envelope.
    #[error("store {key} is corrupt: {message}{}", moved_to.as_ref().map(|p| format!(" (moved aside to {})", p.display())).unwrap_or_default())]
    Corrupt {
        /// The key whose data is corrupt.
        key: String,
        /// What is wrong with it.
        message: String,
        /// Where the corrupt file was moved so the next write starts clean, if it was.
        moved_to: Option<std::path::PathBuf>,
    },
    /// The stored data was written by a newer major version than this code understands.
    #[error("store {key} has version {found}, newer than the supported {supported}")]
    UnsupportedVersion {
        /// The key.
        key: String,
        /// The stored major version.
        found: u32,
        /// The newest major version this store handles.
        supported: u32,
    },
    /// Migrating older data failed (or no migration exists for an older major version).
    #[error("store {key}: migration failed: {message}")]
    Migration {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// A backend refused or failed the operation for its own reason (quota, lost connection, ...).
    #[error("store {key}: {message}")]
    Backend {
        /// The key.
        key: String,
        /// The backend's explanation.
        message: String,
    },
}

/// A validated store key: a path-safe file name of at most [`MAX_STORE_KEY_LENGTH`] bytes.
///
/// Allowed: ASCII letters, digits, `_`, `-`, `.`; not starting with `.`, no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StoreKey(String);

impl StoreKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        let refuse = |reason| {
            Err(StoreError::InvalidKey {
                key: key.clone(),
                reason,
            })
        };
        if key.is_empty() {
            return refuse("must not be empty");
        }
        if key.len() > MAX_STORE_KEY_LENGTH {
            return refuse("longer than 128 bytes");
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return refuse("only ASCII letters, digits, '_', '-' and '.' are allowed");
        }
        if key.starts_with('.') {
            return refuse("must not start with '.'");
        }
        if key.contains("..") {
            return refuse("must not contain '..'");
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StoreKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        StoreKey::new(key).map_err(serde::de::Error::custom)
    }
}

fn default_minor_version() -> u32 {
    1
}

/// What is stored under a key: the data with the version of the code that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreEnvelope {
    /// Major version: a newer one than the reader's is refused; an older one is migrated.
    pub version: u32,
    /// Minor version: backward compatible changes; older files may lack it (read as 1).
    #[serde(default = "default_minor_version")]
    pub minor_version: u32,
    /// The key, repeated inside for people reading the file.
    pub key: String,
    /// The data itself.
    pub data: Value,
}

/// Where stores keep their envelopes. One per core; the default writes files atomically.
pub trait StoreBackend: Send + Sync + 'static {
    /// Reads the envelope under `key`; `None` when nothing is stored.
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>>;
    /// Replaces the envelope under `key`; either the old or the new envelope survives a crash.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        envelope: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Deletes whatever is stored under `key`; deleting nothing is not an error.
    fn remove<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A backend keeping envelopes in memory, for tests and for cores that must not touch disk.
#[derive(Debug, Default)]
pub struct MemoryStoreBackend {
    /// Envelopes by key.
    envelopes: Mutex<HashMap<StoreKey, StoreEnvelope>>,
}

impl MemoryStoreBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The envelope currently stored under `key`.
    pub fn get(&self, key: &str) -> Option<StoreEnvelope> {
        let key = StoreKey::new(key).ok()?;
        self.envelopes.lock().get(&key).cloned()
    }

    /// Every key with something stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.envelopes.lock().keys().map(|k| k.0.clone()).collect();
        keys.sort();
        keys
    }
}

impl StoreBackend for MemoryStoreBackend {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>> {
        Box::pin(async move { Ok(self.envelopes.lock().get(key).cloned()) })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        envelope: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.envelopes.lock().insert(key.clone(), envelope.clone());
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.envelopes.lock().remove(key);
            Ok(())
        })
    }
}

/// Produces the data of a delayed save at the moment it is written.
pub type DataFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// Converts data stored under an older version: `(old_major, old_minor, data) -> data`.
pub type MigrateFn = Arc<dyn Fn(u32, u32, Value) -> Result<Value, String> + Send + Sync>;

/// A delayed save waiting for its timer or for the final write.
struct PendingSave {
    /// Produces the data when the save happens.
    data_fn: DataFn,
    /// Version written with the data.
    version: u32,
    /// Minor version written with the data.
    minor_version: u32,
    /// Distinguishes this scheduling from later ones, so a stale timer writes nothing.
    generation: u64,
    /// The timer task, aborted when the save is replaced or flushed.
    timer: Option<JoinHandle<()>>,
}

/// The per-core storage state shared by every [`Store`] handle.
struct StoresInner {
    /// Where envelopes go.
    backend: Arc<dyn StoreBackend>,
    /// Delayed saves not yet written, by key; at most one per key.
    pending: Mutex<HashMap<StoreKey, PendingSave>>,
    /// One lock per key so writes of one key never interleave or reorder.
    write_locks: Mutex<HashMap<StoreKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Source of [`PendingSave::generation`].
    next_generation: Mutex<u64>,
}

/// The storage of one core: hands out [`Store`]s and flushes their delayed saves.
#[derive(Clone)]
pub struct Stores {
    /// Shared state.
    inner: Arc<StoresInner>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("pending", &self.pending_keys())
            .finish()
    }
}

impl Stores {
    /// Storage writing through `backend`.
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        Self {
            inner: Arc::new(StoresInner {
                backend,
                pending: Mutex::new(HashMap::new()),
                write_locks: Mutex::new(HashMap::new()),
                next_generation: Mutex::new(0),
            }),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Arc<dyn StoreBackend> {
        Arc::clone(&self.inner.backend)
    }

    /// A store for `key` at `version.minor_version`; the key is validated here.
    pub fn store(&self, key: &str, version: u32, minor_version: u32) -> Result<Store, StoreError> {
        Ok(Store {
            stores: self.clone(),
            key: StoreKey::new(key)?,
            version,
            minor_version,
            migrate: None,
        })
    }

    /// Keys with a delayed save not yet written, sorted.
    pub fn pending_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .inner
            .pending
            .lock()
            .keys()
            .map(|k| k.0.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Writes every delayed save now (the final write on stop) and waits for writes in
    /// progress. Returns the failures; each is also logged.
    pub async fn flush_pending(&self) -> Vec<(StoreKey, StoreError)> {
        let pending: Vec<(StoreKey, PendingSave)> = self.inner.pending.lock().drain().collect();
        let mut failures = Vec::new();
        for (key, save) in pending {
            if let Some(timer) = &save.timer {
                timer.abort();
            }
            let data = (save.data_fn)();
            if let Err(err) = self
                .write(&key, save.version, save.minor_version, data)
                .await
            {
                tracing::error!(%key, %err, "final write of delayed save failed");
                failures.push((key, err));
            }
        }
        let locks: Vec<_> = self.inner.write_locks.lock().values().cloned().collect();
        for lock in locks {
            drop(lock.lock().await);
        }
        failures
    }

    fn write_lock(&self, key: &StoreKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.inner
                .write_locks
                .lock()
                .entry(key.clone())
                .or_default(),
        )
    }

    async fn write(
        &self,
        key: &StoreKey,
        version: u32,
        minor_version: u32,
        data: Value,
    ) -> Result<(), StoreError> {
        let lock = self.write_lock(key);
        let _guard = lock.lock().await;
        let envelope = StoreEnvelope {
            version,
            minor_version,
            key: key.0.clone(),
            data,
        };
        self.inner.backend.save(key, &envelope).await
    }

    /// Forgets the delayed save of `key`, if any.
    fn cancel_pending(&self, key: &StoreKey) {
        if let Some(save) = self.inner.pending.lock().remove(key)
            && let Some(timer) = save.timer
        {
            timer.abort();
        }
    }

    /// Writes the delayed save of `key` if it is still the one scheduled as `generation`.
    async fn write_pending(&self, key: &StoreKey, generation: u64) {
        let save = {
            let mut pending = self.inner.pending.lock();
            match pending.get(key) {
                Some(save) if save.generation == generation => pending.remove(key),
                _ => None,
            }
        };
        if let Some(save) = save {
            let data = (save.data_fn)();
            if let Err(err) = self
                .write(key, save.version, save.minor_version, data)
                .await
            {
                tracing::error!(%key, %err, "delayed save failed");
            }
        }
    }
}

/// Versioned JSON data under one key (Home Assistant's `Store`).
#[derive(Clone)]
pub struct Store {
    /// The core's storage.
    stores: Stores,
    /// Where the data lives.
    key: StoreKey,
    /// Major version this code writes and reads.
    version: u32,
    /// Minor version this code writes.
    minor_version: u32,
    /// Converts older data on load.
    migrate: Option<MigrateFn>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("minor_version", &self.minor_version)
            .finish()
    }
}

impl Store {
    /// Sets the migration used when older data is loaded.
    pub fn with_migration(
        mut self,
        migrate: impl Fn(u32, u32, Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.migrate = Some(Arc::new(migrate));
        self
    }

    /// The key.
    pub fn key(&self) -> &StoreKey {
        &self.key
    }

    /// Reads the data, migrating (and re-saving) older versions.
    ///
    /// A delayed save not yet written is returned as it would be written, as Home Assistant does.
    pub async fn load(&self) -> Result<Option<Value>, StoreError> {
        let pending = self
            .stores
            .inner
            .pending
            .lock()
            .get(&self.key)
            .map(|save| Arc::clone(&save.data_fn));
        if let Some(data_fn) = pending {
            return Ok(Some(data_fn()));
        }
        let Some(envelope) = self.stores.inner.backend.load(&self.key).await? else {
            return Ok(None);
        };
        if envelope.version == self.version && envelope.minor_version == self.minor_version {
            return Ok(Some(envelope.data));
        }
        if envelope.version > self.version {
            return Err(StoreError::UnsupportedVersion {
                key: self.key.0.clone(),
                found: envelope.version,
                supported: self.version,
            });
        }
        let data = match &self.migrate {
            Some(migrate) => migrate(envelope.version, envelope.minor_version, envelope.data)
                .map_err(|message| StoreError::Migration {
                    key: self.key.0.clone(),
                    message,
                })?,
            // Minor versions are compatible: a newer or older minor reads as is.
            None if envelope.version == self.version => envelope.data,
            None => {
                return Err(StoreError::Migration {
                    key: self.key.0.clone(),
                    message: format!(
                        "no migration from version {}.{} to {}.{}",
                        envelope.version, envelope.minor_version, self.version, self.minor_version
                    ),
                });
            }
        };
        if envelope.version < self.version || envelope.minor_version < self.minor_version {
            self.save(data.clone()).await?;
        }
        Ok(Some(data))
    }

    /// Writes `data` now, replacing any delayed save.
    pub async fn save(&self, data: Value) -> Result<(), StoreError> {
        self.stores.cancel_pending(&self.key);
        self.stores
            .write(&self.key, self.version, self.minor_version, data)
            .await
    }

    /// Schedules a save `delay` from now, with data produced by `data_fn` at write time.
    ///
    /// Scheduling again replaces the earlier save and restarts the delay. Unwritten
    /// delayed saves are written by [`Stores::flush_pending`] during the core's final write.
    /// Outside a Tokio runtime the save only happens at that flush.
    pub fn delay_save(&self, data_fn: impl Fn() -> Value + Send + Sync + 'static, delay: Duration) {
        let generation = {
            let mut next = self.stores.inner.next_generation.lock();
            *next += 1;
            *next
        };
        // Record the save before its timer exists, so even a zero delay finds it.
        let previous = self.stores.inner.pending.lock().insert(
            self.key.clone(),
            PendingSave {
                data_fn: Arc::new(data_fn),
                version: self.version,
                minor_version: self.minor_version,
                generation,
                timer: None,
            },
        );
        if let Some(timer) = previous.and_then(|save| save.timer) {
            timer.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let stores = self.stores.clone();
            let key = self.key.clone();
            let timer = runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                stores.write_pending(&key, generation).await;
            });
            match self.stores.inner.pending.lock().get_mut(&self.key) {
                Some(save) if save.generation == generation => save.timer = Some(timer),
                // Already written or replaced: the timer has nothing left to do.
                _ => timer.abort(),
            }
        }
    }

    /// Deletes the stored data and any delayed save.
    pub async fn remove(&self) -> Result<(), StoreError> {
        self.stores.cancel_pending(&self.key);
        let lock = self.stores.write_lock(&self.key);
        let _guard = lock.lock().await;
        self.stores.inner.backend.remove(&self.key).await
    }
}
