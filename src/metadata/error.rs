//! Why a metadata operation was refused, and the HTTP status each reason maps to.

use std::fmt;

use crate::error::{ApiError, ErrorKind};

/// A refused creation or commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// The table moved on under the client (failed requirement, stale sequence number): 409.
    Conflict(String),
    /// The request can never apply (unknown id, downgrade, bad value): 400.
    Invalid(String),
    /// A commit without `assert-create` against a table that does not exist: 404.
    NoSuchTable(String),
}

impl MetadataError {
    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            MetadataError::Conflict(m) | MetadataError::Invalid(m) | MetadataError::NoSuchTable(m) => m,
        }
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MetadataError {}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> ApiError {
        let (kind, message) = match e {
            MetadataError::Conflict(m) => (ErrorKind::CommitFailed, m),
            MetadataError::Invalid(m) => (ErrorKind::BadRequest, m),
            MetadataError::NoSuchTable(m) => (ErrorKind::NoSuchTable, m),
        };
        ApiError::new(kind, message)
    }
}

/// Shorthand for `Err(MetadataError::Invalid(..))` with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => { Err($crate::metadata::MetadataError::Invalid(format!($($arg)*))) };
}

/// Shorthand for `Err(MetadataError::Conflict(..))` with a formatted message.
macro_rules! conflict {
    ($($arg:tt)*) => { Err($crate::metadata::MetadataError::Conflict(format!($($arg)*))) };
}

pub(crate) use {conflict, invalid};
