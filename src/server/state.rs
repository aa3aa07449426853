//! State shared by all shards: read-mostly, behind one `Arc`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::served::Served;
use crate::fileio::FileIo;
use crate::metrics::{MetricsHandle, ShardStats};
use crate::store::Store;

/// Everything the shards share.
pub struct Shared<S: Store, F: FileIo> {
    /// The store every warehouse keeps its records in.
    pub store: Arc<S>,
    /// The warehouses served, the default first.
    pub warehouses: Vec<Served<S, F>>,
    pub shards: usize,
    /// Shards whose listener is accepting.
    pub accepting: AtomicUsize,
    pub stats: Vec<Arc<ShardStats>>,
    pub metrics: MetricsHandle,
    pub shutdown: Shutdown,
    /// Whether the warehouses come from a warehouses file: then
    /// `/v1/config` answers only their names; the `--warehouse` shortcut
    /// answers any (clients send their own idea of a warehouse, often a path).
    pub named_warehouse: bool,
    /// Bearer check and token endpoint (`--auth*`).
    pub auth: crate::auth::Authenticator,
    /// Vended credentials and remote signing for S3 warehouses.
    pub delegation: Arc<crate::delegation::Delegation>,
}

impl<S: Store, F: FileIo> Shared<S, F> {
    /// Ready: the store is open (it is, or we would not exist) and still
    /// accepts writes, every shard accepts connections, and we are not
    /// shutting down.
    pub fn ready(&self) -> bool {
        self.accepting.load(Ordering::Acquire) == self.shards && !self.shutdown.requested() && self.store.writable()
    }
}

/// A shutdown flag that wakes waiting shards (glommio wakers accept wakes
/// from foreign threads), so nothing polls on a timer.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Shutdown {
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sets the flag and wakes every waiter.
    pub fn request(&self) {
        self.flag.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.waiters.lock().expect("shutdown waiters"));
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Resolves once shutdown is requested.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.requested() {
                return std::task::Poll::Ready(());
            }
            let mut waiters = self.waiters.lock().expect("shutdown waiters");
            if self.requested() {
                return std::task::Poll::Ready(());
            }
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
    }
}
