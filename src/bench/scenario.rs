//! What the generator sends: the operation kinds, a weighted mix of them, and
//! the small PRNG that picks from the mix.

use std::fmt;

/// One benchmark operation. Most are one request; `Commit` is a writer's
/// load + commit (+ reload/retry on conflict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum OpKind {
    Health,
    Config,
    GetNamespace,
    ListNamespaces,
    LoadTable,
    LoadTableWide,
    CreateNamespace,
    Commit,
    /// Every connection held open, sending `config` at a low rate (by
    /// default one request per connection per max(warm-up, 10 s)): the
    /// server's memory per idle connection, with `--server-pid`.
    Idle,
    /// No target: the disk's own rate of overwriting a 20 KB file and
    /// `fdatasync`ing it in `--dir`, one writer, then eight in parallel.
    /// Runs alone, never in a mix.
    Fsync,
}

impl OpKind {
    pub const ALL: [OpKind; 10] = [
        OpKind::Health,
        OpKind::Config,
        OpKind::GetNamespace,
        OpKind::ListNamespaces,
        OpKind::LoadTable,
        OpKind::LoadTableWide,
        OpKind::CreateNamespace,
        OpKind::Commit,
        OpKind::Idle,
        OpKind::Fsync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Health => "health",
            OpKind::Config => "config",
            OpKind::GetNamespace => "get-namespace",
            OpKind::ListNamespaces => "list-namespaces",
            OpKind::LoadTable => "load-table",
            OpKind::LoadTableWide => "load-table-wide",
            OpKind::CreateNamespace => "create-namespace",
            OpKind::Commit => "commit",
            OpKind::Idle => "idle",
            OpKind::Fsync => "fsync",
        }
    }

    /// Dense index for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Weighted choice between operation kinds, e.g. `load-table=90,commit=10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Kinds with their cumulative weight, in the order given.
    entries: Vec<(OpKind, u64)>,
}

impl Mix {
    pub fn single(kind: OpKind) -> Mix {
        Mix { entries: vec![(kind, 1)] }
    }

    /// Parses `kind[=weight],...`; a missing weight means 1.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut entries: Vec<(OpKind, u64)> = Vec::new();
        let mut total = 0u64;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: u64 = w.trim().parse().map_err(|_| format!("bad weight in {part:?}"))?;
                    (n.trim(), w)
                }
                None => (part, 1),
            };
            let kind = OpKind::from_name(name).ok_or_else(|| {
                let known: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown scenario {name:?} (known: {})", known.join(", "))
            })?;
            if weight == 0 {
                return Err(format!("weight of {name} must be positive"));
            }
            if entries.iter().any(|&(k, _)| k == kind) {
                return Err(format!("{name} appears twice"));
            }
            total += weight;
            entries.push((kind, total));
        }
        if entries.is_empty() {
            return Err("empty mix".into());
        }
        Ok(Mix { entries })
    }

    /// Maps a uniform random number to a kind, in proportion to the weights.
    pub fn pick(&self, random: u64) -> OpKind {
        let total = self.entries.last().expect("non-empty").1;
        if self.entries.len() == 1 {
            return self.entries[0].0;
        }
        let r = random % total;
        self.entries.iter().find(|&&(_, cum)| r < cum).expect("r < total").0
    }

    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.entries.iter().map(|&(k, _)| k)
    }

    pub fn contains(&self, kind: OpKind) -> bool {
        self.kinds().any(|k| k == kind)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.len() == 1 {
            return f.write_str(self.entries[0].0.name());
        }
        let mut prev = 0;
        for (i, &(kind, cum)) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={}", kind.name(), cum - prev)?;
            prev = cum;
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and good enough to pick operations and ids.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A positive i64, as Iceberg snapshot ids are.
    pub fn positive_i64(&mut self) -> i64 {
        (self.next_u64() >> 1).max(1) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_mixes() {
        let m = Mix::parse("load-table=90, commit=10").unwrap();
        assert_eq!(m.to_string(), "load-table=90,commit=10");
        assert_eq!(m.kinds().collect::<Vec<_>>(), [OpKind::LoadTable, OpKind::Commit]);
        assert_eq!(Mix::parse("health").unwrap(), Mix::single(OpKind::Health));
        assert!(Mix::parse("load-table=0").is_err());
        assert!(Mix::parse("nope=1").is_err());
        assert!(Mix::parse("health,health").is_err());
        assert!(Mix::parse("").is_err());
        assert!(Mix::parse("health=x").is_err());
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let m = Mix::parse("load-table=90,commit=8,health=2").unwrap();
        let mut rng = Rng::new(42);
        let mut counts = [0u32; OpKind::ALL.len()];
        let n = 200_000;
        for _ in 0..n {
            counts[m.pick(rng.next_u64()).index()] += 1;
        }
        let share = |k: OpKind| counts[k.index()] as f64 / n as f64;
        assert!((share(OpKind::LoadTable) - 0.90).abs() < 0.005);
        assert!((share(OpKind::Commit) - 0.08).abs() < 0.005);
        assert!((share(OpKind::Health) - 0.02).abs() < 0.002);
        assert_eq!(counts.iter().sum::<u32>(), n);
    }

    #[test]
    fn names_round_trip() {
        for k in OpKind::ALL {
            assert_eq!(OpKind::from_name(k.name()), Some(k));
            assert_eq!(OpKind::ALL[k.index()], k);
            let v = <OpKind as clap::ValueEnum>::to_possible_value(&k).unwrap();
            assert_eq!(v.get_name(), k.name());
        }
    }
}
