//! The plugin: installs the sandbox host into a core — the router seam, the translation and
//! catalog providers — and stops every group with the core (each sandbox saving its restore state).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use homecore::integration::{
    CatalogProviderHandle, IntegrationCatalogProvider, IntegrationDescriptor,
};
use homecore::translation::{TranslationProvider, TranslationProviderHandle};
use homecore::{ConfigEntryState, Core, ListenerHandle};
use parking_lot::Mutex;
use sandbox_proto::{Channel, wire};
use serde_json::{Map, Value};

use crate::classifier::Placement;
use crate::groups::{Groups, GroupsConfig};
use crate::manager::{GroupState, StopReport};
use crate::router::{CustomIntegration, SandboxRouter};

/// How the plugin runs.
#[derive(Clone)]
pub struct PluginConfig {
    /// How groups are run.
    pub groups: GroupsConfig,
    /// Custom integrations, each run in its own group from its pinned artifact.
    pub custom: Vec<CustomIntegration>,
}

/// How long main waits for one group's channel to take the core configuration push. Groups
/// are pushed to at once, so a group whose write queue stays full delays no other; past this
/// its push is given up (logged), and the group gets the configuration with its next
/// `entry_setup` or `flow_init`.
pub const CORE_CONFIG_PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Pushes main's core configuration to every running group that acknowledged `core_config`
/// (a group started later gets it with its first `entry_setup` or `flow_init`).
async fn push_core_config(groups: &Groups) {
    let update = wire::CoreConfigUpdated {
        core_config: Some(sandbox_wire::core_config_to_wire(&groups.core().config())),
    };
    let targets = groups
        .names()
        .into_iter()
        .filter_map(|name| {
            let bridge = groups.bridge(&name)?;
            (bridge.is_live() && bridge.has_feature("core_config"))
                .then(|| (name, bridge.channel().clone()))
        })
        .collect();
    push_to_each(targets, &update).await;
}

/// Pushes `update` on every channel of `targets` (group, channel) at once, each waiting at
/// most [`CORE_CONFIG_PUSH_TIMEOUT`].
async fn push_to_each(targets: Vec<(String, Channel)>, update: &wire::CoreConfigUpdated) {
    let pushes = targets.iter().map(|(group, channel)| async move {
        match tokio::time::timeout(CORE_CONFIG_PUSH_TIMEOUT, channel.push(update)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%group, %error, "the core configuration was not pushed");
            }
            Err(_) => {
                tracing::debug!(%group, after = ?CORE_CONFIG_PUSH_TIMEOUT, "the group's channel did not take the core configuration in time");
            }
        }
    });
    futures::future::join_all(pushes).await;
}

/// The sandbox host, installed into one core.
pub struct SandboxPlugin {
    core: Core,
    groups: Groups,
    router: Arc<SandboxRouter>,
    handles: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    stop_listener: Mutex<Option<ListenerHandle>>,
}

impl SandboxPlugin {
    /// Installs the plugin: from now on, flows and entries of sandboxed integrations go to
    /// their groups. Must be called inside the runtime, before the core starts.
    pub fn install(core: &Core, config: PluginConfig) -> Arc<Self> {
        let groups = Groups::new(core.clone(), config.groups);

        let router = Arc::new(SandboxRouter::new(
            groups.clone(),
            core.integrations().available(),
            config.custom,
        ));
        core.config_entries().set_router(Some(router.clone()));
        let translations: TranslationProviderHandle =
            core.translations()
                .add_provider(Arc::new(SandboxTranslations {
                    groups: groups.clone(),
                    router: Arc::clone(&router),
                }));
        let catalog: CatalogProviderHandle =
            core.integrations()
                .add_catalog_provider(Arc::new(CustomCatalog {
                    // Refused customs never reach the picker.
                    custom: router.accepted_custom(),
                }));
        let plugin = Arc::new(Self {
            core: core.clone(),
            groups,
            router,
            handles: Mutex::new(vec![
                Box::new(move || translations.remove()),
                Box::new(move || catalog.remove()),
            ]),
            stop_listener: Mutex::new(None),
        });
        let weak = Arc::downgrade(&plugin);
        let listener = core
            .bus()
            .listen(homecore::event::EVENT_HOMEASSISTANT_STOP, move |_| {
                let plugin = weak.upgrade();
                async move {
                    if let Some(plugin) = plugin {
                        plugin.stop().await;
                    }
                }
            });
        match listener {
            Ok(listener) => *plugin.stop_listener.lock() = Some(listener),
            Err(error) => tracing::error!(%error, "cannot stop the sandboxes with the core"),
        }
        let groups = plugin.groups.clone();
        let config_listener =
            core.bus()
                .listen(homecore::event::EVENT_CORE_CONFIG_UPDATED, move |_| {
                    let groups = groups.clone();
                    async move { push_core_config(&groups).await }
                });
        match config_listener {
            Ok(listener) => plugin
                .handles
                .lock()
                .push(Box::new(move || listener.remove())),
            Err(error) => {
                tracing::error!(%error, "cannot tell the sandboxes of core configuration changes")
            }
        }
        plugin
    }

    /// The groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Where `domain` runs.
    pub fn placement(&self, domain: &str) -> Option<Placement> {
        self.router.placement(domain)
    }

    /// Starts the group `name` again by hand: a stopped or failed group is started with a
    /// fresh restart budget (as `systemctl reset-failed` + start; a running one is left alone),
    /// and its entries that a failure or a stop left unloaded (`setup_error`, `setup_retry`,
    /// `not_loaded`) are set up again, each in the background. Returns whether the group
    /// exists.
    pub async fn start_group(&self, name: &str) -> bool {
        let Some(handle) = self.groups.get(name) else {
            return false;
        };
        if matches!(
            handle.manager.status().state,
            GroupState::Stopped | GroupState::Failed
        ) {
            handle.manager.restart().await;
        }
        let entries = self.core.config_entries();
        for entry in entries.entries(None) {
            let idle = matches!(
                entry.state,
                ConfigEntryState::SetupError
                    | ConfigEntryState::SetupRetry
                    | ConfigEntryState::NotLoaded
            );
            if entry.sandbox.as_deref() == Some(name) && idle && entry.disabled_by.is_none() {
                let entries = entries.clone();
                tokio::spawn(async move {
                    if let Err(error) = entries.reload(&entry.entry_id).await {
                        tracing::warn!(entry_id = %entry.entry_id, %error, "entry not set up again");
                    }
                });
            }
        }
        true
    }

    /// Stops every group in parallel. Each sandbox's restore state is its core's own final
    /// save (`core.restore_state` in the group's store folder, written through main during the
    /// `shutdown` it answers), which is what its next start loads; the copy a report carries
    /// is not stored again.
    pub async fn stop(&self) -> Vec<(String, StopReport)> {
        self.groups.stop_all().await
    }

    /// Removes the plugin's seams from the core (after [`SandboxPlugin::stop`]).
    pub fn uninstall(&self) {
        self.core.config_entries().set_router(None);
        for remove in self.handles.lock().drain(..) {
            remove();
        }
        if let Some(listener) = self.stop_listener.lock().take() {
            listener.remove();
        }
    }
}

/// Translations of integrations whose code lives only in a sandbox, pulled from their group
/// and narrowed to the domains requested and returned.
struct SandboxTranslations {
    groups: Groups,
    router: Arc<SandboxRouter>,
}

impl TranslationProvider for SandboxTranslations {
    fn translations<'a>(
        &'a self,
        language: &'a str,
        domains: &'a [String],
    ) -> BoxFuture<'a, Map<String, Value>> {
        Box::pin(async move {
            let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for domain in domains {
                if let Some(Placement::Group(group)) = self.router.placement(domain) {
                    by_group.entry(group).or_default().push(domain.clone());
                }
            }
            let mut strings = Map::new();
            for (group, wanted) in by_group {
                // Only running groups are asked: translations never start a sandbox.
                let Some(channel) = self
                    .groups
                    .get(&group)
                    .and_then(|handle| handle.manager.channel())
                else {
                    continue;
                };
                let request = wire::GetTranslations {
                    language: language.to_owned(),
                    domains: wanted.clone(),
                };
                let Ok(result) = channel
                    .call_timeout(
                        &request,
                        homecore::translation::TRANSLATION_PROVIDER_TIMEOUT,
                    )
                    .await
                else {
                    continue;
                };
                let returned = match crate::limits::bounded_object(
                    "strings_json",
                    &result.strings_json,
                    crate::limits::MAX_TRANSLATIONS_BYTES,
                ) {
                    Ok(returned) => returned,
                    Err(error) => {
                        if let Some(handle) = self.groups.get(&group) {
                            let _ = handle.refused.over_bound(error);
                        }
                        continue;
                    }
                };
                let wanted: BTreeSet<String> = wanted.into_iter().collect();
                strings.extend(
                    returned
                        .into_iter()
                        .filter(|(domain, _)| wanted.contains(domain)),
                );
            }
            strings
        })
    }
}

/// Lists custom integrations in the add-integration picker without starting their sandbox.
struct CustomCatalog {
    custom: Vec<CustomIntegration>,
}

impl IntegrationCatalogProvider for CustomCatalog {
    fn descriptors(&self) -> Vec<IntegrationDescriptor> {
        self.custom
            .iter()
            .map(|custom| IntegrationDescriptor {
                domain: custom.manifest.domain.clone(),
                name: custom.manifest.name.clone(),
                integration_type: custom.manifest.integration_type,
                config_flow: custom.manifest.config_flow,
                title_translations: Default::default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
