//! The MQTT load figure: a hub with the mqtt integration sandboxed, N discovered sensors, and a
//! publisher process sending each of them one state message a second; main's CPU share and
//! resident size, the latency from the publisher's publish to main's `state_changed`, and
//! whether any update was lost.
//!
//! The publisher (this binary's hidden `mqtt-publisher`) stamps each message with the
//! machine's monotonic clock (`"<sequence> <nanoseconds>"`, the sensor's state as is), so main
//! reads the latency off the state itself.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use homecore::{Core, CoreConfig, FlowContext, FlowStep};
use parking_lot::Mutex;
use sandbox_compat::bench_lights::monotonic_ns;
use sandbox_compat::scenario::BrokerLauncher;
use sandbox_host::GroupConfig;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_mqtt_broker::{BrokerOptions, Device};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// The publisher's argument list (after the program and subcommand).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PublisherArgs {
    /// The broker's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Sensors to configure and feed.
    #[arg(long)]
    entities: usize,
    /// Seconds of one message per sensor per second.
    #[arg(long)]
    seconds: u64,
}

/// The publisher's own topic: what it publishes there comes back after everything before it.
const FLUSH_TOPIC: &str = "bench_load/publisher";

fn config_topic(index: usize) -> String {
    format!("homeassistant/sensor/bench_load/load_{index}/config")
}

fn state_topic(index: usize) -> String {
    format!("bench_load/{index}/state")
}

/// The publisher process: configures the sensors (retained), says `configured`, waits for `go`
/// on its input, publishes one message per sensor per second, evenly spread, and says `done`.
pub(crate) fn publisher_main(args: PublisherArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mqtt-publisher: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(publish(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mqtt-publisher: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn publish(args: PublisherArgs) -> Result<()> {
    let device = Device::connect("127.0.0.1", args.port, None, FLUSH_TOPIC)
        .await
        .map_err(anyhow::Error::msg)?;
    for index in 0..args.entities {
        let config = json!({
            "name": format!("Load {index}"),
            "unique_id": format!("bench_load_{index}"),
            "state_topic": state_topic(index),
        });
        device
            .publish(&config_topic(index), config.to_string(), true)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let mut output = std::io::stdout().lock();
    writeln!(output, "configured")?;
    output.flush()?;
    drop(output);
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    if line.trim() != "go" {
        bail!("expected `go`, got {line:?}");
    }
    let spacing = Duration::from_secs(1).as_nanos() as u64 / args.entities.max(1) as u64;
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    for second in 0..args.seconds {
        for index in 0..args.entities {
            let due = started + Duration::from_nanos(sent * spacing);
            tokio::time::sleep_until(due).await;
            let payload = format!("{} {}", second + 1, monotonic_ns());
            device
                .publish(&state_topic(index), payload, false)
                .await
                .map_err(anyhow::Error::msg)?;
            sent += 1;
        }
    }
    // Messages are queued, not yet sent, when `publish` returns: one on the publisher's own
    // topic comes back once every earlier one reached the broker (it keeps their order).
    device
        .publish(FLUSH_TOPIC, "flush", false)
        .await
        .map_err(anyhow::Error::msg)?;
    device
        .expect(FLUSH_TOPIC, Some("flush"))
        .await
        .map_err(anyhow::Error::msg)?;
    println!("done {sent}");
    Ok(())
}

/// CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(f64::NAN, |usage| {
        let seconds = |time: nix::sys::time::TimeVal| {
            time.tv_sec() as f64 + time.tv_usec() as f64 / 1_000_000.0
        };
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// What main saw of the load.
#[derive(Default)]
struct Seen {
    /// Publish-to-`state_changed` latencies, in microseconds.
    latencies_us: Vec<f64>,
    /// The highest sequence seen per sensor, and how many distinct sequences.
    per_sensor: HashMap<String, (u64, u64)>,
}

/// The figure: `entities` sensors for `seconds` seconds, the mqtt integration sandboxed in the
/// built-in group run by `runtime_command`, the broker started by `broker`, the publisher by
/// `publisher_command`.
pub(crate) async fn figures(
    entities: usize,
    seconds: u64,
    runtime_command: Vec<OsString>,
    broker: BrokerLauncher,
    publisher_command: Vec<OsString>,
) -> Result<Map<String, Value>> {
    let options = BrokerOptions::default();
    let broker = tokio::task::spawn_blocking(move || match broker {
        BrokerLauncher::Kind(kind) => sandbox_mqtt_broker::Broker::start_with(kind, options),
        BrokerLauncher::Command(mut command) => {
            command.extend(sandbox_mqtt_broker::serve_arguments(&options));
            sandbox_mqtt_broker::Broker::start_command(
                sandbox_mqtt_broker::BrokerKind::Embedded,
                command,
                &options,
            )
        }
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let core = Core::builder(CoreConfig::new(dir.path()))
        .integrations(integrations::builtin())
        .build()?;
    let mut group_defaults = GroupConfig::new("template");
    group_defaults.watchdog = None;
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir: dir.path().to_owned(),
                runtime_command,
                custom_commands: HashMap::new(),
                group_defaults,
                group_overrides: Default::default(),
            },
            custom: vec![],
        },
    );
    core.start().await?;
    let outcome = measure(
        &core,
        &plugin,
        broker.port(),
        entities,
        seconds,
        publisher_command,
    )
    .await;
    plugin.stop().await;
    core.stop().await?;
    drop(broker);
    outcome
}

async fn measure(
    core: &Core,
    plugin: &SandboxPlugin,
    port: u16,
    entities: usize,
    seconds: u64,
    publisher_command: Vec<OsString>,
) -> Result<Map<String, Value>> {
    let (program, arguments) = publisher_command
        .split_first()
        .context("an empty publisher command")?;
    let mut publisher = tokio::process::Command::new(program)
        .args(arguments)
        .args([
            "--port".into(),
            port.to_string().into(),
            "--entities".into(),
            entities.to_string().into(),
            "--seconds".into(),
            seconds.to_string().into(),
        ] as [OsString; 6])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the publisher")?;
    let mut lines =
        tokio::io::BufReader::new(publisher.stdout.take().context("the publisher's output")?)
            .lines();
    let mut input = publisher.stdin.take().context("the publisher's input")?;
    match lines.next_line().await? {
        Some(line) if line == "configured" => {}
        other => bail!("the publisher did not configure the sensors: {other:?}"),
    }

    let flows = core.config_entries().flow();
    let form = flows
        .init(integrations::mqtt::DOMAIN, FlowContext::new("user"), None)
        .await?;
    let done = flows
        .configure(
            &form.flow_id,
            Some(Map::from_iter([
                ("broker".to_owned(), json!("127.0.0.1")),
                ("port".to_owned(), json!(port)),
            ])),
        )
        .await?;
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = done.step
    else {
        bail!("mqtt was not configured: {:?}", done.step);
    };
    let group = core
        .config_entries()
        .entry(&entry_id)
        .and_then(|entry| entry.sandbox)
        .context("mqtt runs sandboxed")?;
    let discovery_started = Instant::now();
    let sensors = || {
        core.states()
            .entity_ids(Some("sensor"))
            .into_iter()
            .filter(|id| id.starts_with("sensor.load_"))
            .count()
    };
    super::wait_for("every discovered sensor on main", || sensors() == entities).await?;
    let discovery_ms = discovery_started.elapsed().as_secs_f64() * 1000.0;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Arc::clone(&seen);
    let listener = core.bus().listen("state_changed", move |event| {
        let now = monotonic_ns();
        let entity_id = event.data.get("entity_id").and_then(Value::as_str);
        let state = event
            .data
            .get("new_state")
            .and_then(|state| state.get("state"))
            .and_then(Value::as_str);
        if let (Some(entity_id), Some(state)) = (entity_id, state)
            && entity_id.starts_with("sensor.load_")
            && let Some((sequence, stamp)) = state.split_once(' ')
            && let (Ok(sequence), Ok(stamp)) = (sequence.parse::<u64>(), stamp.parse::<u64>())
        {
            let mut seen = sink.lock();
            seen.latencies_us
                .push(now.saturating_sub(stamp) as f64 / 1000.0);
            let entry = seen.per_sensor.entry(entity_id.to_owned()).or_default();
            entry.0 = entry.0.max(sequence);
            entry.1 += 1;
        }
        async {}
    })?;

    let expected = entities as u64 * seconds;
    let cpu_before = cpu_seconds();
    let wall_before = Instant::now();
    input.write_all(b"go\n").await?;
    input.flush().await?;
    match lines.next_line().await? {
        Some(line) if line.starts_with("done") => {}
        other => bail!("the publisher stopped early: {other:?}"),
    }
    // The last messages are on their way: wait for them (a lost one ends the wait at the limit).
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let received: u64 = seen
                .lock()
                .per_sensor
                .values()
                .map(|(_, count)| count)
                .sum();
            if received >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let wall = wall_before.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    listener.remove();
    let _ = publisher.wait().await;

    let main_rss_mb = super::resident_mb(std::process::id());
    let sandbox_rss_mb = plugin
        .groups()
        .get(&group)
        .and_then(|handle| handle.manager.status().pid)
        .map_or(f64::NAN, super::resident_mb);
    let mut seen = seen.lock();
    let received: u64 = seen.per_sensor.values().map(|(_, count)| count).sum();
    let complete = seen
        .per_sensor
        .values()
        .filter(|(last, _)| *last == seconds)
        .count();
    let p50 = super::percentile(&mut seen.latencies_us, 0.5);
    let p99 = super::percentile(&mut seen.latencies_us, 0.99);
    let mut figures = Map::new();
    figures.insert("mqtt_entities".into(), json!(entities));
    figures.insert("mqtt_messages".into(), json!(expected));
    figures.insert(
        "mqtt_discovery_ms".into(),
        json!(super::round(discovery_ms)),
    );
    figures.insert("mqtt_updates_received".into(), json!(received));
    figures.insert(
        "mqtt_updates_lost".into(),
        json!(expected.saturating_sub(received)),
    );
    figures.insert("mqtt_sensors_complete".into(), json!(complete));
    figures.insert("mqtt_push_p50_us".into(), json!(super::round(p50)));
    figures.insert("mqtt_push_p99_us".into(), json!(super::round(p99)));
    figures.insert(
        "mqtt_main_cpu_percent".into(),
        json!(super::round(cpu / wall * 100.0)),
    );
    figures.insert("mqtt_main_rss_mb".into(), json!(super::round(main_rss_mb)));
    figures.insert(
        "mqtt_sandbox_rss_mb".into(),
        json!(super::round(sandbox_rss_mb)),
    );
    eprintln!(
        "bench: mqtt {entities} sensors × {seconds} s: {received}/{expected} updates{}, publish → main p50 {p50:.0} µs p99 {p99:.0} µs, main CPU {:.1} %, main RSS {main_rss_mb:.1} MB, sandbox RSS {sandbox_rss_mb:.1} MB",
        if drained.is_err() {
            " (some never came)"
        } else {
            ""
        },
        cpu / wall * 100.0
    );
    Ok(figures)
}
