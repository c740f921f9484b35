//! Round-trip benchmark: `Channel::call` with a small message between two processes over a real
//! unix socket, next to a raw length-prefixed ping-pong of the same bytes over the same kind of
//! socket, measured in the same run (alternating blocks), with both processes pinned to one CPU
//! and unpinned.
//!
//! Run: `cargo bench -p sandbox-proto --bench rtt` (add `-- --json` for one JSON object).
//! The binary re-executes itself as the peer process (`--peer raw|channel SOCKET CPU`).

#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use sandbox_proto::channel::{ChannelBuilder, ChannelConfig};
use sandbox_proto::framing::{self, MAX_FRAME_LEN};
use sandbox_proto::wire::{Ping, Pong};
use sandbox_proto::{Transport, UnixSocketListener};

/// Round trips timed per case.
const ITERATIONS: usize = 20_000;
/// Round trips before timing starts (page faults, caches, CPU frequency).
const WARMUP: usize = 2_000;
/// Round trips per alternating block of raw and channel measurements.
const BLOCK: usize = 500;
/// The nonce every ping carries: a realistic small message.
const NONCE: u64 = 0x0123_4567_89ab;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Channel,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Channel => "channel",
        }
    }
}

/// `None` means every CPU (unpinned).
type Placement = Option<usize>;

struct Figures {
    p50_us: f64,
    p99_us: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(index) = args.iter().position(|arg| arg == "--peer") {
        let mode = match args.get(index + 1).map(String::as_str) {
            Some("raw") => Mode::Raw,
            Some("channel") => Mode::Channel,
            other => bail!("unknown peer mode {other:?}"),
        };
        let socket = args.get(index + 2).context("peer needs a socket path")?;
        let cpu = args.get(index + 3).and_then(|cpu| cpu.parse().ok());
        return run_peer(mode, Path::new(socket), cpu);
    }
    let json = args.iter().any(|arg| arg == "--json");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let mut rows = Vec::new();
    for (label, placement) in [("pinned to one CPU", Some(0)), ("unpinned", None)] {
        let (raw, channel) = measure(placement)?;
        rows.push((label, placement, raw, channel));
    }
    if json {
        let mut out = serde_json::Map::new();
        for (_, placement, raw, channel) in &rows {
            let key = if placement.is_some() {
                "pinned"
            } else {
                "unpinned"
            };
            out.insert(
                key.to_owned(),
                serde_json::json!({
                    "raw_rtt_p50_us": round(raw.p50_us),
                    "raw_rtt_p99_us": round(raw.p99_us),
                    "channel_rtt_p50_us": round(channel.p50_us),
                    "channel_rtt_p99_us": round(channel.p99_us),
                    "p50_ratio": round(channel.p50_us / raw.p50_us),
                    "p99_ratio": round(channel.p99_us / raw.p99_us),
                }),
            );
        }
        out.insert("iterations".to_owned(), ITERATIONS.into());
        out.insert("cpus".to_owned(), cpus.into());
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!(
            "round trip of a {}-byte ping frame over a unix socket, {ITERATIONS} iterations, {cpus} CPUs",
            ping_frame().len()
        );
        println!(
            "{:<20} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9}",
            "placement",
            "raw p50 µs",
            "raw p99 µs",
            "channel p50 µs",
            "channel p99 µs",
            "p50 ×",
            "p99 ×"
        );
        for (label, _, raw, channel) in &rows {
            println!(
                "{:<20} {:>12.1} {:>12.1} {:>14.1} {:>14.1} {:>9.2} {:>9.2}",
                label,
                raw.p50_us,
                raw.p99_us,
                channel.p50_us,
                channel.p99_us,
                channel.p50_us / raw.p50_us,
                channel.p99_us / raw.p99_us
            );
        }
    }
    Ok(())
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn ping_frame() -> bytes::Bytes {
    framing::encode_request(1, "ping", &Ping { nonce: NONCE }, MAX_FRAME_LEN).expect("a ping fits")
}

fn pong_frame() -> bytes::Bytes {
    framing::encode_response(
        1,
        "ping",
        &Pong {
            nonce: NONCE,
            ..Pong::default()
        },
        MAX_FRAME_LEN,
    )
    .expect("a pong fits")
}

fn pin(placement: Placement) -> Result<()> {
    let mut set = CpuSet::new();
    match placement {
        Some(cpu) => set.set(cpu)?,
        None => {
            let cpus = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            for cpu in 0..cpus.min(CpuSet::count()) {
                set.set(cpu)?;
            }
        }
    }
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")?;
    Ok(())
}

fn spawn_peer(mode: Mode, socket: &Path, placement: Placement) -> Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--peer").arg(mode.name()).arg(socket);
    if let Some(cpu) = placement {
        command.arg(cpu.to_string());
    }
    Ok(command.stdin(Stdio::null()).spawn()?)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn figures(mut samples: Vec<Duration>) -> Figures {
    samples.sort_unstable();
    Figures {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
    }
}

/// Measures raw and channel round trips for one placement, alternating blocks of each so both
/// see the same machine conditions (other load on a shared machine drifts over seconds).
fn measure(placement: Placement) -> Result<(Figures, Figures)> {
    pin(placement)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (raw, channel) = runtime.block_on(async {
        // Raw peer: plain blocking reads and writes on both ends, no reactor: the floor.
        let raw_dir = tempfile::Builder::new().prefix("sbx-raw-").tempdir()?;
        let raw_path = raw_dir.path().join("raw.sock");
        let raw_listener = std::os::unix::net::UnixListener::bind(&raw_path)?;
        let mut raw_child = spawn_peer(Mode::Raw, &raw_path, placement)?;
        let (mut raw_stream, _) = raw_listener.accept()?;

        let listener = UnixSocketListener::bind_private()?;
        let mut channel_child = spawn_peer(Mode::Channel, listener.path(), placement)?;
        let transport = tokio::time::timeout(Duration::from_secs(30), listener.accept())
            .await
            .context("peer did not connect")??;
        let channel = ChannelBuilder::new(ChannelConfig::named("bench")).start(transport);

        let ping = ping_frame();
        let mut reply = vec![0u8; pong_frame().len()];
        let mut raw_samples = Vec::with_capacity(ITERATIONS);
        let mut channel_samples = Vec::with_capacity(ITERATIONS);
        for block in 0..(WARMUP + ITERATIONS) / BLOCK {
            let timed = block * BLOCK >= WARMUP;
            for _ in 0..BLOCK {
                let start = Instant::now();
                raw_stream.write_all(&ping)?;
                raw_stream.read_exact(&mut reply)?;
                let elapsed = start.elapsed();
                if timed {
                    raw_samples.push(elapsed);
                }
            }
            // The caller is a spawned task, as every caller in the host is.
            let caller = tokio::spawn({
                let channel = channel.clone();
                async move {
                    let mut samples = Vec::with_capacity(BLOCK);
                    for _ in 0..BLOCK {
                        let start = Instant::now();
                        let pong = channel.call(&Ping { nonce: NONCE }).await?;
                        samples.push(start.elapsed());
                        if pong.nonce != NONCE {
                            bail!("wrong pong");
                        }
                    }
                    Ok(samples)
                }
            });
            let samples = caller.await??;
            if timed {
                channel_samples.extend(samples);
            }
        }
        channel.close().await;
        drop(raw_stream);
        channel_child.wait()?;
        raw_child.wait()?;
        Ok::<_, anyhow::Error>((raw_samples, channel_samples))
    })?;
    Ok((figures(raw), figures(channel)))
}

fn run_peer(mode: Mode, socket: &Path, cpu: Option<usize>) -> Result<()> {
    pin(cpu)?;
    match mode {
        Mode::Raw => {
            let mut stream = StdUnixStream::connect(socket)?;
            let pong = pong_frame();
            let mut request = vec![0u8; ping_frame().len()];
            loop {
                match stream.read_exact(&mut request) {
                    Ok(()) => stream.write_all(&pong)?,
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Ok(());
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Mode::Channel => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let transport = Transport::connect_unix(socket).await?;
                let channel = ChannelBuilder::new(ChannelConfig::named("bench-peer"))
                    .on_call::<Ping, _, _>(|ping, _| async move {
                        Ok(Pong {
                            nonce: ping.nonce,
                            ..Pong::default()
                        })
                    })
                    .start(transport);
                channel.closed().await;
                channel.close().await;
                Ok(())
            })
        }
    }
}
