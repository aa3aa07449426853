//! Sort orders.

use serde::{Deserialize, Serialize};

use super::schema::{Schema, Type};

/// A sort order; order id 0 is reserved for the unsorted order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SortOrder {
    #[serde(default)]
    pub order_id: i32,
    pub fields: Vec<SortField>,
}

/// One sort key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SortField {
    pub transform: String,
    pub source_id: i32,
    pub direction: SortDirection,
    pub null_order: NullOrder,
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    Asc,
    Desc,
}

/// Where nulls sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NullOrder {
    NullsFirst,
    NullsLast,
}

impl SortOrder {
    /// The id of the unsorted order.
    pub const UNSORTED_ORDER_ID: i32 = 0;

    /// The unsorted order.
    pub fn unsorted() -> SortOrder {
        SortOrder { order_id: Self::UNSORTED_ORDER_ID, fields: Vec::new() }
    }

    /// Whether the order sorts nothing.
    pub fn is_unsorted(&self) -> bool {
        self.fields.is_empty()
    }

    /// Checks every field sorts by a primitive column of `schema`.
    pub(crate) fn check_compatible(&self, schema: &Schema) -> Result<(), String> {
        for field in &self.fields {
            match schema.find_type(field.source_id) {
                Some(Type::Primitive(_)) => {}
                Some(_) => return Err(format!("Cannot sort by non-primitive source field: {}", field.source_id)),
                None => return Err(format!("Cannot find source column for sort field: {}", field.source_id)),
            }
        }
        Ok(())
    }
}
