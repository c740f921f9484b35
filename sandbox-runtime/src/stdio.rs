//! Protects the stdio channel from integration output: the real stdout is moved aside for the
//! channel and fd 1 is pointed at stderr, so a stray print lands in the log instead of
//! corrupting a frame; fd 0 is pointed at /dev/null so nothing else can read the channel's input.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The channel's ends, taken from the process's stdin and stdout.
#[derive(Debug)]
pub struct ChannelFds {
    /// Frames from main (was fd 0).
    pub input: OwnedFd,
    /// Frames to main (was fd 1).
    pub output: OwnedFd,
}

/// Why stdio could not be taken over.
#[derive(Debug, thiserror::Error)]
#[error("cannot take over stdio for the channel: {action}: {source}")]
pub struct StdioError {
    /// What was being done.
    action: &'static str,
    /// The OS error.
    #[source]
    source: io::Error,
}

fn fail(action: &'static str) -> impl FnOnce(io::Error) -> StdioError {
    move |source| StdioError { action, source }
}

/// Moves stdin and stdout aside for the channel. Call once, before any integration code runs.
pub fn take_stdio_for_channel() -> Result<ChannelFds, StdioError> {
    let input = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(fail("duplicating stdin"))?;
    let output = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(fail("duplicating stdout"))?;
    nix::unistd::dup2_stdout(io::stderr())
        .map_err(|errno| fail("pointing stdout at stderr")(errno.into()))?;
    let null = File::open("/dev/null").map_err(fail("opening /dev/null"))?;
    nix::unistd::dup2_stdin(&null)
        .map_err(|errno| fail("pointing stdin at /dev/null")(errno.into()))?;
    Ok(ChannelFds { input, output })
}
