//! The command line's side of the control API: one HTTP/1.1 request per connection to the
//! hub's unix socket, JSON in and out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;

/// How long one request may take before the command gives up on the hub. Generous: a restart
/// or a flow step waits for a sandbox.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No hub answers on the socket.
    #[error("the hub is not reachable on {socket}: {source}")]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("the hub's answer broke off: {0}")]
    Http(String),
    /// The hub took longer than [`REQUEST_TIMEOUT`].
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    /// The hub answered with an error.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The hub's message.
        message: String,
    },
    /// The answer is not what this program expects (a hub of another version?).
    #[error("the hub's answer cannot be read: {0}")]
    Unreadable(String),
}

impl ClientError {
    /// Whether the hub could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// The control API at one socket.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the hub listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// `GET path`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(|error| ClientError::Unreadable(error.to_string()))
    }

    /// `GET path`, as text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.request(Method::GET, path, None).await?;
        String::from_utf8(body.to_vec()).map_err(|error| ClientError::Unreadable(error.to_string()))
    }

    /// `POST path` with a JSON body, read as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        let body = self.request(Method::POST, path, Some(body)).await?;
        serde_json::from_slice(&body).map_err(|error| ClientError::Unreadable(error.to_string()))
    }

    /// `DELETE path`, read as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::DELETE, path, None).await?;
        serde_json::from_slice(&body).map_err(|error| ClientError::Unreadable(error.to_string()))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let connection = tokio::spawn(connection);
        let bytes = body
            .map(|body| Bytes::from(body.to_string()))
            .unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hub")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?
            .to_bytes();
        connection.abort();
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status, message });
        }
        Ok(body)
    }
}
