//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes of an encoded
//! [`Frame`](crate::wire::Frame), at most [`MAX_FRAME_LEN`].
//!
//! Encoding writes the envelope and the message in one pass into one buffer (no intermediate
//! copy of the payload); decoding hands out zero-copy slices of the read buffer.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::wire;

/// The largest frame either side sends or accepts, in bytes (the prefix not counted). A peer
/// announcing a longer frame is broken or hostile: the channel is aborted, since the stream
/// cannot be resynchronised.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Why a frame could not be framed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than the cap was announced (reading) or produced (writing).
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced or encoded length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
}

/// Takes one whole frame off the front of `buf`, without its prefix.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more bytes and call
/// again), and an error when the announced length is over `max_len`.
pub fn decode_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(len) = peek_len(buf) else {
        return Ok(None);
    };
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    if buf.len() < LENGTH_PREFIX_LEN + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(LENGTH_PREFIX_LEN + len);
    let _prefix = frame.split_to(LENGTH_PREFIX_LEN);
    Ok(Some(frame.freeze()))
}

/// How many bytes `buf` must hold in all before [`decode_frame`] can return the next frame
/// (or the prefix length when not even the prefix is there yet).
pub fn bytes_needed(buf: &[u8]) -> usize {
    match peek_len(buf) {
        Some(len) => LENGTH_PREFIX_LEN.saturating_add(len),
        None => LENGTH_PREFIX_LEN,
    }
}

fn peek_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; LENGTH_PREFIX_LEN] = buf.get(..LENGTH_PREFIX_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}

/// Prefixes an already-encoded frame with its length. Used for raw bytes (tests, benchmarks).
pub fn prefix(payload: &[u8]) -> Result<Bytes, FrameError> {
    let len = check_len(payload.len(), MAX_FRAME_LEN)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX_LEN + payload.len());
    out.put_u32(len);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Encodes any frame, length-prefixed.
pub fn encode_frame(frame: &wire::Frame, max_len: usize) -> Result<Bytes, FrameError> {
    let len = check_len(frame.encoded_len(), max_len)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX_LEN + len as usize);
    out.put_u32(len);
    frame.encode_raw(&mut out);
    Ok(out.freeze())
}

/// Encodes a call (`id > 0`) or push (`id == 0`) frame carrying `message`, length-prefixed.
pub fn encode_request<M: Message>(
    id: u64,
    type_name: &str,
    message: &M,
    max_len: usize,
) -> Result<Bytes, FrameError> {
    let message_len = message.encoded_len();
    let body_len = key_len(3) + encoded_len_varint(message_len as u64) + message_len;
    let mut out = start_frame(id, type_name, body_len, max_len)?;
    encode_key(3, WireType::LengthDelimited, &mut out);
    encode_varint(message_len as u64, &mut out);
    message.encode_raw(&mut out);
    Ok(out.freeze())
}

/// Encodes a request frame whose payload is already encoded bytes, length-prefixed.
pub fn encode_request_bytes(
    id: u64,
    type_name: &str,
    payload: &[u8],
    max_len: usize,
) -> Result<Bytes, FrameError> {
    let body_len = key_len(3) + encoded_len_varint(payload.len() as u64) + payload.len();
    let mut out = start_frame(id, type_name, body_len, max_len)?;
    encode_key(3, WireType::LengthDelimited, &mut out);
    encode_varint(payload.len() as u64, &mut out);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Encodes the successful response to call `id`, carrying `result`, length-prefixed.
pub fn encode_response<M: Message>(
    id: u64,
    type_name: &str,
    result: &M,
    max_len: usize,
) -> Result<Bytes, FrameError> {
    let result_len = result.encoded_len();
    let response_len = key_len(1) + encoded_len_varint(result_len as u64) + result_len;
    let body_len = key_len(4) + encoded_len_varint(response_len as u64) + response_len;
    let mut out = start_frame(id, type_name, body_len, max_len)?;
    encode_key(4, WireType::LengthDelimited, &mut out);
    encode_varint(response_len as u64, &mut out);
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(result_len as u64, &mut out);
    result.encode_raw(&mut out);
    Ok(out.freeze())
}

/// Encodes the successful response to call `id` whose result is already-encoded bytes.
pub fn encode_response_bytes(
    id: u64,
    type_name: &str,
    result: &[u8],
    max_len: usize,
) -> Result<Bytes, FrameError> {
    let response_len = key_len(1) + encoded_len_varint(result.len() as u64) + result.len();
    let body_len = key_len(4) + encoded_len_varint(response_len as u64) + response_len;
    let mut out = start_frame(id, type_name, body_len, max_len)?;
    encode_key(4, WireType::LengthDelimited, &mut out);
    encode_varint(response_len as u64, &mut out);
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(result.len() as u64, &mut out);
    out.put_slice(result);
    Ok(out.freeze())
}

/// Encodes the failed response to call `id`, length-prefixed.
pub fn encode_error_response(
    id: u64,
    type_name: &str,
    error: &wire::Error,
    max_len: usize,
) -> Result<Bytes, FrameError> {
    let error_len = error.encoded_len();
    let response_len = key_len(2) + encoded_len_varint(error_len as u64) + error_len;
    let body_len = key_len(4) + encoded_len_varint(response_len as u64) + response_len;
    let mut out = start_frame(id, type_name, body_len, max_len)?;
    encode_key(4, WireType::LengthDelimited, &mut out);
    encode_varint(response_len as u64, &mut out);
    encode_key(2, WireType::LengthDelimited, &mut out);
    encode_varint(error_len as u64, &mut out);
    error.encode_raw(&mut out);
    Ok(out.freeze())
}

/// Allocates the output buffer, writes the prefix, the id and the type.
fn start_frame(
    id: u64,
    type_name: &str,
    body_len: usize,
    max_len: usize,
) -> Result<BytesMut, FrameError> {
    let id_len = if id == 0 {
        0
    } else {
        key_len(1) + encoded_len_varint(id)
    };
    let type_len = if type_name.is_empty() {
        0
    } else {
        key_len(2) + encoded_len_varint(type_name.len() as u64) + type_name.len()
    };
    let frame_len = check_len(id_len + type_len + body_len, max_len)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX_LEN + frame_len as usize);
    out.put_u32(frame_len);
    if id != 0 {
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(id, &mut out);
    }
    if !type_name.is_empty() {
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(type_name.len() as u64, &mut out);
        out.put_slice(type_name.as_bytes());
    }
    Ok(out)
}

fn check_len(len: usize, max_len: usize) -> Result<u32, FrameError> {
    let max = max_len.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: max_len })
}

#[cfg(test)]
mod tests;
