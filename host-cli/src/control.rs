//! The hub's control API: one axum router with the hub's status and its controls (groups,
//! entries, config flows), served on a unix socket that only the hub's own user (or root) may
//! use. A request arriving over it is trusted: the socket file is 0600 and every connection's
//! peer credentials are checked (`SO_PEERCRED`) before a byte of it is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use homecore::{ConfigEntryError, Core, FlowContext, FlowError};
use sandbox_host::plugin::SandboxPlugin;
use sandbox_host::report::{GroupReport, group_reports};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::net::{UnixListener, UnixStream};

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The control socket's file name in the config dir.
pub const SOCKET_FILE_NAME: &str = "control.sock";

/// Refused connections logged per [`REFUSAL_LOG_WINDOW`]; the rest are counted only.
const REFUSAL_LOG_LINES: u64 = 5;

/// The window of [`REFUSAL_LOG_LINES`].
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Where the control socket of the hub whose config dir is `dir` lives: `DIR/control.sock`
/// when that path fits in `sun_path`; otherwise a name derived from the dir's path under
/// `$XDG_RUNTIME_DIR` (private to the user), or under `/tmp` as a last resort.
pub fn default_socket_path(dir: &Path) -> PathBuf {
    let beside = dir.join(SOCKET_FILE_NAME);
    if beside.as_os_str().len() <= MAX_SOCKET_PATH_BYTES {
        return beside;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let tag: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let name = format!("sandbox-host-{tag}.sock");
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join(name),
        _ => {
            PathBuf::from("/tmp").join(format!("sandbox-host-{}-{tag}.sock", nix::unistd::getuid()))
        }
    }
}

/// Whether a peer with user id `peer_uid` may use the control socket of a hub running as
/// `own_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The path does not fit in `sun_path`.
    #[error(
        "the control socket path {path} is {len} bytes, more than the {max} a unix socket takes"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A hub answers on it already.
    #[error("another hub is running: it answers on {0}")]
    InUse(PathBuf),
    /// An I/O error.
    #[error("cannot open the control socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The control socket: a unix listener that hands axum only connections from allowed peers.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
    refused: Arc<AtomicU64>,
    logged: (Instant, u64),
}

impl ControlListener {
    /// Binds the socket at `path` with mode 0600. A stale socket file (no hub answers on it) is
    /// replaced; a live one is [`BindError::InUse`].
    pub async fn bind(path: &Path) -> Result<Self, BindError> {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH_BYTES {
            return Err(BindError::PathTooLong {
                path: path.to_owned(),
                len,
                max: MAX_SOCKET_PATH_BYTES,
            });
        }
        let io = |source| BindError::Io {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(BindError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // The window between bind and chmod is covered by the peer check on every connection.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            own_uid: nix::unistd::getuid().as_raw(),
            refused: Arc::new(AtomicU64::new(0)),
            logged: (Instant::now(), 0),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections refused for their peer's user, so far.
    pub fn refused(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.refused)
    }

    fn note_refusal(&mut self, peer: Option<u32>) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if self.logged.0.elapsed() >= REFUSAL_LOG_WINDOW {
            self.logged = (Instant::now(), 0);
        }
        if self.logged.1 < REFUSAL_LOG_LINES {
            self.logged.1 += 1;
            match peer {
                Some(uid) => tracing::warn!(
                    uid,
                    total,
                    "control socket: refused a connection from another user"
                ),
                None => tracing::warn!(
                    total,
                    "control socket: refused a connection whose peer is unknown"
                ),
            }
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl axum::serve::Listener for ControlListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(peer) if peer_allowed(peer.uid(), self.own_uid) => return (stream, addr),
                    Ok(peer) => self.note_refusal(Some(peer.uid())),
                    Err(_) => self.note_refusal(None),
                },
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The hub as the control API sees it.
#[derive(Clone)]
pub struct Hub {
    /// Main's core.
    pub core: Core,
    /// The sandbox plugin installed in it.
    pub plugin: Arc<SandboxPlugin>,
    /// The config dir.
    pub config_dir: PathBuf,
    /// When the hub started.
    pub started: Instant,
    /// Connections the control socket refused for their peer's user.
    pub control_refusals: Arc<AtomicU64>,
    /// Where the HTTP API listens, when it does.
    pub http_address: Option<std::net::SocketAddr>,
}

/// What `GET /api/hub/status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HubStatus {
    /// The program's version.
    pub version: String,
    /// The hub's pid.
    pub pid: u32,
    /// Seconds since the hub started.
    pub uptime_seconds: f64,
    /// The config dir.
    pub config_dir: PathBuf,
    /// Connections the control socket refused for their peer's user.
    pub control_refusals: u64,
    /// Where the HTTP API listens (`host:port`), when it does.
    #[serde(default)]
    pub http_address: Option<String>,
    /// The WebSocket API's connections.
    #[serde(default)]
    pub websocket: WebSocketReport,
    /// Every group.
    pub groups: Vec<GroupReport>,
}

/// The WebSocket API's connections, as `status` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WebSocketReport {
    /// Open now.
    pub open: usize,
    /// Accepted since the hub started (authenticated or not).
    pub accepted: u64,
    /// Ended, per reason (`client_closed`, `auth_invalid`, `slow_consumer`, ...), the reasons
    /// that ended none left out.
    pub disconnections: BTreeMap<String, u64>,
}

/// The WebSocket API's counters now.
fn websocket_report() -> WebSocketReport {
    use crate::api::websocket::{Disconnect, STATS};
    WebSocketReport {
        open: STATS.open_connections(),
        accepted: STATS.accepted(),
        disconnections: Disconnect::ALL
            .iter()
            .map(|reason| (reason.as_str().to_owned(), STATS.disconnections(*reason)))
            .filter(|(_, count)| *count > 0)
            .collect(),
    }
}

/// One config entry, as `GET /api/hub/entries` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryReport {
    /// Its id.
    pub entry_id: String,
    /// Its integration.
    pub domain: String,
    /// Its title.
    pub title: String,
    /// Its state (`loaded`, `setup_error`, `setup_retry`, `not_loaded`, ...).
    pub state: String,
    /// Why it is in that state, when it says.
    pub reason: Option<String>,
    /// The sandbox group it runs in; none when it runs on main.
    pub group: Option<String>,
}

/// An error answer: a status and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> Self {
        let status = match &error {
            FlowError::UnknownHandler(_)
            | FlowError::UnknownFlow(_)
            | FlowError::UnknownStep { .. } => StatusCode::NOT_FOUND,
            FlowError::InvalidData(_) | FlowError::NotAllowed(_) | FlowError::Abort { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

impl From<ConfigEntryError> for ApiError {
    fn from(error: ConfigEntryError) -> Self {
        Self(StatusCode::CONFLICT, error.to_string())
    }
}

/// The control routes; `api` serves them with the Home Assistant routes, on the control
/// socket and, behind a token, on TCP.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/api/hub/status", get(status))
        .route("/api/hub/entries", get(entries))
        .route("/api/hub/entries/{entry_id}/reload", post(reload_entry))
        .route("/api/hub/groups/{group}/{action}", post(control_group))
        .route("/api/hub/flows", post(start_flow))
        .route("/api/hub/flows/{flow_id}", post(continue_flow))
        .route("/api/hub/flows/{flow_id}", delete(abort_flow))
        .route("/metrics", get(metrics))
        .with_state(hub)
}

/// The hub's status now.
pub fn hub_status(hub: &Hub) -> HubStatus {
    HubStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_seconds: hub.started.elapsed().as_secs_f64(),
        config_dir: hub.config_dir.clone(),
        control_refusals: hub.control_refusals.load(Ordering::Relaxed),
        http_address: hub.http_address.map(|address| address.to_string()),
        websocket: websocket_report(),
        groups: group_reports(hub.plugin.groups()),
    }
}

async fn status(State(hub): State<Hub>) -> Json<HubStatus> {
    Json(hub_status(&hub))
}

async fn metrics(State(hub): State<Hub>) -> Result<Response, ApiError> {
    let text = crate::metrics::encode(&hub_status(&hub)).map_err(|error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {error}"),
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

async fn entries(State(hub): State<Hub>) -> Json<Vec<EntryReport>> {
    Json(
        hub.core
            .config_entries()
            .entries(None)
            .into_iter()
            .map(|entry| EntryReport {
                state: entry.state.as_str().to_owned(),
                reason: entry.reason.clone(),
                group: entry.sandbox.clone(),
                entry_id: entry.entry_id,
                domain: entry.domain,
                title: entry.title,
            })
            .collect(),
    )
}

async fn reload_entry(
    State(hub): State<Hub>,
    UrlPath(entry_id): UrlPath<String>,
) -> Result<Json<EntryReport>, ApiError> {
    let entries = hub.core.config_entries();
    if entries.entry(&entry_id).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no config entry {entry_id:?}"),
        ));
    }
    entries.reload(&entry_id).await?;
    let entry = entries.entry(&entry_id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("the config entry {entry_id:?} was removed while it reloaded"),
        )
    })?;
    Ok(Json(EntryReport {
        state: entry.state.as_str().to_owned(),
        reason: entry.reason.clone(),
        group: entry.sandbox.clone(),
        entry_id: entry.entry_id,
        domain: entry.domain,
        title: entry.title,
    }))
}

async fn control_group(
    State(hub): State<Hub>,
    UrlPath((group, action)): UrlPath<(String, String)>,
) -> Result<Json<GroupReport>, ApiError> {
    let groups = hub.plugin.groups();
    let Some(handle) = groups.get(&group) else {
        let known = groups.names().join(", ");
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no group {group:?} (groups: {known})"),
        ));
    };
    match action.as_str() {
        // A start clears a failed state and the budget, as `systemctl reset-failed` + start;
        // a group already running or starting is left alone.
        "start" => {
            hub.plugin.start_group(&group).await;
        }
        "restart" => handle.manager.restart().await,
        "stop" => {
            handle.manager.stop().await;
        }
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no group action {other:?} (start, stop, restart)"),
            ));
        }
    }
    group_reports(groups)
        .into_iter()
        .find(|report| report.name == group)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no group {group:?}")))
}

/// `POST /api/hub/flows`: `{"handler": "demo"}`.
#[derive(Debug, Deserialize)]
struct StartFlow {
    handler: String,
    #[serde(default)]
    data: Option<Map<String, Value>>,
}

async fn start_flow(
    State(hub): State<Hub>,
    Json(request): Json<StartFlow>,
) -> Result<Json<homecore::FlowResult>, ApiError> {
    let result = hub
        .core
        .config_entries()
        .flow()
        .init(&request.handler, FlowContext::new("user"), request.data)
        .await?;
    Ok(Json(result))
}

async fn continue_flow(
    State(hub): State<Hub>,
    UrlPath(flow_id): UrlPath<String>,
    Json(data): Json<Map<String, Value>>,
) -> Result<Json<homecore::FlowResult>, ApiError> {
    let result = hub
        .core
        .config_entries()
        .flow()
        .configure(&flow_id, Some(data))
        .await?;
    Ok(Json(result))
}

async fn abort_flow(
    State(hub): State<Hub>,
    UrlPath(flow_id): UrlPath<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    hub.core.config_entries().flow().abort(&flow_id).await?;
    Ok(Json(BTreeMap::from([("aborted".to_owned(), flow_id)])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_own_user_or_root_may_connect() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000), "root");
        assert!(!peer_allowed(1001, 1000), "another user");
        assert!(!peer_allowed(65534, 0), "nobody, to a hub run as root");
    }

    #[test]
    fn a_socket_path_too_long_for_sun_path_moves_out_of_the_config_dir() {
        let short = Path::new("/srv/hub");
        assert_eq!(default_socket_path(short), short.join(SOCKET_FILE_NAME));
        let long = PathBuf::from(format!("/srv/{}", "d".repeat(120)));
        let moved = default_socket_path(&long);
        assert!(
            moved.as_os_str().len() <= MAX_SOCKET_PATH_BYTES,
            "{moved:?}"
        );
        assert!(!moved.starts_with(&long));
        assert_eq!(
            moved,
            default_socket_path(&long),
            "the same dir, the same socket"
        );
    }

    /// One raw HTTP/1.1 exchange over the socket, as the hub's own user.
    async fn get_root(path: &Path) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = UnixStream::connect(path).await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
            .await
            .expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("reads");
        answer
    }

    #[tokio::test]
    async fn a_peer_of_another_user_is_dropped_before_a_byte_is_served() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SOCKET_FILE_NAME);
        let listener = ControlListener::bind(&path).await.expect("binds");
        let refused = listener.refused();
        let app = Router::new().route("/", get(|| async { "served" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(
            get_root(&path).await.ends_with("served"),
            "the hub's own user is served"
        );
        if nix::unistd::geteuid().is_root() {
            // Open the file and its dir to everyone, so that only the credential check stands
            // between another user and the API; then connect as `nobody`.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod dir");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                .expect("chmod socket");
            let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"GET / HTTP/1.1\r\nhost: hub\r\n\r\n")
    print(len(s.recv(4096)))
except (ConnectionResetError, BrokenPipeError):
    print(0)
"#;
            let output = tokio::process::Command::new("python3")
                .arg("-c")
                .arg(script)
                .arg(&path)
                .uid(65534)
                .gid(65534)
                .output()
                .await
                .expect("python3 runs");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                "0",
                "another user's connection is closed unanswered: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(refused.load(Ordering::Relaxed), 1);
            assert!(
                get_root(&path).await.ends_with("served"),
                "and the hub still serves"
            );
        }
        server.abort();
    }

    #[tokio::test]
    async fn the_socket_is_the_owners_only_and_a_live_one_is_not_taken_over() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SOCKET_FILE_NAME);
        let listener = ControlListener::bind(&path).await.expect("binds");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            ControlListener::bind(&path).await,
            Err(BindError::InUse(_))
        ));
        drop(listener);
        assert!(!path.exists(), "removed with the listener");
        // A stale file (nobody listening) is replaced.
        std::fs::write(&path, b"").expect("writes");
        let again = ControlListener::bind(&path)
            .await
            .expect("replaces a stale file");
        drop(again);
    }
}
