//! What one shard counts while the load runs, and how shards are merged.

use std::time::Duration;

use serde::Serialize;

use super::client::ClientError;
use super::histogram::LatencyHistogram;
use super::scenario::OpKind;

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    Client(ClientError),
    /// A response status the operation does not accept.
    Status(u16),
    /// A 200 response whose body was not the expected JSON.
    Body,
    /// A commit still conflicted (409) after all retries, so the writer gave
    /// up. Counted apart from errors: the server answered correctly.
    CommitGaveUp,
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> Self {
        OpError::Client(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Client(e) => e.fmt(f),
            OpError::Status(s) => write!(f, "unexpected status {s}"),
            OpError::Body => f.write_str("unexpected response body"),
            OpError::CommitGaveUp => f.write_str("commit gave up after all retries"),
        }
    }
}

/// Errors over the whole run: connection setup, warm-up and measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub io: u64,
    pub timeout: u64,
    pub protocol: u64,
    pub status: u64,
    pub body: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.timeout + self.protocol + self.status + self.body
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.io += o.io;
        self.timeout += o.timeout;
        self.protocol += o.protocol;
        self.status += o.status;
        self.body += o.body;
    }
}

/// Counters and histograms of one shard (or, merged, of the run). Latency,
/// operation, request and status counts cover the measured window only.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    /// Connections that were open when the load started.
    pub connected: u64,
    /// Connections open on both sides when the measured window began...
    pub open_at_start: u64,
    /// ...and when it ended (after the last operation of every connection).
    pub open_at_end: u64,
    pub http_requests: u64,
    /// (status, count), in order of first sight; a run sees few statuses.
    pub statuses: Vec<(u16, u64)>,
    pub errors: ErrorCounts,
    pub commit_retries: u64,
    pub commit_gave_up: u64,
    pub all: LatencyHistogram,
    /// The commit request alone (its POST, without the load before it) of
    /// every measured commit that succeeded.
    pub commit_posts: LatencyHistogram,
    /// Per operation kind, only for kinds in the mix.
    pub by_kind: Vec<(OpKind, LatencyHistogram)>,
}

impl ShardStats {
    /// Stats with a histogram for each of `kinds` (duplicates are merged).
    pub fn new(kinds: impl IntoIterator<Item = OpKind>) -> ShardStats {
        let mut by_kind: Vec<_> = kinds.into_iter().map(|k| (k, LatencyHistogram::default())).collect();
        by_kind.sort_by_key(|&(k, _)| k);
        by_kind.dedup_by_key(|&mut (k, _)| k);
        ShardStats { by_kind, ..ShardStats::default() }
    }

    pub fn response(&mut self, status: u16, measured: bool) {
        if !measured {
            return;
        }
        self.http_requests += 1;
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    /// A successful, measured operation.
    pub fn op(&mut self, kind: OpKind, latency: Duration) {
        self.all.record(latency);
        if let Some((_, h)) = self.by_kind.iter_mut().find(|(k, _)| *k == kind) {
            h.record(latency);
        }
    }

    /// Errors count over the whole run, give-ups only when measured.
    pub fn error(&mut self, e: &OpError, measured: bool) {
        let c = &mut self.errors;
        match e {
            OpError::Client(ClientError::Connect(_)) => c.connect += 1,
            OpError::Client(ClientError::Io(_)) => c.io += 1,
            OpError::Client(ClientError::Timeout) => c.timeout += 1,
            OpError::Client(ClientError::Protocol(_)) => c.protocol += 1,
            OpError::Status(_) => c.status += 1,
            OpError::Body => c.body += 1,
            OpError::CommitGaveUp => self.commit_gave_up += u64::from(measured),
        }
    }

    pub fn merge(&mut self, o: &ShardStats) {
        self.connected += o.connected;
        self.open_at_start += o.open_at_start;
        self.open_at_end += o.open_at_end;
        self.http_requests += o.http_requests;
        for &(status, n) in &o.statuses {
            match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((status, n)),
            }
        }
        self.errors.add(&o.errors);
        self.commit_retries += o.commit_retries;
        self.commit_gave_up += o.commit_gave_up;
        self.all.merge(&o.all);
        self.commit_posts.merge(&o.commit_posts);
        for (kind, h) in &o.by_kind {
            match self.by_kind.iter_mut().find(|(k, _)| k == kind) {
                Some((_, mine)) => mine.merge(h),
                None => self.by_kind.push((*kind, h.clone())),
            }
        }
        self.by_kind.sort_by_key(|&(k, _)| k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::Mix;

    #[test]
    fn merge_adds_counts_statuses_and_histograms() {
        let mix = Mix::parse("load-table=9,commit=1").unwrap();
        let mut a = ShardStats::new(mix.kinds());
        let mut b = ShardStats::new(mix.kinds());
        a.response(200, true);
        a.response(200, false);
        b.response(200, true);
        b.response(409, true);
        a.op(OpKind::LoadTable, Duration::from_millis(1));
        b.op(OpKind::Commit, Duration::from_millis(5));
        b.error(&OpError::Status(500), false);
        b.error(&OpError::Client(ClientError::Timeout), true);
        b.error(&OpError::CommitGaveUp, true);
        b.error(&OpError::CommitGaveUp, false);
        b.commit_retries = 3;
        a.merge(&b);
        assert_eq!(a.http_requests, 3);
        a.statuses.sort();
        assert_eq!(a.statuses, [(200, 2), (409, 1)]);
        assert_eq!((a.errors.status, a.errors.timeout, a.errors.total()), (1, 1, 2));
        assert_eq!((a.commit_retries, a.commit_gave_up, a.all.count()), (3, 1, 2));
        let counts: Vec<_> = a.by_kind.iter().map(|(k, h)| (*k, h.count())).collect();
        assert_eq!(counts, [(OpKind::LoadTable, 1), (OpKind::Commit, 1)]);
    }
}
