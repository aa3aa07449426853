//! One connection: read requests (pipelined or not), answer, repeat.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::framing::{decode_chunked, framing, BodyFraming, FramingError};
use super::transport::Transport;
use super::{reason, Method, Request, Response, Service};
use crate::error::{ApiError, ErrorKind};
use crate::json::write_u64;
use crate::pool::{BufPool, FutureSlots, PooledBuf};

/// Most headers a request may carry; more is a 431.
const MAX_HEADERS: usize = 64;
/// Pipelined responses are flushed once this many bytes are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Largest request line plus headers (431 beyond).
    pub max_head: usize,
    /// Largest request body (413 beyond).
    pub max_body: usize,
    /// A request must arrive whole within this time of its first byte (408).
    pub request_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout: Duration,
}

/// What a shard's connections are served with (one reference per idle
/// connection's task, rather than one per field).
pub struct Serving<S> {
    pub svc: S,
    pub bufs: Rc<BufPool>,
    /// Where requests in progress keep their state.
    pub slots: FutureSlots,
    pub limits: ConnLimits,
}

/// What the shard and a connection tell each other about idleness and
/// shutdown. All zeroes is the default state, so a table of them can come
/// from zeroed memory that is only touched where it is used.
#[derive(Default, Debug)]
pub struct ConnState {
    /// Since when (ns after [`epoch`], plus one) the connection waits for a
    /// new request (nothing half-received); 0 while a request is in hand.
    /// The wait has no timer of its own (a timer per idle connection is
    /// memory): the owner of the state ends waits past
    /// `ConnLimits::idle_timeout` (see [`ConnState::idle_expired`]) by
    /// shutting the socket's read side.
    idle_since: Cell<u64>,
    /// The shard is shutting down: finish the request in hand, then close.
    pub closing: Cell<bool>,
    /// For the owner's bookkeeping: a live connection uses this state (the
    /// shard keeps its states in a table by descriptor).
    pub open: Cell<bool>,
}

/// The reference point of idle times.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ConnState {
    /// The connection waits for a new request from `now` on.
    pub fn set_idle(&self, now: Instant) {
        self.idle_since.set(now.saturating_duration_since(epoch()).as_nanos() as u64 + 1);
    }

    /// The connection has a request in hand (or its idle wait was ended).
    pub fn set_busy(&self) {
        self.idle_since.set(0);
    }

    /// The connection waits for a new request.
    pub fn is_idle(&self) -> bool {
        self.idle_since.get() != 0
    }

    /// It has waited longer than `limits.idle_timeout` at `now`.
    pub fn idle_expired(&self, limits: &ConnLimits, now: Instant) -> bool {
        let waited = now.saturating_duration_since(epoch()).as_nanos() as u64 + 1;
        self.is_idle() && waited.saturating_sub(self.idle_since.get()) >= limits.idle_timeout.as_nanos() as u64
    }
}

/// What one parse of the read buffer found.
enum Step {
    /// A request was answered; it took this many bytes of the buffer. A
    /// body over a slice is not copied after its head: it is sent from its
    /// own buffer.
    Answered { consumed: usize, close: bool, body: Option<PooledBuf> },
    /// The request is incomplete; `send_continue` if the client waits for
    /// `100 Continue` before sending the body.
    NeedMore { send_continue: bool },
    /// Answer with this error and close the connection.
    Fail(ApiError),
}

/// Serves requests on `stream` until the client closes, an I/O error occurs,
/// or a response requires closing.
///
/// An idle connection holds no buffer and no request state: it waits for
/// readability (glommio polls the socket, `POLL_ADD`, with no receive buffer
/// in flight) and reads one byte onto this future; only then does it take a
/// slot from `slots` for the request state and pooled buffers for the bytes.
/// So 10,000 idle connections cost little more than their tasks, and one
/// large response does not stay with its connection.
pub async fn serve_connection<T, S>(stream: &mut T, with: &Serving<S>, state: &ConnState)
where
    T: Transport,
    S: Service,
{
    let Serving { svc, bufs, slots, limits } = with;
    let mut first = [0u8; 1];
    loop {
        if state.closing.get() {
            return;
        }
        stream.clear_read_limit();
        state.set_idle(Instant::now());
        // A plain read, not `read_some`: its future is smaller, and a one-byte
        // read completes "full", so glommio arms no extra readiness poll.
        let read = stream.read(&mut first).await;
        state.set_busy();
        if !matches!(read, Ok(1)) {
            return;
        }
        if !slots.run(serve_requests(stream, svc, bufs, limits, first[0])).await {
            return;
        }
    }
}

/// Serves the requests that begin with byte `first` (and any pipelined
/// after them) until the connection is idle again (true) or must close
/// (false). Its buffers go back to the pool when it returns: measured,
/// keeping them through a short pause raised no hit rate and cost a timer
/// per idle spell.
async fn serve_requests<T, S>(stream: &mut T, svc: &S, bufs: &Rc<BufPool>, limits: &ConnLimits, first: u8) -> bool
where
    T: Transport,
    S: Service,
{
    // Writes before the first wait for more of a request are bounded too.
    stream.set_wait_limit(limits.idle_timeout);
    // Bytes [start, filled) of `input` are received and not yet answered.
    let mut input = bufs.get();
    let capacity = input.capacity();
    input.resize(capacity.max(1), 0);
    input[0] = first;
    let mut filled = 1;
    let mut start = 0;
    let mut out: Option<PooledBuf> = None;
    let mut chunked_body: Option<PooledBuf> = None;
    let mut continue_sent = false;
    // When the first byte of the request being received arrived.
    let mut request_started = Some(Instant::now());

    loop {
        let step = if start < filled {
            let parsed = parse_and_answer(&input[start..filled], svc, bufs, limits, &mut out, &mut chunked_body);
            crate::alloc::in_request(parsed).await
        } else {
            Step::NeedMore { send_continue: false }
        };
        match step {
            Step::Answered { consumed, close, body } => {
                let out = out.as_mut().expect("an answer was written");
                start += consumed;
                continue_sent = false;
                request_started = (start < filled).then(Instant::now);
                if let Some(body) = body {
                    // After the answers before it and its own head.
                    if send_all(stream, out).await.is_err() || send_all(stream, &body).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                if close {
                    let _ = send_all(stream, out).await;
                    return false;
                }
                if out.len() >= FLUSH_AT {
                    if send_all(stream, out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
            }
            Step::Fail(err) => {
                send_error(stream, &mut out, bufs, &err).await;
                return false;
            }
            Step::NeedMore { send_continue } => {
                // Everything parsed so far is answered: send it before waiting.
                if send_continue && !continue_sent {
                    out.get_or_insert_with(|| bufs.get()).extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    continue_sent = true;
                }
                if let Some(pending) = out.as_mut().filter(|o| !o.is_empty()) {
                    if send_all(stream, pending).await.is_err() {
                        return false;
                    }
                }
                // Back to the pool while the next request is awaited or served:
                // a request waiting for durability then holds no output buffer.
                out = None;
                let Some(started) = request_started else {
                    // Idle: the caller waits for the next request without buffers.
                    return true;
                };
                let wait = match limits.request_timeout.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => {
                        send_error(stream, &mut out, bufs, &too_slow()).await;
                        return false;
                    }
                };
                stream.set_wait_limit(wait);
                if !make_room(&mut input, &mut start, &mut filled, limits) {
                    let too_large = ApiError::new(ErrorKind::PayloadTooLarge, "request too large");
                    send_error(stream, &mut out, bufs, &too_large).await;
                    return false;
                }
                match stream.read_some(&mut input[filled..]).await {
                    Ok(0) => return false,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        send_error(stream, &mut out, bufs, &too_slow()).await;
                        return false;
                    }
                    Err(_) => return false,
                }
            }
        }
    }
}

/// Makes room after `filled` in `buf` for more of the request being
/// received: moves it to the front, or grows the buffer within the limits.
/// False when the request is larger than the limits allow.
fn make_room(buf: &mut PooledBuf, start: &mut usize, filled: &mut usize, limits: &ConnLimits) -> bool {
    if *start > 0 && *filled == buf.len() {
        buf.copy_within(*start..*filled, 0);
        (*start, *filled) = (0, *filled - *start);
    }
    if *filled == buf.len() {
        let most = limits.max_head + limits.max_body + 64;
        if buf.len() >= most {
            return false;
        }
        let grown = (buf.len() * 2).min(most);
        buf.resize(grown, 0);
    }
    true
}

/// Parses one request from `buf` and, if it is complete, answers it into
/// `out` (taken from `bufs` once the answer is ready, if not yet there).
async fn parse_and_answer<S: Service>(
    buf: &[u8],
    svc: &S,
    bufs: &Rc<BufPool>,
    limits: &ConnLimits,
    out: &mut Option<PooledBuf>,
    chunked_body: &mut Option<PooledBuf>,
) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return Step::Fail(ApiError::new(ErrorKind::HeaderTooLarge, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Step::NeedMore { send_continue: false },
        Err(httparse::Error::TooManyHeaders) => {
            return Step::Fail(ApiError::new(ErrorKind::HeaderTooLarge, "too many request headers"))
        }
        Err(e) => return Step::Fail(ApiError::bad_request(format!("malformed request: {e}"))),
    };
    if head_len > limits.max_head {
        return Step::Fail(ApiError::new(ErrorKind::HeaderTooLarge, "request head too large"));
    }
    let version = parsed.version.unwrap_or(1);
    let path_and_query = parsed.path.unwrap_or("/");
    let method = Method::parse(parsed.method.unwrap_or(""));
    let headers: &[httparse::Header<'_>] = parsed.headers;

    let framing = match framing(headers, limits.max_body) {
        Ok(f) => f,
        Err(FramingError::TooLarge) => {
            return Step::Fail(ApiError::new(ErrorKind::PayloadTooLarge, "request body too large"))
        }
        Err(FramingError::Malformed(why)) => return Step::Fail(ApiError::bad_request(why)),
    };
    let rest = &buf[head_len..];
    let expects_continue = header_has(headers, "expect", "100-continue");
    let (body, body_len): (&[u8], usize) = match framing {
        BodyFraming::Length(n) if rest.len() >= n => (&rest[..n], n),
        BodyFraming::Length(_) => return Step::NeedMore { send_continue: expects_continue },
        BodyFraming::Chunked => {
            let decoded = chunked_body.get_or_insert_with(|| bufs.get());
            match decode_chunked(rest, decoded, limits.max_body) {
                Ok(Some(wire)) => (&decoded[..], wire),
                Ok(None) => return Step::NeedMore { send_continue: expects_continue },
                Err(FramingError::TooLarge) => {
                    return Step::Fail(ApiError::new(ErrorKind::PayloadTooLarge, "request body too large"))
                }
                Err(FramingError::Malformed(why)) => return Step::Fail(ApiError::bad_request(why)),
            }
        }
    };

    let close = if version == 0 {
        !header_has(headers, "connection", "keep-alive")
    } else {
        header_has(headers, "connection", "close")
    };
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let req = Request { method, path, query, headers, body };
    // Its body is taken only when the service writes it.
    let mut resp = Response::new(bufs.get_on_write());
    svc.call(&req, &mut resp).await;
    let close = close || resp.close;
    // Taken only now: no output buffer is held while the service runs.
    let out = out.get_or_insert_with(|| bufs.get());
    let mut body = None;
    if write_head(out, &resp, method == Method::Head, close) {
        if resp.body.len() > crate::bulk::SLICE {
            // Sent from where it is: copying megabytes into `out` would cost
            // the shard a copy, and `out` a buffer of that size.
            body = Some(resp.body);
        } else {
            out.extend_from_slice(&resp.body);
        }
    }
    *chunked_body = None;
    Step::Answered { consumed: head_len + body_len, close, body }
}

fn header_has(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| std::str::from_utf8(h.value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

/// Writes the status line and headers of `resp`; true when its body follows.
fn write_head(out: &mut Vec<u8>, resp: &Response, head_only: bool, close: bool) -> bool {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, resp.status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = resp.status == 204 || resp.status == 304;
    if !bodiless {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(resp.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        write_u64(out, resp.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(resp.extra_headers());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    !bodiless && !head_only
}

/// Sends `bytes`, a slice at a time with a pause between slices (`bulk`):
/// each send of a big answer copies at most a slice into the socket, and the
/// shard serves its other connections in between.
async fn send_all<T: Transport>(stream: &mut T, bytes: &[u8]) -> std::io::Result<()> {
    crate::bulk::for_each_slice(bytes, async |chunk: &[u8]| stream.write_all(chunk).await).await
}

/// The answer to a request that did not arrive whole in time.
fn too_slow() -> ApiError {
    ApiError::new(ErrorKind::RequestTimeout, "request not received in time")
}

/// Answers with `err` (after whatever is already in `out`) before the
/// connection closes.
async fn send_error<T: Transport>(stream: &mut T, out: &mut Option<PooledBuf>, bufs: &Rc<BufPool>, err: &ApiError) {
    let out = out.get_or_insert_with(|| bufs.get());
    write_error(out, err);
    let _ = stream.write_all(out).await;
}

fn write_error(out: &mut Vec<u8>, err: &ApiError) {
    let mut resp = Response::new(PooledBuf::unpooled(256));
    resp.error(err);
    write_head(out, &resp, false, true);
    out.extend_from_slice(&resp.body);
}
