//! Tests for the integration loader: manifests, dependencies, catalog providers.

use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Map;

use super::*;
use crate::config_entries::{ConfigEntryState, SOURCE_USER};
use crate::core::CoreConfig;
use crate::store::MemoryStoreBackend;

/// An integration recording the order of one-time setups.
struct Recording {
    /// Its manifest.
    manifest: Manifest,
    /// Where setups are recorded.
    log: Arc<Mutex<Vec<String>>>,
}

fn manifest(domain: &str, dependencies: &[&str]) -> Manifest {
    Manifest {
        domain: domain.to_owned(),
        name: domain.to_uppercase(),
        version: semver::Version::new(1, 0, 0),
        integration_type: IntegrationType::Hub,
        config_flow: false,
        platforms: vec!["switch".into()],
        dependencies: dependencies.iter().map(|d| (*d).to_owned()).collect(),
        iot_class: None,
        single_config_entry: false,
    }
}

impl Integration for Recording {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn setup<'a>(&'a self, _core: &'a Core) -> BoxFuture<'a, Result<(), SetupError>> {
        self.log.lock().push(self.manifest.domain.clone());
        Box::pin(async { Ok(()) })
    }
    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            core.entities()
                .forward_entry_setup(entry, "switch")
                .map_err(|err| SetupError::Failed(err.to_string()))?;
            Err(SetupError::NotReady("device offline".into()))
        })
    }
    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

fn recording(
    domain: &str,
    dependencies: &[&str],
    log: &Arc<Mutex<Vec<String>>>,
) -> Arc<dyn Integration> {
    Arc::new(Recording {
        manifest: manifest(domain, dependencies),
        log: Arc::clone(log),
    })
}

#[tokio::test]
async fn dependencies_set_up_first_once_and_a_failed_setup_frees_its_platforms() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations([
            recording("base", &[], &log),
            recording("top", &["base"], &log),
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    let entry = ConfigEntry::new("top", "Top", Map::new(), SOURCE_USER);
    let entry = core.config_entries().add(entry).await.unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupRetry);
    assert_eq!(*log.lock(), ["base", "top"]);
    assert!(
        core.entities().platforms().is_empty(),
        "the failed setup released its slot"
    );
    let loaded: Vec<String> = core
        .integrations()
        .loaded()
        .into_iter()
        .map(|m| m.domain)
        .collect();
    assert_eq!(loaded, ["base", "top"]);
    core.integrations()
        .ensure_setup(&core, "top")
        .await
        .unwrap();
    assert_eq!(log.lock().len(), 2, "setup runs once");
}

#[tokio::test]
async fn cycles_missing_dependencies_and_bad_manifests_are_refused() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let loader = IntegrationLoader::new();
    loader.add(recording("a", &["b"], &log)).unwrap();
    loader.add(recording("b", &["a"], &log)).unwrap();
    loader.add(recording("c", &["missing"], &log)).unwrap();
    assert_eq!(
        loader.add(recording("a", &[], &log)),
        Err(IntegrationError::Duplicate("a".into()))
    );
    let mut bad = manifest("d", &[]);
    bad.platforms = vec!["teleporter".into()];
    assert!(bad.validate().is_err());
    let mut selfish = manifest("e", &["e"]);
    assert!(selfish.validate().is_err());
    selfish.dependencies.clear();
    selfish.platforms = vec!["camera".into(), "light".into()];
    assert_eq!(selfish.unproxyable_platforms(), ["camera"]);
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    let cycle = loader.ensure_setup(&core, "a").await.unwrap_err();
    assert!(cycle.to_string().contains("cycle"), "{cycle}");
    let missing = loader.ensure_setup(&core, "c").await.unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
    assert!(log.lock().is_empty());
}

struct Provider;

impl IntegrationCatalogProvider for Provider {
    fn descriptors(&self) -> Vec<IntegrationDescriptor> {
        vec![
            IntegrationDescriptor {
                domain: "custom_thing".into(),
                name: "Custom thing".into(),
                integration_type: IntegrationType::Device,
                config_flow: true,
                title_translations: [("nl".to_owned(), "Eigen ding".to_owned())].into(),
            },
            IntegrationDescriptor {
                domain: "base".into(),
                name: "Impostor".into(),
                integration_type: IntegrationType::Hub,
                config_flow: true,
                title_translations: Default::default(),
            },
        ]
    }
}

#[test]
fn catalog_providers_list_non_local_integrations_and_local_ones_win() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let loader = IntegrationLoader::new();
    loader.add(recording("base", &[], &log)).unwrap();
    let handle = loader.add_catalog_provider(Arc::new(Provider));
    let names: Vec<(String, String)> = loader
        .descriptors()
        .into_iter()
        .map(|d| (d.domain, d.name))
        .collect();
    assert_eq!(
        names,
        [
            ("base".to_owned(), "BASE".to_owned()),
            ("custom_thing".to_owned(), "Custom thing".to_owned())
        ]
    );
    handle.remove();
    assert_eq!(loader.descriptors().len(), 1);
}

/// An integration that panics in the operations named in `panics` (`setup`, `setup_entry`,
/// `unload_entry`, `config_flow`); its entry setup first takes a `switch` platform slot.
struct Panicky {
    /// Its manifest.
    manifest: Manifest,
    /// The operations that panic.
    panics: Mutex<Vec<&'static str>>,
}

impl Panicky {
    fn panics_in(&self, operation: &str) -> bool {
        self.panics.lock().contains(&operation)
    }
}

impl Integration for Panicky {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn setup<'a>(&'a self, _core: &'a Core) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            if self.panics_in("setup") {
                panic!("one-time setup panics on purpose");
            }
            Ok(())
        })
    }
    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        if self.panics_in("config_flow") {
            panic!("the config flow panics on purpose");
        }
        None
    }
    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            core.entities()
                .forward_entry_setup(entry, "switch")
                .map_err(|err| SetupError::Failed(err.to_string()))?;
            tokio::task::yield_now().await;
            if self.panics_in("setup_entry") {
                panic!("entry setup panics on purpose");
            }
            Ok(())
        })
    }
    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.panics_in("unload_entry") {
                panic!("unload panics on purpose");
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn panics_in_integration_code_fail_only_that_operation_and_free_its_platforms() {
    let boom = Arc::new(Panicky {
        manifest: manifest("boom", &[]),
        panics: Mutex::new(vec!["setup"]),
    });
    let calm = Arc::new(Panicky {
        manifest: manifest("calm", &[]),
        panics: Mutex::new(Vec::new()),
    });
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations([
            Arc::clone(&boom) as Arc<dyn Integration>,
            calm as Arc<dyn Integration>,
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    let entries = core.config_entries();

    // One-time setup: the entry fails to set up and the integration is not marked loaded.
    let entry = ConfigEntry::new("boom", "Boom", Map::new(), SOURCE_USER);
    let entry = entries.add(entry).await.unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupError);
    assert_eq!(
        entry.reason.as_deref(),
        Some("setup of integration boom panicked: one-time setup panics on purpose")
    );
    assert!(!core.integrations().is_loaded("boom"));

    // Entry setup: setup_error, and the platform slot it took is free again.
    *boom.panics.lock() = vec!["setup_entry"];
    assert!(!entries.reload(&entry.entry_id).await.unwrap());
    let failed = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(failed.state, ConfigEntryState::SetupError);
    assert_eq!(
        failed.reason.as_deref(),
        Some("entry setup of boom panicked: entry setup panics on purpose")
    );
    assert!(core.integrations().is_loaded("boom"));
    assert!(core.entities().platforms().is_empty());
    boom.panics.lock().clear();
    assert!(entries.reload(&entry.entry_id).await.unwrap());
    assert_eq!(core.entities().platforms().len(), 1);

    // Config flow creation: refused with a handler error.
    *boom.panics.lock() = vec!["config_flow"];
    let error = entries
        .flow()
        .init(
            "boom",
            crate::data_entry_flow::FlowContext::new(SOURCE_USER),
            None,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("panicked"), "{error}");

    // Entry unload: failed_unload, saying it panicked.
    *boom.panics.lock() = vec!["unload_entry"];
    assert!(!entries.unload(&entry.entry_id).await.unwrap());
    let stuck = entries.entry(&entry.entry_id).unwrap();
    assert_eq!(stuck.state, ConfigEntryState::FailedUnload);
    assert_eq!(
        stuck.reason.as_deref(),
        Some("entry unload of boom panicked: unload panics on purpose")
    );

    // The core goes on: another integration's entry loads.
    let other = ConfigEntry::new("calm", "Calm", Map::new(), SOURCE_USER);
    assert_eq!(
        entries.add(other).await.unwrap().state,
        ConfigEntryState::Loaded
    );
    assert!(core.integrations().is_loaded("calm"));
}
