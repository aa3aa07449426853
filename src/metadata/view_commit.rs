//! View creation and the view commit engine, after Java's `ViewMetadata.Builder`.

use super::commit::resolve_last_added;
use super::error::{conflict, invalid, MetadataError};
use super::schema::Schema;
use super::table::{trim_location, MAX_FORMAT_VERSION};
use super::view::{
    CreateViewRequest, ViewHistoryEntry, ViewMetadata, ViewRepresentation, ViewRequirement, ViewUpdate, ViewVersion,
};

/// The only view format version.
const VIEW_FORMAT_VERSION: u8 = 1;

/// How many versions a view keeps (at least those added by the commit and the current one).
const HISTORY_SIZE: &str = "version.history.num-entries";
const HISTORY_SIZE_DEFAULT: usize = 10;

/// Whether a new current version may drop a SQL dialect the previous one had.
const DROP_DIALECT_ALLOWED: &str = "replace.drop-dialect.allowed";

/// The result of a view commit.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewCommitOutcome {
    pub metadata: ViewMetadata,
    /// False when the updates changed nothing: the caller writes nothing.
    pub changed: bool,
}

/// Builds the first metadata of a view: its schema gets id 0 and its version id 1,
/// current as of `now_ms`.
pub fn new_view_metadata(
    req: &CreateViewRequest,
    location: &str,
    view_uuid: &str,
    now_ms: i64,
) -> Result<ViewMetadata, MetadataError> {
    let location = trim_location(location)?;
    let schema = Schema { schema_id: 0, ..req.schema.clone() };
    schema.validate(MAX_FORMAT_VERSION).map_err(MetadataError::Invalid)?;
    let version = ViewVersion { version_id: 1, timestamp_ms: now_ms, schema_id: 0, ..req.view_version.clone() };
    check_representations(&version)?;
    Ok(ViewMetadata {
        view_uuid: view_uuid.to_owned(),
        format_version: VIEW_FORMAT_VERSION,
        location: location.to_owned(),
        properties: req.properties.clone(),
        schemas: vec![schema],
        current_version_id: 1,
        versions: vec![version],
        version_log: vec![ViewHistoryEntry { version_id: 1, timestamp_ms: now_ms }],
    })
}

/// Checks the requirements against `base`, then applies the updates in order.
pub fn apply_view_commit(
    base: &ViewMetadata,
    requirements: &[ViewRequirement],
    updates: &[ViewUpdate],
    now_ms: i64,
) -> Result<ViewCommitOutcome, MetadataError> {
    for requirement in requirements {
        let ViewRequirement::AssertViewUuid { uuid } = requirement;
        if !uuid.eq_ignore_ascii_case(&base.view_uuid) {
            return conflict!("Requirement failed: view UUID does not match: expected {} != {uuid}", base.view_uuid);
        }
    }
    let mut builder = ViewBuilder {
        md: base.clone(),
        now_ms,
        last_added_schema: None,
        last_added_version: None,
        added_versions: Vec::new(),
        history_entry: None,
    };
    for update in updates {
        builder.apply(update)?;
    }
    builder.finish(base)
}

struct ViewBuilder {
    md: ViewMetadata,
    now_ms: i64,
    last_added_schema: Option<i32>,
    last_added_version: Option<i32>,
    added_versions: Vec<i32>,
    /// Only the last version made current in a commit enters the log.
    history_entry: Option<ViewHistoryEntry>,
}

impl ViewBuilder {
    fn apply(&mut self, update: &ViewUpdate) -> Result<(), MetadataError> {
        let md = &mut self.md;
        match update {
            ViewUpdate::AssignUuid { uuid } if !uuid.eq_ignore_ascii_case(&md.view_uuid) => {
                return invalid!("Cannot reassign the uuid of a view");
            }
            ViewUpdate::AssignUuid { .. } => {}
            ViewUpdate::UpgradeFormatVersion { format_version: v } => {
                if *v < i32::from(md.format_version) {
                    return invalid!("Cannot downgrade v{} view to v{v}", md.format_version);
                }
                if *v != i32::from(VIEW_FORMAT_VERSION) {
                    return invalid!("Unsupported view format version: v{v}");
                }
            }
            ViewUpdate::AddSchema { schema } => {
                schema.validate(MAX_FORMAT_VERSION).map_err(MetadataError::Invalid)?;
                let id = match md.schemas.iter().find(|s| s.same_schema(schema)) {
                    Some(existing) => existing.schema_id,
                    None => {
                        let id = md.schemas.iter().map(|s| s.schema_id + 1).max().unwrap_or(0);
                        md.schemas.push(Schema { schema_id: id, ..schema.clone() });
                        id
                    }
                };
                self.last_added_schema = Some(id);
            }
            ViewUpdate::SetLocation { location } => trim_location(location)?.clone_into(&mut md.location),
            ViewUpdate::SetProperties { updates } => {
                md.properties.extend(updates.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            ViewUpdate::RemoveProperties { removals } => removals.iter().for_each(|k| {
                md.properties.remove(k);
            }),
            ViewUpdate::AddViewVersion { view_version } => self.add_version(view_version)?,
            ViewUpdate::SetCurrentViewVersion { view_version_id } => self.set_current_version(*view_version_id)?,
        }
        Ok(())
    }

    /// Adds the version, or reuses an identical one (ignoring id and timestamp).
    fn add_version(&mut self, version: &ViewVersion) -> Result<(), MetadataError> {
        let schema_id = resolve_last_added(version.schema_id, self.last_added_schema, "schema")?;
        let md = &mut self.md;
        if md.schema(schema_id).is_none() {
            return invalid!("Cannot add version with unknown schema: {schema_id}");
        }
        let version = ViewVersion { schema_id, ..version.clone() };
        check_representations(&version)?;
        let same = |v: &ViewVersion| {
            v.schema_id == version.schema_id
                && v.summary == version.summary
                && v.representations == version.representations
                && v.default_catalog == version.default_catalog
                && v.default_namespace == version.default_namespace
        };
        let id = match md.versions.iter().find(|v| same(v)) {
            Some(existing) => existing.version_id,
            None => {
                let id = md.versions.iter().map(|v| v.version_id + 1).fold(version.version_id, i32::max);
                md.versions.push(ViewVersion { version_id: id, ..version });
                self.added_versions.push(id);
                id
            }
        };
        self.last_added_version = Some(id);
        Ok(())
    }

    fn set_current_version(&mut self, id: i32) -> Result<(), MetadataError> {
        let id = resolve_last_added(id, self.last_added_version, "view version")?;
        if id == self.md.current_version_id {
            return Ok(());
        }
        let Some(version) = self.md.version(id) else {
            return invalid!("Cannot set current version to unknown version: {id}");
        };
        // A version added now became current at its own time; re-activating one happens now.
        let timestamp_ms = if self.added_versions.contains(&id) { version.timestamp_ms } else { self.now_ms };
        self.md.current_version_id = id;
        self.history_entry = Some(ViewHistoryEntry { version_id: id, timestamp_ms });
        Ok(())
    }

    /// Logs the new current version, checks no dialect was dropped, and expires old versions.
    fn finish(mut self, base: &ViewMetadata) -> Result<ViewCommitOutcome, MetadataError> {
        let md = &mut self.md;
        md.version_log.extend(self.history_entry);
        if *md == *base {
            return Ok(ViewCommitOutcome { metadata: self.md, changed: false });
        }
        let Some(current) = md.current_version() else {
            return invalid!("Cannot find current version {}", md.current_version_id);
        };
        let drop_allowed = md.properties.get(DROP_DIALECT_ALLOWED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if let Some(previous) = base.current_version().filter(|_| !drop_allowed) {
            let now = dialects(current);
            if let Some(lost) = dialects(previous).into_iter().find(|d| !now.contains(d)) {
                return invalid!(
                    "Cannot replace view due to loss of view dialect {lost} ({DROP_DIALECT_ALLOWED}=false)"
                );
            }
        }
        let history_size = match md.properties.get(HISTORY_SIZE) {
            None => HISTORY_SIZE_DEFAULT,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return invalid!("{HISTORY_SIZE} must be positive but was {v}"),
            },
        };
        let mut must_keep = self.added_versions.clone();
        must_keep.push(md.current_version_id);
        must_keep.sort_unstable();
        must_keep.dedup();
        let keep = history_size.max(must_keep.len());
        if md.versions.len() > keep {
            expire_versions(md, keep);
        }
        Ok(ViewCommitOutcome { metadata: self.md, changed: true })
    }
}

/// Keeps the current version and the newest others up to `keep` versions, and drops the
/// log before any entry whose version is gone.
fn expire_versions(md: &mut ViewMetadata, keep: usize) {
    let mut ids: Vec<i32> =
        md.versions.iter().map(|v| v.version_id).filter(|&id| id != md.current_version_id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(keep - 1);
    ids.push(md.current_version_id);
    md.versions.retain(|v| ids.contains(&v.version_id));
    let mut log = Vec::with_capacity(md.version_log.len());
    for entry in std::mem::take(&mut md.version_log) {
        if ids.contains(&entry.version_id) {
            log.push(entry);
        } else {
            log.clear();
        }
    }
    md.version_log = log;
}

/// The lowercase SQL dialects of a version.
fn dialects(version: &ViewVersion) -> Vec<String> {
    version.representations.iter().map(|ViewRepresentation::Sql(r)| r.dialect.to_ascii_lowercase()).collect()
}

/// A version needs at least one query and at most one per dialect.
fn check_representations(version: &ViewVersion) -> Result<(), MetadataError> {
    let mut seen = dialects(version);
    if seen.is_empty() {
        return invalid!("Invalid view version: no representations");
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != count {
        return invalid!("Invalid view version: Cannot add multiple queries for the same dialect");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_support::{fixture, parse, to_value, value};

    const NOW: i64 = 1_800_000_000_000;

    fn view() -> ViewMetadata {
        parse(fixture("view_v1"))
    }

    fn commit(base: &ViewMetadata, updates: &str) -> Result<ViewCommitOutcome, MetadataError> {
        apply_view_commit(base, &[], &parse::<Vec<ViewUpdate>>(updates), NOW)
    }

    fn version(id: i32, schema_id: i32, sql: &str) -> String {
        format!(
            r#"{{"version-id":{id},"timestamp-ms":1700000000000,"schema-id":{schema_id},"summary":{{"engine-name":"trino"}},
               "default-namespace":["default"],"representations":[{{"type":"sql","sql":"{sql}","dialect":"spark"}}]}}"#
        )
    }

    #[test]
    fn view_metadata_round_trips() {
        assert_eq!(to_value(&view()), value(fixture("view_v1")));
    }

    #[test]
    fn view_is_created_with_version_1_and_schema_0() {
        let req = parse(&format!(
            r#"{{"name":"v","schema":{{"type":"struct","schema-id":4,"fields":[{{"id":1,"name":"a","required":false,"type":"int"}}]}},
                "view-version":{},"properties":{{"comment":"c"}}}}"#,
            version(9, 4, "SELECT 1")
        ));
        let md = new_view_metadata(&req, "s3://b/v/", "u", NOW).unwrap();
        assert_eq!((md.current_version_id, md.schemas[0].schema_id, md.location.as_str()), (1, 0, "s3://b/v"));
        let v = md.current_version().unwrap();
        assert_eq!((v.version_id, v.schema_id, v.timestamp_ms), (1, 0, NOW));
        assert_eq!(md.version_log, [ViewHistoryEntry { version_id: 1, timestamp_ms: NOW }]);
        let mut bad = req.clone();
        bad.view_version.representations.push(bad.view_version.representations[0].clone());
        assert!(matches!(new_view_metadata(&bad, "s3://b/v", "u", NOW), Err(MetadataError::Invalid(_))));
    }

    #[test]
    fn replace_adds_schema_and_version_and_makes_it_current() {
        let base = view();
        let outcome = commit(
            &base,
            &format!(
                r#"[{{"action":"add-schema","schema":{{"type":"struct","fields":[{{"id":1,"name":"n","required":false,"type":"long"}}]}}}},
                   {{"action":"add-view-version","view-version":{}}},
                   {{"action":"set-current-view-version","view-version-id":-1}},
                   {{"action":"set-properties","updates":{{"k":"v"}}}}]"#,
                version(1, -1, "SELECT 2")
            ),
        )
        .unwrap();
        assert!(outcome.changed);
        let md = outcome.metadata;
        assert_eq!((md.current_version_id, md.schemas.len()), (2, 2));
        let current = md.current_version().unwrap();
        assert_eq!(current.schema_id, 2);
        assert_eq!(md.version_log.last(), Some(&ViewHistoryEntry { version_id: 2, timestamp_ms: 1700000000000 }));
        assert_eq!(md.properties.len(), 2);
    }

    #[test]
    fn view_commit_rules() {
        let base = view();
        let uuid_req = [ViewRequirement::AssertViewUuid { uuid: "00000000-0000-4000-8000-000000000000".into() }];
        assert!(matches!(apply_view_commit(&base, &uuid_req, &[], NOW), Err(MetadataError::Conflict(_))));
        let same = [ViewRequirement::AssertViewUuid { uuid: base.view_uuid.to_uppercase() }];
        assert!(!apply_view_commit(&base, &same, &[], NOW).unwrap().changed);
        for updates in [
            r#"[{"action":"assign-uuid","uuid":"00000000-0000-4000-8000-000000000000"}]"#,
            r#"[{"action":"upgrade-format-version","format-version":2}]"#,
            r#"[{"action":"set-current-view-version","view-version-id":-1}]"#,
            r#"[{"action":"set-current-view-version","view-version-id":5}]"#,
            r#"[{"action":"set-location","location":"/"}]"#,
        ] {
            assert!(matches!(commit(&base, updates), Err(MetadataError::Invalid(_))), "{updates}");
        }
        assert!(matches!(
            commit(&base, &format!(r#"[{{"action":"add-view-version","view-version":{}}}]"#, version(2, 7, "x"))),
            Err(MetadataError::Invalid(_))
        ));
        // Re-adding the current version's content reuses it: nothing changes.
        let current = sonic_rs::to_string(base.current_version().unwrap()).unwrap();
        let same = commit(&base, &format!(r#"[{{"action":"add-view-version","view-version":{current}}},{{"action":"set-current-view-version","view-version-id":-1}}]"#)).unwrap();
        assert!(!same.changed);
        // Dropping the spark dialect needs replace.drop-dialect.allowed.
        let trino = version(2, 1, "SELECT 3").replace(r#""dialect":"spark""#, r#""dialect":"trino""#);
        let drop = format!(
            r#"[{{"action":"add-view-version","view-version":{trino}}},{{"action":"set-current-view-version","view-version-id":-1}}]"#
        );
        assert!(matches!(commit(&base, &drop), Err(MetadataError::Invalid(_))));
        let mut allowed = base.clone();
        allowed.properties.insert(DROP_DIALECT_ALLOWED.into(), "true".into());
        assert_eq!(commit(&allowed, &drop).unwrap().metadata.current_version_id, 2);
    }

    #[test]
    fn old_versions_expire_beyond_the_history_size() {
        let mut md = view();
        md.properties.insert(HISTORY_SIZE.into(), "2".into());
        for i in 2..=4 {
            let updates = format!(
                r#"[{{"action":"add-view-version","view-version":{}}},{{"action":"set-current-view-version","view-version-id":-1}}]"#,
                version(i, 1, &format!("SELECT {i}"))
            );
            md = commit(&md, &updates).unwrap().metadata;
        }
        let ids: Vec<i32> = md.versions.iter().map(|v| v.version_id).collect();
        assert_eq!(ids, [3, 4]);
        let log: Vec<i32> = md.version_log.iter().map(|e| e.version_id).collect();
        assert_eq!(log, [3, 4]);
    }
}
