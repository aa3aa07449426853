use crate::error::ApiError;
use crate::pool::PooledBuf;

/// What a service answers. The body is a pooled buffer; extra headers are
/// written into a small inline block so no response needs a heap allocation.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: PooledBuf,
    extra: [u8; 512],
    extra_len: usize,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn new(body: PooledBuf) -> Response {
        Response { status: 200, content_type: "application/json", body, extra: [0; 512], extra_len: 0, close: false }
    }

    /// Adds a header line. Header values are short (ETags, Allow lists);
    /// one that does not fit is a programming error.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        let line = name.len() + 2 + value.len() + 2;
        assert!(self.extra_len + line <= self.extra.len(), "response headers exceed the inline block");
        let mut at = self.extra_len;
        for part in [name.as_bytes(), b": ", value, b"\r\n"] {
            self.extra[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.extra_len = at;
    }

    /// Extra header lines written so far.
    pub fn extra_headers(&self) -> &[u8] {
        &self.extra[..self.extra_len]
    }

    /// Replaces the response with an ErrorModel body.
    pub fn error(&mut self, err: &ApiError) {
        self.status = err.kind.status();
        self.content_type = "application/json";
        self.body.clear();
        err.write_json(&mut self.body);
    }

    /// An empty response with `status`.
    pub fn empty(&mut self, status: u16) {
        self.status = status;
        self.body.clear();
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        419 => "Authentication Timeout",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
