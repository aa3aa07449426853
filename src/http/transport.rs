//! Reading from a socket without the runtime's per-wait bookkeeping when
//! data is already there.
//!
//! glommio's `read` allocates a readiness source whenever it has to wait,
//! and eagerly arms another after any short read. We first try a plain
//! non-blocking `recv`; only an idle socket goes through glommio, and then
//! with a one-byte read, which completes "full" and so arms nothing extra.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};

/// A byte stream the connection loop can serve.
#[allow(async_fn_in_trait)] // Connections stay on their shard.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Reads at least one byte into `buf` (0: the peer closed).
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Bounds how long one wait for data, or for room to write, may take;
    /// past it the operation fails with `TimedOut`.
    fn set_wait_limit(&mut self, limit: Duration);

    /// Lets the next read wait without a timer (an idle connection, whose
    /// wait the shard bounds).
    fn clear_read_limit(&mut self);
}

impl Transport for glommio::net::TcpStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        debug_assert!(!buf.is_empty());
        if let Some(n) = recv_now(self.as_raw_fd(), buf)? {
            return Ok(n);
        }
        let n = self.read(&mut buf[..1]).await?;
        if n == 0 || buf.len() == 1 {
            return Ok(n);
        }
        Ok(1 + recv_now(self.as_raw_fd(), &mut buf[1..])?.unwrap_or(0))
    }

    fn set_wait_limit(&mut self, limit: Duration) {
        let limit = Some(limit.max(Duration::from_millis(1)));
        // Only a zero duration is refused, and it cannot be one here.
        let _ = self.set_read_timeout(limit);
        let _ = self.set_write_timeout(limit);
    }

    fn clear_read_limit(&mut self) {
        // `None` is always accepted.
        let _ = self.set_read_timeout(None);
    }
}

impl Transport for futures_rustls::server::TlsStream<glommio::net::TcpStream> {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf).await
    }

    fn set_wait_limit(&mut self, limit: Duration) {
        self.get_mut().0.set_wait_limit(limit);
    }

    fn clear_read_limit(&mut self) {
        self.get_mut().0.clear_read_limit();
    }
}

/// A non-blocking `recv`: `None` when nothing is waiting.
fn recv_now(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}
