//! Small deserialization helpers shared by the request and metadata types.

use serde::{Deserialize, Deserializer};

/// Reads an explicit `null` as the default value.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
