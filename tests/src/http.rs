//! One HTTP/1.1 exchange with a hub's API, for the tests that drive it over TCP.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::hub::HANG_GUARD;

/// One HTTP/1.1 exchange: the status and the body (JSON when it parses, else a string).
///
/// # Panics
/// When the hub cannot be reached or does not answer within [`HANG_GUARD`]: the test cannot go on.
pub async fn request(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the hub's API accepts a connection");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 handshake");
    let driver = tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", address);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("a well-formed request");
    let response = tokio::time::timeout(HANG_GUARD, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an HTTP response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the response's body")
        .to_bytes();
    driver.abort();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}
