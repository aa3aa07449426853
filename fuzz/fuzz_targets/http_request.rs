//! Any bytes on a connection: the real connection loop must answer or close,
//! never panic, never loop forever.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bingsan::http::{serve_connection, ConnLimits, ConnState, Request, Response, Service, Serving, Transport};
use bingsan::pool::{BufPool, FutureSlots};
use libfuzzer_sys::fuzz_target;

/// The fuzz input as the peer's bytes, in small reads; writes are kept.
struct Wire<'a> {
    input: &'a [u8],
    written: Vec<u8>,
}

impl futures_lite::AsyncRead for Wire<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        // Split reads at odd sizes so framing sees partial input.
        let n = buf.len().min(self.input.len()).min(7 + self.input.len() % 13);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

impl futures_lite::AsyncWrite for Wire<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for Wire<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        futures_lite::AsyncReadExt::read(self, buf).await
    }
    fn set_wait_limit(&mut self, _: Duration) {}

    fn clear_read_limit(&mut self) {}
}

/// Echoes the body length; enough to exercise framing and responses.
struct Echo;

impl Service for Echo {
    async fn call(&self, req: &Request<'_>, resp: &mut Response) {
        resp.body.extend_from_slice(req.path.as_bytes());
        resp.body.extend_from_slice(&req.body.len().to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let bufs = BufPool::new(64, 1 << 16, 4, Default::default());
    let limits = ConnLimits {
        max_head: 1024,
        max_body: 4096,
        request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };
    let mut wire = Wire { input: data, written: Vec::new() };
    let with = Serving { svc: Echo, bufs, slots: FutureSlots::new(4), limits };
    futures_lite::future::block_on(serve_connection(&mut wire, &with, &ConnState::default()));
    // Every response starts with a status line.
    assert!(wire.written.is_empty() || wire.written.starts_with(b"HTTP/1.1 "));
});
