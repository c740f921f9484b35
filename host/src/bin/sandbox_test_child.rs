//! A sandbox stand-in for the group manager's tests and the forged-frame suite: speaks the
//! protocol just enough (ready, ping, shutdown, entry setup and unload) and misbehaves on
//! command.
//!
//! Usage: `sandbox-test-child --name GROUP --url URL [behaviour flags]`
//!
//! | flag | behaviour |
//! |---|---|
//! | `--ready-delay-ms N` | wait N ms before saying ready |
//! | `--never-ready` | open the channel but never say ready |
//! | `--exit-code N` | exit with code N at once, before connecting |
//! | `--crash-after-ms N` | exit with code 70 N ms after ready |
//! | `--hang-after-ready` | block its only thread after ready: alive but answering nothing |
//! | `--ignore-sigterm` | survive SIGTERM |
//! | `--ignore-shutdown` | have no `shutdown` handler |
//! | `--ignore-eof` | keep running after main closes the channel |
//! | `--garbage-stdout` | write garbage to stdout after ready |
//! | `--protocol-version V` | announce protocol version V |
//! | `--report PATH` | write its rlimits, no_new_privs and stdin target to PATH |
//! | `--grandchild-pid-file PATH` | start a `sleep` child and write its pid to PATH |
//! | `--forge SCENARIO` | after ready (once main's bridge answers), forge the scenario's frames |
//! | `--forge-report PATH` | write one JSON line per forged attempt to PATH, then `{"done":true}` |
//! | `--own-entry ID` | an entry main routed to this group (for the control requests) |
//! | `--foreign-entry ID` | an entry main did not route to this group |
//! | `--foreign-device KIND=VALUE` | an identifier of a device owned outside the group |
//! | `--foreign-connection KIND=VALUE` | a connection of a device owned outside the group |
//! | `--existing-service DOMAIN.SERVICE` | a service main registered already |
//!
//! Entry setup always answers `loaded` and entry unload `ok`, so entries routed here load.
//!
//! Forge scenarios (each ends with an allowed control request proving the gate is not a blanket
//! refusal). A call's outcome is reported as `{"step", "ok": true, ...}` or
//! `{"step", "ok": false, "kind", "message"}`; a push, which has no answer, as
//! `{"step", "pushed": true}`. The report is written whole (temp file, then rename) when done.
//!
//! | scenario | forged frames |
//! |---|---|
//! | `foreign_entry` | `register_entity` for `--foreign-entry` and for an entry that does not exist |
//! | `foreign_device` | `register_entity` whose device matches `--foreign-device` / `--foreign-connection` (the connection upper-cased); after the control, one listing the group's own device identifier and then `--foreign-device` |
//! | `unproxyable_domain` | `register_entity` of a `camera` and of an unknown domain for `--own-entry` |
//! | `service` | `register_service` of `persistent_notification.create`, `homeassistant.restart` and `--existing-service` |
//! | `event` | `fire_event` of core events (`homeassistant_stop`, `homeassistant_start`, `call_service`, `state_changed`, `service_registered`) and unowned ones (`zha_event`, `hue_event`); control `demo_forged_ok` |
//! | `store` | `store_save` with an over-long key, path-traversal keys, a value over 4 MiB; `store_load` of a traversal key |
//! | `context` | `state_changed` and `fire_event` with a context id main never issued, then a flood of distinct unknown ids; ends with `demo_flood_done` |
//! | `update_entry` | `update_entry` for `--foreign-entry` and for an entry that does not exist |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sandbox_proto::wire::{
    self, EntrySetup, EntrySetupResult, EntryUnload, EntryUnloadResult, Ping, Pong, Ready,
    SetupOutcome, Shutdown, ShutdownResult,
};
use sandbox_proto::{
    CallError, Channel, ChannelBuilder, ChannelConfig, Transport, TransportUrl, version,
};
use serde_json::{Value, json};

#[derive(Default)]
struct Behaviour {
    name: String,
    url: String,
    ready_delay: Option<Duration>,
    never_ready: bool,
    exit_code: Option<u8>,
    crash_after: Option<Duration>,
    hang_after_ready: bool,
    ignore_sigterm: bool,
    ignore_shutdown: bool,
    ignore_eof: bool,
    garbage_stdout: bool,
    protocol_version: Option<String>,
    report: Option<PathBuf>,
    grandchild_pid_file: Option<PathBuf>,
    forge: Option<Forge>,
}

/// What to forge and what with.
#[derive(Default, Clone)]
struct Forge {
    scenario: String,
    report: Option<PathBuf>,
    own_entry: String,
    foreign_entry: String,
    foreign_device: Option<(String, String)>,
    foreign_connection: Option<(String, String)>,
    existing_service: Option<(String, String)>,
}

fn pair(value: &str, separator: char) -> Result<(String, String)> {
    let (first, second) = value
        .split_once(separator)
        .with_context(|| format!("{value:?} is not of the form A{separator}B"))?;
    Ok((first.to_owned(), second.to_owned()))
}

fn parse() -> Result<Behaviour> {
    let mut behaviour = Behaviour::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => behaviour.name = value()?,
            "--url" => behaviour.url = value()?,
            "--ready-delay-ms" => {
                behaviour.ready_delay = Some(Duration::from_millis(value()?.parse()?))
            }
            "--never-ready" => behaviour.never_ready = true,
            "--exit-code" => behaviour.exit_code = Some(value()?.parse()?),
            "--crash-after-ms" => {
                behaviour.crash_after = Some(Duration::from_millis(value()?.parse()?))
            }
            "--hang-after-ready" => behaviour.hang_after_ready = true,
            "--ignore-sigterm" => behaviour.ignore_sigterm = true,
            "--ignore-shutdown" => behaviour.ignore_shutdown = true,
            "--ignore-eof" => behaviour.ignore_eof = true,
            "--garbage-stdout" => behaviour.garbage_stdout = true,
            "--protocol-version" => behaviour.protocol_version = Some(value()?),
            "--report" => behaviour.report = Some(value()?.into()),
            "--grandchild-pid-file" => behaviour.grandchild_pid_file = Some(value()?.into()),
            "--forge" => behaviour.forge.get_or_insert_default().scenario = value()?,
            "--forge-report" => {
                behaviour.forge.get_or_insert_default().report = Some(value()?.into())
            }
            "--own-entry" => behaviour.forge.get_or_insert_default().own_entry = value()?,
            "--foreign-entry" => behaviour.forge.get_or_insert_default().foreign_entry = value()?,
            "--foreign-device" => {
                behaviour.forge.get_or_insert_default().foreign_device = Some(pair(&value()?, '=')?)
            }
            "--foreign-connection" => {
                behaviour.forge.get_or_insert_default().foreign_connection =
                    Some(pair(&value()?, '=')?)
            }
            "--existing-service" => {
                behaviour.forge.get_or_insert_default().existing_service =
                    Some(pair(&value()?, '.')?)
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if let Some(forge) = &behaviour.forge {
        if !SCENARIOS.contains(&forge.scenario.as_str()) {
            bail!(
                "--forge needs one of {SCENARIOS:?}, not {:?}",
                forge.scenario
            );
        }
        if forge.report.is_none() {
            bail!("--forge needs --forge-report PATH");
        }
    }
    Ok(behaviour)
}

fn main() -> ExitCode {
    let behaviour = match parse() {
        Ok(behaviour) => behaviour,
        Err(error) => {
            eprintln!("sandbox-test-child: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = behaviour.exit_code {
        eprintln!("sandbox-test-child: exiting with {code} as told");
        return ExitCode::from(code);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sandbox-test-child: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(behaviour)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sandbox-test-child: {error:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(behaviour: Behaviour) -> Result<()> {
    let _sigterm = if behaviour.ignore_sigterm {
        Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        )?)
    } else {
        None
    };
    if let Some(path) = &behaviour.report {
        write_report(path)?;
    }
    let _grandchild = match &behaviour.grandchild_pid_file {
        Some(path) => {
            let child = std::process::Command::new("sleep").arg("1000").spawn()?;
            std::fs::write(path, child.id().to_string())?;
            Some(child)
        }
        None => None,
    };
    let url = TransportUrl::parse(&behaviour.url)?;
    let transport = Transport::open(&url).await?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut builder = ChannelBuilder::new(ChannelConfig::named(behaviour.name.clone()))
        .on_call::<Ping, _, _>(|ping, _| async move {
            Ok(Pong {
                nonce: ping.nonce,
                rss_bytes: 0,
                entities: 0,
            })
        })
        .on_call::<EntrySetup, _, _>(|_: EntrySetup, _| async move {
            Ok(EntrySetupResult {
                outcome: SetupOutcome::Loaded as i32,
                reason: String::new(),
                updated_entry: None,
            })
        })
        .on_call::<EntryUnload, _, _>(|_: EntryUnload, _| async move {
            Ok(EntryUnloadResult {
                ok: true,
                reason: String::new(),
            })
        });
    if !behaviour.ignore_shutdown {
        let stop = Arc::clone(&stop);
        let group = behaviour.name.clone();
        builder = builder.on_call::<Shutdown, _, _>(move |_: Shutdown, _| {
            let stop = Arc::clone(&stop);
            let restore =
                format!("{{\"group\":\"{group}\",\"lights\":{{\"light.kitchen\":\"on\"}}}}");
            async move {
                stop.notify_one();
                Ok(ShutdownResult {
                    restore_state_json: restore.into_bytes().into(),
                })
            }
        });
    }
    let channel = builder.start(transport);

    if let Some(delay) = behaviour.ready_delay {
        tokio::time::sleep(delay).await;
    }
    if behaviour.never_ready {
        channel.closed().await;
        return Ok(());
    }
    let ready = Ready {
        protocol_version: behaviour
            .protocol_version
            .clone()
            .unwrap_or_else(|| version::PROTOCOL_VERSION.to_owned()),
        features: version::features(),
        group: behaviour.name.clone(),
        runtime: "sandbox-test-child".to_owned(),
        integrations: Vec::new(),
    };
    channel.call(&ready).await.context("main refused ready")?;

    if behaviour.garbage_stdout {
        let mut stdout = std::io::stdout();
        stdout.write_all(b"garbage that is not a frame\n")?;
        stdout.flush()?;
    }
    if let Some(forge) = behaviour.forge.clone() {
        let channel = channel.clone();
        tokio::spawn(async move {
            let report = forge.report.clone().unwrap_or_default();
            let mut lines = match forge_scenario(&channel, &forge).await {
                Ok(lines) => lines,
                Err(error) => vec![json!({"error": format!("{error:#}")})],
            };
            lines.push(json!({"done": true}));
            if let Err(error) = write_forge_report(&report, &lines) {
                eprintln!("sandbox-test-child: cannot write the forge report: {error:#}");
            }
        });
    }
    if behaviour.hang_after_ready {
        // Block the runtime's only thread: the process lives but answers nothing.
        std::thread::sleep(Duration::from_secs(3600));
    }
    let crash = async {
        match behaviour.crash_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                eprintln!("sandbox-test-child: crashing as told");
                std::process::exit(70);
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = stop.notified() => {
            channel.drain_inflight(Duration::from_secs(5)).await;
            channel.close().await;
        }
        _ = channel.closed() => {
            channel.close().await;
            if behaviour.ignore_eof {
                std::future::pending::<()>().await;
            }
        }
        () = crash => {}
    }
    Ok(())
}

fn write_report(path: &PathBuf) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit};
    let (core, _) = getrlimit(Resource::RLIMIT_CORE)?;
    let (files, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let (address_space, _) = getrlimit(Resource::RLIMIT_AS)?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let no_new_privs = status
        .lines()
        .find_map(|line| line.strip_prefix("NoNewPrivs:"))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    let stdin = std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pgid = nix::unistd::getpgrp();
    let pid = nix::unistd::getpid();
    std::fs::write(
        path,
        format!(
            "core={core}\nnofile={files}\nas={address_space}\nno_new_privs={no_new_privs}\nstdin={stdin}\nown_group={}\n",
            pgid == pid
        ),
    )?;
    Ok(())
}

/// The forge scenarios `--forge` accepts.
const SCENARIOS: &[&str] = &[
    "foreign_entry",
    "foreign_device",
    "unproxyable_domain",
    "service",
    "event",
    "store",
    "context",
    "update_entry",
];

/// How many distinct unknown context ids the `context` scenario floods main with: three times
/// main's cache cap (2048).
const CONTEXT_FLOOD: usize = 3 * 2048;

/// One byte over the store server's value limit (4 MiB).
const OVER_VALUE_LIMIT: usize = 4 * 1024 * 1024 + 1;

/// The outcome of one forged call, as a report line.
fn outcome<T>(step: &str, result: Result<T, CallError>, extra: impl FnOnce(&T) -> Value) -> Value {
    match result {
        Ok(reply) => {
            let mut line = json!({"step": step, "ok": true});
            if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra(&reply)) {
                line.extend(extra);
            }
            line
        }
        Err(error) => match error.remote() {
            Some(remote) => json!({
                "step": step,
                "ok": false,
                "kind": format!("{:?}", remote.kind),
                "message": remote.message,
            }),
            None => json!({
                "step": step,
                "ok": false,
                "kind": "transport",
                "message": error.to_string(),
            }),
        },
    }
}

fn pushed(step: &str, result: Result<(), CallError>) -> Result<Value> {
    result.with_context(|| format!("cannot push {step}"))?;
    Ok(json!({"step": step, "pushed": true}))
}

/// Waits until main's bridge for this group answers (main says ready before it installs it).
async fn wait_for_bridge(channel: &Channel) -> Result<()> {
    let probe = wire::UnregisterService {
        domain: "forge_probe".to_owned(),
        service: "probe".to_owned(),
    };
    for _ in 0..3000 {
        match channel.call(&probe).await {
            Ok(_) => return Ok(()),
            Err(CallError::Remote { error, .. })
                if error.kind == sandbox_proto::error::ErrorKind::Refused =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(error).context("main's bridge probe failed"),
        }
    }
    bail!("main's bridge never answered")
}

fn string_pair((first, second): &(String, String)) -> wire::StringPair {
    wire::StringPair {
        first: first.clone(),
        second: second.clone(),
    }
}

/// A `register_entity` of `domain.object_id` for `entry_id`.
fn entity(
    domain: &str,
    object_id: &str,
    entry_id: &str,
    device: Option<wire::DeviceInfo>,
) -> wire::RegisterEntity {
    wire::RegisterEntity {
        description: Some(wire::EntityDescription {
            entity_id: format!("{domain}.{object_id}"),
            entry_id: entry_id.to_owned(),
            platform: "demo".to_owned(),
            domain: domain.to_owned(),
            unique_id: Some(object_id.to_owned()),
            name: Some(object_id.replace('_', " ")),
            device,
            entity_registry_enabled_default: true,
            ..Default::default()
        }),
        state: Some(wire::EntityState {
            state: "on".to_owned(),
            attributes_json: b"{}".to_vec().into(),
            available: true,
        }),
        context_id: None,
    }
}

async fn register(channel: &Channel, step: &str, request: &wire::RegisterEntity) -> Value {
    outcome(
        step,
        channel.call(request).await,
        |reply| json!({"entity_id": reply.entity_id}),
    )
}

fn envelope(key: &str, data: Value) -> Vec<u8> {
    json!({"version": 1, "minor_version": 1, "key": key, "data": data})
        .to_string()
        .into_bytes()
}

async fn save(channel: &Channel, step: &str, key: &str, envelope_json: Vec<u8>) -> Value {
    let request = wire::StoreSave {
        key: key.to_owned(),
        envelope_json: envelope_json.into(),
    };
    outcome(step, channel.call(&request).await, |_| Value::Null)
}

fn event(event_type: &str, context_id: Option<String>) -> wire::FireEvent {
    wire::FireEvent {
        event_type: event_type.to_owned(),
        data_json: json!({"forged": true}).to_string().into_bytes().into(),
        context_id,
    }
}

/// Runs the scenario; one report line per attempt.
async fn forge_scenario(channel: &Channel, forge: &Forge) -> Result<Vec<Value>> {
    wait_for_bridge(channel).await?;
    let own = forge.own_entry.as_str();
    let foreign = forge.foreign_entry.as_str();
    let mut lines = Vec::new();
    match forge.scenario.as_str() {
        "foreign_entry" => {
            let request = entity("light", "forged_foreign", foreign, None);
            lines.push(register(channel, "foreign_entry", &request).await);
            let request = entity("light", "forged_missing", "no-such-entry", None);
            lines.push(register(channel, "missing_entry", &request).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
        }
        "foreign_device" => {
            let device = |identifiers: Vec<wire::StringPair>, connections| wire::DeviceInfo {
                identifiers,
                connections,
                name: Some("forged device".to_owned()),
                ..Default::default()
            };
            if let Some(identifier) = &forge.foreign_device {
                let forged = device(vec![string_pair(identifier)], Vec::new());
                let request = entity("light", "forged_by_identifier", own, Some(forged));
                lines.push(register(channel, "by_identifier", &request).await);
            }
            if let Some((kind, value)) = &forge.foreign_connection {
                // Main normalises connections: another spelling must match all the same.
                let forged = device(
                    Vec::new(),
                    vec![string_pair(&(kind.clone(), value.to_uppercase()))],
                );
                let request = entity("light", "forged_by_connection", own, Some(forged));
                lines.push(register(channel, "by_connection", &request).await);
            }
            let mine = device(
                vec![string_pair(&(
                    "demo".to_owned(),
                    "sandbox-device".to_owned(),
                ))],
                Vec::new(),
            );
            let request = entity("light", "control", own, Some(mine.clone()));
            lines.push(register(channel, "control", &request).await);
            if let Some(identifier) = &forge.foreign_device {
                // The group's own device identifier first, then the foreign one: main must
                // look at every device the description matches, not only the first.
                let mut smuggled = mine;
                smuggled.identifiers.push(string_pair(identifier));
                let request = entity("light", "forged_smuggled", own, Some(smuggled));
                lines.push(register(channel, "smuggled", &request).await);
            }
        }
        "unproxyable_domain" => {
            let request = entity("camera", "forged_camera", own, None);
            lines.push(register(channel, "camera", &request).await);
            let request = entity("no_such_domain", "forged_unknown", own, None);
            lines.push(register(channel, "unknown_domain", &request).await);
            let request = entity("light", "control", own, None);
            lines.push(register(channel, "control", &request).await);
        }
        "service" => {
            let mut targets = vec![
                ("persistent_notification", "create"),
                ("homeassistant", "restart"),
            ];
            if let Some((domain, service)) = &forge.existing_service {
                targets.push((domain, service));
            }
            targets.push(("demo", "forged_ok"));
            for (domain, service) in targets {
                let request = wire::RegisterService {
                    domain: domain.to_owned(),
                    service: service.to_owned(),
                    supports_response: wire::SupportsResponse::None as i32,
                    schema_json: Default::default(),
                };
                let step = format!("{domain}.{service}");
                lines.push(outcome(&step, channel.call(&request).await, |_| {
                    Value::Null
                }));
            }
        }
        "event" => {
            for event_type in [
                "homeassistant_stop",
                "homeassistant_start",
                "call_service",
                "state_changed",
                "service_registered",
                "zha_event",
                "hue_event",
                "demo_forged_ok",
            ] {
                lines.push(pushed(
                    event_type,
                    channel.push(&event(event_type, None)).await,
                )?);
            }
        }
        "store" => {
            let small = |key: &str| envelope(key, json!({"forged": true}));
            let long_key = "k".repeat(129);
            lines.push(save(channel, "long_key", &long_key, small(&long_key)).await);
            for (step, key) in [
                ("traversal", "../../etc/passwd"),
                ("absolute", "/etc/passwd"),
                ("dot_dot", ".."),
                ("hidden", ".hidden"),
                ("empty", ""),
            ] {
                lines.push(save(channel, step, key, small(key)).await);
            }
            let padding = "x".repeat(OVER_VALUE_LIMIT);
            lines.push(save(channel, "too_large", "big", envelope("big", json!(padding))).await);
            let load = wire::StoreLoad {
                key: "../../etc/passwd".to_owned(),
            };
            lines.push(outcome("load_traversal", channel.call(&load).await, |_| {
                Value::Null
            }));
            lines.push(save(channel, "control", "forged_ok", small("forged_ok")).await);
        }
        "context" => {
            let request = entity("light", "context_probe", own, None);
            lines.push(register(channel, "control", &request).await);
            let forged = ulid::Ulid::new().to_string();
            let change = |state: &str, context_id: String| wire::StateChanged {
                entity_id: "light.context_probe".to_owned(),
                state: state.to_owned(),
                attributes_json: b"{}".to_vec().into(),
                available: true,
                context_id: Some(context_id),
            };
            lines.push(pushed(
                "state_changed",
                channel.push(&change("off", forged.clone())).await,
            )?);
            lines.push(pushed(
                "demo_forged_context",
                channel
                    .push(&event("demo_forged_context", Some(forged.clone())))
                    .await,
            )?);
            lines.push(json!({"step": "forged_context", "context_id": forged}));
            for _ in 0..CONTEXT_FLOOD {
                let context_id = ulid::Ulid::new().to_string();
                channel
                    .push(&change("off", context_id))
                    .await
                    .context("cannot push the flood")?;
            }
            lines.push(json!({"step": "flood", "pushed": CONTEXT_FLOOD}));
            lines.push(pushed(
                "demo_flood_done",
                channel.push(&event("demo_flood_done", None)).await,
            )?);
        }
        "update_entry" => {
            let update = |entry_id: &str| wire::UpdateEntry {
                entry_id: entry_id.to_owned(),
                title: Some("renamed by the sandbox".to_owned()),
                data_json: Some(
                    json!({"host": "evil.example"})
                        .to_string()
                        .into_bytes()
                        .into(),
                ),
                options_json: None,
                unique_id: Some("stolen".to_owned()),
            };
            for (step, entry_id) in [
                ("foreign_entry", foreign),
                ("missing_entry", "no-such-entry"),
                ("control", own),
            ] {
                lines.push(outcome(step, channel.call(&update(entry_id)).await, |_| {
                    Value::Null
                }));
            }
        }
        other => bail!("unknown forge scenario {other}"),
    }
    Ok(lines)
}

fn write_forge_report(path: &Path, lines: &[Value]) -> Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let temp = path.with_extension("partial");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}
