//! The router: main's config entries seam, taking flows and entries of sandboxed integrations
//! to their group, and the flow proxy that runs a sandbox's flow step by step.
//!
//! Main alone decides the group (the classifier, at flow creation) and records it in the
//! entry; nothing the sandbox sends can change it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use homecore::data_entry_flow::FlowStepContext;
use homecore::integration::Manifest;
use homecore::{
    ConfigEntry, ConfigEntryRouter, ConfigEntryUpdate, FlowContext, FlowError, FlowHandler,
    FlowStep, Routed, RoutedFlow, SetupError,
};
use sandbox_proto::{CallError, Channel, json, wire};
use sandbox_wire::{
    ConvertError, core_config_to_wire, entry_to_wire, flow_error_from_remote, flow_step_from_wire,
};
use serde_json::{Map, Value};

use crate::classifier::{Placement, classify};
use crate::groups::Groups;
use crate::log_limit::{Admit, LogBudget};
use crate::manager::ManagerError;

/// How long one flow step may take in a sandbox.
pub const FLOW_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long main waits for a sandbox to set an entry up or unload it.
pub const ENTRY_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long main waits for a sandbox to run a removed entry's removal hook (`entry_remove`).
/// Main's cleanup of the entry (its store keys, then the registries) waits for it, and a hook
/// only deletes the integration's own data or revokes a token: short, unlike a setup.
pub const ENTRY_REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times one entry setup resumes on a new process after the group's death
/// interrupted it. The setup holds the entry's lock (unload, remove and reload wait on it),
/// and a sandbox that dies in every setup more slowly than the restart window is never
/// failed by the restart budget: past this many resumes the setup fails with the crash.
pub const MAX_SETUP_RESUMES: u32 = 2;

/// A custom integration: its manifest and the pinned artifact main verifies before running it.
#[derive(Debug, Clone)]
pub struct CustomIntegration {
    /// Its manifest.
    pub manifest: Manifest,
    /// The sandbox binary built with the SDK.
    pub artifact: PathBuf,
    /// The pinned SHA-256 of the artifact, lowercase hex.
    pub sha256: String,
}

/// Routes flows and entries of sandboxed integrations to their groups.
pub struct SandboxRouter {
    groups: Groups,
    /// Manifests of the integrations main knows (built in).
    builtin: HashMap<String, Manifest>,
    /// Custom integrations by domain.
    custom: HashMap<String, CustomIntegration>,
    /// Custom integrations refused for their domain, with the reason (see
    /// [`accept_custom`]).
    refused_custom: HashMap<String, String>,
}

/// Splits custom integrations into those main accepts and those whose domain collides with a
/// core name (a core domain, an entity domain, a prefix of a core event) or a built-in
/// integration, by domain with the reason. A refused one never runs: its flows and entries
/// fail with the reason.
pub fn accept_custom(
    custom: Vec<CustomIntegration>,
    builtin: &[Manifest],
) -> (Vec<CustomIntegration>, HashMap<String, String>) {
    let mut refused = HashMap::new();
    let known: Vec<String> = builtin
        .iter()
        .map(|manifest| manifest.domain.clone())
        .chain(custom.iter().map(|custom| custom.manifest.domain.clone()))
        .collect();
    let accepted = custom
        .into_iter()
        .filter(|custom| {
            let domain = &custom.manifest.domain;
            let others: Vec<&str> = known
                .iter()
                .map(String::as_str)
                .filter(|other| other != domain)
                .collect();
            let reason = crate::gates::custom_domain_refusal(domain, &others).or_else(|| {
                builtin
                    .iter()
                    .any(|manifest| &manifest.domain == domain)
                    .then(|| format!("{domain} is a built-in integration"))
            });
            match reason {
                None => true,
                Some(reason) => {
                    tracing::error!(%domain, %reason, "custom integration refused");
                    refused.insert(
                        domain.clone(),
                        format!("custom integration {domain} refused: {reason}"),
                    );
                    false
                }
            }
        })
        .collect();
    (accepted, refused)
}

impl SandboxRouter {
    /// A router over `groups`, knowing these integrations.
    pub fn new(groups: Groups, builtin: Vec<Manifest>, custom: Vec<CustomIntegration>) -> Self {
        let (custom, refused_custom) = accept_custom(custom, &builtin);
        Self {
            refused_custom,
            groups,
            builtin: builtin
                .into_iter()
                .map(|manifest| (manifest.domain.clone(), manifest))
                .collect(),
            custom: custom
                .into_iter()
                .map(|custom| (custom.manifest.domain.clone(), custom))
                .collect(),
        }
    }

    /// The custom integrations main accepted.
    pub fn accepted_custom(&self) -> Vec<CustomIntegration> {
        self.custom.values().cloned().collect()
    }

    /// Where `domain` runs; `None` for an integration main does not know.
    pub fn placement(&self, domain: &str) -> Option<Placement> {
        if let Some(custom) = self.custom.get(domain) {
            return Some(classify(&custom.manifest, true));
        }
        self.builtin
            .get(domain)
            .map(|manifest| classify(manifest, false))
    }

    fn source(&self, domain: &str) -> Result<wire::IntegrationSource, SetupError> {
        let kind = match self.custom.get(domain) {
            None => wire::integration_source::Kind::Builtin(wire::BuiltinSource {}),
            Some(custom) => {
                verify_artifact(custom).map_err(SetupError::Failed)?;
                wire::integration_source::Kind::Artifact(wire::ArtifactSource {
                    version: custom.manifest.version.to_string(),
                    sha256: custom.sha256.clone(),
                    path: custom.artifact.display().to_string(),
                })
            }
        };
        Ok(wire::IntegrationSource { kind: Some(kind) })
    }
}

/// Bytes of an artifact hashed per read when its pin is checked. The artifact (a release
/// binary is tens of MiB) is streamed through the hasher, so checking a pin holds this much
/// of it in memory instead of all of it; 64 KiB keeps the read calls few (a thousand for
/// 64 MiB) while staying far below any size worth noticing.
pub const ARTIFACT_HASH_BUFFER_LEN: usize = 64 * 1024;

/// Checks a custom integration's artifact against its pinned SHA-256.
pub fn verify_artifact(custom: &CustomIntegration) -> Result<(), String> {
    let actual = sha256_of_file(&custom.artifact).map_err(|error| {
        format!(
            "cannot read the artifact of {}: {error}",
            custom.manifest.domain
        )
    })?;
    if actual != custom.sha256.to_ascii_lowercase() {
        return Err(format!(
            "the artifact of {} {} does not match its pinned sha256 (expected {}, found {actual}); refusing to run it",
            custom.manifest.domain, custom.manifest.version, custom.sha256
        ));
    }
    Ok(())
}

/// The SHA-256 of the file at `path`, lowercase hex, read [`ARTIFACT_HASH_BUFFER_LEN`] bytes
/// at a time: what a custom integration's pin must say.
pub fn sha256_of_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0_u8; ARTIFACT_HASH_BUFFER_LEN];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Counts a value over a bound at the group's `bounds` gate; the refusal to report.
fn refuse_over_bound(
    groups: &Groups,
    group: &str,
    error: crate::limits::LimitError,
) -> sandbox_proto::RemoteError {
    match groups.get(group) {
        Some(handle) => handle.refused.over_bound(error),
        None => sandbox_proto::RemoteError::refused(error.to_string()),
    }
}

fn setup_failure(group: &str, error: CallError) -> SetupError {
    // A remote error carries the sandbox's message and field errors: the entry's reason is
    // shown and logged on every retry, so it is bounded like a reason sent as such.
    SetupError::Failed(crate::limits::bounded_text(
        &format!("sandbox group {group}: {error}"),
        crate::limits::MAX_REASON_BYTES,
    ))
}

/// Asks the sandbox on `channel` to run the removal hook of `entry`, waiting at most
/// [`ENTRY_REMOVE_TIMEOUT`].
async fn run_removal_hook(channel: &Channel, entry: &ConfigEntry) -> Result<(), CallError> {
    let request = wire::EntryRemove {
        entry: Some(entry_to_wire(entry)),
    };
    channel
        .call_timeout(&request, ENTRY_REMOVE_TIMEOUT)
        .await
        .map(drop)
}

impl ConfigEntryRouter for SandboxRouter {
    fn create_flow<'a>(
        &'a self,
        domain: &'a str,
        _context: &'a FlowContext,
        _data: Option<&'a Map<String, Value>>,
    ) -> BoxFuture<'a, Result<Routed<RoutedFlow>, FlowError>> {
        Box::pin(async move {
            if let Some(reason) = self.refused_custom.get(domain) {
                return Err(FlowError::NotAllowed(reason.clone()));
            }
            match self.placement(domain) {
                None | Some(Placement::Main(_)) => Ok(Routed::NotMine),
                Some(Placement::Group(group)) => {
                    // A custom artifact is verified before anything of it runs, flows included.
                    if let Some(custom) = self.custom.get(domain) {
                        verify_artifact(custom).map_err(FlowError::NotAllowed)?;
                    }
                    Ok(Routed::Taken(RoutedFlow {
                        handler: Box::new(FlowProxy::new(
                            self.groups.clone(),
                            &group,
                            domain,
                            None,
                        )),
                        sandbox: Some(group),
                    }))
                }
            }
        })
    }

    fn create_options_flow<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<Routed<Box<dyn FlowHandler>>, FlowError>> {
        Box::pin(async move {
            match &entry.sandbox {
                None => Ok(Routed::NotMine),
                Some(group) => Ok(Routed::Taken(Box::new(FlowProxy::new(
                    self.groups.clone(),
                    group,
                    &entry.domain,
                    Some(entry.clone()),
                )) as Box<dyn FlowHandler>)),
            }
        })
    }

    fn setup_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), SetupError>>> {
        Box::pin(async move {
            let Some(group) = entry.sandbox.clone() else {
                return Routed::NotMine;
            };
            Routed::Taken(self.setup_in_group(&group, entry).await)
        })
    }

    fn unload_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), String>>> {
        Box::pin(async move {
            let Some(group) = entry.sandbox.clone() else {
                return Routed::NotMine;
            };
            // Main's side is released whatever the sandbox does: proxies and platform slots.
            if let Some(bridge) = self.groups.bridge(&group) {
                bridge.teardown_entry(&entry.entry_id).await;
            }
            let Some(channel) = self
                .groups
                .get(&group)
                .and_then(|handle| handle.manager.channel())
            else {
                return Routed::Taken(Ok(()));
            };
            let request = wire::EntryUnload {
                entry_id: entry.entry_id.clone(),
            };
            let unloaded = match channel.call_timeout(&request, ENTRY_CALL_TIMEOUT).await {
                Ok(result) if result.ok => Ok(()),
                Ok(result) => Err(crate::limits::bounded_text(
                    &result.reason,
                    crate::limits::MAX_REASON_BYTES,
                )),
                // The sandbox went away meanwhile: nothing is left running there.
                Err(CallError::Closed { .. }) => Ok(()),
                Err(error) => Err(crate::limits::bounded_text(
                    &error.to_string(),
                    crate::limits::MAX_REASON_BYTES,
                )),
            };
            // What the sandbox registered for the entry while it was being unloaded goes too.
            if let Some(bridge) = self.groups.bridge(&group) {
                bridge.teardown_entry(&entry.entry_id).await;
            }
            Routed::Taken(unloaded)
        })
    }

    fn remove_entry<'a>(&'a self, entry: &'a ConfigEntry) -> BoxFuture<'a, Routed<()>> {
        Box::pin(async move {
            let Some(group) = entry.sandbox.clone() else {
                return Routed::NotMine;
            };
            self.remove_in_group(&group, entry).await;
            Routed::Taken(())
        })
    }
}

impl SandboxRouter {
    /// The removal of a sandboxed entry: its integration's `remove_entry` hook runs in the
    /// group (only a running group that acknowledged `entry_remove`: a stopped group is not
    /// started for it, and an older sandbox has no such call — then no hook runs anywhere,
    /// never main's copy of the integration), then main deletes the entry's store keys in the
    /// group's folder ([`crate::store_server::GroupStore::remove_entry_keys`]).
    async fn remove_in_group(&self, group: &str, entry: &ConfigEntry) {
        let bridge = self
            .groups
            .bridge(group)
            .filter(|bridge| bridge.is_live() && bridge.has_feature("entry_remove"));
        if let Some(bridge) = bridge {
            if let Err(error) = run_removal_hook(bridge.channel(), entry).await {
                tracing::warn!(%group, entry_id = %entry.entry_id, %error, "the sandbox did not run the entry's removal");
            }
        } else {
            tracing::debug!(%group, entry_id = %entry.entry_id, "no running sandbox with entry_remove: the removal hook does not run");
        }
        // The group's handle is created (not started) when main has not used the group since
        // it started: the entry's keys are on disk all the same.
        let handle = match self.groups.group(group) {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%group, entry_id = %entry.entry_id, %error, "the removed entry's store keys were not deleted");
                return;
            }
        };
        match handle.store.remove_entry_keys(&entry.entry_id).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!(%group, entry_id = %entry.entry_id, ?removed, "the removed entry's store keys were deleted");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%group, entry_id = %entry.entry_id, %error, "the removed entry's store keys were not all deleted");
            }
        }
    }

    async fn setup_in_group(&self, group: &str, entry: &ConfigEntry) -> Result<(), SetupError> {
        let source = self.source(&entry.domain)?;
        let request = wire::EntrySetup {
            entry: Some(entry_to_wire(entry)),
            source: Some(source),
            core_config: Some(core_config_to_wire(&self.groups.core().config())),
        };
        // A setup the group's death interrupts is not the entry's failure: it resumes on the
        // next process main takes in (the respawn's own re-setup covers only loaded entries,
        // not this one), at most MAX_SETUP_RESUMES times. A failed (budget exhausted) or
        // stopped group ends it sooner.
        let mut interrupted_on = None;
        let mut resumes = 0_u32;
        let (channel, result) = loop {
            let (channel, epoch) = match self.groups.settled_channel(group, interrupted_on).await {
                Ok(settled) => settled,
                Err(ManagerError::Stopped { .. }) if interrupted_on.is_some() => {
                    return Err(SetupError::Failed(format!(
                        "sandbox group {group} stopped during setup"
                    )));
                }
                Err(error) => return Err(SetupError::Failed(error.to_string())),
            };
            match channel.call_timeout(&request, ENTRY_CALL_TIMEOUT).await {
                Ok(result) => break (channel, result),
                Err(error @ CallError::Closed { .. }) if resumes >= MAX_SETUP_RESUMES => {
                    tracing::warn!(%group, entry_id = %entry.entry_id, %error, "the sandbox ended during every resumed setup; the setup fails");
                    return Err(SetupError::Failed(crate::limits::bounded_text(
                        &format!(
                            "sandbox group {group} ended during the entry's setup {} times in a row: {error}",
                            resumes + 1
                        ),
                        crate::limits::MAX_REASON_BYTES,
                    )));
                }
                Err(CallError::Closed { .. }) => {
                    tracing::info!(%group, entry_id = %entry.entry_id, "the sandbox ended during setup; the setup resumes on its next process");
                    interrupted_on = Some(epoch);
                    resumes += 1;
                }
                Err(error) => return Err(setup_failure(group, error)),
            }
        };
        if let Some(updated) = result.updated_entry {
            if let Err(error) = crate::limits::check_entry(&updated) {
                let refusal = refuse_over_bound(&self.groups, group, error);
                // The sandbox loaded the entry already: nothing of it stays, on either side.
                if let Some(bridge) = self.groups.bridge(group) {
                    bridge.teardown_entry(&entry.entry_id).await;
                }
                let unload = wire::EntryUnload {
                    entry_id: entry.entry_id.clone(),
                };
                if let Err(error) = channel.call_timeout(&unload, ENTRY_CALL_TIMEOUT).await {
                    tracing::debug!(%group, %error, "the refused entry was not unloaded in the sandbox");
                }
                if let Some(bridge) = self.groups.bridge(group) {
                    bridge.teardown_entry(&entry.entry_id).await;
                }
                return Err(SetupError::Failed(format!(
                    "the sandbox's migrated entry was refused: {}",
                    refusal.message
                )));
            }
            self.apply_migration(entry, &updated);
        }
        // The reason becomes the entry's, shown and logged on every retry: bounded.
        let reason = crate::limits::bounded_text(&result.reason, crate::limits::MAX_REASON_BYTES);
        match wire::SetupOutcome::try_from(result.outcome) {
            Ok(wire::SetupOutcome::Loaded) => Ok(()),
            Ok(wire::SetupOutcome::SetupRetry) => Err(SetupError::NotReady(reason)),
            _ => Err(SetupError::Failed(reason)),
        }
    }

    fn apply_migration(&self, entry: &ConfigEntry, updated: &wire::ConfigEntry) {
        let update = ConfigEntryUpdate {
            title: Some(updated.title.clone()),
            data: json::object_from_bytes(&updated.data_json).ok(),
            options: json::object_from_bytes(&updated.options_json).ok(),
            unique_id: Some(updated.unique_id.clone()),
            version: Some(updated.version),
            minor_version: Some(updated.minor_version),
            ..ConfigEntryUpdate::default()
        };
        if let Err(error) = self
            .groups
            .core()
            .config_entries()
            .update_entry(&entry.entry_id, update)
        {
            tracing::warn!(entry_id = %entry.entry_id, %error, "could not store the migrated entry");
        }
    }
}

/// Runs a sandbox's config or options flow step by step for main's flow manager.
pub struct FlowProxy {
    groups: Groups,
    group: String,
    domain: String,
    /// For an options flow: the entry.
    entry: Option<ConfigEntry>,
    /// The flow's id in the sandbox, once started.
    remote_flow: Option<String>,
    /// The sandbox's last result was a menu (a choice becomes `next_step_id`).
    after_menu: bool,
    /// The sandbox flow is over (created or aborted): nothing to abort on removal.
    finished: bool,
    /// The channel the sandbox flow lives on.
    channel: Option<Channel>,
}

impl FlowProxy {
    fn new(groups: Groups, group: &str, domain: &str, entry: Option<ConfigEntry>) -> Self {
        Self {
            groups,
            group: group.to_owned(),
            domain: domain.to_owned(),
            entry,
            remote_flow: None,
            after_menu: false,
            finished: false,
            channel: None,
        }
    }

    async fn run(
        &mut self,
        flow: &FlowStepContext,
        step_id: &str,
        input: Option<Map<String, Value>>,
    ) -> Result<FlowStep, FlowError> {
        let result = match &self.remote_flow {
            None => {
                let channel = match &self.channel {
                    Some(channel) => channel.clone(),
                    None => self
                        .groups
                        .channel(&self.group)
                        .await
                        .map_err(|error| FlowError::Handler(error.to_string()))?,
                };
                let context = flow.context();
                let request = wire::FlowInit {
                    kind: if self.entry.is_some() {
                        wire::FlowKind::Options
                    } else {
                        wire::FlowKind::Config
                    } as i32,
                    handler: self.domain.clone(),
                    source: context.source.clone(),
                    data_json: input
                        .as_ref()
                        .map(json::object_to_bytes)
                        .unwrap_or_default(),
                    context_json: json::to_bytes(&json::to_json_safe(&context)),
                    entry: self.entry.as_ref().map(entry_to_wire),
                    core_config: Some(core_config_to_wire(&self.groups.core().config())),
                };
                let result = channel.call_timeout(&request, FLOW_STEP_TIMEOUT).await;
                self.channel = Some(channel);
                result
            }
            Some(remote_flow) => {
                let input = if self.after_menu {
                    Some(Map::from_iter([(
                        "next_step_id".to_owned(),
                        Value::String(step_id.to_owned()),
                    )]))
                } else {
                    input
                };
                let request = wire::FlowStep {
                    flow_id: remote_flow.clone(),
                    user_input_json: input
                        .as_ref()
                        .map(json::object_to_bytes)
                        .unwrap_or_default(),
                };
                let channel = self
                    .channel
                    .clone()
                    .ok_or_else(|| FlowError::Handler("no channel".into()))?;
                channel.call_timeout(&request, FLOW_STEP_TIMEOUT).await
            }
        };
        let mut result = result.map_err(|error| match error {
            CallError::Remote { error, .. } => flow_error_from_remote(&error),
            other => FlowError::Handler(format!("sandbox group {}: {other}", self.group)),
        })?;
        let refused = |error| {
            let refusal = refuse_over_bound(&self.groups, &self.group, error);
            FlowError::Handler(format!(
                "sandbox group {} sent a flow result main refused: {}",
                self.group, refusal.message
            ))
        };
        // The flow's id first, so that a refused result still lets main abort the sandbox's
        // flow (which would otherwise hold its unique id until the sandbox restarts).
        crate::limits::check_text("flow_id", &result.flow_id, crate::limits::MAX_TEXT_BYTES)
            .map_err(refused)?;
        self.remote_flow = Some(result.flow_id.clone());
        crate::limits::check_flow_result(&result).map_err(refused)?;
        let step = match flow_step_from_wire(&result) {
            Err(ConvertError::Schema(error)) => {
                // A form whose schema main cannot read is shown without one, as a service
                // with an unreadable schema is registered without one: the sandbox's flow
                // still validates the input against its own schema.
                self.warn_unreadable_schema(&error);
                result.data_schema_json = Default::default();
                flow_step_from_wire(&result)
            }
            other => other,
        };
        let (step, unique_id) = step.map_err(|error| FlowError::Handler(error.to_string()))?;
        if let Some(unique_id) = unique_id {
            flow.set_unique_id(Some(&unique_id), false)?;
        }
        self.after_menu = matches!(step, FlowStep::Menu { .. });
        self.finished = step.is_finished();
        Ok(step)
    }

    /// Logs, within [`UNREADABLE_SCHEMA_LOG`]'s budget, a form schema main could not read.
    fn warn_unreadable_schema(&self, error: &serde_json::Error) {
        let error =
            crate::limits::bounded_text(&error.to_string(), crate::limits::MAX_MESSAGE_BYTES);
        if let Admit::Log { suppressed } = UNREADABLE_SCHEMA_LOG.lock().admit(error.len()) {
            tracing::warn!(
                group = %self.group,
                domain = %self.domain,
                %error,
                more = suppressed.map_or(0, |suppressed| suppressed.lines),
                "a flow form's schema is unreadable; the form is shown without one"
            );
        }
    }
}

/// Log lines about unreadable flow form schemas: one per
/// [`sandbox_proto::log_limit::LOG_WINDOW`], the rest counted into the next line. Shared by
/// every flow, since each sandbox flow step answers a person's step.
static UNREADABLE_SCHEMA_LOG: std::sync::LazyLock<parking_lot::Mutex<LogBudget>> =
    std::sync::LazyLock::new(|| parking_lot::Mutex::new(LogBudget::new(1, usize::MAX)));

impl FlowHandler for FlowProxy {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(self.run(flow, step_id, input))
    }

    fn on_remove(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Whatever ended the proxy flow (abort, removal, an error), the sandbox flow must not
            // stay behind holding its unique id (already_in_progress forever).
            if self.finished {
                return;
            }
            if let (Some(remote_flow), Some(channel)) = (&self.remote_flow, &self.channel) {
                let request = wire::FlowAbort {
                    flow_id: remote_flow.clone(),
                };
                if let Err(error) = channel.call_timeout(&request, FLOW_STEP_TIMEOUT).await {
                    tracing::debug!(group = %self.group, %error, "sandbox flow not aborted");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
