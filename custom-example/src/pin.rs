//! Pinning: the SHA-256 of a built sandbox binary, and the pinned manifest a host installs it
//! with (`{"domain", "version", "sha256"}`).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bytes read at a time while hashing.
const READ_CHUNK: usize = 64 * 1024;

/// Why an artifact could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The artifact could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The artifact.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The shipped manifest is wrong.
    #[error(transparent)]
    Manifest(#[from] super::ManifestError),
}

/// What a host pins a custom integration's artifact with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pinned {
    /// The integration's domain.
    pub domain: String,
    /// Its version (the manifest's, which is the crate's).
    pub version: String,
    /// The artifact's SHA-256, lowercase hex.
    pub sha256: String,
}

/// The SHA-256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, PinError> {
    let read_error = |source| PinError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        let read = file.read(&mut buffer).map_err(read_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// The pinned manifest of the artifact at `path`.
pub fn pin(path: &Path) -> Result<Pinned, PinError> {
    let manifest = super::manifest()?;
    Ok(Pinned {
        domain: manifest.domain,
        version: manifest.version.to_string(),
        sha256: sha256_file(path)?,
    })
}
