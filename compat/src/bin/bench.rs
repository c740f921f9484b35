//! The benchmark runner: the mission's figures, each next to a raw baseline measured in the
//! same run, printed as one JSON object with `--json`.
//!
//! `cargo run --release -p sandbox-compat --bin bench -- --json`. The hidden subcommands make
//! this binary its own sandbox runtime (with the benchmark lights) and its own raw peers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use futures::{SinkExt as _, StreamExt as _};
use homecore::entity_registry::EntityUpdate;
use homecore::{
    ConfigEntry, Context, Core, CoreConfig, FlowContext, FlowStep, ServiceRequest, ServiceTarget,
};
use parking_lot::Mutex;
use sandbox_compat::bench_lights::{self, BenchLights, monotonic_ns};
use sandbox_host::confinement::ConfinementProfile;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{GroupConfig, GroupState};
use sandbox_host_cli::api::auth::Gate;
use sandbox_host_cli::api::{self, ApiState};
use sandbox_host_cli::control::Hub;
use sandbox_host_cli::tokens::TokenStore;
use sandbox_proto::framing::{self, MAX_FRAME_LEN};
use sandbox_proto::{json, wire};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "../bench/mqtt.rs"]
mod mqtt;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Measures the sandbox host against raw baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Groups in the many-groups latency figure.
    #[arg(long, default_value_t = 50)]
    groups: usize,
    /// Entities per group in the many-groups latency figure.
    #[arg(long, default_value_t = 200)]
    entities: usize,
    /// State changes in the push throughput figure.
    #[arg(long, default_value_t = 200_000)]
    pushes: u64,
    /// Sensors discovered in the MQTT load figure.
    #[arg(long, default_value_t = 1000)]
    mqtt_entities: usize,
    /// Seconds of one message per sensor per second in the MQTT load figure.
    #[arg(long, default_value_t = 10)]
    mqtt_seconds: u64,
    /// Measure only these sections (repeatable; all when absent): rtt, api, area, push,
    /// flood, memory, crash, spawn, latency, register, confinement, mqtt. For profiling one path
    /// at a time.
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

/// The parts of a run, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Rtt,
    Api,
    Area,
    Push,
    Flood,
    Memory,
    Crash,
    Spawn,
    Latency,
    Register,
    Confinement,
    Mqtt,
}

impl Cli {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The sandbox runtime with the built-in integrations and the benchmark lights.
    #[command(hide = true)]
    RunSandbox(sandbox_runtime::sdk::Args),
    /// Raw peer: reads `request` bytes, answers `reply` bytes, until EOF.
    #[command(hide = true)]
    RawEcho { request: usize, reply: usize },
    /// Raw peer: writes `count` frames of `frame` bytes as fast as it can.
    #[command(hide = true)]
    RawProducer { frame: usize, count: u64 },
    /// A sandbox that registers one light per entry and pushes its state as fast as main
    /// takes it, until shut down.
    #[command(hide = true)]
    FloodSandbox(sandbox_runtime::sdk::Args),
    /// The embedded MQTT broker of the MQTT load figure.
    #[command(hide = true)]
    MqttBroker(sandbox_mqtt_broker::ServeArgs),
    /// The MQTT load figure's publisher.
    #[command(hide = true)]
    MqttPublisher(mqtt::PublisherArgs),
}

/// Round trips timed for the RTT figure (after as many again for warm-up... a tenth of it).
const RTT_ROUNDS: usize = 3000;
/// Blocks in the API figure, in turn `light.toggle` in-process, `light.toggle` over the
/// WebSocket API and the API's `ping` (so all three see the same machine conditions).
const API_BLOCKS: usize = 30;
/// Calls timed per block (after a tenth of that as warm-up).
const API_BLOCK_ROUNDS: usize = 500;
/// Area calls timed.
const AREA_ROUNDS: usize = 200;
/// Blocks of neighbour service calls in the flood figure, alternately without and with the
/// flood (so both see the same machine conditions).
const FLOOD_BLOCKS: usize = 20;
/// Service calls timed per block (after a tenth of that as warm-up).
const FLOOD_BLOCK_ROUNDS: usize = 500;
/// Slack past the CPU share's sampling before the flood figure is measured.
const FLOOD_SETTLE: Duration = Duration::from_millis(200);
/// The flooding group's name (its command is this binary's `flood-sandbox`).
const FLOOD_GROUP: &str = "flood";
/// `state_changed` pushes the flooding sandbox joins into one write.
const FLOOD_BATCH: usize = 64;
/// Spawns timed for the spawn figures.
const SPAWN_ROUNDS: usize = 15;
/// State changes per group in the latency figures.
const LATENCY_PUSHES: u64 = 200;
/// Milliseconds between two state changes of one group in the paced latency figures (a steady
/// 1 000 changes/s per group: 50 000/s from 50 groups, within what main takes).
const LATENCY_INTERVAL_MS: u64 = 10;
/// Entries of `bench_lights::MAX_LIGHTS` lights registered one after the other in the
/// registration figure (10,000 entities, the default entity cap of a group).
const REGISTER_ENTRIES: usize = 10;
/// The confinement figure's groups: one light each, under the default profile and unconfined.
const CONFINED_GROUP: &str = "confined";
/// See [`CONFINED_GROUP`].
const UNCONFINED_GROUP: &str = "unconfined";
/// Blocks of service calls in the confinement figure, alternately on the confined and the
/// unconfined light (so both see the same machine conditions).
const CONFINEMENT_BLOCKS: usize = 20;
/// How long any one wait may take before the run is abandoned.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Some(Command::RunSandbox(args)) => {
            let mut list = integrations::builtin();
            list.push(Arc::new(BenchLights::new()));
            ExitCode::from(sandbox_runtime::sdk::run_with_args(
                args,
                sandbox_runtime::Integrations::new(list),
            ))
        }
        Some(Command::RawEcho { request, reply }) => raw_echo(request, reply),
        Some(Command::RawProducer { frame, count }) => raw_producer(frame, count),
        Some(Command::FloodSandbox(args)) => flood_sandbox(args),
        Some(Command::MqttBroker(args)) => match sandbox_mqtt_broker::serve(args.port, &args.users)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mqtt-broker: {error}");
                ExitCode::from(1)
            }
        },
        Some(Command::MqttPublisher(args)) => mqtt::publisher_main(args),
        None => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("bench: {error}");
                    return ExitCode::from(1);
                }
            };
            // The hub's code runs in tasks on its runtime, as a hub's does (the thread that
            // blocks on the runtime is not one of its workers: a caller there would pay a
            // cross-thread wake-up on every reply).
            let outcome = runtime.block_on(async move {
                tokio::spawn(async move { run(&cli).await })
                    .await
                    .context("the benchmark task")?
            });
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("bench failed: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn raw_echo(request: usize, reply: usize) -> ExitCode {
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let (mut buffer, answer) = (vec![0u8; request], vec![7u8; reply]);
    while input.read_exact(&mut buffer).is_ok() {
        if output
            .write_all(&answer)
            .and_then(|()| output.flush())
            .is_err()
        {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn raw_producer(frame: usize, count: u64) -> ExitCode {
    let mut output = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let bytes = vec![7u8; frame];
    for _ in 0..count {
        if output.write_all(&bytes).is_err() {
            return ExitCode::from(1);
        }
    }
    let _ = output.flush();
    ExitCode::SUCCESS
}

fn this_program() -> Result<OsString> {
    Ok(std::env::current_exe()
        .context("cannot find this program")?
        .into_os_string())
}

fn percentile(samples: &mut [f64], fraction: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() as f64 - 1.0) * fraction).round() as usize]
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) -> Result<Duration> {
    let started = Instant::now();
    tokio::time::timeout(WAIT_LIMIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))?;
    Ok(started.elapsed())
}

fn resident_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn bench_proxies(core: &Core) -> Vec<String> {
    core.states()
        .entity_ids(Some("light"))
        .into_iter()
        .filter(|id| id.starts_with("light.bench_light_"))
        .collect()
}

async fn run(cli: &Cli) -> Result<()> {
    let mut figures = BTreeMap::<String, Value>::new();
    let dir = tempfile::tempdir()?;
    let mut list = integrations::builtin();
    list.push(Arc::new(BenchLights::new()));
    let core = Core::builder(CoreConfig::new(dir.path()))
        .integrations(list)
        .build()?;
    let mut group_defaults = GroupConfig::new("template");
    group_defaults.watchdog = None;
    let runtime_command = vec![this_program()?, OsString::from("run-sandbox")];
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir: dir.path().to_owned(),
                runtime_command: runtime_command.clone(),
                custom_commands: [(
                    FLOOD_GROUP.to_owned(),
                    vec![this_program()?, OsString::from("flood-sandbox")],
                )]
                .into(),
                group_defaults: group_defaults.clone(),
                // The spawn figure's unconfined twins, to show what confinement costs a start,
                // and the confinement figure's unconfined group.
                group_overrides: (0..SPAWN_ROUNDS)
                    .map(|round| format!("spawn-off-{round}"))
                    .chain([UNCONFINED_GROUP.to_owned()])
                    .map(|group| {
                        let mut unconfined = group_defaults.clone();
                        unconfined.confinement = ConfinementProfile::Off;
                        (group, unconfined)
                    })
                    .collect(),
            },
            custom: vec![],
        },
    );
    core.start().await?;

    // 100 sandboxed lights through the config flow, in the built-in group.
    let flows = core.config_entries().flow();
    let form = flows
        .init(bench_lights::DOMAIN, FlowContext::new("user"), None)
        .await?;
    let created = match form.step {
        FlowStep::CreateEntry { .. } => form,
        _ => {
            flows
                .configure(
                    &form.flow_id,
                    Some(Map::from_iter([("count".to_owned(), json!(100))])),
                )
                .await?
        }
    };
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = created.step
    else {
        bail!(
            "the benchmark lights were not configured: {:?}",
            created.step
        );
    };
    wait_for("100 proxies", || bench_proxies(&core).len() == 100).await?;
    let group_name = core
        .config_entries()
        .entry(&entry_id)
        .and_then(|entry| entry.sandbox)
        .context("sandboxed")?;
    let group = plugin.groups().get(&group_name).context("the group")?;
    let pid = group.manager.status().pid.context("a pid")?;
    let lights = bench_proxies(&core);
    let light = lights[0].clone();
    eprintln!(
        "bench: {} proxies in group {group_name} (pid {pid})",
        lights.len()
    );

    // Service call round trip through a proxy, next to a raw ping-pong of the same bytes.
    if cli.runs(Section::Rtt) {
        let mut samples = Vec::with_capacity(RTT_ROUNDS);
        for round in 0..RTT_ROUNDS + RTT_ROUNDS / 10 {
            let request = ServiceRequest::new("light", "toggle")
                .with_target(ServiceTarget::entities([light.clone()]));
            let started = Instant::now();
            core.services().call(request).await?;
            if round >= RTT_ROUNDS / 10 {
                samples.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        let (rtt_p50, rtt_p99) = (
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99),
        );
        // The same call straight over the group's channel (no service dispatch on main): splits
        // the round trip into main's share and the sandbox's.
        let channel = group.manager.channel().context("the group's channel")?;
        let mut direct = Vec::with_capacity(RTT_ROUNDS);
        for round in 0..RTT_ROUNDS + RTT_ROUNDS / 10 {
            let request = toggle_first_light();
            let started = Instant::now();
            channel.call_timeout(&request, WAIT_LIMIT).await?;
            if round >= RTT_ROUNDS / 10 {
                direct.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        figures.insert(
            "direct_call_p50_us".into(),
            json!(round(percentile(&mut direct, 0.5))),
        );
        let request_frame = framing::encode_request(
            1_000_000,
            "call_service",
            &toggle_first_light(),
            MAX_FRAME_LEN,
        )?;
        let reply_frame = framing::encode_response(
            1_000_000,
            "call_service",
            &wire::CallServiceResult {
                response_json: None,
                outcomes: Vec::new(),
            },
            MAX_FRAME_LEN,
        )?;
        let program = this_program()?;
        let (request_len, reply_len) = (request_frame.len(), reply_frame.len());
        let mut raw = tokio::task::spawn_blocking(move || {
            raw_round_trips(&program, request_len, reply_len, RTT_ROUNDS)
        })
        .await??;
        figures.insert("rtt_p50_us".into(), json!(round(rtt_p50)));
        figures.insert("rtt_p99_us".into(), json!(round(rtt_p99)));
        figures.insert(
            "raw_rtt_p50_us".into(),
            json!(round(percentile(&mut raw, 0.5))),
        );
        figures.insert(
            "raw_rtt_p99_us".into(),
            json!(round(percentile(&mut raw, 0.99))),
        );
        eprintln!("bench: rtt p50 {rtt_p50:.1} µs p99 {rtt_p99:.1} µs");
    }
    // The same service call over Home Assistant's WebSocket API, next to it in-process.
    if cli.runs(Section::Api) {
        api_figures(&core, &plugin, dir.path(), &light, &mut figures).await?;
    }
    // One area call over the 100 sandboxed lights, awaited.
    if cli.runs(Section::Area) {
        let area = core.area_registry().get_or_create("Bench")?;
        for id in &lights {
            core.entity_registry().update(
                id,
                EntityUpdate {
                    area_id: Some(Some(area.id.clone())),
                    ..EntityUpdate::default()
                },
            )?;
        }
        let mut area_samples = Vec::new();
        for _ in 0..AREA_ROUNDS {
            let target = ServiceTarget {
                area_id: vec![area.id.clone()],
                ..ServiceTarget::default()
            };
            let started = Instant::now();
            core.services()
                .call(
                    ServiceRequest::new("light", "toggle")
                        .with_target(target)
                        .with_context(Context::new()),
                )
                .await?;
            area_samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
        figures.insert(
            "area_call_100_ms".into(),
            json!((percentile(&mut area_samples, 0.5) * 1000.0).round() / 1000.0),
        );
        eprintln!(
            "bench: area call over 100 lights p50 {:.3} ms",
            percentile(&mut area_samples, 0.5)
        );
    }
    // state_changed throughput of one group, next to raw frames of the same size.
    if cli.runs(Section::Push) {
        let pushes = cli.pushes;
        let last = format!("light.bench_light_{}", (pushes as usize - 1) % lights.len());
        let started = Instant::now();
        let flood = ServiceRequest::new(bench_lights::DOMAIN, "flood")
            .with_data(Map::from_iter([("count".to_owned(), json!(pushes))]));
        core.services().call(flood).await?;
        wait_for("the flood's last state on main", || {
            core.states()
                .get(&last)
                .and_then(|state| state.attributes.get("seq").and_then(Value::as_u64))
                == Some(pushes)
        })
        .await?;
        let push_elapsed = started.elapsed();
        let push_per_s = pushes as f64 / push_elapsed.as_secs_f64();
        let sample_state = core.states().get(&last).context("a state")?;
        let state_frame = framing::encode_request(
            0,
            "state_changed",
            &wire::StateChanged {
                entity_id: "light.bench_light_0".into(),
                state: sample_state.state.clone(),
                attributes_json: json::object_to_bytes(&sample_state.attributes),
                available: true,
                context_id: Some(ulid_text()),
            },
            MAX_FRAME_LEN,
        )?;
        let program = this_program()?;
        let frame_len = state_frame.len();
        let raw_push_per_s =
            tokio::task::spawn_blocking(move || raw_throughput(&program, frame_len, pushes))
                .await??;
        figures.insert("push_per_s".into(), json!(push_per_s.round()));
        figures.insert("raw_push_per_s".into(), json!(raw_push_per_s.round()));
        figures.insert("push_frame_bytes".into(), json!(frame_len));
        eprintln!(
            "bench: {push_per_s:.0} pushes/s (raw {raw_push_per_s:.0}/s, {frame_len}-byte frames)"
        );
    }
    // A flooding group next to the lights' group: the neighbour's service calls without and
    // with the flood, and what the flood got through.
    if cli.runs(Section::Flood) {
        let flooding = start_flood(&core).await?;
        let flood_channel = plugin
            .groups()
            .get(FLOOD_GROUP)
            .and_then(|handle| handle.manager.channel())
            .context("the flooding group runs")?;
        let seq_of = || {
            core.states()
                .get(&flooding)
                .and_then(|state| state.attributes.get("seq").and_then(Value::as_u64))
                .unwrap_or(0)
        };
        // A sustained flood, as a misbehaving integration's would be: measured once main has
        // had the time to judge the group past its CPU share (one sampling interval more than
        // the share's judgement takes).
        tokio::time::sleep(
            (sandbox_host::cpu_share::SUSTAINED_INTERVALS + 1)
                * sandbox_host::cpu_share::DEFAULT_CPU_SHARE_INTERVAL
                + FLOOD_SETTLE,
        )
        .await;
        let flood_nice = plugin
            .groups()
            .get(FLOOD_GROUP)
            .and_then(|handle| handle.manager.status().pid)
            .and_then(|pid| sandbox_host::cpu_share::nice_of(pid).ok());
        let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
        let (mut pushes, mut flood_time) = (0u64, Duration::ZERO);
        for block in 0..FLOOD_BLOCKS {
            let with_flood = block % 2 == 1;
            set_flood(&flood_channel, with_flood).await?;
            let (seq_before, started) = (seq_of(), Instant::now());
            let samples = if with_flood { &mut flooded } else { &mut quiet };
            neighbour_calls(&core, &light, samples).await?;
            if with_flood {
                pushes += seq_of() - seq_before;
                flood_time += started.elapsed();
            }
        }
        if let Some(handle) = plugin.groups().get(FLOOD_GROUP) {
            handle.manager.stop().await;
        }
        let flood_per_s = pushes as f64 / flood_time.as_secs_f64();
        let (quiet_p50, quiet_p99) = (percentile(&mut quiet, 0.5), percentile(&mut quiet, 0.99));
        let (flood_p50, flood_p99) = (
            percentile(&mut flooded, 0.5),
            percentile(&mut flooded, 0.99),
        );
        let figure = |name: &str, value: f64| (name.to_owned(), json!(round(value)));
        figures.extend([
            figure("flood_quiet_call_p50_us", quiet_p50),
            figure("flood_quiet_call_p99_us", quiet_p99),
            figure("flood_call_p50_us", flood_p50),
            figure("flood_call_p99_us", flood_p99),
            figure("flood_call_p50_ratio", flood_p50 / quiet_p50),
            figure("flood_call_p99_ratio", flood_p99 / quiet_p99),
            ("flood_pushes_per_s".to_owned(), json!(flood_per_s.round())),
            ("flood_group_nice".to_owned(), json!(flood_nice)),
        ]);
        eprintln!(
            "bench: neighbour call p50 {quiet_p50:.1} → {flood_p50:.1} µs, p99 {quiet_p99:.1} → {flood_p99:.1} µs ({:.2}×) under {flood_per_s:.0} pushes/s",
            flood_p99 / quiet_p99
        );
    }
    // Memory: a group with 100 lights, and an idle group.
    if cli.runs(Section::Memory) {
        figures.insert(
            "group_100_lights_rss_mb".into(),
            json!(round(resident_mb(pid))),
        );
        plugin.groups().channel("idle").await?;
        let idle_pid = plugin
            .groups()
            .get("idle")
            .and_then(|group| group.manager.status().pid)
            .context("idle pid")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        figures.insert(
            "idle_group_rss_mb".into(),
            json!(round(resident_mb(idle_pid))),
        );
    }
    // Crash to all proxies unavailable.
    if cli.runs(Section::Crash) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let unavailable = wait_for("every proxy unavailable", || {
            lights.iter().all(|id| {
                core.states()
                    .get(id)
                    .is_some_and(|state| state.state == "unavailable")
            })
        })
        .await?;
        figures.insert(
            "crash_unavailable_ms".into(),
            json!(round(unavailable.as_secs_f64() * 1e3)),
        );
        wait_for("the recovery", || {
            let status = group.manager.status();
            status.state == GroupState::Running && status.pid != Some(pid)
        })
        .await?;
    }
    // Spawn to Ready of the real runtime, next to spawning /bin/true and to the same runtime
    // started without confinement (no Landlock ruleset, no seccomp filter).
    if cli.runs(Section::Spawn) {
        let (mut spawn, mut raw_spawn, mut unconfined) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..SPAWN_ROUNDS {
            let started = Instant::now();
            tokio::process::Command::new("/bin/true").status().await?;
            raw_spawn.push(started.elapsed().as_secs_f64() * 1e3);
            for (name, samples) in [
                (format!("spawn-{round}"), &mut spawn),
                (format!("spawn-off-{round}"), &mut unconfined),
            ] {
                let started = Instant::now();
                plugin.groups().channel(&name).await?;
                samples.push(started.elapsed().as_secs_f64() * 1e3);
                if let Some(handle) = plugin.groups().get(&name) {
                    handle.manager.stop().await;
                }
            }
        }
        figures.insert(
            "spawn_ready_unconfined_ms".into(),
            json!(round(percentile(&mut unconfined, 0.5))),
        );
        figures.insert(
            "spawn_ready_ms".into(),
            json!(round(percentile(&mut spawn, 0.5))),
        );
        figures.insert(
            "raw_spawn_ms".into(),
            json!(round(percentile(&mut raw_spawn, 0.5))),
        );
    }
    // Push latency of one group, then of many groups at once.
    if cli.runs(Section::Latency) {
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let recorder = Arc::clone(&latencies);
        // Timed where main's state machine takes each state (a synchronous observer: it sees
        // every change and cannot fall behind, as a queued bus listener could under a flood).
        let observer = core.states().observe(Arc::new(
            move |_entity_id: &str, new_state: Option<&Arc<homecore::State>>| {
                let now = monotonic_ns();
                let sent = new_state
                    .and_then(|state| state.attributes.get("sent_ns"))
                    .and_then(Value::as_u64);
                if let Some(sent) = sent.filter(|sent| *sent > 0 && *sent <= now) {
                    recorder.lock().push((now - sent) as f64 / 1e3);
                }
            },
        ));
        // The same steady load per group (one change every LATENCY_INTERVAL_MS), from one
        // group and then from every group at once: what many groups cost each push.
        let group1 = load_groups(&core, &plugin, 0..1, cli.entities).await?;
        let mut group1_samples =
            timed_pushes(&plugin, &group1, &latencies, Some(LATENCY_INTERVAL_MS)).await?;
        let mut all = group1.clone();
        all.extend(load_groups(&core, &plugin, 1..cli.groups, cli.entities).await?);
        let mut paced = timed_pushes(&plugin, &all, &latencies, Some(LATENCY_INTERVAL_MS)).await?;
        // And every group flooding at once (no pacing): how long the burst takes to drain.
        let mut burst = timed_pushes(&plugin, &all, &latencies, None).await?;
        observer.remove();
        let groups = all.len();
        figures.insert(
            "group1_push_p99_us".into(),
            json!(round(percentile(&mut group1_samples, 0.99))),
        );
        figures.insert(
            format!("groups{groups}_push_p99_us"),
            json!(round(percentile(&mut paced, 0.99))),
        );
        figures.insert(
            format!("groups{groups}_push_p50_us"),
            json!(round(percentile(&mut paced, 0.5))),
        );
        figures.insert(
            "groups_push_samples".into(),
            json!(format!(
                "{} of {}",
                paced.len(),
                LATENCY_PUSHES * groups as u64
            )),
        );
        figures.insert(
            "push_interval_ms_per_group".into(),
            json!(LATENCY_INTERVAL_MS),
        );
        figures.insert(
            format!("groups{groups}_burst_p99_us"),
            json!(round(percentile(&mut burst, 0.99))),
        );
        figures.insert(
            "groups_burst_samples".into(),
            json!(format!(
                "{} of {}",
                burst.len(),
                LATENCY_PUSHES * groups as u64
            )),
        );
        figures.insert("groups".into(), json!(all.len()));
        figures.insert("entities_per_group".into(), json!(cli.entities));
    }
    // Registering 10,000 entities in one group, 1,000 at a time, next to the same on main:
    // the last thousand should take about what the first did (no step grows with what is
    // registered), and a sandboxed registration a small multiple of a local one.
    if cli.runs(Section::Register) {
        let rss_before = resident_mb(std::process::id());
        let sandboxed = register_slices(&core, Some("register")).await?;
        let rss_after = resident_mb(std::process::id());
        let local = register_slices(&core, None).await?;
        let total = |slices: &[f64]| slices.iter().sum::<f64>();
        let growth = |slices: &[f64]| slices[slices.len() - 1] / slices[0];
        let count = REGISTER_ENTRIES * bench_lights::MAX_LIGHTS;
        figures.insert(
            format!("register_{count}_sandboxed_ms"),
            json!(round(total(&sandboxed))),
        );
        figures.insert(
            format!("register_{count}_local_ms"),
            json!(round(total(&local))),
        );
        figures.insert(
            "register_sandboxed_vs_local".into(),
            json!(round(total(&sandboxed) / total(&local))),
        );
        figures.insert(
            "register_last_vs_first_1000_sandboxed".into(),
            json!(round(growth(&sandboxed))),
        );
        figures.insert(
            "register_last_vs_first_1000_local".into(),
            json!(round(growth(&local))),
        );
        figures.insert(
            format!("register_{count}_main_rss_growth_mb"),
            json!(round(rss_after - rss_before)),
        );
        eprintln!(
            "bench: {count} registrations: sandboxed {:.0} ms (last/first thousand {:.2}), local {:.0} ms (last/first {:.2})",
            total(&sandboxed),
            growth(&sandboxed),
            total(&local),
            growth(&local)
        );
    }
    // What confinement costs a service call: `light.toggle` on a light of a group under the
    // default profile (seccomp, Landlock) and of an unconfined one, in alternating blocks.
    if cli.runs(Section::Confinement) {
        let confined = light_in_group(&core, CONFINED_GROUP).await?;
        let unconfined = light_in_group(&core, UNCONFINED_GROUP).await?;
        // Both sandboxes on the same CPU: where the kernel places a process (next to main's
        // thread or across) moves a round trip by tens of microseconds on these machines,
        // far more than confinement; pinned alike, the two differ only by their profile.
        for group in [CONFINED_GROUP, UNCONFINED_GROUP] {
            let pid = plugin
                .groups()
                .get(group)
                .and_then(|handle| handle.manager.status().pid)
                .context("the group's process")?;
            let mut cpus = nix::sched::CpuSet::new();
            cpus.set(0)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(i32::try_from(pid)?), &cpus)?;
        }
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..CONFINEMENT_BLOCKS {
            neighbour_calls(&core, &confined, &mut with).await?;
            neighbour_calls(&core, &unconfined, &mut without).await?;
        }
        let (with_p50, with_p99) = (percentile(&mut with, 0.5), percentile(&mut with, 0.99));
        let (without_p50, without_p99) = (
            percentile(&mut without, 0.5),
            percentile(&mut without, 0.99),
        );
        figures.insert("call_confined_p50_us".into(), json!(round(with_p50)));
        figures.insert("call_confined_p99_us".into(), json!(round(with_p99)));
        figures.insert("call_unconfined_p50_us".into(), json!(round(without_p50)));
        figures.insert("call_unconfined_p99_us".into(), json!(round(without_p99)));
        figures.insert(
            "call_confined_vs_unconfined_p50".into(),
            json!(round(with_p50 / without_p50)),
        );
        eprintln!(
            "bench: light.toggle confined p50 {with_p50:.1} µs p99 {with_p99:.1} µs, unconfined p50 {without_p50:.1} µs p99 {without_p99:.1} µs"
        );
    }
    plugin.stop().await;
    core.stop().await?;
    // The MQTT load on a hub of its own, the benchmark hub stopped (main's CPU share is the
    // load's alone).
    if cli.runs(Section::Mqtt) {
        let broker = sandbox_compat::scenario::BrokerLauncher::from_env_or(vec![
            this_program()?,
            OsString::from("mqtt-broker"),
        ])?;
        figures.extend(
            mqtt::figures(
                cli.mqtt_entities,
                cli.mqtt_seconds,
                runtime_command.clone(),
                broker,
                vec![this_program()?, OsString::from("mqtt-publisher")],
            )
            .await?,
        );
    }
    figures.insert(
        "cpus".into(),
        json!(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
    );
    if cli.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        for (name, value) in &figures {
            println!("{name:<28} {value}");
        }
    }
    Ok(())
}

/// `light.toggle` on the sandboxed `light`, over the hub's WebSocket API (its real router on a
/// loopback port, one authenticated connection) and in-process, and the API's `ping`, in
/// alternating blocks.
async fn api_figures(
    core: &Core,
    plugin: &Arc<SandboxPlugin>,
    config_dir: &Path,
    light: &str,
    figures: &mut BTreeMap<String, Value>,
) -> Result<()> {
    let token = TokenStore::new(config_dir)
        .create("bench")
        .context("cannot create the API token")?;
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    let state = ApiState {
        hub: Hub {
            core: core.clone(),
            plugin: Arc::clone(plugin),
            config_dir: config_dir.to_owned(),
            started: Instant::now(),
            control_refusals: Arc::default(),
            http_address: Some(address),
        },
        gate: Gate::new(TokenStore::new(config_dir)),
    };
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            api::for_network(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = serving_stopped.await;
        })
        .await
    });
    let mut client = ApiClient::connect(address, &token).await?;
    // Three kinds of block in turn: the call in-process, the call over the API, and the API's
    // `ping` (answered by the connection's reader, no service: the transport's share).
    let mut samples: [Vec<f64>; 3] =
        std::array::from_fn(|_| Vec::with_capacity(API_BLOCKS / 3 * API_BLOCK_ROUNDS));
    for block in 0..API_BLOCKS {
        let kind = block % 3;
        for round in 0..API_BLOCK_ROUNDS + API_BLOCK_ROUNDS / 10 {
            let started = Instant::now();
            match kind {
                0 => {
                    core.services()
                        .call(
                            ServiceRequest::new("light", "toggle")
                                .with_target(ServiceTarget::entities([light.to_owned()])),
                        )
                        .await?;
                }
                1 => {
                    client
                        .call(json!({
                            "type": "call_service",
                            "domain": "light",
                            "service": "toggle",
                            "target": {"entity_id": light},
                        }))
                        .await?;
                }
                _ => {
                    client.call(json!({"type": "ping"})).await?;
                }
            }
            if round >= API_BLOCK_ROUNDS / 10 {
                samples[kind].push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    client.close().await;
    let _ = stop_serving.send(());
    server.await.context("the API server task")??;
    let [mut in_process, mut over_api, mut ping] = samples;
    let (api_p50, api_p99) = (
        percentile(&mut over_api, 0.5),
        percentile(&mut over_api, 0.99),
    );
    let (local_p50, local_p99) = (
        percentile(&mut in_process, 0.5),
        percentile(&mut in_process, 0.99),
    );
    let (ping_p50, ping_p99) = (percentile(&mut ping, 0.5), percentile(&mut ping, 0.99));
    figures.extend([
        ("api_call_p50_us".to_owned(), json!(round(api_p50))),
        ("api_call_p99_us".to_owned(), json!(round(api_p99))),
        ("api_in_process_p50_us".to_owned(), json!(round(local_p50))),
        ("api_in_process_p99_us".to_owned(), json!(round(local_p99))),
        ("api_ping_p50_us".to_owned(), json!(round(ping_p50))),
        ("api_ping_p99_us".to_owned(), json!(round(ping_p99))),
        (
            "api_vs_in_process_p50".to_owned(),
            json!(round(api_p50 / local_p50)),
        ),
        (
            "api_vs_in_process_p99".to_owned(),
            json!(round(api_p99 / local_p99)),
        ),
    ]);
    eprintln!(
        "bench: call_service over the WebSocket API p50 {api_p50:.1} µs p99 {api_p99:.1} µs; \
         in-process p50 {local_p50:.1} µs p99 {local_p99:.1} µs ({:.2}x at p50); \
         the API's ping p50 {ping_p50:.1} µs p99 {ping_p99:.1} µs",
        api_p50 / local_p50
    );
    Ok(())
}

/// One authenticated WebSocket connection to the hub's API, its commands numbered.
struct ApiClient {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl ApiClient {
    async fn connect(address: std::net::SocketAddr, token: &str) -> Result<Self> {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{address}{}", api::WEBSOCKET_PATH))
                .await
                .context("cannot open the WebSocket")?;
        let mut client = Self { socket, next_id: 1 };
        let required = client.next_message().await?;
        if required["type"] != "auth_required" {
            bail!("expected auth_required, got {required}");
        }
        client
            .send(&json!({"type": "auth", "access_token": token}))
            .await?;
        let answer = client.next_message().await?;
        if answer["type"] != "auth_ok" {
            bail!("expected auth_ok, got {answer}");
        }
        Ok(client)
    }

    async fn send(&mut self, message: &Value) -> Result<()> {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .context("cannot send on the WebSocket")
    }

    async fn next_message(&mut self) -> Result<Value> {
        loop {
            let message = tokio::time::timeout(WAIT_LIMIT, self.socket.next())
                .await
                .context("timed out waiting for the API")?;
            match message {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(other)) => bail!("unexpected WebSocket message {other:?}"),
                Some(Err(error)) => return Err(error).context("the WebSocket failed"),
                None => bail!("the API closed the WebSocket"),
            }
        }
    }

    /// Sends `command` with the next id and waits for its answer (a failed result is an
    /// error).
    async fn call(&mut self, mut command: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send(&command).await?;
        loop {
            let answer = self.next_message().await?;
            if answer["id"] != id {
                continue;
            }
            if answer["type"] == "result" && answer["success"] != true {
                bail!("the API refused {command}: {answer}");
            }
            return Ok(answer);
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// `light.toggle` through the proxy of `light`, `FLOOD_BLOCK_ROUNDS` times after a tenth of
/// that as warm-up, each added to `samples` in µs.
/// One bench light in an entry of its own in `group`; its entity id.
async fn light_in_group(core: &Core, group: &str) -> Result<String> {
    let before = bench_proxies(core);
    let mut entry = ConfigEntry::new(
        bench_lights::DOMAIN,
        format!("one light in {group}"),
        Map::from_iter([("count".to_owned(), json!(1))]),
        "user",
    );
    entry.sandbox = Some(group.to_owned());
    core.config_entries().add(entry).await?;
    wait_for("the group's light", || {
        bench_proxies(core).len() > before.len()
    })
    .await?;
    bench_proxies(core)
        .into_iter()
        .find(|light| !before.contains(light))
        .context("the group's light")
}

async fn neighbour_calls(core: &Core, light: &str, samples: &mut Vec<f64>) -> Result<()> {
    for round in 0..FLOOD_BLOCK_ROUNDS + FLOOD_BLOCK_ROUNDS / 10 {
        let request = ServiceRequest::new("light", "toggle")
            .with_target(ServiceTarget::entities([light.to_owned()]));
        let started = Instant::now();
        core.services().call(request).await?;
        if round >= FLOOD_BLOCK_ROUNDS / 10 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(())
}

/// Starts or pauses the flooding sandbox's pushes (its `call_service` is the switch).
async fn set_flood(channel: &sandbox_proto::Channel, on: bool) -> Result<()> {
    let request = wire::CallService {
        domain: bench_lights::DOMAIN.into(),
        service: if on { "resume" } else { "pause" }.into(),
        entity_ids: vec![],
        data_json: json::to_bytes(&json!({})),
        context_id: String::new(),
        return_response: false,
        per_entity: false,
    };
    channel.call_timeout(&request, WAIT_LIMIT).await?;
    Ok(())
}

/// Adds an entry in the flooding group and waits until its light's pushes reach main; returns
/// the light's entity id on main.
async fn start_flood(core: &Core) -> Result<String> {
    let mut entry = ConfigEntry::new(bench_lights::DOMAIN, "flood", Map::new(), "user");
    entry.sandbox = Some(FLOOD_GROUP.to_owned());
    core.config_entries().add(entry).await?;
    let flooding = "light.flood_light".to_owned();
    wait_for("the flood on main", || {
        core.states()
            .get(&flooding)
            .and_then(|state| state.attributes.get("seq").and_then(Value::as_u64))
            .is_some_and(|seq| seq > 0)
    })
    .await?;
    Ok(flooding)
}

/// The flooding sandbox: says `ready`, answers ping, entry setup (registering one light for the
/// entry, then pushing its state in a tight loop, `FLOOD_BATCH` per write, each with the next
/// sequence number), `call_service` `pause` and `resume` (of every flood), and shutdown.
fn flood_sandbox(args: sandbox_runtime::sdk::Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flood-sandbox: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run_flood_sandbox(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flood-sandbox: {error:#}");
            ExitCode::from(3)
        }
    }
}

async fn run_flood_sandbox(args: sandbox_runtime::sdk::Args) -> Result<()> {
    use sandbox_proto::{ChannelBuilder, ChannelConfig, Transport, TransportUrl, version};
    let transport = Transport::open(&TransportUrl::parse(&args.url)?).await?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let shutdown = Arc::clone(&stop);
    let (flooding, flood_switch) = tokio::sync::watch::channel(true);
    let channel = ChannelBuilder::new(ChannelConfig::named(args.name.clone()))
        .on_call::<wire::Ping, _, _>(|ping, _| async move {
            Ok(wire::Pong {
                nonce: ping.nonce,
                rss_bytes: 0,
                entities: 0,
            })
        })
        .on_call::<wire::EntrySetup, _, _>(move |setup: wire::EntrySetup, channel| {
            let switch = flood_switch.clone();
            async move {
                let entry_id = setup.entry.map(|entry| entry.entry_id).unwrap_or_default();
                let registered = channel
                    .call(&flood_light(&entry_id))
                    .await
                    .map_err(|error| sandbox_proto::RemoteError::internal(error.to_string()))?;
                tokio::spawn(flood_states(channel, registered.entity_id, switch));
                Ok(wire::EntrySetupResult {
                    outcome: wire::SetupOutcome::Loaded as i32,
                    reason: String::new(),
                    updated_entry: None,
                })
            }
        })
        .on_call::<wire::CallService, _, _>(move |call: wire::CallService, _| {
            let _ = flooding.send(call.service == "resume");
            async move {
                Ok(wire::CallServiceResult {
                    response_json: None,
                    outcomes: Vec::new(),
                })
            }
        })
        .on_call::<wire::EntryUnload, _, _>(|_: wire::EntryUnload, _| async move {
            Ok(wire::EntryUnloadResult {
                ok: true,
                reason: String::new(),
            })
        })
        .on_call::<wire::Shutdown, _, _>(move |_: wire::Shutdown, _| {
            let stop = Arc::clone(&shutdown);
            async move {
                stop.notify_one();
                Ok(wire::ShutdownResult {
                    restore_state_json: Default::default(),
                })
            }
        })
        .start(transport);
    let ready = wire::Ready {
        protocol_version: version::PROTOCOL_VERSION.to_owned(),
        features: version::features(),
        group: args.name.clone(),
        runtime: "flood-sandbox".to_owned(),
        integrations: Vec::new(),
    };
    channel.call(&ready).await.context("main refused ready")?;
    tokio::select! {
        () = stop.notified() => {
            channel.drain_inflight(Duration::from_secs(5)).await;
            channel.close().await;
        }
        _ = channel.closed() => channel.close().await,
    }
    Ok(())
}

/// The flooding sandbox's one light, for `entry_id`.
fn flood_light(entry_id: &str) -> wire::RegisterEntity {
    wire::RegisterEntity {
        description: Some(wire::EntityDescription {
            entity_id: "light.flood_light".to_owned(),
            entry_id: entry_id.to_owned(),
            platform: bench_lights::DOMAIN.to_owned(),
            domain: "light".to_owned(),
            unique_id: Some(format!("{entry_id}-flood")),
            name: Some("Flood light".to_owned()),
            capabilities_json: json::to_bytes(&json!({"supported_color_modes": ["onoff"]})),
            entity_registry_enabled_default: true,
            ..Default::default()
        }),
        state: Some(wire::EntityState {
            state: "off".to_owned(),
            attributes_json: json::to_bytes(&json!({"seq": 0})),
            available: true,
        }),
        context_id: None,
    }
}

/// Pushes `entity_id`'s state as fast as the channel takes it while `switch` is on, until the
/// channel closes.
async fn flood_states(
    channel: sandbox_proto::Channel,
    entity_id: String,
    mut switch: tokio::sync::watch::Receiver<bool>,
) {
    let mut seq = 0u64;
    loop {
        if switch.wait_for(|on| *on).await.is_err() {
            return;
        }
        let batch: Vec<wire::StateChanged> = (0..FLOOD_BATCH)
            .map(|_| {
                seq += 1;
                wire::StateChanged {
                    entity_id: entity_id.clone(),
                    state: if seq.is_multiple_of(2) { "on" } else { "off" }.to_owned(),
                    attributes_json: json::to_bytes(
                        &json!({"seq": seq, "sent_ns": monotonic_ns()}),
                    ),
                    available: true,
                    context_id: None,
                }
            })
            .collect();
        if channel.push_batch(&batch).await.is_err() {
            return;
        }
    }
}

/// What a proxy sends for `light.toggle` on the first benchmark light.
fn toggle_first_light() -> wire::CallService {
    wire::CallService {
        domain: "light".into(),
        service: "toggle".into(),
        entity_ids: vec!["light.bench_light_0".into()],
        data_json: json::to_bytes(&json!({})),
        context_id: ulid_text(),
        return_response: false,
        per_entity: false,
    }
}

/// Adds `REGISTER_ENTRIES` entries of `MAX_LIGHTS` lights each, one after the other, in
/// `group` (sandboxed) or on main (`None`); returns how long each entry took until its lights
/// had states on main. Every light of one entry has the same name as the light of the same index
/// in every other entry, so later entries take suffixed ids (`light.bench_light_7_10`): the
/// per-entry time shows whether registering grows with what is registered already.
async fn register_slices(core: &Core, group: Option<&str>) -> Result<Vec<f64>> {
    let mut slices = Vec::with_capacity(REGISTER_ENTRIES);
    for index in 0..REGISTER_ENTRIES {
        let before = bench_proxies(core).len();
        let mut entry = ConfigEntry::new(
            bench_lights::DOMAIN,
            format!("register {index}"),
            Map::from_iter([("count".to_owned(), json!(bench_lights::MAX_LIGHTS))]),
            "user",
        );
        entry.sandbox = group.map(str::to_owned);
        let started = Instant::now();
        core.config_entries().add(entry).await?;
        wait_for("the registered lights", || {
            bench_proxies(core).len() >= before + bench_lights::MAX_LIGHTS
        })
        .await?;
        slices.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(slices)
}

fn ulid_text() -> String {
    homecore::Context::new().id.to_string()
}

/// Creates benchmark-light entries, each in a group of its own, and waits for their proxies.
async fn load_groups(
    core: &Core,
    plugin: &SandboxPlugin,
    range: std::ops::Range<usize>,
    entities: usize,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let before = bench_proxies(core).len();
    let setups = range.clone().map(|index| {
        let mut entry = ConfigEntry::new(
            bench_lights::DOMAIN,
            format!("load {index}"),
            Map::from_iter([("count".to_owned(), json!(entities))]),
            "user",
        );
        entry.sandbox = Some(format!("load-{index}"));
        names.push(format!("load-{index}"));
        core.config_entries().add(entry)
    });
    for result in futures::future::join_all(setups).await {
        result?;
    }
    let wanted = before + range.len() * entities;
    wait_for("the groups' proxies", || {
        bench_proxies(core).len() >= wanted
    })
    .await?;
    let _ = plugin;
    Ok(names)
}

/// Has every group in `groups` write LATENCY_PUSHES states at once (paced or not) and returns
/// the push latencies main saw.
async fn timed_pushes(
    plugin: &SandboxPlugin,
    groups: &[String],
    latencies: &Mutex<Vec<f64>>,
    interval_ms: Option<u64>,
) -> Result<Vec<f64>> {
    latencies.lock().clear();
    flood_groups(plugin, groups, LATENCY_PUSHES, interval_ms).await?;
    let expected = LATENCY_PUSHES * groups.len() as u64;
    // Every sample is expected; a missing one shows in the printed sample count.
    let _ = wait_for("the latency samples", || {
        latencies.lock().len() as u64 >= expected
    })
    .await;
    Ok(std::mem::take(&mut *latencies.lock()))
}

/// Floods every group at once (straight over each group's channel: the mirrored service
/// reaches only the group that registered it first).
async fn flood_groups(
    plugin: &SandboxPlugin,
    groups: &[String],
    count: u64,
    interval_ms: Option<u64>,
) -> Result<()> {
    let spread_us = interval_ms.unwrap_or(0) * 1000 / groups.len().max(1) as u64;
    let calls = groups.iter().enumerate().map(|(index, group)| {
        let channel = plugin
            .groups()
            .get(group)
            .and_then(|handle| handle.manager.channel());
        async move {
            let channel = channel.context("the group runs")?;
            let request = wire::CallService {
                domain: bench_lights::DOMAIN.into(),
                service: "flood".into(),
                entity_ids: vec![],
                data_json: json::to_bytes(&json!({
                    "count": count,
                    "interval_ms": interval_ms,
                    "offset_us": spread_us * index as u64,
                })),
                context_id: String::new(),
                return_response: false,
                per_entity: false,
            };
            channel.call_timeout(&request, WAIT_LIMIT).await?;
            anyhow::Ok(())
        }
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }
    Ok(())
}

/// Raw ping-pong of the same bytes over pipes with a child process (the groups' transport).
fn raw_round_trips(
    program: &OsString,
    request: usize,
    reply: usize,
    rounds: usize,
) -> Result<Vec<f64>> {
    let mut child = std::process::Command::new(program)
        .args(["raw-echo", &request.to_string(), &reply.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    let mut output = child.stdout.take().context("stdout")?;
    let (bytes, mut answer) = (vec![1u8; request], vec![0u8; reply]);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds + rounds / 10 {
        let started = Instant::now();
        input.write_all(&bytes)?;
        output.read_exact(&mut answer)?;
        if round >= rounds / 10 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(input);
    child.wait()?;
    Ok(samples)
}

/// Raw frames per second from a child process over a pipe.
fn raw_throughput(program: &OsString, frame: usize, count: u64) -> Result<f64> {
    let started = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(["raw-producer", &frame.to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut output = child.stdout.take().context("stdout")?;
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut total, wanted) = (0u64, frame as u64 * count);
    while total < wanted {
        let read = output.read(&mut buffer)?;
        if read == 0 {
            bail!("the raw producer stopped after {total} of {wanted} bytes");
        }
        total += read as u64;
    }
    child.wait()?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
