//! The flags of `bingsan serve` and `bingsan check` and their `BINGSAN_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::catalog::Codec;

/// Settings of `bingsan check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Directory of the embedded store (sled) of the stopped server.
    #[arg(long, env = "BINGSAN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The store when not sled: a PostgreSQL URL, as `serve --store`.
    #[arg(long, env = "BINGSAN_STORE", default_value = "")]
    pub store: String,

    /// Warehouse root of the stopped server (path, file:// or s3:// URI).
    #[arg(long, env = "BINGSAN_WAREHOUSE", default_value = "./warehouse")]
    pub warehouse: String,

    /// The stopped server's warehouses file: every warehouse is checked.
    #[arg(long, env = "BINGSAN_WAREHOUSES_FILE")]
    pub warehouses_file: Option<PathBuf>,

    /// Rewrite each missing or differing file from the store's record.
    #[arg(long)]
    pub repair: bool,
}

/// Deepest JSON nesting the parser's recursion may reach within the shard
/// threads' stack (see `THREAD_STACK` in main.rs).
pub const MAX_JSON_DEPTH: usize = 256;

/// Settings of `bingsan serve`. Every flag has a `BINGSAN_*` variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address every shard listens on (SO_REUSEPORT: the kernel spreads connections).
    #[arg(long, env = "BINGSAN_LISTEN", default_value = "0.0.0.0:8181")]
    pub listen: SocketAddr,

    /// Number of shards (one pinned executor per core). 0: one per CPU the
    /// process may use: the smaller of its affinity mask and its cgroup CPU
    /// limit (cgroup v2 cpu.max or v1 CFS quota, rounded up).
    #[arg(long, env = "BINGSAN_SHARDS", default_value_t = 0)]
    pub shards: usize,

    /// Directory of the embedded store (sled).
    #[arg(long, env = "BINGSAN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The store: empty for the embedded sled store in --data-dir, or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`, optionally
    /// `?schema=name`) shared by any number of nodes (docs/postgres.md).
    #[arg(long, env = "BINGSAN_STORE", default_value = "")]
    pub store: String,

    /// PostgreSQL connections each shard keeps (queries are pipelined on them).
    #[arg(long, env = "BINGSAN_PG_CONNECTIONS_PER_SHARD", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pg_connections_per_shard: u32,

    /// How long start-up retries an unreachable PostgreSQL (with backoff)
    /// before giving up, in milliseconds.
    #[arg(long, env = "BINGSAN_PG_START_TIMEOUT_MS", default_value_t = 60_000)]
    pub pg_start_timeout_ms: u64,

    /// Warehouse root where table and view metadata files are written (path,
    /// file:// or s3:// URI): the one-warehouse shortcut of --warehouses-file.
    #[arg(long, env = "BINGSAN_WAREHOUSE", default_value = "./warehouse")]
    pub warehouse: String,

    /// Named warehouses (TOML, see docs/storage.md); replaces --warehouse.
    #[arg(long, env = "BINGSAN_WAREHOUSES_FILE")]
    pub warehouses_file: Option<PathBuf>,

    /// Catalog prefix advertised in /v1/config; clients then use /v1/{prefix}/... (empty: none).
    #[arg(long, env = "BINGSAN_PREFIX", default_value = "")]
    pub prefix: String,

    /// Extra namespace separator accepted in paths besides %1F (empty: only %1F).
    #[arg(long, env = "BINGSAN_NAMESPACE_SEPARATOR", default_value = "")]
    pub namespace_separator: String,

    /// Largest request line plus headers, in bytes (431 beyond).
    #[arg(long, env = "BINGSAN_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Largest request body, in bytes (413 beyond).
    #[arg(long, env = "BINGSAN_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// A request's head and body must arrive within this many milliseconds
    /// of its first byte (408 beyond): slow clients cannot hold a shard's memory.
    #[arg(long, env = "BINGSAN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Idle keep-alive connections are closed after this many milliseconds.
    #[arg(long, env = "BINGSAN_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,

    /// Open connections a shard accepts; beyond it, new ones get a 503 and
    /// are closed. Default: what the file-descriptor limit leaves after the
    /// store, the listeners and the warehouse writes, split over the shards.
    #[arg(long, env = "BINGSAN_MAX_CONNECTIONS_PER_SHARD")]
    pub max_connections_per_shard: Option<usize>,

    /// Requests that write or delete warehouse files (creates, commits,
    /// transactions, registers, purges) a shard runs at once; more wait their
    /// turn. Bounds the descriptors and memory a burst of writers can take.
    #[arg(long, env = "BINGSAN_MAX_WRITES_PER_SHARD", default_value_t = 64)]
    pub max_writes_per_shard: usize,

    /// Current metadata files the start-up pass checks (and restores from
    /// the store when missing or different) per second, on a thread of its
    /// own; 0: no pass.
    #[arg(long, env = "BINGSAN_VERIFY_METADATA_PER_SEC", default_value_t = 50)]
    pub verify_metadata_per_sec: u32,

    /// Bytes kept in a reserve file in the data directory and given up when
    /// the store cannot open on a full disk, so a restart still serves
    /// reads (writes stay refused until the disk has room for it again). 0: none.
    #[arg(long, env = "BINGSAN_STORE_RESERVE_BYTES", default_value_t = 8 << 20)]
    pub store_reserve_bytes: u64,

    /// Writes are refused (503) while the filesystem of the data directory or
    /// of the warehouse has less free space than this, and accepted again
    /// once it has more: the store never meets a full disk mid-write.
    #[arg(long, env = "BINGSAN_MIN_FREE_BYTES", default_value_t = 64 << 20)]
    pub min_free_bytes: u64,

    /// Deepest JSON nesting accepted in a request body (400 beyond).
    #[arg(long, env = "BINGSAN_MAX_JSON_DEPTH", default_value_t = 64)]
    pub max_json_depth: usize,

    /// Longest JSON string accepted in a request body, in bytes (400 beyond).
    #[arg(long, env = "BINGSAN_MAX_JSON_STRING_BYTES", default_value_t = 1 << 20)]
    pub max_json_string_bytes: usize,

    /// PEM certificate chain: serve HTTPS (TLS 1.2 and 1.3) instead of HTTP.
    #[arg(long, env = "BINGSAN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "BINGSAN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require `Authorization: Bearer <token>` on every catalog route (401
    /// otherwise); /health/*, /metrics and /v1/oauth/tokens stay open.
    #[arg(long, env = "BINGSAN_AUTH")]
    pub auth: bool,

    /// OAuth2 clients, one per line `client_id:salt_hex:pbkdf2_sha256_hex:iterations`:
    /// turns on POST /v1/oauth/tokens (client credentials). See docs/security.md.
    #[arg(long, env = "BINGSAN_AUTH_CLIENTS")]
    pub auth_clients_file: Option<PathBuf>,

    /// Key (the file's bytes, at least 32) that signs and checks access tokens.
    /// Absent: a random key, so tokens do not survive a restart.
    #[arg(long, env = "BINGSAN_AUTH_TOKEN_KEY_FILE")]
    pub auth_token_key_file: Option<PathBuf>,

    /// The key before a rotation: tokens it signed are still accepted.
    #[arg(long, env = "BINGSAN_AUTH_TOKEN_PREVIOUS_KEY_FILE", requires = "auth_token_key_file")]
    pub auth_token_previous_key_file: Option<PathBuf>,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "BINGSAN_AUTH_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub auth_token_ttl_secs: u64,

    /// A token refreshed by token exchange (no credentials) lives at most this
    /// many seconds after the client last presented its credentials.
    #[arg(long, env = "BINGSAN_AUTH_TOKEN_MAX_SESSION_SECS", default_value_t = 86_400)]
    pub auth_token_max_session_secs: u64,

    /// JWKS (RS256 and ES256 keys) of an external identity provider whose
    /// JWT access tokens are accepted.
    #[arg(long, env = "BINGSAN_AUTH_JWKS_FILE", requires_all = ["auth_jwt_issuer", "auth_jwt_audience"])]
    pub auth_jwks_file: Option<PathBuf>,

    /// The `iss` an accepted JWT must carry.
    #[arg(long, env = "BINGSAN_AUTH_JWT_ISSUER", requires = "auth_jwks_file")]
    pub auth_jwt_issuer: Option<String>,

    /// The `aud` an accepted JWT must carry (or list).
    #[arg(long, env = "BINGSAN_AUTH_JWT_AUDIENCE", requires = "auth_jwks_file")]
    pub auth_jwt_audience: Option<String>,

    /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds.
    #[arg(long, env = "BINGSAN_AUTH_JWT_LEEWAY_SECS", default_value_t = 60)]
    pub auth_jwt_leeway_secs: u64,

    /// Page size for list requests that ask to page without a pageSize.
    #[arg(long, env = "BINGSAN_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: usize,

    /// Largest page size a client may ask for.
    #[arg(long, env = "BINGSAN_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,

    /// Codec of new metadata files of tables and views that do not set
    /// `write.metadata.compression-codec`: none, or gzip (`*.gz.metadata.json`).
    #[arg(long, env = "BINGSAN_METADATA_COMPRESSION_CODEC", value_enum, default_value_t = Codec::None)]
    pub metadata_compression_codec: Codec,

    /// Capacity of a new pooled buffer (a pool miss), in bytes.
    #[arg(long, env = "BINGSAN_POOL_BUFFER_INITIAL", default_value_t = 4096)]
    pub pool_buffer_initial: usize,

    /// Buffers that grew past this many bytes are discarded, not kept.
    #[arg(long, env = "BINGSAN_POOL_BUFFER_MAX", default_value_t = 65536)]
    pub pool_buffer_max: usize,

    /// Most idle buffers a shard keeps.
    #[arg(long, env = "BINGSAN_POOL_BUFFERS_PER_SHARD", default_value_t = 128)]
    pub pool_buffers_per_shard: usize,

    /// Arenas that grew past this many bytes are discarded, not kept.
    #[arg(long, env = "BINGSAN_POOL_ARENA_MAX", default_value_t = 8 * 1024)]
    pub pool_arena_max: usize,

    /// Most idle arenas a shard keeps.
    #[arg(long, env = "BINGSAN_POOL_ARENAS_PER_SHARD", default_value_t = 64)]
    pub pool_arenas_per_shard: usize,

    /// Serve /metrics also on this address, from the metrics thread.
    #[arg(long, env = "BINGSAN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, env = "BINGSAN_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// Do not count heap allocations per shard (bingsan_allocs_total stays 0).
    #[arg(long, env = "BINGSAN_NO_ALLOC_METRICS")]
    pub no_alloc_metrics: bool,

    /// Log filter (tracing syntax), e.g. "info" or "bingsan=debug".
    #[arg(long, env = "BINGSAN_LOG", default_value = "info")]
    pub log: String,
}

impl ServeArgs {
    /// The warehouses served: the file's, or the `--warehouse` shortcut.
    pub fn warehouses(&self) -> Result<Vec<crate::warehouse::Warehouse>, String> {
        crate::warehouse::Warehouse::from_args(self.warehouses_file.as_deref(), &self.warehouse)
    }

    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !self.store.is_empty() && !crate::store::pg::is_postgres(&self.store) {
            return Err("--store takes a postgres:// URL (the embedded store is the default, in --data-dir)".into());
        }
        if self.pool_buffer_initial == 0 || self.pool_buffer_initial > self.pool_buffer_max {
            return Err("--pool-buffer-initial must be > 0 and <= --pool-buffer-max".into());
        }
        if matches!(self.prefix.as_str(), "namespaces" | "tables" | "views" | "transactions" | "config" | "oauth")
            || self.prefix.contains('/')
        {
            return Err(format!("--prefix {:?} would be ambiguous with a route", self.prefix));
        }
        if !(1..=MAX_JSON_DEPTH).contains(&self.max_json_depth) {
            return Err(format!("--max-json-depth must be between 1 and {MAX_JSON_DEPTH}"));
        }
        if self.max_writes_per_shard == 0 || self.max_connections_per_shard == Some(0) {
            return Err("--max-writes-per-shard and --max-connections-per-shard must be positive".into());
        }
        if self.default_page_size == 0 || self.max_page_size == 0 {
            return Err("page sizes must be positive".into());
        }
        Ok(())
    }
}
