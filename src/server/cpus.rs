//! The default shard count: the CPUs the process may run on (its affinity
//! mask) capped by the CPU time its cgroup grants (a container's CPU limit),
//! so a pod limited to 2 CPUs on a 64-core node runs 2 shards, not 64 that
//! the CFS quota would throttle in turn.

use std::path::{Path, PathBuf};

/// How many shards to run by default, and why (for the start-up log).
#[derive(Debug, PartialEq, Eq)]
pub struct ShardCount {
    pub shards: usize,
    pub reason: String,
}

/// The smaller of `allowed` (CPUs in the affinity mask) and the cgroup CPU
/// limit read under `root` (`/` in production; a fake tree in tests).
pub fn default_shards(allowed: usize, root: &Path) -> ShardCount {
    let allowed = allowed.max(1);
    match cgroup_cpu_limit(root) {
        Some(limit) if limit.cpus < allowed => ShardCount {
            shards: limit.cpus,
            reason: format!("the cgroup CPU limit ({}) is below the {allowed} CPUs of the affinity mask", limit.source),
        },
        Some(limit) => ShardCount {
            shards: allowed,
            reason: format!("the affinity mask allows {allowed} CPUs, within the cgroup CPU limit ({})", limit.source),
        },
        None => ShardCount {
            shards: allowed,
            reason: format!("the affinity mask allows {allowed} CPUs; no cgroup CPU limit"),
        },
    }
}

/// A cgroup CPU limit in whole CPUs (rounded up) and where it was read.
#[derive(Debug)]
struct CpuLimit {
    cpus: usize,
    source: String,
}

/// The tightest CPU limit of this process's cgroups, v2 (`cpu.max`) and v1
/// (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), on the cgroup and each of its
/// ancestors (a parent's limit binds its children too). Inside a container
/// without a cgroup namespace `/proc/self/cgroup` names the host's path,
/// which is not mounted there; walking up then ends at the mount's root,
/// which is the container's own cgroup.
fn cgroup_cpu_limit(root: &Path) -> Option<CpuLimit> {
    let membership = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mount = root.join("sys/fs/cgroup");
    let mut best: Option<CpuLimit> = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let found = if id == "0" && controllers.is_empty() {
            walk_up(&mount, path, v2_limit)
        } else if controllers.split(',').any(|c| c == "cpu") {
            // v1 mounts the cpu controller alone or joined with cpuacct.
            ["cpu,cpuacct", "cpuacct,cpu", "cpu"]
                .iter()
                .map(|dir| mount.join(dir))
                .find(|base| base.is_dir())
                .and_then(|base| walk_up(&base, path, v1_limit))
        } else {
            None
        };
        best = tighter(best, found);
    }
    best
}

/// The smaller of two optional limits (the first on a tie).
fn tighter(a: Option<CpuLimit>, b: Option<CpuLimit>) -> Option<CpuLimit> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.cpus < a.cpus { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The tightest limit `read` finds in `base/path` and each ancestor up to `base`.
fn walk_up(base: &Path, path: &str, read: fn(&Path) -> Option<CpuLimit>) -> Option<CpuLimit> {
    let mut dir: PathBuf = base.join(path.trim_start_matches('/'));
    let mut best: Option<CpuLimit> = None;
    loop {
        best = tighter(best, read(&dir));
        if dir == base || !dir.pop() || !dir.starts_with(base) {
            return best;
        }
    }
}

/// cgroup v2: `cpu.max` is "QUOTA PERIOD" or "max PERIOD".
fn v2_limit(dir: &Path) -> Option<CpuLimit> {
    let file = dir.join("cpu.max");
    let text = std::fs::read_to_string(&file).ok()?;
    let mut fields = text.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?; // "max": no limit
    let period: u64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    let cpus = whole_cpus(quota, period)?;
    Some(CpuLimit { cpus, source: format!("{} = {quota} {period}", file.display()) })
}

/// cgroup v1: `cpu.cfs_quota_us` (-1: no limit) over `cpu.cfs_period_us`.
fn v1_limit(dir: &Path) -> Option<CpuLimit> {
    let file = dir.join("cpu.cfs_quota_us");
    let quota: i64 = std::fs::read_to_string(&file).ok()?.trim().parse().ok()?;
    let period: u64 = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?.trim().parse().ok()?;
    let cpus = whole_cpus(u64::try_from(quota).ok()?, period)?;
    Some(CpuLimit { cpus, source: format!("{} = {quota} per {period} us", file.display()) })
}

/// A quota per period as whole CPUs, rounded up: 1.5 CPUs of time keep 2
/// shards busy part of the time rather than leave half a CPU unused.
fn whole_cpus(quota: u64, period: u64) -> Option<usize> {
    if quota == 0 || period == 0 {
        return None;
    }
    Some(quota.div_ceil(period) as usize)
}

#[cfg(test)]
mod tests {
    use super::default_shards;
    use std::path::Path;

    /// A fake `/`: `/proc/self/cgroup` plus files under `/sys/fs/cgroup`.
    struct FakeRoot(std::path::PathBuf);

    impl FakeRoot {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fake_root(cgroup: &str, files: &[(&str, &str)]) -> FakeRoot {
        let root = FakeRoot(std::env::temp_dir().join(format!("bingsan-cpus-{}", uuid::Uuid::new_v4())));
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/self/cgroup", cgroup);
        for (rel, text) in files {
            write(&format!("sys/fs/cgroup/{rel}"), text);
        }
        root
    }

    #[test]
    fn v2_cpu_max_rounds_up_and_caps_the_mask() {
        let root = fake_root("0::/kubepods/pod1/c1\n", &[("kubepods/pod1/c1/cpu.max", "150000 100000\n")]);
        let count = default_shards(8, root.path());
        assert_eq!(count.shards, 2);
        assert!(count.reason.contains("cpu.max = 150000 100000"), "{}", count.reason);
        // Exactly whole CPUs stay as they are; a sliver is still one shard.
        let root = fake_root("0::/a\n", &[("a/cpu.max", "200000 100000\n")]);
        assert_eq!(default_shards(8, root.path()).shards, 2);
        let root = fake_root("0::/a\n", &[("a/cpu.max", "5000 100000\n")]);
        assert_eq!(default_shards(8, root.path()).shards, 1);
    }

    #[test]
    fn the_mask_wins_when_smaller_than_the_limit() {
        let root = fake_root("0::/a\n", &[("a/cpu.max", "400000 100000\n")]);
        let count = default_shards(2, root.path());
        assert_eq!(count.shards, 2);
        assert!(count.reason.contains("affinity mask allows 2"), "{}", count.reason);
    }

    #[test]
    fn no_limit_means_the_mask() {
        let root = fake_root("0::/a\n", &[("a/cpu.max", "max 100000\n")]);
        let count = default_shards(6, root.path());
        assert_eq!(count.shards, 6);
        assert!(count.reason.contains("no cgroup CPU limit"), "{}", count.reason);
        // No cgroup files at all (not Linux cgroups, or not mounted).
        let empty = fake_root("", &[]);
        assert_eq!(default_shards(3, empty.path()).shards, 3);
        // A mask of zero CPUs cannot happen; never answer zero shards.
        assert_eq!(default_shards(0, empty.path()).shards, 1);
    }

    #[test]
    fn an_ancestors_limit_binds_its_children() {
        let root = fake_root(
            "0::/parent/child\n",
            &[("parent/cpu.max", "300000 100000\n"), ("parent/child/cpu.max", "max 100000\n")],
        );
        assert_eq!(default_shards(16, root.path()).shards, 3);
    }

    #[test]
    fn a_host_path_not_mounted_in_the_container_ends_at_the_mount_root() {
        // Without a cgroup namespace the path is the host's; the container
        // sees its own cgroup at the root of the mount.
        let root = fake_root("0::/kubepods/burstable/pod9/abc\n", &[("cpu.max", "100000 100000\n")]);
        assert_eq!(default_shards(4, root.path()).shards, 1);
    }

    #[test]
    fn v1_quota_and_period() {
        let cgroup = "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n";
        let root = fake_root(
            cgroup,
            &[
                ("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n"),
                ("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
            ],
        );
        let count = default_shards(8, root.path());
        assert_eq!(count.shards, 3);
        assert!(count.reason.contains("cpu.cfs_quota_us = 250000 per 100000 us"), "{}", count.reason);
        // -1: no quota.
        let root = fake_root("1:cpu:/\n", &[("cpu/cpu.cfs_quota_us", "-1\n"), ("cpu/cpu.cfs_period_us", "100000\n")]);
        assert_eq!(default_shards(5, root.path()).shards, 5);
    }

    #[test]
    fn the_tightest_of_v1_and_v2_counts() {
        let root = fake_root(
            "1:cpu:/\n0::/\n",
            &[
                ("cpu/cpu.cfs_quota_us", "400000\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
                ("cpu.max", "100000 50000\n"),
            ],
        );
        assert_eq!(default_shards(8, root.path()).shards, 2);
    }
}
