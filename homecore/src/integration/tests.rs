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
