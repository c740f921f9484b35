//! The default store backend: one JSON file per key in `<config_dir>/.storage/`, written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use crate::store::{StoreBackend, StoreEnvelope, StoreError, StoreKey};

#[cfg(test)]
mod tests;

/// Folder under the config dir holding store files (as Home Assistant's `.storage`).
pub const STORAGE_DIR: &str = ".storage";

/// Marks temporary files of unfinished writes; valid keys never start with `.`, so these never clash with one.
const TEMP_PREFIX: &str = ".tmp-";

/// Stores each key in its own file, replaced atomically: write a temp file in the same
/// folder, fsync it, rename it over the old file, fsync the folder. A crash at any
/// point leaves either the old or the new file whole.
#[derive(Debug, Clone)]
pub struct FileStoreBackend {
    /// The folder holding the files.
    dir: PathBuf,
}

impl FileStoreBackend {
    /// A backend writing to `<config_dir>/.storage`.
    pub fn new(config_dir: &Path) -> Self {
        Self {
            dir: config_dir.join(STORAGE_DIR),
        }
    }

    /// A backend writing straight into `dir` (for hosts that keep several stores, such as one
    /// per sandbox group).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `key`.
    pub fn path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(key.as_str())
    }

    /// Deletes temp files left by writes a crash interrupted; returns how many.
    pub fn remove_stale_temp_files(&self) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// First half of an atomic write: the new contents, durable, in a temp file beside the target.
    pub(crate) fn write_temp(&self, key: &StoreKey, bytes: &[u8]) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            ulid::Ulid::new(),
            key.as_str()
        ));
        let result = (|| {
            // Store files may hold credentials: readable by the owner only.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        match result {
            Ok(()) => Ok(temp),
            Err(err) => {
                let _ = fs::remove_file(&temp);
                Err(err)
            }
        }
    }

    /// Second half: rename the temp file over the target and make the rename durable.
    pub(crate) fn commit(&self, temp: &Path, key: &StoreKey) -> io::Result<()> {
        if let Err(err) = fs::rename(temp, self.path(key)) {
            let _ = fs::remove_file(temp);
            return Err(err);
        }
        File::open(&self.dir)?.sync_all()
    }

    fn load_blocking(&self, key: &StoreKey) -> Result<Option<StoreEnvelope>, StoreError> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    key: key.to_string(),
                    operation: "read",
                    source,
                });
            }
        };
        match serde_json::from_slice::<StoreEnvelope>(&bytes) {
            Ok(envelope) => Ok(Some(envelope)),
            Err(err) => {
                // As Home Assistant does: keep the bad file for inspection, out of the way of the next write.
                let moved = path.with_file_name(format!(
                    "{}.corrupt.{}",
                    key.as_str(),
                    chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.6fZ")
                ));
                let moved_to = fs::rename(&path, &moved).ok().map(|()| moved);
                tracing::error!(%key, %err, ?moved_to, "corrupt store file");
                Err(StoreError::Corrupt {
                    key: key.to_string(),
                    message: err.to_string(),
                    moved_to,
                })
            }
        }
    }

    fn save_blocking(&self, key: &StoreKey, bytes: &[u8]) -> Result<(), StoreError> {
        let io_error = |source| StoreError::Io {
            key: key.to_string(),
            operation: "write",
            source,
        };
        let temp = self.write_temp(key, bytes).map_err(io_error)?;
        self.commit(&temp, key).map_err(io_error)
    }

    fn remove_blocking(&self, key: &StoreKey) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                key: key.to_string(),
                operation: "remove",
                source,
            }),
        }
    }
}

/// Runs blocking file IO off the async threads.
async fn blocking<T: Send + 'static>(
    key: &StoreKey,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Backend {
                key: key.to_string(),
                message: format!("file IO task failed: {join}"),
            })
        })
}

impl FileStoreBackend {
    /// Writes `bytes` as the file of `key`, atomically, exactly as given: for a caller that
    /// validated an envelope's bytes and must store what it checked (a sandbox's store server
    /// stores the bytes it counted against its quotas, never a re-serialized copy).
    pub async fn save_bytes(&self, key: &StoreKey, bytes: Vec<u8>) -> Result<(), StoreError> {
        let backend = self.clone();
        let owned = key.clone();
        blocking(key, move || backend.save_blocking(&owned, &bytes)).await
    }
}

impl StoreBackend for FileStoreBackend {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>> {
        let backend = self.clone();
        let owned = key.clone();
        Box::pin(blocking(key, move || backend.load_blocking(&owned)))
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        envelope: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // Compact, not pretty-printed: indentation grows with nesting, so a deeply nested
            // value an integration stored (a sandbox's entry data, an entity's capabilities)
            // would take many times its size on disk and in every rewrite.
            let mut bytes = serde_json::to_vec(envelope).map_err(|err| StoreError::Backend {
                key: key.to_string(),
                message: format!("cannot serialize: {err}"),
            })?;
            bytes.push(b'\n');
            let backend = self.clone();
            let owned = key.clone();
            blocking(key, move || backend.save_blocking(&owned, &bytes)).await
        })
    }

    fn remove<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        let backend = self.clone();
        let owned = key.clone();
        Box::pin(blocking(key, move || backend.remove_blocking(&owned)))
    }
}
