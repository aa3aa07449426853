//! PgStore against the PostgreSQL on 127.0.0.1:5432 (database `test`), each
//! test in a schema of its own, dropped at the end.

use super::*;
use crate::store::{Expect, Write};

/// The database the tests use (`BINGSAN_TEST_PG` overrides).
fn base_url() -> String {
    std::env::var("BINGSAN_TEST_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// Runs `test` on a fresh migrated store in its own schema, on a glommio
/// executor, then drops the schema.
fn with_store(test: impl AsyncFnOnce(&Rc<PgStore>) + Send + 'static) {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    // The schema names the connections too, so a test can find them.
    let url = format!("{}?schema={schema}&application_name={schema}", base_url());
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let store = Rc::new(PgStore::new(&url, 2).unwrap());
            store.migrate().await.unwrap();
            // The schema goes even when the test fails.
            let outcome = futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(test(&store))).await;
            store.release_thread();
            drop_schema(&store, &schema).await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn drop_schema(store: &PgStore, schema: &str) {
    let (client, connection) = conn::connect(&store.target).await.unwrap();
    let driver = glommio::spawn_local(connection);
    client.batch_execute(&format!("DROP SCHEMA {} CASCADE", migrate::quote(schema))).await.unwrap();
    drop(client);
    let _ = driver.await;
}

async fn get(store: &PgStore, key: &[u8]) -> Option<(u64, Vec<u8>)> {
    store.get(key).await.unwrap().map(|v| (v.version, v.value.as_ref().to_vec()))
}

#[test]
fn cas_batches_are_atomic_and_versioned() {
    with_store(async |s| {
        s.apply(&[Write::put(b"a", Expect::Absent, b"1")]).await.unwrap();
        assert_eq!(get(s, b"a").await, Some((1, b"1".to_vec())));
        s.apply(&[Write::put(b"a", Expect::Version(1), b"2")]).await.unwrap();
        assert_eq!(get(s, b"a").await, Some((2, b"2".to_vec())));
        // The second write fails: the first must not land either.
        let lost = s.apply(&[Write::put(b"b", Expect::Absent, b"x"), Write::put(b"a", Expect::Version(1), b"3")]).await;
        assert_eq!(lost, Err(StoreError::Conflict { index: 1 }));
        assert_eq!(get(s, b"b").await, None);
        assert_eq!(s.apply(&[Write::put(b"a", Expect::Absent, b"x")]).await, Err(StoreError::Conflict { index: 0 }));
        assert_eq!(s.apply(&[Write::check(b"zz", Expect::Present)]).await, Err(StoreError::Conflict { index: 0 }));
        s.apply(&[Write::put(b"a", Expect::Any, b"4"), Write::put(b"c", Expect::Any, b"5")]).await.unwrap();
        assert_eq!(get(s, b"a").await, Some((3, b"4".to_vec())));
        assert_eq!(get(s, b"c").await, Some((1, b"5".to_vec())));
        s.apply(&[Write::check(b"a", Expect::Present), Write::delete(b"c", Expect::Version(1))]).await.unwrap();
        assert_eq!(get(s, b"c").await, None);
        // Same key twice in one batch: the second sees the first.
        s.apply(&[Write::put(b"d", Expect::Absent, b"1"), Write::put(b"d", Expect::Version(1), b"2")]).await.unwrap();
        assert_eq!(get(s, b"d").await, Some((2, b"2".to_vec())));
    });
}

#[test]
fn scans_are_ordered_paged_and_bounded_by_prefix() {
    with_store(async |s| {
        let n = (PAGE as usize) * 2 + 7;
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let keys: Vec<Vec<u8>> = chunk.iter().map(|i| format!("p/{i:05}").into_bytes()).collect();
            let writes: Vec<Write> = keys.iter().map(|k| Write::put(k, Expect::Absent, b"v")).collect();
            s.apply(&writes).await.unwrap();
        }
        s.apply(&[Write::put(b"p", Expect::Absent, b"x"), Write::put(b"q/0", Expect::Absent, b"x")]).await.unwrap();
        s.apply(&[Write::put(b"p/\xff\xff", Expect::Absent, b"x")]).await.unwrap();
        let mut seen = Vec::new();
        s.scan(b"p/", None, |k, v| {
            assert_eq!(v.version, 1);
            seen.push(k.to_vec());
            true
        })
        .await
        .unwrap();
        assert_eq!(seen.len(), n + 1, "every key under the prefix, nothing else");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
        // Continuation strictly after a key; stopping early.
        let mut after = Vec::new();
        s.scan(b"p/", Some(b"p/00299"), |k, _| {
            after.push(k.to_vec());
            after.len() < 3
        })
        .await
        .unwrap();
        assert_eq!(after, vec![b"p/00300".to_vec(), b"p/00301".to_vec(), b"p/00302".to_vec()]);
        let mut all = 0;
        s.scan(b"", None, |_, _| {
            all += 1;
            true
        })
        .await
        .unwrap();
        assert_eq!(all, n + 3, "the empty prefix scans everything");
    });
}

#[test]
fn concurrent_creates_have_one_winner() {
    with_store(async |s| {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                glommio::spawn_local(async move {
                    s.apply(&[Write::put(b"race", Expect::Absent, format!("{i}").as_bytes())]).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict { index: 0 }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(wins, 1);
    });
}

#[test]
fn a_newer_schema_is_refused() {
    with_store(async |s| {
        assert_eq!(s.migrate().await.unwrap(), 0, "migrating twice does nothing");
        let c = s.conn().await.unwrap();
        c.client.batch_execute("UPDATE bingsan_schema SET version = version + 1").await.unwrap();
        let e = s.migrate().await.unwrap_err();
        assert!(e.to_string().contains("newer than this Bingsan knows"), "{e}");
    });
}

#[test]
fn urls_take_a_schema_parameter() {
    assert_eq!(split_schema("postgres://h/db?schema=x"), ("postgres://h/db".into(), Some("x".into())));
    assert_eq!(
        split_schema("postgres://h/db?sslmode=disable&schema=x"),
        ("postgres://h/db?sslmode=disable".into(), Some("x".into()))
    );
    assert_eq!(split_schema("postgres://h/db"), ("postgres://h/db".into(), None));
    assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(successor(b"\xff"), None);
}

#[test]
fn connections_come_back_after_the_server_drops_them() {
    with_store(async |s| {
        s.apply(&[Write::put(b"k", Expect::Absent, b"v")]).await.unwrap();
        let schema = s.schema.clone().unwrap();
        let (admin, connection) = conn::connect(&s.target).await.unwrap();
        let driver = glommio::spawn_local(connection);
        let killed = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 \
                 AND pid <> pg_backend_pid()",
                &[&schema],
            )
            .await
            .unwrap();
        assert_eq!(killed, 2, "the shard's two connections");
        drop(admin);
        let _ = driver.await;
        // Until a connection is back: 503-class errors, never a wrong answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut failures = 0;
        loop {
            match s.get(b"k").await {
                Ok(v) => {
                    assert_eq!(v.unwrap().value.as_ref(), b"v");
                    break;
                }
                Err(e) => {
                    assert_eq!(e.cause(), Some(Cause::Unavailable), "{e}");
                    failures += 1;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no connection came back");
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(failures > 0, "the dropped connections went unnoticed");
        s.apply(&[Write::put(b"k", Expect::Version(1), b"w")]).await.unwrap();
    });
}
