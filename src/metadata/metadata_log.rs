//! The metadata log: previous metadata files, trimmed to the configured length.

use super::snapshot::MetadataLogEntry;
use super::table::TableMetadata;

/// How many previous metadata files the log keeps.
const PREVIOUS_VERSIONS_MAX: &str = "write.metadata.previous-versions-max";
const PREVIOUS_VERSIONS_MAX_DEFAULT: usize = 100;

/// Whether files trimmed from the log should be deleted after a commit.
const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// Appends the file `new` replaces to its metadata log, trims the log to
/// `write.metadata.previous-versions-max` (default 100, at least 1), and returns the
/// trimmed file locations, oldest first.
pub fn record_previous(new: &mut TableMetadata, previous_location: &str, previous_last_updated_ms: i64) -> Vec<String> {
    let max = new
        .properties
        .get(PREVIOUS_VERSIONS_MAX)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(PREVIOUS_VERSIONS_MAX_DEFAULT)
        .max(1);
    let log = &mut new.metadata_log;
    log.push(MetadataLogEntry { timestamp_ms: previous_last_updated_ms, metadata_file: previous_location.to_owned() });
    let excess = log.len().saturating_sub(max);
    log.drain(..excess).map(|e| e.metadata_file).collect()
}

impl TableMetadata {
    /// Whether `write.metadata.delete-after-commit.enabled` asks to delete trimmed metadata files.
    pub fn delete_after_commit(&self) -> bool {
        self.properties.get(DELETE_AFTER_COMMIT).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}
