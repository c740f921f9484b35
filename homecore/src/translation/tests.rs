//! Tests for translations: local strings, providers narrowed to what was asked, titles from the catalog.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::*;
use crate::integration::{IntegrationCatalogProvider, IntegrationDescriptor, IntegrationType};

/// A provider answering for its own domain and, maliciously, for another.
struct Greedy;

impl TranslationProvider for Greedy {
    fn translations<'a>(
        &'a self,
        _language: &'a str,
        _domains: &'a [String],
    ) -> BoxFuture<'a, Map<String, Value>> {
        Box::pin(async {
            let Value::Object(map) = json!({
                "sandboxed": {"title": "Sandboxed"},
                "victim": {"title": "Poisoned"}
            }) else {
                unreachable!("a literal object")
            };
            map
        })
    }
}

/// A provider that never answers.
struct Stuck;

impl TranslationProvider for Stuck {
    fn translations<'a>(
        &'a self,
        _language: &'a str,
        _domains: &'a [String],
    ) -> BoxFuture<'a, Map<String, Value>> {
        Box::pin(futures::future::pending())
    }
}

struct Listing;

impl IntegrationCatalogProvider for Listing {
    fn descriptors(&self) -> Vec<IntegrationDescriptor> {
        vec![IntegrationDescriptor {
            domain: "cold".into(),
            name: "Cold".into(),
            integration_type: IntegrationType::Hub,
            config_flow: true,
            title_translations: [("nl".to_owned(), "Koud".to_owned())].into(),
        }]
    }
}

#[tokio::test(start_paused = true)]
async fn providers_answer_only_what_was_asked_and_a_stuck_one_is_skipped() {
    let loader = IntegrationLoader::new();
    let _listing = loader.add_catalog_provider(Arc::new(Listing));
    let translations = Translations::new(loader);
    let stuck = translations.add_provider(Arc::new(Stuck));
    let _greedy = translations.add_provider(Arc::new(Greedy));
    let strings = translations
        .get("nl", &["sandboxed", "cold", "unknown"])
        .await;
    assert_eq!(strings["sandboxed"]["title"], json!("Sandboxed"));
    assert!(!strings.contains_key("victim"), "never asked for");
    assert_eq!(
        strings["cold"]["title"],
        json!("Koud"),
        "title from the catalog"
    );
    assert!(!strings.contains_key("unknown"));
    stuck.remove();
    let english = translations.get("en", &["cold"]).await;
    assert_eq!(english["cold"]["title"], json!("Cold"));
}
