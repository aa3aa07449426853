//! iceberg-rust as the other client of tests/python/test_cross_client.py:
//! writes and reads the shared table shape (`rows.rs`) so PyIceberg can read
//! what iceberg-rust wrote and the other way round. Rows go to stdout as one
//! JSON array; any failure panics (exit 101) with the reason on stderr.
//!
//!   iceberg-rust-xclient write URI NS TABLE FIRST COUNT
//!       appends sample rows FIRST..FIRST+COUNT (creating NS and TABLE,
//!       partitioned by category, when missing); prints the rows written
//!   iceberg-rust-xclient read URI NS TABLE         prints every row

use bingsan_iceberg_rust_tests::{append, catalog, sample, scan, schema, write_rows, Row};
use iceberg::spec::{Transform, UnboundPartitionSpec};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["write", uri, ns, table, first, count] => {
            let first: i64 = first.parse().expect("FIRST is an integer");
            let count: i64 = count.parse().expect("COUNT is an integer");
            print_rows(&write(uri, ns, table, sample(first..first + count)).await);
        }
        ["read", uri, ns, table] => {
            let cat = catalog(uri, &[]).await;
            let table = cat.load_table(&ident(ns, table)).await.expect("load table");
            print_rows(&scan(&table, None).await);
        }
        _ => {
            eprintln!("usage: iceberg-rust-xclient write URI NS TABLE FIRST COUNT | read URI NS TABLE");
            std::process::exit(2);
        }
    }
}

fn ident(ns: &str, table: &str) -> TableIdent {
    TableIdent::new(NamespaceIdent::new(ns.to_string()), table.to_string())
}

async fn write(uri: &str, ns: &str, name: &str, rows: Vec<Row>) -> Vec<Row> {
    let cat = catalog(uri, &[]).await;
    let namespace = NamespaceIdent::new(ns.to_string());
    if !cat.namespace_exists(&namespace).await.expect("namespace exists") {
        cat.create_namespace(&namespace, Default::default()).await.expect("create namespace");
    }
    let ident = ident(ns, name);
    let table = if cat.table_exists(&ident).await.expect("table exists") {
        cat.load_table(&ident).await.expect("load table")
    } else {
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(3, "category", Transform::Identity)
            .expect("partition spec")
            .build();
        let creation = TableCreation::builder().name(name.to_string()).schema(schema()).partition_spec(spec).build();
        cat.create_table(&namespace, creation).await.expect("create table")
    };
    let files = write_rows(&table, &rows).await;
    append(&cat, &table, files).await.expect("append");
    rows
}

fn print_rows(rows: &[Row]) {
    println!("{}", serde_json::to_string(rows).expect("rows as JSON"));
}
