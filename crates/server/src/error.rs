//! The server's one error type, and its mapping to gRPC status codes.

use tellonce_log::LogError;
use tellonce_projection::ProjectionError;
use tonic::Status;

/// Everything that can go wrong in the server, mapped once to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request as a whole is malformed (INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// The log failed or is unavailable (UNAVAILABLE: retry; publishing is idempotent).
    #[error("{0}")]
    Log(#[from] LogError),
    /// The configuration is invalid (a start-up error, never sent to a client).
    #[error("configuration error: {0}")]
    Config(String),
    /// The thing asked for does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the state does not allow it (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// It exists already, differently (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The hub cannot answer now; retry (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The projections failed.
    #[error("{0}")]
    Projection(#[from] ProjectionError),
    /// Start-up or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        match e {
            ServerError::BadRequest(m) => Status::invalid_argument(m),
            ServerError::Log(LogError::Invalid(m)) => Status::invalid_argument(m),
            ServerError::Log(LogError::Corrupt { .. }) => Status::data_loss(e.to_string()),
            ServerError::Log(_) => Status::unavailable(format!(
                "{e}; nothing from this request was acknowledged, retry it (publishing is idempotent)"
            )),
            ServerError::Config(m) => Status::internal(m),
            ServerError::NotFound(m) => Status::not_found(m),
            ServerError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServerError::Unavailable(m) => Status::unavailable(m),
            ServerError::PermissionDenied(m) => Status::permission_denied(m),
            ServerError::AlreadyExists(m) => Status::already_exists(m),
            ServerError::Projection(ProjectionError::NotFound(m)) => Status::not_found(m),
            ServerError::Projection(ProjectionError::Invalid(m)) => Status::invalid_argument(m),
            ServerError::Projection(ProjectionError::Damaged(m)) => Status::data_loss(m),
            ServerError::Projection(p) => Status::unavailable(p.to_string()),
            ServerError::Io(io) => Status::unavailable(io.to_string()),
        }
    }
}
