//! Support for the workspace's end-to-end tests: finding the real binaries they drive
//! ([`binary`]) and running a hub with them ([`hub::RunningHub`]).
//!
//! A binary of another package has no `CARGO_BIN_EXE_*` variable, and `cargo test -p
//! sandbox-tests` alone would not build it, so [`binary`] asks cargo to build it (a no-op when
//! it is fresh) and takes its path from cargo's own report, once per binary and test process.
//! The build uses the profile the test was built with and the same target directory, so the
//! binary a test runs is the one the workspace's sources make now, never a stale copy.

pub mod http;
pub mod hub;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// A binary of this workspace: its package and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binary {
    /// The package that builds it.
    pub package: &'static str,
    /// The binary's name.
    pub name: &'static str,
}

/// The `sandbox-host` program.
pub const SANDBOX_HOST: Binary = Binary {
    package: "sandbox-host-cli",
    name: "sandbox-host",
};

/// The built-in sandbox runtime.
pub const SANDBOX_RUNTIME: Binary = Binary {
    package: "sandbox-runtime",
    name: "sandbox-runtime",
};

/// A scriptable sandbox that speaks only the wire (this package's `sandbox-test-child`).
pub const TEST_CHILD: Binary = Binary {
    package: "sandbox-tests",
    name: "sandbox-test-child",
};

/// Where the workspace's manifest is.
fn workspace_manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("Cargo.toml"))
        .unwrap_or_else(|| PathBuf::from("Cargo.toml"))
}

/// The path of `binary`, built now if it is not fresh.
///
/// # Panics
/// When cargo cannot build it: a test cannot go on without the binary it drives, and the
/// panic names the binary and carries cargo's error.
pub fn binary(binary: Binary) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Binary, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Held across the build: two tests of one process asking at once build it once.
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(&binary) {
        return path.clone();
    }
    let run = escargot::CargoBuild::new()
        .manifest_path(workspace_manifest())
        .package(binary.package)
        .bin(binary.name)
        .current_release()
        .run()
        .unwrap_or_else(|error| {
            panic!(
                "cannot build `{}` of package `{}`: {error}",
                binary.name, binary.package
            )
        });
    let path = run.path().to_owned();
    built.insert(binary, path.clone());
    path
}
