//! Long-lived access tokens for the hub's HTTP API: `token create NAME` prints a token once,
//! and the hub keeps only its SHA-256 in `DIR/.storage/sandbox_host.access_tokens`. A token is
//! 256 random bits, so a plain hash is as strong as a slow one; a leaked store file gives no
//! token. The file is the only truth: the commands write it (atomically, 0600) whether or not
//! the hub runs, and the hub reads it again whenever it changed, so a revoked token stops
//! working at its next use.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The store file's name under `DIR/.storage`.
pub const TOKENS_FILE_NAME: &str = "sandbox_host.access_tokens";

/// What every token starts with, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "sht_";

/// Random bytes per token (256 bits).
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// Most tokens the store holds: a hub has a handful of clients, and each verification reads
/// them all.
pub const MAX_TOKENS: usize = 256;

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;

/// The longest text taken as a token before it is hashed (a real one is 68 bytes).
pub const MAX_TOKEN_BYTES: usize = 128;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store is not what this program writes.
    #[error("{path} is not a token store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name that is empty, too long or not printable.
    #[error(
        "a token name is 1 to {MAX_TOKEN_NAME_BYTES} letters, digits, spaces, `-`, `_` or `.`: {0:?}"
    )]
    BadName(String),
    /// The name is taken.
    #[error("a token named {0:?} exists already (revoke it first)")]
    Exists(String),
    /// No token by that name.
    #[error("no token named {0:?}")]
    Unknown(String),
    /// The store is full.
    #[error("the store holds {MAX_TOKENS} tokens already; revoke one first")]
    Full,
    /// The OS gave no random bytes.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// A token as the store keeps it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// Its name, unique.
    pub name: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    tokens: Vec<StoredToken>,
}

/// The current store format.
const STORE_VERSION: u32 = 1;

/// The token store of a hub.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    /// The tokens as last read, with the file's modification time then.
    cache: Mutex<Option<(Option<SystemTime>, Vec<StoredToken>)>>,
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Equal in time independent of where the texts differ.
fn same(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= MAX_TOKEN_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
}

impl TokenStore {
    /// The store of the hub whose config dir is `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(".storage").join(TOKENS_FILE_NAME),
            cache: Mutex::new(None),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> TokenError {
        TokenError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<Vec<StoredToken>, TokenError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.io(error)),
        };
        let file: StoreFile =
            serde_json::from_slice(&bytes).map_err(|error| TokenError::Corrupt {
                path: self.path.clone(),
                reason: error.to_string(),
            })?;
        if file.version != STORE_VERSION {
            return Err(TokenError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "version {} (this program reads {STORE_VERSION})",
                    file.version
                ),
            });
        }
        Ok(file.tokens)
    }

    fn write(&self, tokens: Vec<StoredToken>) -> Result<(), TokenError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|error| self.io(error))?;
        let text = serde_json::to_vec_pretty(&StoreFile {
            version: STORE_VERSION,
            tokens,
        })
        .map_err(|error| self.io(std::io::Error::other(error)))?;
        // tempfile creates the file 0600.
        let mut temporary = tempfile::Builder::new()
            .prefix(".access_tokens.")
            .tempfile_in(dir)
            .map_err(|error| self.io(error))?;
        temporary.write_all(&text).map_err(|error| self.io(error))?;
        temporary
            .as_file()
            .sync_all()
            .map_err(|error| self.io(error))?;
        temporary
            .persist(&self.path)
            .map_err(|error| self.io(error.error))?;
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| self.io(error))?;
        *self.cache.lock() = None;
        Ok(())
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<StoredToken>, TokenError> {
        self.read()
    }

    /// Makes a token named `name` and returns it: the only time it is seen.
    pub fn create(&self, name: &str) -> Result<String, TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName(name.to_owned()));
        }
        let mut tokens = self.read()?;
        if tokens.iter().any(|token| token.name == name) {
            return Err(TokenError::Exists(name.to_owned()));
        }
        if tokens.len() >= MAX_TOKENS {
            return Err(TokenError::Full);
        }
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(|error| TokenError::Random(error.to_string()))?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            random
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        );
        tokens.push(StoredToken {
            name: name.to_owned(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sha256: hash(&token),
        });
        self.write(tokens)?;
        Ok(token)
    }

    /// Removes the token named `name`.
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let mut tokens = self.read()?;
        let before = tokens.len();
        tokens.retain(|token| token.name != name);
        if tokens.len() == before {
            return Err(TokenError::Unknown(name.to_owned()));
        }
        self.write(tokens)
    }

    /// The name of the token `presented` is, if it is one; the store is read again when its
    /// file changed since the last look.
    pub fn verify(&self, presented: &str) -> Result<Option<String>, TokenError> {
        if presented.len() > MAX_TOKEN_BYTES || !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|metadata| metadata.modified())
            .ok();
        let mut cache = self.cache.lock();
        let fresh = matches!(&*cache, Some((seen, _)) if *seen == modified && modified.is_some());
        if !fresh {
            *cache = Some((modified, self.read()?));
        }
        let presented = hash(presented);
        Ok(cache.as_ref().and_then(|(_, tokens)| {
            tokens
                .iter()
                .find(|token| same(&token.sha256, &presented))
                .map(|token| token.name.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_shown_once_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        let token = store.create("dashboard").expect("created");
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES);
        let file = std::fs::read_to_string(store.path()).expect("stored");
        assert!(
            !file.contains(&token[TOKEN_PREFIX.len()..]),
            "the token itself is not stored"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.path())
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            store.verify(&token).expect("reads"),
            Some("dashboard".to_owned())
        );
        assert_eq!(store.verify("sht_0000").expect("reads"), None);
        assert_eq!(store.verify(&"x".repeat(10_000)).expect("reads"), None);
        let second = store.create("node-red").expect("created");
        assert_ne!(token, second);
        let names: Vec<_> = store
            .list()
            .expect("lists")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["dashboard", "node-red"]);
    }

    #[test]
    fn a_revoked_token_stops_working_even_for_a_store_that_read_it_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = TokenStore::new(dir.path());
        let command = TokenStore::new(dir.path());
        let token = command.create("script").expect("created");
        assert!(hub.verify(&token).expect("reads").is_some());
        command.revoke("script").expect("revoked");
        assert_eq!(hub.verify(&token).expect("reads"), None);
        assert!(matches!(
            command.revoke("script"),
            Err(TokenError::Unknown(_))
        ));
    }

    #[test]
    fn names_are_checked_and_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        for bad in [
            "",
            "   ",
            "a/b",
            "new\nline",
            &"n".repeat(MAX_TOKEN_NAME_BYTES + 1),
        ] {
            assert!(
                matches!(store.create(bad), Err(TokenError::BadName(_))),
                "{bad:?}"
            );
        }
        store.create("phone").expect("created");
        assert!(matches!(store.create("phone"), Err(TokenError::Exists(_))));
    }

    #[test]
    fn a_store_this_program_did_not_write_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join(".storage")).expect("dir");
        std::fs::write(store.path(), b"{\"tokens\": 5}").expect("written");
        let error = store.list().expect_err("corrupt");
        assert!(
            error.to_string().contains("is not a token store"),
            "{error}"
        );
        assert!(store.create("x").is_err(), "nothing is overwritten");
    }
}
