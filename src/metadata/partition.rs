//! Partition specs, as stored in metadata (bound) and as sent by clients (unbound).

use serde::{Deserialize, Serialize};

use super::schema::{Schema, Type};

/// Partition field ids start here; an unpartitioned spec's last assigned id is one less.
pub(crate) const PARTITION_DATA_ID_START: i32 = 1000;

/// A partition spec in table metadata: every field has its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionSpec {
    pub spec_id: i32,
    pub fields: Vec<PartitionField>,
}

/// One field of a [`PartitionSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionField {
    pub name: String,
    pub transform: String,
    pub source_id: i32,
    pub field_id: i32,
}

/// A partition spec as clients send it: spec id and field ids may be missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UnboundPartitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_id: Option<i32>,
    pub fields: Vec<UnboundPartitionField>,
}

/// One field of an [`UnboundPartitionSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UnboundPartitionField {
    pub name: String,
    pub transform: String,
    pub source_id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_id: Option<i32>,
}

impl PartitionSpec {
    /// The highest field id, or 999 when there are none.
    pub fn last_assigned_field_id(&self) -> i32 {
        self.fields.iter().map(|f| f.field_id).max().unwrap_or(PARTITION_DATA_ID_START - 1)
    }

    /// Same fields (source, transform, name) in the same order; field ids do not matter.
    pub fn compatible_with(&self, other: &PartitionSpec) -> bool {
        self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|(a, b)| a.source_id == b.source_id && a.transform == b.transform && a.name == b.name)
    }
}

impl UnboundPartitionSpec {
    /// Binds as v1 writers without field ids did: ids run from 1000 in field order.
    pub(crate) fn bind_sequential(self, spec_id: i32) -> Result<PartitionSpec, String> {
        let with_ids = self.fields.iter().filter(|f| f.field_id.is_some()).count();
        if with_ids != 0 && with_ids != self.fields.len() {
            return Err(format!("Cannot parse spec with missing field IDs: {}", self.fields.len() - with_ids));
        }
        let fields = self
            .fields
            .into_iter()
            .zip(PARTITION_DATA_ID_START..)
            .map(|(f, next)| PartitionField {
                field_id: f.field_id.unwrap_or(next),
                name: f.name,
                transform: f.transform,
                source_id: f.source_id,
            })
            .collect();
        Ok(PartitionSpec { spec_id, fields })
    }
}

impl PartitionSpec {
    /// Checks every non-void field reads a primitive column of `schema`, and names are unique.
    pub(crate) fn check_compatible(&self, schema: &Schema) -> Result<(), String> {
        for (i, field) in self.fields.iter().enumerate() {
            if field.name.is_empty() {
                return Err(format!("Invalid partition field {}: empty name", field.field_id));
            }
            if self.fields[..i].iter().any(|f| f.name == field.name) {
                return Err(format!("Cannot use partition name more than once: {}", field.name));
            }
            if field.transform == "void" {
                continue;
            }
            match schema.find_type(field.source_id) {
                Some(Type::Primitive(_)) => {}
                Some(_) => return Err(format!("Cannot partition by non-primitive source field: {}", field.source_id)),
                None => return Err(format!("Cannot find source column for partition field: {}", field.name)),
            }
        }
        Ok(())
    }
}
