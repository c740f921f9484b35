//! Runs one shell command as a real subprocess: `/bin/sh -c`, its own process group, a timeout,
//! output capped at [`MAX_OUTPUT_BYTES`], and nothing left running or unreaped afterwards.

use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The shell every command runs in (Home Assistant runs commands with `shell=True`, i.e. `/bin/sh -c`).
pub const SHELL: &str = "/bin/sh";
/// Most bytes of a command's standard output kept; the rest is read and discarded so the command
/// never blocks on a full pipe. 64 KiB holds any sensible sensor reading many times over.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Most bytes of a command's standard error kept for the error message of a failed command.
pub const MAX_STDERR_BYTES: usize = 4 * 1024;
/// Size of one read from a command's pipes.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// What a command that ran to the end produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Its standard output (lossy UTF-8), at most [`MAX_OUTPUT_BYTES`].
    pub stdout: String,
    /// Whether standard output was cut at [`MAX_OUTPUT_BYTES`].
    pub truncated: bool,
    /// Its standard error (lossy UTF-8), at most [`MAX_STDERR_BYTES`], for error messages.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// This output when the command succeeded, else a [`CommandError::Failed`] naming `command`.
    pub fn into_success(self, command: &str) -> Result<Self, CommandError> {
        if self.success() {
            return Ok(self);
        }
        Err(CommandError::Failed {
            command: command.to_owned(),
            exit_code: self.exit_code,
            stderr: self.stderr.trim().to_owned(),
        })
    }
}

/// Why a command produced no usable output.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The shell could not be started.
    #[error("could not start {SHELL} for command {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The command ran longer than its timeout; its whole process group was killed.
    #[error("command {command:?} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout it exceeded.
        timeout: Duration,
    },
    /// Reading the command's output or waiting for it failed.
    #[error("command {command:?} could not be read or awaited: {source}")]
    Io {
        /// The command.
        command: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The command exited with a non-zero code or was ended by a signal.
    #[error("command {command:?} failed ({}){}", exit_text(*.exit_code), stderr_text(.stderr))]
    Failed {
        /// The command.
        command: String,
        /// Its exit code; `None` when a signal ended it.
        exit_code: Option<i32>,
        /// The start of its standard error.
        stderr: String,
    },
}

fn exit_text(exit_code: Option<i32>) -> String {
    match exit_code {
        Some(code) => format!("exit code {code}"),
        None => "ended by a signal".to_owned(),
    }
}

fn stderr_text(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Runs commands; the integration's seam so polling tests can run with paused time and no
/// subprocess, while [`ShellRunner`] runs real ones.
pub trait CommandRunner: Send + Sync + 'static {
    /// Runs `command`, giving up (and killing it) after `timeout`.
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<CommandOutput, CommandError>>;
}

/// The real runner: [`run_shell`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellRunner;

impl CommandRunner for ShellRunner {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<CommandOutput, CommandError>> {
        let command = command.to_owned();
        Box::pin(async move { run_shell(&command, timeout).await })
    }
}

/// Kills a command's whole process group when dropped, so neither the shell nor anything it
/// started outlives the command (a timed-out `sh -c 'sleep 100'` would otherwise leave `sleep`).
struct ProcessGroupGuard {
    /// The group's id: the shell's pid (it was started as the group's leader).
    pgid: Option<Pid>,
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is already empty) is the common, harmless outcome.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Reads `reader` to its end, keeping at most `cap` bytes; says whether anything was dropped.
async fn read_capped<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0_u8; READ_CHUNK_BYTES];
    loop {
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Ok((kept, truncated));
        }
        let room = cap.saturating_sub(kept.len());
        if read > room {
            truncated = true;
        }
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
}

/// Runs `command` with `/bin/sh -c` in a process group of its own, reads its output (capped)
/// and waits for it, all within `timeout`. On timeout the group is killed and the shell reaped
/// before returning; when the shell exits, whatever it left running in its group is killed too.
pub async fn run_shell(command: &str, timeout: Duration) -> Result<CommandOutput, CommandError> {
    let mut child = tokio::process::Command::new(SHELL)
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    let group = ProcessGroupGuard {
        pgid: child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw),
    };
    let io_error = |source| CommandError::Io {
        command: command.to_owned(),
        source,
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io_error(std::io::Error::other(
            "the command's pipes are missing",
        )));
    };
    let finished = tokio::time::timeout(timeout, async {
        tokio::join!(
            read_capped(stdout, MAX_OUTPUT_BYTES),
            read_capped(stderr, MAX_STDERR_BYTES),
            child.wait(),
        )
    })
    .await;
    match finished {
        Ok((stdout, stderr, status)) => {
            let status = status.map_err(io_error)?;
            let (stdout, truncated) = stdout.map_err(io_error)?;
            let (stderr, _) = stderr.map_err(io_error)?;
            Ok(CommandOutput {
                exit_code: status.code(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                truncated,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        }
        Err(_elapsed) => {
            // Kill the group while the shell is still unreaped (its pid cannot be reused yet),
            // then reap the shell so no zombie is left.
            drop(group);
            if let Err(err) = child.kill().await {
                tracing::debug!(%err, command, "timed-out command was already gone");
            }
            Err(CommandError::Timeout {
                command: command.to_owned(),
                timeout,
            })
        }
    }
}
