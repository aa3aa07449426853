use clap::{Parser, Subcommand};

use bingsan::backup::{BackupArgs, RestoreArgs};
use bingsan::bench::{BenchArgs, StaticArgs};
use bingsan::config::{CheckArgs, ServeArgs};

// The command line lives here, with the binary, so that the server and the
// load generator, which both hang off it, stay independent modules.

/// Bingsan: an Apache Iceberg REST catalog server.
#[derive(Parser, Debug)]
#[command(name = "bingsan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the catalog server.
    Serve(Box<ServeArgs>),
    /// Check every table's and view's current metadata file against the store
    /// (with the server stopped); exits 1 while any is missing or differs.
    Check(CheckArgs),
    /// Write a consistent snapshot of a running server's store to a new directory.
    Backup(BackupArgs),
    /// Load a backup into an empty data directory and restore the current
    /// metadata files the warehouse lacks (with the server stopped).
    Restore(RestoreArgs),
    /// Bring a PostgreSQL store's schema to this binary's version (serve does it too).
    Migrate(bingsan::admin::MigrateArgs),
    /// Store administration: copy a sled store into PostgreSQL.
    #[command(subcommand)]
    Store(bingsan::admin::StoreCommand),
    /// Drive an Iceberg REST catalog with load; report throughput, latency and pool figures.
    Bench(Box<BenchArgs>),
    /// A fixed-response HTTP server: this machine's ceiling, to calibrate `bench`.
    #[command(hide = true)]
    StaticServer(StaticArgs),
}

#[global_allocator]
static ALLOC: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;

/// Stack for every thread the process starts (shards included: glommio sets
/// none). Parsing a JSON body recurses once per nesting level, and unoptimized
/// builds use tens of KiB per level; 32 MiB is address space, committed only
/// as far as it is used.
const THREAD_STACK: &str = "33554432";

fn main() {
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        // Before any thread exists: std reads it once, at the first spawn.
        std::env::set_var("RUST_MIN_STACK", THREAD_STACK);
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log);
            if args.no_alloc_metrics {
                bingsan::alloc::disable();
            }
            bingsan::server::run(*args)
        }
        Command::Check(args) => bingsan::check::run(args),
        Command::Backup(args) => bingsan::backup::run_backup(args),
        Command::Restore(args) => bingsan::backup::run_restore(args),
        Command::Migrate(args) => bingsan::admin::migrate(args),
        Command::Store(command) => bingsan::admin::store(command),
        Command::Bench(args) => bingsan::bench::run(*args).map_err(|e| e.to_string()),
        Command::StaticServer(args) => bingsan::bench::static_server::run(args).map_err(|e| e.to_string()),
    };
    if let Err(e) = outcome {
        eprintln!("bingsan: {e}");
        std::process::exit(1);
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
