//! Validation, service and flow errors as they cross the wire: each keeps its kind, so the
//! receiving side raises the same kind of error, and validation errors keep their field paths.

use homecore::schema::PathSegment;
use homecore::{FlowError, SchemaError, ServiceError, ValidationErrors};
use sandbox_proto::RemoteError;
use sandbox_proto::error::{ErrorKind, FieldError};

fn path_to_wire(path: &[PathSegment]) -> Vec<String> {
    path.iter()
        .map(|segment| match segment {
            PathSegment::Key(key) => key.clone(),
            PathSegment::Index(index) => index.to_string(),
        })
        .collect()
}

fn path_from_wire(path: &[String]) -> Vec<PathSegment> {
    path.iter()
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) => PathSegment::Index(index),
            Err(_) => PathSegment::Key(segment.clone()),
        })
        .collect()
}

/// Validation errors as wire field errors.
pub fn validation_to_wire(errors: &ValidationErrors) -> Vec<FieldError> {
    errors
        .errors
        .iter()
        .map(|error| FieldError {
            path: path_to_wire(&error.path),
            message: error.message.clone(),
        })
        .collect()
}

/// Wire field errors as validation errors.
pub fn validation_from_wire(fields: &[FieldError]) -> ValidationErrors {
    ValidationErrors {
        errors: fields
            .iter()
            .map(|field| SchemaError {
                path: path_from_wire(&field.path),
                message: field.message.clone(),
            })
            .collect(),
    }
}

/// A service error as it crosses the wire.
pub fn service_error_to_remote(error: &ServiceError) -> RemoteError {
    match error {
        ServiceError::NotFound { .. } => RemoteError::not_found(error.to_string()),
        ServiceError::Validation(errors) => {
            RemoteError::validation(error.to_string(), validation_to_wire(errors))
        }
        ServiceError::ResponseNotSupported { .. }
        | ServiceError::ResponseRequired { .. }
        | ServiceError::InvalidName(_) => RemoteError::bad_request(error.to_string()),
        ServiceError::InvalidResponse { .. } | ServiceError::InvalidSchema(_) => {
            RemoteError::internal(error.to_string())
        }
        ServiceError::Handler(message) => RemoteError::handler(message.clone()),
    }
}

/// A remote error rebuilt as the same kind of service error.
pub fn service_error_from_remote(domain: &str, service: &str, error: &RemoteError) -> ServiceError {
    match error.kind {
        ErrorKind::NotFound => ServiceError::NotFound {
            domain: domain.to_owned(),
            service: service.to_owned(),
        },
        ErrorKind::Validation => {
            ServiceError::Validation(validation_from_wire(&error.field_errors))
        }
        _ => ServiceError::Handler(error.message.clone()),
    }
}

/// A flow error as it crosses the wire.
pub fn flow_error_to_remote(error: &FlowError) -> RemoteError {
    match error {
        FlowError::UnknownHandler(_)
        | FlowError::UnknownFlow(_)
        | FlowError::UnknownStep { .. } => RemoteError::not_found(error.to_string()),
        FlowError::InvalidData(errors) => {
            RemoteError::validation(error.to_string(), validation_to_wire(errors))
        }
        FlowError::Handler(message) => RemoteError::handler(message.clone()),
        FlowError::TooManyFlows => RemoteError::new(ErrorKind::Overloaded, error.to_string()),
        FlowError::Abort { .. } | FlowError::InvalidTransition(_) | FlowError::NotAllowed(_) => {
            RemoteError::bad_request(error.to_string())
        }
    }
}

/// A remote error rebuilt as the same kind of flow error.
pub fn flow_error_from_remote(error: &RemoteError) -> FlowError {
    match error.kind {
        ErrorKind::Validation => FlowError::InvalidData(validation_from_wire(&error.field_errors)),
        ErrorKind::NotFound => FlowError::UnknownFlow(error.message.clone()),
        ErrorKind::Overloaded => FlowError::TooManyFlows,
        ErrorKind::BadRequest | ErrorKind::Refused => FlowError::NotAllowed(error.message.clone()),
        _ => FlowError::Handler(error.message.clone()),
    }
}
