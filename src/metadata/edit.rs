//! A table commit as an edit of the stored metadata JSON: only the fields
//! that requirements and updates need are read, untouched parts stay slices
//! of the stored bytes, and the new document is written by copying those
//! slices and serializing only what changed. Appending a snapshot to a table
//! of 10,000 costs a scan and a copy of the others, not their parse and
//! serialization.
//!
//! The slice path takes the updates of appends, expiry and maintenance:
//! add-snapshot, set-snapshot-ref, remove-snapshots, remove-snapshot-ref,
//! set-location, set-properties (but `format-version`) and
//! remove-properties, plus the metadata log. Anything else (schemas, specs,
//! sort orders, statistics, encryption keys, format upgrades, uuids), and a
//! stored document not laid out as this catalog writes it (a registered
//! file before its first commit, v1, strings with escapes where a key is
//! read), goes through the owned model (`commit.rs`), whose output this
//! path reproduces byte for byte (the tests below compare them).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use bumpalo::collections::Vec as ArenaVec;
use bumpalo::Bump;

use super::commit::{check_ref_update, SnapshotTable};
use super::create::FORMAT_VERSION_PROPERTY;
use super::error::{invalid, MetadataError};
use super::metadata_log::{previous_versions_max, PREVIOUS_VERSIONS_MAX};
use super::requirement::{RequirementBase, TableRequirement};
use super::scan::{elements, fields, int_member, member};
use super::snapshot::{MetadataLogEntry, Snapshot, SnapshotLogEntry, SnapshotReference};
use super::table::{trim_location, MAIN_BRANCH};
use super::update::TableUpdate;

/// The top-level keys of v2 and v3 metadata in the order this catalog
/// writes them (`TableMetadataOut`, Java's order).
const KEYS: [&str; 23] = [
    "format-version",
    "table-uuid",
    "location",
    "last-sequence-number",
    "last-updated-ms",
    "last-column-id",
    "current-schema-id",
    "schemas",
    "default-spec-id",
    "partition-specs",
    "last-partition-id",
    "default-sort-order-id",
    "sort-orders",
    "properties",
    "current-snapshot-id",
    "next-row-id",
    "encryption-keys",
    "refs",
    "snapshots",
    "statistics",
    "partition-statistics",
    "snapshot-log",
    "metadata-log",
];
const FORMAT_VERSION: usize = 0;
const TABLE_UUID: usize = 1;
const LOCATION: usize = 2;
const LAST_SEQUENCE_NUMBER: usize = 3;
const LAST_UPDATED_MS: usize = 4;
const SCHEMAS: usize = 7;
const PARTITION_SPECS: usize = 9;
const SORT_ORDERS: usize = 12;
const PROPERTIES: usize = 13;
const CURRENT_SNAPSHOT_ID: usize = 14;
const NEXT_ROW_ID: usize = 15;
const ENCRYPTION_KEYS: usize = 16;
const REFS: usize = 17;
const SNAPSHOTS: usize = 18;
const STATISTICS: usize = 19;
const PARTITION_STATISTICS: usize = 20;
const SNAPSHOT_LOG: usize = 21;
const METADATA_LOG: usize = 22;
/// Last column id, current schema, last partition id, default spec, default
/// sort order: the order of [`RequirementBase::ids`].
const IDS: [usize; 5] = [5, 6, 10, 8, 11];

/// Whether an update is applied on the slice path.
fn on_slice_path(update: &TableUpdate) -> bool {
    use TableUpdate::*;
    match update {
        AddSnapshot { .. }
        | SetSnapshotRef { .. }
        | RemoveSnapshots { .. }
        | RemoveSnapshotRef { .. }
        | SetLocation { .. }
        | RemoveProperties { .. } => true,
        SetProperties { updates } => !updates.contains_key(FORMAT_VERSION_PROPERTY),
        _ => false,
    }
}

/// A snapshot of the stored document.
struct Stored {
    id: i64,
    range: Range<usize>,
    kept: bool,
}

/// A snapshot log entry after the log was settled.
enum LogItem {
    Stored(Range<usize>),
    Added(usize),
}

/// The metadata log after [`TableEdit::record_previous`].
struct MetadataLog<'a> {
    /// The stored entries kept, as one slice.
    kept: Option<Range<usize>>,
    new: NewLogEntry<'a>,
}

/// The entry a new version adds to the metadata log: a
/// [`MetadataLogEntry`] borrowing its file.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct NewLogEntry<'a> {
    timestamp_ms: i64,
    metadata_file: &'a str,
}

/// Stored table metadata with a commit applied, ready to be written. Its
/// lists live in the request's arena: a typical commit's edit allocates
/// nothing of its own but the maps of `refs` and `properties`.
pub struct TableEdit<'a> {
    doc: &'a [u8],
    arena: &'a Bump,
    at: [Option<Range<usize>>; 23],
    format_version: u8,
    table_uuid: Cow<'a, str>,
    base_location: Cow<'a, str>,
    location: Cow<'a, str>,
    base_last_sequence_number: i64,
    last_sequence_number: i64,
    base_last_updated_ms: i64,
    last_updated_ms: i64,
    ids: [i32; 5],
    properties: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    properties_edited: bool,
    base_current_snapshot_id: Option<i64>,
    current_snapshot_id: Option<i64>,
    base_next_row_id: i64,
    next_row_id: i64,
    refs: BTreeMap<Cow<'a, str>, SnapshotReference>,
    refs_edited: bool,
    snapshots: ArenaVec<'a, Stored>,
    /// Snapshots added by this commit; false once removed again.
    added: ArenaVec<'a, (&'a Snapshot, bool)>,
    /// The ids of each remove-snapshots that removed something.
    removed: ArenaVec<'a, &'a [i64]>,
    log_added: ArenaVec<'a, SnapshotLogEntry>,
    log_settled: Option<ArenaVec<'a, LogItem>>,
    main_history: ArenaVec<'a, i64>,
    metadata_log: Option<MetadataLog<'a>>,
    now_ms: i64,
    changed: bool,
}

/// Applies a commit to stored table metadata `doc` on the slice path:
/// `None` when it needs the owned model (see the module's comment), else
/// the edit or why it was refused (the errors of `apply_commit`).
pub fn edit_commit<'a>(
    doc: &'a [u8],
    requirements: &[TableRequirement],
    updates: &'a [TableUpdate],
    now_ms: i64,
    arena: &'a Bump,
) -> Option<Result<TableEdit<'a>, MetadataError>> {
    if !updates.iter().all(on_slice_path) {
        return None;
    }
    let mut edit = TableEdit::scan(doc, now_ms, arena)?;
    Some((|| {
        requirements.iter().try_for_each(|r| r.check(&edit))?;
        for update in updates {
            edit.apply(update)?;
        }
        edit.finish();
        Ok(edit)
    })())
}

/// The location stored in `doc` and the one `updates` leave the table at
/// (the last valid set-location, trimmed), before the catalog resolves it;
/// read without a scan of the rest. `None` when `doc` has no location.
pub fn commit_locations<'a>(doc: &'a [u8], updates: &'a [TableUpdate]) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
    let stored = json_str(member(doc, "location")?)?;
    let set = updates.iter().rev().find_map(|u| match u {
        TableUpdate::SetLocation { location } => trim_location(location).ok(),
        _ => None,
    });
    Some((stored.clone(), set.map_or(stored, Cow::Borrowed)))
}

/// The text of a JSON string (`raw` with its quotes), borrowed unless it has escapes.
fn json_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return sonic_rs::from_slice::<String>(raw).ok().map(Cow::Owned);
    }
    std::str::from_utf8(inner).ok().map(Cow::Borrowed)
}

/// A JSON object with string keys, as a map.
fn object<'a, V>(doc: &'a [u8], at: usize, value: impl Fn(&'a [u8]) -> Option<V>) -> Option<BTreeMap<Cow<'a, str>, V>> {
    let mut map = BTreeMap::new();
    for field in fields(doc, at) {
        let (key, range) = field?;
        map.insert(key_text(key)?, value(&doc[range])?);
    }
    Some(map)
}

/// Whether the JSON object at `at` holds exactly `map` (its keys are unique,
/// as this catalog writes them), compared without building its map.
fn same_object<'a, V: PartialEq>(
    doc: &'a [u8],
    at: usize,
    map: &BTreeMap<Cow<'a, str>, V>,
    value: impl Fn(&'a [u8]) -> Option<V>,
) -> bool {
    let mut count = 0;
    for field in fields(doc, at) {
        let Some((key, range)) = field else { return false };
        let same = key_text(key).is_some_and(|k| map.get(&*k).is_some_and(|v| value(&doc[range]).as_ref() == Some(v)));
        if !same {
            return false;
        }
        count += 1;
    }
    count == map.len()
}

/// The text of an object's key (`key` without its quotes).
fn key_text(key: &[u8]) -> Option<Cow<'_, str>> {
    match std::str::from_utf8(key).ok()? {
        k if k.contains('\\') => sonic_rs::from_str::<String>(&format!("\"{k}\"")).ok().map(Cow::Owned),
        k => Some(Cow::Borrowed(k)),
    }
}

fn int(raw: &[u8]) -> Option<i64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

impl<'a> TableEdit<'a> {
    /// Reads the fields a commit needs and indexes the snapshots; `None`
    /// unless `doc` is laid out exactly as this catalog writes v2 and v3.
    fn scan(doc: &'a [u8], now_ms: i64, arena: &'a Bump) -> Option<TableEdit<'a>> {
        let mut at: [Option<Range<usize>>; 23] = Default::default();
        let (mut k, mut compact_len) = (0, 2);
        for field in fields(doc, 0) {
            let (key, range) = field?;
            while k < KEYS.len() && KEYS[k].as_bytes() != key && matches!(k, NEXT_ROW_ID | ENCRYPTION_KEYS) {
                k += 1;
            }
            if KEYS.get(k)?.as_bytes() != key {
                return None;
            }
            compact_len += usize::from(compact_len > 2) + key.len() + 3 + range.len();
            at[k] = Some(range);
            k += 1;
        }
        let present = |i: usize| at[i].is_some() || matches!(i, NEXT_ROW_ID | ENCRYPTION_KEYS);
        if compact_len != doc.len() || !(0..KEYS.len()).all(present) {
            return None;
        }
        let raw = |i: usize| &doc[at[i].clone().unwrap_or_default()];
        let format_version = u8::try_from(int(raw(FORMAT_VERSION))?).ok()?;
        if !(2..=3).contains(&format_version) || (format_version == 3) != at[NEXT_ROW_ID].is_some() {
            return None;
        }
        let location = json_str(raw(LOCATION))?;
        let mut ids = [0; 5];
        for (id, i) in ids.iter_mut().zip(IDS) {
            *id = i32::try_from(int(raw(i))?).ok()?;
        }
        let current_snapshot_id = match raw(CURRENT_SNAPSHOT_ID) {
            b"null" | b"-1" => None,
            id => Some(int(id)?),
        };
        let next_row_id = if format_version == 3 { int(raw(NEXT_ROW_ID))? } else { 0 };
        let snapshots_at = at[SNAPSHOTS].clone()?.start;
        let mut snapshots = ArenaVec::new_in(arena);
        for element in elements(doc, snapshots_at) {
            let range = element?;
            snapshots.push(Stored { id: int_member(&doc[range.clone()], "snapshot-id")?, range, kept: true });
        }
        let last_sequence_number = int(raw(LAST_SEQUENCE_NUMBER))?;
        let last_updated_ms = int(raw(LAST_UPDATED_MS))?;
        Some(TableEdit {
            doc,
            arena,
            format_version,
            table_uuid: json_str(raw(TABLE_UUID))?,
            base_location: location.clone(),
            location,
            base_last_sequence_number: last_sequence_number,
            last_sequence_number,
            base_last_updated_ms: last_updated_ms,
            last_updated_ms,
            ids,
            properties: object(doc, at[PROPERTIES].clone()?.start, json_str)?,
            properties_edited: false,
            base_current_snapshot_id: current_snapshot_id,
            current_snapshot_id,
            base_next_row_id: next_row_id,
            next_row_id,
            refs: object(doc, at[REFS].clone()?.start, |r| sonic_rs::from_slice(r).ok())?,
            refs_edited: false,
            snapshots,
            added: ArenaVec::new_in(arena),
            removed: ArenaVec::new_in(arena),
            log_added: ArenaVec::new_in(arena),
            log_settled: None,
            main_history: ArenaVec::new_in(arena),
            metadata_log: None,
            now_ms,
            changed: false,
            at,
        })
    }

    fn raw(&self, i: usize) -> &'a [u8] {
        &self.doc[self.at[i].clone().unwrap_or_default()]
    }

    fn has_snapshot(&self, id: i64) -> bool {
        self.snapshots.iter().any(|s| s.kept && s.id == id)
            || self.added.iter().any(|(s, kept)| *kept && s.snapshot_id == id)
    }

    fn apply(&mut self, update: &'a TableUpdate) -> Result<(), MetadataError> {
        use TableUpdate::*;
        match update {
            AddSnapshot { snapshot } => self.add_snapshot(snapshot)?,
            SetSnapshotRef { ref_name, reference } => self.set_ref(ref_name, reference)?,
            RemoveSnapshots { snapshot_ids } => self.remove_snapshots(snapshot_ids),
            RemoveSnapshotRef { ref_name } => {
                if ref_name == MAIN_BRANCH {
                    self.current_snapshot_id = None;
                }
                self.refs_edited |= self.refs.remove(ref_name.as_str()).is_some();
            }
            SetLocation { location } => self.location = Cow::Borrowed(trim_location(location)?),
            SetProperties { updates } => {
                for (key, value) in updates {
                    self.properties.insert(Cow::Borrowed(key), Cow::Borrowed(value));
                }
                self.properties_edited = true;
            }
            RemoveProperties { removals } => {
                for key in removals {
                    self.properties.remove(key.as_str());
                }
                self.properties_edited = true;
            }
            _ => unreachable!("edit_commit takes only updates on the slice path"),
        }
        Ok(())
    }

    fn add_snapshot(&mut self, snapshot: &'a Snapshot) -> Result<(), MetadataError> {
        let non_empty = |i: usize| self.raw(i) != b"[]";
        let (mut last_sequence_number, mut next_row_id) = (self.last_sequence_number, self.next_row_id);
        let table = SnapshotTable {
            ready: non_empty(SCHEMAS) && non_empty(PARTITION_SPECS) && non_empty(SORT_ORDERS),
            format_version: self.format_version,
            last_sequence_number: &mut last_sequence_number,
            next_row_id: &mut next_row_id,
        };
        let schemas = self.raw(SCHEMAS);
        let schema_known = |id: i32| {
            elements(schemas, 0).map_while(|e| e).any(|e| int_member(&schemas[e], "schema-id") == Some(id.into()))
        };
        table.admit(snapshot, |id| self.has_snapshot(id), schema_known)?;
        (self.last_sequence_number, self.next_row_id) = (last_sequence_number, next_row_id);
        self.added.push((snapshot, true));
        Ok(())
    }

    fn set_ref(&mut self, name: &'a str, reference: &SnapshotReference) -> Result<(), MetadataError> {
        if self.refs.get(name) == Some(reference) {
            return Ok(());
        }
        let id = reference.snapshot_id;
        if !self.has_snapshot(id) {
            return invalid!("Cannot set {name} to unknown snapshot: {id}");
        }
        let added = self.added.iter().rev().find(|(s, kept)| *kept && s.snapshot_id == id).map(|(s, _)| *s);
        check_ref_update(name, reference, added, self.refs.get(name))?;
        if name == MAIN_BRANCH {
            // A snapshot added now became current at its own time; a rollback happens now.
            let timestamp_ms = added.map_or(self.now_ms, |s| s.timestamp_ms);
            self.log_added.push(SnapshotLogEntry { timestamp_ms, snapshot_id: id });
            self.current_snapshot_id = Some(id);
            self.main_history.push(id);
        }
        self.refs.insert(Cow::Borrowed(name), reference.clone());
        self.refs_edited = true;
        Ok(())
    }

    fn remove_snapshots(&mut self, ids: &'a [i64]) {
        let mut any = false;
        for s in self.snapshots.iter_mut().filter(|s| s.kept && ids.contains(&s.id)) {
            (s.kept, any) = (false, true);
        }
        for (s, kept) in &mut self.added {
            if *kept && ids.contains(&s.snapshot_id) {
                (*kept, any) = (false, true);
            }
        }
        if !any {
            return;
        }
        self.removed.push(ids);
        let before = self.refs.len();
        self.refs.retain(|_, r| !ids.contains(&r.snapshot_id));
        self.refs_edited |= self.refs.len() != before;
        if self.current_snapshot_id.is_some_and(|id| ids.contains(&id)) {
            self.current_snapshot_id = None;
        }
    }

    /// Settles the snapshot log as the model does (`Builder::settle_snapshot_log`),
    /// tells whether anything changed and, if so, sets last-updated-ms.
    fn finish(&mut self) {
        let current = self.current_snapshot_id;
        let added_now = |id: i64| self.added.iter().any(|(s, _)| s.snapshot_id == id);
        let intermediate = ArenaVec::from_iter_in(
            self.main_history.iter().copied().filter(|&id| added_now(id) && Some(id) != current),
            self.arena,
        );
        let stored_log = self.at[SNAPSHOT_LOG].clone().unwrap_or_default().start;
        if !intermediate.is_empty() || !self.removed.is_empty() {
            let mut live = ArenaVec::from_iter_in(self.snapshots.iter().filter(|s| s.kept).map(|s| s.id), self.arena);
            live.extend(self.added.iter().filter(|(_, kept)| *kept).map(|(s, _)| s.snapshot_id));
            live.sort_unstable();
            let entries = elements(self.doc, stored_log)
                .map_while(|e| e)
                .map(|r| (int_member(&self.doc[r.clone()], "snapshot-id").unwrap_or(i64::MIN), LogItem::Stored(r)))
                .chain(self.log_added.iter().enumerate().map(|(i, e)| (e.snapshot_id, LogItem::Added(i))));
            let mut log = ArenaVec::new_in(self.arena);
            for (id, item) in entries {
                if live.binary_search(&id).is_ok() {
                    if !intermediate.contains(&id) {
                        log.push(item);
                    }
                } else if !self.removed.is_empty() {
                    log.clear();
                }
            }
            self.log_settled = Some(log);
        }
        let log_changed = match &self.log_settled {
            None => !self.log_added.is_empty(),
            Some(log) => {
                log.iter().any(|i| matches!(i, LogItem::Added(_)))
                    || log.len() != elements(self.doc, stored_log).count()
            }
        };
        let snapshots_changed = !self.removed.is_empty() || self.added.iter().any(|(_, kept)| *kept);
        let stored_at = |i: usize| self.at[i].clone().unwrap_or_default().start;
        let props_changed =
            self.properties_edited && !same_object(self.doc, stored_at(PROPERTIES), &self.properties, json_str);
        let refs_changed =
            self.refs_edited && !same_object(self.doc, stored_at(REFS), &self.refs, |r| sonic_rs::from_slice(r).ok());
        self.changed = snapshots_changed
            || log_changed
            || props_changed
            || refs_changed
            || self.location != self.base_location
            || self.current_snapshot_id != self.base_current_snapshot_id
            || self.last_sequence_number != self.base_last_sequence_number
            || self.next_row_id != self.base_next_row_id;
        if self.changed {
            self.last_updated_ms = self.now_ms;
        }
    }

    /// False when the commit changed nothing: nothing is written.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The table's location after the commit (unresolved).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Replaces the location with the catalog's resolved form of it.
    pub fn set_location(&mut self, resolved: &'a str) {
        self.location = Cow::Borrowed(resolved);
    }

    /// A table property after the commit.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(|v| &**v)
    }

    /// The metadata log's part of a new version, as `record_previous` does
    /// it for the model: appends `previous` (written at the base's
    /// last-updated-ms), trims the log to its limit and returns the trimmed
    /// files, oldest first. `None` when a stored entry's file is one
    /// `rewrite` wants changed (the model path rewrites it).
    pub fn record_previous(&mut self, previous: &'a str, rewrite: impl Fn(&str) -> bool) -> Option<Vec<String>> {
        let max = previous_versions_max(self.property(PREVIOUS_VERSIONS_MAX));
        let log_at = self.at[METADATA_LOG].clone()?.start;
        let mut stored = 0;
        for entry in elements(self.doc, log_at) {
            let file = json_str(member(&self.doc[entry?], "metadata-file")?)?;
            if rewrite(&file) {
                return None;
            }
            stored += 1;
        }
        let excess = (stored + 1usize).saturating_sub(max);
        let mut expired = Vec::with_capacity(excess);
        let mut kept: Option<Range<usize>> = None;
        for (i, entry) in elements(self.doc, log_at).map_while(|e| e).enumerate() {
            if i < excess {
                expired.push(sonic_rs::from_slice::<MetadataLogEntry>(&self.doc[entry]).ok()?.metadata_file);
            } else {
                kept = Some(kept.map_or(entry.start, |k| k.start)..entry.end);
            }
        }
        // `max` is at least 1: the new entry is always kept.
        let new = NewLogEntry { timestamp_ms: self.base_last_updated_ms, metadata_file: previous };
        self.metadata_log = Some(MetadataLog { kept, new });
        Some(expired)
    }

    /// Writes the new metadata JSON, and into `copies`, when given, where it
    /// copied the stored document's bytes (merged where consecutive).
    pub fn write(&self, out: &mut Vec<u8>, copies: Option<&mut ArenaVec<'a, Copied>>) -> sonic_rs::Result<()> {
        self.write_doc(out, &mut Copier { base: out.len(), copies }, false)
    }

    /// Writes the `snapshots=refs` rendering, or nothing when it is the same.
    pub fn write_refs(&self, out: &mut Vec<u8>) -> sonic_rs::Result<()> {
        let all = self.snapshots.iter().filter(|s| s.kept).all(|s| self.referenced(s.id))
            && self.added.iter().filter(|(_, kept)| *kept).all(|(s, _)| self.referenced(s.snapshot_id));
        if all {
            return Ok(());
        }
        self.write_doc(out, &mut Copier { base: out.len(), copies: None }, true)
    }

    fn referenced(&self, id: i64) -> bool {
        self.refs.values().any(|r| r.snapshot_id == id)
    }

    fn write_doc(&self, out: &mut Vec<u8>, copier: &mut Copier<'_, 'a>, refs_only: bool) -> sonic_rs::Result<()> {
        out.push(b'{');
        for (i, range) in self.at.iter().enumerate() {
            let Some(range) = range else { continue };
            if i > FORMAT_VERSION {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(KEYS[i].as_bytes());
            out.extend_from_slice(b"\":");
            match i {
                LOCATION => sonic_rs::to_writer(&mut *out, &*self.location)?,
                LAST_SEQUENCE_NUMBER => sonic_rs::to_writer(&mut *out, &self.last_sequence_number)?,
                LAST_UPDATED_MS => sonic_rs::to_writer(&mut *out, &self.last_updated_ms)?,
                PROPERTIES if self.properties_edited => sonic_rs::to_writer(&mut *out, &self.properties)?,
                CURRENT_SNAPSHOT_ID => match self.current_snapshot_id {
                    Some(id) => sonic_rs::to_writer(&mut *out, &id)?,
                    None if self.format_version < 3 => out.extend_from_slice(b"-1"),
                    None => out.extend_from_slice(b"null"),
                },
                NEXT_ROW_ID => sonic_rs::to_writer(&mut *out, &self.next_row_id)?,
                REFS if self.refs_edited => sonic_rs::to_writer(&mut *out, &self.refs)?,
                SNAPSHOTS => self.write_snapshots(out, copier, refs_only)?,
                STATISTICS | PARTITION_STATISTICS if !self.removed.is_empty() => {
                    let kept = |e: &[u8]| {
                        let id = int_member(e, "snapshot-id");
                        !self.removed.iter().any(|ids| id.is_some_and(|id| ids.contains(&id)))
                    };
                    list(
                        out,
                        elements(self.doc, range.start).map_while(|e| e).filter(|e| kept(&self.doc[e.clone()])),
                        |out, e| {
                            copier.copy(out, self.doc, e);
                            Ok(())
                        },
                    )?;
                }
                SNAPSHOT_LOG => self.write_snapshot_log(out, copier, range.clone())?,
                METADATA_LOG => match &self.metadata_log {
                    None => copier.copy(out, self.doc, range.clone()),
                    Some(log) => {
                        out.push(b'[');
                        if let Some(kept) = &log.kept {
                            copier.copy(out, self.doc, kept.clone());
                            out.push(b',');
                        }
                        sonic_rs::to_writer(&mut *out, &log.new)?;
                        out.push(b']');
                    }
                },
                _ => copier.copy(out, self.doc, range.clone()),
            }
        }
        out.push(b'}');
        Ok(())
    }

    fn write_snapshots(&self, out: &mut Vec<u8>, copier: &mut Copier<'_, 'a>, refs_only: bool) -> sonic_rs::Result<()> {
        let stored = self.snapshots.iter().filter(|s| s.kept && (!refs_only || self.referenced(s.id)));
        let added = self.added.iter().filter(|(s, kept)| *kept && (!refs_only || self.referenced(s.snapshot_id)));
        let mut first = true;
        out.push(b'[');
        if self.removed.is_empty() && !refs_only && !self.snapshots.is_empty() {
            // Nothing removed: the stored elements are one slice.
            let (start, end) = (self.snapshots[0].range.start, self.snapshots[self.snapshots.len() - 1].range.end);
            copier.copy(out, self.doc, start..end);
            first = false;
        } else {
            for s in stored {
                separate(out, &mut first);
                copier.copy(out, self.doc, s.range.clone());
            }
        }
        for (s, _) in added {
            separate(out, &mut first);
            sonic_rs::to_writer(&mut *out, s)?;
        }
        out.push(b']');
        Ok(())
    }

    fn write_snapshot_log(
        &self,
        out: &mut Vec<u8>,
        copier: &mut Copier<'_, 'a>,
        range: Range<usize>,
    ) -> sonic_rs::Result<()> {
        match &self.log_settled {
            Some(log) => list(out, log.iter(), |out, item| match item {
                LogItem::Stored(r) => {
                    copier.copy(out, self.doc, r.clone());
                    Ok(())
                }
                LogItem::Added(i) => sonic_rs::to_writer(&mut *out, &self.log_added[*i]),
            }),
            None if self.log_added.is_empty() => {
                copier.copy(out, self.doc, range);
                Ok(())
            }
            None => {
                let mut first = &self.doc[range.clone()] == b"[]";
                copier.copy(out, self.doc, range.start..range.end - 1);
                for entry in &self.log_added {
                    separate(out, &mut first);
                    sonic_rs::to_writer(&mut *out, entry)?;
                }
                out.push(b']');
                Ok(())
            }
        }
    }
}

/// Bytes of the new document copied from the stored one: `from` in the
/// stored document, at `at` in the new one (`catalog/chunked.rs` reuses
/// their compressed form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    pub at: usize,
    pub from: Range<usize>,
}

/// Copies stored bytes into the new document, noting where when asked.
struct Copier<'c, 'a> {
    /// Where the new document starts in `out`.
    base: usize,
    copies: Option<&'c mut ArenaVec<'a, Copied>>,
}

impl Copier<'_, '_> {
    /// Copies `doc[from]`. A copy that follows the last one with the same
    /// bytes between them in both documents (a separator, a kept key)
    /// extends it: runs of kept snapshots note one copy, not one each.
    fn copy(&mut self, out: &mut Vec<u8>, doc: &[u8], from: Range<usize>) {
        if let Some(copies) = self.copies.as_deref_mut() {
            let at = out.len() - self.base;
            match copies.last_mut() {
                Some(last)
                    if from.start >= last.from.end
                        && doc[last.from.end..from.start] == out[self.base + last.at + last.from.len()..] =>
                {
                    last.from.end = from.end
                }
                _ => copies.push(Copied { at, from: from.clone() }),
            }
        }
        out.extend_from_slice(&doc[from]);
    }
}

fn separate(out: &mut Vec<u8>, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
}

/// Writes a JSON array of `items`, each as `write` writes it.
fn list<T>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T) -> sonic_rs::Result<()>,
) -> sonic_rs::Result<()> {
    let mut first = true;
    out.push(b'[');
    for item in items {
        separate(out, &mut first);
        write(out, item)?;
    }
    out.push(b']');
    Ok(())
}

impl RequirementBase for TableEdit<'_> {
    fn table_uuid(&self) -> &str {
        &self.table_uuid
    }

    fn ref_snapshot_id(&self, name: &str) -> Option<i64> {
        self.refs.get(name).map(|r| r.snapshot_id)
    }

    fn ids(&self) -> [i32; 5] {
        self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::commit::apply_commit;
    use crate::metadata::metadata_log::record_previous;
    use crate::metadata::table::TableMetadata;
    use crate::metadata::test_support::{parse, table};

    const NOW: i64 = 1_800_000_000_000;
    const PREVIOUS: &str = "s3://lake/t/metadata/00042-x.metadata.json";

    /// A commit through the owned model: the new JSON, its refs rendering,
    /// the trimmed files; `None` when unchanged.
    type Written = Option<(Vec<u8>, Vec<u8>, Vec<String>)>;

    fn by_model(
        base: &[u8],
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
    ) -> Result<Written, MetadataError> {
        let parsed = || sonic_rs::from_slice::<TableMetadata>(base).unwrap();
        let previous_ms = parsed().last_updated_ms;
        let outcome = apply_commit(parsed(), parsed, requirements, updates, NOW)?;
        if !outcome.changed {
            return Ok(None);
        }
        let mut md = outcome.metadata;
        let expired = record_previous(&mut md, PREVIOUS, previous_ms);
        let referenced = |id: i64| md.refs.values().any(|r| r.snapshot_id == id);
        let refs = if md.snapshots.iter().all(|s| referenced(s.snapshot_id)) {
            Vec::new()
        } else {
            sonic_rs::to_vec(&md.referenced_snapshots_only()).unwrap()
        };
        Ok(Some((sonic_rs::to_vec(&md).unwrap(), refs, expired)))
    }

    fn by_edit(
        base: &[u8],
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
    ) -> Result<Written, MetadataError> {
        let arena = Bump::new();
        let mut edit = edit_commit(base, requirements, updates, NOW, &arena)
            .unwrap_or_else(|| panic!("not sliced: {updates:?}"))?;
        if !edit.changed() {
            return Ok(None);
        }
        let expired = edit.record_previous(PREVIOUS, |_| false).expect("no file to rewrite");
        let (mut json, mut refs, mut copies) = (b"before".to_vec(), Vec::new(), ArenaVec::new_in(&arena));
        edit.write(&mut json, Some(&mut copies)).unwrap();
        json.drain(..6);
        // Every copy noted is where it says, in order, apart and merged.
        let mut end = 0;
        for c in &copies {
            assert!(c.at > end || (end == 0 && c.at == 0), "{copies:?}");
            assert_eq!(json[c.at..c.at + c.from.len()], base[c.from.clone()]);
            end = c.at + c.from.len();
        }
        edit.write_refs(&mut refs).unwrap();
        Ok(Some((json, refs, expired)))
    }

    /// The stored form of a fixture: as this catalog writes it.
    fn stored(name: &str) -> Vec<u8> {
        sonic_rs::to_vec(&table(name)).unwrap()
    }

    /// xorshift64: reproducible cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    /// A random commit of updates on the slice path against `md`: mostly
    /// valid, sometimes stale or invalid.
    fn random_commit(rng: &mut Rng, md: &TableMetadata) -> (String, String) {
        let mut ids: Vec<i64> = md.snapshots.iter().map(|s| s.snapshot_id).collect();
        ids.push(1); // unknown
        let refs = ["main", "audit", "release-1", "b2", "t2"];
        let main = md.current_snapshot_id.map_or("null".to_string(), |id| id.to_string());
        let requirements = match rng.below(6) {
            0 => format!(r#"[{{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":{main}}}]"#),
            1 => r#"[{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":12}]"#.to_string(),
            2 => format!(r#"[{{"type":"assert-table-uuid","uuid":"{}"}}]"#, md.table_uuid),
            3 => format!(r#"[{{"type":"assert-current-schema-id","current-schema-id":{}}}]"#, rng.below(2)),
            _ => "[]".to_string(),
        };
        let (mut seq, mut row) = (md.last_sequence_number, md.next_row_id);
        let mut updates = Vec::new();
        for _ in 0..=rng.below(5) {
            let update = match rng.below(10) {
                0..=2 => {
                    let id = 100_000 + rng.below(1_000_000) as i64;
                    let parent = match rng.below(4) {
                        0 => String::new(),
                        1 => format!(r#""parent-snapshot-id":{},"#, rng.pick(&ids)),
                        _ => md.current_snapshot_id.map_or(String::new(), |p| format!(r#""parent-snapshot-id":{p},"#)),
                    };
                    seq += rng.below(3) as i64;
                    let rows = if md.format_version >= 3 {
                        let added = rng.below(50) as i64;
                        let first = row - rng.below(2) as i64;
                        row = first + added;
                        format!(r#","first-row-id":{first},"added-rows":{added}"#)
                    } else {
                        String::new()
                    };
                    let schema = if rng.below(8) == 0 { 77 } else { md.current_schema_id as u64 };
                    ids.push(id);
                    format!(
                        r#"{{"action":"add-snapshot","snapshot":{{"snapshot-id":{id},{parent}"sequence-number":{seq},"timestamp-ms":{},"manifest-list":"s3://m/{id}.avro","summary":{{"operation":"append","added-files":"{}"}},"schema-id":{schema}{rows}}}}}"#,
                        1_790_000_000_000 + id,
                        rng.below(9)
                    )
                }
                3..=4 => {
                    let name = rng.pick(&refs);
                    let kind = if rng.below(4) == 0 { "tag" } else { "branch" };
                    let retention = if rng.below(5) == 0 { r#","max-ref-age-ms":1000"# } else { "" };
                    format!(
                        r#"{{"action":"set-snapshot-ref","ref-name":"{name}","type":"{kind}","snapshot-id":{}{retention}}}"#,
                        if rng.below(2) == 0 { *ids.last().unwrap() } else { *rng.pick(&ids) }
                    )
                }
                5 => {
                    format!(r#"{{"action":"remove-snapshots","snapshot-ids":[{},{}]}}"#, rng.pick(&ids), rng.pick(&ids))
                }
                6 => format!(r#"{{"action":"remove-snapshot-ref","ref-name":"{}"}}"#, rng.pick(&refs)),
                7 => format!(
                    r#"{{"action":"set-properties","updates":{{"{}":"{}"}}}}"#,
                    rng.pick(&["a", "write.metadata.previous-versions-max", "commit.retry.num-retries", "q\\\"k"]),
                    rng.pick(&["1", "2", "10", "x\\\"y"])
                ),
                8 => format!(
                    r#"{{"action":"remove-properties","removals":["{}"]}}"#,
                    rng.pick(&["a", "write.format.default", "absent"])
                ),
                _ => format!(
                    r#"{{"action":"set-location","location":"{}"}}"#,
                    rng.pick(&["s3://moved/t/", &md.location, ""])
                ),
            };
            updates.push(update);
        }
        (requirements, format!("[{}]", updates.join(",")))
    }

    /// The slice path and the owned model agree byte for byte (or on the
    /// error) on random commits, chained so tables grow, shrink and move.
    #[test]
    fn the_slice_path_writes_what_the_model_writes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut changed, mut refused) = (0, 0);
        for name in ["v2_full", "v3_row_lineage", "v3_empty", "v2_pyiceberg"] {
            let mut base = stored(name);
            for _ in 0..300 {
                let md: TableMetadata = sonic_rs::from_slice(&base).unwrap();
                let (requirements, updates) = random_commit(&mut rng, &md);
                let (requirements, updates) =
                    (parse::<Vec<TableRequirement>>(&requirements), parse::<Vec<TableUpdate>>(&updates));
                let model = by_model(&base, &requirements, &updates);
                let edit = by_edit(&base, &requirements, &updates);
                assert_eq!(edit, model, "{name}: {requirements:?} {updates:?}");
                match model {
                    Ok(Some((json, refs, _))) => {
                        let written: TableMetadata = sonic_rs::from_slice(&json).unwrap();
                        if !refs.is_empty() {
                            sonic_rs::from_slice::<TableMetadata>(&refs).unwrap();
                        }
                        assert_eq!(sonic_rs::to_vec(&written).unwrap(), json, "a written document reads back");
                        base = json;
                        changed += 1;
                    }
                    Ok(None) => {}
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(changed > 300 && refused > 100, "{changed} changed, {refused} refused");
    }

    #[test]
    fn appending_to_thousands_of_snapshots_copies_them() {
        let mut md = table("v2_full");
        for i in 0..3000 {
            let mut s = md.snapshots[1].clone();
            (s.snapshot_id, s.parent_snapshot_id, s.sequence_number) = (10_000 + i, md.current_snapshot_id, 10 + i);
            md.snapshots.push(s);
            md.current_snapshot_id = Some(10_000 + i);
            md.refs.get_mut("main").unwrap().snapshot_id = 10_000 + i;
            md.last_sequence_number = 10 + i;
        }
        let base = sonic_rs::to_vec(&md).unwrap();
        let updates = parse::<Vec<TableUpdate>>(
            r#"[{"action":"add-snapshot","snapshot":{"snapshot-id":5,"parent-snapshot-id":12999,"sequence-number":5000,"timestamp-ms":1,"manifest-list":"m"}},
               {"action":"set-snapshot-ref","ref-name":"main","type":"branch","snapshot-id":5},
               {"action":"remove-snapshots","snapshot-ids":[10000]}]"#,
        );
        let model = by_model(&base, &[], &updates).unwrap().unwrap();
        assert_eq!(by_edit(&base, &[], &updates).unwrap().unwrap(), model);
        assert_eq!(sonic_rs::from_slice::<TableMetadata>(&model.0).unwrap().snapshots.len(), 3003);
    }

    #[test]
    fn documents_not_written_by_this_catalog_take_the_model() {
        let append = parse::<Vec<TableUpdate>>(r#"[{"action":"set-properties","updates":{"a":"b"}}]"#);
        let a = Bump::new();
        // As Java writes it (pretty), v1, and a format upgrade.
        assert!(
            edit_commit(crate::metadata::test_support::fixture("v2_full").as_bytes(), &[], &append, NOW, &a).is_none()
        );
        assert!(edit_commit(&stored("v1_current"), &[], &append, NOW, &a).is_none());
        let upgrade = parse::<Vec<TableUpdate>>(r#"[{"action":"set-properties","updates":{"format-version":"3"}}]"#);
        assert!(edit_commit(&stored("v2_full"), &[], &upgrade, NOW, &a).is_none());
        let v2 = stored("v2_full");
        assert!(edit_commit(&v2, &[], &append, NOW, &a).is_some());
        // A metadata log entry the catalog rewrites (a bare path) sends the commit to the model.
        let mut edit = edit_commit(&v2, &[], &append, NOW, &a).unwrap().unwrap();
        assert!(edit.record_previous(PREVIOUS, |f| f.starts_with("s3://lake")).is_none());
    }
}
