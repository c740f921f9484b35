//! `misbehave_hang`: sets up a sensor, then (entry data `hang_after_ms` later, default
//! [`DEFAULT_HANG_AFTER_MS`]) blocks the runtime's thread with `std::thread::sleep` for
//! `hang_secs` (default [`DEFAULT_HANG_SECS`]): the process is alive but answers nothing, which
//! only the host's liveness watchdog can tell from a slow sandbox.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, add_entity, data_u64};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_hang";

/// Milliseconds from setup to the hang when the entry does not say.
pub const DEFAULT_HANG_AFTER_MS: u64 = 1000;

/// How long the thread is blocked when the entry does not say (an hour).
pub const DEFAULT_HANG_SECS: u64 = 3600;

struct Hang;

impl Behaviour for Hang {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let after =
                Duration::from_millis(data_u64(entry, "hang_after_ms", DEFAULT_HANG_AFTER_MS));
            let hang = Duration::from_secs(data_u64(entry, "hang_secs", DEFAULT_HANG_SECS));
            let sensor = Arc::new(ToyEntity::sensor(
                &format!("{}-hang", entry.entry_id),
                "Hang",
                "running",
            ));
            add_entity(core, entry, &sensor).await?;
            tasks.spawn(async move {
                tokio::time::sleep(after).await;
                eprintln!("misbehave_hang: blocking the runtime's thread on purpose");
                // Blocking inside async code on purpose: the whole event loop stops.
                std::thread::sleep(hang);
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(DOMAIN, "Misbehave: hang after ready", &["sensor"], Hang)
}
