//! Harness for running the iceberg-rust crates against the real Bingsan
//! binary: a server process on a free loopback port with its own temporary
//! store and warehouse, a REST catalog built the way an application builds
//! one, and the few data helpers the tests and the cross-client binary share.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder, REST_CATALOG_PROP_URI};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use parquet::file::properties::WriterProperties;

mod rows;
pub use rows::{sample, schema, Row};

/// How long a server gets to answer `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `--warehouse` argument for a local directory: the default bare-path
/// form, which the server turns into `file://` URIs; iceberg-rust's
/// scheme-resolving storage fails on bare locations ("relative URL without
/// a base"), so this is what shows every location carries its scheme.
pub fn warehouse_arg(dir: &Path) -> String {
    dir.display().to_string()
}

/// The server binary: `$BINGSAN_BIN`, else the repository's debug build.
fn bingsan_bin() -> PathBuf {
    match std::env::var_os("BINGSAN_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/bingsan"),
    }
}

/// One `bingsan serve` process on 127.0.0.1, stopped with SIGTERM by
/// [`Server::stop`] (which asserts a clean exit) or killed on drop.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with two shards, waits until it is ready.
    pub fn start() -> Server {
        Server::launch(tempfile::tempdir().expect("temp dir"), Vec::new())
    }

    /// Starts a server with `--auth` and an OAuth2 clients file holding
    /// `clients` (lines as docs/security.md describes them).
    pub fn start_with_clients_file(clients: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clients");
        std::fs::write(&path, clients).expect("write clients file");
        Server::launch(dir, vec!["--auth".into(), "--auth-clients-file".into(), path.into()])
    }

    fn launch(dir: tempfile::TempDir, extra: Vec<OsString>) -> Server {
        let bin = bingsan_bin();
        assert!(bin.is_file(), "server binary {} not found: build it or set BINGSAN_BIN", bin.display());
        std::fs::create_dir(dir.path().join("warehouse")).expect("warehouse dir");
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .args(["--listen", &addr.to_string(), "--shards", "2"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--warehouse", &warehouse_arg(&dir.path().join("warehouse"))])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill the
        // server when this test process dies, so none outlives a crash.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn bingsan");
        let mut server = Server { child: Some(child), addr, dir };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                panic!("bingsan exited with {status} during start-up\n{}", self.log());
            }
            if http_get(self.addr, "/health/ready").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("bingsan not ready within {READY_TIMEOUT:?}\n{}", self.log());
    }

    /// `http://127.0.0.1:PORT`, the catalog URI.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The local warehouse directory.
    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }

    /// How many requests the server answered with `status`, from its
    /// `/metrics` (a server without `--auth`).
    pub fn count_status(&self, status: u16) -> u64 {
        let (code, body) = http_get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        let label = format!("status=\"{status}\"");
        body.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("server running")
    }

    /// SIGTERM, SIGKILL after [`STOP_TIMEOUT`]; asserts the server exited 0.
    pub fn stop(mut self) {
        let status = self.terminate();
        assert!(status.success(), "bingsan did not exit 0 after SIGTERM: {status}\n{}", self.log());
    }

    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

/// `GET path` over a fresh connection: the status and the body, or `None`
/// when the server does not answer (yet). Bounded by socket timeouts.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// A REST catalog on `uri` as an application builds one: the builder with
/// the scheme-resolving storage factory, which picks the storage from each
/// location's scheme. `props` adds catalog properties (e.g. `credential`).
pub async fn catalog(uri: &str, props: &[(&str, &str)]) -> RestCatalog {
    let mut all = HashMap::from([(REST_CATALOG_PROP_URI.to_string(), uri.to_string())]);
    all.extend(props.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(OpenDalResolvingStorageFactory::new()))
        .load("bingsan", all)
        .await
        .expect("build REST catalog")
}

fn data_file_writer(
    table: &Table,
) -> DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator> {
    let metadata = table.metadata();
    let parquet = ParquetWriterBuilder::new(WriterProperties::default(), metadata.current_schema().clone());
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata).expect("location generator"),
        // A unique prefix per writer: parallel writers must not collide.
        DefaultFileNameGenerator::new(uuid::Uuid::new_v4().to_string(), None, DataFileFormat::Parquet),
    );
    DataFileWriterBuilder::new(rolling)
}

/// Writes `batch` as Parquet data files of an unpartitioned table.
async fn write_files(table: &Table, batch: RecordBatch) -> Vec<DataFile> {
    let mut writer = data_file_writer(table).build(None).await.expect("data file writer");
    writer.write(batch).await.expect("write batch");
    writer.close().await.expect("close writer")
}

/// Writes `batch` as Parquet data files of a partitioned table: one file per
/// partition, split by the table's default spec.
async fn write_partitioned_files(table: &Table, batch: RecordBatch) -> Vec<DataFile> {
    let metadata = table.metadata();
    let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
        metadata.current_schema().clone(),
        metadata.default_partition_spec().clone(),
    )
    .expect("partition splitter");
    let mut writer = FanoutWriter::new(data_file_writer(table));
    for (key, part) in splitter.split(&batch).expect("split batch") {
        writer.write(key, part).await.expect("write partition");
    }
    writer.close().await.expect("close writer")
}

/// Writes `rows` as Parquet data files of `table`, split by its default
/// partition spec when it has one.
pub async fn write_rows(table: &Table, rows: &[Row]) -> Vec<DataFile> {
    let batch = Row::to_batch(table.metadata().current_schema(), rows);
    if table.metadata().default_partition_spec().is_unpartitioned() {
        write_files(table, batch).await
    } else {
        write_partitioned_files(table, batch).await
    }
}

/// One `fast_append` of `files`, committed with the client's own retry.
pub async fn append(catalog: &dyn Catalog, table: &Table, files: Vec<DataFile>) -> iceberg::Result<Table> {
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx)?;
    tx.commit(catalog).await
}

/// Every row of `table`'s current snapshot (or of `snapshot_id`), read
/// with `scan().to_arrow()`, sorted by `id`.
pub async fn scan(table: &Table, snapshot_id: Option<i64>) -> Vec<Row> {
    let mut builder = table.scan();
    if let Some(id) = snapshot_id {
        builder = builder.snapshot_id(id);
    }
    let batches: Vec<RecordBatch> = builder
        .build()
        .expect("build scan")
        .to_arrow()
        .await
        .expect("scan to arrow")
        .try_collect()
        .await
        .expect("read batches");
    let mut rows: Vec<Row> = batches.iter().flat_map(Row::from_batch).collect();
    rows.sort_by_key(|r| r.id);
    rows
}
