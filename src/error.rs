//! The Iceberg ErrorModel: `{"error":{"message","type","code"}}`.

use std::borrow::Cow;
use std::fmt;

/// The kinds of failure a client can see, each with its status and the
/// exception type name the Iceberg clients map to their own exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotAuthorized,
    Forbidden,
    NoSuchNamespace,
    NoSuchTable,
    NoSuchView,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    RequestTimeout,
    AlreadyExists,
    NamespaceNotEmpty,
    CommitFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnprocessableEntity,
    HeaderTooLarge,
    TooManyRequests,
    Internal,
    CommitStateUnknown,
    NotImplemented,
    ServiceUnavailable,
}

impl ErrorKind {
    /// HTTP status code.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            BadRequest => 400,
            NotAuthorized => 401,
            Forbidden => 403,
            NoSuchNamespace | NoSuchTable | NoSuchView | NotFound => 404,
            MethodNotAllowed => 405,
            NotAcceptable => 406,
            RequestTimeout => 408,
            AlreadyExists | NamespaceNotEmpty | CommitFailed => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            UnprocessableEntity => 422,
            HeaderTooLarge => 431,
            TooManyRequests => 429,
            Internal => 500,
            NotImplemented => 501,
            ServiceUnavailable => 503,
            CommitStateUnknown => 504,
        }
    }

    /// Exception type name as the REST spec and its clients use it.
    pub fn type_name(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest => "BadRequestException",
            NotAuthorized => "NotAuthorizedException",
            Forbidden => "ForbiddenException",
            NoSuchNamespace => "NoSuchNamespaceException",
            NoSuchTable => "NoSuchTableException",
            NoSuchView => "NoSuchViewException",
            NotFound => "NotFoundException",
            MethodNotAllowed => "MethodNotAllowedException",
            NotAcceptable => "NotAcceptableException",
            RequestTimeout => "RequestTimeoutException",
            AlreadyExists => "AlreadyExistsException",
            NamespaceNotEmpty => "NamespaceNotEmptyException",
            CommitFailed => "CommitFailedException",
            PayloadTooLarge => "PayloadTooLargeException",
            UnsupportedMediaType => "UnsupportedMediaTypeException",
            UnprocessableEntity => "UnprocessableEntityException",
            HeaderTooLarge => "RequestHeaderFieldsTooLargeException",
            TooManyRequests => "TooManyRequestsException",
            Internal => "InternalServerError",
            NotImplemented => "NotImplementedException",
            ServiceUnavailable => "ServiceUnavailableException",
            CommitStateUnknown => "CommitStateUnknownException",
        }
    }
}

/// A failure to report to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError { kind, message: message.into() }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// Writes the ErrorModel JSON body.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"error\":{\"message\":");
        crate::json::write_str(out, &self.message);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.kind.type_name().as_bytes());
        out.extend_from_slice(b"\",\"code\":");
        crate::json::write_u64(out, self.kind.status() as u64);
        out.extend_from_slice(b"}}");
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind.type_name(), self.kind.status(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result of a catalog operation.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_error_model_shape() {
        let mut out = Vec::new();
        ApiError::new(ErrorKind::NoSuchNamespace, "Namespace does not exist: a\"b").write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "Namespace does not exist: a\"b");
        assert_eq!(v["error"]["type"], "NoSuchNamespaceException");
        assert_eq!(v["error"]["code"], 404);
    }
}
