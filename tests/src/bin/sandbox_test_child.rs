//! A sandbox stand-in for the group manager's tests and benchmarks: speaks the protocol just
//! enough (ready, ping, shutdown, entry setup and unload) and misbehaves on command. (The
//! forged-frame suite has its own child, `sandbox-forger`, in `tests/forge`.)
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
//! | `--entities N` | register N sensors (`sensor.child_<i>`) for every entry it sets up |
//! | `--service NAME` | register the service `<entry domain>.NAME` for every entry it sets up |
//! | `--hold-setup-if PATH` | when PATH exists at an entry setup, write its pid into PATH and never answer that setup |
//!
//! Entry setup answers `loaded` (unless held) and entry unload `ok`, so entries routed here
//! load.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sandbox_proto::wire::{
    EntityDescription, EntityState, EntrySetup, EntrySetupResult, EntryUnload, EntryUnloadResult,
    Ping, Pong, Ready, RegisterEntity, RegisterService, SetupOutcome, Shutdown, ShutdownResult,
};
use sandbox_proto::{
    Channel, ChannelBuilder, ChannelConfig, RemoteError, Transport, TransportUrl, version,
};

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
    entities: usize,
    service: Option<String>,
    hold_setup_if: Option<PathBuf>,
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
            "--entities" => behaviour.entities = value()?.parse()?,
            "--service" => behaviour.service = Some(value()?),
            "--hold-setup-if" => behaviour.hold_setup_if = Some(value()?.into()),
            other => bail!("unknown flag {other}"),
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
        .on_call::<EntrySetup, _, _>({
            let mirrored = Mirrored {
                entities: behaviour.entities,
                service: behaviour.service.clone(),
            };
            let hold = behaviour.hold_setup_if.clone();
            move |setup: EntrySetup, channel| {
                let (mirrored, hold) = (mirrored.clone(), hold.clone());
                async move { set_up(setup, channel, &mirrored, hold.as_deref()).await }
            }
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

/// What an entry setup registers on main.
#[derive(Clone)]
struct Mirrored {
    /// Sensors per entry.
    entities: usize,
    /// A service of the entry's domain.
    service: Option<String>,
}

/// An entry setup: held forever when the hold file exists, else what `mirrored` says
/// registered for the entry and `loaded`.
async fn set_up(
    setup: EntrySetup,
    channel: Channel,
    mirrored: &Mirrored,
    hold: Option<&std::path::Path>,
) -> Result<EntrySetupResult, RemoteError> {
    if let Some(hold) = hold
        && hold.exists()
    {
        std::fs::write(hold, std::process::id().to_string())
            .map_err(|error| RemoteError::internal(error.to_string()))?;
        std::future::pending::<()>().await;
    }
    let entry = setup.entry.unwrap_or_default();
    for index in 0..mirrored.entities {
        let object_id = format!("child_{index}");
        let request = RegisterEntity {
            description: Some(EntityDescription {
                entity_id: format!("sensor.{object_id}"),
                entry_id: entry.entry_id.clone(),
                platform: entry.domain.clone(),
                domain: "sensor".to_owned(),
                unique_id: Some(object_id.clone()),
                name: Some(object_id),
                entity_registry_enabled_default: true,
                ..EntityDescription::default()
            }),
            state: Some(EntityState {
                state: index.to_string(),
                attributes_json: b"{}".to_vec().into(),
                available: true,
            }),
            context_id: None,
        };
        channel
            .call(&request)
            .await
            .map_err(|error| RemoteError::internal(error.to_string()))?;
    }
    if let Some(service) = &mirrored.service {
        let request = RegisterService {
            domain: entry.domain.clone(),
            service: service.clone(),
            ..RegisterService::default()
        };
        channel
            .call(&request)
            .await
            .map_err(|error| RemoteError::internal(error.to_string()))?;
    }
    Ok(EntrySetupResult {
        outcome: SetupOutcome::Loaded as i32,
        reason: String::new(),
        updated_entry: None,
    })
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
