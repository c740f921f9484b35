//! Group lifecycle figures: spawn-to-Ready of a sandbox child next to spawning and reaping
//! `/bin/true` in the same run, and the time from a child's death to `on_channel_closed`.
//!
//! Run: `cargo bench -p sandbox-tests --bench lifecycle` (add `-- --json` for one JSON object).

#![allow(missing_docs)]

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox_host::{CommandFactory, GroupConfig, GroupEvents, GroupManager, GroupState};
use sandbox_proto::TransportUrl;

/// Repetitions of each measurement.
const ROUNDS: usize = 50;

#[derive(Default)]
struct ClosedAt(Mutex<Option<Instant>>);

impl GroupEvents for ClosedAt {
    fn on_channel_closed(&self, _group: &str, _reason: &str) {
        self.0
            .lock()
            .expect("lock")
            .get_or_insert_with(Instant::now);
    }
}

fn factory() -> CommandFactory {
    let child = sandbox_tests::binary(sandbox_tests::TEST_CHILD);
    Arc::new(move |group: &str, url: &TransportUrl| -> Vec<OsString> {
        vec![
            child.clone().into(),
            "--name".into(),
            group.into(),
            "--url".into(),
            url.to_string().into(),
        ]
    })
}

fn percentile(samples: &mut [Duration], fraction: f64) -> f64 {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let json = std::env::args().any(|arg| arg == "--json");
    let mut raw = Vec::with_capacity(ROUNDS);
    let mut ready = Vec::with_capacity(ROUNDS);
    let mut closed = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let status = tokio::process::Command::new("/bin/true").status().await?;
        raw.push(start.elapsed());
        anyhow::ensure!(status.success(), "/bin/true failed");

        let events = Arc::new(ClosedAt::default());
        let mut config = GroupConfig::new("bench");
        config.watchdog = None;
        let manager = GroupManager::new(config, factory(), events.clone());
        let start = Instant::now();
        manager.ensure_started(Duration::from_secs(30)).await?;
        ready.push(start.elapsed());

        let pid = manager.status().pid.context("running child has a pid")?;
        let killed_at = Instant::now();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
        let mut watcher = manager.watch();
        watcher
            .wait_for(|status| status.state != GroupState::Running)
            .await?;
        while events.0.lock().expect("lock").is_none() {
            tokio::task::yield_now().await;
        }
        let seen = events.0.lock().expect("lock").context("closed")?;
        closed.push(seen - killed_at);
        manager.stop().await;
    }
    let raw_ms = percentile(&mut raw, 0.5);
    let ready_ms = percentile(&mut ready, 0.5);
    let ready_p99 = percentile(&mut ready, 0.99);
    let closed_ms = percentile(&mut closed, 0.5);
    let closed_p99 = percentile(&mut closed, 0.99);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "raw_spawn_ms": raw_ms,
                "spawn_ready_ms": ready_ms,
                "spawn_ready_p99_ms": ready_p99,
                "spawn_ready_ratio": ready_ms / raw_ms,
                "crash_closed_ms": closed_ms,
                "crash_closed_p99_ms": closed_p99,
                "rounds": ROUNDS,
            })
        );
    } else {
        println!("group lifecycle, {ROUNDS} rounds (p50; p99 in brackets)");
        println!("spawn and reap /bin/true        {raw_ms:>8.2} ms");
        println!(
            "spawn to Ready (test child)     {ready_ms:>8.2} ms  [{ready_p99:.2}]  ratio {:.2}x",
            ready_ms / raw_ms
        );
        println!("child death to channel closed   {closed_ms:>8.3} ms  [{closed_p99:.3}]");
    }
    Ok(())
}
