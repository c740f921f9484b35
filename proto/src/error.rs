//! [`RemoteError`]: the typed error a handler returns and a caller receives across the wire.

use std::fmt;

use crate::wire;

pub use crate::wire::ErrorKind;

/// One invalid field of a validated payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path segments from the payload root; list indices are decimal strings.
    pub path: Vec<String>,
    /// What is wrong with the field.
    pub message: String,
}

/// An error that crossed (or will cross) the wire, rebuilt with its kind and field paths so the
/// receiving side can raise the same kind of error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A human-readable sentence.
    pub message: String,
    /// For validation errors: every invalid field.
    pub field_errors: Vec<FieldError>,
}

impl RemoteError {
    /// An error of `kind` with a message and no field errors.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field_errors: Vec::new(),
        }
    }

    /// A validation error with the invalid fields.
    pub fn validation(message: impl Into<String>, field_errors: Vec<FieldError>) -> Self {
        Self {
            kind: ErrorKind::Validation,
            message: message.into(),
            field_errors,
        }
    }

    /// The handler (integration) failed.
    pub fn handler(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Handler, message)
    }

    /// The named thing does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A trust gate refused the request.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }

    /// The request could not be decoded or is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A bug on the answering side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Converts into the wire message.
    pub fn to_wire(&self) -> wire::Error {
        wire::Error {
            kind: self.kind as i32,
            message: self.message.clone(),
            field_errors: self
                .field_errors
                .iter()
                .map(|field| wire::FieldError {
                    path: field.path.clone(),
                    message: field.message.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds from the wire message. A kind this peer does not know becomes
    /// [`ErrorKind::Unspecified`], keeping the message.
    ///
    /// The peer's error is bounded on the way in: a message of at most
    /// [`MAX_ERROR_MESSAGE_BYTES`], at most [`MAX_FIELD_ERRORS`] field errors, each path at most
    /// [`MAX_FIELD_PATH_LEN`] segments of at most [`MAX_ERROR_MESSAGE_BYTES`]. An error is
    /// shown to users, logged and kept as a failure reason; a peer must not make any of those
    /// as large as a frame.
    pub fn from_wire(error: wire::Error) -> Self {
        Self {
            kind: ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Unspecified),
            message: truncated(error.message),
            field_errors: error
                .field_errors
                .into_iter()
                .take(MAX_FIELD_ERRORS)
                .map(|field| FieldError {
                    path: field
                        .path
                        .into_iter()
                        .take(MAX_FIELD_PATH_LEN)
                        .map(truncated)
                        .collect(),
                    message: truncated(field.message),
                })
                .collect(),
        }
    }
}

/// Longest error message (and path segment) kept from a peer's error, in bytes; the rest is cut
/// at a character boundary and marked with `…`.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Most field errors kept from a peer's error (a form has far fewer fields).
pub const MAX_FIELD_ERRORS: usize = 64;

/// Most segments kept of a field error's path (schemas nest a few sections deep).
pub const MAX_FIELD_PATH_LEN: usize = 16;

/// `text` cut to [`MAX_ERROR_MESSAGE_BYTES`] at a character boundary.
fn truncated(mut text: String) -> String {
    if text.len() <= MAX_ERROR_MESSAGE_BYTES {
        return text;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, kind_label(self.kind))?;
        for field in &self.field_errors {
            write!(f, "; at {}: {}", field.path.join("."), field.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

/// A short lowercase label for an error kind, used in messages and logs.
pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unspecified => "unspecified",
        ErrorKind::NoHandler => "no_handler",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::Validation => "validation",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Handler => "handler",
        ErrorKind::Refused => "refused",
        ErrorKind::Quota => "quota",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Timeout => "timeout",
        ErrorKind::IncompatibleVersion => "incompatible_version",
        ErrorKind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_error_is_bounded_on_the_way_in() {
        let huge = wire::Error {
            kind: ErrorKind::Validation as i32,
            message: "é".repeat(1 << 20),
            field_errors: (0..10_000)
                .map(|n| wire::FieldError {
                    path: vec!["p".repeat(1 << 12); 100],
                    message: n.to_string(),
                })
                .collect(),
        };
        let error = RemoteError::from_wire(huge);
        assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(error.message.ends_with('…'));
        assert_eq!(error.field_errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(error.field_errors[0].path.len(), MAX_FIELD_PATH_LEN);
        assert!(error.field_errors[0].path[0].len() <= MAX_ERROR_MESSAGE_BYTES);
        let small = RemoteError::from_wire(wire::Error {
            kind: ErrorKind::Refused as i32,
            message: "no".into(),
            field_errors: vec![],
        });
        assert_eq!(small.message, "no");
    }

    #[test]
    fn validation_error_round_trips_with_paths() {
        let error = RemoteError::validation(
            "invalid service data",
            vec![FieldError {
                path: vec!["advanced".into(), "port".into()],
                message: "not an int".into(),
            }],
        );
        let back = RemoteError::from_wire(error.to_wire());
        assert_eq!(back, error);
        assert_eq!(
            back.to_string(),
            "invalid service data (validation); at advanced.port: not an int"
        );
    }

    #[test]
    fn unknown_kind_from_a_newer_peer_keeps_the_message() {
        let wire = wire::Error {
            kind: 999,
            message: "future".into(),
            field_errors: vec![],
        };
        let back = RemoteError::from_wire(wire);
        assert_eq!(back.kind, ErrorKind::Unspecified);
        assert_eq!(back.message, "future");
    }
}
