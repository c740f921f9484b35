//! Tests of URL parsing, the private listening socket, and fd-based transports.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::*;
use crate::channel::{ChannelBuilder, ChannelConfig};
use crate::wire::{Ping, Pong};

const HANG_GUARD: Duration = Duration::from_secs(20);

#[test]
fn stdio_urls_parse() {
    assert_eq!(
        TransportUrl::parse("stdio://").expect("valid"),
        TransportUrl::Stdio
    );
    assert_eq!(TransportUrl::parse("").expect("valid"), TransportUrl::Stdio);
    assert_eq!(
        TransportUrl::parse("STDIO://").expect("valid"),
        TransportUrl::Stdio
    );
    assert_eq!(TransportUrl::Stdio.to_string(), "stdio://");
}

#[test]
fn unix_urls_parse_and_print_back() {
    let url = TransportUrl::parse("unix:///run/sandbox/ch.sock").expect("valid");
    assert_eq!(
        url,
        TransportUrl::Unix(PathBuf::from("/run/sandbox/ch.sock"))
    );
    assert_eq!(url.to_string(), "unix:///run/sandbox/ch.sock");
}

#[test]
fn other_schemes_are_not_supported() {
    for url in [
        "ws://localhost:8123/api",
        "wss://x",
        "tcp://127.0.0.1:9000",
        "http://x",
    ] {
        let error = TransportUrl::parse(url).expect_err("unsupported");
        assert!(
            matches!(error, TransportError::Unsupported { .. }),
            "{url}: {error}"
        );
        assert!(error.to_string().contains("is not supported"), "{error}");
    }
}

#[test]
fn malformed_and_relative_urls_are_refused_clearly() {
    assert!(matches!(
        TransportUrl::parse("/just/a/path"),
        Err(TransportError::Malformed { .. })
    ));
    assert!(matches!(
        TransportUrl::parse("stdio://extra"),
        Err(TransportError::Malformed { .. })
    ));
    assert!(matches!(
        TransportUrl::parse("://x"),
        Err(TransportError::Malformed { .. })
    ));
    let error = TransportUrl::parse("unix://relative.sock").expect_err("relative");
    assert!(
        error.to_string().contains("needs an absolute path"),
        "{error}"
    );
}

#[test]
fn socket_paths_over_sun_path_are_refused() {
    let long = format!("/{}", "x".repeat(MAX_UNIX_PATH_LEN));
    let error = TransportUrl::parse(&format!("unix://{long}")).expect_err("too long");
    assert!(
        matches!(error, TransportError::PathTooLong { len, max: MAX_UNIX_PATH_LEN, .. } if len == MAX_UNIX_PATH_LEN + 1)
    );
    let fits = format!("/{}", "x".repeat(MAX_UNIX_PATH_LEN - 1));
    assert!(TransportUrl::parse(&format!("unix://{fits}")).is_ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        assert!(matches!(
            UnixSocketListener::bind(Path::new(&long)),
            Err(TransportError::PathTooLong { .. })
        ));
    });
}

#[tokio::test]
async fn private_listener_is_short_private_and_removed_on_drop() {
    let listener = UnixSocketListener::bind_private().expect("bind");
    let path = listener.path().to_owned();
    let dir = path.parent().expect("in a dir").to_owned();
    assert!(path.as_os_str().len() <= MAX_UNIX_PATH_LEN);
    let mode = std::fs::metadata(&dir)
        .expect("dir exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "only this user may reach the socket");
    let connect = Transport::connect_unix(&path);
    let (accepted, connected) = tokio::join!(listener.accept(), connect);
    assert!(accepted.is_ok() && connected.is_ok());
    drop(listener);
    assert!(!path.exists(), "socket removed");
    assert!(!dir.exists(), "private dir removed");
}

#[tokio::test]
async fn connecting_to_a_missing_socket_says_where() {
    let error = Transport::connect_unix(Path::new("/nonexistent-dir/ch.sock"))
        .await
        .expect_err("missing");
    assert!(
        error
            .to_string()
            .starts_with("cannot connect to /nonexistent-dir/ch.sock"),
        "{error}"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    (OwnedFd::from(reader), OwnedFd::from(writer))
}

#[tokio::test]
async fn pipes_carry_a_channel_like_stdio_does() {
    // Two pipes cross-connected, exactly as a parent and its child's stdin/stdout are.
    let (a_in, b_out) = pipe();
    let (b_in, a_out) = pipe();
    let a = ChannelBuilder::new(ChannelConfig::named("a"))
        .start(Transport::from_fds(a_in, a_out, "pipes").expect("pipes are reactor-driven"));
    let b = ChannelBuilder::new(ChannelConfig::named("b"))
        .on_call::<Ping, _, _>(|ping, _| async move {
            Ok(Pong {
                nonce: ping.nonce * 2,
                ..Pong::default()
            })
        })
        .start(Transport::from_fds(b_in, b_out, "pipes").expect("pipes are reactor-driven"));
    let pong = tokio::time::timeout(HANG_GUARD, a.call(&Ping { nonce: 21 }))
        .await
        .expect("no hang")
        .expect("reply");
    assert_eq!(pong.nonce, 42);
    a.close().await;
    assert_eq!(
        tokio::time::timeout(HANG_GUARD, b.closed())
            .await
            .expect("no hang"),
        crate::CloseReason::Eof
    );
    b.close().await;
}

#[tokio::test]
async fn a_call_through_a_real_child_process_echoing_its_stdin() {
    // `cat` echoes our frames back: our own call arrives as a request, our handler answers it,
    // and the answer comes back through `cat` to complete the call. Real pipes, real process.
    let mut child = tokio::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cat runs");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let channel = ChannelBuilder::new(ChannelConfig::named("loop"))
        .on_call::<Ping, _, _>(|ping, _| async move {
            Ok(Pong {
                nonce: ping.nonce + 1,
                ..Pong::default()
            })
        })
        .start(Transport::new(stdout, stdin, "child stdio"));
    let pong = tokio::time::timeout(HANG_GUARD, channel.call(&Ping { nonce: 1 }))
        .await
        .expect("no hang")
        .expect("reply");
    assert_eq!(pong.nonce, 2);
    channel.close().await;
    let status = tokio::time::timeout(HANG_GUARD, child.wait())
        .await
        .expect("cat exits on EOF")
        .expect("status");
    assert!(status.success());
}

#[tokio::test]
async fn a_flood_larger_than_the_socket_buffer_arrives_whole_over_unix() {
    // Pushes far beyond the kernel's socket buffer make the writer wait for write space (the
    // on-demand registration), and one frame of several MiB is written in many parts.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = UnixSocketListener::bind_private().expect("bind");
    let received = Arc::new(AtomicUsize::new(0));
    let (accepted, connected) =
        tokio::join!(listener.accept(), Transport::connect_unix(listener.path()));
    let receiver = ChannelBuilder::new(ChannelConfig::named("receiver"))
        .on_push_inline::<crate::wire::FireEvent, _>({
            let received = received.clone();
            move |event| {
                received.fetch_add(event.data_json.len(), Ordering::SeqCst);
            }
        })
        .start(accepted.expect("accept"));
    let sender =
        ChannelBuilder::new(ChannelConfig::named("sender")).start(connected.expect("connect"));
    let small = crate::wire::FireEvent {
        event_type: "demo_flood".into(),
        data_json: vec![b'1'; 1024].into(),
        context_id: None,
    };
    let big = crate::wire::FireEvent {
        event_type: "demo_big".into(),
        data_json: vec![b'2'; 6 << 20].into(),
        context_id: None,
    };
    let expected = 4000 * 1024 + (6 << 20);
    tokio::time::timeout(HANG_GUARD, async {
        for index in 0..4000 {
            sender.push(&small).await.expect("push");
            if index == 2000 {
                sender.push(&big).await.expect("push");
            }
        }
        while received.load(Ordering::SeqCst) < expected {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the flood arrives");
    assert_eq!(received.load(Ordering::SeqCst), expected);
    sender.close().await;
    receiver.close().await;
}
