//! The writer side of the commit scenario: read what a commit needs from a
//! LoadTableResult, and build the CommitTableRequest that appends a snapshot
//! on top of it (optimistic concurrency via `assert-ref-snapshot-id`).

use std::io::{self, Write};

use sonic_rs::{JsonValueTrait, LazyValue};

/// The parts of table metadata a commit builds on. Borrows the response body.
#[derive(Debug)]
pub struct TableState<'a> {
    /// Current snapshot (`None` for an empty table).
    pub current: Option<i64>,
    pub last_sequence_number: i64,
    /// The raw `snapshots` array, for expiring old snapshots.
    snapshots: Option<LazyValue<'a>>,
}

fn bad(_: impl std::fmt::Debug) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "not a LoadTableResult")
}

/// Reads a LoadTableResult (or CommitTableResponse) in one lazy pass over the
/// top-level metadata keys, without building a tree.
pub fn parse_table_state(body: &[u8]) -> io::Result<TableState<'_>> {
    let metadata = sonic_rs::get_from_slice(body, &["metadata"]).map_err(bad)?;
    let mut state = TableState { current: None, last_sequence_number: 0, snapshots: None };
    for entry in metadata.into_object_iter().ok_or_else(|| bad(()))? {
        let (key, value) = entry.map_err(bad)?;
        match key.as_ref() {
            // -1 is how format v1 spells "no snapshot".
            "current-snapshot-id" => state.current = value.as_i64().filter(|&id| id >= 0),
            "last-sequence-number" => state.last_sequence_number = value.as_i64().unwrap_or(0),
            "snapshots" => state.snapshots = Some(value),
            _ => {}
        }
    }
    Ok(state)
}

/// Snapshot ids to remove so that, with the new snapshot, at most `keep`
/// remain: the oldest first, never the current one.
fn expired_ids<'s>(state: &'s TableState<'_>, keep: usize) -> impl Iterator<Item = i64> + 's {
    let snapshots = state.snapshots.as_ref().filter(|_| keep > 0);
    let total = snapshots.map(|s| sonic_rs::to_array_iter(s.as_raw_str()).count()).unwrap_or(0);
    let excess = (total + 1).saturating_sub(keep);
    snapshots
        .into_iter()
        .flat_map(|s| sonic_rs::to_array_iter(s.as_raw_str()))
        .filter_map(|snap| {
            let snap = snap.ok()?;
            sonic_rs::get_from_str(snap.as_raw_str(), &["snapshot-id"]).ok()?.as_i64()
        })
        .filter(move |&id| Some(id) != state.current)
        .take(excess)
}

/// Writes a CommitTableRequest that appends snapshot `new_id` to the table in
/// `state` and moves `main` to it, asserting `main` is still where it was.
/// Snapshots beyond `keep` (0 = unlimited) are removed in the same commit.
pub fn write_commit_body(
    out: &mut Vec<u8>,
    state: &TableState<'_>,
    new_id: i64,
    now_ms: u64,
    manifest_prefix: &str,
    keep: usize,
) {
    let cur = state.current;
    let seq = state.last_sequence_number + 1;
    // Writing into a Vec cannot fail.
    let _ = write!(out, r#"{{"requirements":[{{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":"#);
    let _ = match cur {
        Some(id) => write!(out, "{id}"),
        None => write!(out, "null"),
    };
    let _ = write!(out, r#"}}],"updates":[{{"action":"add-snapshot","snapshot":{{"snapshot-id":{new_id},"#);
    if let Some(id) = cur {
        let _ = write!(out, r#""parent-snapshot-id":{id},"#);
    }
    let _ = write!(
        out,
        r#""sequence-number":{seq},"timestamp-ms":{now_ms},"manifest-list":"{manifest_prefix}/snap-{new_id}-1-bench.avro","summary":{{"operation":"append","added-data-files":"1","added-records":"1000","added-files-size":"65536"}}}}}},{{"action":"set-snapshot-ref","ref-name":"main","type":"branch","snapshot-id":{new_id}}}"#
    );
    let mut expired = expired_ids(state, keep).peekable();
    if expired.peek().is_some() {
        let _ = write!(out, r#",{{"action":"remove-snapshots","snapshot-ids":["#);
        for (i, id) in expired.enumerate() {
            let _ = write!(out, "{}{id}", if i == 0 { "" } else { "," });
        }
        out.push(b']');
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::{JsonContainerTrait, Value};

    fn load_result(current: Option<i64>, ids: &[i64]) -> String {
        let snaps: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"snapshot-id":{id},"timestamp-ms":1,"manifest-list":"m","summary":{{"operation":"append"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"metadata-location":"s3://x/m.json","metadata":{{"format-version":2,"table-uuid":"u",
            "current-snapshot-id":{},"last-sequence-number":{},"snapshots":[{}],
            "refs":{{}}}},"config":{{}}}}"#,
            current.unwrap_or(-1),
            ids.len(),
            snaps.join(",")
        )
    }

    fn commit_json(body: &str, new_id: i64, keep: usize) -> Value {
        let state = parse_table_state(body.as_bytes()).unwrap();
        let mut out = Vec::new();
        write_commit_body(&mut out, &state, new_id, 1234, "s3://b/ns/t/metadata", keep);
        sonic_rs::from_slice(&out).expect("commit body is valid JSON")
    }

    #[test]
    fn first_commit_asserts_missing_ref() {
        let v = commit_json(&load_result(None, &[]), 7, 100);
        let req = &v["requirements"][0];
        assert_eq!(req["type"].as_str(), Some("assert-ref-snapshot-id"));
        assert_eq!(req["ref"].as_str(), Some("main"));
        assert!(req["snapshot-id"].is_null());
        let snap = &v["updates"][0]["snapshot"];
        assert_eq!(v["updates"][0]["action"].as_str(), Some("add-snapshot"));
        assert_eq!(snap["snapshot-id"].as_i64(), Some(7));
        assert!(snap.get("parent-snapshot-id").is_none());
        assert_eq!(snap["sequence-number"].as_i64(), Some(1));
        assert_eq!(snap["timestamp-ms"].as_i64(), Some(1234));
        assert_eq!(snap["summary"]["operation"].as_str(), Some("append"));
        assert!(snap["manifest-list"].as_str().unwrap().ends_with("snap-7-1-bench.avro"));
        let set = &v["updates"][1];
        assert_eq!(set["action"].as_str(), Some("set-snapshot-ref"));
        assert_eq!(set["ref-name"].as_str(), Some("main"));
        assert_eq!(set["type"].as_str(), Some("branch"));
        assert_eq!(set["snapshot-id"].as_i64(), Some(7));
        assert_eq!(v["updates"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn later_commit_builds_on_current_snapshot() {
        let v = commit_json(&load_result(Some(30), &[10, 20, 30]), 40, 100);
        assert_eq!(v["requirements"][0]["snapshot-id"].as_i64(), Some(30));
        let snap = &v["updates"][0]["snapshot"];
        assert_eq!(snap["parent-snapshot-id"].as_i64(), Some(30));
        assert_eq!(snap["sequence-number"].as_i64(), Some(4));
    }

    #[test]
    fn old_snapshots_expire_beyond_keep() {
        let v = commit_json(&load_result(Some(30), &[10, 20, 30]), 40, 2);
        let rm = &v["updates"][2];
        assert_eq!(rm["action"].as_str(), Some("remove-snapshots"));
        let ids: Vec<_> = rm["snapshot-ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ids, [10, 20]);
        // keep = 0 never expires; keep = 1 must not remove the parent.
        let v = commit_json(&load_result(Some(30), &[10, 20, 30]), 40, 0);
        assert_eq!(v["updates"].as_array().unwrap().len(), 2);
        let v = commit_json(&load_result(Some(30), &[30, 10, 20]), 40, 1);
        assert_eq!(v["updates"][2]["snapshot-ids"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rejects_non_metadata() {
        assert!(parse_table_state(b"{\"pad\":\"x\"}").is_err());
        assert!(parse_table_state(b"not json").is_err());
    }
}
