//! What the kernel forbids a sandbox: the confinement profile applied by the host to every
//! group's child between fork and exec (a custom integration is its own binary and a sandbox in
//! another language speaks only the wire, so neither is trusted to confine itself).
//!
//! Today's profile ([`ConfinementProfile::Default`]) installs a seccomp-bpf filter that answers
//! `EPERM` to the syscalls no integration needs and a hostile one would use to reach out of its
//! process: debugging or reading other processes (`ptrace`, `process_vm_readv`/`writev`,
//! `kcmp`, `pidfd_getfd`), mounting and namespaces (`mount`, `umount2`, `pivot_root`, `chroot`,
//! `unshare`, `setns`, the new mount API), kernel attack surface (`bpf`, `perf_event_open`,
//! `userfaultfd`, the keyring, `io_uring`), and the machine itself (module loading, `kexec`,
//! `reboot`, swap, accounting, the clock), and sockets of any family but
//! [`ALLOWED_SOCKET_FAMILIES`] (local, IPv4, IPv6, netlink). Everything else is allowed: an
//! integration keeps its network, files, threads and child processes (`command_line` runs
//! shells). A filter returns an
//! error rather than killing the process, so a library probing for a feature falls back.
//!
//! The filter is compiled before the fork (the child may not allocate) and checks the
//! architecture, so a 32-bit syscall entry cannot get around it. Capabilities are dropped by
//! [`crate::process`] for every profile.
//!
//! The same profile confines the sandbox's files with a Landlock ruleset
//! ([`filesystem_ruleset`]): every filesystem access right the kernel knows is handled, and only
//! what a program needs to run is allowed — the system's programs and libraries
//! ([`SYSTEM_EXECUTABLE_PATHS`] and the directory of the program itself, read and execute), the
//! few `/etc` files of [`SYSTEM_CONFIGURATION_PATHS`] (read), `/proc` and `/sys` (read), the
//! [`DEVICE_PATHS`] (read and write), the group's private temporary directory (everything) and
//! the group's own additions ([`PathAccess`]). Main's configuration directory, its `.storage`
//! (every integration's credentials) and the other groups' store folders are outside all of
//! them. The ruleset is created (its paths opened) before the fork; the child only hands its
//! descriptor to `landlock_restrict_self`. A kernel without Landlock starts the group without
//! it (the applied ABI, 0, says so); one that knows only an older ABI gets the rights that ABI
//! knows (best effort).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// How a group's sandbox is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfinementProfile {
    /// The syscall filter of [`DENIED_SYSCALLS`] and the filesystem ruleset of
    /// [`filesystem_ruleset`].
    #[default]
    Default,
    /// No syscall filter and no filesystem ruleset (capabilities are still dropped): for
    /// diagnosing a sandbox that the confinement stops, and as the baseline the tests prove it
    /// against.
    Off,
    /// [`ConfinementProfile::Default`], plus no network (the sandbox gets a network namespace
    /// of its own, with only a loopback that is down) and at most [`STRICT_MAX_PROCESSES`]
    /// processes of its user. For integrations that need no network. A group under it does not
    /// start at all when the kernel cannot enforce it (no Landlock, or no network namespace for
    /// this main: creating one needs root or a user namespace main does not make).
    Strict,
}

/// `RLIMIT_NPROC` under [`ConfinementProfile::Strict`]: processes the sandbox's user may have.
/// The kernel counts every process of the user, and does not apply it to root: it bounds a
/// fork bomb in a group run under its own uid.
pub const STRICT_MAX_PROCESSES: u64 = 256;

impl ConfinementProfile {
    /// Its name in the configuration file and in a group's status: `default` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfinementProfile::Default => "default",
            ConfinementProfile::Off => "off",
            ConfinementProfile::Strict => "strict",
        }
    }

    /// Whether the sandbox gets a network namespace of its own (no network).
    pub fn isolates_network(self) -> bool {
        self == ConfinementProfile::Strict
    }
}

/// Why a profile could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ConfinementError {
    /// The machine's architecture has no syscall table here.
    #[error("no syscall filter for the architecture {0}")]
    Architecture(String),
    /// The filter did not compile.
    #[error("the syscall filter did not compile: {0}")]
    Filter(#[from] seccompiler::BackendError),
    /// A path the sandbox must be allowed could not be opened.
    #[error("cannot open {path:?} for the filesystem ruleset: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the filesystem ruleset or one of its rules.
    #[error("the filesystem ruleset could not be built: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    /// The profile asks for what this kernel cannot enforce (`strict` without Landlock).
    #[error("the {profile} profile cannot be enforced here: {what}")]
    Unenforceable {
        /// The profile.
        profile: &'static str,
        /// What is missing.
        what: &'static str,
    },
}

/// The syscalls a sandbox is refused (`EPERM`) under [`ConfinementProfile::Default`], by name
/// and number on this architecture.
pub const DENIED_SYSCALLS: &[(&str, libc::c_long)] = &[
    // Other processes: attach, read or write their memory, compare or steal their files.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    // Mounts and namespaces.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // Kernel attack surface no integration needs.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // The machine itself.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("quotactl", libc::SYS_quotactl),
];

/// The socket families a sandbox may open under [`ConfinementProfile::Default`]: local sockets,
/// IPv4, IPv6, and netlink (the C library's interface and route queries). Any other family
/// (`AF_PACKET`, `AF_BLUETOOTH`, `AF_ALG`, `AF_VSOCK`, ...) is refused with `EPERM` by `socket`.
pub const ALLOWED_SOCKET_FAMILIES: &[(&str, libc::c_int)] = &[
    ("AF_UNIX", libc::AF_UNIX),
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
    ("AF_NETLINK", libc::AF_NETLINK),
];

/// The syscall filter of `profile`, compiled for this machine; `None` when the profile has
/// none.
pub fn syscall_filter(profile: ConfinementProfile) -> Result<Option<BpfProgram>, ConfinementError> {
    if profile == ConfinementProfile::Off {
        return Ok(None);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| ConfinementError::Architecture(std::env::consts::ARCH.to_owned()))?;
    // An empty rule list matches the syscall whatever its arguments. (`c_long` is `i64` on
    // every architecture seccompiler knows, which makes the conversion look useless there.)
    #[allow(clippy::useless_conversion)]
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|&(_, number)| (i64::from(number), Vec::new()))
        .collect();
    // `socket` matches (is refused) when its family is none of the allowed ones.
    let other_family = ALLOWED_SOCKET_FAMILIES
        .iter()
        .map(|&(_, family)| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                u64::from(family.unsigned_abs()),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    #[allow(clippy::useless_conversion)]
    rules.insert(
        i64::from(libc::SYS_socket),
        vec![SeccompRule::new(other_family)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    Ok(Some(BpfProgram::try_from(filter)?))
}

/// How a path added to a group's sandbox ([`crate::GroupConfig::confinement_paths`]) may be
/// used, beneath it when it is a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    /// Read files and list directories (a data folder, a sensor's device file).
    Read,
    /// Everything: read, write, create, remove, rename, truncate, and a device's ioctls (a
    /// serial adapter, a folder the integration writes to).
    ReadWrite,
}

/// The newest Landlock ABI whose rights a ruleset handles. A kernel that knows an older ABI
/// gets the rights that one knows ([`CompatLevel::BestEffort`]); nothing the kernel knows is
/// left unhandled.
const NEWEST_LANDLOCK_ABI: ABI = ABI::V10;

/// Directories every sandbox may read and execute beneath: the system's programs, their
/// dynamic loader and libraries (Python's, a shell's, the C library's locales and time zones
/// under `/usr/share/zoneinfo`). Missing ones are skipped.
pub const SYSTEM_EXECUTABLE_PATHS: &[&str] = &["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin"];

/// Files (and folders) of `/etc` every sandbox may read: the loader's cache, certificate
/// authorities (not `/etc/ssl/private`), name resolution, users and groups by name (not
/// `/etc/shadow`), the local time. Missing ones are skipped.
pub const SYSTEM_CONFIGURATION_PATHS: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ssl/certs",
    "/etc/ssl/cert.pem",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
];

/// Kernel information every sandbox may read: its own memory (`/proc/self/statm`), CPU counts
/// and cgroup limits the async runtimes read, and a system monitor's figures. What `/proc`
/// shows of other processes of the same user stays behind the kernel's ptrace access check.
pub const KERNEL_INFORMATION_PATHS: &[&str] = &["/proc", "/sys"];

/// Devices every sandbox may read and write (opened with `O_TRUNC` by a shell's `> /dev/null`).
pub const DEVICE_PATHS: &[&str] = &["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];

/// What a group's sandbox may reach of the filesystem beyond the system's paths.
#[derive(Debug, Clone, Copy)]
pub struct FilesystemAllowances<'a> {
    /// The directory of the program being executed (a build or install folder), read and
    /// execute; `None` when the program was not found (its exec will fail anyway).
    pub program_dir: Option<&'a Path>,
    /// The group's private temporary directory (everything beneath it).
    pub private_tmp: &'a Path,
    /// The group's own additions; each must exist.
    pub additions: &'a [(PathBuf, PathAccess)],
}

/// A Landlock ruleset prepared before the fork, for the child to enforce on itself before its
/// exec.
#[derive(Debug)]
pub struct FilesystemRuleset {
    /// The ruleset's descriptor (close-on-exec); `None` when the kernel has no Landlock.
    fd: Option<OwnedFd>,
    /// The Landlock ABI of the rights the ruleset handles; 0 without Landlock.
    abi: u32,
}

impl FilesystemRuleset {
    /// The Landlock ABI the ruleset is enforced with: 0 when the kernel has no Landlock (the
    /// sandbox's files are then not confined).
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// Enforces the ruleset on the calling process and everything it executes afterwards.
    /// Runs in the child between fork and exec, after `no_new_privs`: one raw syscall on the
    /// descriptor prepared before the fork. (The crate's own `restrict_self` takes the ruleset
    /// by value and builds a status with it, which a `pre_exec` closure, callable more than
    /// once and forbidden to allocate or free, cannot do.)
    #[allow(unsafe_code)]
    pub fn restrict_self(&self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        // SAFETY: integer arguments only; the descriptor stays open for the call (`self` owns
        // it).
        let result = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                fd.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// `LANDLOCK_CREATE_RULESET_VERSION`: asks `landlock_create_ruleset` for the kernel's ABI.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The kernel's Landlock ABI version: 0 when it has no Landlock (not built in, or not enabled
/// at boot).
#[allow(unsafe_code)]
pub fn kernel_landlock_abi() -> u32 {
    // SAFETY: a null attribute of size 0 with the version flag only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(version).unwrap_or(0)
}

/// The filesystem ruleset of `profile` for a sandbox with `allowances`, its paths opened and
/// its descriptor created now (before the fork); `None` when the profile has none. A path that
/// must be allowed and cannot be opened, or a ruleset the kernel refuses, is an error: the
/// group is not started less confined than configured.
pub fn filesystem_ruleset(
    profile: ConfinementProfile,
    allowances: FilesystemAllowances<'_>,
) -> Result<Option<FilesystemRuleset>, ConfinementError> {
    if profile == ConfinementProfile::Off {
        return Ok(None);
    }
    let kernel_abi = kernel_landlock_abi();
    if kernel_abi == 0 && profile == ConfinementProfile::Strict {
        return Err(ConfinementError::Unenforceable {
            profile: profile.as_str(),
            what: "the kernel has no Landlock",
        });
    }
    if kernel_abi == 0 {
        return Ok(Some(FilesystemRuleset { fd: None, abi: 0 }));
    }
    let read_execute = AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let everything = AccessFs::from_all(NEWEST_LANDLOCK_ABI);
    // (path, rights, whether it must exist)
    let mut rules: Vec<(&Path, BitFlags<AccessFs>, bool)> = Vec::new();
    rules.extend(
        SYSTEM_EXECUTABLE_PATHS
            .iter()
            .map(|path| (Path::new(*path), read_execute, false)),
    );
    rules.extend(
        SYSTEM_CONFIGURATION_PATHS
            .iter()
            .chain(KERNEL_INFORMATION_PATHS)
            .map(|path| (Path::new(*path), read, false)),
    );
    rules.extend(
        DEVICE_PATHS
            .iter()
            .map(|path| (Path::new(*path), device, false)),
    );
    if let Some(program_dir) = allowances.program_dir {
        rules.push((program_dir, read_execute, true));
    }
    rules.push((allowances.private_tmp, everything, true));
    rules.extend(allowances.additions.iter().map(|(path, access)| {
        let rights = match access {
            PathAccess::Read => read,
            PathAccess::ReadWrite => everything,
        };
        (path.as_path(), rights, true)
    }));

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(everything)?
        .create()?;
    for (path, rights, required) in rules {
        let opened = match open_path(path) {
            Ok(opened) => opened,
            Err(error)
                if !required
                    && matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
            {
                continue;
            }
            Err(source) => {
                return Err(ConfinementError::Path {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let is_dir = nix::sys::stat::fstat(opened.as_fd())
            .map(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|errno| ConfinementError::Path {
                path: path.to_owned(),
                source: io::Error::from_raw_os_error(errno as i32),
            })?;
        // A file has no directory rights (the kernel refuses a rule that names them).
        let rights = if is_dir {
            rights
        } else {
            rights & AccessFs::from_file(NEWEST_LANDLOCK_ABI)
        };
        ruleset = ruleset.add_rule(PathBeneath::new(opened, rights))?;
    }
    let fd: Option<OwnedFd> = ruleset.into();
    let abi = match fd {
        Some(_) => kernel_abi.min(NEWEST_LANDLOCK_ABI as u32),
        None => 0,
    };
    Ok(Some(FilesystemRuleset { fd, abi }))
}

/// `path` opened for reference only (`O_PATH`), following symbolic links: the rule is on what
/// the path names now.
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_and_off_has_no_filter() {
        let program = syscall_filter(ConfinementProfile::Default)
            .expect("compiles")
            .expect("a filter");
        assert!(!program.is_empty());
        assert!(
            syscall_filter(ConfinementProfile::Off)
                .expect("nothing to compile")
                .is_none()
        );
    }

    #[test]
    fn every_denied_syscall_is_listed_once() {
        let mut numbers: Vec<libc::c_long> = DENIED_SYSCALLS.iter().map(|&(_, n)| n).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED_SYSCALLS.len());
    }
}
