//! Soak verdict: samples of the server's RSS and pool retention taken during
//! a long run, and whether memory kept growing after warm-up.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run (warm-up included).
    pub t_s: f64,
    pub post_warmup: bool,
    pub rss_bytes: Option<u64>,
    pub pool_retained_bytes: Option<f64>,
}

/// VmRSS of a process, in bytes.
pub fn read_rss(pid: u32) -> Option<u64> {
    parse_vmrss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Linear trend of a series of (seconds, value) points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub samples: usize,
    pub first: f64,
    pub last: f64,
    pub max: f64,
    /// Least-squares slope, units per minute.
    pub slope_per_min: f64,
    /// Growth the slope predicts over the sampled span, as a fraction of `first`.
    pub fitted_growth: f64,
    /// `max / first`.
    pub max_ratio: f64,
}

/// Needs three points: two always fit a line exactly.
pub fn trend(points: &[(f64, f64)]) -> Option<Trend> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for &(t, v) in points {
        cov += (t - mean_t) * (v - mean_v);
        var += (t - mean_t) * (t - mean_t);
    }
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    let first = points[0].1;
    let span = points[points.len() - 1].0 - points[0].0;
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let of_first = |x: f64| if first > 0.0 { x / first } else { 0.0 };
    Some(Trend {
        samples: points.len(),
        first,
        last: points[points.len() - 1].1,
        max,
        slope_per_min: slope * 60.0,
        fitted_growth: of_first(slope * span),
        max_ratio: if first > 0.0 { max / first } else { 1.0 },
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub rss: Option<Trend>,
    pub pool_retained: Option<Trend>,
    /// `None` when RSS was not sampled often enough to judge.
    pub rss_grew: Option<bool>,
    pub errors: u64,
    pub passed: bool,
    pub verdict: String,
}

/// Passes with zero errors and RSS that did not grow by more than
/// `tolerance` (fitted or peak) after warm-up.
pub fn judge(samples: Vec<Sample>, errors: u64, tolerance: f64) -> SoakReport {
    let series = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples.iter().filter(|s| s.post_warmup).filter_map(|s| Some((s.t_s, f(s)?))).collect()
    };
    let rss = trend(&series(|s| s.rss_bytes.map(|b| b as f64)));
    let pool_retained = trend(&series(|s| s.pool_retained_bytes));
    let rss_grew = rss.map(|t| t.fitted_growth > tolerance || t.max_ratio > 1.0 + tolerance);
    let mut problems = Vec::new();
    if errors > 0 {
        problems.push(format!("{errors} errors"));
    }
    if rss_grew == Some(true) {
        problems.push(format!("RSS grew more than {:.0}% after warm-up", tolerance * 100.0));
    }
    let verdict = match (problems.is_empty(), rss_grew) {
        (false, _) => format!("FAIL: {}", problems.join(", ")),
        (true, None) => "PASS (no errors; RSS not judged: needs --server-pid and 3+ post-warm-up samples)".into(),
        (true, Some(_)) => "PASS (no errors, RSS flat after warm-up)".into(),
    };
    SoakReport { samples, rss, pool_retained, rss_grew, errors, passed: problems.is_empty(), verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64]) -> Vec<Sample> {
        rss.iter()
            .enumerate()
            .map(|(i, &r)| Sample {
                t_s: i as f64 * 10.0,
                post_warmup: i > 0,
                rss_bytes: Some(r),
                pool_retained_bytes: Some(100.0),
            })
            .collect()
    }

    #[test]
    fn vmrss_from_proc_status() {
        let status = "Name:\tbingsan\nVmPeak:\t  9999 kB\nVmRSS:\t   2048 kB\nThreads: 3\n";
        assert_eq!(parse_vmrss(status), Some(2 << 20));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        assert!(read_rss(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn slope_of_a_line() {
        // 1 MiB per 10 s = 6 MiB per minute.
        let pts: Vec<_> = (0..6).map(|i| (i as f64 * 10.0, (100 + i) as f64 * 1048576.0)).collect();
        let t = trend(&pts).unwrap();
        assert!((t.slope_per_min - 6.0 * 1048576.0).abs() < 1.0);
        assert!((t.fitted_growth - 0.05).abs() < 1e-9);
        assert!((t.max_ratio - 1.05).abs() < 1e-9);
        assert!(trend(&pts[..2]).is_none());
    }

    #[test]
    fn verdicts() {
        // The first (warm-up) sample is ignored even though it is far lower.
        let flat = judge(samples(&[10, 100, 101, 99, 100, 100]), 0, 0.1);
        assert_eq!(flat.rss_grew, Some(false));
        assert!(flat.passed, "{}", flat.verdict);
        let leak = judge(samples(&[100, 100, 110, 120, 130, 140]), 0, 0.1);
        assert_eq!(leak.rss_grew, Some(true));
        assert!(!leak.passed);
        let errors = judge(samples(&[100, 100, 100, 100]), 3, 0.1);
        assert!(!errors.passed && errors.verdict.contains("3 errors"));
        let unknown = judge(samples(&[100, 100]), 0, 0.1);
        assert!(unknown.passed && unknown.rss_grew.is_none());
    }
}
