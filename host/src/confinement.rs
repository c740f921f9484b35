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

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// How a group's sandbox is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfinementProfile {
    /// The syscall filter of [`DENIED_SYSCALLS`].
    #[default]
    Default,
    /// No syscall filter (capabilities are still dropped): for diagnosing a sandbox that the
    /// filter stops, and as the baseline the tests prove the filter against.
    Off,
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
