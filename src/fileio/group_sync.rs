//! Group commit of new metadata files, one group per shard.
//!
//! A writer writes its file without syncing it and hands it to its shard's
//! next batch. One task per shard runs the batches one after another: every
//! file of a batch is `fdatasync`ed and closed, and every distinct directory
//! of the batch `fsync`ed once, all as io_uring requests in flight together;
//! then every member learns the batch's one outcome. Writers that arrive
//! while a batch syncs form the next one, so under load one round of syncs
//! serves many commits, and a lone writer waits for one round (its file and
//! directory synced together) instead of two syncs one after the other.
//!
//! Concurrent `fdatasync`s rather than one `syncfs(2)`: measured no faster
//! on this disk (`docs/performance.md`), and `syncfs` writes back every
//! dirty page of the whole filesystem (the store's, other processes') and
//! reports their writeback errors too, so a commit's latency and failure
//! would depend on files it never wrote.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::io::{BufferedFile, Directory};

/// A failed sync, kept so every member of the batch can get an `io::Error`
/// of the same kind and OS error (the disk fault's cause reads them).
#[derive(Clone, Copy, Debug)]
struct Failure {
    kind: io::ErrorKind,
    os: Option<i32>,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure { kind: e.kind(), os: e.raw_os_error() }
    }

    fn error(self) -> io::Error {
        match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, "a sync of the metadata files' batch failed"),
        }
    }
}

/// How one batch ended, shared by its members.
#[derive(Default)]
struct Outcome {
    /// `None` until every sync of the batch finished.
    result: Cell<Option<Result<(), Failure>>>,
    waiters: RefCell<Vec<Waker>>,
}

/// The shard's group: the batch being filled and whether a batch runs.
#[derive(Default)]
struct Group {
    files: RefCell<Vec<BufferedFile>>,
    dirs: RefCell<Vec<PathBuf>>,
    outcome: RefCell<Rc<Outcome>>,
    running: Cell<bool>,
}

thread_local! {
    static GROUP: Rc<Group> = Rc::default();
}

/// Makes `file` (written, not synced) durable with its entry in `dir`,
/// together with the other files of its batch, and closes it. An error
/// means the file may not be durable: the caller must not reference it.
pub async fn durable(file: BufferedFile, dir: &Path) -> io::Result<()> {
    let group = GROUP.with(Rc::clone);
    group.files.borrow_mut().push(file);
    {
        let mut dirs = group.dirs.borrow_mut();
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    let outcome = group.outcome.borrow().clone();
    if !group.running.replace(true) {
        // Runs after the tasks already runnable, so a burst of writers on
        // this shard lands in one batch.
        glommio::spawn_local(run(group)).detach();
    }
    match (Joined { outcome }).await {
        Ok(()) => Ok(()),
        Err(failure) => Err(failure.error()),
    }
}

/// Runs batches until none is waiting.
async fn run(group: Rc<Group>) {
    loop {
        let files = std::mem::take(&mut *group.files.borrow_mut());
        if files.is_empty() {
            group.running.set(false);
            return;
        }
        let dirs = std::mem::take(&mut *group.dirs.borrow_mut());
        let outcome = group.outcome.replace(Rc::default());
        let result = sync_batch(files, dirs).await.map_err(|e| Failure::of(&e));
        if let Err(e) = &result {
            tracing::error!(error = %e.error(), "syncing a batch of metadata files failed");
        }
        outcome.result.set(Some(result));
        outcome.waiters.take().into_iter().for_each(Waker::wake);
    }
}

/// Syncs every file and directory concurrently; the first error, if any,
/// once all finished (no sync is abandoned midway).
async fn sync_batch(files: Vec<BufferedFile>, dirs: Vec<PathBuf>) -> io::Result<()> {
    let mut syncs = Vec::with_capacity(files.len() + dirs.len());
    for file in files {
        syncs.push(glommio::spawn_local(async move {
            let synced = file.fdatasync().await;
            let closed = file.close().await;
            synced.and(closed).map_err(io::Error::from)
        }));
    }
    for dir in dirs {
        syncs.push(glommio::spawn_local(async move { sync_dir(&dir).await }));
    }
    let mut first = Ok(());
    for sync in syncs {
        let result = sync.await;
        if first.is_ok() {
            first = result;
        }
    }
    first
}

/// `fsync` of a directory, so entries created in it survive a crash.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = Directory::open(dir).await?;
    d.sync().await?;
    d.close().await?;
    Ok(())
}

/// Waits for a batch's outcome.
struct Joined {
    outcome: Rc<Outcome>,
}

impl Future for Joined {
    type Output = Result<(), Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.outcome.result.get() {
            Some(result) => Poll::Ready(result),
            None => {
                self.outcome.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::io::OpenOptions;

    #[test]
    fn concurrent_writers_share_one_batch_and_all_learn_the_outcome() {
        let dir = std::env::temp_dir().join(format!("bingsan-group-{}", uuid::Uuid::new_v4()));
        let sub = |i: usize| dir.join(if i % 2 == 0 { "a" } else { "b" });
        std::fs::create_dir_all(sub(0)).unwrap();
        std::fs::create_dir_all(sub(1)).unwrap();
        let subs: Vec<PathBuf> = (0..64).map(sub).collect();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut written = Vec::new();
                for (i, sub) in subs.into_iter().enumerate() {
                    let file =
                        OpenOptions::new().write(true).create_new(true).buffered_open(sub.join(format!("{i}"))).await.unwrap();
                    file.write_at(format!("{{\"n\":{i}}}").into_bytes(), 0).await.unwrap();
                    written.push((file, sub));
                }
                let writers: Vec<_> = written
                    .into_iter()
                    .map(|(file, sub)| glommio::spawn_local(async move { durable(file, &sub).await }))
                    .collect();
                // Every writer has joined before the batch task first runs.
                futures_lite::future::yield_now().await;
                assert_eq!(GROUP.with(|g| (g.files.borrow().len(), g.dirs.borrow().len())), (64, 2));
                for w in writers {
                    w.await.unwrap();
                }
                assert!(GROUP.with(|g| !g.running.get() && g.files.borrow().is_empty()), "the batch task ended");
                let failed = Outcome::default();
                failed.result.set(Some(Err(Failure::of(&io::Error::from_raw_os_error(libc::EIO)))));
                let e = (Joined { outcome: Rc::new(failed) }).await.unwrap_err();
                assert_eq!(e.error().raw_os_error(), Some(libc::EIO), "members get the OS error back");
            })
            .unwrap()
            .join()
            .unwrap();
        for i in 0..64 {
            assert_eq!(std::fs::read(sub(i).join(format!("{i}"))).unwrap(), format!("{{\"n\":{i}}}").into_bytes());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
