//! View metadata (format v1) and the view request bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de::null_as_default;
use super::requests::TableIdentifier;
use super::schema::Schema;
use super::update::{need, UpdateWire};

/// Iceberg view metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ViewMetadata {
    pub view_uuid: String,
    pub format_version: u8,
    pub location: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    pub schemas: Vec<Schema>,
    pub current_version_id: i32,
    pub versions: Vec<ViewVersion>,
    pub version_log: Vec<ViewHistoryEntry>,
}

impl ViewMetadata {
    /// The view version with this id.
    pub fn version(&self, id: i32) -> Option<&ViewVersion> {
        self.versions.iter().find(|v| v.version_id == id)
    }

    /// The current view version.
    pub fn current_version(&self) -> Option<&ViewVersion> {
        self.version(self.current_version_id)
    }

    /// The schema with this id.
    pub fn schema(&self, id: i32) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.schema_id == id)
    }
}

/// One version of a view: its query text(s) and context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ViewVersion {
    pub version_id: i32,
    pub timestamp_ms: i64,
    /// -1 in add-view-version means the schema added last in this commit.
    pub schema_id: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub summary: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_catalog: Option<String>,
    pub default_namespace: Vec<String>,
    pub representations: Vec<ViewRepresentation>,
}

/// A representation of the view's query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ViewRepresentation {
    Sql(SqlViewRepresentation),
}

/// A SQL query in one dialect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SqlViewRepresentation {
    pub sql: String,
    pub dialect: String,
}

/// When a version became current.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ViewHistoryEntry {
    pub version_id: i32,
    pub timestamp_ms: i64,
}

/// `CreateViewRequest`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateViewRequest {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    pub schema: Schema,
    pub view_version: ViewVersion,
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: BTreeMap<String, String>,
}

/// `CommitViewRequest`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CommitViewRequest {
    #[serde(default)]
    pub identifier: Option<TableIdentifier>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub requirements: Vec<ViewRequirement>,
    pub updates: Vec<ViewUpdate>,
}

/// A `ViewRequirement`; a failed one is a conflict (409).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ViewRequirement {
    AssertViewUuid { uuid: String },
}

/// One change to view metadata, as sent in a commit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "UpdateWire")]
pub enum ViewUpdate {
    AssignUuid {
        uuid: String,
    },
    UpgradeFormatVersion {
        format_version: i32,
    },
    AddSchema {
        schema: Schema,
    },
    SetLocation {
        location: String,
    },
    SetProperties {
        updates: BTreeMap<String, String>,
    },
    RemoveProperties {
        removals: Vec<String>,
    },
    /// A `schema-id` of -1 in the version means the schema added last in this commit.
    AddViewVersion {
        view_version: ViewVersion,
    },
    /// -1 means the version added last in this commit.
    SetCurrentViewVersion {
        view_version_id: i32,
    },
}

impl TryFrom<UpdateWire> for ViewUpdate {
    type Error = String;

    fn try_from(w: UpdateWire) -> Result<ViewUpdate, String> {
        use ViewUpdate::*;
        let a = w.action.as_str();
        Ok(match a {
            "assign-uuid" => AssignUuid { uuid: need(w.uuid, a, "uuid")? },
            "upgrade-format-version" => {
                UpgradeFormatVersion { format_version: need(w.format_version, a, "format-version")? }
            }
            "add-schema" => AddSchema { schema: need(w.schema, a, "schema")? },
            "set-location" => SetLocation { location: need(w.location, a, "location")? },
            "set-properties" => SetProperties { updates: need(w.updates, a, "updates")? },
            "remove-properties" => RemoveProperties { removals: need(w.removals, a, "removals")? },
            "add-view-version" => AddViewVersion { view_version: need(w.view_version, a, "view-version")? },
            "set-current-view-version" => {
                SetCurrentViewVersion { view_version_id: need(w.view_version_id, a, "view-version-id")? }
            }
            _ => return Err(format!("Unknown view update action: {a}")),
        })
    }
}
