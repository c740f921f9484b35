//! The wire between main (the hub) and its sandbox subprocesses: schema, framing, RPC channel,
//! transports and protocol versioning. Both sides import this crate; nothing is mirrored by hand.
//!
//! # Layout
//! - [`wire`]: the prost types generated from `sandbox.proto` (every message of the protocol).
//! - [`messages`]: binds each message type string to its request and reply types
//!   ([`Call`], [`Push`]) and lists them all in [`messages::CATALOG`].
//! - [`framing`]: the 4-byte big-endian length prefix, the 16 MiB cap, frame encoding.
//! - [`channel`]: the RPC [`Channel`]: one reader task, one writer task, cloneable handles,
//!   bounded handler concurrency, shedding, nested calls, idempotent close.
//! - [`transport`]: stdio and unix-socket byte streams, `--url` parsing, the private listening
//!   socket that removes itself on drop.
//! - [`version`]: the protocol version, features, and the compatibility check of the handshake.
//! - [`error`]: [`RemoteError`], the typed error that crosses the wire.
//! - [`json`]: the one place dynamic payloads become JSON bytes and back.
//! - [`log_limit`]: the log budget of every log line about what a peer sent.
//! - [`test_util`]: in-memory peers with fault injection, for tests of both sides.

pub mod channel;
pub mod error;
pub mod framing;
pub mod json;
pub mod log_limit;
pub mod messages;
#[doc(hidden)]
pub mod test_util;
pub mod transport;
pub mod version;

/// The prost types generated from `sandbox.proto`; see that file for every field's meaning.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/sandbox.v1.rs"));
}

pub use channel::{CallError, Channel, ChannelBuilder, ChannelConfig, ChannelStats, CloseReason};
pub use error::RemoteError;
pub use messages::{Call, Push};
pub use transport::{Transport, TransportError, TransportUrl, UnixSocketListener};
pub use version::{Negotiated, PROTOCOL_VERSION, Role, VersionError};
