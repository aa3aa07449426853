//! The disk's own durability rate, to compare the catalog's write path
//! with: `fdatasync` of a 20 KB file rewritten in place, by one writer and
//! then by eight in parallel (each on its own file in `--dir`), for
//! `--duration` each. No target is involved.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::histogram::{LatencyHistogram, LatencySummary};

/// Size of a small table's metadata file.
pub const FILE_BYTES: usize = 20 * 1024;
/// Writers of the parallel pass (as many concurrent commits would).
pub const PARALLEL: usize = 8;

#[derive(Clone, Debug, Serialize)]
pub struct FsyncRate {
    pub writers: usize,
    pub syncs: u64,
    pub per_s: f64,
    pub latency: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct FsyncReport {
    pub dir: String,
    pub file_bytes: usize,
    pub duration_s: f64,
    pub sequential: FsyncRate,
    pub parallel: FsyncRate,
}

/// Both passes in `dir`.
pub fn measure(dir: &Path, duration: Duration) -> io::Result<FsyncReport> {
    if !dir.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "--dir must be an existing directory"));
    }
    Ok(FsyncReport {
        dir: dir.display().to_string(),
        file_bytes: FILE_BYTES,
        duration_s: duration.as_secs_f64(),
        sequential: pass(dir, 1, duration)?,
        parallel: pass(dir, PARALLEL, duration)?,
    })
}

/// `writers` threads, each rewriting and syncing its own file until the
/// deadline; the rate is all their syncs over the pass.
fn pass(dir: &Path, writers: usize, duration: Duration) -> io::Result<FsyncRate> {
    let files = (0..writers).map(|i| Scratch::create(dir, i)).collect::<io::Result<Vec<_>>>()?;
    let start = Instant::now();
    let deadline = start + duration;
    let results: Vec<io::Result<LatencyHistogram>> = std::thread::scope(|s| {
        let handles: Vec<_> = files.iter().map(|f| s.spawn(move || f.sync_until(deadline))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("writer panicked")))).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = LatencyHistogram::default();
    for h in results {
        all.merge(&h?);
    }
    Ok(FsyncRate { writers, syncs: all.count(), per_s: all.count() as f64 / elapsed, latency: all.summary() })
}

/// One writer's file, removed on drop.
struct Scratch {
    file: File,
    path: PathBuf,
}

impl Scratch {
    /// Created full size and synced once, so the timed writes overwrite
    /// allocated blocks and each sync is the data plus the device flush.
    fn create(dir: &Path, i: usize) -> io::Result<Scratch> {
        let path = dir.join(format!(".bingsan-fsync-{}-{i}", std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        let scratch = Scratch { file, path };
        scratch.file.write_all_at(&[0xa5; FILE_BYTES], 0)?;
        scratch.file.sync_all()?;
        Ok(scratch)
    }

    fn sync_until(&self, deadline: Instant) -> io::Result<LatencyHistogram> {
        let mut h = LatencyHistogram::default();
        let mut page = [0u8; FILE_BYTES];
        let mut round = 0u8;
        while Instant::now() < deadline {
            // New bytes each round, so every write really dirties the pages.
            round = round.wrapping_add(1);
            page.fill(round);
            let t = Instant::now();
            self.file.write_all_at(&page, 0)?;
            self.file.sync_data()?;
            h.record(t.elapsed());
        }
        Ok(h)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl FsyncReport {
    pub fn to_json(&self) -> String {
        sonic_rs::to_string(self).expect("report serializes")
    }

    pub fn to_table(&self) -> String {
        let mut s = format!(
            "bingsan bench  fsync in {}  ({} B rewritten, then fdatasync; {}s per pass)\n",
            self.dir, self.file_bytes, self.duration_s
        );
        s.push_str(&format!(
            "  {:<12}{:>10}{:>12}{:>10}{:>10}{:>10}\n",
            "writers", "syncs", "syncs/s", "mean", "p50", "p99"
        ));
        for r in [&self.sequential, &self.parallel] {
            let l = &r.latency;
            s.push_str(&format!(
                "  {:<12}{:>10}{:>12.1}{:>10.3}{:>10.3}{:>10.3}\n",
                r.writers, r.syncs, r.per_s, l.mean_ms, l.p50_ms, l.p99_ms
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_passes_sync_and_clean_up() {
        let dir = std::env::temp_dir().join(format!("bingsan-fsync-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = measure(&dir, Duration::from_millis(150)).unwrap();
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((r.sequential.writers, r.parallel.writers), (1, PARALLEL));
        for p in [&r.sequential, &r.parallel] {
            assert!(p.syncs > 0 && p.per_s > 0.0, "{p:?}");
            assert_eq!(p.latency.count, p.syncs);
        }
        assert_eq!(leftovers, 0, "scratch files are removed");
        let v: sonic_rs::Value = sonic_rs::from_str(&r.to_json()).unwrap();
        use sonic_rs::JsonValueTrait;
        assert_eq!(v["parallel"]["writers"].as_u64(), Some(PARALLEL as u64));
        assert!(r.to_table().contains("syncs/s"));
        assert!(measure(&dir, Duration::from_millis(1)).is_err(), "a missing --dir is refused");
    }
}
