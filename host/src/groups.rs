//! The groups: one [`GroupManager`] and one [`Bridge`] slot per sandbox group, created on first
//! use, and the hooks that join them — handlers installed on every new channel, a fresh bridge
//! on every `ready`, proxies unavailable at once on every crash, and recovery on respawn.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use homecore::{ConfigEntryState, Core};
use parking_lot::Mutex;
use sandbox_proto::{Channel, ChannelBuilder, TransportUrl};
use tokio::sync::watch;

use crate::bridge::{Bridge, BridgeSlot, install_handlers};
use crate::context_cache::ContextCache;
use crate::manager::{
    GroupConfig, GroupEvents, GroupManager, GroupState, ManagerError, ReadyInfo, StopReport,
};
use crate::refusals::GateCounters;
use crate::store_server::GroupStore;

/// How the groups are run.
#[derive(Clone)]
pub struct GroupsConfig {
    /// Main's configuration directory (the groups' store folders live under it).
    pub config_dir: PathBuf,
    /// The program (and leading arguments) of the built-in sandbox; `--name` and `--url` are
    /// appended.
    pub runtime_command: Vec<OsString>,
    /// Programs of custom groups (`custom-<domain>`), by group; missing ones use the runtime.
    pub custom_commands: HashMap<String, Vec<OsString>>,
    /// Settings every group starts from (its name is set per group).
    pub group_defaults: GroupConfig,
    /// Settings of named groups that differ from the defaults, whole (its name is set to the
    /// group's).
    pub group_overrides: HashMap<String, GroupConfig>,
}

impl GroupsConfig {
    /// The settings of the group `name`: its override, or the defaults, named after it.
    pub fn group_config(&self, name: &str) -> GroupConfig {
        let mut config = self
            .group_overrides
            .get(name)
            .unwrap_or(&self.group_defaults)
            .clone();
        config.name = name.to_owned();
        config.channel.name = name.to_owned();
        config
    }

    /// How long entry setup waits for the group `name` to be ready: the ready timeout of every
    /// start its budget allows, plus their backoff.
    pub fn ensure_timeout(&self, name: &str) -> Duration {
        let config = self
            .group_overrides
            .get(name)
            .unwrap_or(&self.group_defaults);
        let policy = &config.restart;
        (config.ready_timeout + policy.backoff_max) * policy.max_starts.max(1)
    }
}

/// One group's parts.
pub struct GroupHandle {
    /// Its supervisor.
    pub manager: GroupManager,
    /// The current bridge (empty until ready).
    pub slot: BridgeSlot,
    /// Its store folder.
    pub store: Arc<GroupStore>,
    /// Refusals per gate, across every bridge of the group.
    pub refused: Arc<GateCounters>,
    /// The contexts main issued to this group: one cache per group, so a chatty group cannot
    /// evict the contexts main issued to another, nor echo them.
    pub contexts: Arc<ContextCache>,
    /// Set while main itself reloads the group's entries after the group failed, so those
    /// setups report the failure instead of restarting the group.
    pub failing_over: AtomicBool,
    /// The latest process main has finished taking in (see [`Settled`]).
    settled: Arc<watch::Sender<Option<Settled>>>,
}

/// A process whose `ready` main has finished handling: its bridge is in place and the bridge
/// it displaced (after a respawn) is torn down, so an entry set up on its channel registers on
/// free platform slots that nothing will tear down behind it.
#[derive(Clone)]
struct Settled {
    /// Counts the group's processes: a later process has a larger one.
    epoch: u64,
    /// The process's channel.
    channel: Channel,
}

struct Inner {
    core: Core,
    config: GroupsConfig,
    groups: Mutex<HashMap<String, Arc<GroupHandle>>>,
    /// Set by [`Groups::stop_all`]: no group starts again afterwards (a fail-over or a late
    /// setup racing the stop must not respawn a sandbox the hub just stopped).
    stopping: AtomicBool,
}

/// Every sandbox group of one hub.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

impl Groups {
    /// No group yet; they start on demand.
    pub fn new(core: Core, config: GroupsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                core,
                config,
                groups: Mutex::default(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Main's core.
    pub fn core(&self) -> &Core {
        &self.inner.core
    }

    /// The settings.
    pub fn config(&self) -> &GroupsConfig {
        &self.inner.config
    }

    /// The group `name`, created (not started) on first use.
    pub fn group(
        &self,
        name: &str,
    ) -> Result<Arc<GroupHandle>, crate::store_server::StoreServerError> {
        if let Some(handle) = self.inner.groups.lock().get(name) {
            return Ok(Arc::clone(handle));
        }
        let store = Arc::new(GroupStore::new(&self.inner.config.config_dir, name)?);
        let slot: BridgeSlot = Arc::default();
        let refused = Arc::new(GateCounters::new(name));
        let contexts = Arc::new(ContextCache::new());
        let settled = Arc::new(watch::Sender::new(None));
        let hooks = Arc::new(Hooks {
            groups: Arc::downgrade(&self.inner),
            slot: Arc::clone(&slot),
            store: Arc::clone(&store),
            refused: Arc::clone(&refused),
            contexts: Arc::clone(&contexts),
            readies: AtomicU64::new(0),
            settled: Arc::clone(&settled),
        });
        let config = self.inner.config.group_config(name);
        let program = self
            .inner
            .config
            .custom_commands
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.inner.config.runtime_command.clone());
        let factory = Arc::new(move |group: &str, url: &TransportUrl| {
            let mut argv = program.clone();
            argv.extend([
                OsString::from("--name"),
                group.into(),
                OsString::from("--url"),
                url.to_string().into(),
            ]);
            argv
        });
        let handle = Arc::new(GroupHandle {
            manager: GroupManager::new(config, factory, hooks),
            slot,
            store,
            refused,
            contexts,
            failing_over: AtomicBool::new(false),
            settled,
        });
        let mut groups = self.inner.groups.lock();
        let handle = Arc::clone(groups.entry(name.to_owned()).or_insert(handle));
        drop(groups);
        self.watch_failures(name, &handle);
        Ok(handle)
    }

    /// The group if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<GroupHandle>> {
        self.inner.groups.lock().get(name).cloned()
    }

    /// The names of the groups created so far.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.groups.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// The group's channel, starting the group if needed (a failed group is started again
    /// with a fresh budget unless main is itself failing its entries over).
    pub async fn channel(&self, name: &str) -> Result<Channel, ManagerError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(ManagerError::Stopped {
                group: name.to_owned(),
            });
        }
        let handle = self.group(name).map_err(|error| ManagerError::Failed {
            group: name.to_owned(),
            reason: error.to_string(),
        })?;
        if handle.manager.status().state == GroupState::Failed
            && !handle.failing_over.load(Ordering::Acquire)
        {
            handle.manager.restart().await;
        }
        handle
            .manager
            .ensure_started(self.inner.config.ensure_timeout(name))
            .await
    }

    /// The channel of a process main has finished taking in (bridge in place, the displaced
    /// one torn down), with its epoch. `None` for `after` starts the group if needed (a failed
    /// group again with a fresh budget, as [`Groups::channel`]); `Some(epoch)` waits for a
    /// process later than that one (the one that died under a call) and never restarts a
    /// failed group: the restart budget decides how many processes a caller may wait through.
    /// Bounded by [`GroupsConfig::ensure_timeout`]; a failed or stopped group ends the wait.
    pub async fn settled_channel(
        &self,
        name: &str,
        after: Option<u64>,
    ) -> Result<(Channel, u64), ManagerError> {
        let handle = match after {
            None => {
                self.channel(name).await?;
                self.get(name)
            }
            Some(_) => self.get(name),
        };
        let Some(handle) = handle else {
            return Err(ManagerError::Stopped {
                group: name.to_owned(),
            });
        };
        let mut settled = handle.settled.subscribe();
        let mut status = handle.manager.watch();
        let wait = async {
            loop {
                if self.inner.stopping.load(Ordering::Acquire) {
                    return Err(ManagerError::Stopped {
                        group: name.to_owned(),
                    });
                }
                let current = settled.borrow_and_update().clone();
                if let Some(current) = current
                    && after.is_none_or(|after| current.epoch > after)
                    && !current.channel.is_closed()
                {
                    return Ok((current.channel, current.epoch));
                }
                let state = status.borrow_and_update().clone();
                match state.state {
                    GroupState::Failed => {
                        return Err(ManagerError::Failed {
                            group: name.to_owned(),
                            reason: state.failure.unwrap_or_default(),
                        });
                    }
                    GroupState::Stopped => {
                        return Err(ManagerError::Stopped {
                            group: name.to_owned(),
                        });
                    }
                    GroupState::Starting | GroupState::Running => {}
                }
                tokio::select! {
                    changed = settled.changed() => changed,
                    changed = status.changed() => changed,
                }
                .map_err(|_| ManagerError::Stopped {
                    group: name.to_owned(),
                })?;
            }
        };
        let timeout = self.inner.config.ensure_timeout(name);
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(ManagerError::NotReady {
                group: name.to_owned(),
                after: timeout,
            }))
    }

    /// The group's current bridge, if it is running.
    pub fn bridge(&self, name: &str) -> Option<Arc<Bridge>> {
        self.get(name).and_then(|handle| handle.slot.lock().clone())
    }

    /// Stops every group in parallel; each returns its report (restore state included).
    pub async fn stop_all(&self) -> Vec<(String, StopReport)> {
        self.inner.stopping.store(true, Ordering::Release);
        let handles: Vec<(String, Arc<GroupHandle>)> = self
            .inner
            .groups
            .lock()
            .iter()
            .map(|(name, handle)| (name.clone(), Arc::clone(handle)))
            .collect();
        let stops = handles.into_iter().map(|(name, handle)| async move {
            let report = handle.manager.stop().await;
            let bridge = handle.slot.lock().take();
            if let Some(bridge) = bridge {
                bridge.teardown().await;
            }
            (name, report)
        });
        futures::future::join_all(stops).await
    }

    /// When a group fails (budget exhausted), its bridge is torn down (proxies and services
    /// off main) and its entries are reloaded so they show `setup_error` with the budget's
    /// reason, instead of staying "loaded" with dead proxies (or showing only the crash that
    /// interrupted their last setup).
    fn watch_failures(&self, name: &str, handle: &Arc<GroupHandle>) {
        let mut watcher = handle.manager.watch();
        let weak = Arc::downgrade(&self.inner);
        let group = name.to_owned();
        tokio::spawn(async move {
            let mut was_failed = false;
            loop {
                let failed = watcher.borrow_and_update().state == GroupState::Failed;
                if failed && !was_failed {
                    let Some(inner) = weak.upgrade() else { return };
                    fail_over(&Groups { inner }, &group).await;
                }
                was_failed = failed;
                if watcher.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn fail_over(groups: &Groups, group: &str) {
    let Some(handle) = groups.get(group) else {
        return;
    };
    handle.failing_over.store(true, Ordering::Release);
    // The failed group's bridge goes first: its proxies and the services it registered on main
    // (which would otherwise answer "not running" until a manual restart).
    let bridge = handle.slot.lock().take();
    if let Some(bridge) = bridge {
        bridge.teardown().await;
    }
    let entries = groups.inner.core.config_entries();
    for entry in entries.entries(None) {
        let affected = matches!(
            entry.state,
            ConfigEntryState::Loaded | ConfigEntryState::SetupError | ConfigEntryState::SetupRetry
        );
        if entry.sandbox.as_deref() == Some(group)
            && affected
            && let Err(error) = entries.reload(&entry.entry_id).await
        {
            tracing::warn!(%group, entry_id = %entry.entry_id, %error, "could not mark the entry failed");
        }
    }
    handle.failing_over.store(false, Ordering::Release);
}

/// The manager's hooks for one group.
struct Hooks {
    groups: Weak<Inner>,
    slot: BridgeSlot,
    store: Arc<GroupStore>,
    refused: Arc<GateCounters>,
    contexts: Arc<ContextCache>,
    /// Processes that said `ready` so far: the next one's epoch.
    readies: AtomicU64,
    settled: Arc<watch::Sender<Option<Settled>>>,
}

impl GroupEvents for Hooks {
    fn configure_channel(&self, _group: &str, builder: ChannelBuilder) -> ChannelBuilder {
        install_handlers(
            builder,
            &self.slot,
            Arc::clone(&self.store),
            Arc::clone(&self.refused),
        )
    }

    fn on_ready(&self, group: &str, channel: &Channel, ready: &ReadyInfo) {
        let Some(inner) = self.groups.upgrade() else {
            return;
        };
        let bridge = Bridge::new(
            inner.core.clone(),
            group,
            channel.clone(),
            Arc::clone(&self.contexts),
            Arc::clone(&self.refused),
            &ready.negotiated.features,
            inner.config.group_config(group).max_entities,
        );
        let displaced = self.slot.lock().replace(bridge);
        let settled = Settled {
            epoch: self.readies.fetch_add(1, Ordering::AcqRel) + 1,
            channel: channel.clone(),
        };
        let Some(displaced) = displaced else {
            publish_settled(&self.settled, settled);
            return;
        };
        // A respawn: the old bridge's proxies and services go first (freeing the platform
        // slots), then the process is settled (a setup the crash interrupted resumes on it,
        // see `SandboxRouter`), then the group's loaded entries are set up again in it.
        let entries: Vec<String> = inner
            .core
            .config_entries()
            .entries(None)
            .into_iter()
            .filter(|entry| {
                entry.sandbox.as_deref() == Some(group) && entry.state == ConfigEntryState::Loaded
            })
            .map(|entry| entry.entry_id)
            .collect();
        let core = inner.core.clone();
        let group = group.to_owned();
        let published = Arc::clone(&self.settled);
        tokio::spawn(async move {
            displaced.teardown().await;
            publish_settled(&published, settled);
            for entry_id in entries {
                if let Err(error) = core.config_entries().reload(&entry_id).await {
                    tracing::warn!(%group, %entry_id, %error, "could not set the entry up again after a respawn");
                }
            }
        });
    }

    fn on_channel_closed(&self, _group: &str, _reason: &str) {
        if let Some(bridge) = self.slot.lock().clone() {
            bridge.mark_unavailable();
        }
    }
}

/// Publishes a settled process unless a later one already is.
fn publish_settled(slot: &watch::Sender<Option<Settled>>, settled: Settled) {
    slot.send_if_modified(|current| {
        if current
            .as_ref()
            .is_some_and(|current| current.epoch > settled.epoch)
        {
            return false;
        }
        *current = Some(settled);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use homecore::{Context, CoreConfig};

    #[test]
    fn a_named_group_takes_its_override_and_every_other_group_the_defaults() {
        let mut slow = GroupConfig::new("anything");
        slow.ready_timeout = Duration::from_secs(120);
        slow.max_entities = 7;
        let config = GroupsConfig {
            config_dir: "unused".into(),
            runtime_command: vec!["unused".into()],
            custom_commands: HashMap::new(),
            group_defaults: GroupConfig::new("template"),
            group_overrides: HashMap::from([("custom-acme".to_owned(), slow)]),
        };
        let acme = config.group_config("custom-acme");
        assert_eq!(
            (acme.name.as_str(), acme.channel.name.as_str()),
            ("custom-acme", "custom-acme")
        );
        assert_eq!(
            (acme.ready_timeout, acme.max_entities),
            (Duration::from_secs(120), 7)
        );
        let built_in = config.group_config("built-in");
        assert_eq!(built_in.name, "built-in");
        assert_eq!(
            built_in.ready_timeout,
            crate::manager::DEFAULT_READY_TIMEOUT
        );
        assert!(config.ensure_timeout("custom-acme") > config.ensure_timeout("built-in"));
    }

    #[tokio::test(start_paused = true)]
    async fn each_group_restores_only_the_contexts_main_issued_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = Core::builder(CoreConfig::new(dir.path()))
            .build()
            .expect("core");
        let groups = Groups::new(
            core,
            GroupsConfig {
                config_dir: dir.path().to_owned(),
                runtime_command: vec!["unused".into()],
                custom_commands: HashMap::new(),
                group_defaults: GroupConfig::new("template"),
                group_overrides: Default::default(),
            },
        );
        let (first, second) = (
            groups.group("built-in").expect("group"),
            groups.group("custom-acme").expect("group"),
        );
        let issued = Context::with_user("user-1");
        let id = first.contexts.remember(&issued);
        assert_eq!(first.contexts.resolve(Some(&id)), issued);
        // Another group echoing the id gets a fresh context, not the user's.
        let echoed = second.contexts.resolve(Some(&id));
        assert_ne!(echoed, issued);
        assert_eq!(echoed.user_id, None);
        // And flooding its own cache never evicts what main issued to the first group.
        for _ in 0..3 * crate::context_cache::MAX_CONTEXTS {
            second
                .contexts
                .resolve(Some(&ulid::Ulid::new().to_string()));
        }
        assert_eq!(first.contexts.resolve(Some(&id)), issued);
    }
}
