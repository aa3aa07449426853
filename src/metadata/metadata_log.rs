//! The metadata log: previous metadata files, trimmed to the configured length.

use super::snapshot::MetadataLogEntry;
use super::table::TableMetadata;

/// How many previous metadata files the log keeps.
pub(crate) const PREVIOUS_VERSIONS_MAX: &str = "write.metadata.previous-versions-max";
const PREVIOUS_VERSIONS_MAX_DEFAULT: usize = 100;

/// Whether files trimmed from the log should be deleted after a commit.
const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// Appends the file `new` replaces to its metadata log, trims the log to
/// `write.metadata.previous-versions-max` (default 100, at least 1), and returns the
/// trimmed file locations, oldest first.
pub fn record_previous(new: &mut TableMetadata, previous_location: &str, previous_last_updated_ms: i64) -> Vec<String> {
    let max = previous_versions_max(new.properties.get(PREVIOUS_VERSIONS_MAX).map(String::as_str));
    let log = &mut new.metadata_log;
    log.push(MetadataLogEntry { timestamp_ms: previous_last_updated_ms, metadata_file: previous_location.to_owned() });
    let excess = log.len().saturating_sub(max);
    log.drain(..excess).map(|e| e.metadata_file).collect()
}

/// The log's length limit, from the value of `write.metadata.previous-versions-max`.
pub(crate) fn previous_versions_max(value: Option<&str>) -> usize {
    value.and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(PREVIOUS_VERSIONS_MAX_DEFAULT).max(1)
}

impl TableMetadata {
    /// Whether `write.metadata.delete-after-commit.enabled` asks to delete trimmed metadata files.
    pub fn delete_after_commit(&self) -> bool {
        self.properties.get(DELETE_AFTER_COMMIT).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_support::table;

    #[test]
    fn previous_file_is_appended_and_the_log_trimmed_to_the_limit() {
        // v2_full keeps 5 previous versions and has 3.
        let mut md = table("v2_full");
        assert!(record_previous(&mut md, "s3://m/00003.metadata.json", 1719000300000).is_empty());
        assert_eq!(md.metadata_log.last().unwrap().metadata_file, "s3://m/00003.metadata.json");
        assert!(record_previous(&mut md, "s3://m/00004.metadata.json", 1719000400000).is_empty());
        let trimmed = record_previous(&mut md, "s3://m/00005.metadata.json", 1719000500000);
        assert_eq!(trimmed, ["s3://lake/analytics/page_views/metadata/00000-11.metadata.json"]);
        assert_eq!(md.metadata_log.len(), 5);

        md.properties.insert(PREVIOUS_VERSIONS_MAX.into(), "2".into());
        let trimmed = record_previous(&mut md, "s3://m/00006.metadata.json", 1719000600000);
        assert_eq!(trimmed.len(), 4);
        let files: Vec<&str> = md.metadata_log.iter().map(|e| e.metadata_file.as_str()).collect();
        assert_eq!(files, ["s3://m/00005.metadata.json", "s3://m/00006.metadata.json"]);
        assert!(md.delete_after_commit());
    }

    #[test]
    fn limit_defaults_to_100_and_is_at_least_one() {
        let mut md = table("v3_empty");
        for i in 0..105 {
            record_previous(&mut md, &format!("f{i}"), i);
        }
        assert_eq!((md.metadata_log.len(), md.metadata_log[0].metadata_file.as_str()), (100, "f5"));
        assert!(!md.delete_after_commit());
        md.properties.insert(PREVIOUS_VERSIONS_MAX.into(), "0".into());
        assert_eq!(record_previous(&mut md, "last", 200).len(), 100);
        assert_eq!(md.metadata_log.len(), 1);
    }
}
