//! Mosquitto as the test broker: finding it, and its configuration (and password file) in the
//! broker's private directory.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BrokerError, BrokerOptions};

/// Where Debian installs the programs besides `PATH` (the broker is in `/usr/sbin`, often not
/// on a normal user's `PATH`).
const EXTRA_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/bin"];

/// Messages Mosquitto may queue for one client, QoS 0 included: 0 is no limit. The default
/// (1,000) would drop retained messages and states past it for a subscriber that has not read
/// them yet, which a load test's subscriber may well be.
const MAX_QUEUED_MESSAGES: u32 = 0;

/// The largest payload accepted, as the embedded broker's.
const MESSAGE_SIZE_LIMIT: usize = crate::embedded::MAX_PAYLOAD_BYTES;

/// `program` on `PATH` or in [`EXTRA_DIRS`].
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Writes Mosquitto's configuration for `port` (and its password file for `options.users`)
/// into `dir` and answers the command that runs it.
pub(crate) fn prepare(
    dir: &Path,
    port: u16,
    options: &BrokerOptions,
) -> Result<Vec<OsString>, BrokerError> {
    let mosquitto = find("mosquitto").ok_or(BrokerError::MosquittoMissing)?;
    let mut config = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(config, "listener {port} 127.0.0.1");
    let _ = writeln!(config, "persistence false");
    let _ = writeln!(config, "log_dest stderr");
    let _ = writeln!(config, "log_type error");
    let _ = writeln!(config, "max_queued_messages {MAX_QUEUED_MESSAGES}");
    let _ = writeln!(config, "message_size_limit {MESSAGE_SIZE_LIMIT}");
    if nix::unistd::geteuid().is_root() {
        // Run as root, Mosquitto would switch to the `mosquitto` user, who cannot read the
        // private directory its password file is in.
        let _ = writeln!(config, "user root");
    }
    if options.users.is_empty() {
        let _ = writeln!(config, "allow_anonymous true");
    } else {
        let password_file = dir.join("passwords");
        write_password_file(&password_file, &options.users)?;
        let _ = writeln!(config, "allow_anonymous false");
        let _ = writeln!(config, "password_file {}", password_file.display());
    }
    let config_file = dir.join("mosquitto.conf");
    std::fs::write(&config_file, config).map_err(|source| BrokerError::Io {
        what: format!("the mosquitto configuration {}", config_file.display()),
        source,
    })?;
    Ok(vec![
        mosquitto.into_os_string(),
        "-c".into(),
        config_file.into_os_string(),
    ])
}

/// Mosquitto's password file for `users`, made by its own `mosquitto_passwd -b` (which hashes
/// the passwords the way the installed broker reads them).
fn write_password_file(file: &Path, users: &[(String, String)]) -> Result<(), BrokerError> {
    let mosquitto_passwd = find("mosquitto_passwd").ok_or(BrokerError::MosquittoMissing)?;
    std::fs::write(file, "").map_err(|source| BrokerError::Io {
        what: format!("the mosquitto password file {}", file.display()),
        source,
    })?;
    for (name, password) in users {
        let output = Command::new(&mosquitto_passwd)
            .arg("-b")
            .arg(file)
            .arg(name)
            .arg(password)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BrokerError::Spawn {
                program: mosquitto_passwd.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(BrokerError::PasswordFile(format!(
                "`mosquitto_passwd -b` for user {name:?} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(())
}
