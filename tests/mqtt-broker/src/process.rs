//! [`Broker`]: one broker process on a port of its own, whatever its kind, spawned and
//! watched through one path: spawn, wait until it answers a CONNECT, kill and reap.

use std::ffi::OsString;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::raw::{ConnectOptions, RawClient};
use crate::{
    BIND_RETRY, BrokerError, BrokerKind, BrokerOptions, PORT_PLACEHOLDER, READY_TIMEOUT,
    embedded_broker_command, mosquitto,
};

/// The longest a single readiness CONNECT waits for its CONNACK.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two readiness attempts.
const READY_POLL: Duration = Duration::from_millis(20);
/// The pause before starting again a broker that exited at once.
const RESPAWN_PAUSE: Duration = Duration::from_millis(100);
/// How many of its last stderr lines a [`BrokerError::NotReady`] quotes.
const STDERR_TAIL_LINES: usize = 20;

/// A broker process listening on 127.0.0.1:[`Broker::port`].
///
/// Blocking throughout: from async code, start and restart it in `spawn_blocking`. Dropping
/// it kills and reaps the process and removes its private directory (its stderr, and
/// Mosquitto's configuration).
#[derive(Debug)]
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    /// The program and its arguments, [`PORT_PLACEHOLDER`] not yet replaced.
    command: Vec<OsString>,
    /// What the readiness check logs in with.
    credentials: Option<(String, String)>,
    /// The running process; `None` once stopped.
    child: Option<Child>,
    /// Private (0700): the process's stderr, Mosquitto's configuration and password file.
    dir: TempDir,
}

impl Broker {
    /// A broker of `kind` anyone may connect to, on a free port, ready.
    pub fn start(kind: BrokerKind) -> Result<Self, BrokerError> {
        Self::start_with(kind, BrokerOptions::default())
    }

    /// A broker of `kind` set up with `options`, on a free port, ready.
    pub fn start_with(kind: BrokerKind, options: BrokerOptions) -> Result<Self, BrokerError> {
        let dir = private_dir()?;
        let port = free_port()?;
        let command = match kind {
            BrokerKind::Embedded => embedded_broker_command(&options)?,
            BrokerKind::Mosquitto => mosquitto::prepare(dir.path(), port, &options)?,
        };
        Self::launch(kind, command, &options, dir, port)
    }

    /// A broker run by `command` (program first; [`PORT_PLACEHOLDER`] in any argument is
    /// replaced by the port), on a free port, ready: how a binary runs the embedded broker
    /// from its own executable, e.g. `[current_exe, "mqtt-broker"] + serve_arguments(..)`
    /// for a subcommand calling [`crate::serve`]. `options` must match what the command sets
    /// up: the readiness check logs in as its first user.
    pub fn start_command(
        kind: BrokerKind,
        command: Vec<OsString>,
        options: &BrokerOptions,
    ) -> Result<Self, BrokerError> {
        Self::launch(kind, command, options, private_dir()?, free_port()?)
    }

    fn launch(
        kind: BrokerKind,
        command: Vec<OsString>,
        options: &BrokerOptions,
        dir: TempDir,
        port: u16,
    ) -> Result<Self, BrokerError> {
        if command.is_empty() {
            return Err(BrokerError::EmptyCommand);
        }
        let mut broker = Self {
            kind,
            port,
            command,
            credentials: options.users.first().cloned(),
            child: None,
            dir,
        };
        broker.spawn_ready()?;
        Ok(broker)
    }

    /// Its port on 127.0.0.1, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host it listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `host:port`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// Which broker runs.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The process's id while it runs; `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL, so clients see their connections drop with no goodbye)
    /// and reaps it. Retained messages and sessions are gone with it. The port is kept for
    /// [`Self::start_again`]; nothing listens on it meanwhile.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process if it runs ([`Self::stop`]) and starts it again on the same port,
    /// ready when this returns.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.stop();
        self.spawn_ready()
    }

    /// Starts a stopped (or crashed) broker again on the same port, ready when this returns;
    /// does nothing to one that runs.
    pub fn start_again(&mut self) -> Result<(), BrokerError> {
        if let Some(child) = self.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        self.restart()
    }

    /// Its private directory (its stderr, Mosquitto's configuration), removed on drop.
    pub fn private_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The last lines the current (or last) process wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
    }

    fn stderr_path(&self) -> std::path::PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Spawns the process and waits until it answers a CONNECT; one that exits at once (its
    /// port briefly unavailable, say) is started again for up to [`BIND_RETRY`].
    fn spawn_ready(&mut self) -> Result<(), BrokerError> {
        let started = Instant::now();
        loop {
            let mut child = self.spawn()?;
            match self.wait_ready(&mut child, started + READY_TIMEOUT) {
                Ok(()) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(NotReady::Exited(_)) if started.elapsed() < BIND_RETRY => {
                    std::thread::sleep(RESPAWN_PAUSE);
                }
                Err(not_ready) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BrokerError::NotReady {
                        kind: self.kind,
                        port: self.port,
                        waited: started.elapsed(),
                        why: not_ready.to_string(),
                        stderr_tail: self.stderr_tail(),
                    });
                }
            }
        }
    }

    fn spawn(&self) -> Result<Child, BrokerError> {
        let stderr_path = self.stderr_path();
        let stderr = File::create(&stderr_path).map_err(|source| BrokerError::Io {
            what: format!("the broker's stderr file {}", stderr_path.display()),
            source,
        })?;
        let mut arguments = self
            .command
            .iter()
            .map(|argument| with_port(argument, self.port));
        let program = arguments.next().ok_or(BrokerError::EmptyCommand)?;
        Command::new(&program)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                program: program.to_string_lossy().into_owned(),
                source,
            })
    }

    /// Waits until `child` completes a CONNECT/CONNACK exchange, or exits, or `deadline`.
    fn wait_ready(&self, child: &mut Child, deadline: Instant) -> Result<(), NotReady> {
        let mut options =
            ConnectOptions::new(format!("sandbox-mqtt-broker-ready-{}", std::process::id()));
        options.credentials = self.credentials.clone();
        let mut last_error = String::from("no connection attempted");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NotReady::TimedOut(last_error));
            }
            match RawClient::connect(self.address(), &options, left.min(CONNACK_TIMEOUT)) {
                Ok(client) => {
                    let _ = client.disconnect();
                    // The answer could have come from another process on the port while
                    // this one was failing to bind it.
                    return match child.try_wait() {
                        Ok(Some(status)) => Err(NotReady::Exited(status)),
                        _ => Ok(()),
                    };
                }
                Err(error) => last_error = error.to_string(),
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a spawned broker is not ready.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("it exited with {0}")]
    Exited(ExitStatus),
    #[error("the last attempt: {0}")]
    TimedOut(String),
}

fn private_dir() -> Result<TempDir, BrokerError> {
    tempfile::Builder::new()
        .prefix("sandbox-mqtt-broker-")
        .tempdir()
        .map_err(|source| BrokerError::Io {
            what: "the broker's private directory".into(),
            source,
        })
}

/// A port of 127.0.0.1 free now (the kernel's pick, released at once for the broker).
fn free_port() -> Result<u16, BrokerError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(BrokerError::NoFreePort)
}

/// `argument` with [`PORT_PLACEHOLDER`] replaced by `port` (an argument that is not UTF-8 has
/// none).
fn with_port(argument: &OsString, port: u16) -> OsString {
    match argument.to_str() {
        Some(text) if text.contains(PORT_PLACEHOLDER) => {
            text.replace(PORT_PLACEHOLDER, &port.to_string()).into()
        }
        _ => argument.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_placeholder_is_replaced_anywhere_in_an_argument() {
        assert_eq!(with_port(&"{port}".into(), 1883), OsString::from("1883"));
        assert_eq!(
            with_port(&"--listen=127.0.0.1:{port}".into(), 1883),
            OsString::from("--listen=127.0.0.1:1883")
        );
        assert_eq!(with_port(&"--port".into(), 1883), OsString::from("--port"));
    }
}
