//! In-memory peers for tests of both sides: a pair of connected channels, a raw peer that
//! speaks frames by hand (to forge, garble or withhold them), and a transport wrapper that can
//! stall or fail writes on command.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf,
};

use crate::channel::{Channel, ChannelBuilder};
use crate::framing::{self, MAX_FRAME_LEN};
use crate::messages::{Call, Push};
use crate::transport::{BoxWriter, Transport};
use crate::wire;

/// Bytes an in-memory pipe buffers in each direction before the writer waits.
pub const DUPLEX_BUFFER: usize = 256 * 1024;

/// Two transports connected to each other in memory.
pub fn duplex_transports() -> (Transport, Transport) {
    let (a, b) = tokio::io::duplex(DUPLEX_BUFFER);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    (
        Transport::new(a_read, a_write, "memory://a"),
        Transport::new(b_read, b_write, "memory://b"),
    )
}

/// Two channels talking to each other in memory, each started from its builder.
pub fn channel_pair(a: ChannelBuilder, b: ChannelBuilder) -> (Channel, Channel) {
    let (transport_a, transport_b) = duplex_transports();
    (a.start(transport_a), b.start(transport_b))
}

/// The far end of a transport, driven frame by frame by a test.
pub struct RawPeer {
    reader: ReadHalf<DuplexStream>,
    writer: WriteHalf<DuplexStream>,
    buf: BytesMut,
}

impl RawPeer {
    /// A transport for the code under test and the raw peer at its other end.
    pub fn new() -> (Transport, RawPeer) {
        Self::with_pipe_buffer(DUPLEX_BUFFER)
    }

    /// Like [`RawPeer::new`], with `bytes` of buffer in each direction: a small buffer makes a
    /// peer that does not read push back on the writer after a few frames, as a full socket
    /// does, instead of after [`DUPLEX_BUFFER`].
    pub fn with_pipe_buffer(bytes: usize) -> (Transport, RawPeer) {
        let (near, far) = tokio::io::duplex(bytes);
        let (near_read, near_write) = tokio::io::split(near);
        let (reader, writer) = tokio::io::split(far);
        (
            Transport::new(near_read, near_write, "memory://raw"),
            RawPeer {
                reader,
                writer,
                buf: BytesMut::new(),
            },
        )
    }

    /// Sends any frame.
    pub async fn send_frame(&mut self, frame: &wire::Frame) -> io::Result<()> {
        let bytes = framing::encode_frame(frame, MAX_FRAME_LEN).map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Sends a call of type `C` with id `id`.
    pub async fn send_call<C: Call>(&mut self, id: u64, request: &C) -> io::Result<()> {
        let bytes = framing::encode_request(id, C::TYPE, request, MAX_FRAME_LEN)
            .map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Sends a push of type `P`.
    pub async fn send_push<P: Push>(&mut self, push: &P) -> io::Result<()> {
        let bytes =
            framing::encode_request(0, P::TYPE, push, MAX_FRAME_LEN).map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Sends any message under any type string and id (0 for a push): for forged frames.
    pub async fn send_request<M: Message>(
        &mut self,
        id: u64,
        type_name: &str,
        message: &M,
    ) -> io::Result<()> {
        let bytes = framing::encode_request(id, type_name, message, MAX_FRAME_LEN)
            .map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Answers call `id` of type `C`.
    pub async fn reply<C: Call>(&mut self, id: u64, reply: &C::Reply) -> io::Result<()> {
        let bytes = framing::encode_response(id, C::TYPE, reply, MAX_FRAME_LEN)
            .map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Sends bytes as they are: garbage, a lying length prefix, half a frame.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Reads the next frame; `None` when the other side closed.
    pub async fn recv_frame(&mut self) -> io::Result<Option<wire::Frame>> {
        loop {
            if let Some(frame) =
                framing::decode_frame(&mut self.buf, MAX_FRAME_LEN).map_err(io::Error::other)?
            {
                return wire::Frame::decode(frame)
                    .map(Some)
                    .map_err(io::Error::other);
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads the next frame and decodes its request payload as `M`.
    pub async fn recv_request<M: Message + Default>(&mut self) -> io::Result<(u64, String, M)> {
        let frame = self
            .recv_frame()
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match frame.body {
            Some(wire::frame::Body::Request(payload)) => {
                let message = M::decode(payload).map_err(io::Error::other)?;
                Ok((frame.id, frame.r#type, message))
            }
            other => Err(io::Error::other(format!(
                "expected a request, got {other:?}"
            ))),
        }
    }

    /// Closes the writing side (the code under test reads EOF) but keeps reading.
    pub async fn hang_up_writes(&mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }
}

#[derive(Default)]
struct FaultState {
    stalled: bool,
    failing: bool,
    waker: Option<Waker>,
}

/// Commands for a transport wrapped by [`faulty`].
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

impl Faults {
    /// Writes wait until [`Faults::resume_writes`].
    pub fn stall_writes(&self) {
        self.lock().stalled = true;
    }

    /// Lets stalled writes go on.
    pub fn resume_writes(&self) {
        let mut state = self.lock();
        state.stalled = false;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Every later write fails with a broken pipe.
    pub fn fail_writes(&self) {
        let mut state = self.lock();
        state.failing = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().expect("fault state lock poisoned")
    }
}

/// Wraps a transport so a test can stall or break its writes.
pub fn faulty(transport: Transport) -> (Transport, Faults) {
    let (reader, writer, description) = transport.into_parts();
    let faults = Faults::default();
    let writer = FaultyWriter {
        inner: writer,
        faults: faults.clone(),
    };
    (
        Transport::new(reader, writer, format!("faulty {description}")),
        faults,
    )
}

struct FaultyWriter {
    inner: BoxWriter,
    faults: Faults,
}

impl FaultyWriter {
    fn check(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.faults.lock();
        if state.failing {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if state.stalled {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FaultyWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.check(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_write(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.check(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reader that never yields data and never ends; for transports whose reading side a test
/// does not care about.
pub struct SilentReader;

impl AsyncRead for SilentReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// Encodes a message to bytes (for raw calls in tests).
pub fn encode<M: Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}
