//! Executes one operation of the mix on a connection.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::Conn;
use super::commit;
use super::http1::{write_request, Response};
use super::plan::Plan;
use super::scenario::{OpKind, Rng};
use super::stats::{OpError, ShardStats};

/// One connection and the state its operations carry between requests.
pub struct Worker {
    pub conn: Conn,
    pub rng: Rng,
    /// Global connection index, for unique names.
    pub id: usize,
    created: u64,
}

impl Worker {
    pub fn new(conn: Conn, id: usize, seed: u64) -> Worker {
        Worker { conn, rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), id, created: 0 }
    }
}

/// Sends the request already in `conn.req` and counts its response.
async fn send(conn: &mut Conn, stats: &RefCell<ShardStats>, measured: bool) -> Result<Response, OpError> {
    let r = conn.roundtrip(false).await?;
    stats.borrow_mut().response(r.status, measured);
    Ok(r)
}

fn success(r: &Response) -> Result<(), OpError> {
    match r.status {
        200..=299 => Ok(()),
        s => Err(OpError::Status(s)),
    }
}

pub async fn run_op(
    kind: OpKind,
    w: &mut Worker,
    plan: &Plan,
    stats: &RefCell<ShardStats>,
    measured: bool,
) -> Result<(), OpError> {
    let p = &plan.paths;
    let path = match kind {
        OpKind::Health => &p.health,
        OpKind::Config | OpKind::Idle => &p.config,
        OpKind::GetNamespace => &p.namespace,
        OpKind::ListNamespaces => &p.namespaces,
        OpKind::LoadTable => &p.table,
        OpKind::LoadTableWide => &p.wide_table,
        OpKind::CreateNamespace => return create_namespace(w, plan, stats, measured).await,
        OpKind::Commit => return commit(w, plan, stats, measured).await,
        OpKind::Fsync => unreachable!("execute refuses fsync in a load; run() measures it without a target"),
    };
    w.conn.req.clear();
    write_request(&mut w.conn.req, "GET", path, &plan.host, plan.token.as_deref(), None);
    success(&send(&mut w.conn, stats, measured).await?)
}

async fn create_namespace(
    w: &mut Worker,
    plan: &Plan,
    stats: &RefCell<ShardStats>,
    measured: bool,
) -> Result<(), OpError> {
    w.created += 1;
    let conn = &mut w.conn;
    conn.scratch.clear();
    let _ = write!(
        conn.scratch,
        r#"{{"namespace":["{}_c{}_{}"],"properties":{{"owner":"bingsan-bench"}}}}"#,
        plan.namespace_stem, w.id, w.created
    );
    conn.req.clear();
    write_request(
        &mut conn.req,
        "POST",
        &plan.paths.namespaces,
        &plan.host,
        plan.token.as_deref(),
        Some(&conn.scratch),
    );
    success(&send(conn, stats, measured).await?)
}

/// A writer's append: load the table, commit a new snapshot on top of what
/// it saw, and on 409 (someone else committed first) reload and try again.
async fn commit(w: &mut Worker, plan: &Plan, stats: &RefCell<ShardStats>, measured: bool) -> Result<(), OpError> {
    let hot = &plan.paths.hot_tables;
    let table = &hot[hot_index(plan.own_tables, w.id, &mut w.rng, hot.len())];
    for attempt in 0..=plan.commit_retries {
        if attempt > 0 {
            stats.borrow_mut().commit_retries += u64::from(measured);
            backoff(plan.commit_backoff, attempt, &mut w.rng).await;
        }
        w.conn.req.clear();
        write_request(&mut w.conn.req, "GET", &table.path, &plan.host, plan.token.as_deref(), None);
        let loaded = send(&mut w.conn, stats, measured).await?;
        success(&loaded)?;
        let new_id = w.rng.positive_i64();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (body, scratch) = w.conn.body_and_scratch(&loaded);
        let state = commit::parse_table_state(body).map_err(|_| OpError::Body)?;
        scratch.clear();
        commit::write_commit_body(scratch, &state, new_id, now_ms, &table.manifest_prefix, plan.keep_snapshots);
        let conn = &mut w.conn;
        conn.req.clear();
        write_request(&mut conn.req, "POST", &table.path, &plan.host, plan.token.as_deref(), Some(&conn.scratch));
        let posted = Instant::now();
        let r = send(conn, stats, measured).await?;
        if r.status != 409 {
            success(&r)?;
            if measured {
                stats.borrow_mut().commit_posts.record(posted.elapsed());
            }
            return Ok(());
        }
    }
    Err(OpError::CommitGaveUp)
}

/// The hot table a commit goes to: the writer's own (`--own-tables`), or any.
fn hot_index(own: bool, id: usize, rng: &mut Rng, tables: usize) -> usize {
    let pick = if own { id as u64 } else { rng.next_u64() };
    (pick % tables as u64) as usize
}

/// Exponential backoff with jitter before retry `attempt` (from 1), as
/// Iceberg writers do (there: 100 ms doubling); zero `base` retries at once.
async fn backoff(base: Duration, attempt: u32, rng: &mut Rng) {
    if base.is_zero() {
        return;
    }
    let exp = base.saturating_mul(1 << (attempt - 1).min(6));
    // Uniform in [0.5, 1.5) so contending writers spread out.
    let jitter = 0.5 + (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    glommio::timer::sleep(exp.mul_f64(jitter)).await;
}

#[cfg(test)]
mod tests {
    use super::{hot_index, Rng};

    #[test]
    fn own_tables_give_each_writer_one_table_and_no_two_writers_the_same() {
        let mut rng = Rng::new(7);
        for id in 0..8 {
            let first = hot_index(true, id, &mut rng, 8);
            assert!((0..20).all(|_| hot_index(true, id, &mut rng, 8) == first));
            assert_eq!(first, id);
        }
        let mut seen = [false; 8];
        (0..400).for_each(|_| seen[hot_index(false, 0, &mut rng, 8)] = true);
        assert!(seen.iter().all(|&s| s), "without --own-tables a writer spreads over all tables");
    }
}
