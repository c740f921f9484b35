//! The store server: where a sandbox group's store IO lands on main.
//!
//! One folder per group, `<config>/.storage/sandbox/<group>/`, one file per key, written
//! atomically (temp file, fsync, rename, fsync folder). A compromised sandbox must not exhaust
//! the host's disk, so every write is checked first: key at most [`MAX_KEY_BYTES`] and
//! path-safe, value at most [`MAX_VALUE_BYTES`] and nested at most
//! [`crate::limits::MAX_STORED_JSON_DEPTH`] deep (the data bound plus the levels a restore
//! state's envelope puts around an entity's attributes), the group at most [`MAX_GROUP_BYTES`] and
//! [`MAX_GROUP_KEYS`] keys. What is written is the compact envelope that was counted, never a
//! larger re-serialization of it. A refused write changes nothing on disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use homecore::{FileStoreBackend, StoreBackend, StoreEnvelope, StoreError, StoreKey};
use sandbox_proto::RemoteError;
use sandbox_proto::error::ErrorKind;

/// Longest store key, in bytes (well under a file name's 255).
pub const MAX_KEY_BYTES: usize = 128;
/// Largest stored envelope, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes one group may keep.
pub const MAX_GROUP_BYTES: u64 = 32 * 1024 * 1024;
/// Most keys one group may keep.
pub const MAX_GROUP_KEYS: usize = 256;

/// Why a store request was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreServerError {
    /// The group name cannot be a folder name.
    #[error("group name {0:?} is not path-safe")]
    InvalidGroup(String),
    /// The key is too long or not path-safe.
    #[error("invalid store key: {0}")]
    InvalidKey(String),
    /// The value is over [`MAX_VALUE_BYTES`].
    #[error("value for {key} is {len} bytes; the limit is {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The group would hold more than [`MAX_GROUP_BYTES`].
    #[error("group {group} would hold {total} bytes; the limit is {max}")]
    GroupTooLarge {
        /// The group.
        group: String,
        /// What it would hold.
        total: u64,
        /// The limit.
        max: u64,
    },
    /// The group would hold more than [`MAX_GROUP_KEYS`] keys.
    #[error("group {group} would hold more than {max} keys")]
    TooManyKeys {
        /// The group.
        group: String,
        /// The limit.
        max: usize,
    },
    /// The value nests deeper than [`crate::limits::MAX_STORED_JSON_DEPTH`].
    #[error("value for {key} nests deeper than {max} levels")]
    TooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },
    /// The value is not a store envelope.
    #[error("value for {key} is not a store envelope: {message}")]
    InvalidEnvelope {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Listing the group's folder failed.
    #[error("cannot inspect {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<&StoreServerError> for RemoteError {
    fn from(error: &StoreServerError) -> Self {
        let kind = match error {
            StoreServerError::InvalidGroup(_)
            | StoreServerError::InvalidKey(_)
            | StoreServerError::InvalidEnvelope { .. }
            | StoreServerError::TooDeep { .. } => ErrorKind::BadRequest,
            StoreServerError::ValueTooLarge { .. }
            | StoreServerError::GroupTooLarge { .. }
            | StoreServerError::TooManyKeys { .. } => ErrorKind::Quota,
            StoreServerError::Store(_) | StoreServerError::Io { .. } => ErrorKind::Internal,
        };
        RemoteError::new(kind, error.to_string())
    }
}

/// One group's store folder.
pub struct GroupStore {
    group: String,
    backend: FileStoreBackend,
    /// Serialises writes so quota checks see what they check.
    write_lock: tokio::sync::Mutex<()>,
}

impl GroupStore {
    /// The store of `group` under `config_dir`.
    pub fn new(config_dir: &Path, group: &str) -> Result<Self, StoreServerError> {
        if StoreKey::new(group).is_err() {
            return Err(StoreServerError::InvalidGroup(group.to_owned()));
        }
        let dir = config_dir
            .join(homecore::file_backend::STORAGE_DIR)
            .join("sandbox")
            .join(group);
        Ok(Self {
            group: group.to_owned(),
            backend: FileStoreBackend::in_dir(dir),
            write_lock: Default::default(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        self.backend.dir()
    }

    fn key(key: &str) -> Result<StoreKey, StoreServerError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreServerError::InvalidKey(format!(
                "{} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        StoreKey::new(key).map_err(|error| StoreServerError::InvalidKey(error.to_string()))
    }

    /// `store_load`: the envelope as JSON, `None` when nothing is stored. The file is handed
    /// back as stored (this server wrote it compact) once its size and shape are checked,
    /// without building its data in memory: a group loading its biggest value many times at
    /// once costs main the file's bytes per load, not a parsed tree of it. A file over
    /// [`MAX_VALUE_BYTES`] (which this server never writes) is refused; any other goes through
    /// the file backend, which moves a file that is no envelope aside and reports it corrupt.
    pub async fn load(&self, key: &str) -> Result<Option<Bytes>, StoreServerError> {
        let key = Self::key(key)?;
        let path = self.backend.path(&key);
        let read = tokio::task::spawn_blocking(move || read_at_most(&path, MAX_VALUE_BYTES))
            .await
            .map_err(|join| StoreServerError::Io {
                path: self.backend.path(&key),
                source: std::io::Error::other(join.to_string()),
            })?;
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(ReadError::TooLarge(len)) => {
                return Err(StoreServerError::ValueTooLarge {
                    key: key.as_str().to_owned(),
                    len,
                    max: MAX_VALUE_BYTES,
                });
            }
            Err(ReadError::Io(source)) => {
                return Err(StoreServerError::Io {
                    path: self.backend.path(&key),
                    source,
                });
            }
        };
        let shaped =
            !crate::limits::nests_deeper_than(&bytes, crate::limits::MAX_STORED_JSON_DEPTH)
                && serde_json::from_slice::<EnvelopeShape>(&bytes).is_ok();
        if shaped {
            return Ok(Some(bytes.into()));
        }
        // Not an envelope this server wrote (an older file, or a damaged one): the backend's
        // load reads it the long way, and moves a file that is no envelope aside, reporting it.
        let Some(envelope) = self.backend.load(&key).await? else {
            return Ok(None);
        };
        let bytes =
            serde_json::to_vec(&envelope).map_err(|error| StoreServerError::InvalidEnvelope {
                key: key.as_str().to_owned(),
                message: error.to_string(),
            })?;
        Ok(Some(bytes.into()))
    }

    /// `store_save`: checks key, size, depth and quotas, then writes atomically the compact
    /// bytes it checked. The envelope is parsed (it must be one) and written back compact with
    /// its key set to the file's: what lands on disk is never larger than what was counted.
    pub async fn save(&self, key: &str, envelope_json: &[u8]) -> Result<(), StoreServerError> {
        let key = Self::key(key)?;
        let too_large = |len: usize| StoreServerError::ValueTooLarge {
            key: key.as_str().to_owned(),
            len,
            max: MAX_VALUE_BYTES,
        };
        if envelope_json.len() > MAX_VALUE_BYTES {
            return Err(too_large(envelope_json.len()));
        }
        if crate::limits::nests_deeper_than(envelope_json, crate::limits::MAX_STORED_JSON_DEPTH) {
            return Err(StoreServerError::TooDeep {
                key: key.as_str().to_owned(),
                max: crate::limits::MAX_STORED_JSON_DEPTH,
            });
        }
        let invalid = |error: serde_json::Error| StoreServerError::InvalidEnvelope {
            key: key.as_str().to_owned(),
            message: error.to_string(),
        };
        let mut envelope: StoreEnvelope = serde_json::from_slice(envelope_json).map_err(invalid)?;
        // The key inside is informational; the file name decides.
        envelope.key = key.as_str().to_owned();
        let bytes = serde_json::to_vec(&envelope).map_err(invalid)?;
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(too_large(bytes.len()));
        }
        let _write = self.write_lock.lock().await;
        let (keys, held, existing) = self.usage(&key)?;
        let new_keys = keys + usize::from(existing.is_none());
        if new_keys > MAX_GROUP_KEYS {
            return Err(StoreServerError::TooManyKeys {
                group: self.group.clone(),
                max: MAX_GROUP_KEYS,
            });
        }
        let total = held - existing.unwrap_or(0) + bytes.len() as u64;
        if total > MAX_GROUP_BYTES {
            return Err(StoreServerError::GroupTooLarge {
                group: self.group.clone(),
                total,
                max: MAX_GROUP_BYTES,
            });
        }
        self.backend.save_bytes(&key, bytes).await?;
        Ok(())
    }

    /// `store_remove`.
    pub async fn remove(&self, key: &str) -> Result<(), StoreServerError> {
        let key = Self::key(key)?;
        let _write = self.write_lock.lock().await;
        self.backend.remove(&key).await?;
        Ok(())
    }

    /// Deletes the keys of config entry `entry_id`: every file whose name has the entry id as
    /// one of its tokens (the name split on `.`, `_` and `-`), compared without case:
    /// integrations name their stores after the entry, such as `demo.<entry_id>`, sometimes
    /// lowercased. Files moved aside as corrupt (`<key>.corrupt.<time>`) and temp files of
    /// interrupted writes (`.tmp-<ulid>-<key>`) of those keys go too. An id that is not at
    /// least [`MIN_ENTRY_ID_CHARS`] ASCII letters and digits (main issues ULIDs; one loaded
    /// from storage may be anything) could name most keys of the group, the restore state
    /// included: then nothing is deleted and the refusal is logged. The folder is read and
    /// the files deleted on a blocking thread. Returns the names deleted, in name order.
    pub async fn remove_entry_keys(&self, entry_id: &str) -> Result<Vec<String>, StoreServerError> {
        if !names_entries_safely(entry_id) {
            tracing::warn!(
                group = %self.group,
                entry_id = %crate::limits::bounded_text(entry_id, crate::limits::MAX_TEXT_BYTES),
                "the entry id is too short or not letters and digits: none of the group's store keys are deleted for it"
            );
            return Ok(Vec::new());
        }
        let _write = self.write_lock.lock().await;
        let dir = self.dir().to_owned();
        let entry_id = entry_id.to_owned();
        let blocking_dir = dir.clone();
        tokio::task::spawn_blocking(move || remove_files_naming(&blocking_dir, &entry_id))
            .await
            .map_err(|join| StoreServerError::Io {
                path: dir,
                source: std::io::Error::other(join.to_string()),
            })?
    }

    /// (keys, bytes) the group holds, and the current size of `key` if it exists.
    fn usage(&self, key: &StoreKey) -> Result<(usize, u64, Option<u64>), StoreServerError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, None)),
            Err(source) => {
                return Err(StoreServerError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let (mut keys, mut bytes, mut existing) = (0usize, 0u64, None);
        for entry in entries {
            let entry = entry.map_err(|source| StoreServerError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let metadata = entry.metadata().map_err(|source| StoreServerError::Io {
                path: entry.path(),
                source,
            })?;
            if !metadata.is_file() {
                continue;
            }
            // Temp files of interrupted writes count against the quota too: they use disk.
            keys += 1;
            bytes += metadata.len();
            if entry.file_name().to_str() == Some(key.as_str()) {
                existing = Some(metadata.len());
            }
        }
        Ok((keys, bytes, existing))
    }
}

/// Fewest characters an entry id must have for its store keys to be deleted by name (see
/// [`GroupStore::remove_entry_keys`]): main's entry ids are 26-character ULIDs, and a shorter
/// token (`a`, `state`) would match keys that belong to no entry.
pub const MIN_ENTRY_ID_CHARS: usize = 8;

/// Whether `entry_id` is long and plain enough to find an entry's store keys by: at least
/// [`MIN_ENTRY_ID_CHARS`] characters, each an ASCII letter or digit.
fn names_entries_safely(entry_id: &str) -> bool {
    entry_id.len() >= MIN_ENTRY_ID_CHARS
        && entry_id.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// Whether the file `name` belongs to the entry `entry_id`: one of the name's tokens, split on
/// `.`, `_` and `-`, is the id, compared without case.
fn names_entry(name: &str, entry_id: &str) -> bool {
    name.split(['.', '_', '-'])
        .any(|token| token.eq_ignore_ascii_case(entry_id))
}

/// Deletes the files of `dir` that [`names_entry`] `entry_id`; the names deleted, sorted.
fn remove_files_naming(dir: &Path, entry_id: &str) -> Result<Vec<String>, StoreServerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreServerError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreServerError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !names_entry(&name, entry_id) || !entry.path().is_file() {
            continue;
        }
        std::fs::remove_file(entry.path()).map_err(|source| StoreServerError::Io {
            path: entry.path(),
            source,
        })?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

/// A stored envelope's shape, checked without building its data.
#[derive(serde::Deserialize)]
struct EnvelopeShape {
    #[serde(rename = "version")]
    _version: u32,
    #[serde(rename = "minor_version", default)]
    _minor_version: Option<u32>,
    #[serde(rename = "key")]
    _key: serde::de::IgnoredAny,
    #[serde(rename = "data")]
    _data: serde::de::IgnoredAny,
}

/// Why a stored file was not read.
enum ReadError {
    /// It is larger than allowed (its size).
    TooLarge(usize),
    /// Reading failed.
    Io(std::io::Error),
}

/// The file at `path`, `None` when there is none, refused when larger than `max` bytes
/// (checked before reading, and bounded while reading in case it grows meanwhile).
fn read_at_most(path: &Path, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ReadError::Io(error)),
    };
    let len = file.metadata().map_err(ReadError::Io)?.len();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(ReadError::TooLarge(len));
    }
    let mut bytes = Vec::with_capacity(len);
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge(bytes.len()));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests;
