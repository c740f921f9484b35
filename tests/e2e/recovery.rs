//! Entry recovery across crashes, over the real plugin and a real child process
//! (`sandbox-test-child` as the group's runtime): an entry whose setup a second crash
//! interrupted is set up again on the next process, a setup every process dies in ends after
//! a bounded number of resumes, and a failed group's services leave main.

#![allow(clippy::unwrap_used, missing_docs)]

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homecore::{ConfigEntry, ConfigEntryState, Core, CoreConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox_host::confinement::PathAccess;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{GroupConfig, GroupState, RestartPolicy};
use serde_json::Map;

/// A hang guard only: far above anything these tests need on a loaded machine.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Sensors the child registers per entry.
const ENTITIES: usize = 3;

struct Hub {
    core: Core,
    plugin: Arc<SandboxPlugin>,
    _dir: tempfile::TempDir,
}

/// The folder of the hub's directory the test and the sandbox share (the sandbox's confinement
/// refuses it the rest of main's directory).
const EXCHANGE: &str = "exchange";

impl Hub {
    async fn start(dir: tempfile::TempDir, child_flags: &[OsString]) -> Self {
        Self::start_with_starts(dir, child_flags, 3).await
    }

    /// A hub whose group may start `max_starts` times in its restart window.
    async fn start_with_starts(
        dir: tempfile::TempDir,
        child_flags: &[OsString],
        max_starts: u32,
    ) -> Self {
        let exchange = dir.path().join(EXCHANGE);
        std::fs::create_dir(&exchange).unwrap();
        let mut group_defaults = GroupConfig::new("template");
        group_defaults.confinement_paths = vec![(exchange, PathAccess::ReadWrite)];
        group_defaults.watchdog = None;
        group_defaults.stop_grace = Duration::from_secs(5);
        group_defaults.restart = RestartPolicy {
            max_starts,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            forgive_after: Duration::from_secs(300),
        };
        let core = Core::builder(CoreConfig::new(dir.path()))
            .integrations(integrations::builtin())
            .build()
            .unwrap();
        let mut runtime_command: Vec<OsString> =
            vec![sandbox_tests::binary(sandbox_tests::TEST_CHILD).into()];
        runtime_command.extend(child_flags.iter().cloned());
        let plugin = SandboxPlugin::install(
            &core,
            PluginConfig {
                groups: GroupsConfig {
                    config_dir: dir.path().to_owned(),
                    runtime_command,
                    custom_commands: Default::default(),
                    group_defaults,
                    group_overrides: Default::default(),
                },
                custom: vec![],
            },
        );
        core.start().await.unwrap();
        Self {
            core,
            plugin,
            _dir: dir,
        }
    }

    /// Sensors of the child that are proxied and available.
    fn available_sensors(&self) -> usize {
        self.core
            .states()
            .all(Some("sensor"))
            .iter()
            .filter(|state| state.state != "unavailable")
            .count()
    }

    async fn stop(self) {
        self.plugin.stop().await;
        self.core.stop().await.unwrap();
        self.plugin.uninstall();
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

/// The pid a held child wrote into the hold file, once one did.
fn holder(hold: &Path) -> Option<u32> {
    std::fs::read_to_string(hold).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_setup_a_second_crash_interrupted_is_set_up_on_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join(EXCHANGE).join("hold-setup");
    let flags: Vec<OsString> = vec![
        "--entities".into(),
        ENTITIES.to_string().into(),
        "--hold-setup-if".into(),
        hold.clone().into(),
    ];
    let hub = Hub::start(dir, &flags).await;
    let mut entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    entry.sandbox = Some("built-in".to_owned());
    let entry = hub.core.config_entries().add(entry).await.unwrap();
    assert_eq!(entry.state, ConfigEntryState::Loaded, "{:?}", entry.reason);
    wait_until("the child's sensors", || {
        hub.available_sensors() == ENTITIES
    })
    .await;
    let group = hub.plugin.groups().get("built-in").unwrap();
    let first = group.manager.status().pid.unwrap();

    // The first crash; the respawned process holds the entry's re-setup (it writes its pid
    // into the hold file) and is killed while it does: the second crash, mid-setup.
    std::fs::write(&hold, "hold").unwrap();
    sigkill(first);
    wait_until("the respawned process to hold the setup", || {
        holder(&hold).is_some()
    })
    .await;
    let second = holder(&hold).unwrap();
    assert_ne!(second, first);
    std::fs::remove_file(&hold).unwrap();
    sigkill(second);

    // A third process runs, and the interrupted setup resumed on it: loaded, with entities.
    wait_until("a third process", || {
        let status = group.manager.status();
        status.state == GroupState::Running && status.pid.is_some_and(|pid| pid != second)
    })
    .await;
    // The entry has been setting up since the second process held it: it ends loaded, not
    // in setup_error with "stopped during setup".
    let config_entries = hub.core.config_entries();
    wait_until("the setup to end", || {
        config_entries.entry(&entry.entry_id).unwrap().state != ConfigEntryState::SetupInProgress
    })
    .await;
    let resumed = config_entries.entry(&entry.entry_id).unwrap();
    assert_eq!(
        resumed.state,
        ConfigEntryState::Loaded,
        "{:?}",
        resumed.reason
    );
    wait_until("every sensor available again", || {
        hub.available_sensors() == ENTITIES
    })
    .await;
    let status = group.manager.status();
    assert_eq!(status.restarts, 2, "{status:?}");
    assert!(![first, second].contains(&status.pid.unwrap()));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_every_process_dies_in_fails_after_its_resumes_and_frees_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join(EXCHANGE).join("hold-setup");
    let flags: Vec<OsString> = vec![
        "--entities".into(),
        "1".into(),
        "--hold-setup-if".into(),
        hold.clone().into(),
    ];
    // A budget that never runs out during the test: only the cap on resumes ends the setup,
    // as for a sandbox dying in each setup more slowly than the restart window.
    let hub = Hub::start_with_starts(dir, &flags, 20).await;
    std::fs::write(&hold, "hold").unwrap();
    let mut entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    entry.sandbox = Some("built-in".to_owned());
    let config_entries = hub.core.config_entries();
    let adding = tokio::spawn({
        let config_entries = config_entries.clone();
        async move { config_entries.add(entry).await }
    });

    // Every process holds the setup and is killed while it does: the first attempt and each
    // resume.
    let mut killed = Vec::new();
    for _ in 0..=sandbox_host::router::MAX_SETUP_RESUMES {
        wait_until("a new process to hold the setup", || {
            holder(&hold).is_some_and(|pid| !killed.contains(&pid))
        })
        .await;
        let pid = holder(&hold).unwrap();
        sigkill(pid);
        killed.push(pid);
    }

    let entry = tokio::time::timeout(HANG_GUARD, adding)
        .await
        .expect("the setup ends after its last resume")
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupError);
    let reason = entry.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "ended during the entry's setup {} times in a row",
            sandbox_host::router::MAX_SETUP_RESUMES + 1
        )),
        "{reason}"
    );
    // The entry's lock is free again: its removal goes through.
    std::fs::remove_file(&hold).unwrap();
    tokio::time::timeout(HANG_GUARD, config_entries.remove(&entry.entry_id))
        .await
        .expect("the removal is not held by a setup")
        .unwrap();
    assert!(config_entries.entry(&entry.entry_id).is_none());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_groups_services_leave_main() {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<OsString> = vec![
        "--entities".into(),
        "1".into(),
        "--service".into(),
        "ping_me".into(),
    ];
    let hub = Hub::start(dir, &flags).await;
    let mut entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    entry.sandbox = Some("built-in".to_owned());
    let entry = hub.core.config_entries().add(entry).await.unwrap();
    assert_eq!(entry.state, ConfigEntryState::Loaded, "{:?}", entry.reason);
    assert!(hub.core.services().has_service("demo", "ping_me"));
    let group = hub.plugin.groups().get("built-in").unwrap();

    // Three starts are allowed in the window: crash the first process and both respawns, each
    // once it has set the entry up again. The wait is on this process's own bridge (a new one
    // per process) holding the entry's proxy: a respawn's re-setup runs only after the previous
    // bridge was torn down (its service removed from main), so the service main has then, and
    // the entry's `Loaded`, are this process's, not left over from the one before.
    let mut previous_bridge: Option<Arc<sandbox_host::bridge::Bridge>> = None;
    for restarts in 0..3 {
        wait_until("this process to have set the entry up again", || {
            let status = group.manager.status();
            let Some(bridge) = hub.plugin.groups().bridge("built-in") else {
                return false;
            };
            let fresh = previous_bridge
                .as_ref()
                .is_none_or(|previous| !Arc::ptr_eq(previous, &bridge));
            status.state == GroupState::Running
                && status.restarts == restarts
                && fresh
                && bridge.is_live()
                && !bridge.proxy_entity_ids().is_empty()
                && hub.core.services().has_service("demo", "ping_me")
                && hub
                    .core
                    .config_entries()
                    .entry(&entry.entry_id)
                    .unwrap()
                    .state
                    == ConfigEntryState::Loaded
        })
        .await;
        previous_bridge = hub.plugin.groups().bridge("built-in");
        let pid = group.manager.status().pid.unwrap();
        sigkill(pid);
        wait_until("a respawn or the failure", || {
            let status = group.manager.status();
            status.state == GroupState::Failed
                || (status.state == GroupState::Running && status.pid != Some(pid))
        })
        .await;
    }
    assert_eq!(group.manager.status().state, GroupState::Failed);
    wait_until("main's fail-over to finish", || {
        hub.core
            .config_entries()
            .entry(&entry.entry_id)
            .unwrap()
            .state
            == ConfigEntryState::SetupError
            && !group
                .failing_over
                .load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    wait_until("the failed group's service to leave main", || {
        !hub.core.services().has_service("demo", "ping_me")
    })
    .await;
    assert_eq!(hub.available_sensors(), 0);
    hub.stop().await;
}
