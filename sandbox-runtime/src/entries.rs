//! The entry runner: sets config entries up in the private core when main asks, and unloads
//! them. A failed setup leaves nothing running (a pending local retry is cancelled: main is the
//! only retry driver), so main's next `entry_setup` of the same entry starts clean. A loaded
//! entry holds an approval of its integration's domain until it is unloaded.

use std::collections::HashSet;
use std::sync::Arc;

use homecore::{ConfigEntry, ConfigEntryState, ConfigEntryUpdate, Core, IntegrationHandlers};
use parking_lot::Mutex;
use sandbox_proto::{RemoteError, wire};

use crate::approvals::Approvals;
use crate::entry_updates::EntryUpdates;
use sandbox_wire::{core_config_from_wire, entry_from_wire, entry_to_wire};

/// Takes main's core configuration, when main sent one, as the private core's (an older main
/// sends none: the core keeps what it has). Integrations read it through `core.config()` and
/// hear of a change through `core_config_updated`.
pub fn adopt_core_config(
    core: &Core,
    config: Option<&wire::CoreConfig>,
) -> Result<(), RemoteError> {
    let Some(config) = config else {
        return Ok(());
    };
    let config = core_config_from_wire(config, core.config().config_dir)
        .map_err(|error| RemoteError::bad_request(format!("field `core_config`: {error}")))?;
    core.adopt_config(config)
        .map_err(|error| RemoteError::bad_request(format!("field `core_config`: {error}")))?;
    Ok(())
}

/// Sets entries up and unloads them for main.
#[derive(Clone)]
pub struct EntryRunner {
    core: Core,
    handlers: Arc<dyn IntegrationHandlers>,
    approvals: Arc<Approvals>,
    group: String,
    /// Tells main of the changes integrations make to their entries.
    updates: Arc<EntryUpdates>,
    /// Entries loaded here that hold an approval of their domain.
    loaded: Arc<Mutex<HashSet<String>>>,
}

impl EntryRunner {
    /// A runner for `core`, whose integrations are found through `handlers`.
    pub fn new(
        core: Core,
        handlers: Arc<dyn IntegrationHandlers>,
        approvals: Arc<Approvals>,
        updates: Arc<EntryUpdates>,
        group: &str,
    ) -> Self {
        Self {
            core,
            handlers,
            approvals,
            updates,
            group: group.to_owned(),
            loaded: Arc::default(),
        }
    }

    /// Entry ids currently loaded here.
    pub fn loaded(&self) -> Vec<String> {
        self.loaded.lock().iter().cloned().collect()
    }

    /// `entry_setup`.
    pub async fn setup(
        &self,
        request: wire::EntrySetup,
    ) -> Result<wire::EntrySetupResult, RemoteError> {
        let sent = request
            .entry
            .ok_or_else(|| RemoteError::bad_request("entry_setup needs an entry"))?;
        let entry = entry_from_wire(&sent, &self.group)?;
        adopt_core_config(&self.core, request.core_config.as_ref())?;
        if let Some(wire::IntegrationSource {
            kind: Some(wire::integration_source::Kind::Artifact(artifact)),
        }) = &request.source
        {
            tracing::info!(domain = %entry.domain, version = %artifact.version, "setting up a pinned custom integration");
        }
        if self.handlers.entry_setup(&entry.domain).await.is_none() {
            return Ok(outcome(
                wire::SetupOutcome::SetupError,
                format!(
                    "integration `{}` is not available in sandbox group `{}`",
                    entry.domain, self.group
                ),
            ));
        }
        let entries = self.core.config_entries();
        let entry_id = entry.entry_id.clone();
        // Main's copy, before main's data lands in the private core: that is no change to tell.
        self.updates.main_has(&entry);
        let setup = match entries.entry(&entry_id) {
            None => entries.add(entry.clone()).await.map(|_| ()),
            Some(existing)
                if existing.state == ConfigEntryState::Loaded
                    && self.loaded.lock().contains(&entry_id) =>
            {
                return Ok(loaded_outcome(None));
            }
            Some(_) => self.setup_existing(&entry).await,
        };
        let state = entries
            .entry(&entry_id)
            .map(|current| (current.state, current.reason.clone()));
        match (setup, state) {
            (Ok(()), Some((ConfigEntryState::Loaded, _))) => {
                if self.loaded.lock().insert(entry_id.clone()) {
                    self.approvals.approve(&entry.domain);
                }
                let current = entries.entry(&entry_id);
                Ok(loaded_outcome(
                    current
                        .filter(|current| changed(&entry, current))
                        .map(|c| entry_to_wire(&c)),
                ))
            }
            (Ok(()), Some((state, reason))) => {
                let kind = match state {
                    ConfigEntryState::SetupRetry => wire::SetupOutcome::SetupRetry,
                    ConfigEntryState::MigrationError => wire::SetupOutcome::MigrationError,
                    _ => wire::SetupOutcome::SetupError,
                };
                self.clean_up(&entry_id).await;
                Ok(outcome(
                    kind,
                    reason.unwrap_or_else(|| format!("setup ended in state {}", state.as_str())),
                ))
            }
            (Ok(()), None) => Ok(outcome(
                wire::SetupOutcome::SetupError,
                "the entry vanished during setup".into(),
            )),
            (Err(error), _) => {
                self.clean_up(&entry_id).await;
                Ok(outcome(wire::SetupOutcome::SetupError, error.to_string()))
            }
        }
    }

    /// Sets up an entry this core already knows (a retry, or a setup after an unload), with
    /// main's current data.
    async fn setup_existing(&self, entry: &ConfigEntry) -> Result<(), homecore::ConfigEntryError> {
        let entries = self.core.config_entries();
        entries.unload(&entry.entry_id).await?;
        entries.update_entry(
            &entry.entry_id,
            ConfigEntryUpdate {
                title: Some(entry.title.clone()),
                data: Some(entry.data.clone()),
                options: Some(entry.options.clone()),
                unique_id: Some(entry.unique_id.clone()),
                version: Some(entry.version),
                minor_version: Some(entry.minor_version),
                ..ConfigEntryUpdate::default()
            },
        )?;
        entries.setup(&entry.entry_id).await.map(|_| ())
    }

    /// After a failed setup: cancel any local retry and leave the entry `not_loaded`; an entry
    /// that cannot even be unloaded (a failed migration) is removed.
    async fn clean_up(&self, entry_id: &str) {
        let entries = self.core.config_entries();
        if entries.unload(entry_id).await.is_err() {
            let _ = entries.remove(entry_id).await;
        }
    }

    /// `entry_unload`.
    pub async fn unload(
        &self,
        request: wire::EntryUnload,
    ) -> Result<wire::EntryUnloadResult, RemoteError> {
        let entries = self.core.config_entries();
        let Some(entry) = entries.entry(&request.entry_id) else {
            // Nothing to do: a sandbox that restarted never had it.
            return Ok(wire::EntryUnloadResult {
                ok: true,
                reason: String::new(),
            });
        };
        let result = entries.unload(&request.entry_id).await;
        if self.loaded.lock().remove(&request.entry_id) {
            self.approvals.release(&entry.domain);
        }
        Ok(match result {
            Ok(true) => wire::EntryUnloadResult {
                ok: true,
                reason: String::new(),
            },
            Ok(false) => wire::EntryUnloadResult {
                ok: false,
                reason: entries
                    .entry(&request.entry_id)
                    .and_then(|e| e.reason)
                    .unwrap_or_else(|| "unload failed".into()),
            },
            Err(error) => wire::EntryUnloadResult {
                ok: false,
                reason: error.to_string(),
            },
        })
    }

    /// `entry_remove`: main removed the entry; its integration's removal hook runs here, with
    /// the private core's copy of the entry when there is one (unloaded first), else with the
    /// entry main sent.
    pub async fn remove(
        &self,
        request: wire::EntryRemove,
    ) -> Result<wire::EntryRemoveResult, RemoteError> {
        let sent = request
            .entry
            .ok_or_else(|| RemoteError::bad_request("entry_remove needs an entry"))?;
        let entry = entry_from_wire(&sent, &self.group)?;
        self.updates.forget(&entry.entry_id);
        let entries = self.core.config_entries();
        if entries.entry(&entry.entry_id).is_some() {
            // Unloaded the way main's unload does it, releasing the domain's approval.
            self.unload(wire::EntryUnload {
                entry_id: entry.entry_id.clone(),
            })
            .await?;
            entries
                .remove(&entry.entry_id)
                .await
                .map_err(|error| RemoteError::handler(error.to_string()))?;
        } else if let Some(handler) = self.handlers.entry_setup(&entry.domain).await {
            handler.remove_entry(&self.core, &entry).await;
        }
        Ok(wire::EntryRemoveResult {})
    }

    /// Unloads every loaded entry (for shutdown).
    pub async fn unload_all(&self) {
        for entry_id in self.loaded() {
            if let Err(error) = self
                .unload(wire::EntryUnload {
                    entry_id: entry_id.clone(),
                })
                .await
            {
                tracing::warn!(%entry_id, %error, "unload at shutdown failed");
            }
        }
    }
}

fn outcome(kind: wire::SetupOutcome, reason: String) -> wire::EntrySetupResult {
    wire::EntrySetupResult {
        outcome: kind as i32,
        reason,
        updated_entry: None,
    }
}

fn loaded_outcome(updated_entry: Option<wire::ConfigEntry>) -> wire::EntrySetupResult {
    wire::EntrySetupResult {
        outcome: wire::SetupOutcome::Loaded as i32,
        reason: String::new(),
        updated_entry,
    }
}

/// Whether setup (a migration) changed what main stores about the entry.
fn changed(sent: &ConfigEntry, current: &ConfigEntry) -> bool {
    sent.title != current.title
        || sent.data != current.data
        || sent.options != current.options
        || sent.unique_id != current.unique_id
        || sent.version != current.version
        || sent.minor_version != current.minor_version
}
