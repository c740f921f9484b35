//! `misbehave_flood`: a sensor whose state changes as fast as the runtime allows, `count` times
//! (entry data, default [`DEFAULT_COUNT`]): states `1`, `2`, ... `count`, so the last state is
//! the count itself.

use std::sync::Arc;

use futures::future::BoxFuture;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, add_entity, data_u64};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_flood";

/// State changes when the entry does not say.
pub const DEFAULT_COUNT: u64 = 100_000;

/// Most changes the entry may ask for.
pub const MAX_COUNT: u64 = 10_000_000;

/// State changes written between two yields to the runtime (the flood is as fast as possible,
/// but it does not starve the channel's own tasks forever).
pub const CHANGES_PER_YIELD: u64 = 64;

struct Flood;

impl Behaviour for Flood {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let count = data_u64(entry, "count", DEFAULT_COUNT).min(MAX_COUNT);
            let sensor = Arc::new(ToyEntity::sensor(
                &format!("{}-flood", entry.entry_id),
                "Flood",
                "0",
            ));
            add_entity(core, entry, &sensor).await?;
            tasks.spawn(async move {
                for change in 1..=count {
                    sensor.set(change.to_string());
                    if change % CHANGES_PER_YIELD == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(DOMAIN, "Misbehave: state flood", &["sensor"], Flood)
}
