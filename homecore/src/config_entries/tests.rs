//! Tests for config entries: lifecycle states, the router seam, options flows and persistence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex as PlMutex;
use serde_json::json;

use super::*;
use crate::core::CoreConfig;
use crate::data_entry_flow::FlowStepContext;
use crate::device_registry::DeviceInfo;
use crate::store::MemoryStoreBackend;

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Setup code whose outcomes the test scripts.
#[derive(Default)]
struct ScriptedSetup {
    /// Outcomes of the next setups, first first; empty means success.
    setups: PlMutex<Vec<Result<(), SetupError>>>,
    /// Outcome of unloads.
    unload_error: PlMutex<Option<String>>,
    /// Number of setup calls.
    setup_calls: AtomicUsize,
    /// Number of remove_entry calls.
    removed: AtomicUsize,
    /// The version this code expects.
    version: (u32, u32),
}

impl EntrySetupHandler for ScriptedSetup {
    fn version(&self) -> (u32, u32) {
        self.version
    }

    fn setup_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        self.setup_calls.fetch_add(1, Ordering::SeqCst);
        let outcome = {
            let mut setups = self.setups.lock();
            if setups.is_empty() {
                Ok(())
            } else {
                setups.remove(0)
            }
        };
        Box::pin(async move { outcome })
    }

    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        let outcome = self.unload_error.lock().clone();
        Box::pin(async move { outcome.map_or(Ok(()), Err) })
    }

    fn migrate_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if entry.data.contains_key("unmigratable") {
                return Err("cannot migrate".into());
            }
            let mut data = entry.data.clone();
            data.insert("migrated".into(), json!(true));
            core.config_entries()
                .update_entry(
                    &entry.entry_id,
                    ConfigEntryUpdate {
                        data: Some(data),
                        version: Some(self.version.0),
                        minor_version: Some(self.version.1),
                        ..ConfigEntryUpdate::default()
                    },
                )
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }

    fn remove_entry<'a>(&'a self, _core: &'a Core, _entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        self.removed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// A one-step flow: its first step creates an entry from the input (or aborts for reauth).
struct QuickFlow;

impl FlowHandler for QuickFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            let input = input.unwrap_or_default();
            match step_id {
                SOURCE_REAUTH => Ok(FlowStep::form("reauth_confirm", None)),
                "init" => Ok(FlowStep::create_entry(
                    "",
                    obj(json!({"interval": input.get("interval").cloned().unwrap_or(json!(5))})),
                )),
                _ => {
                    if let Some(id) = input.get("id").and_then(Value::as_str) {
                        flow.set_unique_id(Some(id), true)?;
                        flow.abort_if_unique_id_configured(None, false).await?;
                    }
                    Ok(FlowStep::create_entry("Quick", input))
                }
            }
        })
    }
}

fn core_with(setup: Arc<ScriptedSetup>) -> Core {
    let table = HandlerTable::new();
    table.register_config_flow("quick", || Box::new(QuickFlow));
    table.register_options_flow("quick", |_entry| Box::new(QuickFlow));
    table.register_entry_setup("quick", setup);
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.config_entries().set_handlers(Arc::new(table));
    core
}

fn scripted(version: (u32, u32)) -> Arc<ScriptedSetup> {
    Arc::new(ScriptedSetup {
        version,
        ..ScriptedSetup::default()
    })
}

async fn add_quick(core: &Core, data: Value) -> ConfigEntry {
    core.config_entries()
        .add(ConfigEntry::new("quick", "Quick", obj(data), SOURCE_USER))
        .await
        .unwrap()
}

#[tokio::test]
async fn add_sets_up_and_unload_reload_work() {
    let setup = scripted((1, 1));
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert!(matches!(
        entries.setup(&entry.entry_id).await,
        Err(ConfigEntryError::OperationNotAllowed(_))
    ));
    assert!(entries.unload(&entry.entry_id).await.unwrap());
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::NotLoaded
    );
    assert!(
        entries.unload(&entry.entry_id).await.unwrap(),
        "unloading a not loaded entry is fine"
    );
    assert!(entries.reload(&entry.entry_id).await.unwrap());
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 2);
    assert!(matches!(
        entries.setup("missing").await,
        Err(ConfigEntryError::UnknownEntry(_))
    ));
}

#[tokio::test]
async fn setup_error_and_failed_unload_states() {
    let setup = scripted((1, 1));
    setup
        .setups
        .lock()
        .push(Err(SetupError::Failed("bad config".into())));
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    let entry = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupError);
    assert_eq!(entry.reason.as_deref(), Some("bad config"));
    // Reload recovers from a setup error.
    assert!(entries.reload(&entry.entry_id).await.unwrap());

    *setup.unload_error.lock() = Some("stuck".into());
    assert!(!entries.unload(&entry.entry_id).await.unwrap());
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::FailedUnload
    );
    assert!(!entries.entry(&entry.entry_id).unwrap().state.recoverable());
    assert!(matches!(
        entries.unload(&entry.entry_id).await,
        Err(ConfigEntryError::OperationNotAllowed(_))
    ));
    assert!(matches!(
        entries.reload(&entry.entry_id).await,
        Err(ConfigEntryError::OperationNotAllowed(_))
    ));
    let removed = entries.remove(&entry.entry_id).await.unwrap();
    assert!(removed.require_restart);
}

#[tokio::test(start_paused = true)]
async fn not_ready_retries_with_backoff() {
    let setup = scripted((1, 1));
    setup.setups.lock().extend([
        Err(SetupError::NotReady("offline".into())),
        Err(SetupError::NotReady("still offline".into())),
    ]);
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::SetupRetry
    );
    tokio::time::sleep(SETUP_RETRY_BASE_DELAY - Duration::from_millis(1)).await;
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().reason.as_deref(),
        Some("still offline")
    );
    // The second wait is twice as long.
    tokio::time::sleep(SETUP_RETRY_BASE_DELAY * 2 + Duration::from_millis(1)).await;
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::Loaded
    );
}

#[tokio::test(start_paused = true)]
async fn unload_cancels_a_pending_retry() {
    let setup = scripted((1, 1));
    setup
        .setups
        .lock()
        .push(Err(SetupError::NotReady("offline".into())));
    let core = core_with(Arc::clone(&setup));
    let entry = add_quick(&core, json!({})).await;
    assert!(core.config_entries().unload(&entry.entry_id).await.unwrap());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        core.config_entries().entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::NotLoaded
    );
}

#[tokio::test]
async fn auth_failure_starts_a_reauth_flow() {
    let setup = scripted((1, 1));
    setup
        .setups
        .lock()
        .push(Err(SetupError::AuthFailed("token expired".into())));
    let core = core_with(setup);
    let entry = add_quick(&core, json!({})).await;
    assert_eq!(
        core.config_entries().entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::SetupError
    );
    let flows = core.config_entries().flow();
    let reauth = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(flow) = flows.progress_by_handler("quick").pop() {
                return flow;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a reauth flow starts");
    assert_eq!(reauth.context.source, SOURCE_REAUTH);
    assert_eq!(
        reauth.context.entry_id.as_deref(),
        Some(entry.entry_id.as_str())
    );
}

#[tokio::test]
async fn migration_runs_or_fails_into_migration_error() {
    let setup = scripted((2, 1));
    let core = core_with(setup);
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({"old": 1})).await;
    let entry = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert_eq!(
        (entry.version, entry.data["migrated"].clone()),
        (2, json!(true))
    );

    let failing = add_quick(&core, json!({"unmigratable": true})).await;
    let failing = entries.entry(&failing.entry_id).unwrap();
    assert_eq!(failing.state, ConfigEntryState::MigrationError);
    assert!(!failing.state.recoverable());

    let mut newer = ConfigEntry::new("quick", "Future", Map::new(), SOURCE_USER);
    newer.version = 3;
    let newer = entries.add(newer).await.unwrap();
    assert_eq!(newer.state, ConfigEntryState::MigrationError);
    // Removing a migration-error entry needs no restart.
    assert!(
        !entries
            .remove(&newer.entry_id)
            .await
            .unwrap()
            .require_restart
    );
}

#[tokio::test]
async fn disabled_and_ignored_entries_are_not_set_up() {
    let setup = scripted((1, 1));
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let mut ignored = ConfigEntry::new("quick", "Ignored", Map::new(), SOURCE_IGNORE);
    ignored.unique_id = Some("dev1".into());
    let ignored = entries.add(ignored).await.unwrap();
    assert_eq!(ignored.state, ConfigEntryState::NotLoaded);
    let entry = add_quick(&core, json!({})).await;
    assert!(
        entries
            .set_disabled_by(&entry.entry_id, Some(ConfigEntryDisabler::User))
            .await
            .unwrap()
    );
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::NotLoaded
    );
    assert!(!entries.reload(&entry.entry_id).await.unwrap());
    assert!(
        entries
            .set_disabled_by(&entry.entry_id, None)
            .await
            .unwrap()
    );
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::Loaded
    );

    // Configuring what was ignored replaces the ignore entry.
    let result = entries
        .flow()
        .init(
            "quick",
            FlowContext::new(SOURCE_USER),
            Some(obj(json!({"id": "dev1"}))),
        )
        .await;
    let result = result.unwrap();
    let FlowStep::CreateEntry { entry_id, .. } = result.step else {
        panic!("{result:?}")
    };
    assert!(entries.entry(&ignored.entry_id).is_none());
    assert_eq!(
        entries
            .entry_for_unique_id("quick", "dev1")
            .unwrap()
            .entry_id,
        entry_id.unwrap()
    );
}

#[tokio::test]
async fn remove_cleans_registries_and_calls_remove_entry() {
    let setup = scripted((1, 1));
    let core = core_with(Arc::clone(&setup));
    let entry = add_quick(&core, json!({})).await;
    core.device_registry()
        .get_or_create(DeviceInfo {
            config_entry_id: entry.entry_id.clone(),
            identifiers: vec![("quick".into(), "1".into())],
            ..DeviceInfo::default()
        })
        .unwrap();
    let result = core.config_entries().remove(&entry.entry_id).await.unwrap();
    assert!(!result.require_restart);
    assert!(core.device_registry().devices().is_empty());
    assert_eq!(setup.removed.load(Ordering::SeqCst), 1);
    assert!(core.config_entries().entries(None).is_empty());
}

#[tokio::test]
async fn options_flow_updates_options_and_calls_update_listeners() {
    let core = core_with(scripted((1, 1)));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    entries
        .add_update_listener(
            &entry.entry_id,
            Arc::new(move |_core, entry: ConfigEntry| {
                let tx = tx.clone();
                Box::pin(async move {
                    let _ = tx.send(entry.options.clone()).await;
                })
            }),
        )
        .unwrap();
    let result = entries
        .options()
        .init(&entry.entry_id, Some(obj(json!({"interval": 30}))))
        .await
        .unwrap();
    assert!(matches!(result.step, FlowStep::CreateEntry { .. }));
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().options,
        obj(json!({"interval": 30}))
    );
    assert_eq!(rx.recv().await.unwrap(), obj(json!({"interval": 30})));
    assert!(matches!(
        entries.options().init("missing", None).await,
        Err(FlowError::UnknownHandler(_))
    ));
}

#[tokio::test]
async fn reload_on_new_options_reloads_for_new_options_and_not_for_data_writes() {
    let setup = scripted((1, 1));
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    entries.reload_on_new_options(&entry).unwrap();
    let setups = || setup.setup_calls.load(Ordering::SeqCst);
    assert_eq!(setups(), 1);
    entries
        .update_entry(
            &entry.entry_id,
            ConfigEntryUpdate {
                data: Some(obj(json!({"written": "by the integration"}))),
                ..Default::default()
            },
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(setups(), 1, "a data write reloads nothing");
    entries
        .options()
        .init(&entry.entry_id, Some(obj(json!({"interval": 30}))))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while setups() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("new options reload the entry");
}

/// A router that takes everything of domain `remote` into group `g1` and records what it did.
#[derive(Default)]
struct RecordingRouter {
    /// What was routed, in order.
    log: PlMutex<Vec<String>>,
}

impl ConfigEntryRouter for RecordingRouter {
    fn create_flow<'a>(
        &'a self,
        domain: &'a str,
        _context: &'a FlowContext,
        _data: Option<&'a Map<String, Value>>,
    ) -> BoxFuture<'a, Result<Routed<RoutedFlow>, FlowError>> {
        Box::pin(async move {
            if domain != "remote" {
                return Ok(Routed::NotMine);
            }
            self.log.lock().push(format!("flow {domain}"));
            Ok(Routed::Taken(RoutedFlow {
                handler: Box::new(QuickFlow),
                sandbox: Some("g1".into()),
            }))
        })
    }

    fn setup_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), SetupError>>> {
        Box::pin(async move {
            if entry.sandbox.is_none() {
                return Routed::NotMine;
            }
            self.log.lock().push(format!("setup {}", entry.domain));
            Routed::Taken(Ok(()))
        })
    }

    fn unload_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), String>>> {
        Box::pin(async move {
            if entry.sandbox.is_none() {
                return Routed::NotMine;
            }
            self.log.lock().push(format!("unload {}", entry.domain));
            Routed::Taken(Err("group down".into()))
        })
    }
}

#[tokio::test]
async fn router_takes_flows_setup_and_unload_and_records_the_group() {
    let setup = scripted((1, 1));
    let core = core_with(Arc::clone(&setup));
    let entries = core.config_entries();
    let router = Arc::new(RecordingRouter::default());
    entries.set_router(Some(router.clone()));

    // "remote" has no local handler at all: only the router can run it.
    let result = entries
        .flow()
        .init("remote", FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let FlowStep::CreateEntry { entry_id, .. } = result.step else {
        panic!("{result:?}")
    };
    let entry = entries.entry(&entry_id.unwrap()).unwrap();
    assert_eq!(entry.sandbox.as_deref(), Some("g1"));
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert!(!entries.unload(&entry.entry_id).await.unwrap());
    assert_eq!(
        entries.entry(&entry.entry_id).unwrap().state,
        ConfigEntryState::FailedUnload
    );
    assert_eq!(
        *router.log.lock(),
        vec!["flow remote", "setup remote", "unload remote"]
    );

    // "Not mine" keeps the local path.
    let local = add_quick(&core, json!({})).await;
    assert_eq!(local.state, ConfigEntryState::Loaded);
    assert_eq!(local.sandbox, None);
    assert_eq!(setup.setup_calls.load(Ordering::SeqCst), 1);
    assert_eq!(router.log.lock().len(), 3);
    entries.set_router(None);
}

#[tokio::test]
async fn update_entry_reports_changes_only() {
    let core = core_with(scripted((1, 1)));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    assert!(
        !entries
            .update_entry(&entry.entry_id, ConfigEntryUpdate::default())
            .unwrap()
    );
    assert!(
        entries
            .update_entry(
                &entry.entry_id,
                ConfigEntryUpdate {
                    title: Some("New".into()),
                    sandbox: Some(Some("g2".into())),
                    ..Default::default()
                }
            )
            .unwrap()
    );
    let updated = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(
        (updated.title.as_str(), updated.sandbox.as_deref()),
        ("New", Some("g2"))
    );
    assert!(matches!(
        entries.update_entry("missing", ConfigEntryUpdate::default()),
        Err(ConfigEntryError::UnknownEntry(_))
    ));
}

#[tokio::test]
async fn update_observers_see_every_change_of_every_entry_until_removed() {
    let core = core_with(scripted((1, 1)));
    let entries = core.config_entries();
    let entry = add_quick(&core, json!({})).await;
    let seen: Arc<PlMutex<Vec<Map<String, Value>>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let id = entries.add_update_observer(Arc::new(move |entry: &ConfigEntry| {
        recorder.lock().push(entry.data.clone());
    }));
    entries
        .update_entry(&entry.entry_id, ConfigEntryUpdate::default())
        .unwrap();
    assert!(seen.lock().is_empty(), "no change, no call");
    let token = obj(json!({"token": "fresh"}));
    entries
        .update_entry(
            &entry.entry_id,
            ConfigEntryUpdate {
                data: Some(token.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(*seen.lock(), vec![token]);
    entries.remove_update_observer(id);
    entries
        .update_entry(
            &entry.entry_id,
            ConfigEntryUpdate {
                data: Some(Map::new()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(seen.lock().len(), 1, "removed observers are not called");
}

#[test]
fn sandbox_is_omitted_when_none_and_older_entries_read_without_it() {
    let entry = ConfigEntry::new("quick", "Quick", Map::new(), SOURCE_USER);
    let json = serde_json::to_value(&entry).unwrap();
    assert!(json.get("sandbox").is_none());
    assert!(json.get("state").is_none(), "state is runtime only");
    let mut routed = entry.clone();
    routed.sandbox = Some("built-in".into());
    assert_eq!(
        serde_json::to_value(&routed).unwrap()["sandbox"],
        "built-in"
    );
    let old = json!({
        "entry_id": "01ABC", "domain": "quick", "title": "Old", "data": {"n": 1}, "options": {},
        "source": "user", "unique_id": null, "version": 1,
        "created_at": "2024-01-01T00:00:00Z", "modified_at": "2024-01-01T00:00:00Z"
    });
    let read: ConfigEntry = serde_json::from_value(old).unwrap();
    assert_eq!(read.sandbox, None);
    assert_eq!(read.minor_version, 1);
    assert_eq!(read.state, ConfigEntryState::NotLoaded);
    assert!(read.data["n"].is_i64());
}

#[test]
fn all_eight_states_have_their_home_assistant_names() {
    let names: Vec<String> = [
        ConfigEntryState::NotLoaded,
        ConfigEntryState::SetupInProgress,
        ConfigEntryState::Loaded,
        ConfigEntryState::SetupError,
        ConfigEntryState::SetupRetry,
        ConfigEntryState::MigrationError,
        ConfigEntryState::UnloadInProgress,
        ConfigEntryState::FailedUnload,
    ]
    .iter()
    .map(|state| {
        let json = serde_json::to_value(state).unwrap();
        assert_eq!(json, state.as_str());
        state.as_str().to_owned()
    })
    .collect();
    assert_eq!(
        names,
        vec![
            "not_loaded",
            "setup_in_progress",
            "loaded",
            "setup_error",
            "setup_retry",
            "migration_error",
            "unload_in_progress",
            "failed_unload"
        ]
    );
}

/// Setup code that panics in the operations named in `panics` (`setup`, `unload`, `migrate`,
/// `remove`): setup and migration once their future runs, unload and removal before their
/// future exists.
#[derive(Default)]
struct PanickySetup {
    /// The operations that panic.
    panics: PlMutex<Vec<&'static str>>,
    /// The version this code expects.
    version: (u32, u32),
}

impl PanickySetup {
    fn panics_in(&self, operation: &str) -> bool {
        self.panics.lock().contains(&operation)
    }
}

impl EntrySetupHandler for PanickySetup {
    fn version(&self) -> (u32, u32) {
        self.version
    }

    fn setup_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        let panics = self.panics_in("setup");
        Box::pin(async move {
            tokio::task::yield_now().await;
            if panics {
                panic!("setup panics on purpose");
            }
            Ok(())
        })
    }

    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        if self.panics_in("unload") {
            panic!("unload panics on purpose");
        }
        Box::pin(async { Ok(()) })
    }

    fn migrate_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        let panics = self.panics_in("migrate");
        Box::pin(async move {
            if panics {
                panic!("migration panics on purpose");
            }
            Err("no migration".into())
        })
    }

    fn remove_entry<'a>(&'a self, _core: &'a Core, _entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        if self.panics_in("remove") {
            panic!("removal panics on purpose");
        }
        Box::pin(async {})
    }
}

#[tokio::test]
async fn panics_in_entry_code_and_flow_factories_fail_only_that_operation() {
    let panicky = Arc::new(PanickySetup {
        panics: PlMutex::new(vec!["setup"]),
        version: (1, 1),
    });
    let ancient = Arc::new(PanickySetup {
        panics: PlMutex::new(vec!["migrate"]),
        version: (2, 1),
    });
    let table = HandlerTable::new();
    table.register_config_flow("quick", || Box::new(QuickFlow));
    table.register_entry_setup("quick", scripted((1, 1)));
    table.register_entry_setup(
        "panicky",
        Arc::clone(&panicky) as Arc<dyn EntrySetupHandler>,
    );
    table.register_entry_setup("ancient", ancient);
    table.register_config_flow("panicky", || -> Box<dyn FlowHandler> {
        panic!("the config flow factory panics on purpose")
    });
    table.register_options_flow("panicky", |_entry| -> Box<dyn FlowHandler> {
        panic!("the options flow factory panics on purpose")
    });
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.config_entries().set_handlers(Arc::new(table));
    let entries = core.config_entries();

    // Setup: the entry ends in setup_error, saying it panicked, and is not stuck in progress.
    let entry = entries
        .add(ConfigEntry::new("panicky", "P", Map::new(), SOURCE_USER))
        .await
        .unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupError);
    assert_eq!(
        entry.reason.as_deref(),
        Some("entry setup of panicky panicked: setup panics on purpose")
    );
    panicky.panics.lock().clear();
    assert!(entries.reload(&entry.entry_id).await.unwrap());

    // Flow factories: the flow is refused with a handler error; nothing is left in progress.
    let error = entries
        .flow()
        .init("panicky", FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        FlowError::Handler(
            "config flow creation of panicky panicked: the config flow factory panics on purpose"
                .into()
        )
    );
    let error = entries
        .options()
        .init(&entry.entry_id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FlowError::Handler(reason) if reason.contains("options flow creation of panicky panicked")),
        "{error}"
    );
    assert!(entries.flow().progress().is_empty());
    assert!(entries.options().progress().is_empty());

    // Unload: a panic is a failed unload.
    panicky.panics.lock().push("unload");
    assert!(!entries.unload(&entry.entry_id).await.unwrap());
    let failed = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(failed.state, ConfigEntryState::FailedUnload);
    assert_eq!(
        failed.reason.as_deref(),
        Some("entry unload of panicky panicked: unload panics on purpose")
    );

    // Removal: the entry goes all the same.
    panicky.panics.lock().push("remove");
    assert!(
        entries
            .remove(&entry.entry_id)
            .await
            .unwrap()
            .require_restart
    );
    assert!(entries.entry(&entry.entry_id).is_none());

    // Migration: a panic is a failed migration.
    let old = entries
        .add(ConfigEntry::new("ancient", "A", Map::new(), SOURCE_USER))
        .await
        .unwrap();
    assert_eq!(old.state, ConfigEntryState::MigrationError);
    assert_eq!(
        old.reason.as_deref(),
        Some("migration of ancient panicked: migration panics on purpose")
    );

    // The core goes on: other entries set up and other flows run.
    assert_eq!(
        add_quick(&core, json!({})).await.state,
        ConfigEntryState::Loaded
    );
    let created = entries
        .flow()
        .init("quick", FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    assert!(
        matches!(created.step, FlowStep::CreateEntry { .. }),
        "{created:?}"
    );
}
