//! Translations: integrations' strings by language, from local code and from registered providers.
//!
//! Local integrations supply their strings themselves ([`crate::Integration::translations`]).
//! A [`TranslationProvider`] (a host pulling strings from the sandboxes whose integrations
//! are not local) is consulted for the requested domains without local code; what it returns
//! is narrowed to what was requested, so a provider cannot replace another domain's strings.
//! A domain nobody has strings for gets its title from the integration catalog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::integration::IntegrationLoader;

#[cfg(test)]
mod tests;

/// Language whose strings fill keys missing from the requested language (Home Assistant's fallback).
pub const FALLBACK_LANGUAGE: &str = "en";

/// How long one provider may take; a slower one contributes nothing (strings are cosmetic,
/// and a front end must never wait on a stuck sandbox).
pub const TRANSLATION_PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Supplies strings for domains whose code is not local. Must not fail: on trouble it
/// returns fewer domains.
pub trait TranslationProvider: Send + Sync + 'static {
    /// Raw strings (the shape of `strings.json`) by domain, for those of `domains` it owns.
    fn translations<'a>(
        &'a self,
        language: &'a str,
        domains: &'a [String],
    ) -> BoxFuture<'a, Map<String, Value>>;
}

/// Removes a translation provider when asked.
#[derive(Debug)]
pub struct TranslationProviderHandle {
    /// The provider's id.
    id: u64,
    /// The translations it is registered with.
    translations: std::sync::Weak<TranslationsInner>,
}

impl TranslationProviderHandle {
    /// Unregisters the provider.
    pub fn remove(self) {
        if let Some(translations) = self.translations.upgrade() {
            translations
                .providers
                .write()
                .retain(|(id, _)| *id != self.id);
        }
    }
}

/// Shared part of [`Translations`].
pub(crate) struct TranslationsInner {
    /// Local integrations.
    loader: IntegrationLoader,
    /// Providers, in registration order.
    providers: RwLock<Vec<(u64, Arc<dyn TranslationProvider>)>>,
    /// Source of provider ids.
    next_id: AtomicU64,
}

/// The translations of one core: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Translations {
    /// Shared state.
    inner: Arc<TranslationsInner>,
}

impl std::fmt::Debug for Translations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translations")
            .field("providers", &self.inner.providers.read().len())
            .finish()
    }
}

impl Translations {
    pub(crate) fn new(loader: IntegrationLoader) -> Self {
        Self {
            inner: Arc::new(TranslationsInner {
                loader,
                providers: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Consults `provider` for domains without local code from now on.
    pub fn add_provider(
        &self,
        provider: Arc<dyn TranslationProvider>,
    ) -> TranslationProviderHandle {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.providers.write().push((id, provider));
        TranslationProviderHandle {
            id,
            translations: Arc::downgrade(&self.inner),
        }
    }

    /// Raw strings of `domains` in `language`, by domain. Local strings fill from
    /// [`FALLBACK_LANGUAGE`] and carry the integration's name as `title` when they lack one;
    /// providers answer for the rest (first answer wins); the integration catalog gives a title
    /// to anything still missing. Unknown domains are left out.
    pub async fn get(&self, language: &str, domains: &[&str]) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for domain in domains {
            match self.inner.loader.get(domain) {
                Some(integration) => {
                    let mut strings = integration
                        .translations(FALLBACK_LANGUAGE)
                        .unwrap_or_default();
                    if language != FALLBACK_LANGUAGE
                        && let Some(own) = integration.translations(language)
                    {
                        merge(&mut strings, own);
                    }
                    strings
                        .entry("title")
                        .or_insert_with(|| Value::String(integration.manifest().name.clone()));
                    out.insert((*domain).to_owned(), Value::Object(strings));
                }
                None => missing.push((*domain).to_owned()),
            }
        }
        let providers: Vec<Arc<dyn TranslationProvider>> = self
            .inner
            .providers
            .read()
            .iter()
            .map(|(_, provider)| Arc::clone(provider))
            .collect();
        for provider in providers {
            if missing.is_empty() {
                break;
            }
            let answer = tokio::time::timeout(
                TRANSLATION_PROVIDER_TIMEOUT,
                provider.translations(language, &missing),
            )
            .await;
            let Ok(strings) = answer else {
                tracing::warn!(
                    language,
                    "a translation provider timed out; its strings are skipped"
                );
                continue;
            };
            // Only what was asked for and is still missing: never another domain's strings.
            for (domain, value) in strings {
                if let Some(position) = missing.iter().position(|wanted| *wanted == domain)
                    && value.is_object()
                {
                    missing.remove(position);
                    out.insert(domain, value);
                }
            }
        }
        for domain in missing {
            if let Some(descriptor) = self.inner.loader.descriptor(&domain) {
                let title = descriptor
                    .title_translations
                    .get(language)
                    .cloned()
                    .unwrap_or(descriptor.name);
                let mut strings = Map::new();
                strings.insert("title".into(), Value::String(title));
                out.insert(domain, Value::Object(strings));
            }
        }
        out
    }
}

/// Deep-merges `overlay` into `base` (objects merge key by key; anything else replaces).
fn merge(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(more)) => merge(existing, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
