//! A minimal blocking MQTT 3.1.1 client written byte by byte over `std::net::TcpStream`: the
//! broker's readiness check, and a client for tests that must not depend on the MQTT client
//! under test.
//!
//! It speaks only what a test needs: CONNECT/CONNACK, PUBLISH at QoS 0 and 1 (answering the
//! broker's QoS 1 deliveries with PUBACK), SUBSCRIBE/SUBACK, PINGREQ and DISCONNECT. Every read
//! is bounded by the timeout the caller gives, so a broker that stays silent fails a test
//! instead of hanging it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest remaining length MQTT can encode (four bytes of variable-length integer).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Packet types, the high nibble of a fixed header's first byte.
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// What a client says in its CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The client identifier (must be non-empty: the session is a clean one, but some
    /// brokers refuse an empty identifier anyway).
    pub client_id: String,
    /// Keep-alive in seconds (rumqttd refuses 0).
    pub keep_alive_secs: u16,
    /// A username and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
}

impl ConnectOptions {
    /// A clean session with `client_id`, keep-alive 30 s, no credentials.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive_secs: 30,
            credentials: None,
        }
    }

    /// The same, logging in as `username` with `password`.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }
}

/// How a CONNECT went.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TCP connection (nothing listening, for one).
    #[error("cannot connect to {address}: {source}")]
    Tcp {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The broker answered CONNACK with a non-zero return code (5: not authorised).
    #[error("the broker refused the connection with CONNACK return code {0}")]
    Refused(u8),
    /// The broker closed the connection, or broke the protocol, before a CONNACK (rumqttd's
    /// answer to bad credentials).
    #[error("no CONNACK: {0}")]
    NoConnAck(#[source] ClientError),
}

impl ConnectError {
    /// Whether the broker turned the client away (a refusing CONNACK, or the connection
    /// closed instead of one), as opposed to nothing listening.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Refused(_) => true,
            Self::NoConnAck(error) => error.is_closed(),
            Self::Tcp { .. } => false,
        }
    }
}

/// A failure after the connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("nothing arrived within {0:?}")]
    TimedOut(Duration),
    /// The broker sent something this client does not expect.
    #[error("unexpected packet: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether this is the broker going away: an orderly close or a reset.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Io(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            Self::TimedOut(_) | Self::Protocol(_) => false,
        }
    }
}

/// A message the broker delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The retain flag as delivered: set for a retained message sent on subscribing.
    pub retain: bool,
    /// The QoS it was delivered at.
    pub qos: u8,
}

/// One connected MQTT 3.1.1 client.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    next_packet_id: u16,
    /// Messages that arrived while waiting for an acknowledgement, handed out first.
    pending: VecDeque<Message>,
}

impl RawClient {
    /// Connects to `address` and logs in, waiting at most `timeout` for the CONNACK.
    pub fn connect(
        address: SocketAddr,
        options: &ConnectOptions,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|source| ConnectError::Tcp { address, source })?;
        let _ = stream.set_nodelay(true);
        let mut client = Self {
            stream,
            next_packet_id: 1,
            pending: VecDeque::new(),
        };
        client
            .send(CONNECT << 4, &connect_body(options))
            .map_err(ConnectError::NoConnAck)?;
        let (header, body) = client
            .read_packet(timeout)
            .map_err(ConnectError::NoConnAck)?;
        if header >> 4 != CONNACK || body.len() != 2 {
            return Err(ConnectError::NoConnAck(ClientError::Protocol(format!(
                "packet type {} instead of CONNACK",
                header >> 4
            ))));
        }
        match body[1] {
            0 => Ok(client),
            code => Err(ConnectError::Refused(code)),
        }
    }

    /// Publishes `payload` on `topic` at QoS 0.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), ClientError> {
        let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
        put_string(&mut body, topic);
        body.extend_from_slice(payload);
        self.send(PUBLISH << 4 | u8::from(retain), &body)
    }

    /// Publishes `payload` on `topic` at QoS 1 and waits at most `timeout` for its PUBACK.
    pub fn publish_acknowledged(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let packet_id = self.packet_id();
        let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
        put_string(&mut body, topic);
        body.extend_from_slice(&packet_id.to_be_bytes());
        body.extend_from_slice(payload);
        self.send(PUBLISH << 4 | 1 << 1 | u8::from(retain), &body)?;
        self.wait_for(PUBACK, packet_id, timeout)
    }

    /// Subscribes to `filter` at `qos` (0 or 1) and waits at most `timeout` for the SUBACK;
    /// refuses a SUBACK that grants nothing (0x80).
    pub fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let packet_id = self.packet_id();
        let mut body = Vec::with_capacity(5 + filter.len());
        body.extend_from_slice(&packet_id.to_be_bytes());
        put_string(&mut body, filter);
        body.push(qos);
        self.send(SUBSCRIBE << 4 | 0b0010, &body)?;
        self.wait_for(SUBACK, packet_id, timeout)
    }

    /// The next message the broker delivers, waiting at most `timeout`; PINGRESPs are
    /// skipped, a QoS 1 delivery is acknowledged.
    pub fn next_message(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::TimedOut(timeout));
            }
            let (header, body) = self.read_packet(left)?;
            match header >> 4 {
                PUBLISH => return self.take_publish(header, &body),
                PINGRESP => continue,
                other => {
                    return Err(ClientError::Protocol(format!(
                        "packet type {other} while waiting for a message"
                    )));
                }
            }
        }
    }

    /// Waits at most `timeout` for a message; `None` when none came in that time.
    pub fn try_next_message(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        match self.next_message(timeout) {
            Ok(message) => Ok(Some(message)),
            Err(ClientError::TimedOut(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends a PINGREQ and waits at most `timeout` for the PINGRESP (messages arriving
    /// meanwhile are kept for [`Self::next_message`]): the connection is alive. (Deliveries
    /// due to this client may still follow the PINGRESP: rumqttd forwards messages, retained
    /// ones included, separately from acknowledgements.)
    pub fn ping(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.send(PINGREQ << 4, &[])?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::TimedOut(timeout));
            }
            let (header, body) = self.read_packet(left)?;
            match header >> 4 {
                PINGRESP => return Ok(()),
                PUBLISH => {
                    let message = self.take_publish(header, &body)?;
                    self.pending.push_back(message);
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "packet type {other} while waiting for a PINGRESP"
                    )));
                }
            }
        }
    }

    /// Says goodbye (DISCONNECT) and closes the connection.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        self.send(DISCONNECT << 4, &[])?;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Reads packets until the `expected` acknowledgement of `packet_id`; messages in between
    /// are acknowledged as needed and kept for [`Self::next_message`].
    fn wait_for(
        &mut self,
        expected: u8,
        packet_id: u16,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::TimedOut(timeout));
            }
            let (header, body) = self.read_packet(left)?;
            let kind = header >> 4;
            if kind == PUBLISH {
                let message = self.take_publish(header, &body)?;
                self.pending.push_back(message);
                continue;
            }
            if kind == PINGRESP {
                continue;
            }
            if kind != expected || body.len() < 2 {
                return Err(ClientError::Protocol(format!(
                    "packet type {kind} while waiting for packet type {expected}"
                )));
            }
            if u16::from_be_bytes([body[0], body[1]]) != packet_id {
                return Err(ClientError::Protocol(format!(
                    "acknowledgement of another packet id than {packet_id}"
                )));
            }
            if kind == SUBACK && body.get(2) == Some(&0x80) {
                return Err(ClientError::Protocol("the subscription was refused".into()));
            }
            return Ok(());
        }
    }

    fn take_publish(&mut self, header: u8, body: &[u8]) -> Result<Message, ClientError> {
        let qos = (header >> 1) & 0b11;
        let retain = header & 1 == 1;
        let malformed = || ClientError::Protocol("a malformed PUBLISH".into());
        let topic_length = usize::from(u16::from_be_bytes([
            *body.first().ok_or_else(malformed)?,
            *body.get(1).ok_or_else(malformed)?,
        ]));
        let topic = body.get(2..2 + topic_length).ok_or_else(malformed)?;
        let topic = String::from_utf8(topic.to_vec()).map_err(|_| malformed())?;
        let mut rest = &body[2 + topic_length..];
        if qos > 0 {
            let packet_id = rest.get(..2).ok_or_else(malformed)?;
            let mut ack = Vec::with_capacity(2);
            ack.extend_from_slice(packet_id);
            rest = &rest[2..];
            if qos == 1 {
                self.send(PUBACK << 4, &ack)?;
            } else {
                return Err(ClientError::Protocol("a QoS 2 delivery".into()));
            }
        }
        Ok(Message {
            topic,
            payload: rest.to_vec(),
            retain,
            qos,
        })
    }

    fn send(&mut self, header: u8, body: &[u8]) -> Result<(), ClientError> {
        let mut packet = Vec::with_capacity(5 + body.len());
        packet.push(header);
        put_remaining_length(&mut packet, body.len())?;
        packet.extend_from_slice(body);
        self.stream.write_all(&packet)?;
        Ok(())
    }

    /// One whole packet (its first byte and its body), waiting at most `timeout` for it.
    fn read_packet(&mut self, timeout: Duration) -> Result<(u8, Vec<u8>), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut header = [0u8; 1];
        self.read_exact_by(&mut header, deadline, timeout)?;
        let mut length = 0usize;
        for shift in 0..4 {
            let mut byte = [0u8; 1];
            self.read_exact_by(&mut byte, deadline, timeout)?;
            length |= usize::from(byte[0] & 0x7f) << (7 * shift);
            if byte[0] & 0x80 == 0 {
                let mut body = vec![0u8; length];
                self.read_exact_by(&mut body, deadline, timeout)?;
                return Ok((header[0], body));
            }
        }
        Err(ClientError::Protocol(
            "a remaining length over 4 bytes".into(),
        ))
    }

    fn read_exact_by(
        &mut self,
        mut buffer: &mut [u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        while !buffer.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::TimedOut(timeout));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(buffer) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(read) => buffer = &mut buffer[read..],
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// The variable header and payload of a CONNECT: protocol "MQTT" level 4, a clean session.
fn connect_body(options: &ConnectOptions) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    put_string(&mut body, "MQTT");
    body.push(4);
    let mut flags = 0b0000_0010;
    if options.credentials.is_some() {
        flags |= 0b1100_0000;
    }
    body.push(flags);
    body.extend_from_slice(&options.keep_alive_secs.to_be_bytes());
    put_string(&mut body, &options.client_id);
    if let Some((username, password)) = &options.credentials {
        put_string(&mut body, username);
        put_string(&mut body, password);
    }
    body
}

/// An MQTT string: its length on two bytes, then its bytes (cut at 65,535 bytes).
fn put_string(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    // Cut to fit in a u16 just above, so the conversion cannot fail.
    let length = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_remaining_length(out: &mut Vec<u8>, mut length: usize) -> Result<(), ClientError> {
    if length > MAX_REMAINING_LENGTH {
        return Err(ClientError::Protocol(format!(
            "a packet of {length} bytes is over MQTT's limit"
        )));
    }
    loop {
        // Masked to 7 bits, so the cast keeps every bit.
        let mut byte = (length & 0x7f) as u8;
        length >>= 7;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_use_mqtt_variable_length_encoding() {
        for (length, expected) in [
            (0usize, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (MAX_REMAINING_LENGTH, vec![0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, length).expect("a length MQTT can encode");
            assert_eq!(out, expected, "length {length}");
        }
        assert!(put_remaining_length(&mut Vec::new(), MAX_REMAINING_LENGTH + 1).is_err());
    }

    #[test]
    fn a_connect_with_credentials_sets_both_flags_and_carries_them_in_order() {
        let body = connect_body(&ConnectOptions::new("c").with_credentials("u", "p"));
        assert_eq!(
            body,
            [
                0,
                4,
                b'M',
                b'Q',
                b'T',
                b'T',
                4,
                0b1100_0010,
                0,
                30,
                0,
                1,
                b'c',
                0,
                1,
                b'u',
                0,
                1,
                b'p'
            ]
        );
    }
}
