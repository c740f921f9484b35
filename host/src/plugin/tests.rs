//! Tests of pushing main's core configuration to the groups: a group whose channel does not
//! take the push delays no other, and its push is given up after `CORE_CONFIG_PUSH_TIMEOUT`.

use std::sync::atomic::{AtomicUsize, Ordering};

use sandbox_proto::test_util::{RawPeer, channel_pair};
use sandbox_proto::{ChannelBuilder, ChannelConfig};

use super::*;

fn update() -> wire::CoreConfigUpdated {
    wire::CoreConfigUpdated::default()
}

/// A channel whose peer never reads, pushed to until its write queue is full.
async fn stuck_channel() -> (Channel, RawPeer) {
    let mut config = ChannelConfig::named("stuck");
    config.write_queue_capacity = 1;
    let (transport, peer) = RawPeer::with_pipe_buffer(64);
    let channel = ChannelBuilder::new(config).start(transport);
    let update = update();
    loop {
        let push = tokio::time::timeout(Duration::from_millis(1), channel.push(&update));
        if push.await.is_err() {
            return (channel, peer);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_whose_channel_does_not_take_the_push_delays_no_other() {
    let (stuck, peer) = stuck_channel().await;
    let received = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&received);
    let (main, sandbox) = channel_pair(
        ChannelBuilder::new(ChannelConfig::named("main")),
        ChannelBuilder::new(ChannelConfig::named("sandbox"))
            .on_push_inline::<wire::CoreConfigUpdated, _>(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
    );
    let started = tokio::time::Instant::now();
    let targets = vec![
        ("stuck".to_owned(), stuck.clone()),
        ("live".to_owned(), main.clone()),
    ];
    let pushing = tokio::spawn(async move { push_to_each(targets, &update()).await });
    // A hang guard in paused time: pushes made one after the other would never reach it.
    tokio::time::timeout(CORE_CONFIG_PUSH_TIMEOUT * 3, async {
        while received.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the live group gets the push");
    assert!(
        started.elapsed() < CORE_CONFIG_PUSH_TIMEOUT,
        "the live group waited {:?} behind the stuck one",
        started.elapsed()
    );
    // The stuck group's push is given up: the whole push ends.
    tokio::time::timeout(CORE_CONFIG_PUSH_TIMEOUT * 2, pushing)
        .await
        .expect("the push to a stuck group is given up")
        .expect("no panic");
    drop(peer);
    stuck.close().await;
    main.close().await;
    sandbox.close().await;
}
