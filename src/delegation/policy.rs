//! The inline session policy that scopes vended credentials to one table.

use crate::json::write_str;

/// An `s3://bucket/key-prefix` location split into bucket and key prefix
/// (no leading or trailing `/`); `s3a://` and `s3n://` are the same store.
pub fn split_s3(location: &str) -> Option<(&str, &str)> {
    let rest = ["s3://", "s3a://", "s3n://"].iter().find_map(|s| location.strip_prefix(s))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let key = key.trim_matches('/');
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

/// Whether IAM would read part of a name as a pattern (`*`, `?`) or a
/// policy variable (`${...}`): such a prefix would widen the policy.
fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '$'])
}

/// The session policy for a table at `bucket`/`prefix`: read, write and
/// delete objects under `prefix/`, list only keys under it. An
/// `AssumeRole` with this policy yields credentials limited to the
/// intersection of it and the role's own permissions. `None` when the
/// names hold IAM wildcards (never vend a wider policy than asked).
pub fn session_policy(bucket: &str, prefix: &str) -> Option<String> {
    if has_wildcards(bucket) || has_wildcards(prefix) {
        return None;
    }
    let mut out = Vec::with_capacity(512 + 3 * (bucket.len() + prefix.len()));
    out.extend_from_slice(b"{\"Version\":\"2012-10-17\",\"Statement\":[");
    out.extend_from_slice(b"{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\",\"s3:PutObject\",\"s3:DeleteObject\",");
    out.extend_from_slice(b"\"s3:AbortMultipartUpload\",\"s3:ListMultipartUploadParts\"],\"Resource\":");
    write_str(&mut out, &format!("arn:aws:s3:::{bucket}/{prefix}/*"));
    out.extend_from_slice(b"},{\"Effect\":\"Allow\",\"Action\":\"s3:ListBucket\",\"Resource\":");
    write_str(&mut out, &format!("arn:aws:s3:::{bucket}"));
    out.extend_from_slice(b",\"Condition\":{\"StringLike\":{\"s3:prefix\":");
    write_str(&mut out, &format!("{prefix}/*"));
    out.extend_from_slice(b"}}},{\"Effect\":\"Allow\",\"Action\":\"s3:GetBucketLocation\",\"Resource\":");
    write_str(&mut out, &format!("arn:aws:s3:::{bucket}"));
    out.extend_from_slice(b"}]}");
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_s3_locations() {
        assert_eq!(split_s3("s3://b/wh/ns/t"), Some(("b", "wh/ns/t")));
        assert_eq!(split_s3("s3a://b/wh/t/"), Some(("b", "wh/t")));
        assert_eq!(split_s3("s3://b"), None);
        assert_eq!(split_s3("s3://b/"), None);
        assert_eq!(split_s3("file:///tmp/x"), None);
    }

    #[test]
    fn policy_allows_only_the_prefix() {
        let p = session_policy("bucket", "wh/ns/t-1").unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st[0]["Resource"], "arn:aws:s3:::bucket/wh/ns/t-1/*");
        assert_eq!(st[1]["Action"], "s3:ListBucket");
        assert_eq!(st[1]["Condition"]["StringLike"]["s3:prefix"], "wh/ns/t-1/*");
        assert!(st.iter().all(|s| s["Effect"] == "Allow"));
        assert!(!p.contains("arn:aws:s3:::bucket/*"));
    }

    #[test]
    fn wildcards_in_names_are_refused() {
        assert!(session_policy("b", "wh/*").is_none());
        assert!(session_policy("b", "wh/t?").is_none());
        assert!(session_policy("b", "wh/${aws:username}").is_none());
        // Quotes are escaped, not allowed to end the string.
        let p = session_policy("b", "wh/a\"b").unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
    }
}
