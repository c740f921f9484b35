//! The group manager: starts, watches, restarts and stops the one sandbox subprocess of a group.
//!
//! One supervisor task per group owns the child process and its channel. Its states are
//! `stopped -> starting -> running -> (starting again after a crash) -> failed`, published on a
//! watch channel with the pid, the restart count and the last exit reason. Every attempt, the
//! first and every respawn, is bounded by the ready timeout; a child that never says `ready` is
//! killed and counts against the restart budget. A stop that lands at any moment (during spawn,
//! while waiting for `ready`, while running, during backoff) ends the child it would otherwise
//! have missed, and never hangs: shutdown request, grace, SIGTERM, grace, SIGKILL.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sandbox_proto::UnixSocketListener;
use sandbox_proto::error::ErrorKind;
use sandbox_proto::version::{self, Negotiated, Role};
use sandbox_proto::wire::{self, Ready, ReadyAck};
use sandbox_proto::{
    CallError, Channel, ChannelBuilder, ChannelConfig, RemoteError, Transport, TransportUrl,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::budget::{RestartBudget, RestartPolicy};
use crate::confinement::{ConfinementProfile, PathAccess};
use crate::cpu_share::CpuShareConfig;
use crate::process::{
    ChildTransport, Credentials, ResourceLimits, SandboxProcess, SpawnSpec, describe_exit,
};

/// How long a child has to say `ready`, on every attempt, unless configured otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping child has to answer `shutdown`, and then to exit after SIGTERM.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Builds the argv of a group's child: `(group, url) -> argv`.
pub type CommandFactory = Arc<dyn Fn(&str, &TransportUrl) -> Vec<OsString> + Send + Sync>;

/// Time between the watchdog's pings unless configured otherwise. A sandbox that hangs right
/// after answering a ping is found at most this plus [`DEFAULT_WATCHDOG_TIMEOUT`] later, and
/// every call waiting on it fails then (its channel closes with the kill): 8 s, where the
/// former 30 s + 10 s left a caller (a service call from the front end, an automation) blocked
/// for up to 40 s. A ping every 5 s costs a few dozen bytes and one wake-up per group.
pub const DEFAULT_WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);

/// How long a ping may go unanswered unless configured otherwise: 3 s, what editors' extension
/// hosts call unresponsive (VS Code's). A ping is answered by the sandbox's channel without
/// waiting on integration code, so only a sandbox whose runtime stopped making progress misses
/// it.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(3);

/// The liveness watchdog: a periodic `ping` that a hung (not crashed) sandbox fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Time between pings.
    pub interval: Duration,
    /// How long a ping may go unanswered before the sandbox is killed and restarted.
    pub timeout: Duration,
}

impl WatchdogConfig {
    /// The longest a hung sandbox goes unnoticed: one interval (it hung right after a ping)
    /// plus the ping's timeout.
    pub fn detection_bound(&self) -> Duration {
        self.interval + self.timeout
    }
}

impl Default for WatchdogConfig {
    /// [`DEFAULT_WATCHDOG_INTERVAL`] and [`DEFAULT_WATCHDOG_TIMEOUT`].
    fn default() -> Self {
        Self {
            interval: DEFAULT_WATCHDOG_INTERVAL,
            timeout: DEFAULT_WATCHDOG_TIMEOUT,
        }
    }
}

/// Everything that decides how one group is run.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group's name (`built-in`, `custom-<domain>`, ...).
    pub name: String,
    /// stdio (default) or a unix socket.
    pub transport: ChildTransport,
    /// See [`DEFAULT_READY_TIMEOUT`].
    pub ready_timeout: Duration,
    /// See [`DEFAULT_STOP_GRACE`].
    pub stop_grace: Duration,
    /// The restart budget and backoff.
    pub restart: RestartPolicy,
    /// The liveness watchdog; `None` disables it.
    pub watchdog: Option<WatchdogConfig>,
    /// OS limits for the child.
    pub limits: ResourceLimits,
    /// Run the child as this user (host must be root).
    pub credentials: Option<Credentials>,
    /// Settings of the channel to the child (its name is set to the group's).
    pub channel: ChannelConfig,
    /// Most entities the group may have proxied on main; see
    /// [`crate::limits::MAX_ENTITIES_PER_GROUP`] (the default).
    pub max_entities: usize,
    /// The group's fair share of the machine (see [`crate::cpu_share`]); `None` never demotes
    /// it.
    pub cpu_share: Option<CpuShareConfig>,
    /// What the kernel forbids the group's sandbox (see [`crate::confinement`]).
    pub confinement: ConfinementProfile,
    /// Paths the group's sandbox may use beyond what every sandbox may: a device, a data
    /// folder its integration needs (see [`crate::confinement::filesystem_ruleset`]).
    pub confinement_paths: Vec<(PathBuf, PathAccess)>,
}

impl GroupConfig {
    /// The defaults for a group: stdio, 30 s ready timeout, 10 s stop grace, 3 starts in 60 s,
    /// a watchdog ping every 5 s answered within 3 s.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            channel: ChannelConfig::named(name.clone()),
            name,
            transport: ChildTransport::Stdio,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            stop_grace: DEFAULT_STOP_GRACE,
            restart: RestartPolicy::default(),
            watchdog: Some(WatchdogConfig::default()),
            limits: ResourceLimits::default(),
            credentials: None,
            max_entities: crate::limits::MAX_ENTITIES_PER_GROUP,
            cpu_share: Some(CpuShareConfig::default()),
            confinement: ConfinementProfile::Default,
            confinement_paths: Vec::new(),
        }
    }
}

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No child, and none wanted.
    Stopped,
    /// A child is being started (or the next start is waiting out the backoff).
    Starting,
    /// The child said `ready`; its channel is live.
    Running,
    /// The restart budget is used up (or the child speaks an incompatible protocol); a manual
    /// [`GroupManager::restart`] starts it again.
    Failed,
}

/// What a group's watchers see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The state.
    pub state: GroupState,
    /// The current child's pid, if one is alive.
    pub pid: Option<u32>,
    /// Crash respawns (a child that ended on its own, hung or never got ready, started
    /// again) since the group was last started or restarted by hand; a manual
    /// [`GroupManager::restart`] resets it to 0 and is not counted.
    pub restarts: u32,
    /// How the last child ended.
    pub last_exit: Option<String>,
    /// Why the group failed (in `Failed`).
    pub failure: Option<String>,
    /// The protocol version the running child speaks.
    pub protocol_version: Option<String>,
    /// Why the last child ended, by kind (`last_exit` says it in words).
    pub last_exit_cause: Option<ExitCause>,
    /// When the running child said `ready`.
    pub running_since: Option<Instant>,
    /// While the next start waits out the budget's backoff: when it starts.
    pub backoff_until: Option<Instant>,
    /// Starts the restart budget counts in its window now.
    pub starts_in_window: u32,
    /// Every start of a child since the manager was made.
    pub total_starts: u64,
    /// The Landlock ABI the files of the group's latest child were confined with: 0 when the
    /// kernel has no Landlock (its files were not confined), `None` before any child and when
    /// its profile confines no files.
    pub landlock_abi: Option<u32>,
    /// The confinement profile of the group's latest child; `None` before any child.
    pub confinement: Option<ConfinementProfile>,
    /// Whether the group's latest child runs under the syscall filter; `None` before any
    /// child.
    pub seccomp: Option<bool>,
}

impl GroupStatus {
    fn stopped() -> Self {
        Self {
            state: GroupState::Stopped,
            pid: None,
            restarts: 0,
            last_exit: None,
            failure: None,
            protocol_version: None,
            landlock_abi: None,
            confinement: None,
            seccomp: None,
            last_exit_cause: None,
            running_since: None,
            backoff_until: None,
            starts_in_window: 0,
            total_starts: 0,
        }
    }
}

/// Why a group's child ended, for an operator: what to look at next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// It never got running: it could not be spawned, exited, closed its channel or stayed
    /// silent before `ready` (or within the ready timeout).
    FailedStart,
    /// It ended on its own while running (exited, was killed by a signal, or closed its
    /// channel).
    Crashed,
    /// It stopped answering the watchdog's pings and was killed.
    Hung,
    /// It speaks a protocol main cannot talk to.
    Incompatible,
    /// Main stopped it (a stop, a restart, or the hub shutting down).
    Stopped,
}

impl ExitCause {
    /// The cause as one lowercase word or two (`crashed`, `failed start`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedStart => "failed start",
            Self::Crashed => "crashed",
            Self::Hung => "hung",
            Self::Incompatible => "incompatible",
            Self::Stopped => "stopped",
        }
    }
}

/// What main learns when a child says `ready`.
#[derive(Debug, Clone)]
pub struct ReadyInfo {
    /// The negotiated version and features.
    pub negotiated: Negotiated,
    /// The sandbox implementation's name.
    pub runtime: String,
    /// The integrations the child can run.
    pub integrations: Vec<wire::IntegrationInfo>,
    /// The child's pid.
    pub pid: u32,
}

/// Hooks the host plugin gives the manager. They are called from the supervisor task and must
/// not block.
pub trait GroupEvents: Send + Sync + 'static {
    /// Adds the host's handlers to each new channel before it reads its first frame.
    fn configure_channel(&self, _group: &str, builder: ChannelBuilder) -> ChannelBuilder {
        builder
    }

    /// A child said `ready` (first start and every respawn).
    fn on_ready(&self, _group: &str, _channel: &Channel, _ready: &ReadyInfo) {}

    /// A running child's channel closed (crash, hang, stop): called as soon as the end is seen.
    fn on_channel_closed(&self, _group: &str, _reason: &str) {}
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl GroupEvents for NoEvents {}

/// Why a group could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    /// The group failed.
    #[error("sandbox group `{group}` failed: {reason}")]
    Failed {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// The group was stopped while waiting for it.
    #[error("sandbox group `{group}` is stopped")]
    Stopped {
        /// The group.
        group: String,
    },
    /// The group did not become ready in time.
    #[error("sandbox group `{group}` was not ready within {after:?}")]
    NotReady {
        /// The group.
        group: String,
        /// The wait.
        after: Duration,
    },
}

/// How a stop went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// The restore state the child returned from `shutdown`, JSON, when it was at most
    /// [`crate::store_server::MAX_VALUE_BYTES`] (a larger one could not be stored anyway and is
    /// not held). A sandbox saves its restore state itself through its store while it shuts
    /// down; this copy is what it answered, for callers that want to look.
    pub restore_state: Option<Bytes>,
    /// Whether the child answered `shutdown`.
    pub answered: bool,
    /// Whether the child answered `shutdown` and exited on its own.
    pub graceful: bool,
    /// Whether SIGKILL was needed.
    pub killed: bool,
    /// How the child ended, if one was running.
    pub exit: Option<String>,
}

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desired {
    /// Run; a new generation means "start over with a fresh budget".
    Run(u64),
    Stop,
}

/// The part of a group the supervisor task shares with the handle (never the handle itself, so
/// dropping the last handle stops the supervisor).
struct Shared {
    config: GroupConfig,
    factory: CommandFactory,
    events: Arc<dyn GroupEvents>,
    status: watch::Sender<GroupStatus>,
    channel: Mutex<Option<Channel>>,
    /// Set once main has said that this group's files are not confined (a kernel without
    /// Landlock), so a crash loop says it once.
    said_unconfined_files: AtomicBool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut GroupStatus)) {
        self.status.send_modify(change);
    }

    fn group(&self) -> &str {
        &self.config.name
    }
}

/// Supervises one group. Cheap to share behind an `Arc`; dropping it kills the group's child.
pub struct GroupManager {
    shared: Arc<Shared>,
    desired: watch::Sender<Desired>,
    generation: AtomicU64,
    supervisor: Mutex<Option<JoinHandle<StopReport>>>,
    lifecycle: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupManager")
            .field("group", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

impl GroupManager {
    /// A manager for one group; nothing runs until [`GroupManager::start`].
    pub fn new(config: GroupConfig, factory: CommandFactory, events: Arc<dyn GroupEvents>) -> Self {
        let (status, _) = watch::channel(GroupStatus::stopped());
        let (desired, _) = watch::channel(Desired::Stop);
        Self {
            shared: Arc::new(Shared {
                config,
                factory,
                events,
                status,
                channel: Mutex::new(None),
                said_unconfined_files: AtomicBool::new(false),
            }),
            desired,
            generation: AtomicU64::new(0),
            supervisor: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        self.shared.group()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &GroupConfig {
        &self.shared.config
    }

    /// The current status.
    pub fn status(&self) -> GroupStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<GroupStatus> {
        self.shared.status.subscribe()
    }

    /// The running child's channel, if the group is running.
    pub fn channel(&self) -> Option<Channel> {
        self.shared
            .channel
            .lock()
            .expect("channel slot lock poisoned")
            .clone()
    }

    /// Starts supervising (returns at once; see [`GroupManager::ensure_started`] to wait).
    /// Does nothing if the group is already starting or running.
    pub async fn start(&self) {
        let _lifecycle = self.lifecycle.lock().await;
        self.start_locked();
    }

    fn start_locked(&self) {
        let mut supervisor = self.supervisor.lock().expect("supervisor lock poisoned");
        if supervisor.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.desired.send_replace(Desired::Run(generation));
        // A fresh supervision; what happened before it (how many processes, how the last one
        // ended) stays for the operator.
        self.shared.update(|status| {
            *status = GroupStatus {
                state: GroupState::Starting,
                total_starts: status.total_starts,
                last_exit: status.last_exit.take(),
                last_exit_cause: status.last_exit_cause,
                ..GroupStatus::stopped()
            };
        });
        let shared = Arc::clone(&self.shared);
        let desired = self.desired.subscribe();
        // Everything the supervisor logs is in the group's span.
        let span = tracing::info_span!("group", name = %self.shared.group());
        *supervisor = Some(tokio::spawn(
            supervise(shared, desired, generation).instrument(span),
        ));
    }

    /// Starts the group if needed and waits (at most `timeout`) until it is running.
    pub async fn ensure_started(&self, timeout: Duration) -> Result<Channel, ManagerError> {
        let group = self.group().to_owned();
        if self.status().state == GroupState::Failed {
            return Err(ManagerError::Failed {
                group,
                reason: self.status().failure.unwrap_or_default(),
            });
        }
        self.start().await;
        let mut watcher = self.watch();
        let settled = tokio::time::timeout(timeout, async {
            loop {
                let status = watcher.borrow_and_update().clone();
                match status.state {
                    GroupState::Running => {
                        if let Some(channel) = self.channel() {
                            return Ok(channel);
                        }
                    }
                    GroupState::Failed => {
                        return Err(ManagerError::Failed {
                            group: group.clone(),
                            reason: status.failure.unwrap_or_default(),
                        });
                    }
                    GroupState::Stopped => {
                        return Err(ManagerError::Stopped {
                            group: group.clone(),
                        });
                    }
                    GroupState::Starting => {}
                }
                if watcher.changed().await.is_err() {
                    return Err(ManagerError::Stopped {
                        group: group.clone(),
                    });
                }
            }
        })
        .await;
        settled.unwrap_or(Err(ManagerError::NotReady {
            group,
            after: timeout,
        }))
    }

    /// Starts the group again with a fresh restart budget: from `failed`, or by replacing a
    /// running child.
    pub async fn restart(&self) {
        let _lifecycle = self.lifecycle.lock().await;
        let alive = self
            .supervisor
            .lock()
            .expect("supervisor lock poisoned")
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        if alive {
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            // Starting from now on, so a caller's ensure_started waits for the new start instead
            // of reading the old failure.
            self.shared.update(|status| {
                status.state = GroupState::Starting;
                status.failure = None;
            });
            self.desired.send_replace(Desired::Run(generation));
        } else {
            self.start_locked();
        }
    }

    /// Stops the group: asks the child to shut down (collecting its restore state), then
    /// SIGTERM, then SIGKILL. Bounded: it never waits longer than the shutdown grace, the
    /// SIGTERM grace and a short reaping margin, whatever the child does.
    pub async fn stop(&self) -> StopReport {
        let _lifecycle = self.lifecycle.lock().await;
        self.desired.send_replace(Desired::Stop);
        let task = self
            .supervisor
            .lock()
            .expect("supervisor lock poisoned")
            .take();
        let Some(mut task) = task else {
            return StopReport::default();
        };
        let bound = self.shared.config.stop_grace * 2
            + self.shared.config.channel.close_grace
            + REAP_MARGIN;
        let report = match tokio::time::timeout(bound, &mut task).await {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                tracing::error!(group = %self.group(), %error, "sandbox supervisor ended abnormally");
                StopReport::default()
            }
            Err(_) => {
                tracing::error!(group = %self.group(), ?bound, "sandbox supervisor did not stop in time; aborting it");
                task.abort();
                let _ = task.await;
                StopReport {
                    killed: true,
                    ..StopReport::default()
                }
            }
        };
        self.shared
            .channel
            .lock()
            .expect("channel slot lock poisoned")
            .take();
        self.shared.update(|status| {
            status.state = GroupState::Stopped;
            status.pid = None;
        });
        report
    }
}

impl Drop for GroupManager {
    fn drop(&mut self) {
        if let Ok(mut supervisor) = self.supervisor.lock()
            && let Some(task) = supervisor.take()
        {
            // Dropping the task's future drops the child's owner, which kills its group.
            task.abort();
        }
    }
}

/// Slack for reaping after SIGKILL in the stop bound.
const REAP_MARGIN: Duration = Duration::from_secs(5);

/// How one attempt (spawn to exit) ended.
enum Attempt {
    /// The child ended (or never got ready); counts against the budget.
    Ended {
        uptime: Duration,
        reason: String,
        cause: ExitCause,
    },
    /// A stop was asked for; the child is gone.
    Stopped(StopReport),
    /// A manual restart was asked for; the child is gone.
    Restart,
    /// The child speaks a protocol this host cannot; no point restarting it.
    Incompatible(String),
}

/// What the supervisor was told while it waited.
enum Command {
    Stop,
    Restart(u64),
}

async fn next_command(desired: &mut watch::Receiver<Desired>, generation: u64) -> Command {
    loop {
        match *desired.borrow_and_update() {
            Desired::Stop => return Command::Stop,
            Desired::Run(next) if next != generation => return Command::Restart(next),
            Desired::Run(_) => {}
        }
        if desired.changed().await.is_err() {
            return Command::Stop;
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Desired>,
    mut generation: u64,
) -> StopReport {
    let mut budget = RestartBudget::new(shared.config.restart.clone());
    let mut last_exit: Option<String> = None;
    // Whether the next start respawns a child that ended on its own: only those count as
    // restarts (a manual restart starts afresh, it is no crash).
    let mut respawn = false;
    loop {
        if let Err(exhausted) = budget.try_start(Instant::now()) {
            let reason = match &last_exit {
                Some(exit) => format!("{exhausted}; the last one {exit}"),
                None => exhausted.to_string(),
            };
            tracing::error!(group = %shared.group(), %reason, "sandbox group failed");
            shared.update(|status| {
                status.state = GroupState::Failed;
                status.pid = None;
                status.failure = Some(reason.clone());
            });
            match next_command(&mut desired, generation).await {
                Command::Stop => return finish_stopped(&shared, StopReport::default()),
                Command::Restart(next) => {
                    generation = next;
                    budget.forgive();
                    fresh_start(&shared);
                    continue;
                }
            }
        }
        let starts_in_window = budget.starts_in_window();
        shared.update(|status| {
            status.starts_in_window = starts_in_window;
            status.total_starts += 1;
        });
        let delay = budget.backoff();
        if !delay.is_zero() {
            shared.update(|status| {
                status.state = GroupState::Starting;
                status.pid = None;
                status.backoff_until = Some(Instant::now() + delay);
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                command = next_command(&mut desired, generation) => match command {
                    Command::Stop => return finish_stopped(&shared, StopReport::default()),
                    Command::Restart(next) => {
                        generation = next;
                        budget.forgive();
                        fresh_start(&shared);
                        continue;
                    }
                },
            }
        }
        if respawn {
            shared.update(|status| status.restarts += 1);
        }
        respawn = false;
        shared.update(|status| {
            status.state = GroupState::Starting;
            status.pid = None;
            status.backoff_until = None;
        });
        match attempt(&shared, &mut desired, generation).await {
            Attempt::Ended {
                uptime,
                reason,
                cause,
            } => {
                tracing::warn!(group = %shared.group(), %reason, ?uptime, "sandbox ended; restarting under the budget");
                budget.record_exit(uptime);
                respawn = true;
                last_exit = Some(reason.clone());
                shared.update(|status| {
                    status.state = GroupState::Starting;
                    status.pid = None;
                    status.running_since = None;
                    status.last_exit = Some(reason);
                    status.last_exit_cause = Some(cause);
                });
            }
            Attempt::Stopped(report) => return finish_stopped(&shared, report),
            Attempt::Restart => {
                generation = match *desired.borrow() {
                    Desired::Run(next) => next,
                    Desired::Stop => generation,
                };
                budget.forgive();
                fresh_start(&shared);
            }
            Attempt::Incompatible(reason) => {
                tracing::error!(group = %shared.group(), %reason, "sandbox speaks an incompatible protocol");
                shared.update(|status| {
                    status.state = GroupState::Failed;
                    status.pid = None;
                    status.running_since = None;
                    status.failure = Some(reason.clone());
                    status.last_exit = Some(reason);
                    status.last_exit_cause = Some(ExitCause::Incompatible);
                });
                match next_command(&mut desired, generation).await {
                    Command::Stop => return finish_stopped(&shared, StopReport::default()),
                    Command::Restart(next) => {
                        generation = next;
                        budget.forgive();
                        fresh_start(&shared);
                    }
                }
            }
        }
    }
}

fn fresh_start(shared: &Shared) {
    shared.update(|status| {
        status.restarts = 0;
        status.failure = None;
    });
}

fn finish_stopped(shared: &Shared, report: StopReport) -> StopReport {
    shared
        .channel
        .lock()
        .expect("channel slot lock poisoned")
        .take();
    shared.update(|status| {
        status.state = GroupState::Stopped;
        status.pid = None;
        status.protocol_version = None;
        status.running_since = None;
        status.backoff_until = None;
        if report.exit.is_some() {
            status.last_exit = report.exit.clone();
            status.last_exit_cause = Some(ExitCause::Stopped);
        }
    });
    report
}

/// One child's life: spawn, connect, handshake, run, end.
async fn attempt(
    shared: &Arc<Shared>,
    desired: &mut watch::Receiver<Desired>,
    generation: u64,
) -> Attempt {
    let config = &shared.config;
    let group = config.name.clone();
    let started = Instant::now();
    let ended = |reason: String| Attempt::Ended {
        uptime: started.elapsed(),
        reason,
        cause: ExitCause::FailedStart,
    };

    // The socket (unix transport) lives exactly as long as this attempt: dropping the listener
    // removes the socket file and its private directory on every path out of here.
    let listener = match config.transport {
        ChildTransport::Stdio => None,
        ChildTransport::Unix => match UnixSocketListener::bind_private() {
            Ok(listener) => Some(listener),
            Err(error) => return ended(format!("cannot create its socket: {error}")),
        },
    };
    let url = listener
        .as_ref()
        .map_or(TransportUrl::Stdio, UnixSocketListener::url);
    let mut confinement_paths = config.confinement_paths.clone();
    if let TransportUrl::Unix(socket) = &url {
        // Its channel: a kernel whose Landlock handles connecting to a socket by path
        // refuses it otherwise.
        confinement_paths.push((socket.clone(), PathAccess::ReadWrite));
    }
    // A factory is the embedding code's: a panic in it ends this start like any failed start,
    // rather than the supervisor task (which would leave the group hung in `starting`).
    let argv = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (shared.factory)(&group, &url)
    })) {
        Ok(argv) => argv,
        Err(_) => {
            return ended("its command could not be made: the command factory panicked".to_owned());
        }
    };
    let spec = SpawnSpec {
        group: group.clone(),
        argv,
        transport: config.transport,
        limits: config.limits.clone(),
        credentials: config.credentials,
        confinement: config.confinement,
        confinement_paths,
    };
    let (mut process, pipes) = match SandboxProcess::spawn(&spec) {
        Ok(spawned) => spawned,
        Err(error) => return ended(error.to_string()),
    };
    let pid = process.pid();
    let landlock_abi = process.landlock_abi();
    if landlock_abi == Some(0) && !shared.said_unconfined_files.swap(true, Ordering::Relaxed) {
        tracing::warn!(group = %group, "the kernel has no Landlock: the group's sandbox can read and write every file main can");
    }
    shared.update(|status| {
        status.pid = Some(pid);
        status.landlock_abi = landlock_abi;
        status.confinement = Some(process.confinement());
        status.seccomp = Some(process.seccomp());
    });

    // A stop that landed while we were spawning must not miss the child it raced.
    if let Some(command) = pending_command(desired, generation) {
        process.terminate(config.stop_grace).await;
        return command_outcome(
            command,
            StopReport {
                exit: process.try_exit().map(|s| describe_exit(&s)),
                ..StopReport::default()
            },
        );
    }

    let deadline = started + config.ready_timeout;
    let transport = match (pipes, listener.as_ref()) {
        (Some(pipes), _) => Transport::new(
            pipes.from_child,
            pipes.to_child,
            format!("stdio of pid {pid}"),
        ),
        (None, Some(listener)) => {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(transport) => transport,
                    Err(error) => {
                        process.kill().await;
                        return ended(format!("its connection could not be accepted: {error}"));
                    }
                },
                status = process.wait() => {
                    return ended(format!("{} before connecting", exit_text(status)));
                }
                () = tokio::time::sleep_until(deadline) => {
                    process.kill().await;
                    return ended(format!("did not connect within the ready timeout ({:?})", config.ready_timeout));
                }
                command = next_command(desired, generation) => {
                    process.terminate(config.stop_grace).await;
                    return command_outcome(command, StopReport { exit: process.try_exit().map(|s| describe_exit(&s)), ..StopReport::default() });
                }
            }
        }
        (None, None) => unreachable!("a unix child always has a listener"),
    };
    drop(listener);

    let (ready_tx, ready_rx) = oneshot::channel();
    let ready_slot = Arc::new(Mutex::new(Some(ready_tx)));
    let builder = shared.events.configure_channel(
        &group,
        ChannelBuilder::new(ChannelConfig {
            name: group.clone(),
            ..config.channel.clone()
        }),
    );
    let channel = builder
        .on_call::<Ready, _, _>(move |ready, _| {
            let ready_slot = Arc::clone(&ready_slot);
            async move { answer_ready(ready, pid, &ready_slot).await }
        })
        .start(transport);

    let (ready, acknowledge) = tokio::select! {
        outcome = ready_rx => match outcome {
            Ok(Ok(ready)) => ready,
            Ok(Err(incompatible)) => {
                // Let the refusal reach the child before it is stopped.
                channel.drain_inflight(Duration::from_secs(1)).await;
                channel.close().await;
                process.terminate(config.stop_grace).await;
                return Attempt::Incompatible(incompatible);
            }
            Err(_) => unreachable!("the ready sender lives in the channel's handler"),
        },
        () = tokio::time::sleep_until(deadline) => {
            channel.close().await;
            process.kill().await;
            return ended(format!("did not say ready within the ready timeout ({:?})", config.ready_timeout));
        }
        status = process.wait() => {
            channel.close().await;
            return ended(format!("{} before it was ready", exit_text(status)));
        }
        reason = channel.closed() => {
            channel.close().await;
            let exit = exit_after_close(&mut process).await;
            return ended(match exit {
                Some(exit) => format!("{exit} before it was ready"),
                None => format!("closed its channel before it was ready ({reason})"),
            });
        }
        command = next_command(desired, generation) => {
            channel.close().await;
            process.terminate(config.stop_grace).await;
            return command_outcome(command, StopReport { exit: process.try_exit().map(|s| describe_exit(&s)), ..StopReport::default() });
        }
    };

    tracing::info!(group = %group, pid, version = %ready.negotiated.peer_version, "sandbox ready");
    // The hooks run before the child gets its acknowledgement and before anyone sees the group
    // running: whatever the child sends after `ready` finds main's handlers fully in place.
    shared.events.on_ready(&group, &channel, &ready);
    *shared.channel.lock().expect("channel slot lock poisoned") = Some(channel.clone());
    shared.update(|status| {
        status.state = GroupState::Running;
        status.pid = Some(pid);
        status.protocol_version = Some(ready.negotiated.peer_version.to_string());
        status.running_since = Some(Instant::now());
    });
    let _ = acknowledge.send(());
    let running_since = Instant::now();

    let (reason, cause) = tokio::select! {
        status = process.wait() => (exit_text(status), ExitCause::Crashed),
        reason = channel.closed() => {
            // Proxies go unavailable now; the exit status (if the child is exiting) only
            // refines the reason recorded for the status.
            let closed = format!("closed its channel ({reason})");
            mark_closed(shared, &closed);
            (exit_after_close(&mut process).await.unwrap_or(closed), ExitCause::Crashed)
        }
        failure = watchdog(&channel, config.watchdog) => {
            mark_closed(shared, &failure);
            process.kill().await;
            (failure, ExitCause::Hung)
        }
        never = watch_cpu_share(pid, config.cpu_share, &group, &channel) => match never {},
        command = next_command(desired, generation) => {
            let report = stop_running(shared, &channel, &mut process).await;
            return command_outcome(command, report);
        }
    };
    mark_closed(shared, &reason);
    channel.close().await;
    process.kill().await;
    Attempt::Ended {
        uptime: running_since.elapsed(),
        reason,
        cause,
    }
}

/// How long a child whose channel closed has to exit on its own before it is killed. A child
/// that exits closes its end first, so its exit status follows within this; a child that only
/// closed its channel is killed after it.
const EXIT_AFTER_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// After the channel closed: the child's exit text if it exits within the grace, else `None`
/// (and the child is killed).
async fn exit_after_close(process: &mut SandboxProcess) -> Option<String> {
    match tokio::time::timeout(EXIT_AFTER_CLOSE_GRACE, process.wait()).await {
        Ok(status) => Some(exit_text(status)),
        Err(_) => {
            process.kill().await;
            None
        }
    }
}

/// Tells the host the running channel is gone, exactly once per attempt.
fn mark_closed(shared: &Shared, reason: &str) {
    let was_running = shared
        .channel
        .lock()
        .expect("channel slot lock poisoned")
        .take()
        .is_some();
    if was_running {
        shared.events.on_channel_closed(shared.group(), reason);
    }
}

fn pending_command(desired: &mut watch::Receiver<Desired>, generation: u64) -> Option<Command> {
    match *desired.borrow_and_update() {
        Desired::Stop => Some(Command::Stop),
        Desired::Run(next) if next != generation => Some(Command::Restart(next)),
        Desired::Run(_) => None,
    }
}

fn command_outcome(command: Command, report: StopReport) -> Attempt {
    match command {
        Command::Stop => Attempt::Stopped(report),
        Command::Restart(_) => Attempt::Restart,
    }
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => describe_exit(&status),
        Err(error) => format!("could not be waited for ({error})"),
    }
}

/// Hands the child's `ready` to the supervisor and answers it once the supervisor has run the
/// hooks (or gave up on the child).
async fn answer_ready(
    ready: Ready,
    pid: u32,
    slot: &Mutex<Option<ReadySender>>,
) -> Result<ReadyAck, RemoteError> {
    let sender = slot.lock().expect("ready slot lock poisoned").take();
    let Some(sender) = sender else {
        return Err(RemoteError::bad_request("`ready` was already received"));
    };
    // A `ready` over main's bounds is a broken sandbox: it fails like an incompatible one
    // (restarting would not help), and nothing of it is kept.
    if let Err(error) = crate::limits::check_ready(&ready) {
        let message = format!("`ready` refused: {error}");
        let _ = sender.send(Err(message.clone()));
        return Err(RemoteError::bad_request(message));
    }
    match version::negotiate(Role::Host, &ready.protocol_version, &ready.features) {
        Ok(negotiated) => {
            let ack = ReadyAck {
                protocol_version: version::PROTOCOL_VERSION.to_owned(),
                features: negotiated.features.iter().cloned().collect(),
            };
            let (done_tx, done_rx) = oneshot::channel();
            let info = ReadyInfo {
                negotiated,
                runtime: ready.runtime,
                integrations: ready.integrations,
                pid,
            };
            let _ = sender.send(Ok((info, done_tx)));
            let _ = done_rx.await;
            Ok(ack)
        }
        Err(error) => {
            let message = error.to_string();
            let _ = sender.send(Err(message.clone()));
            Err(RemoteError::new(ErrorKind::IncompatibleVersion, message))
        }
    }
}

/// Where the `ready` handler hands the child's announcement to the supervisor, with the sender
/// that releases the handler's answer.
type ReadySender = oneshot::Sender<Result<(ReadyInfo, oneshot::Sender<()>), String>>;

/// The group's CPU share watch while it runs (see [`crate::cpu_share`]), or nothing.
async fn watch_cpu_share(
    pid: u32,
    config: Option<CpuShareConfig>,
    group: &str,
    channel: &Channel,
) -> std::convert::Infallible {
    match config {
        Some(config) => {
            crate::cpu_share::watch(pid, config, group, || channel.stats().reader_rests).await
        }
        None => std::future::pending().await,
    }
}

/// Pings the sandbox forever; returns only when a ping goes unanswered in time.
async fn watchdog(channel: &Channel, config: Option<WatchdogConfig>) -> String {
    let Some(config) = config else {
        return std::future::pending().await;
    };
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(config.interval).await;
        nonce += 1;
        match channel
            .call_timeout(&wire::Ping { nonce }, config.timeout)
            .await
        {
            Ok(_) | Err(CallError::Remote { .. }) => {}
            Err(CallError::Timeout { .. }) => {
                return format!(
                    "stopped answering (no ping reply within {:?}); presumed hung",
                    config.timeout
                );
            }
            // A closed channel is reported by the exit path, not here.
            Err(CallError::Closed { .. }) => std::future::pending::<()>().await,
            // A reply that is not a pong (another type, undecodable) is no sign of life: a
            // sandbox must not switch its watchdog off by answering pings wrongly.
            Err(error) => return format!("answered a ping wrongly ({error}); presumed broken"),
        }
    }
}

/// A graceful stop of a running child: `shutdown` for its restore state, then its own exit,
/// then SIGTERM and SIGKILL as needed.
async fn stop_running(
    shared: &Shared,
    channel: &Channel,
    process: &mut SandboxProcess,
) -> StopReport {
    let grace = shared.config.stop_grace;
    let mut report = StopReport::default();
    let shutdown = wire::Shutdown {
        reason: "the host is stopping this group".to_owned(),
    };
    match channel.call_timeout(&shutdown, grace).await {
        Ok(result) => {
            report.answered = true;
            let size = result.restore_state_json.len();
            if size <= crate::store_server::MAX_VALUE_BYTES {
                report.restore_state = Some(result.restore_state_json);
            } else {
                tracing::warn!(group = %shared.group(), size, "the restore state the sandbox answered is over the store's value bound: not kept");
            }
        }
        Err(error) => {
            tracing::warn!(group = %shared.group(), %error, "sandbox did not answer shutdown")
        }
    }
    let exited_alone = report.answered && tokio::time::timeout(grace, process.wait()).await.is_ok();
    mark_closed(shared, "stopped");
    channel.close().await;
    if exited_alone {
        report.graceful = true;
        process.kill_leftovers();
    } else {
        let (_, killed) = process.terminate(grace).await;
        report.killed = killed;
    }
    report.exit = process.try_exit().map(|status| describe_exit(&status));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_proto::test_util::RawPeer;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_command_factory_fails_the_group_instead_of_hanging_it() {
        let factory: CommandFactory =
            Arc::new(|_: &str, _: &TransportUrl| -> Vec<OsString> { panic!("no such program") });
        let mut config = GroupConfig::new("g");
        config.restart.backoff_initial = Duration::from_millis(10);
        config.restart.backoff_max = Duration::from_millis(10);
        let manager = GroupManager::new(config, factory, Arc::new(NoEvents));
        let outcome = manager.ensure_started(Duration::from_secs(600)).await;
        assert!(
            matches!(outcome, Err(ManagerError::Failed { .. })),
            "{outcome:?}"
        );
        let status = manager.status();
        assert_eq!(status.state, GroupState::Failed);
        assert_eq!(status.last_exit_cause, Some(ExitCause::FailedStart));
        assert!(
            status
                .last_exit
                .as_deref()
                .is_some_and(|exit| exit.contains("command factory panicked")),
            "{status:?}"
        );
        manager.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_answered_with_another_type_fails_the_watchdog() {
        let (transport, mut peer) = RawPeer::new();
        let channel = ChannelBuilder::new(ChannelConfig::named("g")).start(transport);
        let config = WatchdogConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        };
        let watching = tokio::spawn({
            let channel = channel.clone();
            async move { watchdog(&channel, Some(config)).await }
        });
        let (id, kind, _ping): (u64, String, wire::Ping) =
            peer.recv_request().await.expect("a ping");
        assert_eq!(kind, "ping");
        peer.reply::<wire::Shutdown>(id, &wire::ShutdownResult::default())
            .await
            .expect("replied");
        let reason = tokio::time::timeout(Duration::from_secs(30), watching)
            .await
            .expect("the watchdog gave up")
            .expect("joined");
        assert!(reason.contains("answered a ping wrongly"), "{reason}");
        channel.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_watchdog_finds_a_hung_sandbox_within_eight_seconds() {
        // A peer that reads the pings and never answers: alive, hung.
        let (transport, mut peer) = RawPeer::new();
        let channel = ChannelBuilder::new(ChannelConfig::named("g")).start(transport);
        let config = WatchdogConfig::default();
        let started = Instant::now();
        let watching = tokio::spawn({
            let channel = channel.clone();
            async move { watchdog(&channel, Some(config)).await }
        });
        let (_, kind, _ping): (u64, String, wire::Ping) =
            peer.recv_request().await.expect("a ping");
        assert_eq!(kind, "ping");
        let reason = tokio::time::timeout(Duration::from_secs(60), watching)
            .await
            .expect("the watchdog gave up")
            .expect("joined");
        assert!(reason.contains("presumed hung"), "{reason}");
        let found_after = started.elapsed();
        assert!(
            found_after <= Duration::from_secs(8),
            "a hung sandbox went unnoticed for {found_after:?}"
        );
        assert_eq!(found_after, config.detection_bound());
        channel.close().await;
    }
}
