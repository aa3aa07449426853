//! Reads the target's Prometheus `/metrics` to report what the server did
//! during the run: buffer-pool hit rate, allocations per request and pool
//! retention. A target without metrics is skipped, not an error.

use std::time::Duration;

use super::args::Target;
use super::blocking::BlockingClient;

/// The server counters the report uses; `None` when the metric is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerMetrics {
    pub pool_hits: Option<f64>,
    pub pool_misses: Option<f64>,
    pub allocs: Option<f64>,
    pub pool_retained_bytes: Option<f64>,
}

impl ServerMetrics {
    pub fn parse(text: &str) -> ServerMetrics {
        let buffer_pool = Some(("pool", "buffer"));
        ServerMetrics {
            pool_hits: sum_metric(text, "bingsan_pool_hits_total", buffer_pool),
            pool_misses: sum_metric(text, "bingsan_pool_misses_total", buffer_pool),
            allocs: sum_metric(text, "bingsan_allocs_total", None),
            pool_retained_bytes: sum_metric(text, "bingsan_pool_retained_bytes", None),
        }
    }

    /// Buffer-pool hit rate over the interval from `before` to `after`.
    pub fn hit_rate(before: &ServerMetrics, after: &ServerMetrics) -> Option<f64> {
        let hits = after.pool_hits? - before.pool_hits?;
        let misses = after.pool_misses? - before.pool_misses?;
        (hits + misses > 0.0).then(|| hits / (hits + misses))
    }

    pub fn allocs_per_request(before: &ServerMetrics, after: &ServerMetrics, requests: u64) -> Option<f64> {
        let allocs = after.allocs? - before.allocs?;
        (requests > 0).then(|| allocs / requests as f64)
    }
}

/// Sum of all samples of `name` (over every label set), optionally only
/// those with label `key="value"`. `None` if there is no such sample.
pub fn sum_metric(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.as_bytes().first() {
            Some(b'{') => match rest.find('}') {
                Some(end) => (&rest[1..end], &rest[end + 1..]),
                None => continue,
            },
            Some(b' ' | b'\t') => ("", rest),
            // Another metric sharing the prefix, e.g. name_bucket.
            _ => continue,
        };
        if let Some((k, v)) = label {
            if !has_label(labels, k, v) {
                continue;
            }
        }
        // The value is the first field; a timestamp may follow.
        let Some(Ok(v)) = value.split_whitespace().next().map(str::parse::<f64>) else {
            continue;
        };
        *sum.get_or_insert(0.0) += v;
    }
    sum
}

/// Whether a `k1="v1",k2="v2"` label list has `key="value"`. Values with
/// escaped quotes are compared raw, which is enough for our label values.
fn has_label(labels: &str, key: &str, value: &str) -> bool {
    let mut rest = labels;
    while let Some(eq) = rest.find('=') {
        let k = rest[..eq].trim().trim_start_matches(',').trim();
        let after = &rest[eq + 1..];
        let Some(after) = after.trim_start().strip_prefix('"') else {
            return false;
        };
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            return false;
        };
        if k == key && &after[..end] == value {
            return true;
        }
        rest = &after[end + 1..];
    }
    false
}

/// Fetches and parses one endpoint.
pub struct Scraper {
    client: BlockingClient,
    path: String,
}

impl Scraper {
    pub fn new(url: &str, token: Option<String>) -> std::io::Result<Scraper> {
        let target = Target::parse(url)?;
        Ok(Scraper {
            client: BlockingClient { addr: target.addr, host: target.host, token, timeout: Duration::from_secs(5) },
            path: if target.base.is_empty() { "/".into() } else { target.base },
        })
    }

    /// `None` if the endpoint is unreachable or not 200.
    pub fn scrape(&self) -> Option<ServerMetrics> {
        match self.client.request("GET", &self.path, None) {
            Ok((200, body)) => Some(ServerMetrics::parse(&String::from_utf8_lossy(&body))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP bingsan_pool_hits_total Pool hits.
# TYPE bingsan_pool_hits_total counter
bingsan_pool_hits_total{pool="buffer",shard="0"} 90
bingsan_pool_hits_total{shard="1",pool="buffer"} 10
bingsan_pool_hits_total{pool="arena",shard="0"} 1000
bingsan_pool_misses_total{pool="buffer",shard="0"} 5
bingsan_pool_misses_total{pool="buffer",shard="1"} 5 1700000000000
bingsan_allocs_total{shard="0"} 1.5e3
bingsan_allocs_total{shard="1"} 500
bingsan_allocs_total_extra 99
bingsan_pool_retained_bytes{pool="buffer",shard="0"} 4096
bingsan_pool_retained_bytes{pool="arena",shard="0"} 8192
bingsan_up 1
"#;

    #[test]
    fn sums_over_labels() {
        let m = ServerMetrics::parse(TEXT);
        assert_eq!(m.pool_hits, Some(100.0));
        assert_eq!(m.pool_misses, Some(10.0));
        assert_eq!(m.allocs, Some(2000.0));
        assert_eq!(m.pool_retained_bytes, Some(12288.0));
        assert_eq!(sum_metric(TEXT, "bingsan_up", None), Some(1.0));
        assert_eq!(sum_metric(TEXT, "bingsan_missing", None), None);
        assert_eq!(sum_metric(TEXT, "bingsan_pool_hits_total", Some(("pool", "arena"))), Some(1000.0));
    }

    #[test]
    fn label_matching() {
        assert!(has_label(r#"a="1",pool="buffer""#, "pool", "buffer"));
        assert!(!has_label(r#"xpool="buffer""#, "pool", "buffer"));
        assert!(has_label(r#"a="x\"y",pool="buffer""#, "pool", "buffer"));
        assert!(!has_label("", "pool", "buffer"));
    }

    #[test]
    fn rates_from_deltas() {
        let before = ServerMetrics {
            pool_hits: Some(100.0),
            pool_misses: Some(10.0),
            allocs: Some(1000.0),
            pool_retained_bytes: None,
        };
        let after = ServerMetrics {
            pool_hits: Some(190.0),
            pool_misses: Some(20.0),
            allocs: Some(1500.0),
            pool_retained_bytes: None,
        };
        assert_eq!(ServerMetrics::hit_rate(&before, &after), Some(0.9));
        assert_eq!(ServerMetrics::allocs_per_request(&before, &after, 250), Some(2.0));
        assert_eq!(ServerMetrics::allocs_per_request(&before, &after, 0), None);
        assert_eq!(ServerMetrics::hit_rate(&before, &ServerMetrics::default()), None);
    }
}
