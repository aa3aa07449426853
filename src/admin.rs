//! Store administration: `bingsan migrate` and `bingsan store copy`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::server::on_executor;
use crate::store::pg::is_postgres;
use crate::store::{PgStore, SledStore, Store};

/// Settings of `bingsan migrate`.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The PostgreSQL store to migrate (`postgres://...`, as `serve --store`).
    #[arg(long, env = "BINGSAN_STORE")]
    pub store: String,
}

/// `bingsan store ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum StoreCommand {
    /// Copies every key of a stopped server's sled store into a PostgreSQL
    /// store, versions included, then checks the counts match.
    Copy(CopyArgs),
}

/// Settings of `bingsan store copy`.
#[derive(Args, Debug, Clone)]
pub struct CopyArgs {
    /// The source: `sled:DIR`, the data directory of a stopped server.
    #[arg(long)]
    pub from: String,
    /// The target: a PostgreSQL store URL (`postgres://...`).
    #[arg(long)]
    pub to: String,
    /// Replace what the target holds (it is refused when not empty otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Keys copied per statement.
const CHUNK: usize = 500;

/// Brings the schema of a PostgreSQL store to this binary's version.
pub fn migrate(args: MigrateArgs) -> Result<(), String> {
    if !is_postgres(&args.store) {
        return Err("--store takes a postgres:// URL".into());
    }
    let store = PgStore::new(&args.store, 1)?;
    let ran = on_executor("bingsan-migrate", move || async move {
        store.migrate().await.map_err(|e| format!("migration failed: {e}"))
    })??;
    println!("schema at version {} ({ran} migrations applied)", crate::store::pg::migrate::CURRENT);
    Ok(())
}

pub fn store(command: StoreCommand) -> Result<(), String> {
    match command {
        StoreCommand::Copy(args) => copy(args),
    }
}

fn copy(args: CopyArgs) -> Result<(), String> {
    let dir = args.from.strip_prefix("sled:").ok_or("--from takes sled:DIR")?;
    let dir = PathBuf::from(dir);
    if !dir.join("conf").is_file() {
        return Err(format!("{dir:?} holds no sled store"));
    }
    if !is_postgres(&args.to) {
        return Err("--to takes a postgres:// URL".into());
    }
    let from = SledStore::open(&dir).map_err(|e| format!("cannot open {dir:?} (is its server stopped?): {e}"))?;
    let to = PgStore::new(&args.to, 1)?;
    let force = args.force;
    let copied = on_executor("bingsan-copy", move || async move {
        to.migrate().await.map_err(|e| format!("cannot prepare the target: {e}"))?;
        let present = to.count().await.map_err(|e| e.to_string())?;
        if present > 0 && !force {
            return Err(format!("the target holds {present} keys: refusing to copy into it without --force"));
        }
        if present > 0 {
            to.clear().await.map_err(|e| e.to_string())?;
        }
        let mut after: Option<Vec<u8>> = None;
        let mut copied = 0u64;
        loop {
            let mut rows = Vec::with_capacity(CHUNK);
            from.scan(b"", after.as_deref(), |k, v| {
                rows.push((k.to_vec(), v.version, v.value.to_vec()));
                rows.len() < CHUNK
            })
            .await
            .map_err(|e| format!("cannot read the source: {e}"))?;
            if rows.is_empty() {
                break;
            }
            to.copy_in(&rows).await.map_err(|e| e.to_string())?;
            copied += rows.len() as u64;
            after = rows.pop().map(|r| r.0);
        }
        let landed = to.count().await.map_err(|e| e.to_string())?;
        if landed != copied {
            return Err(format!("copied {copied} keys but the target holds {landed}: do not use it"));
        }
        Ok(copied)
    })??;
    println!("copied {copied} keys; counts match");
    Ok(())
}
