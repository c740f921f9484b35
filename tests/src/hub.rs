//! A `sandbox-host run` for the end-to-end tests: started on a config dir with its HTTP API on
//! a free port, driven through the real program's commands, and stopped (with its sandboxes)
//! when the test is done with it, whatever happened.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{SANDBOX_HOST, binary};

/// A hang guard only: far above anything a hub's step needs on a loaded machine.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

/// The configuration a test hub starts with when its dir has none: the HTTP API on a port of
/// its own, so tests run side by side.
pub const TEST_CONFIG: &str = "[listen]\nhttp = \"127.0.0.1:0\"\n";

/// The demo integration's entity count (what `add_demo` waits for).
pub const DEMO_ENTITIES: u64 = 37;

/// A running hub.
pub struct RunningHub {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    /// The temporary dir and log a hub made for itself, removed with it.
    _owned: Option<(tempfile::TempDir, tempfile::NamedTempFile)>,
}

/// Runs the `sandbox-host` program with `args` and `--config dir`.
pub fn run_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary(SANDBOX_HOST))
        .args(args)
        .arg("--config")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run sandbox-host {args:?}: {error}"))
}

/// What a command printed, both streams.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl RunningHub {
    /// A hub on a fresh temporary dir, removed when the hub is dropped.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let log = tempfile::NamedTempFile::new().unwrap_or_else(|error| panic!("log: {error}"));
        let mut hub = Self::start_in(dir.path(), log.path());
        hub._owned = Some((dir, log));
        hub
    }

    /// A hub on `dir` (writing [`TEST_CONFIG`] when it has no configuration file), its log in
    /// `log`; returns once its control socket answers.
    pub fn start_in(dir: &Path, log: &Path) -> Self {
        let file = dir.join("sandbox-host.toml");
        if !file.exists() {
            std::fs::write(&file, TEST_CONFIG).unwrap_or_else(|error| panic!("{error}"));
        }
        let stderr = std::fs::File::create(log).unwrap_or_else(|error| panic!("{error}"));
        let child = Command::new(binary(SANDBOX_HOST))
            .args(["run", "--config"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start sandbox-host run: {error}"));
        let hub = Self {
            child,
            dir: dir.to_owned(),
            log: log.to_owned(),
            _owned: None,
        };
        hub.wait_for("the control socket", |hub| {
            hub.cli(&["status"]).status.code() == Some(0)
        });
        hub
    }

    /// Its config dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the program with `args` against this hub.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.dir, args)
    }

    /// `status --json` and its exit code.
    pub fn status(&self) -> (Value, Option<i32>) {
        let output = self.cli(&["status", "--json"]);
        let status = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("status --json: {error}: {}", text(&output)));
        (status, output.status.code())
    }

    /// The group `name` as `status --json` reports it (`null` before it exists).
    pub fn group(&self, name: &str) -> Value {
        let (status, _) = self.status();
        status["groups"]
            .as_array()
            .and_then(|groups| groups.iter().find(|group| group["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Where its HTTP API listens (`host:port`).
    pub fn address(&self) -> String {
        let (status, _) = self.status();
        status["http_address"]
            .as_str()
            .unwrap_or_else(|| panic!("no HTTP API address in {status}"))
            .to_owned()
    }

    /// A new access token named `name`.
    pub fn token(&self, name: &str) -> String {
        let made = self.cli(&["token", "create", name]);
        assert_eq!(made.status.code(), Some(0), "{}", text(&made));
        String::from_utf8_lossy(&made.stdout).trim().to_owned()
    }

    /// Adds the demo integration from the command line and waits for every entity; returns
    /// what `add` printed.
    pub fn add_demo(&self) -> String {
        let added = self.cli(&["add", "demo", "--data", "next_step_id=defaults"]);
        assert_eq!(added.status.code(), Some(0), "{}", text(&added));
        self.wait_for("every demo entity", |hub| {
            let group = hub.group("built-in");
            group["state"] == "running" && group["entities"].as_u64() == Some(DEMO_ENTITIES)
        });
        String::from_utf8_lossy(&added.stdout).into_owned()
    }

    /// Waits (at most [`HANG_GUARD`]) until `condition` holds.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !condition(self) {
            assert!(
                started.elapsed() < HANG_GUARD,
                "timed out waiting for {what}; the hub's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the hub.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits (at most [`HANG_GUARD`]) for the hub to exit.
    pub fn wait(mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < HANG_GUARD, "the hub did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM lets the hub stop its sandboxes; a kill after the guard if it does not.
        self.signal(Signal::SIGTERM);
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > HANG_GUARD {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
