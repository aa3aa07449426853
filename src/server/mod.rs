//! `bingsan serve`: start the store, the metrics thread and one shard per
//! core; wait for SIGINT/SIGTERM; drain; make the store durable; exit.

mod admin;
mod cpus;
mod delegate;
mod idempotency;
pub(crate) mod os;
mod served;
mod service;
mod shard;
mod state;
mod tls;
mod trim;
mod verify;

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::catalog::Settings;
use crate::config::ServeArgs;
use crate::disk::{self, Cause, DiskWatch, Reserve, WatchConfig};
use crate::fileio::FileIo;
use crate::http::ConnLimits;
use crate::metrics::{MetricsThread, ShardStats};
use crate::pool::PoolConfig;
use crate::routes::{Operation, RouteConfig};
use crate::store::pg::is_postgres;
use crate::store::{guard_default, PgStore, Store};
use crate::warehouse::Warehouse;
use service::JsonLimits;

pub use state::Shared;

/// io_uring registered memory per shard: we do little file I/O, so keep the
/// locked-memory budget small.
const IO_MEMORY: usize = 1 << 20;
/// File descriptors to ask for: the 10k-connection target plus headroom.
const WANTED_FDS: u64 = 65_536;
/// Fewest connections per shard worth starting with.
const MIN_CONNECTIONS: usize = 64;

/// Runs the server until a signal; `Err` carries a message for the operator.
pub fn run(args: ServeArgs) -> Result<(), String> {
    args.validate()?;
    let auth = crate::auth::Authenticator::from_args(&args)?;
    let delegation = crate::delegation::Delegation::from_warehouses(&args.warehouses()?, args.tls_cert.is_some())?;
    let cpus = os::allowed_cpus()?;
    os::check_io_uring()?;
    os::ensure_port_free(args.listen)?;
    let shards = if args.shards == 0 {
        let count = cpus::default_shards(cpus.len(), std::path::Path::new("/"));
        tracing::info!(shards = count.shards, reason = %count.reason, "shard count");
        count.shards
    } else {
        tracing::info!(shards = args.shards, reason = "set by --shards", "shard count");
        args.shards
    };
    // One executor per shard, and the metadata verifier's.
    let nofile = os::raise_limits(WANTED_FDS, shards + 1, IO_MEMORY)?;
    // A shard's database connections are descriptors too.
    let database_fds = if is_postgres(&args.store) { args.pg_connections_per_shard as u64 } else { 0 };
    let budget = os::connection_budget(nofile, shards, args.max_writes_per_shard, database_fds) as usize;
    let max_connections = match args.max_connections_per_shard {
        Some(n) if n > budget => {
            tracing::warn!(
                nofile,
                per_shard = n,
                budget,
                "--max-connections-per-shard exceeds what RLIMIT_NOFILE leaves; accepts and writes may fail (raise ulimit -n)"
            );
            n
        }
        Some(n) => n,
        None if budget < MIN_CONNECTIONS => {
            return Err(format!(
                "RLIMIT_NOFILE is {nofile}: too few descriptors for {shards} shards (raise ulimit -n, or lower \
                 --shards or --max-writes-per-shard)"
            ))
        }
        None => budget,
    };
    let signals = os::block_signals();

    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("cannot create data dir {:?}: {e}", args.data_dir))?;
    let start = Start { auth, delegation, cpus, shards, max_connections, signals };
    if is_postgres(&args.store) {
        let store = open_postgres(&args)?;
        // No embedded store on this disk: nothing to reserve room for.
        let reserve = Reserve::new(&args.data_dir, 0);
        serve(args, store, reserve, start)
    } else {
        let reserve = Reserve::new(&args.data_dir, args.store_reserve_bytes);
        let store = disk::open_store(&args.data_dir, &reserve)?;
        serve(args, store, reserve, start)
    }
}

/// What `run` worked out before the store opened.
struct Start {
    auth: crate::auth::Authenticator,
    delegation: crate::delegation::Delegation,
    cpus: Vec<usize>,
    shards: usize,
    max_connections: usize,
    signals: libc::sigset_t,
}

/// Opens the PostgreSQL store and migrates its schema, retrying an
/// unreachable database with backoff for `--pg-start-timeout-ms`.
fn open_postgres(args: &ServeArgs) -> Result<PgStore, String> {
    let store = PgStore::new(&args.store, args.pg_connections_per_shard as usize)?;
    let deadline = Instant::now() + Duration::from_millis(args.pg_start_timeout_ms);
    on_executor("bingsan-start", move || async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match store.migrate().await {
                Ok(_) => return Ok(store),
                Err(e) if e.cause() != Some(Cause::Io) && Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "PostgreSQL unreachable; retrying");
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("cannot open the PostgreSQL store: {e}")),
            }
        }
    })?
}

/// Runs `task` to completion on a glommio executor of its own (the store
/// may need one: PostgreSQL connections are glommio sockets).
pub fn on_executor<T, G, Fut>(name: &str, task: G) -> Result<T, String>
where
    T: Send + 'static,
    G: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(IO_MEMORY)
        .spawn(task)
        .map_err(|e| format!("cannot start {name}: {e}"))?
        .join()
        .map_err(|e| format!("{name} failed: {e}"))
}

/// Serves the catalog in `store` until a signal.
fn serve<S: Store + Send + Sync>(args: ServeArgs, store: S, reserve: Reserve, start: Start) -> Result<(), String> {
    let Start { auth, delegation, cpus, shards, max_connections, signals } = start;
    let warehouses = args.warehouses()?;
    // A named default warehouse is served under its name unless --prefix
    // says otherwise; every other warehouse under its name.
    let prefix = if args.prefix.is_empty() && args.warehouses_file.is_some() {
        warehouses[0].name.clone()
    } else {
        args.prefix.clone()
    };
    let settings = Settings {
        prefix: prefix.clone(),
        separator_encoded: encode_separator(&args.namespace_separator),
        default_page_size: args.default_page_size,
        max_page_size: args.max_page_size,
        metadata_codec: args.metadata_compression_codec,
    };
    let store = Arc::new(store);
    let warehouses = served::open(&store, warehouses, &prefix, &settings)?;
    let watch = WatchConfig {
        data_dir: args.data_dir.clone(),
        warehouses: warehouses.iter().filter_map(|w| w.catalog.files.local_dir()).collect(),
        min_free: args.min_free_bytes,
    };
    let _disk_watch = DiskWatch::start(watch, reserve).map_err(|e| format!("cannot start the disk watcher: {e}"))?;
    let stats: Vec<Arc<ShardStats>> = (0..shards).map(|i| Arc::new(ShardStats::new(i))).collect();
    let metrics = MetricsThread::start(stats.clone(), args.metrics_listen)
        .map_err(|e| format!("cannot start metrics on {:?}: {e}", args.metrics_listen))?;
    let _trimmer = trim::Trimmer::start(stats.clone()).map_err(|e| format!("cannot start the heap trimmer: {e}"))?;
    let shared = Arc::new(Shared {
        store,
        warehouses,
        shards,
        accepting: AtomicUsize::new(0),
        stats,
        metrics: metrics.handle(),
        shutdown: Default::default(),
        named_warehouse: args.warehouses_file.is_some(),
        auth,
        delegation: Arc::new(delegation),
    });
    // Before any shard serves, in every warehouse: tables from before the
    // location index get their claims; purges a stop cut short release
    // their locations.
    let startup = shared.clone();
    let (claimed, interrupted) = on_executor("bingsan-start", move || async move {
        let (mut claimed, mut interrupted) = (0, 0);
        let default = &startup.warehouses[0];
        guard_default(&*startup.store, &default.warehouse.name, default.catalog.files.root(), true).await?;
        for served in &startup.warehouses {
            let catalog = &served.catalog;
            claimed += catalog.index_locations().await.map_err(|e| format!("cannot index table locations: {e}"))?;
            interrupted += catalog
                .end_interrupted_purges()
                .await
                .map_err(|e| format!("cannot release interrupted purges: {e}"))?;
        }
        startup.store.release_thread();
        Ok::<_, String>((claimed, interrupted))
    })??;
    if claimed > 0 {
        tracing::info!(claimed, "indexed the locations of existing tables and views");
    }
    if interrupted > 0 {
        tracing::warn!(interrupted, "purges interrupted by a stop released their locations; their files may remain");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    log_effective_config(&args, &shared, shards, max_connections);
    // Serving matters more than backups: a socket that cannot be made (a
    // path over 107 bytes, a filesystem without sockets) is logged, not fatal.
    // Only the embedded store has one: PostgreSQL is backed up with its tools.
    let _admin = match shared.store.embedded() {
        Some(_) => admin::start(&args.data_dir, shared.clone())
            .map_err(|e| tracing::warn!(error = %e, "no admin socket: `bingsan backup` is unavailable"))
            .ok(),
        None => None,
    };

    let (ready_tx, ready_rx) = channel();
    let mut handles = Vec::with_capacity(shards);
    for id in 0..shards {
        let setup = shard::ShardSetup {
            id,
            listen: args.listen,
            pools: PoolConfig {
                buffer_initial: args.pool_buffer_initial,
                buffer_max: args.pool_buffer_max,
                buffers_per_shard: args.pool_buffers_per_shard,
                arena_max: args.pool_arena_max,
                arenas_per_shard: args.pool_arenas_per_shard,
            },
            limits: ConnLimits {
                max_head: args.max_header_bytes,
                max_body: args.max_body_bytes,
                request_timeout: Duration::from_millis(args.request_timeout_ms),
                idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            },
            max_connections,
            max_writes: args.max_writes_per_shard,
            json: JsonLimits { max_depth: args.max_json_depth, max_string: args.max_json_string_bytes },
            tls: tls.clone(),
            routes: RouteConfig {
                prefixes: shared.warehouses.iter().map(|w| w.catalog.settings.prefix.clone()).collect(),
                separator: args.namespace_separator.clone(),
            },
            drain: Duration::from_millis(args.drain_timeout_ms),
        };
        let (shared, ready) = (shared.clone(), ready_tx.clone());
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpus[id % cpus.len()]))
            .name(&format!("bingsan-shard-{id}"))
            .io_memory(IO_MEMORY)
            .ring_depth(crate::uring::RING_DEPTH)
            .spawn(move || shard::run(setup, shared, ready))
            .map_err(|e| format!("cannot start shard {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a shard exited during start-up".to_string()),
        }
    }
    if failure.is_none() {
        tracing::info!(listen = %args.listen, shards, "bingsan is serving");
        if args.verify_metadata_per_sec > 0 {
            match verify::start(shared.clone(), args.verify_metadata_per_sec) {
                Ok(h) => handles.push(h),
                Err(e) => failure = Some(e),
            }
        }
    }
    if failure.is_none() {
        let signal = os::wait_for_signal(&signals);
        tracing::info!(signal, "shutting down: draining connections");
    }
    shared.shutdown.request();
    for h in handles {
        let _ = h.join();
    }
    shared.store.sync().map_err(|e| format!("final store flush failed: {e}"))?;
    tracing::info!("store flushed; bye");
    failure.map_or(Ok(()), Err)
}

/// `/v1/config`: the same bytes for every request, built once. The
/// warehouse's client properties (S3 endpoint, region, path style) are
/// defaults, so a client that reaches the store another way can override them.
fn config_body(settings: &Settings, warehouse: &Warehouse) -> Vec<u8> {
    use crate::json::{write_str, write_str_array};
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"defaults\":{");
    for (i, (key, value)) in warehouse.client_properties().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, key);
        out.push(b':');
        write_str(&mut out, value);
    }
    out.extend_from_slice(b"},\"overrides\":{");
    if !settings.prefix.is_empty() {
        out.extend_from_slice(b"\"prefix\":");
        write_str(&mut out, &settings.prefix);
        out.push(b',');
    }
    out.extend_from_slice(b"\"namespace-separator\":");
    write_str(&mut out, &settings.separator_encoded);
    out.extend_from_slice(b"},\"idempotency-key-lifetime\":");
    write_str(&mut out, idempotency::LIFETIME);
    out.extend_from_slice(b",\"endpoints\":");
    let endpoints: Vec<String> = Operation::ALL
        .iter()
        .map(|op| op.spec())
        .filter(|s| s.advertised())
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    write_str_array(&mut out, endpoints.iter().map(String::as_str));
    out.push(b'}');
    out
}

/// The separator as the spec advertises it: percent-encoded.
fn encode_separator(sep: &str) -> String {
    if sep.is_empty() {
        return "%1F".to_string();
    }
    sep.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn log_effective_config<S: Store, F: crate::fileio::FileIo>(
    args: &ServeArgs,
    shared: &Shared<S, F>,
    shards: usize,
    max_connections_per_shard: usize,
) {
    for (i, served) in shared.warehouses.iter().enumerate() {
        tracing::info!(
            warehouse = %served.warehouse.name,
            root = %served.warehouse.root,
            prefix = %served.catalog.settings.prefix,
            default = i == 0,
            "warehouse served"
        );
    }
    tracing::info!(
        listen = %args.listen,
        shards,
        data_dir = ?args.data_dir,
        // Never the URL: it may hold a password.
        store = if is_postgres(&args.store) { "postgres" } else { "sled" },
        pg_connections_per_shard = args.pg_connections_per_shard,
        warehouses = shared.warehouses.len(),
        max_header_bytes = args.max_header_bytes,
        max_body_bytes = args.max_body_bytes,
        pool_buffer_initial = args.pool_buffer_initial,
        pool_buffer_max = args.pool_buffer_max,
        pool_buffers_per_shard = args.pool_buffers_per_shard,
        pool_arena_max = args.pool_arena_max,
        pool_arenas_per_shard = args.pool_arenas_per_shard,
        metrics_listen = ?args.metrics_listen,
        request_timeout_ms = args.request_timeout_ms,
        idle_timeout_ms = args.idle_timeout_ms,
        max_connections_per_shard,
        max_writes_per_shard = args.max_writes_per_shard,
        store_reserve_bytes = args.store_reserve_bytes,
        min_free_bytes = args.min_free_bytes,
        max_json_depth = args.max_json_depth,
        verify_metadata_per_sec = args.verify_metadata_per_sec,
        max_json_string_bytes = args.max_json_string_bytes,
        tls = args.tls_cert.is_some(),
        drain_timeout_ms = args.drain_timeout_ms,
        "effective configuration"
    );
}
