//! `misbehave_abort`: sets up a sensor whose state is the process id, then aborts the whole
//! process (`std::process::abort`) N seconds later (entry data `seconds`, default
//! [`DEFAULT_SECONDS`]). Every respawn sets the entry up again, and aborts again, until the
//! group's restart budget is used up.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, add_entity, data_u64};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_abort";

/// Seconds from setup to abort when the entry does not say.
pub const DEFAULT_SECONDS: u64 = 1;

struct AbortAfter;

impl Behaviour for AbortAfter {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let seconds = data_u64(entry, "seconds", DEFAULT_SECONDS);
            let pid = Arc::new(ToyEntity::sensor(
                &format!("{}-pid", entry.entry_id),
                "Abort pid",
                &std::process::id().to_string(),
            ));
            add_entity(core, entry, &pid).await?;
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                eprintln!("misbehave_abort: aborting the process on purpose");
                std::process::abort();
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(
        DOMAIN,
        "Misbehave: abort after setup",
        &["sensor"],
        AbortAfter,
    )
}
