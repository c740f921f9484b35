//! `misbehave_stdout`: prints to stdout during setup (a lot of text, and bytes shaped like the
//! channel's 4-byte length prefix followed by garbage), every `interval_ms` (entry data, default
//! [`DEFAULT_INTERVAL_MS`]) after it, and at every switch service. Its switch must keep working:
//! in a stdio sandbox, stdout is pointed at stderr before any integration code runs.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use homecore::{ConfigEntry, Core, SetupError};

use super::{Behaviour, EntryTasks, Misbehaving, ToyEntity, add_entity, data_u64};

/// The integration's domain.
pub const DOMAIN: &str = "misbehave_stdout";

/// Milliseconds between two periodic prints when the entry does not say.
pub const DEFAULT_INTERVAL_MS: u64 = 100;

/// Bytes of plain text printed during setup.
pub const SETUP_TEXT_BYTES: usize = 256 * 1024;

/// Byte runs that look like frames to a reader of the channel: a length prefix claiming 8
/// bytes, one claiming far more than any frame may hold, and one claiming nothing.
pub const FAKE_FRAMES: [&[u8]; 3] = [
    b"\x00\x00\x00\x08garbage!",
    b"\x7f\xff\xff\xff\x08\x01\x12\x04ping",
    b"\x00\x00\x00\x00",
];

/// Writes `bytes` to the process's stdout (fd 1), flushing; errors are ignored.
fn print_raw(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes);
    let _ = stdout.flush();
}

/// Prints the fake frames, then `text_bytes` of text.
fn print_noise(text_bytes: usize) {
    for frame in FAKE_FRAMES {
        print_raw(frame);
    }
    let line = "misbehave_stdout: this line goes to stdout, not to the channel\n";
    let mut text = String::with_capacity(text_bytes + line.len());
    while text.len() < text_bytes {
        text.push_str(line);
    }
    print_raw(text.as_bytes());
}

struct Stdout;

impl Behaviour for Stdout {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            print_noise(SETUP_TEXT_BYTES);
            let interval =
                Duration::from_millis(data_u64(entry, "interval_ms", DEFAULT_INTERVAL_MS).max(1));
            let switch = Arc::new(ToyEntity::switch(
                &format!("{}-switch", entry.entry_id),
                "Noisy switch",
                Some(Box::new(|state: &str| {
                    print_raw(format!("misbehave_stdout: switched {state}\n").as_bytes());
                    print_noise(4096);
                })),
            ));
            add_entity(core, entry, &switch).await?;
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                loop {
                    ticker.tick().await;
                    print_noise(4096);
                }
            });
            Ok(())
        })
    }
}

/// The integration.
pub(crate) fn integration() -> Misbehaving {
    Misbehaving::new(DOMAIN, "Misbehave: prints to stdout", &["switch"], Stdout)
}
