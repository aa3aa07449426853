//! Versioned schema migrations of the PostgreSQL store.
//!
//! `bingsan_schema` holds the version the schema is at; each migration runs
//! in its own transaction with the version bump, under a session advisory
//! lock, so several nodes starting at once migrate once. A node refuses a
//! schema newer than it knows: an older binary must not write a format it
//! does not understand.

use tokio_postgres::Client;

use super::conn::unavailable;
use crate::store::StoreError;

/// Advisory lock key held while migrating ("bingsan" in ASCII).
const LOCK: i64 = 0x0062_696e_6773_616e;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the key-value table and the compare-and-swap batch. A batch is one
    // call, so it is one transaction and pipelines like any query: rows the
    // batch expects are locked in key order (no deadlock between batches),
    // then each write checks its expectation in batch order; a failed one
    // raises BS409 with the write's index, which rolls everything back.
    // Expectations: -1 absent, -2 present, -3 any, n >= 1 that version.
    // Ops: 0 put, 1 delete, 2 check.
    r#"
CREATE TABLE bingsan_kv (key bytea PRIMARY KEY, version bigint NOT NULL, value bytea NOT NULL);
CREATE FUNCTION bingsan_apply(keys bytea[], expects bigint[], ops smallint[], vals bytea[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  i int;
  cur bigint;
  n int;
BEGIN
  PERFORM 1 FROM bingsan_kv WHERE key = ANY(keys) ORDER BY key FOR UPDATE;
  FOR i IN 1..coalesce(array_length(keys, 1), 0) LOOP
    SELECT version INTO cur FROM bingsan_kv WHERE key = keys[i];
    IF NOT FOUND THEN cur := NULL; END IF;
    IF (expects[i] = -1 AND cur IS NOT NULL) OR (expects[i] = -2 AND cur IS NULL)
       OR (expects[i] >= 0 AND cur IS DISTINCT FROM expects[i]) THEN
      RAISE EXCEPTION USING ERRCODE = 'BS409', MESSAGE = (i - 1)::text;
    END IF;
    IF ops[i] = 0 THEN
      IF cur IS NOT NULL THEN
        UPDATE bingsan_kv SET version = cur + 1, value = vals[i] WHERE key = keys[i];
      ELSIF expects[i] = -3 THEN
        INSERT INTO bingsan_kv VALUES (keys[i], 1, vals[i])
          ON CONFLICT (key) DO UPDATE SET version = bingsan_kv.version + 1, value = excluded.value;
      ELSE
        -- Inserted by a batch that committed after our read: a conflict.
        INSERT INTO bingsan_kv VALUES (keys[i], 1, vals[i]) ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
          RAISE EXCEPTION USING ERRCODE = 'BS409', MESSAGE = (i - 1)::text;
        END IF;
      END IF;
    ELSIF ops[i] = 1 THEN
      DELETE FROM bingsan_kv WHERE key = keys[i];
    END IF;
  END LOOP;
END $$;
"#,
];

/// The schema version this binary reads and writes.
pub const CURRENT: i32 = MIGRATIONS.len() as i32;

/// Brings the schema to `CURRENT`; returns how many migrations ran.
/// `schema`: create it first (the session's `search_path` points there).
pub async fn migrate(client: &Client, schema: Option<&str>) -> Result<usize, StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK]).await.map_err(fail)?;
    let outcome = migrate_locked(client, schema).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]).await.map_err(fail);
    let ran = outcome?;
    unlocked?;
    Ok(ran)
}

async fn migrate_locked(client: &Client, schema: Option<&str>) -> Result<usize, StoreError> {
    if let Some(schema) = schema {
        client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema))).await.map_err(fail)?;
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bingsan_schema (version int NOT NULL);
             INSERT INTO bingsan_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bingsan_schema)",
        )
        .await
        .map_err(fail)?;
    let at: i32 = client.query_one("SELECT version FROM bingsan_schema", &[]).await.map_err(fail)?.get(0);
    if at > CURRENT {
        return Err(StoreError::Io(
            crate::disk::Cause::Io,
            format!(
                "the database schema is at version {at}, newer than this Bingsan knows ({CURRENT}): upgrade Bingsan"
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
        let to = i + 1;
        let step = format!("BEGIN; {sql}; UPDATE bingsan_schema SET version = {to}; COMMIT;");
        if let Err(e) = client.batch_execute(&step).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(fail(e));
        }
        tracing::info!(version = to, "database schema migrated");
    }
    Ok(MIGRATIONS.len().saturating_sub(at as usize))
}

/// A failed migration step: the database refusing it (permissions, a
/// conflicting object) will refuse it again, so it is not worth a retry;
/// a lost connection is.
fn fail(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Io(crate::disk::Cause::Io, format!("migration failed: {db}")),
        None => unavailable("migration failed", e),
    }
}

/// An identifier quoted for SQL.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
