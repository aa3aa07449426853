//! The thread that runs object-store requests for the shards.
//!
//! `object_store` (and the HTTP client under it) needs a tokio runtime; a
//! shard is a glommio executor and must never wait on the network in a
//! blocking call. So one thread runs a small current-thread tokio runtime:
//! a shard sends a job over a channel (a non-blocking send) and awaits a
//! oneshot completion, which the I/O thread fires from its side. glommio
//! accepts wakes from a foreign thread (`RawTask::do_wake` queues the waker
//! on the owning executor's notifier and wakes its ring), so the shard's
//! task sleeps without polling. One thread is plenty: the requests are I/O
//! bound and few (writes of metadata files), and it keeps one connection
//! pool per warehouse.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handle to the I/O thread; the thread ends when every handle is gone.
#[derive(Clone)]
pub struct IoThread {
    jobs: mpsc::UnboundedSender<Job>,
}

impl IoThread {
    pub fn start(name: &str) -> io::Result<IoThread> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            runtime.block_on(async move {
                while let Some(job) = queue.recv().await {
                    tokio::spawn(job);
                }
            })
        })?;
        Ok(IoThread { jobs })
    }

    /// Runs `job` on the I/O thread, giving up after `limit` (the job is
    /// then dropped there: a request in flight is abandoned, its outcome
    /// unknown, and the caller gets `TimedOut`).
    pub async fn run<T, F>(&self, limit: Duration, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = io::Result<T>> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job = async move {
            let outcome = match tokio::time::timeout(limit, job).await {
                Ok(outcome) => outcome,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "object store request timed out")),
            };
            let _ = done.send(outcome);
        };
        self.jobs.send(Box::pin(job)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> io::Error {
    io::Error::other("the object store I/O thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_awaits_a_job_run_on_the_io_thread_and_its_timeout() {
        let io = IoThread::start("bingsan-test-io").unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let shard = std::thread::current().id();
                let ran_on = io.run(Duration::from_secs(5), async move { Ok(std::thread::current().id()) }).await;
                assert_ne!(ran_on.unwrap(), shard, "the job ran on the I/O thread");
                let slow = io.run(Duration::from_millis(50), async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(())
                });
                let started = std::time::Instant::now();
                assert_eq!(slow.await.unwrap_err().kind(), io::ErrorKind::TimedOut);
                assert!(started.elapsed() < Duration::from_secs(5));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
