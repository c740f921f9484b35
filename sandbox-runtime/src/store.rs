//! The store backend of a sandbox's private core: every load, save (delayed and final-write
//! saves included, since the core funnels them all through its backend) and remove is a call to
//! main, which keeps the group's files.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use homecore::{StoreBackend, StoreEnvelope, StoreError, StoreKey};
use sandbox_proto::Channel;
use sandbox_proto::wire::{StoreLoad, StoreRemove, StoreSave};

/// How long one store call may take before the core sees an IO error (main writes a file;
/// this only guards against a wedged main).
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Routes store IO to main over the channel. The channel is attached once it exists (the core
/// is built before the channel so the channel's handlers can reach the core).
#[derive(Debug, Clone, Default)]
pub struct ChannelStoreBackend {
    /// The channel to main, set once at start.
    channel: Arc<OnceLock<Channel>>,
}

impl ChannelStoreBackend {
    /// A backend with no channel yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches the channel; later calls are ignored.
    pub fn attach(&self, channel: Channel) {
        let _ = self.channel.set(channel);
    }

    fn channel(&self, key: &StoreKey) -> Result<&Channel, StoreError> {
        self.channel
            .get()
            .ok_or_else(|| backend_error(key, "the channel to main is not open yet"))
    }
}

fn backend_error(key: &StoreKey, message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        key: key.as_str().to_owned(),
        message: message.into(),
    }
}

fn call_error(key: &StoreKey, error: sandbox_proto::CallError) -> StoreError {
    backend_error(key, format!("main did not store it: {error}"))
}

impl StoreBackend for ChannelStoreBackend {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>> {
        Box::pin(async move {
            let channel = self.channel(key)?;
            let request = StoreLoad {
                key: key.as_str().to_owned(),
            };
            let result = channel
                .call_timeout(&request, STORE_CALL_TIMEOUT)
                .await
                .map_err(|error| call_error(key, error))?;
            match result.envelope_json {
                None => Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
                    backend_error(key, format!("main sent an unreadable envelope: {error}"))
                }),
            }
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        envelope: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let channel = self.channel(key)?;
            let envelope_json = serde_json::to_vec(envelope).map_err(|error| {
                backend_error(key, format!("cannot encode the envelope: {error}"))
            })?;
            let request = StoreSave {
                key: key.as_str().to_owned(),
                envelope_json: envelope_json.into(),
            };
            channel
                .call_timeout(&request, STORE_CALL_TIMEOUT)
                .await
                .map_err(|error| call_error(key, error))?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let channel = self.channel(key)?;
            let request = StoreRemove {
                key: key.as_str().to_owned(),
            };
            channel
                .call_timeout(&request, STORE_CALL_TIMEOUT)
                .await
                .map_err(|error| call_error(key, error))?;
            Ok(())
        })
    }
}
