//! The system monitor's sensors and the per-entry monitor that samples every source once per
//! interval (Home Assistant's coordinator) and writes the sensors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use homecore::{Entity, EntityDeviceInfo, EntityHandle, EntityInfo};

use super::DOMAIN;
use super::parse::{self, CpuTimes, GIB, MIB, ReadError};

/// One kind of sensor (Home Assistant's systemmonitor sensor types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SensorKind {
    /// CPU use since the previous sample, %.
    ProcessorUse,
    /// Memory in use, MiB.
    MemoryUse,
    /// Memory in use, %.
    MemoryUsePercent,
    /// Memory available, MiB.
    MemoryFree,
    /// Disk space in use, GiB.
    DiskUse,
    /// Disk space in use, %.
    DiskUsePercent,
    /// Disk space free, GiB.
    DiskFree,
    /// Load average over 1 minute.
    Load1m,
    /// Load average over 5 minutes.
    Load5m,
    /// Load average over 15 minutes.
    Load15m,
    /// Bytes received by the interface since boot, MiB.
    NetworkIn,
    /// Bytes sent by the interface since boot, MiB.
    NetworkOut,
}

impl SensorKind {
    /// Every kind not tied to a network interface.
    pub const LOCAL: [Self; 10] = [
        Self::ProcessorUse,
        Self::MemoryUse,
        Self::MemoryUsePercent,
        Self::MemoryFree,
        Self::DiskUse,
        Self::DiskUsePercent,
        Self::DiskFree,
        Self::Load1m,
        Self::Load5m,
        Self::Load15m,
    ];

    /// Its key (Home Assistant's sensor type), also its translation key.
    pub fn key(self) -> &'static str {
        match self {
            Self::ProcessorUse => "processor_use",
            Self::MemoryUse => "memory_use",
            Self::MemoryUsePercent => "memory_use_percent",
            Self::MemoryFree => "memory_free",
            Self::DiskUse => "disk_use",
            Self::DiskUsePercent => "disk_use_percent",
            Self::DiskFree => "disk_free",
            Self::Load1m => "load_1m",
            Self::Load5m => "load_5m",
            Self::Load15m => "load_15m",
            Self::NetworkIn => "network_in",
            Self::NetworkOut => "network_out",
        }
    }

    fn unit(self) -> Option<&'static str> {
        match self {
            Self::ProcessorUse | Self::MemoryUsePercent | Self::DiskUsePercent => Some("%"),
            Self::MemoryUse | Self::MemoryFree | Self::NetworkIn | Self::NetworkOut => Some("MiB"),
            Self::DiskUse | Self::DiskFree => Some("GiB"),
            Self::Load1m | Self::Load5m | Self::Load15m => None,
        }
    }

    /// Digits after the point (Home Assistant's rounding per sensor type).
    fn precision(self) -> usize {
        match self {
            Self::ProcessorUse => 0,
            Self::Load1m | Self::Load5m | Self::Load15m => 2,
            Self::NetworkIn | Self::NetworkOut => 3,
            _ => 1,
        }
    }

    fn name(self, disk_path: &str, interface: Option<&str>) -> String {
        let interface = interface.unwrap_or_default();
        match self {
            Self::ProcessorUse => "Processor use".to_owned(),
            Self::MemoryUse => "Memory use".to_owned(),
            Self::MemoryUsePercent => "Memory usage".to_owned(),
            Self::MemoryFree => "Memory free".to_owned(),
            Self::DiskUse => format!("Disk use {disk_path}"),
            Self::DiskUsePercent => format!("Disk usage {disk_path}"),
            Self::DiskFree => format!("Disk free {disk_path}"),
            Self::Load1m => "Load (1 min)".to_owned(),
            Self::Load5m => "Load (5 min)".to_owned(),
            Self::Load15m => "Load (15 min)".to_owned(),
            Self::NetworkIn => format!("Network in {interface}"),
            Self::NetworkOut => format!("Network out {interface}"),
        }
    }

    /// What it says about itself, on the entry's "System Monitor" device.
    pub(crate) fn info(
        self,
        entry_id: &str,
        disk_path: &str,
        interface: Option<&str>,
    ) -> EntityInfo {
        let mut info = EntityInfo::new("sensor");
        let argument = match self {
            Self::DiskUse | Self::DiskUsePercent | Self::DiskFree => disk_path,
            Self::NetworkIn | Self::NetworkOut => interface.unwrap_or_default(),
            _ => "",
        };
        info.unique_id = Some(format!("{}_{argument}", self.key()));
        info.name = Some(self.name(disk_path, interface));
        info.has_entity_name = true;
        info.translation_key = Some(self.key().to_owned());
        info.unit_of_measurement = self.unit().map(str::to_owned);
        info.device_class = match self {
            Self::MemoryUse | Self::MemoryFree | Self::DiskUse | Self::DiskFree => {
                Some("data_size".to_owned())
            }
            Self::NetworkIn | Self::NetworkOut => Some("data_size".to_owned()),
            _ => None,
        };
        info.state_class = Some(
            match self {
                Self::NetworkIn | Self::NetworkOut => "total_increasing",
                _ => "measurement",
            }
            .to_owned(),
        );
        info.icon = Some(
            match self {
                Self::ProcessorUse | Self::Load1m | Self::Load5m | Self::Load15m => {
                    "mdi:cpu-64-bit"
                }
                Self::MemoryUse | Self::MemoryUsePercent | Self::MemoryFree => "mdi:memory",
                Self::DiskUse | Self::DiskUsePercent | Self::DiskFree => "mdi:harddisk",
                Self::NetworkIn => "mdi:server-network",
                Self::NetworkOut => "mdi:server-network",
            }
            .to_owned(),
        );
        info.device_info = Some(EntityDeviceInfo {
            identifiers: vec![(DOMAIN.to_owned(), entry_id.to_owned())],
            name: Some("System Monitor".to_owned()),
            manufacturer: Some("System Monitor".to_owned()),
            entry_type: Some(homecore::device_registry::DeviceEntryType::Service),
            ..EntityDeviceInfo::default()
        });
        info
    }
}

/// A sensor's value after one sample: a number, not known yet, or why it cannot be read.
pub(crate) type Reading = Result<Option<f64>, String>;

/// What the monitor reads and where.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// Folder standing for `/proc` (tests point it at sample files).
    pub(crate) proc_root: PathBuf,
    /// Path whose file system's usage is reported.
    pub(crate) disk_path: PathBuf,
    /// Interface whose traffic is reported, if any.
    pub(crate) interface: Option<String>,
}

/// One entry's monitor: samples every source, keeps the readings, writes the sensors.
pub(crate) struct Monitor {
    /// Where to read.
    sources: Sources,
    /// The previous CPU sample, to compute use over the interval.
    previous_cpu: Mutex<Option<CpuTimes>>,
    /// The latest readings by sensor.
    readings: Mutex<BTreeMap<SensorKind, Reading>>,
    /// The sensors' handles, once added, to write them after a sample.
    handles: Mutex<Vec<EntityHandle>>,
}

impl Monitor {
    pub(crate) fn new(sources: Sources) -> Arc<Self> {
        Arc::new(Self {
            sources,
            previous_cpu: Mutex::new(None),
            readings: Mutex::new(BTreeMap::new()),
            handles: Mutex::new(Vec::new()),
        })
    }

    /// The kinds this entry provides.
    pub(crate) fn kinds(&self) -> Vec<SensorKind> {
        let mut kinds = SensorKind::LOCAL.to_vec();
        if self.sources.interface.is_some() {
            kinds.extend([SensorKind::NetworkIn, SensorKind::NetworkOut]);
        }
        kinds
    }

    fn proc_file(&self, name: &str) -> Result<String, ReadError> {
        parse::read_text(&self.sources.proc_root.join(name))
    }

    /// Samples every source once (cheap, in-memory kernel files and one `statvfs`).
    fn sample(&self) -> BTreeMap<SensorKind, Reading> {
        let mut readings = BTreeMap::new();
        let fail = |err: ReadError| -> Reading { Err(err.to_string()) };

        let cpu = self
            .proc_file("stat")
            .and_then(|stat| parse::parse_cpu_times(&stat));
        readings.insert(
            SensorKind::ProcessorUse,
            match cpu {
                Ok(now) => {
                    let before = self.previous_cpu.lock().replace(now);
                    Ok(before.and_then(|before| parse::cpu_percent(before, now)))
                }
                Err(err) => fail(err),
            },
        );

        let memory = self
            .proc_file("meminfo")
            .and_then(|text| parse::parse_meminfo(&text));
        for (kind, value) in [
            (
                SensorKind::MemoryUse,
                memory.clone().map(|m| m.used() as f64 / MIB),
            ),
            (
                SensorKind::MemoryUsePercent,
                memory.clone().map(|m| m.used_percent()),
            ),
            (
                SensorKind::MemoryFree,
                memory.clone().map(|m| m.available as f64 / MIB),
            ),
        ] {
            readings.insert(kind, value.map(Some).or_else(fail));
        }

        let disk = parse::disk_usage(&self.sources.disk_path);
        for (kind, value) in [
            (
                SensorKind::DiskUse,
                disk.clone().map(|d| d.used as f64 / GIB),
            ),
            (
                SensorKind::DiskUsePercent,
                disk.clone().map(|d| d.used_percent()),
            ),
            (
                SensorKind::DiskFree,
                disk.clone().map(|d| d.free as f64 / GIB),
            ),
        ] {
            readings.insert(kind, value.map(Some).or_else(fail));
        }

        let load = self
            .proc_file("loadavg")
            .and_then(|text| parse::parse_loadavg(&text));
        for (kind, value) in [
            (SensorKind::Load1m, load.clone().map(|l| l.one)),
            (SensorKind::Load5m, load.clone().map(|l| l.five)),
            (SensorKind::Load15m, load.clone().map(|l| l.fifteen)),
        ] {
            readings.insert(kind, value.map(Some).or_else(fail));
        }

        if let Some(interface) = &self.sources.interface {
            let net = self
                .proc_file("net/dev")
                .and_then(|text| parse::parse_net_dev(&text, interface));
            for (kind, value) in [
                (
                    SensorKind::NetworkIn,
                    net.clone().map(|n| n.received as f64 / MIB),
                ),
                (SensorKind::NetworkOut, net.map(|n| n.sent as f64 / MIB)),
            ] {
                readings.insert(kind, value.map(Some).or_else(fail));
            }
        }
        readings
    }

    /// Samples, logs every sensor that became unreadable or readable again, and writes the sensors.
    pub(crate) fn refresh(&self) {
        let next = self.sample();
        {
            let mut readings = self.readings.lock();
            for (kind, reading) in &next {
                let was_ok = readings.get(kind).is_none_or(Result::is_ok);
                match reading {
                    Err(reason) if was_ok => {
                        tracing::warn!(
                            sensor = kind.key(),
                            reason,
                            "system monitor sensor is unavailable"
                        );
                    }
                    Ok(_) if !was_ok => {
                        tracing::info!(
                            sensor = kind.key(),
                            "system monitor sensor is available again"
                        );
                    }
                    _ => {}
                }
            }
            *readings = next;
        }
        let handles = self.handles.lock().clone();
        for handle in handles {
            if let Err(err) = handle.write_state() {
                tracing::debug!(entity_id = handle.entity_id(), %err, "system monitor state not written");
            }
        }
    }

    fn reading(&self, kind: SensorKind) -> Reading {
        self.readings.lock().get(&kind).cloned().unwrap_or(Ok(None))
    }
}

/// One system monitor sensor, reading its value from the entry's [`Monitor`].
pub(crate) struct SystemSensor {
    /// What it measures.
    kind: SensorKind,
    /// What it says about itself.
    info: EntityInfo,
    /// The entry's monitor.
    monitor: Arc<Monitor>,
}

impl SystemSensor {
    pub(crate) fn new(kind: SensorKind, entry_id: &str, monitor: Arc<Monitor>) -> Self {
        let disk_path = monitor.sources.disk_path.display().to_string();
        let info = kind.info(entry_id, &disk_path, monitor.sources.interface.as_deref());
        Self {
            kind,
            info,
            monitor,
        }
    }
}

impl Entity for SystemSensor {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn available(&self) -> bool {
        self.monitor.reading(self.kind).is_ok()
    }

    fn state(&self) -> Option<String> {
        let value = self.monitor.reading(self.kind).ok().flatten()?;
        Some(format!("{value:.*}", self.kind.precision()))
    }

    fn added_to_core(&self, handle: EntityHandle) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            self.monitor.handles.lock().push(handle);
        })
    }
}
