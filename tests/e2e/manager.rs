//! The group manager against a real child process (`sandbox-test-child`): every state
//! transition, the budget and its forgiveness, backoff, stop during spawn, the watchdog, SIGKILL
//! escalation, child hygiene, and no child process left behind.

#![allow(clippy::unwrap_used, missing_docs)]

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use sandbox_host::confinement::PathAccess;
use sandbox_host::process::ChildTransport;
use sandbox_host::{
    CommandFactory, GroupConfig, GroupEvents, GroupManager, GroupState, GroupStatus, ManagerError,
    ReadyInfo, RestartPolicy, WatchdogConfig,
};
use sandbox_proto::{Channel, TransportUrl};
use tokio::time::Instant;

/// A hang guard only: far above anything these tests need on a loaded machine.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn child_factory(flags: &[&str]) -> CommandFactory {
    let flags: Vec<OsString> = flags.iter().map(OsString::from).collect();
    let child = sandbox_tests::binary(sandbox_tests::TEST_CHILD);
    Arc::new(move |group: &str, url: &TransportUrl| {
        let mut argv: Vec<OsString> = vec![
            child.clone().into(),
            "--name".into(),
            group.into(),
            "--url".into(),
            url.to_string().into(),
        ];
        argv.extend(flags.iter().cloned());
        argv
    })
}

fn config(name: &str) -> GroupConfig {
    let mut config = GroupConfig::new(name);
    config.ready_timeout = Duration::from_secs(20);
    config.stop_grace = Duration::from_secs(5);
    config.restart = RestartPolicy {
        max_starts: 3,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        forgive_after: Duration::from_secs(300),
    };
    config.watchdog = None;
    config
}

/// Records the hooks and every pid the group ever had.
#[derive(Default)]
struct Recorder {
    ready_pids: Mutex<Vec<u32>>,
    closed: Mutex<Vec<String>>,
}

impl GroupEvents for Recorder {
    fn on_ready(&self, _group: &str, _channel: &Channel, ready: &ReadyInfo) {
        self.ready_pids.lock().unwrap().push(ready.pid);
    }

    fn on_channel_closed(&self, _group: &str, reason: &str) {
        self.closed.lock().unwrap().push(reason.to_owned());
    }
}

struct Harness {
    manager: GroupManager,
    events: Arc<Recorder>,
    pids: Arc<Mutex<Vec<u32>>>,
    states: Arc<Mutex<Vec<GroupState>>>,
}

impl Harness {
    fn new(config: GroupConfig, flags: &[&str]) -> Self {
        let events = Arc::new(Recorder::default());
        let manager = GroupManager::new(config, child_factory(flags), events.clone());
        let pids = Arc::new(Mutex::new(Vec::new()));
        let states = Arc::new(Mutex::new(vec![manager.status().state]));
        let mut watcher = manager.watch();
        let (pid_log, state_log) = (pids.clone(), states.clone());
        tokio::spawn(async move {
            loop {
                {
                    let status = watcher.borrow_and_update();
                    if let Some(pid) = status.pid {
                        let mut pids = pid_log.lock().unwrap();
                        if !pids.contains(&pid) {
                            pids.push(pid);
                        }
                    }
                    let mut states = state_log.lock().unwrap();
                    if states.last() != Some(&status.state) {
                        states.push(status.state);
                    }
                }
                if watcher.changed().await.is_err() {
                    return;
                }
            }
        });
        Self {
            manager,
            events,
            pids,
            states,
        }
    }

    async fn wait_for(&self, what: &str, condition: impl Fn(&GroupStatus) -> bool) -> GroupStatus {
        let mut watcher = self.manager.watch();
        let outcome =
            tokio::time::timeout(HANG_GUARD, watcher.wait_for(|status| condition(status))).await;
        outcome
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {what}; status {:?}",
                    self.manager.status()
                )
            })
            .unwrap()
            .clone()
    }

    /// Every pid the group ever had is gone (exited and reaped).
    async fn assert_no_child_left(&self) {
        let pids = self.pids.lock().unwrap().clone();
        for pid in pids {
            assert_gone(pid).await;
        }
    }
}

async fn assert_gone(pid: u32) {
    let gone = tokio::time::timeout(HANG_GUARD, async {
        while kill(Pid::from_raw(pid as i32), None).is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "process {pid} outlived its group");
}

#[tokio::test]
async fn starts_runs_and_stops_gracefully_with_restore_state() {
    let harness = Harness::new(config("built-in"), &[]);
    assert_eq!(harness.manager.status().state, GroupState::Stopped);
    let channel = harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let status = harness.manager.status();
    assert_eq!(status.state, GroupState::Running);
    assert_eq!(
        status.protocol_version.as_deref(),
        Some(sandbox_proto::PROTOCOL_VERSION)
    );
    let pid = status.pid.expect("a pid");
    assert_eq!(
        channel
            .call(&sandbox_proto::wire::Ping { nonce: 9 })
            .await
            .expect("pong")
            .nonce,
        9
    );
    assert_eq!(*harness.events.ready_pids.lock().unwrap(), vec![pid]);

    let report = harness.manager.stop().await;
    assert!(report.graceful, "{report:?}");
    assert!(!report.killed);
    assert_eq!(report.exit.as_deref(), Some("exited with code 0"));
    let restore: serde_json::Value =
        serde_json::from_slice(&report.restore_state.expect("restore state")).unwrap();
    assert_eq!(restore["group"], "built-in");
    assert_eq!(harness.manager.status().state, GroupState::Stopped);
    assert!(harness.manager.channel().is_none());
    assert_eq!(
        *harness.events.closed.lock().unwrap(),
        vec!["stopped".to_owned()]
    );
    assert_eq!(
        *harness.states.lock().unwrap(),
        vec![
            GroupState::Stopped,
            GroupState::Starting,
            GroupState::Running,
            GroupState::Stopped
        ]
    );
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn unix_socket_transport_works_and_leaves_no_socket() {
    let mut config = config("custom-demo");
    config.transport = ChildTransport::Unix;
    let report_dir = tempfile::tempdir().unwrap();
    let report_path = report_dir.path().join("report");
    config
        .confinement_paths
        .push((report_dir.path().to_owned(), PathAccess::ReadWrite));
    let harness = Harness::new(config, &["--report", report_path.to_str().unwrap()]);
    let channel = harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    assert!(
        channel.transport_description().starts_with("unix:///"),
        "{}",
        channel.transport_description()
    );
    let socket = std::path::PathBuf::from(
        channel
            .transport_description()
            .trim_start_matches("unix://"),
    );
    assert!(
        !socket.exists(),
        "the socket is removed once the child connected"
    );
    let report = std::fs::read_to_string(&report_path).unwrap();
    assert!(report.contains("stdin=/dev/null"), "{report}");
    let report = harness.manager.stop().await;
    assert!(report.graceful);
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn child_hygiene_is_applied() {
    let mut config = config("built-in");
    config.limits.open_files = Some(256);
    config.limits.address_space_bytes = Some(8 << 30);
    let report_dir = tempfile::tempdir().unwrap();
    let report_path = report_dir.path().join("report");
    config
        .confinement_paths
        .push((report_dir.path().to_owned(), PathAccess::ReadWrite));
    let harness = Harness::new(config, &["--report", report_path.to_str().unwrap()]);
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let report = std::fs::read_to_string(&report_path).unwrap();
    for expected in [
        "core=0",
        "nofile=256",
        &format!("as={}", 8u64 << 30),
        "no_new_privs=1",
        "own_group=true",
    ] {
        assert!(
            report.lines().any(|line| line == expected),
            "missing {expected} in {report}"
        );
    }
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_slow_child_within_the_ready_timeout_runs() {
    let harness = Harness::new(config("built-in"), &["--ready-delay-ms", "300"]);
    let started = Instant::now();
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(harness.manager.status().restarts, 0);
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_child_that_never_says_ready_is_killed_on_every_attempt_until_the_budget_fails() {
    let mut config = config("built-in");
    config.ready_timeout = Duration::from_millis(300);
    config.restart.max_starts = 2;
    let harness = Harness::new(config, &["--never-ready"]);
    let outcome = harness.manager.ensure_started(HANG_GUARD).await;
    let Err(ManagerError::Failed { reason, .. }) = outcome else {
        panic!("expected failure, got {outcome:?}")
    };
    assert!(
        reason.starts_with("restart budget exhausted: 2 starts within 60s"),
        "{reason}"
    );
    assert!(
        reason.contains("did not say ready within the ready timeout (300ms)"),
        "{reason}"
    );
    let status = harness.manager.status();
    assert_eq!(status.state, GroupState::Failed);
    assert_eq!(
        status.restarts, 1,
        "the respawn was bounded by the ready timeout too"
    );
    assert_eq!(harness.pids.lock().unwrap().len(), 2);
    assert!(harness.events.ready_pids.lock().unwrap().is_empty());
    harness.assert_no_child_left().await;
    harness.manager.stop().await;
    assert_eq!(harness.manager.status().state, GroupState::Stopped);
}

#[tokio::test]
async fn a_child_exiting_with_a_code_exhausts_the_budget_then_a_manual_restart_starts_fresh() {
    let harness = Harness::new(config("custom-broken"), &["--exit-code", "3"]);
    harness.manager.start().await;
    let failed = harness
        .wait_for("failed", |status| status.state == GroupState::Failed)
        .await;
    assert!(
        failed
            .failure
            .as_deref()
            .unwrap()
            .contains("the last one exited with code 3 before"),
        "{failed:?}"
    );
    assert_eq!(
        failed
            .last_exit
            .as_deref()
            .map(|s| s.starts_with("exited with code 3")),
        Some(true)
    );
    assert_eq!(failed.restarts, 2);
    assert_eq!(harness.pids.lock().unwrap().len(), 3);
    // ensure_started reports the failure instead of waiting.
    let outcome = harness.manager.ensure_started(HANG_GUARD).await;
    assert!(
        matches!(outcome, Err(ManagerError::Failed { .. })),
        "{outcome:?}"
    );
    // A manual restart gets a fresh budget: three more attempts.
    harness.manager.restart().await;
    harness
        .wait_for("starting again", |status| {
            status.state == GroupState::Starting
        })
        .await;
    harness
        .wait_for("failed again", |status| status.state == GroupState::Failed)
        .await;
    assert_eq!(harness.pids.lock().unwrap().len(), 6);
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_crash_turns_the_channel_closed_then_respawns_and_is_ready_again() {
    let harness = Harness::new(config("built-in"), &["--crash-after-ms", "200"]);
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let first = harness.manager.status().pid.unwrap();
    let respawned = harness
        .wait_for("a respawn", |status| {
            status.state == GroupState::Running && status.pid != Some(first)
        })
        .await;
    assert_eq!(respawned.restarts, 1);
    assert_eq!(respawned.last_exit.as_deref(), Some("exited with code 70"));
    assert_eq!(
        harness.events.closed.lock().unwrap().len(),
        1,
        "told once, as soon as the channel closed"
    );
    assert_eq!(
        harness.events.ready_pids.lock().unwrap()[..2],
        [first, respawned.pid.unwrap()]
    );
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_manual_restart_is_not_counted_as_a_crash_restart() {
    let harness = Harness::new(config("built-in"), &[]);
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let first = harness.manager.status().pid.unwrap();
    harness.manager.restart().await;
    let restarted = harness
        .wait_for("the new child", |status| {
            status.state == GroupState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    assert_eq!(restarted.restarts, 0, "{restarted:?}");
    // A crash after it still counts.
    kill(
        Pid::from_raw(restarted.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let respawned = harness
        .wait_for("a respawn", |status| {
            status.state == GroupState::Running && status.pid != restarted.pid
        })
        .await;
    assert_eq!(respawned.restarts, 1, "{respawned:?}");
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_long_healthy_run_is_forgiven() {
    let mut config = config("built-in");
    config.restart.max_starts = 2;
    config.restart.forgive_after = Duration::from_millis(100);
    let harness = Harness::new(config, &["--crash-after-ms", "250"]);
    harness.manager.start().await;
    // Each child runs longer than forgive_after, so four crashes never exhaust a budget of two.
    harness
        .wait_for("four restarts", |status| status.restarts >= 4)
        .await;
    assert_ne!(harness.manager.status().state, GroupState::Failed);
    assert!(!harness.states.lock().unwrap().contains(&GroupState::Failed));
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn restarts_wait_out_the_backoff() {
    let mut config = config("built-in");
    config.restart.backoff_initial = Duration::from_millis(300);
    config.restart.backoff_max = Duration::from_millis(300);
    config.restart.max_starts = 3;
    let harness = Harness::new(config, &["--exit-code", "1"]);
    let started = Instant::now();
    harness.manager.start().await;
    harness
        .wait_for("failed", |status| status.state == GroupState::Failed)
        .await;
    // Two restarts, each after at least the backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn stop_during_spawn_kills_the_child_it_raced_and_does_not_hang() {
    let harness = Harness::new(config("built-in"), &["--ready-delay-ms", "60000"]);
    harness.manager.start().await;
    let starting = harness
        .wait_for("a pid", |status| status.pid.is_some())
        .await;
    assert_eq!(starting.state, GroupState::Starting);
    let report = tokio::time::timeout(HANG_GUARD, harness.manager.stop())
        .await
        .expect("stop is bounded");
    assert!(report.restore_state.is_none());
    assert_eq!(harness.manager.status().state, GroupState::Stopped);
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn stop_right_after_start_leaves_no_orphan() {
    for _ in 0..5 {
        let harness = Harness::new(config("built-in"), &[]);
        harness.manager.start().await;
        tokio::time::timeout(HANG_GUARD, harness.manager.stop())
            .await
            .expect("stop is bounded");
        assert_eq!(harness.manager.status().state, GroupState::Stopped);
        harness.assert_no_child_left().await;
    }
}

#[tokio::test]
async fn the_watchdog_restarts_a_hung_sandbox() {
    let mut config = config("built-in");
    config.watchdog = Some(WatchdogConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
    });
    let harness = Harness::new(config, &["--hang-after-ready"]);
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let first = harness.manager.status().pid.unwrap();
    harness
        .wait_for("a respawn", |status| {
            status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    let closed = harness.events.closed.lock().unwrap().clone();
    assert!(closed[0].contains("presumed hung"), "{closed:?}");
    assert_gone(first).await;
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn a_child_ignoring_shutdown_and_sigterm_is_killed() {
    let mut config = config("built-in");
    config.stop_grace = Duration::from_millis(300);
    let harness = Harness::new(
        config,
        &["--ignore-shutdown", "--ignore-sigterm", "--ignore-eof"],
    );
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let report = harness.manager.stop().await;
    assert!(!report.graceful);
    assert!(report.killed, "{report:?}");
    assert_eq!(report.exit.as_deref(), Some("killed by SIGKILL"));
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn garbage_on_stdout_breaks_the_channel_and_the_group_restarts() {
    let harness = Harness::new(config("built-in"), &["--garbage-stdout"]);
    harness.manager.start().await;
    harness
        .wait_for("a restart", |status| status.restarts >= 1)
        .await;
    let closed = harness.events.closed.lock().unwrap().clone();
    assert!(closed[0].contains("frame over the limit"), "{closed:?}");
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn an_incompatible_protocol_fails_the_group_with_the_message() {
    let harness = Harness::new(config("built-in"), &["--protocol-version", "2.0.0"]);
    let outcome = harness.manager.ensure_started(HANG_GUARD).await;
    let Err(ManagerError::Failed { reason, .. }) = outcome else {
        panic!("expected failure, got {outcome:?}")
    };
    assert!(
        reason.contains("upgrade the host (sandbox-host)"),
        "{reason}"
    );
    assert_eq!(
        harness.manager.status().restarts,
        0,
        "no restarts for an incompatible sandbox"
    );
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
}

#[tokio::test]
async fn grandchildren_die_with_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild");
    let mut config = config("built-in");
    config
        .confinement_paths
        .push((dir.path().to_owned(), PathAccess::ReadWrite));
    let harness = Harness::new(
        config,
        &[
            "--grandchild-pid-file",
            pid_file.to_str().unwrap(),
            "--ignore-shutdown",
        ],
    );
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let grandchild: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    harness.manager.stop().await;
    harness.assert_no_child_left().await;
    // The grandchild is not ours to reap; it is gone once init reaps it after the group SIGKILL.
    let gone = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let state =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            // Absent, or a zombie waiting for init.
            if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "grandchild {grandchild} survived");
}

#[tokio::test]
async fn dropping_the_manager_kills_the_child() {
    let harness = Harness::new(config("built-in"), &[]);
    harness
        .manager
        .ensure_started(HANG_GUARD)
        .await
        .expect("running");
    let pids = harness.pids.clone();
    drop(harness.manager);
    let pids = pids.lock().unwrap().clone();
    for pid in pids {
        assert_gone(pid).await;
    }
}

/// Main's log, captured as text.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_sandbox_error_line_reaches_mains_log_at_error_level() {
    // Every task of this current-thread test runs on this thread, stderr forwarding included.
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let factory: CommandFactory = Arc::new(|_group: &str, _url: &TransportUrl| {
        let script = "echo '2026-11-29T09:16:06.888835Z ERROR cannot reach the bulb' >&2; \
                      echo 'WARN retrying' >&2; echo 'no level here' >&2; exit 3";
        ["/bin/sh", "-c", script]
            .into_iter()
            .map(OsString::from)
            .collect()
    });
    let manager = GroupManager::new(
        config("custom-loud"),
        factory,
        Arc::new(Recorder::default()),
    );
    manager.start().await;
    tokio::time::timeout(HANG_GUARD, async {
        while !log.text().contains("no level here") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the child's lines never reached the log: {}", log.text()));
    manager.stop().await;
    let text = log.text();
    let line_of = |needle: &str| {
        text.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not logged: {text}"))
            .to_owned()
    };
    let error = line_of("cannot reach the bulb");
    assert!(error.contains(" ERROR sandbox:"), "{error}");
    assert!(
        !error.contains("2026-11-29T09:16:06"),
        "the child's own time is dropped: {error}"
    );
    assert!(line_of("retrying").contains(" WARN sandbox:"), "{text}");
    assert!(
        line_of("no level here").contains(" INFO sandbox:"),
        "{text}"
    );
}
