//! `sandbox-host run`: the long-lived hub. Main's core on the config dir's stores, the sandbox
//! plugin, every stored entry set up, the control socket, and a clean stop on SIGTERM or SIGINT
//! (a second SIGINT stops at once).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use homecore::{Core, CoreConfig};
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use tokio::signal::unix::{SignalKind, signal};

use crate::api::auth::Gate;
use crate::api::{self, ApiState};
use crate::control::{ControlListener, Hub};
use crate::tokens::TokenStore;

/// How long the hub waits for its groups and its core to stop after SIGTERM or the first
/// SIGINT, on top of the longest group stop grace, before it gives up on a clean stop.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(10);

/// The exit code of a stop forced by a second SIGINT (128 + SIGINT, as a shell reports it).
pub const FORCED_STOP_EXIT_CODE: u8 = 130;

/// What `run` needs, from the command line and the configuration file.
pub struct RunOptions {
    /// The config dir: `.storage` (the core's stores) and the groups' folders live in it.
    pub config_dir: PathBuf,
    /// Where the control socket listens.
    pub control_socket: PathBuf,
    /// Where the HTTP API listens (a token needed); `None` serves it on the control socket
    /// only.
    pub http: Option<std::net::SocketAddr>,
    /// How the groups run.
    pub groups: GroupsConfig,
    /// The custom integrations, verified.
    pub custom: Vec<sandbox_host::router::CustomIntegration>,
}

/// How a run ended.
pub enum RunEnd {
    /// Stopped cleanly after a signal.
    Stopped,
    /// A second SIGINT cut the stop short.
    Forced,
    /// The groups and the core did not stop within the grace; what was left is killed with the
    /// hub.
    GraceExceeded,
}

/// The exit code of a stop that outlasted its grace.
pub const GRACE_EXCEEDED_EXIT_CODE: u8 = 1;

/// The built-in sandbox runtime's command: this program's hidden `run-sandbox`.
pub fn runtime_command() -> Result<Vec<OsString>> {
    let this = std::env::current_exe().context("cannot find this program")?;
    Ok(vec![this.into_os_string(), OsString::from("run-sandbox")])
}

/// Runs the hub until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<RunEnd> {
    let started = Instant::now();
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let stop_grace = options.groups.group_defaults.stop_grace.max(
        options
            .groups
            .group_overrides
            .values()
            .map(|group| group.stop_grace)
            .max()
            .unwrap_or_default(),
    );

    let core = Core::builder(CoreConfig::new(&options.config_dir))
        .integrations(integrations::builtin())
        .build()
        .context("cannot build the core")?;
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: options.groups,
            custom: options.custom,
        },
    );
    // The control socket is up before the entries are set up, so a slow start can be watched.
    let listener = ControlListener::bind(&options.control_socket).await?;
    let socket = listener.path().to_owned();
    let tcp = match options.http {
        Some(address) => {
            let tcp = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for the HTTP API on {address}"))?;
            Some(tcp)
        }
        None => None,
    };
    let http_address = tcp.as_ref().and_then(|tcp| tcp.local_addr().ok());
    let hub = Hub {
        core: core.clone(),
        plugin: Arc::clone(&plugin),
        config_dir: options.config_dir.clone(),
        started,
        control_refusals: listener.refused(),
        http_address,
    };
    let api = ApiState {
        hub,
        gate: Gate::new(TokenStore::new(&options.config_dir)),
    };
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut watch: tokio::sync::watch::Receiver<bool>| async move {
        let _ = watch.wait_for(|stop| *stop).await;
    };
    let mut servers = vec![tokio::spawn({
        let router = api::for_control_socket(api.clone());
        let stopped = stopped(serving_stopped.clone());
        async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(stopped);
            if let Err(error) = serve.await {
                tracing::error!(%error, "the control socket stopped serving");
            }
        }
    })];
    if let (Some(tcp), Some(address)) = (tcp, http_address) {
        tracing::info!(%address, "HTTP API listening (a token is needed)");
        let router = api::for_network(api.clone());
        let stopped = stopped(serving_stopped.clone());
        servers.push(tokio::spawn(async move {
            use axum::serve::ListenerExt as _;
            let serve = axum::serve(
                api::NetworkListener::new(tcp).tap_io(|_| {}),
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped);
            if let Err(error) = serve.await {
                tracing::error!(%error, "the HTTP API stopped serving");
            }
        }));
    }
    tracing::info!(
        config_dir = %options.config_dir.display(),
        control_socket = %socket.display(),
        "hub starting"
    );

    let starting = core.start();
    tokio::pin!(starting);
    let signal_name = tokio::select! {
        result = &mut starting => {
            result.context("the core did not start")?;
            let entries = core.config_entries().entries(None).len();
            tracing::info!(entries, took = ?started.elapsed(), "hub running");
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        }
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };

    let grace = stop_grace + SHUTDOWN_MARGIN;
    tracing::info!(
        signal = signal_name,
        ?grace,
        "hub stopping: every group in parallel"
    );
    let stopping = async {
        let reports = plugin.stop().await;
        if let Err(error) = core.stop().await {
            tracing::error!(%error, "the core did not stop cleanly");
        }
        plugin.uninstall();
        reports
    };
    let end = tokio::select! {
        finished = tokio::time::timeout(grace, stopping) => {
            match finished {
                Ok(reports) => {
                    for (group, report) in reports {
                        tracing::info!(group, graceful = report.graceful, exit = ?report.exit, "group stopped");
                    }
                    tracing::info!("hub stopped");
                    RunEnd::Stopped
                }
                Err(_) => {
                    tracing::error!(?grace, "the hub did not stop within its grace; what is left dies with it");
                    RunEnd::GraceExceeded
                }
            }
        }
        _ = interrupt.recv() => {
            tracing::warn!("second SIGINT: stopping at once");
            RunEnd::Forced
        }
    };
    let _ = stop_serving.send(true);
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
    // A forced stop leaves the groups' children to the parent-death signal each was given.
    let _ = std::fs::remove_file(&socket);
    Ok(end)
}
