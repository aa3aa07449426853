//! Identifier rules shared by namespaces, tables and views.

use crate::error::{ApiError, ApiResult};

/// Deepest namespace accepted (the key layout stores depth in one byte).
pub const MAX_DEPTH: usize = 32;
/// Longest identifier part, in bytes.
pub const MAX_PART: usize = 255;

/// Checks one namespace part or object name: non-empty, bounded, and free of
/// control characters (the key layout uses 0x00 and 0x1F as separators).
pub fn validate_part(what: &str, part: &str) -> ApiResult<()> {
    if part.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if part.len() > MAX_PART {
        return Err(ApiError::bad_request(format!("{what} longer than {MAX_PART} bytes")));
    }
    if part.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// Checks a whole namespace.
pub fn validate_namespace<S: AsRef<str>>(parts: &[S]) -> ApiResult<()> {
    if parts.is_empty() {
        return Err(ApiError::bad_request("namespace must have at least one part"));
    }
    if parts.len() > MAX_DEPTH {
        return Err(ApiError::bad_request(format!("namespace deeper than {MAX_DEPTH} levels")));
    }
    parts.iter().try_for_each(|p| validate_part("namespace part", p.as_ref()))
}

/// Writes a namespace as a JSON array of its parts.
pub fn write_namespace<S: AsRef<str>>(out: &mut Vec<u8>, parts: &[S]) {
    crate::json::write_str_array(out, parts.iter().map(AsRef::as_ref));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_namespace(&["a", "b"]).is_ok());
        assert!(validate_namespace::<&str>(&[]).is_err());
        assert!(validate_namespace(&["a", ""]).is_err());
        assert!(validate_namespace(&["a\u{0}b"]).is_err());
        assert!(validate_namespace(&["x".repeat(256)]).is_err());
        assert!(validate_namespace(&vec!["a"; 33]).is_err());
        assert!(validate_namespace(&["ünïcødé", "with space", "dots.ok"]).is_ok());
    }
}
