//! The metrics thread: the one place the shards' counters are aggregated.
//!
//! Shards never render metrics themselves: a scrape arriving on a shard is
//! handed to this thread (through the shard's blocking pool), so encoding a
//! large exposition never stalls request handling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};

use super::collector::{disk_families, shard_families};
use super::ShardStats;

type Reply = SyncSender<Vec<u8>>;

/// Asks the metrics thread for an exposition; cheap to clone, `Send`.
#[derive(Clone)]
pub struct MetricsHandle {
    tx: Sender<Reply>,
}

impl MetricsHandle {
    /// Blocks until the metrics thread has rendered the exposition.
    pub fn render(&self) -> Vec<u8> {
        let (reply, rx) = sync_channel(1);
        if self.tx.send(reply).is_err() {
            return b"# metrics thread stopped\n".to_vec();
        }
        rx.recv().unwrap_or_default()
    }
}

/// The running metrics thread.
pub struct MetricsThread {
    handle: MetricsHandle,
}

impl MetricsThread {
    /// Starts the thread over the shards' stats; serves `listen` too if given.
    pub fn start(shards: Vec<Arc<ShardStats>>, listen: Option<SocketAddr>) -> std::io::Result<MetricsThread> {
        let registry = Registry::new_custom(None, None).map_err(std::io::Error::other)?;
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .map_err(std::io::Error::other)?;
        let (tx, rx) = channel::<Reply>();
        std::thread::Builder::new().name("bingsan-metrics".into()).spawn(move || aggregate(&registry, &shards, rx))?;
        let handle = MetricsHandle { tx };
        if let Some(addr) = listen {
            let listener = TcpListener::bind(addr)?;
            let h = handle.clone();
            std::thread::Builder::new().name("bingsan-metrics-http".into()).spawn(move || serve(&listener, &h))?;
        }
        Ok(MetricsThread { handle })
    }

    pub fn handle(&self) -> MetricsHandle {
        self.handle.clone()
    }
}

fn aggregate(registry: &Registry, shards: &[Arc<ShardStats>], rx: Receiver<Reply>) {
    for reply in rx {
        let mut families = registry.gather();
        families.extend(shard_families(shards));
        families.extend(disk_families(crate::disk::state()));
        let mut out = Vec::with_capacity(64 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        let _ = reply.send(out);
    }
}

/// A deliberately plain HTTP/1.0 responder: one scrape per connection.
fn serve(listener: &TcpListener, handle: &MetricsHandle) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut head = [0u8; 4096];
        let mut n = 0;
        while n < head.len() {
            match stream.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let ok = head[..n].starts_with(b"GET /metrics ") || head[..n].starts_with(b"GET / ");
        let (status, body) = if ok { ("200 OK", handle.render()) } else { ("404 Not Found", b"not found\n".to_vec()) };
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(header.as_bytes()).and_then(|_| stream.write_all(&body));
    }
}
