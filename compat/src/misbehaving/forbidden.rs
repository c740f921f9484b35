//! `misbehave_forbidden`: tries, from inside its (sandbox's private) core, everything a group
//! may not do to main, next to one legitimate switch:
//!
//! - registers services in domains it does not own ([`FORBIDDEN_SERVICES`]);
//! - fires core control events and an event of a domain it does not own ([`FORBIDDEN_EVENTS`]),
//!   each with data `{"forged": true}`;
//! - adds a sensor whose device carries an identifier claimed by another integration (entry
//!   data `hijack_domain`/`hijack_id`, default [`HIJACK_IDENTIFIER`]);
//! - writes store keys that traverse paths ([`TRAVERSAL_KEYS`]) and a value over the quota
//!   ([`HUGE_KEY`], [`HUGE_VALUE_BYTES`]).
//!
//! It tries all of it during setup and again, once more, just after. Then it fires
//! [`EVENT_DONE`] every [`DONE_INTERVAL`], so a test knows every earlier push has been handled,
//! and answers `misbehave_forbidden.report` with what each attempt returned inside the sandbox.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use homecore::entity::EntityDeviceInfo;
use homecore::{ConfigEntry, Core, ServiceError, SetupError, SupportsResponse};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, add_entity, failed};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_forbidden";

/// The domain service answering with what every attempt returned.
pub const SERVICE_REPORT: &str = "report";

/// Fired again and again once setup is done (the first ones, before main approved the domain,
/// are never forwarded).
pub const EVENT_DONE: &str = "misbehave_forbidden_done";

/// Time between two [`EVENT_DONE`].
pub const DONE_INTERVAL: Duration = Duration::from_millis(100);

/// Services in domains the integration does not own.
pub const FORBIDDEN_SERVICES: [(&str, &str); 3] = [
    ("persistent_notification", "create"),
    ("homeassistant", "restart"),
    ("persistent_notification", "dismiss"),
];

/// Core control events and an event of another integration.
pub const FORBIDDEN_EVENTS: [&str; 4] = [
    "homeassistant_stop",
    "call_service",
    "state_changed",
    "zha_event",
];

/// The device identifier the sensor claims when the entry does not say.
pub const HIJACK_IDENTIFIER: (&str, &str) = ("hue", "main-owned-device");

/// Store keys that try to leave the group's folder.
pub const TRAVERSAL_KEYS: [&str; 4] = [
    "../../../misbehave_escape",
    "../misbehave_escape",
    "/misbehave_escape",
    "misbehave_forbidden/../../misbehave_escape",
];

/// The store key of the over-quota value.
pub const HUGE_KEY: &str = "misbehave_forbidden.huge";

/// Size of the over-quota value (the quota of one value is 4 MiB).
pub const HUGE_VALUE_BYTES: usize = 5 * 1024 * 1024;

/// What each attempt returned, by attempt.
type Outcomes = Arc<Mutex<Map<String, Value>>>;

fn record<E: std::fmt::Display>(outcomes: &Outcomes, attempt: String, result: Result<(), E>) {
    let outcome = match result {
        Ok(()) => json!("ok"),
        Err(error) => json!(format!("error: {error}")),
    };
    outcomes.lock().insert(attempt, outcome);
}

/// Registers the forbidden services and fires the forbidden events in `core`.
fn forge(core: &Core, outcomes: &Outcomes, round: &str) {
    for (domain, service) in FORBIDDEN_SERVICES {
        let result = core.services().register(
            domain,
            service,
            None,
            SupportsResponse::None,
            |_call| async { Ok(None) },
        );
        record(
            outcomes,
            format!("{round} service {domain}.{service}"),
            result,
        );
    }
    for event_type in FORBIDDEN_EVENTS {
        let mut data = Map::new();
        data.insert("forged".into(), json!(true));
        let result = core.bus().fire(event_type, data, None).map(|_| ());
        record(outcomes, format!("{round} event {event_type}"), result);
    }
}

/// Writes the traversal keys and the over-quota value through `core`'s store.
async fn write_store(core: &Core, outcomes: &Outcomes) {
    for key in TRAVERSAL_KEYS {
        let result = match core.stores().store(key, 1, 1) {
            Ok(store) => store.save(json!({"escaped": true})).await,
            Err(error) => Err(error),
        };
        record(outcomes, format!("store {key}"), result);
    }
    let huge = "x".repeat(HUGE_VALUE_BYTES);
    let result = match core.stores().store(HUGE_KEY, 1, 1) {
        Ok(store) => store.save(json!({ "huge": huge })).await,
        Err(error) => Err(error),
    };
    record(outcomes, format!("store {HUGE_KEY}"), result);
}

struct Forbidden;

impl Behaviour for Forbidden {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let outcomes: Outcomes = Arc::default();
            forge(core, &outcomes, "setup");
            write_store(core, &outcomes).await;

            let own = Arc::new(
                ToyEntity::switch(&format!("{}-own", entry.entry_id), "Own switch", None)
                    .with_device(EntityDeviceInfo {
                        identifiers: vec![(DOMAIN.to_owned(), entry.entry_id.clone())],
                        name: Some("Forbidden's own device".to_owned()),
                        ..EntityDeviceInfo::default()
                    }),
            );
            add_entity(core, entry, &own).await?;
            let hijack_domain = entry
                .data
                .get("hijack_domain")
                .and_then(Value::as_str)
                .unwrap_or(HIJACK_IDENTIFIER.0);
            let hijack_id = entry
                .data
                .get("hijack_id")
                .and_then(Value::as_str)
                .unwrap_or(HIJACK_IDENTIFIER.1);
            let hijacker = Arc::new(
                ToyEntity::sensor(&format!("{}-hijack", entry.entry_id), "Hijacker", "1")
                    .with_device(EntityDeviceInfo {
                        identifiers: vec![(hijack_domain.to_owned(), hijack_id.to_owned())],
                        name: Some("Hijacked device".to_owned()),
                        ..EntityDeviceInfo::default()
                    }),
            );
            add_entity(core, entry, &hijacker).await?;

            let report = Arc::clone(&outcomes);
            core.services()
                .register(
                    DOMAIN,
                    SERVICE_REPORT,
                    None,
                    SupportsResponse::Only,
                    move |_call| {
                        let report = report.lock().clone();
                        async move { Ok::<_, ServiceError>(Some(Value::Object(report))) }
                    },
                )
                .map_err(failed)?;

            let core = core.clone();
            tasks.spawn(async move {
                // Once more after setup, when the entry's own domain is approved.
                tokio::task::yield_now().await;
                forge(&core, &outcomes, "after");
                let mut ticker = tokio::time::interval(DONE_INTERVAL);
                loop {
                    ticker.tick().await;
                    if let Err(error) = core.bus().fire(EVENT_DONE, Map::new(), None) {
                        tracing::debug!(%error, "done event not fired");
                    }
                }
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(
        DOMAIN,
        "Misbehave: forbidden registrations",
        &["switch", "sensor"],
        Forbidden,
    )
}
