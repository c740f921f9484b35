//! `misbehave_escape`: tries, from inside its sandbox, to reach past its own process with the
//! kernel's help — main's files, another group's store, main's process, the network below IP,
//! mounts, kernel modules, namespaces — and shows what each attempt got as the state of one
//! sensor per attempt ([`ATTEMPTS`]): `ok`, or the errno's name (`EPERM`, `EACCES`, ...).
//!
//! The attempts run in a helper: the integration's own program started again with
//! [`HELPER_FLAG`] (the `compat-sandbox` binary answers it before anything else, see
//! [`helper_main`]). The helper is a child of the sandbox and inherits all of its confinement
//! (capabilities, uid, syscall filter, filesystem ruleset); it is single-threaded, which
//! `unshare(CLONE_NEWUSER)` requires (the sandbox's runtime has threads, so there it would fail
//! with `EINVAL` whatever the confinement). The helper prints one JSON object, attempt to
//! outcome.
//!
//! Entry data: `config_dir`, main's configuration directory (its `.storage/core.config_entries`
//! is read, a file [`PLANTED_FILE`] is written in it), and `other_group_file`, a file in another
//! group's store folder. The helper waits (bounded by [`TARGET_WAIT`]) for each file to be read
//! to exist: main writes its config entries a moment after the entry is created.
//!
//! Attempts that need a capability no sandbox holds (attaching to main, a packet socket, a
//! mount) are also tried where the sandbox could make them succeed without one: attaching to
//! its own child, and mounting and opening a packet socket in namespaces of its own, made by
//! an unprivileged `unshare(CLONE_NEWUSER)`. Those succeed unconfined (profile `off`) and are
//! refused only by the syscall filter, so the attempts prove the filter rather than the
//! capability drop.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use serde_json::Value;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, failed};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_escape";

/// The first argument that makes the `compat-sandbox` binary run the attempts (followed by
/// main's config dir, the other group's file and main's pid) instead of a sandbox.
pub const HELPER_FLAG: &str = "--escape-attempts";

/// The first argument that makes the `compat-sandbox` binary sleep: the child the helper tries
/// to attach to.
pub const IDLE_FLAG: &str = "--escape-idle";

/// The file the helper tries to create in main's configuration directory.
pub const PLANTED_FILE: &str = "misbehave_escape_planted";

/// The state of every attempt's sensor until the helper answered.
pub const PENDING: &str = "pending";

/// How long the helper waits for a file it will try to read to exist.
pub const TARGET_WAIT: Duration = Duration::from_secs(30);

/// How long the integration waits for the helper's answer (a hang guard).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the idle child sleeps at most (it is killed as soon as the attempt is over).
const IDLE_FOR: Duration = Duration::from_secs(60);

/// Every attempt, in the order the helper makes them: (key, sensor name). The sensor's entity
/// id is `sensor.escape_<key>`.
pub const ATTEMPTS: [(&str, &str); 12] = [
    (
        "read_main_config_entries",
        "Escape read_main_config_entries",
    ),
    ("read_other_group_store", "Escape read_other_group_store"),
    ("write_main_config_dir", "Escape write_main_config_dir"),
    ("read_main_environ", "Escape read_main_environ"),
    ("ptrace_attach_main", "Escape ptrace_attach_main"),
    ("ptrace_attach_own_child", "Escape ptrace_attach_own_child"),
    ("socket_packet", "Escape socket_packet"),
    ("mount_tmpfs", "Escape mount_tmpfs"),
    ("init_module", "Escape init_module"),
    ("finit_module", "Escape finit_module"),
    ("unshare_user", "Escape unshare_user"),
    (
        "mount_and_packet_in_own_namespaces",
        "Escape mount_and_packet_in_own_namespaces",
    ),
];

/// The entity id of an attempt's sensor.
pub fn sensor_of(attempt: &str) -> String {
    format!("sensor.escape_{attempt}")
}

/// What an attempt got: `ok` or the errno's name.
fn outcome<T>(result: Result<T, Errno>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(errno) => format!("{errno:?}"),
    }
}

fn io_outcome<T>(result: std::io::Result<T>) -> String {
    outcome(result.map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(0))))
}

/// Waits (bounded) for `path` to exist. Whether a path exists is not what any profile hides.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + TARGET_WAIT;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Attaches to `pid`, and lets it go again when that worked.
fn attach(pid: Pid) -> String {
    let result = nix::sys::ptrace::attach(pid);
    if result.is_ok() {
        // Waits for the stop the attach sends, then detaches.
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        let _ = nix::sys::ptrace::detach(pid, None);
    }
    outcome(result)
}

fn packet_socket() -> Result<std::os::fd::OwnedFd, Errno> {
    nix::sys::socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn mount_tmpfs(target: &Path) -> Result<(), Errno> {
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )?;
    nix::mount::umount(target)
}

/// Makes every attempt; what each got, by key.
fn attempt_all(config_dir: &Path, other_group_file: &Path, main: Pid) -> BTreeMap<String, String> {
    let mut outcomes = BTreeMap::new();
    let mut record = |key: &str, outcome: String| {
        outcomes.insert(key.to_owned(), outcome);
    };
    let temp = std::env::temp_dir();

    let config_entries = config_dir.join(".storage").join("core.config_entries");
    wait_for(&config_entries);
    record(
        "read_main_config_entries",
        io_outcome(std::fs::read(&config_entries)),
    );
    wait_for(other_group_file);
    record(
        "read_other_group_store",
        io_outcome(std::fs::read(other_group_file)),
    );
    record(
        "write_main_config_dir",
        io_outcome(std::fs::write(config_dir.join(PLANTED_FILE), "planted")),
    );
    record(
        "read_main_environ",
        io_outcome(std::fs::read(format!("/proc/{main}/environ"))),
    );
    record("ptrace_attach_main", attach(main));
    record("ptrace_attach_own_child", attach_own_child());
    record("socket_packet", outcome(packet_socket()));
    record("mount_tmpfs", outcome(mount_tmpfs(&temp)));
    record(
        "init_module",
        outcome(nix::kmod::init_module(&[0x5a; 64], c"")),
    );
    let garbage = temp.join("misbehave_escape.ko");
    let finit = std::fs::write(&garbage, [0x5a; 64])
        .and_then(|()| std::fs::File::open(&garbage))
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(0)))
        .and_then(|module| {
            nix::kmod::finit_module(&module, c"", nix::kmod::ModuleInitFlags::empty())
        });
    record("finit_module", outcome(finit));
    // Last: a new user namespace changes what the process is to everything above.
    let user = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
    record("unshare_user", outcome(user));
    // In namespaces of its own (when it got a user namespace) the process holds every
    // capability there: only the filter stands between it and a mount or a packet socket.
    let own = nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
        .and_then(|()| mount_tmpfs(&temp))
        .and_then(|()| packet_socket().map(drop));
    record("mount_and_packet_in_own_namespaces", outcome(own));
    let _ = std::fs::remove_file(garbage);
    outcomes
}

/// Starts the idle child, attaches to it, and ends it.
fn attach_own_child() -> String {
    let child = std::env::current_exe().and_then(|program| {
        std::process::Command::new(program)
            .arg(IDLE_FLAG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
    });
    let mut child = match child {
        Ok(child) => child,
        Err(error) => return format!("no child: {error}"),
    };
    let Ok(raw) = i32::try_from(child.id()) else {
        return "no child pid".to_owned();
    };
    let result = attach(Pid::from_raw(raw));
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// When the process was started as the helper ([`HELPER_FLAG`]) or its idle child
/// ([`IDLE_FLAG`]): does that and says how it ended; `None` otherwise.
pub fn helper_main(args: &[OsString]) -> Option<ExitCode> {
    let flag = args.get(1)?;
    if flag == IDLE_FLAG {
        std::thread::sleep(IDLE_FOR);
        return Some(ExitCode::SUCCESS);
    }
    if flag != HELPER_FLAG {
        return None;
    }
    let (Some(config_dir), Some(other_group_file), Some(main)) = (
        args.get(2),
        args.get(3),
        args.get(4)
            .and_then(|pid| pid.to_str())
            .and_then(|pid| pid.parse::<i32>().ok()),
    ) else {
        eprintln!("usage: {HELPER_FLAG} CONFIG_DIR OTHER_GROUP_FILE MAIN_PID");
        return Some(ExitCode::from(2));
    };
    let outcomes = attempt_all(
        Path::new(config_dir),
        Path::new(other_group_file),
        Pid::from_raw(main),
    );
    match serde_json::to_string(&outcomes) {
        Ok(text) => {
            println!("{text}");
            Some(ExitCode::SUCCESS)
        }
        Err(_) => Some(ExitCode::FAILURE),
    }
}

/// Runs the helper on behalf of `entry`: what each attempt got, or why there is no answer.
async fn run_helper(entry: &ConfigEntry) -> Result<BTreeMap<String, String>, String> {
    let path_of = |key: &str| {
        entry
            .data
            .get(key)
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| format!("the entry has no {key}"))
    };
    let config_dir = path_of("config_dir")?;
    let other_group_file = path_of("other_group_file")?;
    let program = std::env::current_exe().map_err(|error| error.to_string())?;
    let main = nix::unistd::getppid();
    let helper = tokio::process::Command::new(program)
        .arg(HELPER_FLAG)
        .arg(config_dir)
        .arg(other_group_file)
        .arg(main.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(HELPER_TIMEOUT, helper)
        .await
        .map_err(|_| "the helper did not answer".to_owned())?
        .map_err(|error| format!("the helper did not run: {error}"))?;
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("the helper's answer is unreadable ({error}): {output:?}"))
}

struct Escape;

impl Behaviour for Escape {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let platform = core
                .entities()
                .forward_entry_setup(entry, "sensor")
                .map_err(failed)?;
            let mut sensors = Vec::new();
            for (key, name) in ATTEMPTS {
                let sensor = Arc::new(ToyEntity::sensor(
                    &format!("{}-{key}", entry.entry_id),
                    name,
                    PENDING,
                ));
                platform
                    .add_entity(sensor.into_ref())
                    .await
                    .map_err(failed)?;
                sensors.push((key, sensor));
            }
            let entry = entry.clone();
            tasks.spawn(async move {
                let outcomes = run_helper(&entry).await;
                for (key, sensor) in sensors {
                    let state = match &outcomes {
                        Ok(outcomes) => outcomes
                            .get(key)
                            .cloned()
                            .unwrap_or_else(|| "not tried".to_owned()),
                        Err(why) => {
                            tracing::warn!(%why, "escape attempts not made");
                            "no answer".to_owned()
                        }
                    };
                    sensor.set(state);
                }
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(DOMAIN, "Misbehave: escape attempts", &["sensor"], Escape)
}
