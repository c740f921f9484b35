//! `misbehave_panic`: panics in the middle of entry setup.
//!
//! In a sandbox the panic unwinds into the channel's handler, which answers main with an
//! `internal` error: the entry shows `setup_error` and the sandbox process stays up.

use futures::future::BoxFuture;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_panic";

/// The panic message.
pub const PANIC_MESSAGE: &str = "misbehave_panic panics during setup on purpose";

struct PanicSetup;

impl Behaviour for PanicSetup {
    fn setup<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
        _tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            panic!("{PANIC_MESSAGE}");
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(DOMAIN, "Misbehave: panic in setup", &[], PanicSetup)
}
