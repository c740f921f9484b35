//! Tests of resending an entry change main did not take: a passing failure (overloaded) is sent
//! again with backoff, at most `MAX_UPDATE_RETRIES` times; a refusal is not sent again.

use std::sync::atomic::{AtomicUsize, Ordering};

use homecore::{ConfigEntryUpdate, CoreConfig};
use sandbox_proto::{ChannelBuilder, ChannelConfig, RemoteError};

use super::*;

/// Main answering `update_entry` with `answers` in turn (the last one from then on), counting
/// the calls; the sandbox's `EntryUpdates` over it, and an entry main set up.
struct Setup {
    calls: Arc<AtomicUsize>,
    updates: EntryUpdates,
    core: Core,
    entry_id: String,
    main: Channel,
    sandbox: Channel,
    _dir: tempfile::TempDir,
}

async fn setup(answers: Vec<Option<ErrorKind>>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = Core::builder(CoreConfig::new(dir.path()))
        .build()
        .expect("core");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let answers = Arc::new(answers);
    let (main, sandbox) = sandbox_proto::test_util::channel_pair(
        ChannelBuilder::new(ChannelConfig::named("main")).on_call::<wire::UpdateEntry, _, _>(
            move |_, _| {
                let call = counted.fetch_add(1, Ordering::SeqCst);
                let answer = answers[call.min(answers.len() - 1)];
                async move {
                    match answer {
                        None => Ok(wire::UpdateEntryResult {}),
                        Some(kind) => Err(RemoteError::new(kind, "not now")),
                    }
                }
            },
        ),
        ChannelBuilder::new(ChannelConfig::named("sandbox")),
    );
    let updates = EntryUpdates::install(&core);
    updates.start(sandbox.clone());
    let entry = ConfigEntry::new("acme", "Acme", Map::new(), "user");
    updates.main_has(&entry);
    let entry_id = core
        .config_entries()
        .add(entry)
        .await
        .expect("added")
        .entry_id;
    Setup {
        calls,
        updates,
        core,
        entry_id,
        main,
        sandbox,
        _dir: dir,
    }
}

impl Setup {
    fn write_title(&self, title: &str) {
        self.core
            .config_entries()
            .update_entry(
                &self.entry_id,
                ConfigEntryUpdate {
                    title: Some(title.to_owned()),
                    ..ConfigEntryUpdate::default()
                },
            )
            .expect("updated");
    }

    /// Lets every backoff of a change run out (paused time advances by itself).
    async fn settle() {
        tokio::time::sleep(UPDATE_RETRY_BACKOFF * 100).await;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn close(self) {
        drop(self.updates);
        self.main.close().await;
        self.sandbox.close().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_change_main_was_too_busy_for_is_sent_again_until_main_takes_it() {
    let setup = setup(vec![Some(ErrorKind::Overloaded), None]).await;
    setup.write_title("Renamed");
    Setup::settle().await;
    assert_eq!(setup.calls(), 2);
    // Main took it: nothing is sent again, and the next change goes once.
    setup.write_title("Renamed again");
    Setup::settle().await;
    assert_eq!(setup.calls(), 3);
    setup.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_change_main_keeps_failing_is_sent_a_bounded_number_of_times_per_change() {
    let setup = setup(vec![Some(ErrorKind::Overloaded)]).await;
    setup.write_title("Renamed");
    Setup::settle().await;
    let per_change = 1 + MAX_UPDATE_RETRIES as usize;
    assert_eq!(setup.calls(), per_change);
    // A new write is a new change, with retries of its own.
    setup.write_title("Renamed again");
    Setup::settle().await;
    assert_eq!(setup.calls(), 2 * per_change);
    setup.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_change_main_refused_is_not_sent_again() {
    let setup = setup(vec![Some(ErrorKind::Refused)]).await;
    setup.write_title("Renamed");
    Setup::settle().await;
    assert_eq!(setup.calls(), 1);
    setup.close().await;
}
