//! Tests of the systemmonitor integration: the `/proc` readers on sample text, the disk
//! figures, the flow's checks, and polling with paused time over sample kernel files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{Core, CoreConfig, FlowContext, FlowStep, MemoryStoreBackend};

use super::parse::*;
use super::*;

const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1 2 3\n";
const STAT_LATER: &str = "cpu  160 0 140 780 120 0 0 0 0 0\ncpu0 80 0 70 390 60 0 0 0 0 0\n";
const MEMINFO: &str = "MemTotal:        8388608 kB\nMemFree:         1048576 kB\nMemAvailable:    2097152 kB\nBuffers:          102400 kB\nCached:           512000 kB\n";
const LOADAVG: &str = "0.52 1.25 2.00 3/1234 5678\n";
const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0:3145728 2000 0 0 0 0 0 0 1048576 1500 0 0 0 0 0 0\n";

#[test]
fn cpu_use_is_the_busy_share_of_the_ticks_between_two_samples() {
    let before = parse_cpu_times(STAT).unwrap();
    assert_eq!(
        before,
        CpuTimes {
            busy: 200,
            total: 1000
        }
    );
    let after = parse_cpu_times(STAT_LATER).unwrap();
    // 100 more busy ticks (60 user + 40 system) out of 200 more ticks.
    assert_eq!(cpu_percent(before, after), Some(50.0));
    assert_eq!(cpu_percent(after, after), None);
    assert_eq!(cpu_percent(after, before), None);
    assert!(matches!(
        parse_cpu_times("intr 1 2\n"),
        Err(ReadError::Malformed {
            file: "/proc/stat",
            ..
        })
    ));
    assert!(parse_cpu_times("cpu  1 x 3 4\n").is_err());
    assert!(parse_cpu_times("cpu  1 2\n").is_err());
}

#[test]
fn memory_use_is_total_minus_available_with_psutils_fallback() {
    let memory = parse_meminfo(MEMINFO).unwrap();
    assert_eq!(memory.total, 8 * 1024 * 1024 * 1024);
    assert_eq!(memory.available, 2 * 1024 * 1024 * 1024);
    assert_eq!(memory.used(), 6 * 1024 * 1024 * 1024);
    assert_eq!(memory.used_percent(), 75.0);
    let old_kernel = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
    assert_eq!(parse_meminfo(old_kernel).unwrap().available, 400 * 1024);
    assert!(
        parse_meminfo("MemFree: 1 kB\n")
            .unwrap_err()
            .to_string()
            .contains("no MemTotal")
    );
    assert!(parse_meminfo("MemTotal: many kB\n").is_err());
    assert!(parse_meminfo("MemTotal: 1 MB\n").is_err());
}

#[test]
fn load_averages_are_the_first_three_numbers() {
    assert_eq!(
        parse_loadavg(LOADAVG).unwrap(),
        LoadAverage {
            one: 0.52,
            five: 1.25,
            fifteen: 2.0
        }
    );
    assert!(parse_loadavg("0.5 0.6\n").is_err());
    assert!(parse_loadavg("a b c\n").is_err());
}

#[test]
fn network_counters_are_read_per_interface_even_without_a_space_after_the_colon() {
    assert_eq!(net_interfaces(NET_DEV), ["lo", "eth0"]);
    assert_eq!(
        parse_net_dev(NET_DEV, "eth0").unwrap(),
        NetCounters {
            received: 3_145_728,
            sent: 1_048_576
        }
    );
    assert_eq!(
        parse_net_dev(NET_DEV, "wlan0"),
        Err(ReadError::NoInterface("wlan0".to_owned()))
    );
    assert!(parse_net_dev("  eth0: 1 2 3\n", "eth0").is_err());
}

#[test]
fn disk_usage_counts_reserved_blocks_as_neither_free_nor_usable() {
    // 100 blocks of 4 KiB, 40 free of which 30 are available to users.
    let disk = DiskUsage::from_blocks(4096, 100, 40, 30);
    assert_eq!(disk.total, 409_600);
    assert_eq!(disk.used, 60 * 4096);
    assert_eq!(disk.free, 30 * 4096);
    assert!((disk.used_percent() - 60.0 / 90.0 * 100.0).abs() < 1e-9);
    assert_eq!(DiskUsage::from_blocks(4096, 0, 0, 0).used_percent(), 0.0);

    let dir = tempfile::tempdir().unwrap();
    let real = disk_usage(dir.path()).unwrap();
    assert!(real.total > 0 && real.used <= real.total && real.free <= real.total);
    let err = disk_usage(&dir.path().join("missing")).unwrap_err();
    assert!(
        err.to_string().contains("cannot read the disk usage of"),
        "{err}"
    );
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

fn write_proc(root: &Path, stat: &str) {
    std::fs::create_dir_all(root.join("net")).unwrap();
    std::fs::write(root.join("stat"), stat).unwrap();
    std::fs::write(root.join("meminfo"), MEMINFO).unwrap();
    std::fs::write(root.join("loadavg"), LOADAVG).unwrap();
    std::fs::write(root.join("net/dev"), NET_DEV).unwrap();
}

async fn core_reading(proc_root: &Path) -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(SystemMonitorIntegration::with_proc_root(proc_root)) as Arc<dyn Integration>,
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    core
}

async fn submit(core: &Core, input: Value) -> FlowStep {
    let flows = core.config_entries().flow();
    let form = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    if form.step.is_finished() {
        return form.step;
    }
    flows
        .configure(&form.flow_id, Some(map(input)))
        .await
        .unwrap()
        .step
}

fn form_error(step: &FlowStep, field: &str) -> Option<String> {
    match step {
        FlowStep::Form { errors, .. } => errors.get(field).cloned(),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_flow_checks_the_disk_path_and_the_interface_and_allows_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_proc(dir.path(), STAT);
    let core = core_reading(dir.path()).await;
    let step = submit(&core, json!({"disk_path": "relative/dir"})).await;
    assert_eq!(
        form_error(&step, "disk_path").as_deref(),
        Some("disk_path_not_absolute")
    );
    let missing = dir.path().join("nowhere").display().to_string();
    let step = submit(&core, json!({"disk_path": missing})).await;
    assert_eq!(
        form_error(&step, "disk_path").as_deref(),
        Some("disk_path_unreadable")
    );
    let step = submit(&core, json!({"network_interface": "wlan9"})).await;
    assert_eq!(
        form_error(&step, "network_interface").as_deref(),
        Some("interface_not_found")
    );
    let step = submit(&core, json!({"network_interface": " eth0 "})).await;
    let FlowStep::CreateEntry { data, title, .. } = step else {
        panic!("expected an entry, got {step:?}");
    };
    assert_eq!(title, "System Monitor");
    assert_eq!(data["disk_path"], json!("/"));
    assert_eq!(data["network_interface"], json!("eth0"));
    assert_eq!(data["scan_interval"], json!(DEFAULT_SCAN_INTERVAL_SECS));
    let again = submit(&core, json!({})).await;
    assert_eq!(again, FlowStep::abort("single_instance_allowed"));
}

fn state(core: &Core, key: &str) -> String {
    let entity_id = core
        .entity_registry()
        .entity_id_for("sensor", DOMAIN, key)
        .unwrap_or_else(|| panic!("no sensor {key}"));
    core.states().get(&entity_id).unwrap().state.clone()
}

#[tokio::test(start_paused = true)]
async fn sensors_read_the_kernel_files_and_refresh_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    write_proc(&proc_root, STAT);
    let core = core_reading(&proc_root).await;
    let disk = dir.path().display().to_string();
    let step = submit(
        &core,
        json!({"disk_path": disk, "network_interface": "eth0", "scan_interval": 10}),
    )
    .await;
    assert!(matches!(step, FlowStep::CreateEntry { .. }), "{step:?}");

    assert_eq!(state(&core, "processor_use_"), "unknown");
    assert_eq!(state(&core, "memory_use_"), "6144.0");
    assert_eq!(state(&core, "memory_use_percent_"), "75.0");
    assert_eq!(state(&core, "memory_free_"), "2048.0");
    assert_eq!(state(&core, "load_1m_"), "0.52");
    assert_eq!(state(&core, "load_5m_"), "1.25");
    assert_eq!(state(&core, "load_15m_"), "2.00");
    assert_eq!(state(&core, "network_in_eth0"), "3.000");
    assert_eq!(state(&core, "network_out_eth0"), "1.000");
    let percent: f64 = state(&core, &format!("disk_use_percent_{disk}"))
        .parse()
        .unwrap();
    assert!((0.0..=100.0).contains(&percent));
    state(&core, &format!("disk_free_{disk}"))
        .parse::<f64>()
        .unwrap();
    let entity_id = core
        .entity_registry()
        .entity_id_for("sensor", DOMAIN, "memory_use_")
        .unwrap();
    let attributes = core.states().get(&entity_id).unwrap().attributes.clone();
    assert_eq!(attributes["unit_of_measurement"], json!("MiB"));
    assert_eq!(attributes["device_class"], json!("data_size"));

    std::fs::write(proc_root.join("stat"), STAT_LATER).unwrap();
    std::fs::remove_file(proc_root.join("loadavg")).unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(state(&core, "processor_use_"), "unknown");
    // Just past the refresh, so the refresher has run whatever the task order.
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!(state(&core, "processor_use_"), "50");
    assert_eq!(state(&core, "load_1m_"), "unavailable");

    let entry_id = core.config_entries().entries(Some(DOMAIN))[0]
        .entry_id
        .clone();
    assert!(core.config_entries().unload(&entry_id).await.unwrap());
    std::fs::write(proc_root.join("loadavg"), LOADAVG).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = core
        .entity_registry()
        .entity_id_for("sensor", DOMAIN, "load_1m_")
        .and_then(|id| core.states().get(&id))
        .map(|state| state.state.clone());
    assert!(
        after.is_none() || after.as_deref() == Some("unavailable"),
        "{after:?}"
    );
}
