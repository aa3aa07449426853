use clap::Parser;

use bingsan::config::{Cli, Command};

#[global_allocator]
static ALLOC: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log);
            if args.no_alloc_metrics {
                bingsan::alloc::disable();
            }
            bingsan::server::run(*args)
        }
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
