//! Pure readers of the kernel's text files (`/proc/stat`, `/proc/meminfo`, `/proc/loadavg`,
//! `/proc/net/dev`) and the `statvfs` disk figures, with the arithmetic psutil uses.

use std::path::Path;

/// Bytes in a mebibyte.
pub const MIB: f64 = 1024.0 * 1024.0;
/// Bytes in a gibibyte.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Why a kernel file or a disk could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// The file does not have the expected shape.
    #[error("{file} is malformed: {problem}")]
    Malformed {
        /// Which file (`/proc/stat`, ...).
        file: &'static str,
        /// What is missing or wrong.
        problem: String,
    },
    /// The network interface is not in `/proc/net/dev`.
    #[error("network interface {0:?} does not exist")]
    NoInterface(String),
    /// `statvfs` refused the path.
    #[error("cannot read the disk usage of {path}: {message}")]
    Disk {
        /// The path.
        path: String,
        /// What the OS said.
        message: String,
    },
}

fn malformed(file: &'static str, problem: impl Into<String>) -> ReadError {
    ReadError::Malformed {
        file,
        problem: problem.into(),
    }
}

/// Cumulative CPU time since boot, in clock ticks, summed over every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent doing anything but idling or waiting for IO.
    pub busy: u64,
    /// All ticks.
    pub total: u64,
}

/// Reads the aggregate `cpu` line of `/proc/stat` (user nice system idle iowait irq softirq
/// steal; guest time is already inside user, so it is not added again).
pub fn parse_cpu_times(stat: &str) -> Result<CpuTimes, ReadError> {
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some("cpu"))
        .ok_or_else(|| malformed("/proc/stat", "no aggregate cpu line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|err| malformed("/proc/stat", format!("cpu line: {err}")))?;
    if fields.len() < 4 {
        return Err(malformed(
            "/proc/stat",
            "the cpu line has fewer than 4 fields",
        ));
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Percentage of CPU time spent busy between two samples; `None` when no time passed.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    if total == 0 {
        return None;
    }
    let busy = after.busy.saturating_sub(before.busy).min(total);
    Some(busy as f64 * 100.0 / total as f64)
}

/// Memory figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Physical memory.
    pub total: u64,
    /// Memory available to new programs without swapping.
    pub available: u64,
}

impl Memory {
    /// Memory in use (psutil's `total - available`, what Home Assistant reports).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }

    /// Memory in use, in percent of the total.
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.used() as f64 * 100.0 / self.total as f64
    }
}

/// Reads `/proc/meminfo`; kernels without `MemAvailable` (before 3.14) get psutil's
/// fallback `MemFree + Buffers + Cached`.
pub fn parse_meminfo(meminfo: &str) -> Result<Memory, ReadError> {
    let field = |name: &str| -> Result<Option<u64>, ReadError> {
        let Some(line) = meminfo
            .lines()
            .find(|line| line.split(':').next() == Some(name))
        else {
            return Ok(None);
        };
        let mut words = line
            .split_once(':')
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .split_whitespace();
        let value: u64 = words
            .next()
            .ok_or_else(|| malformed("/proc/meminfo", format!("{name} has no value")))?
            .parse()
            .map_err(|err| malformed("/proc/meminfo", format!("{name}: {err}")))?;
        let scale = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => {
                return Err(malformed(
                    "/proc/meminfo",
                    format!("{name} has unit {unit:?}"),
                ));
            }
        };
        Ok(Some(value.saturating_mul(scale)))
    };
    let total = field("MemTotal")?.ok_or_else(|| malformed("/proc/meminfo", "no MemTotal"))?;
    let available = match field("MemAvailable")? {
        Some(available) => available,
        None => {
            let free = field("MemFree")?.ok_or_else(|| malformed("/proc/meminfo", "no MemFree"))?;
            free + field("Buffers")?.unwrap_or(0) + field("Cached")?.unwrap_or(0)
        }
    };
    Ok(Memory {
        total,
        available: available.min(total),
    })
}

/// Load averages over 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAverage {
    /// Over 1 minute.
    pub one: f64,
    /// Over 5 minutes.
    pub five: f64,
    /// Over 15 minutes.
    pub fifteen: f64,
}

/// Reads `/proc/loadavg` (`0.52 0.58 0.59 1/1234 5678`).
pub fn parse_loadavg(loadavg: &str) -> Result<LoadAverage, ReadError> {
    let values: Vec<f64> = loadavg
        .split_whitespace()
        .take(3)
        .map(str::parse::<f64>)
        .collect::<Result<_, _>>()
        .map_err(|err| malformed("/proc/loadavg", err.to_string()))?;
    match values[..] {
        [one, five, fifteen] => Ok(LoadAverage { one, five, fifteen }),
        _ => Err(malformed("/proc/loadavg", "fewer than three averages")),
    }
}

/// Bytes an interface has moved since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetCounters {
    /// Received.
    pub received: u64,
    /// Sent.
    pub sent: u64,
}

/// Every interface named in `/proc/net/dev`, in file order.
pub fn net_interfaces(net_dev: &str) -> Vec<String> {
    net_dev
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| !name.is_empty() && !name.contains('|'))
        .collect()
}

/// Reads the byte counters of `interface` from `/proc/net/dev` (received bytes are the first
/// column after the colon, sent bytes the ninth).
pub fn parse_net_dev(net_dev: &str, interface: &str) -> Result<NetCounters, ReadError> {
    let line = net_dev
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim() == interface)
        .map(|(_, counters)| counters)
        .ok_or_else(|| ReadError::NoInterface(interface.to_owned()))?;
    let columns: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|err| malformed("/proc/net/dev", format!("{interface}: {err}")))?;
    match (columns.first(), columns.get(8)) {
        (Some(&received), Some(&sent)) => Ok(NetCounters { received, sent }),
        _ => Err(malformed(
            "/proc/net/dev",
            format!("{interface} has fewer than 9 columns"),
        )),
    }
}

/// Disk figures of one file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the file system.
    pub total: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes free for unprivileged users.
    pub free: u64,
}

impl DiskUsage {
    /// From `statvfs` figures (psutil's arithmetic: used = blocks − free blocks, free = blocks
    /// available to users).
    pub fn from_blocks(
        fragment_size: u64,
        blocks: u64,
        blocks_free: u64,
        blocks_available: u64,
    ) -> Self {
        Self {
            total: blocks.saturating_mul(fragment_size),
            used: blocks
                .saturating_sub(blocks_free)
                .saturating_mul(fragment_size),
            free: blocks_available.saturating_mul(fragment_size),
        }
    }

    /// Usage in percent as psutil computes it: of what users can have (`used + free`), so
    /// blocks reserved for root do not count as free.
    pub fn used_percent(&self) -> f64 {
        let usable = self.used.saturating_add(self.free);
        if usable == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / usable as f64
    }
}

/// Reads the disk usage of the file system holding `path` with `statvfs`.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, ReadError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|err| ReadError::Disk {
        path: path.display().to_string(),
        message: err.desc().to_owned(),
    })?;
    Ok(DiskUsage::from_blocks(
        stat.fragment_size(),
        stat.blocks(),
        stat.blocks_free(),
        stat.blocks_available(),
    ))
}

/// Reads a kernel text file.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|err| ReadError::Io {
        path: path.display().to_string(),
        message: err.to_string(),
    })
}
