//! Panic boundaries: where the core calls an integration's code (setup, entry setup and
//! unload, migration, removal, flow handlers and their steps), a panic is caught and becomes
//! the failure of that one operation instead of unwinding into the core's caller.
//!
//! A panic still runs the process's panic hook (which prints it), and is logged here with
//! what was running. State the panicking code held is dropped as it unwinds; the core's own
//! locks are `parking_lot` and tokio locks, which do not poison.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// Calls `start` and runs the future it returns to completion; a panic in either (integration
/// code often does work before building its future) comes back as `Err` with its message,
/// after being logged as a panic of `what` (e.g. "entry setup of demo").
pub(crate) async fn catch_panic<F, Fut>(what: &str, start: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    // Unwind safety: whatever the code shared with the core is either dropped while unwinding
    // or guarded by locks that do not poison; the operation itself is then reported as
    // failed, so nothing relies on the half-done work.
    match AssertUnwindSafe(async move { start().await })
        .catch_unwind()
        .await
    {
        Ok(output) => Ok(output),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(%what, panic = %message, "integration code panicked");
            Err(panicked(what, &message))
        }
    }
}

/// The reason recorded for a panic of `what` with `message`.
fn panicked(what: &str, message: &str) -> String {
    format!("{what} panicked: {message}")
}

/// The text a panic was raised with (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests;
