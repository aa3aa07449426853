//! Any JSON body for every request type: parsing and the commit engines
//! must answer Ok or an error, never panic.
#![no_main]

use bingsan::metadata::{
    apply_commit, apply_create, apply_view_commit, new_table_metadata, new_view_metadata, CommitTableRequest,
    CommitTransactionRequest, CommitViewRequest, CreateTableRequest, CreateViewRequest, TableMetadata, ViewMetadata,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if bingsan::json::check_limits(data, 64, 1 << 20).is_err() {
        return;
    }
    let _ = sonic_rs::from_slice::<CommitTransactionRequest>(data);
    let _ = sonic_rs::from_slice::<TableMetadata>(data);
    let _ = sonic_rs::from_slice::<ViewMetadata>(data);
    if let Ok(req) = sonic_rs::from_slice::<CreateTableRequest>(data) {
        if let Ok(md) = new_table_metadata(&req, "/w/t", "00000000-0000-0000-0000-000000000000", 1) {
            let _ = sonic_rs::to_vec(&md);
        }
    }
    if let Ok(req) = sonic_rs::from_slice::<CreateViewRequest>(data) {
        let _ = new_view_metadata(&req, "/w/v", "00000000-0000-0000-0000-000000000000", 1);
    }
    if let Ok(req) = sonic_rs::from_slice::<CommitTableRequest>(data) {
        let base = || sonic_rs::from_slice::<TableMetadata>(BASE).expect("fixture parses");
        let outcomes = [
            apply_create(&req.requirements, &req.updates, 2),
            apply_commit(base(), base, &req.requirements, &req.updates, 2),
        ];
        for out in outcomes.into_iter().flatten() {
            let _ = sonic_rs::to_vec(&out.metadata);
        }
    }
    if let Ok(req) = sonic_rs::from_slice::<CommitViewRequest>(data) {
        let base = sonic_rs::from_slice::<ViewMetadata>(VIEW).expect("fixture parses");
        let _ = apply_view_commit(&base, &req.requirements, &req.updates, 2);
    }
});

const BASE: &[u8] = include_bytes!("../../src/metadata/testdata/v2_full.json");
const VIEW: &[u8] = include_bytes!("../../src/metadata/testdata/view_v1.json");
