//! The RPC channel both sides speak: calls with replies, one-way pushes, and typed handlers.
//!
//! One reader task owns the reading half of the transport and one writer task owns the writing
//! half; [`Channel`] handles are cheap clones that talk to them. The reader never waits on a
//! handler or on the writer, which gives the channel its guarantees:
//!
//! - Replies are matched to their pending call inline in the reader, so they are never shed and
//!   a handler may itself [`Channel::call`] the peer (a nested call) without deadlock.
//! - Call and push handlers run as tasks, at most [`MAX_RUNNING_HANDLERS`] at once. A handler
//!   waiting for the reply to its own nested call gives its slot back while it waits, so chains
//!   of nested calls (main -> sandbox -> main -> sandbox) cannot deadlock on slots. Past
//!   [`MAX_HANDLERS_IN_FLIGHT`] running plus queued, a call is answered with an `overloaded`
//!   error and a push is dropped and counted: memory stays bounded under a flood, and the reader
//!   keeps reading (so replies keep flowing).
//! - Every call the peer sends gets exactly one answer, or the channel closes. The reader's own
//!   error replies (`overloaded`, `no handler`, a push type called as a call) that cannot be
//!   written at once wait in a separate queue the writer drains first, bounded by
//!   [`MAX_PENDING_ERROR_REPLIES`] and [`MAX_PENDING_ERROR_REPLY_BYTES`]; a peer that fills it
//!   (it keeps calling and never reads) gets the channel closed with
//!   [`CloseReason::ErrorRepliesOverflow`], never a silently missing answer.
//! - Pushes whose order matters (`state_changed`) are registered inline with
//!   [`ChannelBuilder::on_push_inline`]: their handler runs in the reader, in arrival order.
//! - The reader works in turns ([`READER_TURN_FRAMES`], [`READER_TURN_BYTES`]): with more frames
//!   already buffered, it yields to the scheduler between turns, so a peer flooding the channel
//!   cannot keep a worker thread from the other channels and tasks sharing it.
//! - The reader's buffer grows with the bytes that arrive, never with a frame's announced
//!   length, and a frame must arrive whole within [`FRAME_BODY_DEADLINE`] of its first byte, or
//!   the channel closes with [`CloseReason::FrameStalled`]: a peer cannot make us hold memory it
//!   did not send, nor hold what it did send for long.
//! - [`Channel::close`] is idempotent and tears down exactly once, whoever noticed the end
//!   first (an EOF, a frame over the cap or stalled, a write error, unread error replies, or a
//!   local close).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{ErrorKind, RemoteError};
use crate::framing::{self, FrameError, MAX_FRAME_LEN};
use crate::log_limit::{Admit, LogBudget};
use crate::messages::{CATALOG, Call, Push, catalog_position};
use crate::transport::{BoxReader, BoxWriter, Transport};
use crate::wire;

/// How many call and push handlers run at once. More would only contend for the same two cores;
/// fewer would let one slow integration call starve the rest.
pub const MAX_RUNNING_HANDLERS: usize = 16;

/// How many call and push handlers may be running or waiting for a slot. Each one pins its
/// decoded payload (up to [`MAX_FRAME_LEN`]), so this bounds memory under a flood; past it,
/// calls get an `overloaded` error and pushes are dropped and counted.
pub const MAX_HANDLERS_IN_FLIGHT: usize = 1024;

/// How many encoded frames may wait for the writer task. A sender past it waits (backpressure
/// on the producer), except the reader, which never waits: its own error replies go to a
/// separate queue (see [`MAX_PENDING_ERROR_REPLIES`]), and a handler reply it produced inline is
/// handed to a task that keeps the handler's in-flight slot until the reply is queued.
pub const WRITE_QUEUE_CAPACITY: usize = 1024;

/// How many of the reader's own error replies (`overloaded`, `no handler`, a push type called as
/// a call) may wait for the writer when they cannot be written at once. The reader must not wait
/// for the writer (a peer that does not read would then stop us reading its replies: deadlock),
/// and must not drop an answer, so they wait here and the writer sends them before anything
/// else it has queued.
///
/// Chosen as four times [`MAX_HANDLERS_IN_FLIGHT`]: the writer sends these before anything else,
/// so a peer that reads keeps them draining, and a burst of thousands of calls refused while the
/// peer is busy elsewhere still fits; only a peer that keeps calling without reading fills it.
/// At under 100 bytes per refusal that is under 400 KiB. When it is full the channel closes with
/// [`CloseReason::ErrorRepliesOverflow`] (logged as a warning): a missing answer would leave the
/// peer's call hanging with no sign of why.
pub const MAX_PENDING_ERROR_REPLIES: usize = 4 * MAX_HANDLERS_IN_FLIGHT;

/// How many bytes the error replies waiting under [`MAX_PENDING_ERROR_REPLIES`] may hold in all.
/// A refusal echoes the call's type name, which the peer chooses (up to [`MAX_FRAME_LEN`]), so a
/// count alone would not bound memory. 1 MiB is well over what the count allows for refusals
/// of the protocol's own type names (under 100 bytes each, 400 KiB in all), so only calls under
/// absurdly long type names reach it; then, too, the channel closes with
/// [`CloseReason::ErrorRepliesOverflow`].
pub const MAX_PENDING_ERROR_REPLY_BYTES: usize = 1024 * 1024;

/// Bytes the reader asks the OS for at once, and its buffer's initial size; many small frames
/// are decoded per read. The buffer grows past it only with bytes that arrived, never with a
/// frame's announced length.
pub const READ_BUFFER_CAPACITY: usize = 64 * 1024;

/// How long a frame may take to arrive once its first byte has. When it passes with the frame
/// still incomplete, the channel closes with [`CloseReason::FrameStalled`] (logged as a
/// warning).
///
/// A peer writes a frame in one go over a local pipe or socket, which moves even a
/// [`MAX_FRAME_LEN`] frame in well under a second on a loaded machine; 30 s asks for about
/// 560 KB/s at that size. So only a peer that is stuck (stopped, swapping for half a minute) or
/// hostile (announcing a big frame and trickling it, to hold our buffer) misses it, while a
/// peer briefly paused by the scheduler, a debugger or a stop/continue signal does not. Bytes
/// that arrive slowly but complete the frame in time are fine: the clock runs per frame, not
/// per byte.
pub const FRAME_BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Frames the reader handles in one turn: past it, with more frames already buffered, it yields
/// to the scheduler before the next one, so the other tasks of its thread (another group's
/// channel, a caller waiting for its reply) run between turns. A reader that finds its bytes
/// already read never waits, and tokio's cooperative budget is spent only by reads, 64 KiB at a
/// time (hundreds of small frames, each run inline or spawned here): without turns, a peer
/// pushing as fast as it can kept a worker for up to tokio's 128 reads, tens of thousands of
/// frames.
///
/// Chosen from what a frame costs main: an inline `state_changed` is about 4 µs, so 16 frames
/// keep a turn near 60 µs, the order of a whole service call's round trip; a yield costs about
/// a microsecond, so a flood loses a few percent of its throughput at most. A turn ends early
/// when the reader waits for bytes (it gave the thread up anyway).
pub const READER_TURN_FRAMES: usize = 16;

/// Bytes of frames the reader handles in one turn (see [`READER_TURN_FRAMES`]): large frames
/// cost in proportion to their size (decoding, parsing what they carry), so a turn also ends
/// after 16 KiB, which main parses in tens of microseconds, about a turn of small frames. A
/// frame larger than that is still handled whole, in a turn of its own.
pub const READER_TURN_BYTES: usize = 16 * 1024;

/// The window over which a channel's reader is held to its share of a thread, see
/// [`READER_SHARE_BUSY`].
pub const READER_SHARE_WINDOW: Duration = Duration::from_millis(10);

/// The time a channel's reader may spend handling frames per [`READER_SHARE_WINDOW`] (half of
/// it): past it, with frames still buffered, it rests until the window ends. Turns
/// ([`READER_TURN_FRAMES`]) let other tasks run between a flood's frames, but a flooding peer
/// still kept a thread busy all the time, and on a machine with few CPUs the other groups'
/// sandboxes then waited for a CPU: a quiet neighbour's service-call p99 rose 4–33× (the
/// bench's `flood` section). A peer that keeps its reader busy past half of every window is
/// pushed back (its frames wait in the socket, its writes block), so it takes at most half a
/// CPU of main whatever it sends; a channel busy less than that (every real integration, every
/// ping-pong, and a single group pushing as fast as the sandbox runtime can) never rests. The
/// window is a few of the timer's 1 ms ticks, so a rest is short and lands close to its end.
pub const READER_SHARE_BUSY: Duration = Duration::from_millis(5);

/// Bytes the writer gathers before a write; a burst of pushes leaves in one syscall.
pub const WRITE_BUFFER_CAPACITY: usize = 64 * 1024;

/// How long [`Channel::close`] waits for in-flight handlers, and then for the writer to flush,
/// before it cancels them (and says so in the log).
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Settings of one channel; [`Default`] gives the documented constants.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Names the channel in logs and errors (for example the sandbox group).
    pub name: String,
    /// See [`MAX_RUNNING_HANDLERS`].
    pub max_running_handlers: usize,
    /// See [`MAX_HANDLERS_IN_FLIGHT`].
    pub max_handlers_in_flight: usize,
    /// See [`WRITE_QUEUE_CAPACITY`].
    pub write_queue_capacity: usize,
    /// See [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// See [`CLOSE_GRACE`].
    pub close_grace: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            name: "channel".to_owned(),
            max_running_handlers: MAX_RUNNING_HANDLERS,
            max_handlers_in_flight: MAX_HANDLERS_IN_FLIGHT,
            write_queue_capacity: WRITE_QUEUE_CAPACITY,
            max_frame_len: MAX_FRAME_LEN,
            close_grace: CLOSE_GRACE,
        }
    }
}

impl ChannelConfig {
    /// The default settings with a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// Why a channel ended. The first reason wins; later ones are ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// [`Channel::close`] was called.
    #[error("closed locally")]
    Local,
    /// Every handle was dropped without a close.
    #[error("every handle was dropped")]
    Dropped,
    /// The peer closed its end between frames.
    #[error("the peer closed the connection")]
    Eof,
    /// The peer closed its end in the middle of a frame.
    #[error("the peer closed the connection in the middle of a frame")]
    Truncated,
    /// The peer announced a frame over the cap; the stream cannot be resynchronised.
    #[error("the peer sent a frame over the limit: {0}")]
    FrameTooLarge(FrameError),
    /// The peer kept sending calls the reader had to refuse while not reading the refusals, until
    /// more were waiting than [`MAX_PENDING_ERROR_REPLIES`] or [`MAX_PENDING_ERROR_REPLY_BYTES`]
    /// allow. Closing is the only way left to not leave a call unanswered.
    #[error(
        "the peer does not read its error replies: {replies} waiting ({bytes} bytes) would pass \
         the limit of {max_replies} replies or {max_bytes} bytes"
    )]
    ErrorRepliesOverflow {
        /// Error replies waiting, the refused one included.
        replies: usize,
        /// Their bytes, the refused one included.
        bytes: usize,
        /// [`MAX_PENDING_ERROR_REPLIES`].
        max_replies: usize,
        /// [`MAX_PENDING_ERROR_REPLY_BYTES`].
        max_bytes: usize,
    },
    /// A frame began to arrive and was still incomplete after [`FRAME_BODY_DEADLINE`].
    #[error("{}", describe_stall(*len, *received, *after))]
    FrameStalled {
        /// The frame's announced length (the prefix not counted); `None` when not even the
        /// 4-byte prefix arrived.
        len: Option<usize>,
        /// The bytes of it that arrived (of the prefix, when `len` is `None`).
        received: usize,
        /// [`FRAME_BODY_DEADLINE`].
        after: Duration,
    },
    /// Reading failed.
    #[error("read failed: {0}")]
    ReadFailed(String),
    /// Writing failed.
    #[error("write failed: {0}")]
    WriteFailed(String),
}

fn describe_stall(len: Option<usize>, received: usize, after: Duration) -> String {
    match len {
        Some(len) => format!(
            "the peer's frame of {len} bytes stalled after {received} bytes: not complete within {after:?}"
        ),
        None => format!(
            "the peer's frame stalled after {received} bytes of its length prefix: not complete within {after:?}"
        ),
    }
}

/// Why a call (or push) did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The channel is closed (or closed while waiting).
    #[error("channel `{channel}` is closed: {reason}")]
    Closed {
        /// The channel's name.
        channel: String,
        /// Why it closed.
        reason: CloseReason,
    },
    /// No reply within the caller's timeout.
    #[error("`{type_name}` got no reply within {after:?}")]
    Timeout {
        /// The call's type.
        type_name: String,
        /// The timeout.
        after: Duration,
    },
    /// The peer answered with an error.
    #[error("`{type_name}` failed: {error}")]
    Remote {
        /// The call's type.
        type_name: String,
        /// The peer's error, rebuilt.
        error: RemoteError,
    },
    /// The reply could not be decoded as the call's reply type.
    #[error("cannot decode the reply to `{type_name}`: {source}")]
    Decode {
        /// The call's type.
        type_name: String,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// The peer answered a different type under this call's id.
    #[error("the reply to `{type_name}` came back typed `{got}`")]
    MismatchedReply {
        /// The call's type.
        type_name: String,
        /// The type the reply carried.
        got: String,
    },
    /// The request is over the frame cap; nothing was sent and the channel stays open.
    #[error("cannot send `{type_name}`: {source}")]
    TooLarge {
        /// The call's type.
        type_name: String,
        /// The size complaint.
        #[source]
        source: FrameError,
    },
}

impl CallError {
    /// The peer's error, when the peer answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Self::Remote { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the call failed because the channel is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }
}

/// Counters of one channel, read with [`Channel::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Frames read (decodable or not).
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Calls this side sent.
    pub calls_sent: u64,
    /// Pushes this side sent.
    pub pushes_sent: u64,
    /// Calls from the peer that a handler answered.
    pub calls_handled: u64,
    /// Pushes from the peer that a handler took.
    pub pushes_handled: u64,
    /// Frames dropped because they did not decode.
    pub undecodable_frames: u64,
    /// Calls answered `overloaded` because too many handlers were in flight.
    pub calls_shed: u64,
    /// Pushes dropped because too many handlers were in flight.
    pub pushes_shed: u64,
    /// Pushes dropped because no handler takes their type (or they did not decode).
    pub pushes_unhandled: u64,
    /// Replies that matched no pending call (the caller timed out or gave up).
    pub late_replies: u64,
    /// Error replies from the reader that could not be written at once and waited in the
    /// writer's priority queue (see [`MAX_PENDING_ERROR_REPLIES`]). None is ever dropped.
    pub error_replies_deferred: u64,
    /// Handlers that panicked (answered `internal` when they were calls).
    pub handler_panics: u64,
    /// Times the reader rested because the peer kept it busy past its share
    /// ([`READER_SHARE_BUSY`]): the peer is flooding.
    pub reader_rests: u64,
    /// Handlers running or waiting for a slot right now.
    pub in_flight: u64,
    /// Messages sent and received, per type of the [`CATALOG`](crate::messages::CATALOG)
    /// that has any.
    pub messages: Vec<MessageCount>,
    /// How long the calls this side sent took to be answered.
    pub call_latency: LatencyHistogram,
}

/// One message type's traffic on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCount {
    /// The type.
    pub type_name: &'static str,
    /// Sent by this side (calls and pushes).
    pub sent: u64,
    /// Received from the peer and taken by a handler (calls and pushes).
    pub received: u64,
}

/// Upper bounds of the call latency buckets in microseconds: powers of two from 16 µs to about
/// 67 s (a 2× resolution is what a p50/p99 needs to tell a fast path from a slow one), then
/// everything above.
pub const LATENCY_BUCKETS_US: [u64; 23] = {
    let mut bounds = [0u64; 23];
    let mut index = 0;
    while index < bounds.len() {
        bounds[index] = 16 << index;
        index += 1;
    }
    bounds
};

/// A histogram of call latencies (see [`LATENCY_BUCKETS_US`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Calls per bucket, not cumulative: one per [`LATENCY_BUCKETS_US`] bound, then one for
    /// everything above the last.
    pub buckets: Vec<u64>,
    /// Calls answered.
    pub count: u64,
    /// Their total latency in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// The upper bound (µs) of the bucket holding the `quantile` (0.0–1.0) of the calls;
    /// `None` without calls, `u64::MAX` when it is past the last bound.
    pub fn quantile_us(&self, quantile: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LATENCY_BUCKETS_US.get(index).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

/// Per-type counters, indexed by catalog position.
struct TypeCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A call latency histogram's counters.
struct LatencyCounters {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyCounters {
    fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = LATENCY_BUCKETS_US.partition_point(|&bound| bound < micros);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    calls_sent: AtomicU64,
    pushes_sent: AtomicU64,
    calls_handled: AtomicU64,
    pushes_handled: AtomicU64,
    undecodable_frames: AtomicU64,
    calls_shed: AtomicU64,
    pushes_shed: AtomicU64,
    pushes_unhandled: AtomicU64,
    late_replies: AtomicU64,
    error_replies_deferred: AtomicU64,
    handler_panics: AtomicU64,
    reader_rests: AtomicU64,
    per_type: [TypeCounters; CATALOG.len()],
    call_latency: LatencyCounters,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            calls_sent: AtomicU64::new(0),
            pushes_sent: AtomicU64::new(0),
            calls_handled: AtomicU64::new(0),
            pushes_handled: AtomicU64::new(0),
            undecodable_frames: AtomicU64::new(0),
            calls_shed: AtomicU64::new(0),
            pushes_shed: AtomicU64::new(0),
            pushes_unhandled: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            error_replies_deferred: AtomicU64::new(0),
            handler_panics: AtomicU64::new(0),
            reader_rests: AtomicU64::new(0),
            per_type: std::array::from_fn(|_| TypeCounters {
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
            }),
            call_latency: LatencyCounters {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                count: AtomicU64::new(0),
                sum_us: AtomicU64::new(0),
            },
        }
    }
}

impl Counters {
    /// Counts `count` messages of the catalog type at `index` sent (an index past the catalog,
    /// a type it does not have, is not counted per type).
    fn sent(&self, index: usize, count: u64) {
        if let Some(counters) = self.per_type.get(index) {
            counters.sent.fetch_add(count, Ordering::Relaxed);
        }
    }

    fn received(&self, index: usize) {
        if let Some(counters) = self.per_type.get(index) {
            counters.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

tokio::task_local! {
    /// The handler slot held by the current handler task, given back during nested calls.
    static HANDLER_SLOT: RefCell<HandlerSlot>;
}

struct HandlerSlot {
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

/// Runs a handler future holding `permit`, inside the task-local that nested calls consult.
async fn holding_slot<T>(
    semaphore: Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
    work: impl Future<Output = T>,
) -> T {
    HANDLER_SLOT
        .scope(
            RefCell::new(HandlerSlot {
                semaphore,
                permit: Some(permit),
            }),
            work,
        )
        .await
}

/// If the current task is a handler holding a slot, gives the slot back and returns the
/// semaphore to take it again from.
fn release_handler_slot() -> Option<Arc<Semaphore>> {
    HANDLER_SLOT
        .try_with(|slot| {
            let mut slot = slot.borrow_mut();
            slot.permit.take().map(|permit| {
                drop(permit);
                Arc::clone(&slot.semaphore)
            })
        })
        .ok()
        .flatten()
}

/// Takes the handler slot given back by [`release_handler_slot`] again.
async fn reacquire_handler_slot(semaphore: Arc<Semaphore>) {
    if let Ok(permit) = semaphore.acquire_owned().await {
        let _ = HANDLER_SLOT.try_with(|slot| slot.borrow_mut().permit = Some(permit));
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// Runs a call: (id, payload, channel) -> the encoded response frame, or the error to send.
type CallFn = dyn Fn(u64, Bytes, Channel) -> BoxFuture<Result<Bytes, RemoteError>> + Send + Sync;
type PushFn = dyn Fn(Bytes, Channel) -> BoxFuture<()> + Send + Sync;
type InlineFn = dyn Fn(Bytes, &Channel) + Send + Sync;

#[derive(Clone)]
enum Handler {
    Call(Arc<CallFn>),
    Push(Arc<PushFn>),
    Inline(Arc<InlineFn>),
}

/// Handlers by frame type.
#[derive(Default, Clone)]
struct HandlerTable {
    /// Each handler with its type's catalog position (for the per-type counters).
    by_type: HashMap<String, (usize, Handler)>,
}

impl HandlerTable {
    fn insert_call<C, F, Fut>(&mut self, handler: F)
    where
        C: Call,
        F: Fn(C, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, RemoteError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run: Arc<CallFn> = Arc::new(move |id, payload, channel| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request = C::decode(payload).map_err(|error| {
                    RemoteError::bad_request(format!("cannot decode `{}`: {error}", C::TYPE))
                })?;
                let max = channel.shared.config.max_frame_len;
                let reply = handler(request, channel).await?;
                framing::encode_response(id, C::TYPE, &reply, max).map_err(|error| {
                    RemoteError::internal(format!(
                        "the reply to `{}` was not sent: {error}",
                        C::TYPE
                    ))
                })
            })
        });
        self.by_type
            .insert(C::TYPE.to_owned(), (C::INDEX, Handler::Call(run)));
    }

    fn insert_call_raw<F, Fut>(&mut self, type_name: &str, handler: F)
    where
        F: Fn(Bytes, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let owned_type = type_name.to_owned();
        let run: Arc<CallFn> = Arc::new(move |id, payload, channel| {
            let handler = Arc::clone(&handler);
            let type_name = owned_type.clone();
            Box::pin(async move {
                let max = channel.shared.config.max_frame_len;
                let reply = handler(payload, channel).await?;
                framing::encode_response_bytes(id, &type_name, &reply, max).map_err(|error| {
                    RemoteError::internal(format!(
                        "the reply to `{type_name}` was not sent: {error}"
                    ))
                })
            })
        });
        self.by_type.insert(
            type_name.to_owned(),
            (catalog_position(type_name), Handler::Call(run)),
        );
    }

    fn insert_push<P, F, Fut>(&mut self, handler: F)
    where
        P: Push,
        F: Fn(P, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run: Arc<PushFn> = Arc::new(move |payload, channel| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                match P::decode(payload) {
                    Ok(push) => handler(push, channel).await,
                    Err(error) => channel.shared.push_undecodable(P::TYPE, &error),
                }
            })
        });
        self.by_type
            .insert(P::TYPE.to_owned(), (P::INDEX, Handler::Push(run)));
    }

    fn insert_push_inline<P, F>(&mut self, handler: F)
    where
        P: Push,
        F: Fn(P) + Send + Sync + 'static,
    {
        let run: Arc<InlineFn> = Arc::new(move |payload, channel| match P::decode(payload) {
            Ok(push) => handler(push),
            Err(error) => channel.shared.push_undecodable(P::TYPE, &error),
        });
        self.by_type
            .insert(P::TYPE.to_owned(), (P::INDEX, Handler::Inline(run)));
    }
}

/// The outcome of [`Shared::try_write_now`].
enum DirectWrite {
    /// The frame is written (or buffered with a flush queued).
    Taken,
    /// The writer is busy or the frame is large: queue it.
    Busy,
    /// The channel is closed or the write failed.
    Failed,
}

/// What the writer task is asked to do, in order.
enum Outbound {
    /// Write these bytes (a whole length-prefixed frame).
    Frame(Bytes),
    /// Acknowledge once everything queued before has been written and flushed.
    Flush(oneshot::Sender<()>),
    /// Flush, shut the writing half down, acknowledge, and stop.
    Shutdown(oneshot::Sender<()>),
}

struct PendingCall {
    type_name: Cow<'static, str>,
    reply: oneshot::Sender<Result<Bytes, CallError>>,
}

#[derive(Default)]
struct CallTable {
    pending: HashMap<u64, PendingCall>,
    closed: Option<CloseReason>,
}

struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// State shared by the handles and the two tasks.
struct Shared {
    config: ChannelConfig,
    description: String,
    /// The budget of warnings about what the peer sent (bad frames, odd types): a peer
    /// sending garbage at wire speed costs [`PEER_LOG_LINES_PER_WINDOW`] lines and a summary.
    peer_log: Mutex<LogBudget>,
    handlers: RwLock<HandlerTable>,
    calls: Mutex<CallTable>,
    /// Mirrors `calls.closed.is_some()` for the lock-free fast path of `push`.
    closed_flag: AtomicBool,
    closed_tx: watch::Sender<Option<CloseReason>>,
    next_id: AtomicU64,
    outbound: mpsc::Sender<Outbound>,
    /// The reader's error replies that could not be written at once; the writer drains them
    /// before its main queue. Bounded by [`MAX_PENDING_ERROR_REPLIES`] (its capacity).
    error_replies: mpsc::Sender<Bytes>,
    /// Bytes of the frames in `error_replies` (and the one the writer is writing), bounded by
    /// [`MAX_PENDING_ERROR_REPLY_BYTES`]. Non-zero tells the writer to look there first.
    error_reply_bytes: AtomicUsize,
    /// Frames sent to the write queue or the error-reply queue and not yet written into the
    /// writer's buffer. A sender may write directly only when this is 0, so one task's frames
    /// never overtake its own (and the reader's refusals leave in the order it made them).
    queued_frames: AtomicUsize,
    /// The writing half, buffered. The writer task holds the lock while it drains the queue and
    /// flushes; a sender that finds it free, the queue empty and the buffer empty writes its
    /// frame itself without waiting (saving a task hop on every quiet-time call and reply).
    writer: tokio::sync::Mutex<Option<BufWriter<BoxWriter>>>,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
    running: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    tasks: Mutex<Option<Tasks>>,
    teardown: tokio::sync::Mutex<bool>,
    counters: Counters,
    /// The first write error, once writing failed. Sending stops at once, but the channel stays
    /// open for reading: replies the peer already sent (a shutdown reply racing the peer's exit)
    /// are still delivered, until EOF or the close grace.
    write_error: Mutex<Option<(String, tokio::time::Instant)>>,
    /// Wakes the reader when writing fails, so it can bound how long it keeps reading.
    write_failed: tokio::sync::Notify,
}

impl Shared {
    /// Runs `log` (a warning about what the peer sent) within the peer log budget, after a
    /// summary of what the budget suppressed.
    fn warn_about_peer(&self, log: impl FnOnce()) {
        let admit = self
            .peer_log
            .lock()
            .expect("peer log lock poisoned")
            .admit(0);
        if let Admit::Log { suppressed } = admit {
            if let Some(suppressed) = suppressed {
                tracing::warn!(channel = %self.config.name, "{} more warnings about the peer's frames in the last {} s", suppressed.lines, suppressed.over.as_secs());
            }
            log();
        }
    }

    /// Records that writing failed (first error wins) and stops every later send.
    fn fail_writes(&self, message: String) {
        let mut error = self.write_error.lock().expect("write error lock poisoned");
        if error.is_none() {
            tracing::warn!(channel = %self.config.name, %message, "writing failed; still reading what the peer sent");
            *error = Some((
                message,
                tokio::time::Instant::now() + self.config.close_grace,
            ));
            self.write_failed.notify_one();
        }
    }

    fn write_error(&self) -> Option<(String, tokio::time::Instant)> {
        self.write_error
            .lock()
            .expect("write error lock poisoned")
            .clone()
    }

    fn mark_closed(&self, reason: CloseReason) {
        let drained = {
            let mut calls = self.calls.lock().expect("call table lock poisoned");
            if calls.closed.is_some() {
                return;
            }
            calls.closed = Some(reason.clone());
            self.closed_flag.store(true, Ordering::Release);
            std::mem::take(&mut calls.pending)
        };
        match &reason {
            CloseReason::Local | CloseReason::Eof | CloseReason::Dropped => {
                tracing::debug!(channel = %self.config.name, %reason, "channel closed");
            }
            _ => tracing::warn!(channel = %self.config.name, %reason, "channel closed"),
        }
        // The last burst of warnings about the peer is summarised, not lost with the channel.
        let suppressed = self
            .peer_log
            .lock()
            .expect("peer log lock poisoned")
            .take_suppressed();
        if let Some(suppressed) = suppressed {
            tracing::warn!(channel = %self.config.name, "{} more warnings about the peer's frames in the last {} s", suppressed.lines, suppressed.over.as_secs());
        }
        for (_, call) in drained {
            let _ = call.reply.send(Err(self.closed_error(reason.clone())));
        }
        self.closed_tx.send_replace(Some(reason));
    }

    fn closed_error(&self, reason: CloseReason) -> CallError {
        CallError::Closed {
            channel: self.config.name.clone(),
            reason,
        }
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.calls
            .lock()
            .expect("call table lock poisoned")
            .closed
            .clone()
    }

    fn push_undecodable(&self, type_name: &str, error: &prost::DecodeError) {
        bump(&self.counters.pushes_unhandled);
        let type_name = type_label(type_name);
        self.warn_about_peer(|| {
            tracing::warn!(channel = %self.config.name, type_name, %error, "dropping an undecodable push");
        });
    }

    fn complete_call(&self, id: u64, type_name: &str, response: wire::Response) {
        let pending = self
            .calls
            .lock()
            .expect("call table lock poisoned")
            .pending
            .remove(&id);
        let Some(pending) = pending else {
            bump(&self.counters.late_replies);
            tracing::debug!(channel = %self.config.name, id, type_name = type_label(type_name), "reply to no pending call");
            return;
        };
        let outcome = if pending.type_name != type_name {
            Err(CallError::MismatchedReply {
                type_name: pending.type_name.into_owned(),
                got: type_label(type_name).to_owned(),
            })
        } else {
            match response.outcome {
                Some(wire::response::Outcome::Result(result)) => Ok(result),
                Some(wire::response::Outcome::Error(error)) => Err(CallError::Remote {
                    type_name: type_name.to_owned(),
                    error: RemoteError::from_wire(error),
                }),
                None => Err(CallError::Remote {
                    type_name: type_name.to_owned(),
                    error: RemoteError::internal("the peer sent an empty response"),
                }),
            }
        };
        let _ = pending.reply.send(outcome);
    }

    /// Sends an error reply from the reader without ever waiting: written now, or parked in the
    /// error-reply queue. Fails (the channel must close) only when that queue is full.
    fn reply_error_now(
        &self,
        id: u64,
        type_name: &str,
        error: RemoteError,
    ) -> Result<(), CloseReason> {
        let frame = match framing::encode_error_response(
            id,
            type_name,
            &error.to_wire(),
            self.config.max_frame_len,
        ) {
            Ok(frame) => frame,
            Err(_) => {
                // Only a type name near the frame cap gets here (the messages quote it too);
                // answer without echoing it anywhere.
                let short = wire::Error {
                    kind: error.kind as i32,
                    message: format!(
                        "refused a call whose {}-byte type name is too long to echo",
                        type_name.len()
                    ),
                    field_errors: Vec::new(),
                };
                match framing::encode_error_response(id, "", &short, self.config.max_frame_len) {
                    Ok(frame) => frame,
                    // Only a frame cap of a few dozen bytes gets here: no answer can ever be
                    // sent, so close rather than leave the call unanswered.
                    Err(error) => return Err(CloseReason::FrameTooLarge(error)),
                }
            }
        };
        match self.try_write_now(&frame) {
            DirectWrite::Taken | DirectWrite::Failed => Ok(()),
            DirectWrite::Busy => self.defer_error_reply(frame),
        }
    }

    /// Parks an error reply for the writer, within both bounds of the error-reply queue.
    fn defer_error_reply(&self, frame: Bytes) -> Result<(), CloseReason> {
        let len = frame.len();
        let bytes = self.error_reply_bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.queued_frames.fetch_add(1, Ordering::AcqRel);
        let overflow = bytes > MAX_PENDING_ERROR_REPLY_BYTES;
        let outcome = if overflow {
            Err(mpsc::error::TrySendError::Full(frame))
        } else {
            self.error_replies.try_send(frame)
        };
        match outcome {
            Ok(()) => {
                bump(&self.counters.error_replies_deferred);
                Ok(())
            }
            Err(error) => {
                self.error_reply_bytes.fetch_sub(len, Ordering::AcqRel);
                self.queued_frames.fetch_sub(1, Ordering::AcqRel);
                match error {
                    // The writer is gone: the channel is being torn down, and its pending
                    // calls' callers are told so by the close.
                    mpsc::error::TrySendError::Closed(_) => Ok(()),
                    mpsc::error::TrySendError::Full(_) => {
                        let waiting =
                            MAX_PENDING_ERROR_REPLIES.saturating_sub(self.error_replies.capacity());
                        Err(CloseReason::ErrorRepliesOverflow {
                            replies: waiting + 1,
                            bytes,
                            max_replies: MAX_PENDING_ERROR_REPLIES,
                            max_bytes: MAX_PENDING_ERROR_REPLY_BYTES,
                        })
                    }
                }
            }
        }
    }

    /// Books an error reply the writer took off the error-reply queue as written (or dropped
    /// with a failed writer).
    fn error_reply_done(&self, len: usize) {
        self.error_reply_bytes.fetch_sub(len, Ordering::AcqRel);
        self.queued_frames.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sends a whole frame: written directly when the writer is idle, queued otherwise (waiting
    /// for room when the queue is full). Fails only when the channel is closed.
    async fn send_frame(&self, frame: Bytes) -> Result<(), ()> {
        match self.try_write_now(&frame) {
            DirectWrite::Taken => return Ok(()),
            DirectWrite::Failed => return Err(()),
            DirectWrite::Busy => {}
        }
        self.queue_frame(frame).await
    }

    /// Queues a whole frame for the writer task, which joins everything queued into one write
    /// (waiting for room when the queue is full). Fails only when the channel is closed.
    async fn queue_frame(&self, frame: Bytes) -> Result<(), ()> {
        self.queued_frames.fetch_add(1, Ordering::AcqRel);
        // Undoes the count if the frame never reaches the queue: the queue is closed, or the
        // caller stops waiting for room (a timeout, a cancelled handler). A leaked count would
        // turn off direct writes for good.
        let mut unqueued = Unqueued(Some(&self.queued_frames));
        if self.outbound.send(Outbound::Frame(frame)).await.is_err() {
            return Err(());
        }
        unqueued.0 = None;
        Ok(())
    }

    /// Writes `frame` without waiting, if nothing is ahead of it and the writer is idle.
    ///
    /// The write is one poll with a no-op waker, so it can never be cancelled half way: either
    /// the OS takes the frame (all of it, or a part with the rest copied into the empty write
    /// buffer and a flush queued), or nothing was written and the caller queues it.
    fn try_write_now(&self, frame: &Bytes) -> DirectWrite {
        if frame.len() > WRITE_BUFFER_CAPACITY || self.queued_frames.load(Ordering::Acquire) != 0 {
            return DirectWrite::Busy;
        }
        let Ok(mut guard) = self.writer.try_lock() else {
            return DirectWrite::Busy;
        };
        let Some(writer) = guard.as_mut() else {
            return DirectWrite::Failed;
        };
        if self.queued_frames.load(Ordering::Acquire) != 0 || !writer.buffer().is_empty() {
            return DirectWrite::Busy;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(writer.get_mut()).poll_write(&mut cx, frame) {
            Poll::Ready(Ok(written)) if written == frame.len() => {
                match Pin::new(writer.get_mut()).poll_flush(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => {
                        *guard = None;
                        drop(guard);
                        self.fail_writes(error.to_string());
                        return DirectWrite::Failed;
                    }
                    Poll::Pending => self.nudge_writer(),
                }
                bump(&self.counters.frames_out);
                DirectWrite::Taken
            }
            Poll::Ready(Ok(written)) => {
                // The buffer is empty and the rest is smaller than it: this copies, never waits.
                let rest = &frame[written..];
                match Pin::new(&mut *writer).poll_write(&mut cx, rest) {
                    Poll::Ready(Ok(copied)) if copied == rest.len() => {
                        self.nudge_writer();
                        bump(&self.counters.frames_out);
                        DirectWrite::Taken
                    }
                    _ => {
                        *guard = None;
                        drop(guard);
                        self.fail_writes("a partly written frame could not be buffered".into());
                        DirectWrite::Failed
                    }
                }
            }
            Poll::Ready(Err(error)) => {
                *guard = None;
                drop(guard);
                self.fail_writes(error.to_string());
                DirectWrite::Failed
            }
            Poll::Pending => DirectWrite::Busy,
        }
    }

    /// Asks the writer task to flush what a direct write left in the buffer.
    fn nudge_writer(&self) {
        let (ack, _) = oneshot::channel();
        // A full queue means the writer task is busy and flushes after its batch anyway.
        let _ = self.outbound.try_send(Outbound::Flush(ack));
    }

    fn snapshot(&self) -> ChannelStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ChannelStats {
            frames_in: load(&c.frames_in),
            frames_out: load(&c.frames_out),
            calls_sent: load(&c.calls_sent),
            pushes_sent: load(&c.pushes_sent),
            calls_handled: load(&c.calls_handled),
            pushes_handled: load(&c.pushes_handled),
            undecodable_frames: load(&c.undecodable_frames),
            calls_shed: load(&c.calls_shed),
            pushes_shed: load(&c.pushes_shed),
            pushes_unhandled: load(&c.pushes_unhandled),
            late_replies: load(&c.late_replies),
            error_replies_deferred: load(&c.error_replies_deferred),
            handler_panics: load(&c.handler_panics),
            reader_rests: load(&c.reader_rests),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
            messages: CATALOG
                .iter()
                .zip(&c.per_type)
                .map(|(spec, counters)| MessageCount {
                    type_name: spec.type_name,
                    sent: load(&counters.sent),
                    received: load(&counters.received),
                })
                .filter(|count| count.sent > 0 || count.received > 0)
                .collect(),
            call_latency: LatencyHistogram {
                buckets: c.call_latency.buckets.iter().map(load).collect(),
                count: load(&c.call_latency.count),
                sum_us: load(&c.call_latency.sum_us),
            },
        }
    }
}

/// Keeps the task handles; when the last [`Channel`] handle drops, the tasks are stopped.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.mark_closed(CloseReason::Dropped);
        self.shared.cancel.cancel();
        if let Some(tasks) = self.shared.tasks.lock().expect("task lock poisoned").take() {
            tasks.reader.abort();
            tasks.writer.abort();
        }
    }
}

/// Gives back a `queued_frames` count on drop, unless disarmed once the frame is queued.
struct Unqueued<'a>(Option<&'a AtomicUsize>);

impl Drop for Unqueued<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.0 {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Releases one in-flight slot when a handler task ends, however it ends.
struct InFlightSlot(Arc<Shared>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Removes a pending call when its caller stops waiting (timeout or a dropped future).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.shared.calls.lock() {
            calls.pending.remove(&self.id);
        }
    }
}

/// Registers handlers, then starts a [`Channel`] over a transport. Handlers registered here are
/// in place before the first frame is read, so no frame can meet a missing handler.
pub struct ChannelBuilder {
    config: ChannelConfig,
    handlers: HandlerTable,
}

impl ChannelBuilder {
    /// A builder with the given settings and no handlers.
    pub fn new(config: ChannelConfig) -> Self {
        Self {
            config,
            handlers: HandlerTable::default(),
        }
    }

    /// Answers calls of type `C` with `handler`.
    pub fn on_call<C, F, Fut>(mut self, handler: F) -> Self
    where
        C: Call,
        F: Fn(C, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, RemoteError>> + Send + 'static,
    {
        self.handlers.insert_call::<C, F, Fut>(handler);
        self
    }

    /// Answers calls of any type string with already-encoded bytes (for tests and tools that
    /// speak the wire without the generated types).
    pub fn on_call_raw<F, Fut>(mut self, type_name: &str, handler: F) -> Self
    where
        F: Fn(Bytes, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.handlers.insert_call_raw(type_name, handler);
        self
    }

    /// Takes pushes of type `P` in a task, concurrently with other handlers (no order).
    pub fn on_push<P, F, Fut>(mut self, handler: F) -> Self
    where
        P: Push,
        F: Fn(P, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.insert_push::<P, F, Fut>(handler);
        self
    }

    /// Takes pushes of type `P` in the reader, in arrival order. The handler must not block:
    /// it holds up every frame behind it (hand heavy work to a bounded queue).
    pub fn on_push_inline<P, F>(mut self, handler: F) -> Self
    where
        P: Push,
        F: Fn(P) + Send + Sync + 'static,
    {
        self.handlers.insert_push_inline::<P, F>(handler);
        self
    }

    /// Starts the reader and writer tasks. Must be called inside a tokio runtime.
    pub fn start(self, transport: Transport) -> Channel {
        let (reader, writer, description) = transport.into_parts();
        let (outbound, outbound_rx) = mpsc::channel(self.config.write_queue_capacity.max(1));
        let (error_replies, error_replies_rx) = mpsc::channel(MAX_PENDING_ERROR_REPLIES);
        let (closed_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            running: Arc::new(Semaphore::new(self.config.max_running_handlers.max(1))),
            config: self.config,
            description,
            peer_log: Mutex::new(LogBudget::new(PEER_LOG_LINES_PER_WINDOW, usize::MAX)),
            handlers: RwLock::new(self.handlers),
            calls: Mutex::new(CallTable::default()),
            closed_flag: AtomicBool::new(false),
            closed_tx,
            next_id: AtomicU64::new(1),
            outbound,
            error_replies,
            error_reply_bytes: AtomicUsize::new(0),
            queued_frames: AtomicUsize::new(0),
            writer: tokio::sync::Mutex::new(Some(BufWriter::with_capacity(
                WRITE_BUFFER_CAPACITY,
                writer,
            ))),
            in_flight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(None),
            teardown: tokio::sync::Mutex::new(false),
            counters: Counters::default(),
            write_error: Mutex::new(None),
            write_failed: tokio::sync::Notify::new(),
        });
        let owner = Arc::new(Owner {
            shared: Arc::clone(&shared),
        });
        let writer_task = tokio::spawn(write_loop(
            Arc::clone(&shared),
            outbound_rx,
            error_replies_rx,
        ));
        let reader_task = tokio::spawn(read_loop(
            Arc::clone(&shared),
            Arc::downgrade(&owner),
            reader,
        ));
        *shared.tasks.lock().expect("task lock poisoned") = Some(Tasks {
            reader: reader_task,
            writer: writer_task,
        });
        Channel {
            shared,
            _owner: owner,
        }
    }
}

/// A handle to a running channel. Clones share the channel; when the last handle is dropped the
/// channel stops (call [`Channel::close`] first for an orderly end).
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.shared.config.name)
            .field("transport", &self.shared.description)
            .field("closed", &self.shared.closed_flag.load(Ordering::Relaxed))
            .finish()
    }
}

impl Channel {
    /// A builder with the given settings.
    pub fn builder(config: ChannelConfig) -> ChannelBuilder {
        ChannelBuilder::new(config)
    }

    /// The channel's name (from its config).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// What the transport is.
    pub fn transport_description(&self) -> &str {
        &self.shared.description
    }

    /// Calls the peer and waits for the reply, however long it takes (until the channel closes).
    pub async fn call<C: Call>(&self, request: &C) -> Result<C::Reply, CallError> {
        self.call_inner(request, None).await
    }

    /// Calls the peer and waits at most `timeout` for the reply.
    pub async fn call_timeout<C: Call>(
        &self,
        request: &C,
        timeout: Duration,
    ) -> Result<C::Reply, CallError> {
        self.call_inner(request, Some(timeout)).await
    }

    async fn call_inner<C: Call>(
        &self,
        request: &C,
        timeout: Option<Duration>,
    ) -> Result<C::Reply, CallError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = framing::encode_request(id, C::TYPE, request, self.shared.config.max_frame_len)
            .map_err(|source| CallError::TooLarge {
                type_name: C::TYPE.to_owned(),
                source,
            })?;
        self.shared.counters.sent(C::INDEX, 1);
        let reply = self
            .round_trip(id, Cow::Borrowed(C::TYPE), frame, timeout)
            .await?;
        C::Reply::decode(reply).map_err(|source| CallError::Decode {
            type_name: C::TYPE.to_owned(),
            source,
        })
    }

    /// Calls the peer with an already-encoded request of any type string; returns the reply's
    /// encoded bytes.
    pub async fn call_raw(
        &self,
        type_name: &str,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame =
            framing::encode_request_bytes(id, type_name, payload, self.shared.config.max_frame_len)
                .map_err(|source| CallError::TooLarge {
                    type_name: type_name.to_owned(),
                    source,
                })?;
        self.shared.counters.sent(catalog_position(type_name), 1);
        self.round_trip(id, Cow::Owned(type_name.to_owned()), frame, timeout)
            .await
    }

    async fn round_trip(
        &self,
        id: u64,
        type_name: Cow<'static, str>,
        frame: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut calls = self.shared.calls.lock().expect("call table lock poisoned");
            if let Some(reason) = &calls.closed {
                return Err(self.shared.closed_error(reason.clone()));
            }
            calls.pending.insert(
                id,
                PendingCall {
                    type_name: type_name.clone(),
                    reply: reply_tx,
                },
            );
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        bump(&self.shared.counters.calls_sent);
        let exchange = async {
            if self.shared.send_frame(frame).await.is_err() {
                return Err(self.closed_now());
            }
            match reply_rx.await {
                Ok(outcome) => outcome,
                Err(_) => Err(self.closed_now()),
            }
        };
        let released_slot = release_handler_slot();
        let sent_at = std::time::Instant::now();
        let outcome = match timeout {
            None => exchange.await,
            Some(after) => match tokio::time::timeout(after, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => Err(CallError::Timeout {
                    type_name: type_name.into_owned(),
                    after,
                }),
            },
        };
        // An answer, a result or an error, is a latency; a call that timed out or lost its
        // channel has none.
        if matches!(outcome, Ok(_) | Err(CallError::Remote { .. })) {
            self.shared.counters.call_latency.record(sent_at.elapsed());
        }
        if let Some(semaphore) = released_slot {
            reacquire_handler_slot(semaphore).await;
        }
        outcome
    }

    fn closed_now(&self) -> CallError {
        let reason = self.shared.close_reason().or_else(|| {
            self.shared
                .write_error()
                .map(|(message, _)| CloseReason::WriteFailed(message))
        });
        self.shared
            .closed_error(reason.unwrap_or(CloseReason::Dropped))
    }

    /// Sends a one-way message, waiting for room in the write queue if it is full.
    pub async fn push<P: Push>(&self, message: &P) -> Result<(), CallError> {
        if self.shared.closed_flag.load(Ordering::Acquire) {
            return Err(self.closed_now());
        }
        let frame = framing::encode_request(0, P::TYPE, message, self.shared.config.max_frame_len)
            .map_err(|source| CallError::TooLarge {
                type_name: P::TYPE.to_owned(),
                source,
            })?;
        self.shared
            .send_frame(frame)
            .await
            .map_err(|_| self.closed_now())?;
        bump(&self.shared.counters.pushes_sent);
        self.shared.counters.sent(P::INDEX, 1);
        Ok(())
    }

    /// Sends one-way messages in order with as few writes as possible: their frames are joined
    /// into chunks of up to [`WRITE_BUFFER_CAPACITY`] bytes and always queued for the writer
    /// task (waiting for room when the queue is full), which writes them together with whatever
    /// is sent before it runs: a call's reply sent right after a batch leaves in the same write.
    /// The peer reads them as separate pushes. A message too large for a frame is skipped and
    /// its error returned after the others are sent.
    pub async fn push_batch<P: Push>(&self, messages: &[P]) -> Result<(), CallError> {
        if self.shared.closed_flag.load(Ordering::Acquire) {
            return Err(self.closed_now());
        }
        let max = self.shared.config.max_frame_len;
        let mut first_error = None;
        let mut chunk = BytesMut::new();
        let mut frames_in_chunk = 0u64;
        for message in messages {
            let frame = match framing::encode_request(0, P::TYPE, message, max) {
                Ok(frame) => frame,
                Err(source) => {
                    first_error.get_or_insert(CallError::TooLarge {
                        type_name: P::TYPE.to_owned(),
                        source,
                    });
                    continue;
                }
            };
            if !chunk.is_empty() && chunk.len() + frame.len() > WRITE_BUFFER_CAPACITY {
                self.send_frames(chunk.split().freeze(), frames_in_chunk, P::INDEX)
                    .await?;
                frames_in_chunk = 0;
            }
            chunk.extend_from_slice(&frame);
            frames_in_chunk += 1;
        }
        if !chunk.is_empty() {
            self.send_frames(chunk.freeze(), frames_in_chunk, P::INDEX)
                .await?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Queues `count` whole frames joined in `bytes`, counting them as pushes of the catalog
    /// type at `index`.
    async fn send_frames(&self, bytes: Bytes, count: u64, index: usize) -> Result<(), CallError> {
        self.shared
            .queue_frame(bytes)
            .await
            .map_err(|_| self.closed_now())?;
        let counters = &self.shared.counters;
        counters.pushes_sent.fetch_add(count, Ordering::Relaxed);
        counters.sent(index, count);
        // The write path counts one frame per write.
        counters
            .frames_out
            .fetch_add(count.saturating_sub(1), Ordering::Relaxed);
        Ok(())
    }

    /// Sends a one-way message of any type string with an already-encoded payload.
    pub async fn push_raw(&self, type_name: &str, payload: &[u8]) -> Result<(), CallError> {
        if self.shared.closed_flag.load(Ordering::Acquire) {
            return Err(self.closed_now());
        }
        let frame =
            framing::encode_request_bytes(0, type_name, payload, self.shared.config.max_frame_len)
                .map_err(|source| CallError::TooLarge {
                    type_name: type_name.to_owned(),
                    source,
                })?;
        self.shared
            .send_frame(frame)
            .await
            .map_err(|_| self.closed_now())?;
        bump(&self.shared.counters.pushes_sent);
        self.shared.counters.sent(catalog_position(type_name), 1);
        Ok(())
    }

    /// Answers calls of type `C` from now on (replacing an earlier handler of that type).
    pub fn on_call<C, F, Fut>(&self, handler: F)
    where
        C: Call,
        F: Fn(C, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, RemoteError>> + Send + 'static,
    {
        self.shared
            .handlers
            .write()
            .expect("handler lock poisoned")
            .insert_call::<C, F, Fut>(handler);
    }

    /// Takes pushes of type `P` in a task from now on.
    pub fn on_push<P, F, Fut>(&self, handler: F)
    where
        P: Push,
        F: Fn(P, Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shared
            .handlers
            .write()
            .expect("handler lock poisoned")
            .insert_push::<P, F, Fut>(handler);
    }

    /// Takes pushes of type `P` in the reader, in order, from now on.
    pub fn on_push_inline<P, F>(&self, handler: F)
    where
        P: Push,
        F: Fn(P) + Send + Sync + 'static,
    {
        self.shared
            .handlers
            .write()
            .expect("handler lock poisoned")
            .insert_push_inline::<P, F>(handler);
    }

    /// Stops answering `type_name`; later frames of it get `no handler`.
    pub fn remove_handler(&self, type_name: &str) -> bool {
        self.shared
            .handlers
            .write()
            .expect("handler lock poisoned")
            .by_type
            .remove(type_name)
            .is_some()
    }

    /// A snapshot of the channel's counters.
    pub fn stats(&self) -> ChannelStats {
        self.shared.snapshot()
    }

    /// Whether the channel has ended (for any reason).
    pub fn is_closed(&self) -> bool {
        self.shared.closed_flag.load(Ordering::Acquire)
    }

    /// Why the channel ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Resolves when the channel ends (EOF, error, or close), with the reason.
    pub async fn closed(&self) -> CloseReason {
        let mut watcher = self.shared.closed_tx.subscribe();
        match watcher.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(CloseReason::Dropped),
            Err(_) => CloseReason::Dropped,
        }
    }

    /// Waits until no handler is running or queued and everything queued for writing has been
    /// flushed, without closing anything. Returns `false` if that took longer than `timeout`.
    ///
    /// The sandbox calls this between answering `shutdown` and closing, so the reply (carrying
    /// the restore state) is on the wire before the transport goes away. Call it from outside a
    /// handler: a handler waiting for itself to finish would time out.
    pub async fn drain_inflight(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.shared.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        let flushed = async {
            self.shared
                .outbound
                .send(Outbound::Flush(ack_tx))
                .await
                .is_ok()
                && ack_rx.await.is_ok()
        };
        matches!(tokio::time::timeout_at(deadline, flushed).await, Ok(true))
    }

    /// Ends the channel: fails pending calls, stops reading, waits for in-flight handlers (at
    /// most the close grace, then cancels them), flushes and shuts down the writing half.
    ///
    /// Idempotent, and complete even when the peer already hung up: whoever calls it first does
    /// the teardown, exactly once; concurrent and later callers wait for it.
    pub async fn close(&self) {
        self.shared.mark_closed(CloseReason::Local);
        let mut done = self.shared.teardown.lock().await;
        if *done {
            return;
        }
        let grace = self.shared.config.close_grace;
        let name = &self.shared.config.name;
        let tasks = self.shared.tasks.lock().expect("task lock poisoned").take();
        let Some(Tasks { reader, mut writer }) = tasks else {
            *done = true;
            return;
        };
        reader.abort();
        let _ = reader.await;

        self.shared.tracker.close();
        if tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(channel = %name, ?grace, "handlers still running after the close grace; cancelling them");
            self.shared.cancel.cancel();
            self.shared.tracker.wait().await;
        }

        let (ack_tx, ack_rx) = oneshot::channel();
        let stop_writer = async {
            if self
                .shared
                .outbound
                .send(Outbound::Shutdown(ack_tx))
                .await
                .is_ok()
            {
                let _ = ack_rx.await;
            }
            let _ = (&mut writer).await;
        };
        if tokio::time::timeout(grace, stop_writer).await.is_err() {
            tracing::warn!(channel = %name, ?grace, "the peer did not take our last frames within the close grace; dropping them");
            writer.abort();
            let _ = writer.await;
        }
        *done = true;
    }
}

async fn read_loop(shared: Arc<Shared>, owner: Weak<Owner>, mut reader: BoxReader) {
    let mut buf = ReadBuffer::new(shared.config.max_frame_len);
    let mut scratch = vec![0u8; READ_BUFFER_CAPACITY];
    // One timer for every frame's deadline, reset only when it fires early (the frame it was
    // set for is done, a later one is pending): arming a timer per read would cost a timer
    // registration on the fast path. Its deadline is never later than the pending frame's,
    // since frames begin in order.
    let stall_timer = tokio::time::sleep(FRAME_BODY_DEADLINE);
    tokio::pin!(stall_timer);
    let mut turn = ReaderTurn::default();
    let mut share = ReaderShare::new(tokio::time::Instant::now());
    let mut turn_started = tokio::time::Instant::now();
    let reason = 'reading: loop {
        loop {
            match buf.next_frame() {
                Ok(Some(frame)) => {
                    if turn.is_spent() {
                        let now = tokio::time::Instant::now();
                        share.charge(now - turn_started, now);
                        match share.rest_until() {
                            Some(until) => {
                                bump(&shared.counters.reader_rests);
                                tokio::time::sleep_until(until).await;
                            }
                            None => tokio::task::yield_now().await,
                        }
                        turn = ReaderTurn::default();
                        turn_started = tokio::time::Instant::now();
                    }
                    turn.charge(frame.len());
                    let Some(owner) = owner.upgrade() else { return };
                    if let Err(reason) = dispatch(&shared, &owner, frame) {
                        break 'reading reason;
                    }
                }
                Ok(None) => break,
                Err(error) => break 'reading CloseReason::FrameTooLarge(error),
            }
        }
        let read_at = tokio::time::Instant::now();
        share.charge(read_at - turn_started, read_at);
        turn_started = read_at;
        let stall_deadline = buf.partial_frame_deadline();
        // Reads land in a zeroed scratch buffer (initialised once, so no per-read zeroing and no
        // unsafe), then are appended to the frame buffer.
        let mut waited = false;
        let read = tokio::select! {
            biased;
            read = read_noting_wait(&mut reader, &mut scratch, &mut waited) => read,
            () = &mut stall_timer, if stall_deadline.is_some() => {
                match stall_deadline {
                    Some(deadline) if tokio::time::Instant::now() < deadline => {
                        stall_timer.as_mut().reset(deadline);
                        continue;
                    }
                    _ => break buf.stalled(),
                }
            }
            message = write_failure_deadline(&shared) => break CloseReason::WriteFailed(message),
        };
        if waited {
            turn = ReaderTurn::default();
            turn_started = tokio::time::Instant::now();
        }
        match read {
            Ok(0) if buf.is_empty() => {
                break match shared.write_error() {
                    Some((message, _)) => CloseReason::WriteFailed(message),
                    None => CloseReason::Eof,
                };
            }
            Ok(0) => break CloseReason::Truncated,
            Ok(read) => buf.extend(&scratch[..read]),
            Err(error) => break CloseReason::ReadFailed(error.to_string()),
        }
    };
    shared.mark_closed(reason);
}

/// What the reader has handled since it last gave its thread up: bounded by
/// [`READER_TURN_FRAMES`] and [`READER_TURN_BYTES`].
#[derive(Default)]
struct ReaderTurn {
    frames: usize,
    bytes: usize,
}

impl ReaderTurn {
    fn charge(&mut self, frame_len: usize) {
        self.frames += 1;
        self.bytes += frame_len;
    }

    fn is_spent(&self) -> bool {
        self.frames >= READER_TURN_FRAMES || self.bytes >= READER_TURN_BYTES
    }
}

/// The time the reader spent handling frames in the current [`READER_SHARE_WINDOW`]: past
/// [`READER_SHARE_BUSY`], it rests until the window ends.
struct ReaderShare {
    window_start: tokio::time::Instant,
    busy: Duration,
}

impl ReaderShare {
    fn new(now: tokio::time::Instant) -> Self {
        Self {
            window_start: now,
            busy: Duration::ZERO,
        }
    }

    /// Adds `busy` time handled up to `now`, starting a new window when the last one is over.
    fn charge(&mut self, busy: Duration, now: tokio::time::Instant) {
        if now >= self.window_start + READER_SHARE_WINDOW {
            self.window_start = now;
            self.busy = Duration::ZERO;
        }
        self.busy += busy;
    }

    /// When the window's share is spent: the end of the window, to rest until.
    fn rest_until(&mut self) -> Option<tokio::time::Instant> {
        (self.busy >= READER_SHARE_BUSY).then(|| {
            let until = self.window_start + READER_SHARE_WINDOW;
            self.window_start = until;
            self.busy = Duration::ZERO;
            until
        })
    }
}

/// Reads into `scratch`, setting `waited` when no bytes were ready at first (the task then gave
/// its thread up, which starts a new turn).
async fn read_noting_wait(
    reader: &mut BoxReader,
    scratch: &mut [u8],
    waited: &mut bool,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut into = tokio::io::ReadBuf::new(scratch);
        match Pin::new(&mut *reader).poll_read(cx, &mut into) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(into.filled().len())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                *waited = true;
                Poll::Pending
            }
        }
    })
    .await
}

/// The reader's bytes not yet decoded. It grows with the bytes that arrive, never with what a
/// length prefix announces (a prefix costs the peer 4 bytes and could otherwise make us reserve
/// [`MAX_FRAME_LEN`]), and it times the frame it holds the beginning of, against
/// [`FRAME_BODY_DEADLINE`].
struct ReadBuffer {
    buf: BytesMut,
    max_len: usize,
    /// When the first bytes of the incomplete frame at the front arrived; `None` when the
    /// buffer ends on a frame boundary (or the clock has not been read since).
    partial_since: Option<tokio::time::Instant>,
}

impl ReadBuffer {
    fn new(max_len: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_BUFFER_CAPACITY),
            max_len,
            partial_since: None,
        }
    }

    /// Takes the next whole frame off the front, if there is one.
    fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let frame = framing::decode_frame(&mut self.buf, self.max_len)?;
        if frame.is_some() {
            // Whatever follows is the beginning of another frame, with its own deadline.
            self.partial_since = None;
        }
        Ok(frame)
    }

    /// Appends bytes read from the transport. Room is made for these bytes only, never for the
    /// rest of the frame its prefix announced: the buffer's own growth doubles its capacity
    /// when it must grow, so a large frame costs O(log n) copies and what we hold stays within
    /// about twice what the peer actually sent (beyond the first [`READ_BUFFER_CAPACITY`]).
    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// When the incomplete frame at the front must be complete, starting its clock if its first
    /// bytes just arrived; `None` when no frame is incomplete. Call after taking every whole
    /// frame off: the clock is read once per frame that spans reads, not per read.
    fn partial_frame_deadline(&mut self) -> Option<tokio::time::Instant> {
        if self.buf.is_empty() {
            return None;
        }
        let since = *self
            .partial_since
            .get_or_insert_with(tokio::time::Instant::now);
        Some(since + FRAME_BODY_DEADLINE)
    }

    /// Why the channel closes when the incomplete frame missed its deadline.
    fn stalled(&self) -> CloseReason {
        let held = self.buf.len();
        match self.buf.get(..framing::LENGTH_PREFIX_LEN) {
            Some(_) => CloseReason::FrameStalled {
                len: Some(framing::bytes_needed(&self.buf) - framing::LENGTH_PREFIX_LEN),
                received: held - framing::LENGTH_PREFIX_LEN,
                after: FRAME_BODY_DEADLINE,
            },
            None => CloseReason::FrameStalled {
                len: None,
                received: held,
                after: FRAME_BODY_DEADLINE,
            },
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Resolves (with the write error) once writing has failed and the close grace has passed
/// since: the reader keeps delivering the peer's replies until then.
async fn write_failure_deadline(shared: &Shared) -> String {
    loop {
        let notified = shared.write_failed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some((message, deadline)) = shared.write_error() {
            tokio::time::sleep_until(deadline).await;
            return message;
        }
        notified.await;
    }
}

/// Handles one frame in the reader. Fails only when the channel must close: an answer owed to
/// the peer could not be kept (see [`MAX_PENDING_ERROR_REPLIES`]).
fn dispatch(shared: &Arc<Shared>, owner: &Arc<Owner>, frame: Bytes) -> Result<(), CloseReason> {
    bump(&shared.counters.frames_in);
    let frame = match wire::Frame::decode(frame) {
        Ok(frame) => frame,
        Err(error) => {
            bump(&shared.counters.undecodable_frames);
            shared.warn_about_peer(|| {
                tracing::warn!(channel = %shared.config.name, %error, "dropping an undecodable frame");
            });
            return Ok(());
        }
    };
    match frame.body {
        Some(wire::frame::Body::Response(response)) => {
            shared.complete_call(frame.id, &frame.r#type, response);
            Ok(())
        }
        Some(wire::frame::Body::Request(payload)) => {
            dispatch_request(shared, owner, frame.id, frame.r#type, payload)
        }
        None => {
            bump(&shared.counters.undecodable_frames);
            let type_name = type_label(&frame.r#type);
            shared.warn_about_peer(|| {
                tracing::warn!(channel = %shared.config.name, type_name, "dropping a frame with no body");
            });
            Ok(())
        }
    }
}

fn dispatch_request(
    shared: &Arc<Shared>,
    owner: &Arc<Owner>,
    id: u64,
    type_name: String,
    payload: Bytes,
) -> Result<(), CloseReason> {
    let handler = shared
        .handlers
        .read()
        .expect("handler lock poisoned")
        .by_type
        .get(&type_name)
        .map(|(index, handler)| {
            shared.counters.received(*index);
            handler.clone()
        });
    let channel = || Channel {
        shared: Arc::clone(shared),
        _owner: Arc::clone(owner),
    };
    let is_call = id != 0;
    match handler {
        None if is_call => {
            return shared.reply_error_now(
                id,
                &type_name,
                RemoteError::new(ErrorKind::NoHandler, format!("no handler for {type_name}")),
            );
        }
        None => {
            bump(&shared.counters.pushes_unhandled);
            tracing::debug!(channel = %shared.config.name, type_name = type_label(&type_name), "dropping a push nobody handles");
        }
        Some(Handler::Inline(run)) if !is_call => {
            let channel = channel();
            if std::panic::catch_unwind(AssertUnwindSafe(|| run(payload, &channel))).is_err() {
                bump(&shared.counters.handler_panics);
                tracing::error!(channel = %shared.config.name, %type_name, "inline push handler panicked");
            } else {
                bump(&shared.counters.pushes_handled);
            }
        }
        Some(Handler::Push(run)) if !is_call => {
            if !admit(shared, &type_name, false) {
                return Ok(());
            }
            let channel = channel();
            let task_shared = Arc::clone(shared);
            shared.tracker.spawn(async move {
                let _slot = InFlightSlot(Arc::clone(&task_shared));
                let Ok(permit) = Arc::clone(&task_shared.running).acquire_owned().await else { return };
                let work = holding_slot(
                    Arc::clone(&task_shared.running),
                    permit,
                    AssertUnwindSafe(run(payload, channel)).catch_unwind(),
                );
                let outcome = tokio::select! {
                    outcome = work => outcome,
                    () = task_shared.cancel.cancelled() => return,
                };
                if outcome.is_err() {
                    bump(&task_shared.counters.handler_panics);
                    tracing::error!(channel = %task_shared.config.name, %type_name, "push handler panicked");
                } else {
                    bump(&task_shared.counters.pushes_handled);
                }
            });
        }
        Some(Handler::Call(run)) if is_call => {
            if !admit(shared, &type_name, true) {
                return shared.reply_error_now(
                    id,
                    &type_name,
                    RemoteError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "{} handlers in flight; `{type_name}` refused",
                            shared.config.max_handlers_in_flight
                        ),
                    ),
                );
            }
            let slot = InFlightSlot(Arc::clone(shared));
            let channel = channel();
            // Fast path: with a slot free right now, poll the handler once here. A handler that
            // completes without waiting (most do) is answered without spawning a task.
            let Ok(permit) = Arc::clone(&shared.running).try_acquire_owned() else {
                let task_shared = Arc::clone(shared);
                shared.tracker.spawn(async move {
                    let _slot = slot;
                    let Ok(permit) = Arc::clone(&task_shared.running).acquire_owned().await else {
                        return;
                    };
                    let work = holding_slot(
                        Arc::clone(&task_shared.running),
                        permit,
                        AssertUnwindSafe(run(id, payload, channel)).catch_unwind(),
                    );
                    finish_call(&task_shared, id, &type_name, work).await;
                });
                return Ok(());
            };
            let mut work: BoxFuture<CallOutcome> = Box::pin(holding_slot(
                Arc::clone(&shared.running),
                permit,
                AssertUnwindSafe(run(id, payload, channel)).catch_unwind(),
            ));
            match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(outcome) => {
                    if let Some(frame) = reply_frame(shared, id, &type_name, outcome) {
                        send_frame_from_reader(shared, frame, slot);
                    }
                }
                Poll::Pending => {
                    // The next poll (in the task) registers the task's waker; the no-op waker of
                    // the first poll is never relied on.
                    let task_shared = Arc::clone(shared);
                    shared.tracker.spawn(async move {
                        let _slot = slot;
                        finish_call(&task_shared, id, &type_name, work).await;
                    });
                }
            }
        }
        Some(_) if is_call => {
            return shared.reply_error_now(
                id,
                &type_name,
                RemoteError::bad_request(format!("`{type_name}` is a push, not a call")),
            );
        }
        Some(_) => {
            bump(&shared.counters.pushes_unhandled);
            let type_name = type_label(&type_name);
            shared.warn_about_peer(|| {
                tracing::warn!(channel = %shared.config.name, type_name, "dropping a push of a call type");
            });
        }
    }
    Ok(())
}

/// What a call handler's future yields: the reply frame or the error to send, or a panic.
type CallOutcome = std::thread::Result<Result<Bytes, RemoteError>>;

/// Runs a call handler to its end (or until the channel cancels it) and sends the reply.
async fn finish_call(
    shared: &Arc<Shared>,
    id: u64,
    type_name: &str,
    work: impl Future<Output = CallOutcome>,
) {
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = shared.cancel.cancelled() => Ok(Err(RemoteError::new(
            ErrorKind::Timeout,
            format!("`{type_name}` was cancelled: the channel closed"),
        ))),
    };
    if let Some(frame) = reply_frame(shared, id, type_name, outcome) {
        // Once the channel cancels handlers, stop waiting for room in the write queue (a peer
        // that does not read keeps it full): `close` waits for this task.
        tokio::select! {
            biased;
            _ = shared.send_frame(frame) => {}
            () = shared.cancel.cancelled() => {}
        }
    }
}

/// The response frame for a finished call handler; counts it (and a panic).
fn reply_frame(shared: &Shared, id: u64, type_name: &str, outcome: CallOutcome) -> Option<Bytes> {
    bump(&shared.counters.calls_handled);
    let error = match outcome {
        Ok(Ok(frame)) => return Some(frame),
        Ok(Err(error)) => error,
        Err(_) => {
            bump(&shared.counters.handler_panics);
            tracing::error!(channel = %shared.config.name, type_name, "call handler panicked");
            RemoteError::internal(format!("the handler for `{type_name}` panicked"))
        }
    };
    // An error too large for a frame (a message quoting the peer at length) still answers the
    // call: with a short error, and past that without echoing the type name.
    let max = shared.config.max_frame_len;
    framing::encode_error_response(id, type_name, &error.to_wire(), max)
        .or_else(|_| {
            let short = RemoteError::new(error.kind, "the error was too large to send");
            framing::encode_error_response(id, type_name, &short.to_wire(), max)
        })
        .or_else(|_| {
            let short = RemoteError::new(error.kind, "the error was too large to send");
            framing::encode_error_response(id, "", &short.to_wire(), max)
        })
        .ok()
}

/// Longest type name quoted in logs and errors, in bytes: the protocol's own names are under
/// 32; a peer's name can be as long as a frame.
pub const MAX_TYPE_LABEL_BYTES: usize = 64;

/// `type_name` cut to [`MAX_TYPE_LABEL_BYTES`] at a character boundary, for logs and errors.
fn type_label(type_name: &str) -> &str {
    if type_name.len() <= MAX_TYPE_LABEL_BYTES {
        return type_name;
    }
    let mut end = MAX_TYPE_LABEL_BYTES;
    while !type_name.is_char_boundary(end) {
        end -= 1;
    }
    &type_name[..end]
}

/// Warnings about what the peer sent logged per [`crate::log_limit::LOG_WINDOW`]; the rest
/// are counted (the channel's counters say what happened) and summarised.
pub const PEER_LOG_LINES_PER_WINDOW: u32 = 10;

/// Sends a handler's reply from the reader without making the reader wait: written now,
/// queued, or (when the queue is full) handed to a task that waits for room. That task keeps the
/// call's in-flight `slot` until the reply is queued, so a peer that calls and never reads
/// cannot pile up such tasks: past [`MAX_HANDLERS_IN_FLIGHT`] its calls are refused instead.
fn send_frame_from_reader(shared: &Arc<Shared>, frame: Bytes, slot: InFlightSlot) {
    match shared.try_write_now(&frame) {
        DirectWrite::Taken | DirectWrite::Failed => {}
        DirectWrite::Busy => {
            shared.queued_frames.fetch_add(1, Ordering::AcqRel);
            match shared.outbound.try_send(Outbound::Frame(frame)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    let task_shared = Arc::clone(shared);
                    shared.tracker.spawn(async move {
                        let _slot = slot;
                        let sent = tokio::select! {
                            biased;
                            sent = task_shared.outbound.send(item) => sent.is_ok(),
                            // `close` waits for this task; a peer that does not read keeps
                            // the queue full.
                            () = task_shared.cancel.cancelled() => false,
                        };
                        if !sent {
                            task_shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
                        }
                    });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// Takes an in-flight slot, or counts the shed frame and refuses.
fn admit(shared: &Shared, type_name: &str, is_call: bool) -> bool {
    let limit = shared.config.max_handlers_in_flight;
    let admitted = shared
        .in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            (current < limit).then_some(current + 1)
        })
        .is_ok();
    if !admitted {
        if is_call {
            bump(&shared.counters.calls_shed);
        } else {
            bump(&shared.counters.pushes_shed);
        }
        tracing::debug!(channel = %shared.config.name, type_name = type_label(type_name), limit, "shedding: too many handlers in flight");
    }
    admitted
}

/// What woke the writer: a reader's error reply (served first) or an item of the main queue.
enum Wake {
    ErrorReply(Bytes),
    Queued(Outbound),
}

async fn write_loop(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Outbound>,
    mut error_replies: mpsc::Receiver<Bytes>,
) {
    loop {
        // Error replies first: the reader parks them here because it must not wait, and their
        // queue is the one whose overflow closes the channel.
        let first = tokio::select! {
            biased;
            Some(frame) = error_replies.recv() => Wake::ErrorReply(frame),
            item = queue.recv() => match item {
                Some(item) => Wake::Queued(item),
                None => return,
            },
        };
        let mut guard = shared.writer.lock().await;
        let mut acks = Vec::new();
        let mut shutdown = None;
        let mut next = Some(first);
        while let Some(wake) = next.take() {
            match wake {
                Wake::ErrorReply(frame) => {
                    write_frame(&shared, &mut guard, &frame).await;
                    shared.error_reply_done(frame.len());
                }
                Wake::Queued(Outbound::Frame(frame)) => {
                    write_frame(&shared, &mut guard, &frame).await;
                    shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
                }
                Wake::Queued(Outbound::Flush(ack)) => acks.push(ack),
                Wake::Queued(Outbound::Shutdown(ack)) => {
                    shutdown = Some(ack);
                    break;
                }
            }
            // One relaxed load per frame keeps the common case (no error reply waiting) free.
            next = if shared.error_reply_bytes.load(Ordering::Relaxed) != 0 {
                error_replies.try_recv().ok().map(Wake::ErrorReply)
            } else {
                None
            }
            .or_else(|| queue.try_recv().ok().map(Wake::Queued));
        }
        if shutdown.is_some() {
            // The reader is stopped by now: whatever refusals it parked still go out.
            while let Ok(frame) = error_replies.try_recv() {
                write_frame(&shared, &mut guard, &frame).await;
                shared.error_reply_done(frame.len());
            }
        }
        if let Some(writer) = guard.as_mut()
            && let Err(error) = writer.flush().await
        {
            *guard = None;
            shared.fail_writes(error.to_string());
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if let Some(ack) = shutdown {
            if let Some(mut writer) = guard.take() {
                let _ = writer.shutdown().await;
            }
            let _ = ack.send(());
            return;
        }
    }
}

/// Writes one whole frame into the buffered writer; a failure stops every later write.
async fn write_frame(
    shared: &Shared,
    guard: &mut tokio::sync::MutexGuard<'_, Option<BufWriter<BoxWriter>>>,
    frame: &Bytes,
) {
    if let Some(writer) = guard.as_mut() {
        match writer.write_all(frame).await {
            Ok(()) => bump(&shared.counters.frames_out),
            Err(error) => {
                **guard = None;
                shared.fail_writes(error.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests;
