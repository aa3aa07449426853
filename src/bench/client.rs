//! One keep-alive HTTP/1.1 connection of the load generator, on a glommio
//! shard. It owns a reusable request buffer, a scratch buffer for request
//! bodies and a response buffer, so a steady-state request allocates nothing.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::http1::{self, Response};

/// Responses start in a buffer this big; it doubles for larger ones (wide
/// table metadata) and keeps its size afterwards.
const INITIAL_RESPONSE_BUF: usize = 8 * 1024;
/// A response larger than this is treated as a protocol error rather than
/// growing without bound.
const MAX_RESPONSE: usize = 64 << 20;

/// Why a round trip failed; each kind is counted separately in the report.
#[derive(Debug)]
pub enum ClientError {
    Connect(io::Error),
    Io(io::Error),
    Timeout,
    Protocol(io::Error),
}

impl ClientError {
    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => ClientError::Timeout,
            io::ErrorKind::InvalidData => ClientError::Protocol(e),
            _ => ClientError::Io(e),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Io(e) => write!(f, "i/o: {e}"),
            ClientError::Timeout => f.write_str("timeout"),
            ClientError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

pub struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// The open socket's descriptor (-1 when closed), shared with the shard
    /// so it can count the connections it holds (see `held`).
    fd: Rc<Cell<RawFd>>,
    /// The next request, written by the caller.
    pub req: Vec<u8>,
    /// Room to build a request body before framing it into `req`.
    pub scratch: Vec<u8>,
    /// Read buffer; its whole length is usable, `filled` bytes are valid.
    buf: Vec<u8>,
    filled: usize,
    /// Bytes of the previous response, dropped at the next round trip.
    consumed: usize,
}

impl Conn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Conn {
            addr,
            timeout,
            stream: None,
            fd: Rc::new(Cell::new(-1)),
            req: Vec::with_capacity(1024),
            scratch: Vec::new(),
            buf: vec![0; INITIAL_RESPONSE_BUF],
            filled: 0,
            consumed: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Tracks this connection's descriptor (-1 while it is closed).
    pub fn fd(&self) -> Rc<Cell<RawFd>> {
        self.fd.clone()
    }

    fn disconnect(&mut self) {
        self.stream = None;
        self.fd.set(-1);
    }

    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.disconnect();
        self.filled = 0;
        self.consumed = 0;
        let stream =
            TcpStream::connect_timeout(self.addr, self.timeout).await.map_err(|e| ClientError::Connect(e.into()))?;
        let setup = || -> io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            Ok(())
        };
        setup().map_err(ClientError::Connect)?;
        self.fd.set(stream.as_raw_fd());
        self.stream = Some(stream);
        Ok(())
    }

    /// Sends `req` and reads one response, reconnecting first if the last
    /// exchange left the connection closed.
    pub async fn roundtrip(&mut self, head_request: bool) -> Result<Response, ClientError> {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.stream.is_none() {
            self.connect().await?;
        }
        let result = self.exchange(head_request).await;
        match &result {
            Ok(r) if !r.close => {}
            // After an error or `Connection: close` the stream is unusable.
            _ => {
                self.disconnect();
                if result.is_err() {
                    self.filled = 0;
                    self.consumed = 0;
                }
            }
        }
        result
    }

    async fn exchange(&mut self, head_request: bool) -> Result<Response, ClientError> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.req).await.map_err(ClientError::from_io)?;
        loop {
            if self.filled > 0 {
                let parsed = http1::parse_response(&mut self.buf[..self.filled], head_request, false)
                    .map_err(ClientError::Protocol)?;
                if let Some(r) = parsed {
                    self.consumed = r.consumed;
                    return Ok(r);
                }
            }
            if self.filled == self.buf.len() {
                if self.buf.len() >= MAX_RESPONSE {
                    return Err(ClientError::Protocol(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "response too large",
                    )));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = stream.read(&mut self.buf[self.filled..]).await.map_err(ClientError::from_io)?;
            if n == 0 {
                let parsed = http1::parse_response(&mut self.buf[..self.filled], head_request, true)
                    .map_err(ClientError::Protocol)?;
                return match parsed {
                    Some(r) => {
                        self.consumed = r.consumed;
                        Ok(r)
                    }
                    None => Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into())),
                };
            }
            self.filled += n;
        }
    }

    /// The response body and the scratch buffer at once, so a request body
    /// can be built from a response without copying it.
    pub fn body_and_scratch(&mut self, r: &Response) -> (&[u8], &mut Vec<u8>) {
        (&self.buf[r.body.clone()], &mut self.scratch)
    }
}
