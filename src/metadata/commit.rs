//! The commit engine: check requirements, apply updates in order, validate the result.
//!
//! Semantics follow Java's `TableMetadata.Builder` as driven by `CatalogHandlers`:
//! a failed requirement or a stale value (sequence number, first-row-id, vanished
//! parent) is a conflict the client may retry; anything else that cannot apply is
//! invalid.

use std::collections::BTreeMap;

use super::create::{parse_format_version, FORMAT_VERSION_PROPERTY};
use super::encryption::EncryptedKey;
use super::error::{conflict, invalid, MetadataError};
use super::partition::{PartitionField, PartitionSpec, UnboundPartitionSpec, PARTITION_DATA_ID_START};
use super::requirement::TableRequirement;
use super::schema::Schema;
use super::snapshot::{Snapshot, SnapshotLogEntry, SnapshotRefType, SnapshotReference};
use super::sort::SortOrder;
use super::table::{TableMetadata, MAIN_BRANCH, MAX_FORMAT_VERSION};
use super::update::TableUpdate;

/// "The one added last in this commit" for set-current-schema, set-default-spec and
/// set-default-sort-order.
const LAST_ADDED: i32 = -1;

/// Format version of tables created by a commit that does not pick one.
const DEFAULT_FORMAT_VERSION: u8 = 2;

/// The result of a commit.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitOutcome {
    pub metadata: TableMetadata,
    /// False when the updates changed nothing: the caller writes nothing.
    pub changed: bool,
}

/// Applies a commit to `base`, or creates the table from scratch when `base` is `None`
/// and the requirements are exactly `assert-create`. A create without `set-location`
/// leaves `location` empty for the caller to fill with its default.
pub fn apply_commit(
    base: Option<&TableMetadata>,
    requirements: &[TableRequirement],
    updates: &[TableUpdate],
    now_ms: i64,
) -> Result<CommitOutcome, MetadataError> {
    let start = match base {
        Some(base) => {
            requirements.iter().try_for_each(|r| r.check(base))?;
            base.clone()
        }
        None if !requirements.contains(&TableRequirement::AssertCreate) => {
            return Err(MetadataError::NoSuchTable("Table does not exist".to_owned()))
        }
        None if requirements.iter().any(|r| *r != TableRequirement::AssertCreate) => {
            return invalid!("Invalid create requirements: only assert-create is allowed");
        }
        None => empty_table(updates, now_ms),
    };
    let mut builder = Builder::new(start, base.is_none(), now_ms);
    for update in updates {
        builder.apply(update)?;
    }
    builder.finish(base)
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
    TableMetadata {
        format_version,
        table_uuid: uuid::Uuid::new_v4().to_string(),
        location: String::new(),
        last_sequence_number: 0,
        last_updated_ms: now_ms,
        last_column_id: 0,
        schemas: Vec::new(),
        current_schema_id: 0,
        partition_specs: Vec::new(),
        default_spec_id: 0,
        last_partition_id: 0,
        sort_orders: Vec::new(),
        default_sort_order_id: 0,
        properties: BTreeMap::new(),
        current_snapshot_id: None,
        next_row_id: 0,
        encryption_keys: Vec::new(),
        refs: BTreeMap::new(),
        snapshots: Vec::new(),
        statistics: Vec::new(),
        partition_statistics: Vec::new(),
        snapshot_log: Vec::new(),
        metadata_log: Vec::new(),
    }
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
            SetLocation { location } => {
                let location = location.trim_end_matches('/');
                if location.is_empty() {
                    return invalid!("Invalid table location: empty");
                }
                location.clone_into(&mut md.location);
            }
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
            _ => invalid!("Cannot upgrade table to unsupported format version: v{version} (supported: v{MAX_FORMAT_VERSION})"),
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
        let id = snapshot.snapshot_id;
        if md.schemas.is_empty() || md.partition_specs.is_empty() || md.sort_orders.is_empty() {
            return invalid!("Attempting to add a snapshot before a schema, partition spec and sort order are added");
        }
        if md.snapshot(id).is_some() {
            return invalid!("Snapshot already exists for id: {id}");
        }
        if let Some(schema_id) = snapshot.schema_id.filter(|&s| md.schema(s).is_none()) {
            return invalid!("Snapshot {id} references unknown schema {schema_id}");
        }
        if let Some(parent) = snapshot.parent_snapshot_id.filter(|&p| md.snapshot(p).is_none()) {
            return conflict!("Cannot add snapshot {id}: parent snapshot {parent} no longer exists");
        }
        if md.format_version > 1 {
            if snapshot.sequence_number <= md.last_sequence_number && snapshot.parent_snapshot_id.is_some() {
                return conflict!(
                    "Cannot add snapshot with sequence number {} older than last sequence number {}",
                    snapshot.sequence_number,
                    md.last_sequence_number
                );
            }
            md.last_sequence_number = md.last_sequence_number.max(snapshot.sequence_number);
        }
        if md.format_version >= 3 {
            let (Some(first_row_id), Some(added_rows)) = (snapshot.first_row_id, snapshot.added_rows) else {
                return invalid!("Cannot add a snapshot: first-row-id and added-rows are required from v3");
            };
            if first_row_id < md.next_row_id {
                return conflict!(
                    "Cannot add a snapshot, first-row-id is behind table next-row-id: {first_row_id} < {}",
                    md.next_row_id
                );
            }
            md.next_row_id += added_rows;
        }
        md.snapshots.push(snapshot.clone());
        self.added_snapshots.push(id);
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
        let is_tag = reference.ref_type == SnapshotRefType::Tag;
        if name == MAIN_BRANCH && is_tag {
            return invalid!("Cannot set {MAIN_BRANCH} to a tag, it must be a branch");
        }
        if is_tag && (reference.min_snapshots_to_keep.is_some() || reference.max_snapshot_age_ms.is_some()) {
            return invalid!("Tags do not support min-snapshots-to-keep or max-snapshot-age-ms");
        }
        let positive = [
            reference.min_snapshots_to_keep.map(i64::from),
            reference.max_snapshot_age_ms,
            reference.max_ref_age_ms,
        ];
        if positive.into_iter().flatten().any(|v| v <= 0) {
            return invalid!("Ref retention settings of {name} must be greater than 0");
        }
        if name == MAIN_BRANCH {
            // A snapshot added now became current at its own time; a rollback happens now.
            let timestamp_ms =
                if self.added_snapshots.contains(&id) { snapshot.timestamp_ms } else { self.now_ms };
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

    /// Validates the result and settles the snapshot log and last-updated-ms.
    fn finish(mut self, base: Option<&TableMetadata>) -> Result<CommitOutcome, MetadataError> {
        self.settle_snapshot_log();
        let mut md = self.md;
        if base == Some(&md) {
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
        if md.location.is_empty() && base.is_some() {
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

/// Resolves -1 to the id added last in this commit.
fn resolve_last_added(id: i32, last_added: Option<i32>, what: &str) -> Result<i32, MetadataError> {
    match (id, last_added) {
        (LAST_ADDED, Some(added)) => Ok(added),
        (LAST_ADDED, None) => invalid!("Cannot set last added {what}: no {what} has been added"),
        _ => Ok(id),
    }
}
