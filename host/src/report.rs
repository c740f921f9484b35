//! What an operator sees of the sandbox groups: one plain, serialisable report per group
//! (state, process, budget, last exit, entries, entities, memory, channel counters and
//! refusals), built from the supervisors' status and the bridges, for a status command, a
//! control API or metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use sandbox_proto::channel::LATENCY_BUCKETS_US;

use crate::groups::Groups;
use crate::manager::{GroupState, GroupStatus};

/// One group, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group's name (`built-in`, `custom-<domain>`, ...).
    pub name: String,
    /// `stopped`, `starting`, `running`, `backing_off` or `failed`.
    pub state: String,
    /// The running child's pid.
    pub pid: Option<u32>,
    /// Seconds since the running child said `ready`.
    pub uptime_seconds: Option<f64>,
    /// While waiting out the budget's backoff: seconds until the next start.
    pub backoff_seconds: Option<f64>,
    /// Starts the restart budget counts in its window now.
    pub starts_in_window: u32,
    /// The starts the budget allows in its window.
    pub max_starts: u32,
    /// The budget's window, in seconds.
    pub window_seconds: f64,
    /// Every start since the hub started.
    pub total_starts: u64,
    /// Crash respawns since the group was last started by hand.
    pub restarts: u32,
    /// How the last child ended, in words (`killed by signal 9 (SIGKILL)`).
    pub last_exit: Option<String>,
    /// Why: `crashed`, `hung`, `failed start`, `incompatible` or `stopped`.
    pub last_exit_cause: Option<String>,
    /// Why the group failed, when it did.
    pub failure: Option<String>,
    /// The protocol version the running child speaks.
    pub protocol_version: Option<String>,
    /// The config entries main placed in this group.
    pub entries: Vec<String>,
    /// Proxies main holds for the group's entities now.
    pub entities: usize,
    /// The running child's resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// The Landlock ABI the latest child's files were confined with: 0 when the kernel has
    /// none (not confined); none before a child, or under a profile that confines no files.
    #[serde(default)]
    pub landlock_abi: Option<u32>,
    /// The confinement profile of the latest child (`default` or `off`); none before a child.
    #[serde(default)]
    pub confinement: Option<String>,
    /// Whether the latest child runs under the syscall filter; none before a child.
    #[serde(default)]
    pub seccomp: Option<bool>,
    /// Counters of the running child's channel (reset with each process).
    pub channel: ChannelCounters,
    /// Refusals per trust gate, across every process of the group (only gates that refused).
    pub refusals: BTreeMap<String, u64>,
}

/// A channel's counters, as main sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCounters {
    /// Frames read from the sandbox.
    pub frames_in: u64,
    /// Frames written to it.
    pub frames_out: u64,
    /// Calls main sent.
    pub calls_sent: u64,
    /// Calls from the sandbox main handled.
    pub calls_handled: u64,
    /// Pushes from the sandbox main handled.
    pub pushes_handled: u64,
    /// Frames that did not decode, dropped.
    pub frames_dropped: u64,
    /// Calls from the sandbox answered `overloaded`.
    pub calls_shed: u64,
    /// Pushes from the sandbox dropped for overload.
    pub pushes_shed: u64,
    /// Times main's reader rested to keep to its share.
    pub reader_rests: u64,
    /// Messages per type: `sent` by main to the sandbox, `received` from it.
    pub messages: Vec<MessageTraffic>,
    /// How long the sandbox took to answer main's calls.
    pub call_latency: CallLatency,
}

/// One message type's traffic between main and a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageTraffic {
    /// The message type (`call_service`, `state_changed`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Sent by main.
    pub sent: u64,
    /// Received from the sandbox and taken by main.
    pub received: u64,
}

/// The latency of main's calls into a sandbox: a histogram with its median and 99th
/// percentile (each the upper bound of the bucket holding it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLatency {
    /// Calls answered.
    pub count: u64,
    /// Their total latency, µs.
    pub sum_us: u64,
    /// Upper bounds of the buckets, µs ([`sandbox_proto::channel::LATENCY_BUCKETS_US`]).
    pub bucket_bounds_us: Vec<u64>,
    /// Calls per bucket (not cumulative), one more than the bounds: the last is above them.
    pub buckets: Vec<u64>,
    /// The median's bucket bound, µs.
    pub p50_us: Option<u64>,
    /// The 99th percentile's bucket bound, µs (`u64::MAX` past the last bound).
    pub p99_us: Option<u64>,
}

impl GroupReport {
    /// Whether the group gave up (its budget is spent or its protocol is incompatible).
    pub fn is_failed(&self) -> bool {
        self.state == "failed"
    }
}

/// The state's name in a report; a group waiting out a backoff is `backing_off`.
fn state_name(status: &GroupStatus) -> &'static str {
    match status.state {
        GroupState::Stopped => "stopped",
        GroupState::Starting if status.backoff_until.is_some() => "backing_off",
        GroupState::Starting => "starting",
        GroupState::Running => "running",
        GroupState::Failed => "failed",
    }
}

/// Every group's report, by name.
pub fn group_reports(groups: &Groups) -> Vec<GroupReport> {
    let now = Instant::now();
    let entries = groups.core().config_entries().entries(None);
    let mut names = groups.names();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let handle = groups.get(&name)?;
            let status = handle.manager.status();
            let policy = &handle.manager.config().restart;
            let bridge = groups.bridge(&name);
            let stats = bridge
                .as_ref()
                .filter(|bridge| bridge.is_live())
                .map(|bridge| bridge.channel().stats());
            Some(GroupReport {
                state: state_name(&status).to_owned(),
                pid: status.pid,
                uptime_seconds: status
                    .running_since
                    .map(|since| now.saturating_duration_since(since).as_secs_f64()),
                backoff_seconds: status
                    .backoff_until
                    .map(|until| until.saturating_duration_since(now).as_secs_f64()),
                starts_in_window: status.starts_in_window,
                max_starts: policy.max_starts,
                window_seconds: policy.window.as_secs_f64(),
                total_starts: status.total_starts,
                restarts: status.restarts,
                last_exit: status.last_exit.clone(),
                last_exit_cause: status
                    .last_exit_cause
                    .map(|cause| cause.as_str().to_owned()),
                failure: status.failure.clone(),
                protocol_version: status.protocol_version.clone(),
                entries: entries
                    .iter()
                    .filter(|entry| entry.sandbox.as_deref() == Some(name.as_str()))
                    .map(|entry| entry.entry_id.clone())
                    .collect(),
                entities: bridge.as_ref().map_or(0, |bridge| bridge.entity_count()),
                rss_bytes: status
                    .pid
                    .and_then(|pid| crate::cpu_share::resident_bytes(pid).ok()),
                landlock_abi: status.landlock_abi,
                confinement: status
                    .confinement
                    .map(|profile| profile.as_str().to_owned()),
                seccomp: status.seccomp,
                channel: stats
                    .map(|stats| ChannelCounters {
                        frames_in: stats.frames_in,
                        frames_out: stats.frames_out,
                        calls_sent: stats.calls_sent,
                        calls_handled: stats.calls_handled,
                        pushes_handled: stats.pushes_handled,
                        frames_dropped: stats.undecodable_frames,
                        calls_shed: stats.calls_shed,
                        pushes_shed: stats.pushes_shed,
                        reader_rests: stats.reader_rests,
                        messages: stats
                            .messages
                            .iter()
                            .map(|count| MessageTraffic {
                                type_name: count.type_name.to_owned(),
                                sent: count.sent,
                                received: count.received,
                            })
                            .collect(),
                        call_latency: CallLatency {
                            count: stats.call_latency.count,
                            sum_us: stats.call_latency.sum_us,
                            bucket_bounds_us: LATENCY_BUCKETS_US.to_vec(),
                            p50_us: stats.call_latency.quantile_us(0.5),
                            p99_us: stats.call_latency.quantile_us(0.99),
                            buckets: stats.call_latency.buckets,
                        },
                    })
                    .unwrap_or_default(),
                refusals: handle
                    .refused
                    .snapshot()
                    .into_iter()
                    .filter(|(_, count)| *count > 0)
                    .map(|(gate, count)| (gate.name().to_owned(), count))
                    .collect(),
                name,
            })
        })
        .collect()
}

/// A duration as an operator reads it: `3 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        3600..86400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} d {} h", seconds / 86400, seconds % 86400 / 3600),
    }
}
