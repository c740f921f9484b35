//! `misbehave_panic`: panics in the middle of entry setup.
//!
//! homecore catches the panic where it calls the integration's entry setup, in whichever core
//! runs it: the entry shows `setup_error` (its reason says the setup panicked) and the process
//! goes on, be it main in-process or the sandbox process (which is not restarted).

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
