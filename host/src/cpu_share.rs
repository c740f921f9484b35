//! A group's fair share of the machine: a sandbox that keeps more than its share of a CPU busy
//! is moved to a lower scheduling priority, so main and the quiet groups next to it keep their
//! latency.
//!
//! Main's own side of a flood is bounded by the channel reader's turns and share
//! (`sandbox_proto::channel::READER_TURN_FRAMES`, `READER_SHARE_BUSY`), but a sandbox spinning
//! as fast as it can is a process of its own: on a machine with few CPUs it competes with main
//! and with the other groups' sandboxes at their priority, and their calls wait in the kernel's
//! run queue (in the bench's `flood` section, runs with the flooding sandbox at main's priority
//! showed a quiet neighbour's service-call p99 in milliseconds, runs with it demoted never). The
//! kernel schedules by priority, not by group, so the supervisor samples the process's CPU time
//! and whether main's reader of its channel had to rest (the sandbox sends more than main gives
//! one group) every [`CpuShareConfig::interval`] and, once [`SUSTAINED_INTERVALS`] intervals in
//! a row used more than [`CpuShareConfig::limit`] of a CPU or saw the reader rest, renices the whole process group (every thread of the
//! sandbox and of what it started) to [`CpuShareConfig::nice`]. The sandbox still gets every
//! CPU cycle nobody else wants; it only stops winning the contended ones. An unprivileged main
//! cannot raise a priority back (`RLIMIT_NICE`), so the demotion lasts for the life of that
//! process; its successor after a restart starts at main's priority again.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use sandbox_proto::channel::READER_SHARE_WINDOW;

/// The kernel's unit for the CPU times in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux
/// architecture whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// How a group's CPU use is watched and what happens past its share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShareConfig {
    /// Time between two samples of the process's CPU time.
    pub interval: Duration,
    /// The share of one CPU a sandbox may use over an interval before it is demoted (0.5: half
    /// a CPU).
    pub limit: f64,
    /// The nice value a demoted sandbox runs at (1–19; main runs at its own, usually 0).
    pub nice: i32,
}

/// See [`CpuShareConfig::interval`]: long enough that a burst (a setup, a poll) does not count,
/// short enough that a flood is demoted within [`SUSTAINED_INTERVALS`] of them (a second).
pub const DEFAULT_CPU_SHARE_INTERVAL: Duration = Duration::from_millis(500);

/// See [`CpuShareConfig::limit`]: an integration keeping a quarter of a CPU busy for a second
/// is far beyond what talking to devices takes (the demo's whole scenario uses a few percent),
/// and a flood costs the flooding sandbox much less CPU than it costs main (the bench's flooding
/// sandbox, producing what main takes, used 16–30 %).
pub const DEFAULT_CPU_SHARE_LIMIT: f64 = 0.25;

/// Intervals in a row over the limit before a sandbox is demoted: a start or a setup, a burst
/// that ends, does not count.
pub const SUSTAINED_INTERVALS: u32 = 2;

/// See [`CpuShareConfig::nice`]: low enough that a quiet group's wake-up wins against it, not so
/// low that it starves behind every background job of the machine.
pub const DEFAULT_DEMOTED_NICE: i32 = 10;

impl Default for CpuShareConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_CPU_SHARE_INTERVAL,
            limit: DEFAULT_CPU_SHARE_LIMIT,
            nice: DEFAULT_DEMOTED_NICE,
        }
    }
}

/// The CPU time (user + system, every thread, in `USER_HZ` ticks) the process `pid` has used.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    stat_field(pid, "CPU times", parse_cpu_ticks)
}

/// The nice value of the process `pid`'s main thread (field 19 of `/proc/<pid>/stat`).
pub fn nice_of(pid: u32) -> io::Result<i32> {
    stat_field(pid, "nice value", |stat| field(stat, 19)?.parse().ok())
}

/// The resident memory of the process `pid` in bytes (field 24 of `/proc/<pid>/stat`, in pages).
pub fn resident_bytes(pid: u32) -> io::Result<u64> {
    let pages: u64 = stat_field(pid, "resident set size", |stat| {
        field(stat, 24)?.parse().ok()
    })?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096);
    Ok(pages.saturating_mul(page_size))
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`).
fn process_group_of(pid: u32) -> io::Result<u32> {
    stat_field(pid, "process group", |stat| field(stat, 5)?.parse().ok())
}

/// What `parse` finds in `/proc/<pid>/stat`, or an error naming `what` was missing.
fn stat_field<T>(pid: u32, what: &str, parse: impl Fn(&str) -> Option<T>) -> io::Result<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no {what}"),
        )
    })
}

/// Field `number` (1-based, as `man proc` counts) of a `/proc/<pid>/stat` line, from the state
/// (field 3) on. The command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn field(stat: &str, number: usize) -> Option<&str> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(number.checked_sub(3)?)
}

/// utime (field 14) + stime (field 15) from a `/proc/<pid>/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let user: u64 = field(stat, 14)?.parse().ok()?;
    let system: u64 = field(stat, 15)?.parse().ok()?;
    Some(user + system)
}

/// Whether `used` ticks over `elapsed` are more than `limit` of one CPU.
fn over_share(used_ticks: u64, elapsed: Duration, limit: f64) -> bool {
    let seconds = elapsed.as_secs_f64();
    seconds > 0.0 && used_ticks as f64 / USER_HZ > limit * seconds
}

/// Rests of main's reader in one interval that mark a flood: the reader rested in a quarter of
/// the interval's share windows (`sandbox_proto::channel::READER_SHARE_WINDOW`). A flood makes
/// it rest in nearly every window; a burst that ends (a setup pushing every first state) in a
/// few.
fn flooding_rests(interval: Duration) -> u64 {
    let windows = interval.as_micros() / READER_SHARE_WINDOW.as_micros().max(1);
    u64::try_from(windows / 4).unwrap_or(u64::MAX).max(1)
}

/// Renices the sandbox `pid`: each of its threads (`/proc/<pid>/task`, one by one, since on
/// Linux a nice value belongs to a thread), then its process group (what it started), when the
/// group is still the one main gave it. A sandbox that moved itself to another process group
/// keeps its children out of the demotion, not itself; that is logged. Threads and processes it
/// starts later inherit the demoted value.
fn renice_sandbox(pid: u32, nice: i32, group: &str) -> io::Result<()> {
    let mut reniced = 0usize;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = task?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok());
        // A thread that ended between the listing and the call is no failure.
        if let Some(tid) = tid
            && renice(Renice::Thread(tid), nice).is_ok()
        {
            reniced += 1;
        }
    }
    if reniced == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no thread of {pid} could be reniced"),
        ));
    }
    if process_group_of(pid)? == pid {
        renice(Renice::Group(pid), nice)?;
    } else {
        tracing::warn!(%group, pid, "sandbox left the process group main gave it: what it started is not demoted with it");
    }
    Ok(())
}

/// What [`renice`] applies to.
#[derive(Debug, Clone, Copy)]
enum Renice {
    /// One thread, by its id (`PRIO_PROCESS` names one thread on Linux).
    Thread(u32),
    /// Every thread of every process in a process group.
    Group(u32),
}

/// `setpriority` for `target`.
#[allow(unsafe_code)]
fn renice(target: Renice, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = match target {
        Renice::Thread(tid) => unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::id_t::from(tid), nice)
        },
        Renice::Group(pgid) => unsafe {
            libc::setpriority(libc::PRIO_PGRP, libc::id_t::from(pgid), nice)
        },
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Watches the sandbox `pid` (also its process group id) for as long as it runs: every interval
/// it samples the process's CPU time and `reader_rests` (how often main's reader of the group's
/// channel has rested, `ChannelStats::reader_rests`), and demotes the sandbox once it was past
/// its share, by either measure, [`SUSTAINED_INTERVALS`] in a row (then only waits). Never
/// returns; the supervisor drops it when the process ends.
pub async fn watch(
    pid: u32,
    config: CpuShareConfig,
    group: &str,
    reader_rests: impl Fn() -> u64,
) -> Infallible {
    let mut last = cpu_ticks(pid).ok();
    let mut last_rests = reader_rests();
    let mut last_at = tokio::time::Instant::now();
    let mut over_in_a_row = 0;
    loop {
        tokio::time::sleep(config.interval).await;
        let now = cpu_ticks(pid).ok();
        let rests = reader_rests();
        let now_at = tokio::time::Instant::now();
        let busy = matches!((last, now), (Some(before), Some(after))
            if over_share(after.saturating_sub(before), now_at - last_at, config.limit));
        let flooding = rests.saturating_sub(last_rests) >= flooding_rests(config.interval);
        let over = busy || flooding;
        last_rests = rests;
        over_in_a_row = if over { over_in_a_row + 1 } else { 0 };
        if over_in_a_row >= SUSTAINED_INTERVALS {
            match renice_sandbox(pid, config.nice, group) {
                Ok(()) if flooding => tracing::warn!(
                    %group, pid, nice = config.nice,
                    "sandbox kept main's reader busy past its share for {:?}: it now runs at a lower priority than main and the quiet groups",
                    config.interval * SUSTAINED_INTERVALS
                ),
                Ok(()) => tracing::warn!(
                    %group, pid, nice = config.nice,
                    "sandbox used more than {:.0} % of a CPU for {:?}: it now runs at a lower priority than main and the quiet groups",
                    config.limit * 100.0, config.interval * SUSTAINED_INTERVALS
                ),
                Err(error) => {
                    tracing::warn!(%group, pid, %error, "could not lower the priority of a sandbox past its CPU share")
                }
            }
            return std::future::pending().await;
        }
        (last, last_at) = (now, now_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (a (weird) name) R 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 \
                    12345 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) R 1 2"), None);
    }

    #[test]
    fn a_flood_is_a_reader_resting_in_a_quarter_of_the_windows() {
        assert_eq!(flooding_rests(Duration::from_millis(500)), 12);
        assert_eq!(flooding_rests(Duration::from_millis(1)), 1);
    }

    #[test]
    fn the_share_is_a_fraction_of_one_cpu_over_the_interval() {
        let half_second = Duration::from_millis(500);
        // 30 ticks = 0.3 s of CPU in 0.5 s: 60 % of a CPU.
        assert!(over_share(30, half_second, 0.5));
        assert!(!over_share(25, half_second, 0.5));
        assert!(!over_share(0, half_second, 0.5));
        assert!(!over_share(100, Duration::ZERO, 0.5));
    }

    #[test]
    fn this_process_reads_its_own_cpu_time_nice_value_and_process_group() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!((-20..=19).contains(&nice_of(pid).expect("nice")));
        assert_eq!(
            process_group_of(pid).expect("process group"),
            u32::try_from(nix::unistd::getpgrp().as_raw()).expect("a pid")
        );
    }

    /// A child in its own process group, killed and reaped on drop.
    struct Child(std::process::Child);

    impl Child {
        fn spawn(script: &str) -> Self {
            use std::os::unix::process::CommandExt;
            Self(
                std::process::Command::new("/bin/sh")
                    .args(["-c", script])
                    .process_group(0)
                    .spawn()
                    .expect("sh starts"),
            )
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A short interval, and a demotion to a nice value this test process can set.
    fn quick(limit: f64) -> CpuShareConfig {
        CpuShareConfig {
            interval: Duration::from_millis(100),
            limit,
            nice: demoted_nice(),
        }
    }

    /// Seven steps below this process, which must leave room for it: a test process already at
    /// nice 13 or more could not tell a demotion from nothing.
    fn demoted_nice() -> i32 {
        let own = nice_of(std::process::id()).expect("nice");
        assert!(
            own <= 12,
            "this test needs a process nice of at most 12, not {own}"
        );
        own + 7
    }

    #[tokio::test]
    async fn a_busy_sandbox_is_demoted_and_an_idle_one_is_not() {
        let busy = Child::spawn("while :; do :; done");
        let idle = Child::spawn("exec sleep 60");
        let (busy_pid, idle_pid) = (busy.0.id(), idle.0.id());
        let base = nice_of(idle_pid).expect("nice");
        // A spinning shell keeps far more than 5 % of a CPU even on a loaded machine; the
        // bound only guards against a hang.
        let watching =
            tokio::spawn(async move { watch(busy_pid, quick(0.05), "busy", || 0).await });
        let demoted = tokio::time::timeout(Duration::from_secs(60), async {
            while nice_of(busy_pid).expect("nice") != demoted_nice() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        watching.abort();
        assert!(demoted.is_ok(), "the spinning sandbox was never demoted");
        // A sleeping one, watched for ten intervals, keeps its priority (the limit leaves room
        // for the CPU its start took, a few ticks at most).
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            watch(idle_pid, quick(0.5), "idle", || 0),
        )
        .await;
        assert_eq!(nice_of(idle_pid).expect("nice"), base);
    }

    #[tokio::test]
    async fn a_sandbox_whose_channel_keeps_mains_reader_resting_is_demoted() {
        // Idle in CPU terms (a flood costs the flooding process little), but main's reader of
        // its channel rests every interval.
        let flooding = Child::spawn("exec sleep 60");
        let pid = flooding.0.id();
        let rests = std::sync::atomic::AtomicU64::new(0);
        let demoted = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                never = watch(pid, quick(0.5), "flooding", || {
                    // The reader rested in every window since the last sample.
                    rests.fetch_add(10, std::sync::atomic::Ordering::Relaxed) + 10
                }) => match never {},
                () = async {
                    while nice_of(pid).expect("nice") != demoted_nice() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => {}
            }
        })
        .await;
        assert!(demoted.is_ok(), "the flooding sandbox was never demoted");
    }

    #[tokio::test]
    async fn a_sandbox_that_left_its_process_group_is_demoted_all_the_same() {
        // It joins this test's process group (one of its session), then spins.
        let own_group = nix::unistd::getpgrp().as_raw();
        let escaped = Child::spawn(&format!(
            "exec python3 -c 'import os; os.setpgid(0, {own_group})\nwhile True: pass'"
        ));
        let pid = escaped.0.id();
        let demoted = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                never = watch(pid, quick(0.05), "escaped", || 0) => match never {},
                () = async {
                    while nice_of(pid).expect("nice") != demoted_nice() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => {}
            }
        })
        .await;
        assert!(demoted.is_ok(), "the sandbox escaped its demotion");
        assert_eq!(
            process_group_of(pid).expect("process group"),
            u32::try_from(own_group).expect("a pgid"),
            "it did leave its own group"
        );
        assert_eq!(
            nice_of(std::process::id()).expect("nice"),
            demoted_nice() - 7,
            "the process group it joined was not demoted with it"
        );
    }
}
