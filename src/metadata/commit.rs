//! The commit engine: check requirements, apply updates in order, validate the result.
//!
//! Semantics follow Java's `TableMetadata.Builder` as driven by `CatalogHandlers`:
//! a failed requirement or a stale value (sequence number, first-row-id, vanished
//! parent) is a conflict the client may retry; anything else that cannot apply is
//! invalid.

use super::create::{parse_format_version, FORMAT_VERSION_PROPERTY};
use super::encryption::EncryptedKey;
use super::error::{conflict, invalid, MetadataError};
use super::partition::{PartitionField, PartitionSpec, UnboundPartitionSpec, PARTITION_DATA_ID_START};
use super::requirement::TableRequirement;
use super::schema::Schema;
use super::snapshot::{Snapshot, SnapshotLogEntry, SnapshotRefType, SnapshotReference};
use super::sort::SortOrder;
use super::table::{trim_location, TableMetadata, DEFAULT_FORMAT_VERSION, MAIN_BRANCH, MAX_FORMAT_VERSION};
use super::update::TableUpdate;

/// "The one added last in this commit" in set-current-schema, set-default-spec,
/// set-default-sort-order, and in view commits.
const LAST_ADDED: i32 = -1;

/// The result of a commit.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitOutcome {
    pub metadata: TableMetadata,
    /// False when the updates changed nothing: the caller writes nothing.
    pub changed: bool,
}

/// Applies a commit to an existing table: checks `requirements` against
/// `base`, then applies `updates` to it in place. Whether they changed
/// anything is told by a [`Summary`] taken before; only when the summaries
/// agree is the result compared with `base_again()`, the same metadata built
/// anew. That spares cloning the whole base for every commit.
pub fn apply_commit(
    base: TableMetadata,
    base_again: impl FnOnce() -> TableMetadata,
    requirements: &[TableRequirement],
    updates: &[TableUpdate],
    now_ms: i64,
) -> Result<CommitOutcome, MetadataError> {
    requirements.iter().try_for_each(|r| r.check(&base))?;
    let before = Summary::of(&base);
    // A v1 file without `table-uuid` gets a fresh one at every parse: the
    // second parse takes the first one's, so a no-op stays a no-op.
    let uuid = base.table_uuid.clone();
    let mut builder = Builder::new(base, false, now_ms);
    for update in updates {
        builder.apply(update)?;
    }
    builder.finish(|md| {
        Summary::of(md) == before && {
            let mut again = base_again();
            again.table_uuid = uuid;
            again == *md
        }
    })
}

/// Creates a table from scratch when the requirements are exactly
/// `assert-create`. Without `set-location` the result's `location` is
/// empty, for the caller to fill with its default.
pub fn apply_create(
    requirements: &[TableRequirement],
    updates: &[TableUpdate],
    now_ms: i64,
) -> Result<CommitOutcome, MetadataError> {
    if !requirements.contains(&TableRequirement::AssertCreate) {
        return Err(MetadataError::NoSuchTable("Table does not exist".to_owned()));
    }
    if requirements.iter().any(|r| *r != TableRequirement::AssertCreate) {
        return invalid!("Invalid create requirements: only assert-create is allowed");
    }
    let mut builder = Builder::new(empty_table(updates, now_ms), true, now_ms);
    for update in updates {
        builder.apply(update)?;
    }
    builder.finish(|_| false)
}

/// Scalars and lengths of table metadata, cheap to take: metadata whose
/// summaries differ differs; equal summaries need a full comparison.
#[derive(PartialEq)]
struct Summary {
    scalars: [i64; 10],
    lengths: [usize; 13],
}

impl Summary {
    fn of(md: &TableMetadata) -> Summary {
        Summary {
            scalars: [
                md.format_version.into(),
                md.last_sequence_number,
                md.last_updated_ms,
                md.last_column_id.into(),
                md.current_schema_id.into(),
                md.default_spec_id.into(),
                md.last_partition_id.into(),
                md.default_sort_order_id.into(),
                md.current_snapshot_id.map_or(i64::MIN, |id| id),
                md.next_row_id,
            ],
            lengths: [
                md.table_uuid.len(),
                md.location.len(),
                md.schemas.len(),
                md.partition_specs.len(),
                md.sort_orders.len(),
                md.properties.len(),
                md.encryption_keys.len(),
                md.refs.len(),
                md.snapshots.len(),
                md.statistics.len(),
                md.partition_statistics.len(),
                md.snapshot_log.len(),
                md.metadata_log.len(),
            ],
        }
    }
}

/// What a create transaction starts from: Java's `buildFromEmpty`, in the format
/// version of the first upgrade-format-version update.
fn empty_table(updates: &[TableUpdate], now_ms: i64) -> TableMetadata {
    let format_version = updates
        .iter()
        .find_map(|u| match u {
            TableUpdate::UpgradeFormatVersion { format_version } => u8::try_from(*format_version).ok(),
            _ => None,
        })
        .filter(|v| (1..=MAX_FORMAT_VERSION).contains(v))
        .unwrap_or(DEFAULT_FORMAT_VERSION);
    TableMetadata::empty(format_version, uuid::Uuid::new_v4().to_string(), String::new(), now_ms)
}

/// Metadata being changed, plus what this commit did so far.
struct Builder {
    md: TableMetadata,
    creating: bool,
    now_ms: i64,
    last_added_schema: Option<i32>,
    last_added_spec: Option<i32>,
    last_added_order: Option<i32>,
    added_snapshots: Vec<i64>,
    /// Snapshots made current on main by this commit, in order.
    main_history: Vec<i64>,
    removed_snapshots: bool,
}

impl Builder {
    fn new(md: TableMetadata, creating: bool, now_ms: i64) -> Builder {
        Builder {
            md,
            creating,
            now_ms,
            last_added_schema: None,
            last_added_spec: None,
            last_added_order: None,
            added_snapshots: Vec::new(),
            main_history: Vec::new(),
            removed_snapshots: false,
        }
    }

    fn apply(&mut self, update: &TableUpdate) -> Result<(), MetadataError> {
        use TableUpdate::*;
        let md = &mut self.md;
        match update {
            AssignUuid { uuid } => self.assign_uuid(uuid)?,
            UpgradeFormatVersion { format_version } => self.upgrade_format_version(*format_version)?,
            AddSchema { schema, .. } => self.add_schema(schema)?,
            SetCurrentSchema { schema_id } => {
                let id = resolve_last_added(*schema_id, self.last_added_schema, "schema")?;
                if md.schema(id).is_none() {
                    return invalid!("Cannot set current schema to unknown schema: {id}");
                }
                md.current_schema_id = id;
            }
            AddSpec { spec } => self.add_spec(spec)?,
            SetDefaultSpec { spec_id } => {
                let id = resolve_last_added(*spec_id, self.last_added_spec, "partition spec")?;
                if md.spec(id).is_none() {
                    return invalid!("Cannot set default partition spec to unknown spec: {id}");
                }
                md.default_spec_id = id;
            }
            AddSortOrder { sort_order } => self.add_sort_order(sort_order)?,
            SetDefaultSortOrder { sort_order_id } => {
                let id = resolve_last_added(*sort_order_id, self.last_added_order, "sort order")?;
                if md.sort_order(id).is_none() {
                    return invalid!("Cannot set default sort order to unknown order: {id}");
                }
                md.default_sort_order_id = id;
            }
            AddSnapshot { snapshot } => self.add_snapshot(snapshot)?,
            SetSnapshotRef { ref_name, reference } => self.set_ref(ref_name, reference)?,
            RemoveSnapshots { snapshot_ids } => self.remove_snapshots(snapshot_ids),
            RemoveSnapshotRef { ref_name } => {
                if ref_name == MAIN_BRANCH {
                    md.current_snapshot_id = None;
                }
                md.refs.remove(ref_name);
            }
            SetLocation { location } => trim_location(location)?.clone_into(&mut md.location),
            SetProperties { updates } => {
                for (key, value) in updates {
                    if key == FORMAT_VERSION_PROPERTY {
                        // Java clients turn this into upgrade-format-version; others may not.
                        self.upgrade_format_version(parse_format_version(value)?.into())?;
                    } else {
                        self.md.properties.insert(key.clone(), value.clone());
                    }
                }
            }
            RemoveProperties { removals } => removals.iter().for_each(|k| {
                md.properties.remove(k);
            }),
            SetStatistics { snapshot_id, statistics } => {
                if snapshot_id.is_some_and(|id| id != statistics.snapshot_id) {
                    return invalid!(
                        "Snapshot id in statistics ({}) does not match the update's snapshot-id",
                        statistics.snapshot_id
                    );
                }
                md.statistics.retain(|s| s.snapshot_id != statistics.snapshot_id);
                md.statistics.push(statistics.clone());
            }
            RemoveStatistics { snapshot_id } => md.statistics.retain(|s| s.snapshot_id != *snapshot_id),
            SetPartitionStatistics { partition_statistics: file } => {
                md.partition_statistics.retain(|s| s.snapshot_id != file.snapshot_id);
                md.partition_statistics.push(file.clone());
            }
            RemovePartitionStatistics { snapshot_id } => {
                md.partition_statistics.retain(|s| s.snapshot_id != *snapshot_id)
            }
            RemovePartitionSpecs { spec_ids } => {
                if spec_ids.contains(&md.default_spec_id) {
                    return invalid!("Cannot remove the default partition spec");
                }
                md.partition_specs.retain(|s| !spec_ids.contains(&s.spec_id));
            }
            RemoveSchemas { schema_ids } => {
                if schema_ids.contains(&md.current_schema_id) {
                    return invalid!("Cannot remove the current schema");
                }
                md.schemas.retain(|s| !schema_ids.contains(&s.schema_id));
            }
            AddEncryptionKey { encryption_key } => self.add_encryption_key(encryption_key)?,
            RemoveEncryptionKey { key_id } => md.encryption_keys.retain(|k| k.key_id != *key_id),
        }
        Ok(())
    }

    fn assign_uuid(&mut self, uuid: &str) -> Result<(), MetadataError> {
        if uuid::Uuid::parse_str(uuid).is_err() {
            return invalid!("Invalid table uuid: {uuid}");
        }
        if uuid.eq_ignore_ascii_case(&self.md.table_uuid) {
            return Ok(());
        }
        if !self.creating {
            return invalid!("Cannot reassign the uuid of an existing table");
        }
        uuid.clone_into(&mut self.md.table_uuid);
        Ok(())
    }

    fn upgrade_format_version(&mut self, version: i32) -> Result<(), MetadataError> {
        let current = self.md.format_version;
        match u8::try_from(version) {
            Ok(v) if (1..=MAX_FORMAT_VERSION).contains(&v) && v >= current => {
                self.md.format_version = v;
                Ok(())
            }
            Ok(v) if (1..=MAX_FORMAT_VERSION).contains(&v) => invalid!("Cannot downgrade v{current} table to v{v}"),
            _ => invalid!(
                "Cannot upgrade table to unsupported format version: v{version} (supported: v{MAX_FORMAT_VERSION})"
            ),
        }
    }

    /// Adds the schema, or reuses the id of an identical one; ids come from the table, not the client.
    fn add_schema(&mut self, schema: &Schema) -> Result<(), MetadataError> {
        let md = &mut self.md;
        schema.validate(md.format_version).map_err(MetadataError::Invalid)?;
        md.last_column_id = md.last_column_id.max(schema.highest_field_id());
        let id = match md.schemas.iter().find(|s| s.same_schema(schema)) {
            Some(existing) => existing.schema_id,
            None => {
                let id = md.schemas.iter().map(|s| s.schema_id + 1).fold(md.current_schema_id, i32::max);
                md.schemas.push(Schema { schema_id: id, ..schema.clone() });
                id
            }
        };
        self.last_added_schema = Some(id);
        Ok(())
    }

    /// Binds the spec to the current schema and adds it, or reuses a compatible one.
    fn add_spec(&mut self, spec: &UnboundPartitionSpec) -> Result<(), MetadataError> {
        let bound = self.bind_spec(spec)?;
        let md = &mut self.md;
        let Some(schema) = md.current_schema() else {
            return invalid!("Cannot add a partition spec before a schema");
        };
        bound.check_compatible(schema).map_err(MetadataError::Invalid)?;
        let id = match md.partition_specs.iter().find(|s| s.compatible_with(&bound)) {
            Some(existing) => existing.spec_id,
            None => {
                let id = md.partition_specs.iter().map(|s| s.spec_id + 1).max().unwrap_or(0);
                md.last_partition_id = md.last_partition_id.max(bound.last_assigned_field_id());
                md.partition_specs.push(PartitionSpec { spec_id: id, ..bound });
                id
            }
        };
        self.last_added_spec = Some(id);
        Ok(())
    }

    /// Gives every field an id: v1 requires 1000, 1001, ...; later versions keep the
    /// client's ids and fill gaps by reusing the id of the same source and transform, or
    /// with a fresh one past `last-partition-id`.
    fn bind_spec(&self, spec: &UnboundPartitionSpec) -> Result<PartitionSpec, MetadataError> {
        let md = &self.md;
        let mut next = md.last_partition_id.max(PARTITION_DATA_ID_START - 1);
        let mut fields = Vec::with_capacity(spec.fields.len());
        for (f, sequential) in spec.fields.iter().zip(PARTITION_DATA_ID_START..) {
            let field_id = if md.format_version == 1 {
                match f.field_id {
                    Some(id) if id != sequential => {
                        return invalid!("Spec does not use sequential IDs that are required in v1: {id}")
                    }
                    _ => sequential,
                }
            } else if let Some(id) = f.field_id {
                id
            } else {
                let reused = md
                    .partition_specs
                    .iter()
                    .flat_map(|s| &s.fields)
                    .filter(|e| e.source_id == f.source_id && e.transform == f.transform)
                    .map(|e| e.field_id)
                    .max();
                reused.unwrap_or_else(|| {
                    next += 1;
                    next
                })
            };
            fields.push(PartitionField {
                name: f.name.clone(),
                transform: f.transform.clone(),
                source_id: f.source_id,
                field_id,
            });
        }
        Ok(PartitionSpec { spec_id: 0, fields })
    }

    /// Adds the order, or reuses one with the same fields; unsorted is always id 0.
    fn add_sort_order(&mut self, order: &SortOrder) -> Result<(), MetadataError> {
        let md = &mut self.md;
        let existing = md.sort_orders.iter().find(|o| o.fields == order.fields).map(|o| o.order_id);
        let id = match existing {
            Some(id) => id,
            None if order.is_unsorted() => {
                md.sort_orders.push(SortOrder::unsorted());
                SortOrder::UNSORTED_ORDER_ID
            }
            None => {
                let Some(schema) = md.current_schema() else {
                    return invalid!("Cannot add a sort order before a schema");
                };
                order.check_compatible(schema).map_err(MetadataError::Invalid)?;
                let id = md.sort_orders.iter().map(|o| o.order_id + 1).fold(1, i32::max);
                md.sort_orders.push(SortOrder { order_id: id, fields: order.fields.clone() });
                id
            }
        };
        self.last_added_order = Some(id);
        Ok(())
    }

    fn add_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), MetadataError> {
        let md = &mut self.md;
        let table = SnapshotTable {
            ready: !(md.schemas.is_empty() || md.partition_specs.is_empty() || md.sort_orders.is_empty()),
            format_version: md.format_version,
            last_sequence_number: &mut md.last_sequence_number,
            next_row_id: &mut md.next_row_id,
        };
        let (snapshots, schemas) = (&md.snapshots, &md.schemas);
        table.admit(
            snapshot,
            |id| snapshots.iter().any(|s| s.snapshot_id == id),
            |id| schemas.iter().any(|s| s.schema_id == id),
        )?;
        md.snapshots.push(snapshot.clone());
        self.added_snapshots.push(snapshot.snapshot_id);
        Ok(())
    }

    fn set_ref(&mut self, name: &str, reference: &SnapshotReference) -> Result<(), MetadataError> {
        let md = &mut self.md;
        if md.refs.get(name) == Some(reference) {
            return Ok(());
        }
        let id = reference.snapshot_id;
        let Some(snapshot) = md.snapshot(id) else {
            return invalid!("Cannot set {name} to unknown snapshot: {id}");
        };
        let added_now = self.added_snapshots.contains(&id);
        check_ref_update(name, reference, added_now.then_some(snapshot), md.refs.get(name))?;
        if name == MAIN_BRANCH {
            // A snapshot added now became current at its own time; a rollback happens now.
            let timestamp_ms = if added_now { snapshot.timestamp_ms } else { self.now_ms };
            md.snapshot_log.push(SnapshotLogEntry { timestamp_ms, snapshot_id: id });
            md.current_snapshot_id = Some(id);
            self.main_history.push(id);
        }
        md.refs.insert(name.to_owned(), reference.clone());
        Ok(())
    }

    /// Removes the snapshots, their statistics, and the refs left dangling.
    fn remove_snapshots(&mut self, ids: &[i64]) {
        let md = &mut self.md;
        let before = md.snapshots.len();
        md.snapshots.retain(|s| !ids.contains(&s.snapshot_id));
        if md.snapshots.len() == before {
            return;
        }
        self.removed_snapshots = true;
        md.statistics.retain(|s| !ids.contains(&s.snapshot_id));
        md.partition_statistics.retain(|s| !ids.contains(&s.snapshot_id));
        md.refs.retain(|_, r| !ids.contains(&r.snapshot_id));
        if md.current_snapshot_id.is_some_and(|id| ids.contains(&id)) {
            md.current_snapshot_id = None;
        }
    }

    fn add_encryption_key(&mut self, key: &EncryptedKey) -> Result<(), MetadataError> {
        if self.md.format_version < 3 {
            return invalid!("Encryption keys are not supported before v3");
        }
        if !self.md.encryption_keys.iter().any(|k| k.key_id == key.key_id) {
            self.md.encryption_keys.push(key.clone());
        }
        Ok(())
    }

    /// Settles the snapshot log; unless `unchanged` says the result equals
    /// the base, validates it and sets last-updated-ms.
    fn finish(mut self, unchanged: impl FnOnce(&TableMetadata) -> bool) -> Result<CommitOutcome, MetadataError> {
        self.settle_snapshot_log();
        let mut md = self.md;
        if unchanged(&md) {
            return Ok(CommitOutcome { metadata: md, changed: false });
        }
        let Some(schema) = md.current_schema() else {
            return invalid!("Cannot find current schema {}", md.current_schema_id);
        };
        let Some(spec) = md.default_spec() else {
            return invalid!("Cannot find default partition spec {}", md.default_spec_id);
        };
        let Some(order) = md.default_sort_order() else {
            return invalid!("Cannot find default sort order {}", md.default_sort_order_id);
        };
        spec.check_compatible(schema).map_err(MetadataError::Invalid)?;
        order.check_compatible(schema).map_err(MetadataError::Invalid)?;
        if md.location.is_empty() && !self.creating {
            return invalid!("Table location is required");
        }
        md.last_updated_ms = self.now_ms;
        Ok(CommitOutcome { metadata: md, changed: true })
    }

    /// Drops log entries of snapshots that were current only in the middle of this commit,
    /// and after a removal drops history older than a removed snapshot, so the log has no gaps.
    fn settle_snapshot_log(&mut self) {
        let current = self.md.current_snapshot_id;
        let intermediate: Vec<i64> = self
            .main_history
            .iter()
            .copied()
            .filter(|id| self.added_snapshots.contains(id) && Some(*id) != current)
            .collect();
        if intermediate.is_empty() && !self.removed_snapshots {
            return;
        }
        let md = &mut self.md;
        let mut log = Vec::with_capacity(md.snapshot_log.len());
        for entry in std::mem::take(&mut md.snapshot_log) {
            if md.snapshot(entry.snapshot_id).is_some() {
                if !intermediate.contains(&entry.snapshot_id) {
                    log.push(entry);
                }
            } else if self.removed_snapshots {
                log.clear();
            }
        }
        md.snapshot_log = log;
    }
}

/// What adding a snapshot reads and advances of a table, whether it is the
/// owned model or the stored JSON a commit edits (`edit.rs`).
pub(super) struct SnapshotTable<'t> {
    /// The table has a schema, a partition spec and a sort order.
    pub ready: bool,
    pub format_version: u8,
    pub last_sequence_number: &'t mut i64,
    pub next_row_id: &'t mut i64,
}

impl SnapshotTable<'_> {
    /// Checks a snapshot to add (`exists`: a snapshot id the table has now,
    /// `schema_known`: a schema id it has) and advances the sequence number
    /// and, from v3, the next row id.
    pub fn admit(
        self,
        snapshot: &Snapshot,
        exists: impl Fn(i64) -> bool,
        schema_known: impl Fn(i32) -> bool,
    ) -> Result<(), MetadataError> {
        let id = snapshot.snapshot_id;
        if !self.ready {
            return invalid!("Attempting to add a snapshot before a schema, partition spec and sort order are added");
        }
        if exists(id) {
            return invalid!("Snapshot already exists for id: {id}");
        }
        if let Some(schema_id) = snapshot.schema_id.filter(|&s| !schema_known(s)) {
            return invalid!("Snapshot {id} references unknown schema {schema_id}");
        }
        if let Some(parent) = snapshot.parent_snapshot_id.filter(|&p| !exists(p)) {
            return conflict!("Cannot add snapshot {id}: parent snapshot {parent} no longer exists");
        }
        if self.format_version > 1 {
            if snapshot.sequence_number <= *self.last_sequence_number && snapshot.parent_snapshot_id.is_some() {
                return conflict!(
                    "Cannot add snapshot with sequence number {} older than last sequence number {}",
                    snapshot.sequence_number,
                    self.last_sequence_number
                );
            }
            *self.last_sequence_number = (*self.last_sequence_number).max(snapshot.sequence_number);
        }
        if self.format_version >= 3 {
            let (Some(first_row_id), Some(added_rows)) = (snapshot.first_row_id, snapshot.added_rows) else {
                return invalid!("Cannot add a snapshot: first-row-id and added-rows are required from v3");
            };
            if first_row_id < *self.next_row_id {
                return conflict!(
                    "Cannot add a snapshot, first-row-id is behind table next-row-id: {first_row_id} < {}",
                    self.next_row_id
                );
            }
            *self.next_row_id += added_rows;
        }
        Ok(())
    }
}

/// Checks setting ref `name` to an existing snapshot: `added` is that
/// snapshot when this commit added it, `head` what the ref points at now.
pub(super) fn check_ref_update(
    name: &str,
    reference: &SnapshotReference,
    added: Option<&Snapshot>,
    head: Option<&SnapshotReference>,
) -> Result<(), MetadataError> {
    let id = reference.snapshot_id;
    let is_tag = reference.ref_type == SnapshotRefType::Tag;
    if name == MAIN_BRANCH && is_tag {
        return invalid!("Cannot set {MAIN_BRANCH} to a tag, it must be a branch");
    }
    if is_tag && (reference.min_snapshots_to_keep.is_some() || reference.max_snapshot_age_ms.is_some()) {
        return invalid!("Tags do not support min-snapshots-to-keep or max-snapshot-age-ms");
    }
    let positive =
        [reference.min_snapshots_to_keep.map(i64::from), reference.max_snapshot_age_ms, reference.max_ref_age_ms];
    if positive.into_iter().flatten().any(|v| v <= 0) {
        return invalid!("Ref retention settings of {name} must be greater than 0");
    }
    // A snapshot written on top of a head that has moved on would drop the newer commits.
    if let (Some(parent), Some(head)) = (added.and_then(|s| s.parent_snapshot_id), head) {
        if head.ref_type == SnapshotRefType::Branch && head.snapshot_id != parent {
            return conflict!(
                "Cannot set branch {name} to snapshot {id}: its parent {parent} is no longer the head {}",
                head.snapshot_id
            );
        }
    }
    Ok(())
}

/// Resolves -1 to the id added last in this commit.
pub(crate) fn resolve_last_added(id: i32, last_added: Option<i32>, what: &str) -> Result<i32, MetadataError> {
    match (id, last_added) {
        (LAST_ADDED, Some(added)) => Ok(added),
        (LAST_ADDED, None) => invalid!("Cannot set last added {what}: no {what} has been added"),
        _ => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::create::new_table_metadata;
    use crate::metadata::test_support::{fixture, parse, table, to_value};

    const NOW: i64 = 1_800_000_000_000;

    fn commit(base: &TableMetadata, requirements: &str, updates: &str) -> Result<CommitOutcome, MetadataError> {
        apply_commit(base.clone(), || base.clone(), &parse::<Vec<_>>(requirements), &parse::<Vec<_>>(updates), NOW)
    }

    #[test]
    fn a_noop_on_a_v1_table_without_uuid_is_unchanged() {
        let json = fixture("v1_legacy").replacen("\"table-uuid\"", "\"no-table-uuid\"", 1);
        let (base, again) = (parse::<TableMetadata>(&json), parse::<TableMetadata>(&json));
        assert_ne!(base.table_uuid, again.table_uuid, "each parse invents a uuid");
        for updates in ["[]", r#"[{"action":"set-location","location":"hdfs://nn:8020/warehouse/db/events"}]"#] {
            let outcome = apply_commit(base.clone(), || parse(&json), &[], &parse::<Vec<_>>(updates), NOW).unwrap();
            assert!(!outcome.changed, "{updates}");
        }
        let change = r#"[{"action":"set-properties","updates":{"k":"v"}}]"#;
        assert!(apply_commit(base, || again, &[], &parse::<Vec<_>>(change), NOW).unwrap().changed);
    }

    fn updated(base: &TableMetadata, updates: &str) -> TableMetadata {
        let outcome = commit(base, "[]", updates).unwrap_or_else(|e| panic!("{e:?}: {updates}"));
        assert!(outcome.changed, "{updates}");
        outcome.metadata
    }

    fn invalid(base: &TableMetadata, updates: &str) -> String {
        match commit(base, "[]", updates) {
            Err(MetadataError::Invalid(m)) => m,
            other => panic!("expected invalid for {updates}: {other:?}"),
        }
    }

    fn conflicting(base: &TableMetadata, updates: &str) -> String {
        match commit(base, "[]", updates) {
            Err(MetadataError::Conflict(m)) => m,
            other => panic!("expected conflict for {updates}: {other:?}"),
        }
    }

    fn snapshot(id: i64, parent: Option<i64>, sequence_number: i64, rows: Option<(i64, i64)>) -> String {
        let parent = parent.map_or(String::new(), |p| format!(r#""parent-snapshot-id":{p},"#));
        let rows =
            rows.map_or(String::new(), |(first, added)| format!(r#","first-row-id":{first},"added-rows":{added}"#));
        format!(
            r#"{{"action":"add-snapshot","snapshot":{{"snapshot-id":{id},{parent}"sequence-number":{sequence_number},"timestamp-ms":{},"manifest-list":"s3://m/{id}.avro","summary":{{"operation":"append"}},"schema-id":0{rows}}}}}"#,
            1_790_000_000_000 + id
        )
    }

    fn set_main(id: i64) -> String {
        format!(r#"{{"action":"set-snapshot-ref","ref-name":"main","type":"branch","snapshot-id":{id}}}"#)
    }

    /// The updates PyIceberg's `CreateTableTransaction` sends for a staged table.
    const PYICEBERG_CREATE: &str = r#"[
        {"action":"assign-uuid","uuid":"9d2a4f5e-6b7c-4d8e-9f00-112233445566"},
        {"action":"upgrade-format-version","format-version":2},
        {"action":"add-schema","schema":{"type":"struct","fields":[
            {"id":1,"name":"id","type":"long","required":true},
            {"id":2,"name":"city","type":"string","required":false}],"schema-id":0,"identifier-field-ids":[]},"last-column-id":2},
        {"action":"set-current-schema","schema-id":-1},
        {"action":"add-spec","spec":{"spec-id":0,"fields":[{"source-id":2,"field-id":1000,"transform":"identity","name":"city"}]}},
        {"action":"set-default-spec","spec-id":-1},
        {"action":"add-sort-order","sort-order":{"order-id":0,"fields":[]}},
        {"action":"set-default-sort-order","sort-order-id":-1},
        {"action":"set-location","location":"s3://warehouse/db/cities"},
        {"action":"set-properties","updates":{"owner":"py"}}
    ]"#;

    #[test]
    fn create_transaction_rebuilds_what_create_table_would() {
        let outcome = apply_create(&[TableRequirement::AssertCreate], &parse::<Vec<_>>(PYICEBERG_CREATE), NOW).unwrap();
        assert!(outcome.changed);
        let req = parse(
            r#"{"name":"cities","schema":{"type":"struct","fields":[{"id":1,"name":"id","type":"long","required":true},{"id":2,"name":"city","type":"string","required":false}]},
                "partition-spec":{"fields":[{"source-id":2,"transform":"identity","name":"city"}]},"properties":{"owner":"py"}}"#,
        );
        let expected =
            new_table_metadata(&req, "s3://warehouse/db/cities", "9d2a4f5e-6b7c-4d8e-9f00-112233445566", NOW).unwrap();
        assert_eq!(outcome.metadata, expected);
    }

    #[test]
    fn create_transaction_may_pick_v1_and_add_data() {
        let updates = PYICEBERG_CREATE.replace(r#""format-version":2"#, r#""format-version":1"#).replace(
            r#"{"action":"set-properties""#,
            &format!(r#"{},{},{{"action":"set-properties""#, snapshot(5, None, 0, None), set_main(5)),
        );
        let md = apply_create(&[TableRequirement::AssertCreate], &parse::<Vec<_>>(&updates), NOW).unwrap().metadata;
        assert_eq!((md.format_version, md.current_snapshot_id), (1, Some(5)));
        assert_eq!(md.snapshot_log, [SnapshotLogEntry { timestamp_ms: 1_790_000_000_005, snapshot_id: 5 }]);
        assert_eq!(to_value(&md)["partition-spec"][0]["field-id"], 1000);
    }

    #[test]
    fn create_transaction_requirements() {
        let updates: Vec<TableUpdate> = parse(PYICEBERG_CREATE);
        let err = apply_create(&[], &updates, NOW).unwrap_err();
        assert!(matches!(err, MetadataError::NoSuchTable(_)));
        let reqs = [TableRequirement::AssertCreate, TableRequirement::AssertCurrentSchemaId { current_schema_id: 0 }];
        assert!(matches!(apply_create(&reqs, &updates, NOW), Err(MetadataError::Invalid(_))));
        let base = table("v2_full");
        assert!(matches!(
            apply_commit(base.clone(), || base.clone(), &[TableRequirement::AssertCreate], &updates, NOW),
            Err(MetadataError::Conflict(_))
        ));
        // Without set-location the caller fills in its default; without a schema nothing can be built.
        let no_location: Vec<TableUpdate> =
            updates.iter().filter(|u| !matches!(u, TableUpdate::SetLocation { .. })).cloned().collect();
        assert_eq!(apply_create(&[TableRequirement::AssertCreate], &no_location, NOW).unwrap().metadata.location, "");
        let no_schema: Vec<TableUpdate> = updates[..2].to_vec();
        assert!(matches!(
            apply_create(&[TableRequirement::AssertCreate], &no_schema, NOW),
            Err(MetadataError::Invalid(_))
        ));
    }

    #[test]
    fn failed_requirements_stop_the_commit() {
        let base = table("v2_full");
        let err = commit(
            &base,
            r#"[{"type":"assert-current-schema-id","current-schema-id":0}]"#,
            r#"[{"action":"set-location","location":"s3://x"}]"#,
        );
        assert!(matches!(err, Err(MetadataError::Conflict(_))));
    }

    #[test]
    fn no_effective_change_is_reported_unchanged() {
        let base = table("v2_full");
        for updates in [
            "[]",
            r#"[{"action":"set-properties","updates":{"write.format.default":"parquet"}}]"#,
            r#"[{"action":"remove-properties","removals":["absent"]}]"#,
            r#"[{"action":"set-current-schema","schema-id":1},{"action":"set-default-spec","spec-id":1}]"#,
            r#"[{"action":"assign-uuid","uuid":"8f2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},{"action":"upgrade-format-version","format-version":2}]"#,
            r#"[{"action":"set-location","location":"s3://lake/analytics/page_views/"}]"#,
            r#"[{"action":"remove-snapshots","snapshot-ids":[1]},{"action":"remove-statistics","snapshot-id":1}]"#,
        ] {
            let outcome = commit(&base, "[]", updates).unwrap();
            assert!(!outcome.changed, "{updates}");
            assert_eq!(outcome.metadata, base);
        }
        assert_eq!(updated(&base, r#"[{"action":"set-properties","updates":{"k":"v"}}]"#).last_updated_ms, NOW);
    }

    #[test]
    fn base_is_built_again_only_when_the_summary_cannot_tell() {
        let base = table("v2_full");
        let apply = |updates: &str, again: &dyn Fn() -> TableMetadata| {
            apply_commit(base.clone(), again, &[], &parse::<Vec<_>>(updates), NOW).unwrap().changed
        };
        // A new property changes the summary: no full comparison.
        assert!(apply(r#"[{"action":"set-properties","updates":{"k":"v"}}]"#, &|| panic!("summary differs")));
        // A new value of a property keeps the summary: the comparison tells.
        assert!(apply(r#"[{"action":"set-properties","updates":{"write.format.default":"orc"}}]"#, &|| base.clone()));
    }

    #[test]
    fn uuid_and_format_version_updates() {
        let base = table("v2_full");
        invalid(&base, r#"[{"action":"assign-uuid","uuid":"00000000-0000-4000-8000-000000000000"}]"#);
        invalid(&base, r#"[{"action":"upgrade-format-version","format-version":1}]"#);
        invalid(&base, r#"[{"action":"upgrade-format-version","format-version":4}]"#);
        let v3 = updated(&base, r#"[{"action":"upgrade-format-version","format-version":3}]"#);
        assert_eq!((v3.format_version, v3.next_row_id), (3, 0));
        assert_eq!(to_value(&v3)["next-row-id"], 0);
        let v3 = updated(&base, r#"[{"action":"set-properties","updates":{"format-version":"3","a":"b"}}]"#);
        assert_eq!(v3.format_version, 3);
        assert!(!v3.properties.contains_key("format-version"));
        invalid(&v3, r#"[{"action":"set-properties","updates":{"format-version":"2"}}]"#);
    }

    #[test]
    fn schemas_are_added_reused_and_made_current() {
        let base = table("v2_full");
        let md = updated(
            &base,
            r#"[{"action":"add-schema","schema":{"type":"struct","schema-id":99,"fields":[
                   {"id":1,"name":"view_id","required":true,"type":"uuid"},{"id":2,"name":"ts","required":true,"type":"timestamptz"},
                   {"id":3,"name":"url","required":false,"type":"string"},{"id":14,"name":"referrer","required":false,"type":"string"}]},
                   "last-column-id":14},
               {"action":"set-current-schema","schema-id":-1}]"#,
        );
        assert_eq!((md.current_schema_id, md.last_column_id, md.schemas.len()), (2, 14, 3));
        // Same columns as schema 0 (whatever the schema id sent): reused, and -1 points at it.
        let md = updated(
            &base,
            &format!(
                r#"[{{"action":"add-schema","schema":{}}},{{"action":"set-current-schema","schema-id":-1}}]"#,
                sonic_rs::to_string(&base.schemas[0]).unwrap().replace(r#""schema-id":0"#, r#""schema-id":5"#)
            ),
        );
        assert_eq!((md.current_schema_id, md.schemas.len(), md.last_column_id), (0, 2, 13));
        invalid(&base, r#"[{"action":"set-current-schema","schema-id":-1}]"#);
        invalid(&base, r#"[{"action":"set-current-schema","schema-id":8}]"#);
        // A current schema that lost a partition source column is rejected.
        let msg = invalid(
            &base,
            r#"[{"action":"add-schema","schema":{"type":"struct","fields":[{"id":1,"name":"view_id","required":true,"type":"uuid"}]}},
               {"action":"set-current-schema","schema-id":-1}]"#,
        );
        assert!(msg.contains("source column"), "{msg}");
        invalid(
            &base,
            r#"[{"action":"add-schema","schema":{"type":"struct","fields":[{"id":1,"name":"v","required":false,"type":"variant"}]}}]"#,
        );
        let md = updated(&base, r#"[{"action":"remove-schemas","schema-ids":[0, 42]}]"#);
        assert_eq!(md.schemas.len(), 1);
        invalid(&base, r#"[{"action":"remove-schemas","schema-ids":[1]}]"#);
    }

    #[test]
    fn specs_are_bound_added_reused_and_made_default() {
        let base = table("v2_full");
        let md = updated(
            &base,
            r#"[{"action":"add-spec","spec":{"fields":[
                   {"name":"ts_day","transform":"day","source-id":2},{"name":"url_trunc","transform":"truncate[4]","source-id":3}]}},
               {"action":"set-default-spec","spec-id":-1}]"#,
        );
        let spec = md.default_spec().unwrap();
        assert_eq!(spec.spec_id, 2);
        let ids: Vec<i32> = spec.fields.iter().map(|f| f.field_id).collect();
        assert_eq!(ids, [1000, 1003]);
        assert_eq!(md.last_partition_id, 1003);
        // A spec like spec 0 (ids aside) is reused.
        let md = updated(
            &base,
            r#"[{"action":"add-spec","spec":{"spec-id":7,"fields":[{"name":"ts_day","transform":"day","source-id":2,"field-id":1000}]}},
               {"action":"set-default-spec","spec-id":-1}]"#,
        );
        assert_eq!((md.default_spec_id, md.partition_specs.len(), md.last_partition_id), (0, 2, 1002));
        invalid(&base, r#"[{"action":"set-default-spec","spec-id":-1}]"#);
        invalid(&base, r#"[{"action":"set-default-spec","spec-id":5}]"#);
        invalid(
            &base,
            r#"[{"action":"add-spec","spec":{"fields":[{"name":"c","transform":"identity","source-id":4}]}}]"#,
        );
        invalid(
            &base,
            r#"[{"action":"add-spec","spec":{"fields":[{"name":"c","transform":"identity","source-id":77}]}}]"#,
        );
        assert_eq!(updated(&base, r#"[{"action":"remove-partition-specs","spec-ids":[0]}]"#).partition_specs.len(), 1);
        invalid(&base, r#"[{"action":"remove-partition-specs","spec-ids":[1]}]"#);
        // v1 needs sequential field ids.
        let v1 = table("v1_current");
        let md = updated(
            &v1,
            r#"[{"action":"add-spec","spec":{"fields":[{"name":"id","transform":"bucket[2]","source-id":1}]}}]"#,
        );
        assert_eq!(md.partition_specs[1].fields[0].field_id, 1000);
        invalid(
            &v1,
            r#"[{"action":"add-spec","spec":{"fields":[{"name":"id","transform":"bucket[2]","source-id":1,"field-id":1001}]}}]"#,
        );
    }

    #[test]
    fn sort_orders_are_added_reused_and_made_default() {
        let base = table("v2_full");
        let md = updated(
            &base,
            r#"[{"action":"add-sort-order","sort-order":{"order-id":1,"fields":[{"transform":"identity","source-id":1,"direction":"asc","null-order":"nulls-first"}]}},
               {"action":"set-default-sort-order","sort-order-id":-1}]"#,
        );
        assert_eq!((md.default_sort_order_id, md.sort_orders.len()), (2, 3));
        let md = updated(
            &base,
            r#"[{"action":"add-sort-order","sort-order":{"order-id":0,"fields":[]}},{"action":"set-default-sort-order","sort-order-id":-1}]"#,
        );
        assert_eq!((md.default_sort_order_id, md.sort_orders.len()), (0, 2));
        invalid(&base, r#"[{"action":"set-default-sort-order","sort-order-id":-1}]"#);
        invalid(&base, r#"[{"action":"set-default-sort-order","sort-order-id":9}]"#);
        invalid(
            &base,
            r#"[{"action":"add-sort-order","sort-order":{"fields":[{"transform":"identity","source-id":6,"direction":"asc","null-order":"nulls-first"}]}}]"#,
        );
    }

    #[test]
    fn snapshots_advance_main_the_log_and_sequence_numbers() {
        let base = table("v2_full");
        let md = updated(&base, &format!("[{},{}]", snapshot(7003, Some(7001), 4, None), set_main(7003)));
        assert_eq!((md.current_snapshot_id, md.last_sequence_number), (Some(7003), 4));
        assert_eq!(md.refs["main"].snapshot_id, 7003);
        assert_eq!(
            md.snapshot_log.last(),
            Some(&SnapshotLogEntry { timestamp_ms: 1_790_000_007_003, snapshot_id: 7003 })
        );
        assert_eq!(md.last_updated_ms, NOW);

        // A staged snapshot (no ref) changes neither main nor the log.
        let md = updated(&base, &format!("[{}]", snapshot(7003, Some(7001), 4, None)));
        assert_eq!((md.current_snapshot_id, md.snapshot_log.len()), (Some(7001), 2));

        // Rolling back to an older snapshot happens now.
        let md = updated(&base, &format!("[{}]", set_main(7000)));
        assert_eq!(md.snapshot_log.last(), Some(&SnapshotLogEntry { timestamp_ms: NOW, snapshot_id: 7000 }));

        // Two appends in one commit: only the final one enters the log.
        let md = updated(
            &base,
            &format!(
                "[{},{},{},{}]",
                snapshot(8, Some(7001), 4, None),
                set_main(8),
                snapshot(9, Some(8), 5, None),
                set_main(9)
            ),
        );
        let log: Vec<i64> = md.snapshot_log.iter().map(|e| e.snapshot_id).collect();
        assert_eq!(log, [7000, 7001, 9]);
    }

    #[test]
    fn stale_or_broken_snapshots_are_refused() {
        let base = table("v2_full");
        let msg = conflicting(&base, &format!("[{}]", snapshot(8, Some(7002), 3, None)));
        assert!(msg.contains("sequence number 3"), "{msg}");
        conflicting(&base, &format!("[{}]", snapshot(8, Some(1234), 9, None)));
        // Written on 7000 while main moved to 7001: committing it to main would lose 7001.
        let msg = conflicting(&base, &format!("[{},{}]", snapshot(8, Some(7000), 4, None), set_main(8)));
        assert!(msg.contains("no longer the head 7001"), "{msg}");
        let audit = r#"{"action":"set-snapshot-ref","ref-name":"audit","type":"branch","snapshot-id":8}"#;
        assert_eq!(
            updated(&base, &format!("[{},{audit}]", snapshot(8, Some(7002), 4, None))).refs["audit"].snapshot_id,
            8
        );
        // Without a parent an old sequence number is accepted, as Java does.
        assert_eq!(updated(&base, &format!("[{}]", snapshot(8, None, 1, None))).last_sequence_number, 3);
        invalid(&base, &format!("[{}]", snapshot(7001, Some(7000), 9, None)));
        invalid(
            &base,
            &format!("[{}]", snapshot(8, Some(7002), 9, None).replace(r#""schema-id":0"#, r#""schema-id":6"#)),
        );
    }

    #[test]
    fn v3_snapshots_assign_row_ids() {
        let base = table("v3_row_lineage");
        let md = updated(&base, &format!("[{},{}]", snapshot(9103, Some(9102), 3, Some((1500, 25))), set_main(9103)));
        assert_eq!(md.next_row_id, 1525);
        assert_eq!(to_value(&md)["next-row-id"], 1525);
        conflicting(&base, &format!("[{}]", snapshot(9103, Some(9102), 3, Some((1499, 25)))));
        invalid(&base, &format!("[{}]", snapshot(9103, Some(9102), 3, None)));
    }

    #[test]
    fn refs_are_set_checked_and_removed() {
        let base = table("v2_full");
        let md = updated(
            &base,
            r#"[{"action":"set-snapshot-ref","ref-name":"nightly","type":"tag","snapshot-id":7002,"max-ref-age-ms":1000}]"#,
        );
        assert_eq!(md.refs["nightly"].ref_type, SnapshotRefType::Tag);
        assert_eq!(md.current_snapshot_id, Some(7001));
        invalid(&base, &format!("[{}]", set_main(1)));
        invalid(&base, r#"[{"action":"set-snapshot-ref","ref-name":"main","type":"tag","snapshot-id":7002}]"#);
        invalid(
            &base,
            r#"[{"action":"set-snapshot-ref","ref-name":"t","type":"tag","snapshot-id":7002,"min-snapshots-to-keep":2}]"#,
        );
        invalid(
            &base,
            r#"[{"action":"set-snapshot-ref","ref-name":"b","type":"branch","snapshot-id":7002,"max-ref-age-ms":0}]"#,
        );
        let md = updated(&base, r#"[{"action":"remove-snapshot-ref","ref-name":"main"}]"#);
        assert_eq!((md.current_snapshot_id, md.refs.contains_key("main")), (None, false));
        assert_eq!(to_value(&md)["current-snapshot-id"], -1);
        let md = updated(&base, r#"[{"action":"remove-snapshot-ref","ref-name":"audit"}]"#);
        assert_eq!((md.refs.len(), md.current_snapshot_id), (2, Some(7001)));
    }

    #[test]
    fn removing_snapshots_drops_their_refs_statistics_and_older_history() {
        let base = table("v2_full");
        let md = updated(&base, r#"[{"action":"remove-snapshots","snapshot-ids":[7000]}]"#);
        assert!(!md.refs.contains_key("release-1"));
        let log: Vec<i64> = md.snapshot_log.iter().map(|e| e.snapshot_id).collect();
        assert_eq!(log, [7001]);
        assert_eq!(md.statistics.len(), 1);

        let md = updated(&base, r#"[{"action":"remove-snapshots","snapshot-ids":[7001]}]"#);
        assert_eq!((md.current_snapshot_id, md.refs.contains_key("main")), (None, false));
        assert!(md.statistics.is_empty() && md.partition_statistics.is_empty() && md.snapshot_log.is_empty());
        assert_eq!(md.snapshots.len(), 2);
    }

    #[test]
    fn location_and_properties() {
        let base = table("v2_full");
        let md = updated(
            &base,
            r#"[{"action":"set-location","location":"s3://moved/t/"},
               {"action":"set-properties","updates":{"a":"1","write.format.default":"orc"}},
               {"action":"remove-properties","removals":["commit.retry.num-retries","absent"]}]"#,
        );
        assert_eq!(md.location, "s3://moved/t");
        assert_eq!(md.properties.get("a").map(String::as_str), Some("1"));
        assert_eq!(md.properties.get("write.format.default").map(String::as_str), Some("orc"));
        assert!(!md.properties.contains_key("commit.retry.num-retries"));
        invalid(&base, r#"[{"action":"set-location","location":""}]"#);
    }

    #[test]
    fn statistics_are_set_by_snapshot_and_removed() {
        let base = table("v2_full");
        let stats = r#"{"snapshot-id":7001,"statistics-path":"s3://s/new.puffin","file-size-in-bytes":10,"file-footer-size-in-bytes":2,"blob-metadata":[]}"#;
        let md = updated(&base, &format!(r#"[{{"action":"set-statistics","snapshot-id":7001,"statistics":{stats}}}]"#));
        assert_eq!(md.statistics.len(), 1);
        assert_eq!(md.statistics[0].statistics_path, "s3://s/new.puffin");
        let md = updated(
            &base,
            &format!(r#"[{{"action":"set-statistics","statistics":{}}}]"#, stats.replace("7001", "7002")),
        );
        assert_eq!(md.statistics.len(), 2);
        invalid(&base, &format!(r#"[{{"action":"set-statistics","snapshot-id":7000,"statistics":{stats}}}]"#));
        assert!(updated(&base, r#"[{"action":"remove-statistics","snapshot-id":7001}]"#).statistics.is_empty());

        let md = updated(
            &base,
            r#"[{"action":"set-partition-statistics","partition-statistics":{"snapshot-id":7002,"statistics-path":"p","file-size-in-bytes":1}}]"#,
        );
        assert_eq!(md.partition_statistics.len(), 2);
        let md = updated(&base, r#"[{"action":"remove-partition-statistics","snapshot-id":7001}]"#);
        assert!(md.partition_statistics.is_empty());
    }

    #[test]
    fn encryption_keys_need_v3() {
        let key = r#"{"action":"add-encryption-key","encryption-key":{"key-id":"k2","encrypted-key-metadata":"AQI="}}"#;
        invalid(&table("v2_full"), &format!("[{key}]"));
        let base = table("v3_row_lineage");
        let md = updated(&base, &format!("[{key},{key}]"));
        assert_eq!(md.encryption_keys.len(), 3);
        let md = updated(&md, r#"[{"action":"remove-encryption-key","key-id":"k2"}]"#);
        assert_eq!(md.encryption_keys, base.encryption_keys);
    }
}
