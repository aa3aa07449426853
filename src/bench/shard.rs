//! One generator shard: ramps up its share of the connections, waits for the
//! common start, then drives every connection (closed- or open-loop) until
//! the end of the run.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use glommio::timer::sleep;

use super::client::Conn;
use super::held::count_open;
use super::ops::{run_op, Worker};
use super::plan::Plan;
use super::scenario::OpKind;
use super::schedule::{latency_since, OpenLoop, Phases};
use super::stats::{OpError, ShardStats};

/// Connect attempts per connection during ramp-up.
const CONNECT_ATTEMPTS: u32 = 3;
/// Pause after a failed connect, so a dead server is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Coordination between the main thread and the shards.
pub struct Shared {
    /// Reference point for `start_ns`.
    pub base: Instant,
    /// Start of the run in ns after `base`; 0 until the main thread sets it.
    pub start_ns: AtomicU64,
    /// Shards that finished ramping up.
    pub ready: AtomicUsize,
    /// A shard failed to start; everyone stops.
    pub failed: Arc<AtomicBool>,
    pub seed: u64,
}

impl Shared {
    pub fn new(seed: u64) -> Shared {
        Shared {
            base: Instant::now(),
            start_ns: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            failed: Arc::new(AtomicBool::new(false)),
            seed,
        }
    }

    pub fn start(&self) -> Option<Instant> {
        match self.start_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }
}

/// Global connection indices of shard `shard` of `shards`.
fn connection_range(connections: usize, shards: usize, shard: usize) -> Range<usize> {
    connections * shard / shards..connections * (shard + 1) / shards
}

/// Each shard's CPU and connections: the workload's spread over `cpus`, and
/// the writers on a shard of their own on the first CPU, so that parsing a
/// big table's answer never delays a reader's send or its clock (a glommio
/// task runs until it yields; the kernel preempts the writers' thread, which
/// runs under `SCHED_IDLE`: `runtime::yield_cpu_to_readers`).
pub fn placement(cpus: &[usize], connections: usize, writers: usize) -> Vec<(usize, Range<usize>)> {
    let mut shards: Vec<_> =
        cpus.iter().enumerate().map(|(i, &cpu)| (cpu, connection_range(connections, cpus.len(), i))).collect();
    if writers > 0 {
        shards.push((cpus[0], connections..connections + writers));
    }
    shards
}

pub async fn run_shard(plan: Arc<Plan>, shared: Arc<Shared>, conns: Range<usize>) -> ShardStats {
    let stats = Rc::new(RefCell::new(ShardStats::new(plan.recorded_kinds())));

    // Ramp up: a bounded number of connects in flight, so thousands of
    // connections do not overflow the server's accept backlog at once.
    let gate = Rc::new(Semaphore::new(plan.connect_concurrency as u64));
    let connecting: Vec<_> = conns
        .clone()
        .map(|id| {
            let (gate, stats, plan) = (gate.clone(), stats.clone(), plan.clone());
            glommio::spawn_local(async move {
                let _permit = gate.acquire_permit(1).await;
                let mut conn = Conn::new(plan.addr, plan.timeout);
                for attempt in 0..CONNECT_ATTEMPTS {
                    match conn.connect().await {
                        Ok(()) => break,
                        Err(e) => {
                            if attempt == 0 && id == 0 {
                                eprintln!("bench: connect to {} failed: {e}", plan.addr);
                            }
                            stats.borrow_mut().error(&OpError::Client(e), false);
                            if attempt + 1 < CONNECT_ATTEMPTS {
                                sleep(CONNECT_BACKOFF).await;
                            }
                        }
                    }
                }
                conn
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(connecting.len());
    for (task, id) in connecting.into_iter().zip(conns) {
        let conn = task.await;
        if conn.is_connected() {
            stats.borrow_mut().connected += 1;
        }
        workers.push(Worker::new(conn, id, shared.seed));
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);

    let start = loop {
        if let Some(start) = shared.start() {
            break start;
        }
        if shared.failed.load(Ordering::Acquire) {
            return take(stats);
        }
        sleep(Duration::from_millis(1)).await;
    };
    sleep(start.saturating_duration_since(Instant::now())).await;
    let phases = Phases::new(start, plan.warmup, plan.duration);
    let fds: Rc<Vec<_>> = Rc::new(workers.iter().map(|w| w.conn.fd()).collect());
    let at_start = {
        let (fds, stats) = (fds.clone(), stats.clone());
        glommio::spawn_local(async move {
            sleep(phases.warmup_end.saturating_duration_since(Instant::now())).await;
            stats.borrow_mut().open_at_start = count_open(&fds);
        })
    };
    let running: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let schedule = if plan.is_writer(w.id) {
                None
            } else {
                plan.rate.map(|rate| OpenLoop::new(rate, plan.connections, w.id))
            };
            glommio::spawn_local(drive(w, plan.clone(), phases, schedule, stats.clone()))
        })
        .collect();
    // Every worker is held until all are done, so the count at the end
    // sees each connection as its loop left it.
    let mut done = Vec::with_capacity(running.len());
    for task in running {
        done.push(task.await);
    }
    at_start.await;
    stats.borrow_mut().open_at_end = count_open(&fds);
    drop(done);
    take(stats)
}

fn take(stats: Rc<RefCell<ShardStats>>) -> ShardStats {
    Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_else(|rc| rc.borrow().clone())
}

/// One connection's loop. Closed-loop (and always for a writer, which only
/// commits): the next operation starts when the previous one ends. Open-loop: operation k starts at its due time (or at
/// once if late), and its latency counts from the due time. Either way the
/// connection stays open until the end of the run, and is returned.
async fn drive(
    mut w: Worker,
    plan: Arc<Plan>,
    phases: Phases,
    schedule: Option<OpenLoop>,
    stats: Rc<RefCell<ShardStats>>,
) -> Worker {
    let mut k = 0;
    loop {
        let now = Instant::now();
        let due = match schedule {
            Some(s) => {
                let due = phases.start + s.due(k);
                k += 1;
                if due >= phases.end {
                    // Nothing more to send: hold the connection to the end.
                    sleep(phases.end.saturating_duration_since(now)).await;
                    break;
                }
                if due > now {
                    sleep(due - now).await;
                }
                due
            }
            None if now >= phases.end => break,
            None => now,
        };
        let kind = if plan.is_writer(w.id) { OpKind::Commit } else { plan.mix.pick(w.rng.next_u64()) };
        let measured = phases.measured(due);
        match run_op(kind, &mut w, &plan, &stats, measured).await {
            Ok(()) if measured => stats.borrow_mut().op(kind, latency_since(due, Instant::now())),
            Ok(()) => {}
            Err(e) => {
                {
                    let mut s = stats.borrow_mut();
                    // One line per shard is enough to point at the problem.
                    if s.errors.total() == 0 && !matches!(e, OpError::CommitGaveUp) {
                        eprintln!("bench: first error on this shard ({}): {e}", kind.name());
                    }
                    s.error(&e, measured);
                }
                if matches!(e, OpError::Client(super::client::ClientError::Connect(_))) {
                    sleep(CONNECT_BACKOFF).await;
                }
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_get_a_shard_of_their_own() {
        assert_eq!(placement(&[0], 50, 0), [(0, 0..50)]);
        assert_eq!(placement(&[0], 50, 2), [(0, 0..50), (0, 50..52)]);
        assert_eq!(placement(&[2, 3], 10, 1), [(2, 0..5), (3, 5..10), (2, 10..11)]);
    }

    #[test]
    fn connections_split_evenly_and_completely() {
        for (c, s) in [(10, 3), (10_000, 2), (1, 4), (7, 7)] {
            let ranges: Vec<_> = (0..s).map(|i| connection_range(c, s, i)).collect();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, c);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let (min, max) = ranges.iter().fold((usize::MAX, 0), |(lo, hi), r| (lo.min(r.len()), hi.max(r.len())));
            assert!(max - min <= 1);
        }
    }
}
