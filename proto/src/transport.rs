//! Byte streams a [`Channel`](crate::Channel) runs over: stdio pipes and unix sockets, the
//! `--url` that names them, and the private listening socket the host hands a sandbox.
//!
//! Only `stdio://` and `unix:///absolute/path` exist; any other scheme (`ws://`, `tcp://`, ...)
//! is refused with a clear "not supported" error rather than guessed at.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

/// The longest unix socket path the kernel accepts: `sun_path` is 108 bytes, one of them the
/// terminating NUL.
pub const MAX_UNIX_PATH_LEN: usize = 107;

/// The file name of the socket inside a private directory; short, to stay far below
/// [`MAX_UNIX_PATH_LEN`].
const PRIVATE_SOCKET_NAME: &str = "ch.sock";

/// The reading half of a transport.
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a transport.
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a transport could not be named, opened or bound.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL's scheme is not one this build speaks.
    #[error(
        "transport scheme `{scheme}://` is not supported; use stdio:// or unix:///absolute/path"
    )]
    Unsupported {
        /// The scheme found.
        scheme: String,
    },
    /// The URL is not of the form `scheme://rest`.
    #[error("malformed transport URL {url:?}; expected stdio:// or unix:///absolute/path")]
    Malformed {
        /// The text given.
        url: String,
    },
    /// A unix URL without an absolute path.
    #[error(
        "unix transport URL {url:?} needs an absolute path, such as unix:///run/sandbox/ch.sock"
    )]
    RelativeUnixPath {
        /// The text given.
        url: String,
    },
    /// The socket path does not fit in `sun_path`.
    #[error("unix socket path {path:?} is {len} bytes; the limit is {max} (sun_path)")]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_UNIX_PATH_LEN`].
        max: usize,
    },
    /// The operating system refused.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

/// A parsed `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportUrl {
    /// Frames over the process's stdin (in) and stdout (out).
    Stdio,
    /// Frames over a unix socket the host listens on.
    Unix(PathBuf),
}

impl TransportUrl {
    /// Parses `stdio://` (also the empty string) or `unix:///absolute/path`.
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(Self::Stdio);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(TransportError::Malformed {
                url: url.to_owned(),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "stdio" if rest.is_empty() => Ok(Self::Stdio),
            "stdio" => Err(TransportError::Malformed {
                url: url.to_owned(),
            }),
            "unix" => {
                let path = Path::new(rest);
                if !path.is_absolute() {
                    return Err(TransportError::RelativeUnixPath {
                        url: url.to_owned(),
                    });
                }
                check_socket_path(path)?;
                Ok(Self::Unix(path.to_owned()))
            }
            "" => Err(TransportError::Malformed {
                url: url.to_owned(),
            }),
            other => Err(TransportError::Unsupported {
                scheme: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio => f.write_str("stdio://"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

fn check_socket_path(path: &Path) -> Result<(), TransportError> {
    let len = path.as_os_str().len();
    if len > MAX_UNIX_PATH_LEN {
        return Err(TransportError::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_UNIX_PATH_LEN,
        });
    }
    Ok(())
}

/// A bidirectional byte stream: the reading half, the writing half, and what it is (for logs).
pub struct Transport {
    reader: BoxReader,
    writer: BoxWriter,
    description: String,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport over any reader and writer.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
        description: impl Into<String>,
    ) -> Self {
        Self {
            reader: Box::new(reader),
            writer: Box::new(writer),
            description: description.into(),
        }
    }

    /// A transport over a connected unix socket.
    ///
    /// The reading half watches only for readability and the writing half registers for
    /// writability only while the socket is full: a unix socket signals write space every time
    /// the peer reads, and an always-registered writer would wake this process for nothing on
    /// every round trip.
    pub fn unix(
        stream: UnixStream,
        description: impl Into<String>,
    ) -> Result<Self, TransportError> {
        let stream = stream
            .into_std()
            .map_err(|source| TransportError::io("cannot take the socket", source))?;
        Self::unix_std(stream, description)
    }

    fn unix_std(
        stream: StdUnixStream,
        description: impl Into<String>,
    ) -> Result<Self, TransportError> {
        stream
            .set_nonblocking(true)
            .map_err(|source| TransportError::io("cannot make socket non-blocking", source))?;
        let write_side = stream
            .try_clone()
            .map_err(|source| TransportError::io("cannot duplicate socket", source))?;
        let reader = SocketReader {
            socket: register_socket(stream, Interest::READABLE)
                .map_err(|source| TransportError::io("cannot register socket", source))?,
        };
        let writer = SocketWriter {
            socket: write_side,
            waiter: None,
            blocked_last_time: false,
        };
        Ok(Self::new(reader, writer, description))
    }

    /// Connects to the unix socket at `path` (the sandbox side of `unix://`).
    pub async fn connect_unix(path: &Path) -> Result<Self, TransportError> {
        check_socket_path(path)?;
        let stream = UnixStream::connect(path).await.map_err(|source| {
            TransportError::io(format!("cannot connect to {}", path.display()), source)
        })?;
        Self::unix(stream, format!("unix://{}", path.display()))
    }

    /// Opens the transport a sandbox was told to use: its own stdio, or the host's socket.
    pub async fn open(url: &TransportUrl) -> Result<Self, TransportError> {
        match url {
            TransportUrl::Stdio => Self::stdio(),
            TransportUrl::Unix(path) => Self::connect_unix(path).await,
        }
    }

    /// Frames in on this process's stdin, out on its stdout (duplicates of fds 0 and 1).
    pub fn stdio() -> Result<Self, TransportError> {
        let input = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| TransportError::io("cannot duplicate stdin", source))?;
        let output = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| TransportError::io("cannot duplicate stdout", source))?;
        Self::from_fds(input, output, "stdio://")
    }

    /// Frames in on `input`, out on `output`: pipes and sockets are driven by the reactor
    /// (non-blocking); anything else (a file, a terminal) through blocking reads on tokio's
    /// blocking pool.
    pub fn from_fds(
        input: OwnedFd,
        output: OwnedFd,
        description: impl Into<String>,
    ) -> Result<Self, TransportError> {
        let reader: BoxReader = match kind_of(&input)? {
            FdKind::Pipe => Box::new(
                tokio::net::unix::pipe::Receiver::from_owned_fd(input)
                    .map_err(|source| TransportError::io("cannot use the input pipe", source))?,
            ),
            FdKind::Socket => Box::new(SocketReader {
                socket: register_socket(nonblocking_socket(input)?, Interest::READABLE)
                    .map_err(|source| TransportError::io("cannot register socket", source))?,
            }),
            FdKind::Other => Box::new(tokio::fs::File::from_std(File::from(input))),
        };
        let writer: BoxWriter = match kind_of(&output)? {
            FdKind::Pipe => Box::new(
                tokio::net::unix::pipe::Sender::from_owned_fd(output)
                    .map_err(|source| TransportError::io("cannot use the output pipe", source))?,
            ),
            FdKind::Socket => Box::new(SocketWriter {
                socket: nonblocking_socket(output)?,
                waiter: None,
                blocked_last_time: false,
            }),
            FdKind::Other => Box::new(tokio::fs::File::from_std(File::from(output))),
        };
        Ok(Self {
            reader,
            writer,
            description: description.into(),
        })
    }

    /// What this transport is, for logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Splits into the reading and writing halves.
    pub fn into_parts(self) -> (BoxReader, BoxWriter, String) {
        (self.reader, self.writer, self.description)
    }
}

enum FdKind {
    Pipe,
    Socket,
    Other,
}

fn kind_of(fd: &OwnedFd) -> Result<FdKind, TransportError> {
    let file = File::from(
        fd.try_clone()
            .map_err(|source| TransportError::io("cannot duplicate fd", source))?,
    );
    let file_type = file
        .metadata()
        .map_err(|source| TransportError::io("cannot inspect fd", source))?
        .file_type();
    Ok(if file_type.is_fifo() {
        FdKind::Pipe
    } else if file_type.is_socket() {
        FdKind::Socket
    } else {
        FdKind::Other
    })
}

fn nonblocking_socket(fd: OwnedFd) -> Result<StdUnixStream, TransportError> {
    let stream = StdUnixStream::from(fd);
    stream
        .set_nonblocking(true)
        .map_err(|source| TransportError::io("cannot make socket non-blocking", source))?;
    Ok(stream)
}

/// Registers a socket with the reactor for the given readiness only.
#[allow(unsafe_code)]
fn register_socket(
    socket: StdUnixStream,
    interest: Interest,
) -> io::Result<AsyncFd<StdUnixStream>> {
    // SAFETY: a std `UnixStream` owns its fd: it is valid and open, it stays open and refers to
    // the same socket until the stream is dropped, which happens only when the `AsyncFd` drops
    // it, and `as_raw_fd` always returns that same fd.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// The reading half of a unix socket, registered for readability only.
struct SocketReader {
    socket: AsyncFd<StdUnixStream>,
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(read)) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing half of a unix socket: writes go straight to the socket, and a readiness
/// registration exists only while the socket is full (see [`Transport::unix`]).
struct SocketWriter {
    socket: StdUnixStream,
    /// A duplicate of the socket registered for writability, present only under backpressure.
    waiter: Option<AsyncFd<StdUnixStream>>,
    /// Whether the previous write had to wait; the waiter is dropped after two quiet writes in a
    /// row, so a sustained flood does not re-register on every frame.
    blocked_last_time: bool,
}

impl AsyncWrite for SocketWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            match (&this.socket).write(buf) {
                Ok(written) => {
                    if !this.blocked_last_time {
                        this.waiter = None;
                    }
                    this.blocked_last_time = false;
                    return Poll::Ready(Ok(written));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    this.blocked_last_time = true;
                    if this.waiter.is_none() {
                        let duplicate = this.socket.try_clone()?;
                        this.waiter = Some(register_socket(duplicate, Interest::WRITABLE)?);
                    }
                    let Some(waiter) = this.waiter.as_ref() else {
                        continue;
                    };
                    let mut guard = ready!(waiter.poll_write_ready(cx))?;
                    guard.clear_ready();
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.socket.shutdown(std::net::Shutdown::Write) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A listening unix socket in a private (0700) directory, removed with its directory on drop.
///
/// The host creates one per sandbox start, passes [`UnixSocketListener::url`] to the child, and
/// accepts exactly one connection.
#[derive(Debug)]
pub struct UnixSocketListener {
    /// The bound socket.
    listener: UnixListener,
    /// The socket file, removed on drop.
    path: PathBuf,
    /// The private directory holding it, removed on drop.
    dir: Option<tempfile::TempDir>,
}

impl UnixSocketListener {
    /// Binds a socket in a fresh private directory under the system temp dir (or `/tmp` when
    /// that path would be too long for `sun_path`).
    pub fn bind_private() -> Result<Self, TransportError> {
        let mut bases = vec![std::env::temp_dir()];
        if bases[0] != Path::new("/tmp") {
            bases.push(PathBuf::from("/tmp"));
        }
        let mut last_error = None;
        for base in bases {
            // "sbx-" + 6 random characters + "/" + the socket name.
            let projected = base.as_os_str().len() + 1 + 10 + 1 + PRIVATE_SOCKET_NAME.len();
            if projected > MAX_UNIX_PATH_LEN {
                last_error = Some(TransportError::PathTooLong {
                    path: base.join("sbx-XXXXXX").join(PRIVATE_SOCKET_NAME),
                    len: projected,
                    max: MAX_UNIX_PATH_LEN,
                });
                continue;
            }
            let dir = tempfile::Builder::new()
                .prefix("sbx-")
                .rand_bytes(6)
                .tempdir_in(&base)
                .map_err(|source| {
                    TransportError::io(
                        format!("cannot create a private dir in {}", base.display()),
                        source,
                    )
                })?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|source| TransportError::io("cannot restrict the private dir", source))?;
            let path = dir.path().join(PRIVATE_SOCKET_NAME);
            let listener = Self::bind_at(&path)?;
            return Ok(Self {
                listener,
                path,
                dir: Some(dir),
            });
        }
        Err(last_error
            .unwrap_or_else(|| TransportError::io("no temp dir", io::ErrorKind::NotFound.into())))
    }

    /// Binds a socket at an explicit path (refused if the path is too long or exists).
    pub fn bind(path: &Path) -> Result<Self, TransportError> {
        let listener = Self::bind_at(path)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            dir: None,
        })
    }

    fn bind_at(path: &Path) -> Result<UnixListener, TransportError> {
        check_socket_path(path)?;
        UnixListener::bind(path)
            .map_err(|source| TransportError::io(format!("cannot bind {}", path.display()), source))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The URL to pass to the sandbox (`unix:///...`).
    pub fn url(&self) -> TransportUrl {
        TransportUrl::Unix(self.path.clone())
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> Result<Transport, TransportError> {
        let (stream, _) = self.listener.accept().await.map_err(|source| {
            TransportError::io(format!("cannot accept on {}", self.path.display()), source)
        })?;
        Transport::unix(stream, format!("unix://{}", self.path.display()))
    }
}

impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        // The directory (when private) is removed by its TempDir; the file is ours to remove.
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove unix socket");
        }
        drop(self.dir.take());
    }
}

#[cfg(test)]
mod tests;
