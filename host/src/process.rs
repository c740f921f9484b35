//! One sandbox child process: spawned with hygiene (its own process group, a parent-death
//! signal, no core dumps, resource limits, `no_new_privs`, an optional uid/gid drop, its
//! confinement, a private temporary directory), its stderr forwarded into the host's log under
//! the group's name, each line at the level it names, and killed and reaped when dropped.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::confinement::{ConfinementProfile, FilesystemAllowances, FilesystemRuleset, PathAccess};
use crate::log_limit::{Admit, LogBudget, Suppressed};

/// The longest line of a child's stderr forwarded to the log; the rest of a longer line is
/// dropped (and counted in the line), so a child printing without newlines cannot grow the
/// host's memory.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// OS resource limits applied to a child before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_AS`: the most virtual memory, in bytes.
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_NOFILE`: the most open files.
    pub open_files: Option<u64>,
    /// `RLIMIT_CPU`: the most CPU seconds before the kernel kills the child.
    pub cpu_seconds: Option<u64>,
}

/// A user and group the child runs as (applied only when the host runs as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
}

/// Which transport the child speaks, which decides what its stdin and stdout are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildTransport {
    /// stdin and stdout are the channel.
    Stdio,
    /// The channel is a unix socket; stdin is /dev/null and stdout goes to the log.
    Unix,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The group, for logs.
    pub group: String,
    /// The program and its arguments.
    pub argv: Vec<OsString>,
    /// What stdin and stdout are for.
    pub transport: ChildTransport,
    /// Limits applied in the child before exec.
    pub limits: ResourceLimits,
    /// Drop to this user and group (requires running as root).
    pub credentials: Option<Credentials>,
    /// What the kernel forbids the child (see [`crate::confinement`]).
    pub confinement: ConfinementProfile,
    /// Paths the child may use beyond what every sandbox may (under
    /// [`ConfinementProfile::Default`]).
    pub confinement_paths: Vec<(PathBuf, PathAccess)>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command factory produced no program.
    #[error("the command for group `{group}` is empty")]
    EmptyCommand {
        /// The group.
        group: String,
    },
    /// A uid/gid drop was asked for but the host is not root.
    #[error("running group `{group}` as uid {uid} needs the host to run as root")]
    NotRoot {
        /// The group.
        group: String,
        /// The uid asked for.
        uid: u32,
    },
    /// Its private temporary directory could not be made.
    #[error("cannot create the temporary directory of group `{group}`: {source}")]
    PrivateTmp {
        /// The group.
        group: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Its confinement could not be prepared (it is not started unconfined).
    #[error("cannot confine group `{group}`: {source}")]
    Confinement {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: crate::confinement::ConfinementError,
    },
    /// The OS refused to start it.
    #[error("cannot start {program:?} for group `{group}`: {source}")]
    Io {
        /// The group.
        group: String,
        /// The program.
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A running (or exited, not yet dropped) child.
pub struct SandboxProcess {
    /// The child, reaped through tokio.
    child: Child,
    /// Its pid, which is also its process group id.
    pid: u32,
    /// The group, for logs.
    group: String,
    /// The exit status, recorded once when it is first seen.
    exit: Option<ExitStatus>,
    /// The tasks forwarding stderr (and stdout for unix children) to the log.
    log_tasks: Vec<JoinHandle<()>>,
    /// Its `TMPDIR`, removed once it is reaped.
    private_tmp: PrivateTmp,
    /// The Landlock ABI its files are confined with (0: the kernel has none); `None` when its
    /// profile confines no files.
    landlock_abi: Option<u32>,
    /// The profile it was confined with.
    confinement: ConfinementProfile,
    /// Whether a syscall filter was installed in it.
    seccomp: bool,
}

/// The channel ends of a stdio child.
pub struct ChildPipes {
    /// The child's stdin: frames to the child.
    pub to_child: ChildStdin,
    /// The child's stdout: frames from the child.
    pub from_child: ChildStdout,
}

impl SandboxProcess {
    /// Starts the child. For a stdio child the pipes carrying the channel are returned.
    pub fn spawn(spec: &SpawnSpec) -> Result<(Self, Option<ChildPipes>), SpawnError> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(SpawnError::EmptyCommand {
                group: spec.group.clone(),
            });
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        match spec.transport {
            ChildTransport::Stdio => command.stdin(Stdio::piped()).stdout(Stdio::piped()),
            ChildTransport::Unix => command.stdin(Stdio::null()).stdout(Stdio::piped()),
        };
        if let Some(credentials) = spec.credentials {
            if !nix::unistd::geteuid().is_root() {
                return Err(SpawnError::NotRoot {
                    group: spec.group.clone(),
                    uid: credentials.uid,
                });
            }
            command.uid(credentials.uid).gid(credentials.gid);
        }
        let confinement_error = |source| SpawnError::Confinement {
            group: spec.group.clone(),
            source,
        };
        let syscall_filter =
            crate::confinement::syscall_filter(spec.confinement).map_err(confinement_error)?;
        // The child execs only once the filter is installed (a failed install fails the spawn).
        let seccomp = syscall_filter.is_some();
        // Removed on every way out of here that does not hand it to the process.
        let private_tmp = PrivateTmp::create(&spec.group, spec.credentials).map_err(|source| {
            SpawnError::PrivateTmp {
                group: spec.group.clone(),
                source,
            }
        })?;
        command.env("TMPDIR", &private_tmp.path);
        let program_dir = program_dir(program);
        let filesystem_ruleset = crate::confinement::filesystem_ruleset(
            spec.confinement,
            FilesystemAllowances {
                program_dir: program_dir.as_deref(),
                private_tmp: &private_tmp.path,
                additions: &spec.confinement_paths,
            },
        )
        .map_err(confinement_error)?;
        let landlock_abi = filesystem_ruleset.as_ref().map(FilesystemRuleset::abi);
        install_child_hygiene(
            &mut command,
            spec.limits.clone(),
            spec.confinement,
            filesystem_ruleset,
            syscall_filter,
        );
        let mut child = command.spawn().map_err(|source| SpawnError::Io {
            group: spec.group.clone(),
            program: program.clone(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let mut log_tasks = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            log_tasks.push(tokio::spawn(forward_lines(
                stderr,
                spec.group.clone(),
                pid,
                "stderr",
            )));
        }
        let pipes = match spec.transport {
            ChildTransport::Stdio => {
                let to_child = child.stdin.take().expect("stdin was piped");
                let from_child = child.stdout.take().expect("stdout was piped");
                Some(ChildPipes {
                    to_child,
                    from_child,
                })
            }
            ChildTransport::Unix => {
                if let Some(stdout) = child.stdout.take() {
                    log_tasks.push(tokio::spawn(forward_lines(
                        stdout,
                        spec.group.clone(),
                        pid,
                        "stdout",
                    )));
                }
                None
            }
        };
        tracing::debug!(group = %spec.group, pid, confinement = spec.confinement.as_str(), seccomp, ?landlock_abi, "sandbox process started");
        Ok((
            Self {
                child,
                pid,
                group: spec.group.clone(),
                exit: None,
                log_tasks,
                private_tmp,
                landlock_abi,
                confinement: spec.confinement,
                seccomp,
            },
            pipes,
        ))
    }

    /// The child's pid (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The Landlock ABI the child's files are confined with: 0 when the kernel has no Landlock
    /// (its files are then not confined), `None` when its profile confines no files.
    pub fn landlock_abi(&self) -> Option<u32> {
        self.landlock_abi
    }

    /// The confinement profile the child was started with.
    pub fn confinement(&self) -> ConfinementProfile {
        self.confinement
    }

    /// Whether the child runs under a syscall filter (installed before its exec).
    pub fn seccomp(&self) -> bool {
        self.seccomp
    }

    /// The child's private temporary directory (its `TMPDIR`), removed once it is reaped.
    pub fn private_tmp(&self) -> &Path {
        &self.private_tmp.path
    }

    /// Waits for the child to exit; the status is recorded once and returned to every caller.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.reaped(status);
        Ok(status)
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.reaped(status);
        }
        self.exit
    }

    /// Records the exit and removes the child's temporary directory.
    fn reaped(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        self.private_tmp.remove();
    }

    /// Sends `signal` to the child's whole process group (so its own children get it too).
    pub fn signal_group(&self, signal: Signal) {
        if self.exit.is_some() {
            return;
        }
        self.signal_group_members(signal);
    }

    /// SIGKILL to whatever is left of the group after its leader exited on its own: a
    /// sandbox's own children must not outlive it. (The group id stays valid while any member
    /// lives; this runs right after the leader is reaped.)
    pub fn kill_leftovers(&self) {
        self.signal_group_members(Signal::SIGKILL);
    }

    fn signal_group_members(&self, signal: Signal) {
        if let Err(error) = killpg(Pid::from_raw(self.pid as i32), signal)
            && error != nix::errno::Errno::ESRCH
        {
            tracing::warn!(group = %self.group, pid = self.pid, %error, ?signal, "cannot signal sandbox");
        }
    }

    /// Ends the child: SIGTERM to its group, up to `grace` to exit, then SIGKILL; always reaps.
    /// Returns the exit status and whether SIGKILL was needed.
    pub async fn terminate(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.try_exit() {
            self.kill_leftovers();
            return (Some(status), false);
        }
        self.signal_group(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            self.kill_leftovers();
            return (status.ok(), false);
        }
        tracing::warn!(group = %self.group, pid = self.pid, ?grace, "sandbox ignored SIGTERM; killing it");
        self.kill().await
    }

    /// SIGKILL to the group, then reap.
    pub async fn kill(&mut self) -> (Option<ExitStatus>, bool) {
        self.signal_group(Signal::SIGKILL);
        let status = self.wait().await.ok();
        self.kill_leftovers();
        (status, true)
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        // Whatever path dropped us (an error, a cancelled task), the group must not outlive
        // this value; tokio's kill_on_drop then reaps the child in the background.
        if self.try_exit().is_none() {
            self.signal_group(Signal::SIGKILL);
        } else {
            self.kill_leftovers();
        }
        for task in &self.log_tasks {
            // The forwarding tasks end at EOF by themselves; this only stops them early if the
            // group's grandchildren still hold the pipe open.
            task.abort();
        }
    }
}

/// Describes an exit status for logs and status displays.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(signal) => format!("killed by {}", signal.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        "ended".to_owned()
    }
}

/// A group's private temporary directory (`0700`, owned by the child's user), the `TMPDIR` of
/// its child and the one place beneath the system's temporary directory its confinement lets
/// it write. Removed once the child is reaped, and at the latest when this is dropped.
struct PrivateTmp {
    path: PathBuf,
    removed: bool,
}

impl PrivateTmp {
    fn create(group: &str, credentials: Option<Credentials>) -> io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let readable: String = group
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        // A fresh name: `mkdir` fails rather than reuse what another user planted there.
        let path = std::env::temp_dir().join(format!("sandbox-{readable}-{}", ulid::Ulid::new()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // From here on, dropping it removes the directory.
        let created = Self {
            path,
            removed: false,
        };
        std::fs::set_permissions(&created.path, std::fs::Permissions::from_mode(0o700))?;
        if let Some(credentials) = credentials {
            std::os::unix::fs::chown(&created.path, Some(credentials.uid), Some(credentials.gid))?;
        }
        Ok(created)
    }

    /// Removes the directory and what the child left in it; a failure (a grandchild still
    /// writing) is tried again when this is dropped.
    fn remove(&mut self) {
        if self.removed {
            return;
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => self.removed = true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => self.removed = true,
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "sandbox temporary directory not removed yet");
            }
        }
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        self.remove();
        if !self.removed {
            tracing::warn!(path = %self.path.display(), "cannot remove a sandbox's temporary directory");
        }
    }
}

/// The directory of the program `argv[0]` names (found on `PATH` when it has no slash), whose
/// files the child may read and execute: the built-in runtime lives in a build or install
/// folder. A program directly under `/` gives only itself.
fn program_dir(program: &OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let named = Path::new(program);
    let found = if program.as_bytes().contains(&b'/') {
        named.to_owned()
    } else {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .map(|dir| dir.join(named))
            .find(|candidate| {
                std::fs::metadata(candidate)
                    .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            })?
    };
    let canonical = std::fs::canonicalize(found).ok()?;
    match canonical.parent() {
        Some(parent) if parent != Path::new("/") => Some(parent.to_owned()),
        _ => Some(canonical),
    }
}

#[allow(unsafe_code)]
fn install_child_hygiene(
    command: &mut Command,
    limits: ResourceLimits,
    profile: ConfinementProfile,
    filesystem_ruleset: Option<FilesystemRuleset>,
    syscall_filter: Option<seccompiler::BpfProgram>,
) {
    let isolate_network = profile.isolates_network();
    let parent = nix::unistd::getpid();
    // Read before the fork: the child may not allocate.
    let last_capability = last_capability();
    // SAFETY: the closure runs in the forked child before exec. It only makes raw syscalls
    // (prctl, getppid, setrlimit, capset, landlock_restrict_self, seccomp) that are
    // async-signal-safe, allocates nothing (errors are built from raw errno values; the
    // filesystem ruleset was created and the syscall filter compiled before the fork) and
    // touches no lock.
    unsafe {
        command.pre_exec(move || {
            // Die with the host, even if it is killed with SIGKILL. The check after it closes
            // the race where the host died between fork and prctl.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(errno_error)?;
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc_esrch()));
            }
            // A crash loop must not fill the disk with core dumps.
            setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(errno_error)?;
            if let Some(bytes) = limits.address_space_bytes {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes).map_err(errno_error)?;
            }
            if let Some(files) = limits.open_files {
                setrlimit(Resource::RLIMIT_NOFILE, files, files).map_err(errno_error)?;
            }
            if let Some(seconds) = limits.cpu_seconds {
                setrlimit(Resource::RLIMIT_CPU, seconds, seconds).map_err(errno_error)?;
            }
            if isolate_network {
                // While the capabilities are still there (creating a network namespace needs
                // `CAP_SYS_ADMIN`); a main that cannot fails the spawn: never a strict group
                // with the network.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(errno_error)?;
                let most = crate::confinement::STRICT_MAX_PROCESSES;
                setrlimit(Resource::RLIMIT_NPROC, most, most).map_err(errno_error)?;
            }
            nix::sys::prctl::set_no_new_privs().map_err(errno_error)?;
            drop_capabilities(last_capability)?;
            // After `no_new_privs`, which Landlock requires of a process without
            // `CAP_SYS_ADMIN`.
            if let Some(ruleset) = &filesystem_ruleset {
                ruleset.restrict_self()?;
            }
            // Last, so nothing above runs under the filter.
            if let Some(filter) = &syscall_filter {
                seccompiler::apply_filter(filter).map_err(|error| match error {
                    seccompiler::Error::Prctl(error) | seccompiler::Error::Seccomp(error) => error,
                    _ => io::Error::from_raw_os_error(libc::EINVAL),
                })?;
            }
            Ok(())
        });
    }
}

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`), or
/// [`FALLBACK_LAST_CAPABILITY`] when it cannot be read.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(FALLBACK_LAST_CAPABILITY)
}

/// Capabilities dropped from the bounding set when the kernel does not say how many it has
/// (Linux 6.x knows 41, `CAP_CHECKPOINT_RESTORE`; a number past the kernel's own ends the
/// loop harmlessly).
const FALLBACK_LAST_CAPABILITY: u32 = 63;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`, one 32-bit half of each set.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapabilityData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Runs in the child between fork and exec: every capability goes, even when main runs as
/// root. The bounding set is emptied first, so the exec cannot hand a root child its
/// capabilities back; then the ambient set, then effective, permitted and inheritable. A child
/// without `CAP_SETPCAP` (main not root, or a uid drop that already cleared its sets) cannot
/// change its bounding set and gets `EPERM`, which is expected: with `no_new_privs` its exec
/// gains nothing from it.
#[allow(unsafe_code)]
fn drop_capabilities(last_capability: u32) -> io::Result<()> {
    for capability in 0..=last_capability {
        // SAFETY: prctl with integer arguments only.
        let result = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(capability),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if result != 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Past the kernel's last capability.
                Some(libc::EINVAL) => break,
                // Not allowed to change the bounding set (see above).
                Some(libc::EPERM) => break,
                _ => return Err(io::Error::last_os_error()),
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    // A kernel without ambient capabilities (before 4.3) has none to clear.
    if cleared != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    let header = CapabilityHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [CapabilityData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads the header and two data structs, laid out as the kernel's and
    // alive for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &header as *const CapabilityHeader,
            none.as_ptr(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn errno_error(errno: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

/// Lines of a child's output forwarded to the log per [`crate::log_limit::LOG_WINDOW`]: a
/// crash's traceback fits; a child printing without end costs this many lines and a summary.
pub const MAX_LOG_LINES_PER_WINDOW: u32 = 200;

/// Bytes of a child's output forwarded to the log per [`crate::log_limit::LOG_WINDOW`]
/// (about 13 KiB/s per stream at most).
pub const MAX_LOG_BYTES_PER_WINDOW: usize = 128 * 1024;

/// What [`forward_lines_to`] hands its sink.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded<'a> {
    /// A line (capped), with how many bytes of it were cut.
    Line(&'a str, usize),
    /// What the budget kept out of the log.
    Summary(Suppressed),
}

/// The level a sandbox's log line is forwarded at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLevel {
    /// `ERROR` (also `CRITICAL`, `FATAL`).
    Error,
    /// `WARN` (also `WARNING`).
    Warn,
    /// `INFO`, and every line that names no level.
    Info,
    /// `DEBUG`.
    Debug,
    /// `TRACE`.
    Trace,
}

impl LineLevel {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "ERROR" | "CRITICAL" | "FATAL" => Self::Error,
            "WARN" | "WARNING" => Self::Warn,
            "INFO" => Self::Info,
            "DEBUG" => Self::Debug,
            "TRACE" => Self::Trace,
            _ => return None,
        })
    }
}

/// A sandbox's log line split into its level and its message: `LEVEL message` or
/// `TIMESTAMP LEVEL message` (the timestamp a word starting with a digit, as tracing's and
/// most loggers' default lines: `2026-01-02T03:04:05.678Z ERROR target: message`), words
/// separated by spaces. The message is what follows the level (main's log has its own time
/// and level). A line naming no level is INFO, whole.
pub fn parse_log_line(line: &str) -> (LineLevel, &str) {
    fn first_word(text: &str) -> (&str, &str) {
        let text = text.trim_start();
        match text.find(char::is_whitespace) {
            Some(end) => (&text[..end], text[end..].trim_start()),
            None => (text, ""),
        }
    }
    let (first, after_first) = first_word(line);
    if let Some(level) = LineLevel::from_word(first) {
        return (level, after_first);
    }
    if first.starts_with(|c: char| c.is_ascii_digit()) {
        let (second, after_second) = first_word(after_first);
        if let Some(level) = LineLevel::from_word(second) {
            return (level, after_second);
        }
    }
    (LineLevel::Info, line)
}

/// Logs under target `sandbox` at a level known only at run time.
macro_rules! sandbox_event {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            LineLevel::Error => tracing::error!(target: "sandbox", $($rest)+),
            LineLevel::Warn => tracing::warn!(target: "sandbox", $($rest)+),
            LineLevel::Info => tracing::info!(target: "sandbox", $($rest)+),
            LineLevel::Debug => tracing::debug!(target: "sandbox", $($rest)+),
            LineLevel::Trace => tracing::trace!(target: "sandbox", $($rest)+),
        }
    };
}

/// Forwards a child's output to the log line by line under target `sandbox`, each line at the
/// level it names ([`parse_log_line`]), so a sandbox's error is an error in main's log too.
/// Each line carries the group and the pid of the process that wrote it.
async fn forward_lines(
    source: impl AsyncRead + Unpin,
    group: String,
    pid: u32,
    stream: &'static str,
) {
    forward_lines_to(source, |forwarded| match forwarded {
        Forwarded::Line(text, 0) => {
            let (level, message) = parse_log_line(text);
            sandbox_event!(level, group = %group, pid, stream, "{message}");
        }
        Forwarded::Line(text, dropped) => {
            let (level, message) = parse_log_line(text);
            sandbox_event!(level, group = %group, pid, stream, "{message}… ({dropped} more bytes dropped)");
        }
        Forwarded::Summary(suppressed) => {
            tracing::warn!(target: "sandbox", group = %group, pid, stream, "{} lines ({} bytes) of {stream} not logged in the last {} s", suppressed.lines, suppressed.bytes, suppressed.over.as_secs());
        }
    })
    .await;
}

/// Reads a child's output to its end, handing `sink` each line capped at
/// [`MAX_LOG_LINE_BYTES`], at most [`MAX_LOG_LINES_PER_WINDOW`] lines and
/// [`MAX_LOG_BYTES_PER_WINDOW`] bytes per window, and a summary of the rest. Everything is read
/// (so the child never blocks on a full pipe); what is over budget is only counted.
async fn forward_lines_to(mut source: impl AsyncRead + Unpin, mut sink: impl FnMut(Forwarded<'_>)) {
    let mut chunk = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut dropped = 0usize;
    let mut budget = LogBudget::new(MAX_LOG_LINES_PER_WINDOW, MAX_LOG_BYTES_PER_WINDOW);
    let mut emit = |line: &mut Vec<u8>, dropped: &mut usize| {
        if let Admit::Log { suppressed } = budget.admit(line.len() + *dropped) {
            if let Some(suppressed) = suppressed {
                sink(Forwarded::Summary(suppressed));
            }
            let text = String::from_utf8_lossy(line);
            sink(Forwarded::Line(text.trim_end_matches('\r'), *dropped));
        }
        line.clear();
        *dropped = 0;
    };
    loop {
        let read = match source.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                emit(&mut line, &mut dropped);
            } else if line.len() < MAX_LOG_LINE_BYTES {
                line.push(byte);
            } else {
                dropped += 1;
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut dropped);
    }
    if let Some(suppressed) = budget.take_suppressed() {
        sink(Forwarded::Summary(suppressed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capability sets of `pid` from `/proc/<pid>/status`, by name (`CapEff`, `CapBnd`, ...).
    fn capability_sets(pid: u32) -> Vec<(String, u64)> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                let name = name.strip_prefix("Cap")?;
                Some((name.to_owned(), u64::from_str_radix(value.trim(), 16).ok()?))
            })
            .collect()
    }

    /// A python child of the group `group` under `confinement`, running `script` with `args`
    /// over stdio. The system's interpreter: one installed under a home folder (a version
    /// manager's shims) lies outside what a confined sandbox may execute.
    fn python_spec(
        group: &str,
        confinement: ConfinementProfile,
        script: &str,
        args: &[&std::ffi::OsStr],
    ) -> SpawnSpec {
        let mut argv: Vec<std::ffi::OsString> =
            vec!["/usr/bin/python3".into(), "-c".into(), script.into()];
        argv.extend(args.iter().map(|arg| arg.to_os_string()));
        SpawnSpec {
            group: group.into(),
            argv,
            transport: ChildTransport::Stdio,
            limits: ResourceLimits::default(),
            credentials: None,
            confinement,
            confinement_paths: Vec::new(),
        }
    }

    /// Everything a child wrote to its stdout, to its end (a hang guard of 60 s).
    async fn read_all(pipes: Option<ChildPipes>) -> String {
        let mut output = String::new();
        let mut from_child = pipes.expect("stdio pipes").from_child;
        tokio::time::timeout(
            Duration::from_secs(60),
            from_child.read_to_string(&mut output),
        )
        .await
        .expect("the child ends")
        .expect("reads");
        output
    }

    /// What a child attempting syscalls printed, one `name outcome` line each: the child runs
    /// under `confinement` and tries `PTRACE_TRACEME`, a user namespace and the session keyring.
    async fn syscall_attempts(confinement: ConfinementProfile) -> Vec<String> {
        let script = format!(
            "import ctypes\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             def attempt(name, *args):\n    \
                 result = libc.syscall(*[ctypes.c_long(a) for a in args])\n    \
                 errno = ctypes.get_errno()\n    \
                 print(name, 'ok' if result >= 0 else 'EPERM' if errno == 1 else 'errno%d' % errno, flush=True)\n\
             attempt('ptrace', {ptrace}, 0, 0, 0, 0)\n\
             attempt('unshare', {unshare}, 0x10000000)\n\
             attempt('keyctl', {keyctl}, 0, -3, 0)\n\
             attempt('socket_packet', {socket}, {packet}, 3, 0)\n\
             attempt('socket_alg', {socket}, {alg}, 5, 0)\n\
             attempt('socket_inet', {socket}, {inet}, 1, 0)\n\
             attempt('socket_unix', {socket}, {unix}, 1, 0)\n",
            ptrace = libc::SYS_ptrace,
            unshare = libc::SYS_unshare,
            keyctl = libc::SYS_keyctl,
            socket = libc::SYS_socket,
            packet = libc::AF_PACKET,
            alg = libc::AF_ALG,
            inet = libc::AF_INET,
            unix = libc::AF_UNIX,
        );
        let spec = python_spec("attempts", confinement, &script, &[]);
        let (mut child, pipes) = SandboxProcess::spawn(&spec).expect("spawns");
        let output = read_all(pipes).await;
        let status = child.wait().await.expect("reaped");
        assert!(status.success(), "{status:?}: {output}");
        output.lines().map(str::to_owned).collect()
    }

    /// What a child under `confinement` got trying to reach `address` over TCP (`ok` or the
    /// errno), and the network interfaces it sees; `None` when the child could not be started.
    async fn network_attempt(
        confinement: ConfinementProfile,
        address: std::net::SocketAddr,
    ) -> Option<(String, String)> {
        let script = format!(
            "import socket\n\
             interfaces = sorted(line.split(':')[0].strip() for line in open('/proc/self/net/dev').readlines()[2:])\n\
             try:\n    \
                 socket.create_connection(('{}', {}), timeout=10).close()\n    \
                 outcome = 'ok'\n\
             except OSError as error:\n    \
                 outcome = 'errno%d' % (error.errno or 0)\n\
             print(outcome, ','.join(interfaces), flush=True)\n",
            address.ip(),
            address.port()
        );
        let spec = python_spec("network", confinement, &script, &[]);
        let (mut child, pipes) = SandboxProcess::spawn(&spec).ok()?;
        let output = read_all(pipes).await;
        child.wait().await.expect("reaped");
        let (outcome, interfaces) = output.trim().split_once(' ').unwrap_or((output.trim(), ""));
        Some((outcome.to_owned(), interfaces.to_owned()))
    }

    #[tokio::test]
    async fn the_strict_profile_takes_the_network_away_and_default_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("address");
        let (outcome, _) = network_attempt(ConfinementProfile::Default, address)
            .await
            .expect("a default group starts");
        assert_eq!(outcome, "ok", "the default profile leaves the network");
        let strict = network_attempt(ConfinementProfile::Strict, address).await;
        if !nix::unistd::geteuid().is_root() {
            // Without root, main cannot make the network namespace: the group does not start,
            // it never runs with the network it was denied.
            assert!(strict.is_none(), "{strict:?}");
            return;
        }
        let (outcome, interfaces) = strict.expect("a strict group starts under a root main");
        assert_eq!(interfaces, "lo", "only a loopback of its own");
        assert_ne!(outcome, "ok", "the host's loopback is out of reach");
    }

    #[tokio::test]
    async fn the_default_profile_refuses_the_denied_syscalls_and_off_does_not() {
        let confined = syscall_attempts(ConfinementProfile::Default).await;
        assert_eq!(
            confined,
            [
                "ptrace EPERM",
                "unshare EPERM",
                "keyctl EPERM",
                "socket_packet EPERM",
                "socket_alg EPERM",
                "socket_inet ok",
                "socket_unix ok",
            ],
            "under the default profile"
        );
        // The same child unconfined: what the filter refused is the filter's doing, not the
        // machine's (a user namespace, the keyring or a socket family may be off on a given
        // machine, and packet sockets need a capability no sandbox has; tracing oneself is
        // always allowed).
        let unconfined = syscall_attempts(ConfinementProfile::Off).await;
        assert_eq!(unconfined.len(), 7, "{unconfined:?}");
        assert_eq!(unconfined[0], "ptrace ok");
    }

    /// What a child confined by `confinement` printed, one `name outcome` line each, after
    /// trying to read `secret` and create a file in `folder` (both outside what a sandbox may
    /// use, as main's configuration directory is) and to write in its `TMPDIR`; then its
    /// `TMPDIR`. Also returns the directory the host gave it and whether it existed after the
    /// child was reaped.
    async fn file_attempts(
        confinement: ConfinementProfile,
        secret: &Path,
        folder: &Path,
    ) -> (Vec<String>, Option<u32>, PathBuf, bool) {
        let script = "import os, sys\n\
             def attempt(name, action):\n    \
                 try:\n        \
                     action()\n        \
                     print(name, 'ok', flush=True)\n    \
                 except OSError as error:\n        \
                     print(name, 'EACCES' if error.errno == 13 else 'errno%d' % error.errno, flush=True)\n\
             def write(path):\n    \
                 with open(path, 'w') as file:\n        \
                     file.write('x')\n\
             attempt('read_secret', lambda: open(sys.argv[1]).read())\n\
             attempt('create_in_folder', lambda: write(os.path.join(sys.argv[2], 'planted')))\n\
             attempt('write_tmpdir', lambda: write(os.path.join(os.environ['TMPDIR'], 'scratch')))\n\
             print('tmpdir', os.environ['TMPDIR'], flush=True)\n";
        let spec = python_spec(
            "files",
            confinement,
            script,
            &[secret.as_os_str(), folder.as_os_str()],
        );
        let (mut child, pipes) = SandboxProcess::spawn(&spec).expect("spawns");
        let private_tmp = child.private_tmp().to_owned();
        let landlock_abi = child.landlock_abi();
        let output = read_all(pipes).await;
        let status = child.wait().await.expect("reaped");
        assert!(status.success(), "{status:?}: {output}");
        let left_behind = private_tmp.exists();
        drop(child);
        (
            output.lines().map(str::to_owned).collect(),
            landlock_abi,
            private_tmp,
            left_behind,
        )
    }

    #[tokio::test]
    async fn the_default_profile_confines_files_to_the_private_tmp_and_off_does_not() {
        let kernel_abi = crate::confinement::kernel_landlock_abi();
        assert!(
            kernel_abi > 0,
            "the machine's kernel has no Landlock: nothing to prove"
        );
        // Main's configuration directory stands outside what a sandbox may use like this one.
        let config_dir = tempfile::tempdir().expect("temp dir");
        let secret = config_dir.path().join("core.config_entries");
        std::fs::write(&secret, "credentials").expect("writes");

        let (confined, abi, private_tmp, left_behind) =
            file_attempts(ConfinementProfile::Default, &secret, config_dir.path()).await;
        assert_eq!(
            confined,
            [
                "read_secret EACCES".to_owned(),
                "create_in_folder EACCES".to_owned(),
                "write_tmpdir ok".to_owned(),
                format!("tmpdir {}", private_tmp.display()),
            ],
            "under the default profile"
        );
        assert_eq!(abi, Some(kernel_abi));
        assert!(
            !left_behind,
            "the private tmp is removed once the child is reaped"
        );
        assert!(!config_dir.path().join("planted").exists());

        let (unconfined, abi, private_tmp, left_behind) =
            file_attempts(ConfinementProfile::Off, &secret, config_dir.path()).await;
        assert_eq!(
            unconfined,
            [
                "read_secret ok".to_owned(),
                "create_in_folder ok".to_owned(),
                "write_tmpdir ok".to_owned(),
                format!("tmpdir {}", private_tmp.display()),
            ],
            "with the profile off"
        );
        assert_eq!(abi, None);
        assert!(!left_behind);
    }

    #[tokio::test]
    async fn a_missing_addition_fails_the_spawn_rather_than_start_the_child() {
        let spec = SpawnSpec {
            group: "missing".into(),
            argv: vec!["/bin/true".into()],
            transport: ChildTransport::Unix,
            limits: ResourceLimits::default(),
            credentials: None,
            confinement: ConfinementProfile::Default,
            confinement_paths: vec![(
                PathBuf::from("/nonexistent/serial-adapter"),
                PathAccess::ReadWrite,
            )],
        };
        let result = SandboxProcess::spawn(&spec);
        assert!(
            matches!(result, Err(SpawnError::Confinement { .. })),
            "{:?}",
            result.err()
        );
    }

    #[tokio::test]
    async fn a_sandbox_runs_without_any_capability_even_under_a_root_main() {
        let spec = SpawnSpec {
            group: "caps".into(),
            argv: vec!["/bin/sleep".into(), "30".into()],
            transport: ChildTransport::Unix,
            limits: ResourceLimits::default(),
            credentials: None,
            confinement: ConfinementProfile::Default,
            confinement_paths: Vec::new(),
        };
        let (mut child, _) = SandboxProcess::spawn(&spec).expect("spawns");
        let pid = child.pid();
        // The child has exec'd once its command line is sleep's.
        tokio::time::timeout(Duration::from_secs(30), async {
            while !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with("/bin/sleep")
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the child exec'd");
        let sets = capability_sets(pid);
        let ours = capability_sets(std::process::id());
        child.kill().await;
        let set = |sets: &[(String, u64)], name: &str| {
            sets.iter()
                .find(|(set, _)| set == name)
                .map(|(_, value)| *value)
                .expect("set listed")
        };
        for name in ["Inh", "Prm", "Eff", "Amb"] {
            assert_eq!(set(&sets, name), 0, "Cap{name} of the sandbox: {sets:?}");
        }
        // The bounding set can be emptied only by a main that may (root, `CAP_SETPCAP`); such a
        // main is where it matters, since a root child would get its capabilities back from it
        // at exec.
        if set(&ours, "Eff") & (1 << 8) != 0 {
            assert_eq!(set(&sets, "Bnd"), 0, "CapBnd of the sandbox: {sets:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_printing_without_end_costs_a_bounded_log() {
        // 50,000 lines of 5,000 bytes: 250 MB of stderr.
        let line = format!("{}\n", "e".repeat(5000));
        let output = line.repeat(50_000);
        let (mut lines, mut logged_bytes, mut summaries) = (0usize, 0usize, Vec::new());
        forward_lines_to(output.as_bytes(), |forwarded| match forwarded {
            Forwarded::Line(text, dropped) => {
                assert!(text.len() <= MAX_LOG_LINE_BYTES);
                assert_eq!(dropped, 5000 - MAX_LOG_LINE_BYTES);
                lines += 1;
                logged_bytes += text.len();
            }
            Forwarded::Summary(suppressed) => summaries.push(suppressed),
        })
        .await;
        assert!(lines <= MAX_LOG_LINES_PER_WINDOW as usize, "{lines} lines");
        assert!(logged_bytes <= MAX_LOG_BYTES_PER_WINDOW);
        assert!(lines > 0);
        assert_eq!(summaries.len(), 1, "one summary at the end");
        assert_eq!(summaries[0].lines as usize + lines, 50_000);
    }

    #[test]
    fn a_line_is_forwarded_at_the_level_it_names() {
        use LineLevel::*;
        let cases = [
            // tracing's default line, the runtime's own (no ANSI when not on a terminal).
            (
                "2026-11-29T09:16:06.888835Z ERROR cannot open the channel to main error=refused",
                Error,
                "cannot open the channel to main error=refused",
            ),
            (
                "2026-11-29T09:16:06.888835Z  WARN sandbox_runtime::entries: slow",
                Warn,
                "sandbox_runtime::entries: slow",
            ),
            ("2026-11-29T09:16:06Z  INFO ready", Info, "ready"),
            ("DEBUG demo: polled", Debug, "demo: polled"),
            ("TRACE x", Trace, "x"),
            ("WARNING old style", Warn, "old style"),
            ("CRITICAL disk gone", Error, "disk gone"),
            ("ERROR", Error, ""),
            // No level: INFO, the line whole.
            (
                "thread 'main' panicked at x.rs:1",
                Info,
                "thread 'main' panicked at x.rs:1",
            ),
            ("disk ERROR rate 3", Info, "disk ERROR rate 3"),
            (
                "error lowercase is not a level",
                Info,
                "error lowercase is not a level",
            ),
            ("ERRORS 3", Info, "ERRORS 3"),
            ("", Info, ""),
        ];
        for (line, level, message) in cases {
            assert_eq!(parse_log_line(line), (level, message), "{line:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_child_is_logged_whole() {
        let mut seen = Vec::new();
        forward_lines_to(&b"one\r\ntwo\nthree"[..], |forwarded| {
            if let Forwarded::Line(text, dropped) = forwarded {
                seen.push((text.to_owned(), dropped));
            } else {
                panic!("nothing suppressed");
            }
        })
        .await;
        assert_eq!(
            seen,
            [("one".into(), 0), ("two".into(), 0), ("three".into(), 0)]
        );
    }
}
