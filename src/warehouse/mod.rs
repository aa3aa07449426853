//! Named warehouses: where a catalog's metadata files live and, for an S3
//! warehouse, how the server reaches the bucket and what it gives clients.
//!
//! Read once at start-up from the warehouses file (`--warehouses-file`,
//! TOML) or made from `--warehouse PATH|URI`, the one-warehouse shortcut.
//! Everything a warehouse's storage needs sits in [`S3Settings`], so the
//! file I/O, the config endpoint and credential delegation all read one
//! struct. See `docs/storage.md` for the file's format.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One warehouse: a name (what `GET /v1/config?warehouse=` asks for), a
/// storage root, and its S3 settings when the root is `s3://`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warehouse {
    pub name: String,
    /// `file:///...`, an absolute path, or `s3://bucket[/prefix]`.
    pub root: String,
    /// `Some` exactly when the root is an `s3://` URI.
    pub s3: Option<S3Settings>,
}

/// How the server reaches an S3 (or S3-compatible) bucket, and what its
/// clients are given to reach it themselves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL (`http://127.0.0.1:9000` for MinIO or moto); `None`:
    /// AWS's regional endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region the requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// stores need, instead of virtual-hosted ones (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: bool,
    /// Where the server's own credentials come from.
    #[serde(default)]
    pub credentials: ServerCredentials,
    /// What clients get to reach the bucket.
    #[serde(default)]
    pub delegation: Delegation,
    /// Role assumed through STS to vend credentials (`delegation = "vended"`).
    #[serde(default)]
    pub sts_role_arn: Option<String>,
    /// STS endpoint URL; `None`: AWS's regional STS endpoint.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// One S3 request's time limit, in milliseconds; an operation (with its
    /// retries) is abandoned after four times this.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    5_000
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            endpoint: None,
            region: default_region(),
            path_style: false,
            credentials: ServerCredentials::Chain,
            delegation: Delegation::None,
            sts_role_arn: None,
            sts_endpoint: None,
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Where the server's own S3 credentials come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServerCredentials {
    /// The standard AWS chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// (and `AWS_SESSION_TOKEN`), a web identity token (`AWS_ROLE_ARN` with
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, as on EKS), container credentials,
    /// then instance metadata.
    #[default]
    Chain,
    /// Static keys from the environment variables named here.
    #[serde(rename_all = "kebab-case")]
    Env {
        #[serde(default = "default_key_var")]
        access_key_id_var: String,
        #[serde(default = "default_secret_var")]
        secret_access_key_var: String,
        #[serde(default = "default_token_var")]
        session_token_var: String,
    },
    /// Static keys from a TOML file with `access-key-id`,
    /// `secret-access-key` and optionally `session-token` (a mounted secret).
    File { path: PathBuf },
}

fn default_key_var() -> String {
    "AWS_ACCESS_KEY_ID".to_string()
}
fn default_secret_var() -> String {
    "AWS_SECRET_ACCESS_KEY".to_string()
}
fn default_token_var() -> String {
    "AWS_SESSION_TOKEN".to_string()
}

/// Static S3 keys, resolved from [`ServerCredentials::Env`] or `File`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a secret in a log line.
        f.debug_struct("StaticKeys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl ServerCredentials {
    /// The static keys this source names; `None` for the AWS chain.
    pub fn static_keys(&self) -> Result<Option<StaticKeys>, String> {
        match self {
            ServerCredentials::Chain => Ok(None),
            ServerCredentials::Env { access_key_id_var, secret_access_key_var, session_token_var } => {
                let var =
                    |name: &str| std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
                Ok(Some(StaticKeys {
                    access_key_id: var(access_key_id_var)?,
                    secret_access_key: var(secret_access_key_var)?,
                    session_token: std::env::var(session_token_var).ok().filter(|t| !t.is_empty()),
                }))
            }
            ServerCredentials::File { path } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?;
                // The file's content is a secret: its parse error is not quoted.
                toml::from_str(&text).map(Some).map_err(|_| {
                    format!(
                        "credentials file {} is not valid (access-key-id, secret-access-key, session-token)",
                        path.display()
                    )
                })
            }
        }
    }
}

/// What a client is given to reach an S3 warehouse's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delegation {
    /// Nothing: clients bring their own credentials.
    #[default]
    None,
    /// Short-lived STS credentials scoped to the table's location.
    Vended,
    /// The catalog signs each S3 request of a client (`/v1/aws/s3/sign`).
    RemoteSigning,
}

/// The warehouses file: `[[warehouse]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    warehouse: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    root: String,
    /// Answers `/v1/config` without `warehouse` and unprefixed paths, and
    /// keeps the store's keys as they were before there were several
    /// warehouses; else the first listed is the default.
    #[serde(default)]
    default: bool,
    #[serde(default)]
    s3: Option<S3Settings>,
}

/// Words a warehouse name (a catalog prefix) must not be: they would read
/// as routes.
const RESERVED: [&str; 7] = ["namespaces", "tables", "views", "transactions", "config", "oauth", "aws"];

impl Warehouse {
    /// The one-warehouse shortcut `--warehouse PATH|URI`: named `default`;
    /// an `s3://` root takes endpoint and region from `AWS_ENDPOINT_URL` and
    /// `AWS_REGION` and the server's credentials from the AWS chain. With an
    /// endpoint (an S3-compatible store, as a rule) requests are path-style.
    pub fn shortcut(root: &str) -> Result<Warehouse, String> {
        let s3 = is_s3(root).then(|| {
            let endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|e| !e.is_empty());
            S3Settings {
                path_style: endpoint.is_some(),
                endpoint,
                region: std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(default_region),
                ..S3Settings::default()
            }
        });
        let w = Warehouse { name: "default".to_string(), root: root.to_string(), s3 };
        w.validate()?;
        Ok(w)
    }

    /// Parses a warehouses file's text; `origin` names it in errors. The
    /// default warehouse comes first.
    pub fn parse_file(text: &str, origin: &Path) -> Result<Vec<Warehouse>, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("warehouses file {}: {e}", origin.display()))?;
        let mut out: Vec<Warehouse> = Vec::with_capacity(file.warehouse.len());
        let defaults: Vec<&str> = file.warehouse.iter().filter(|e| e.default).map(|e| e.name.as_str()).collect();
        if defaults.len() > 1 {
            return Err(format!("warehouses {defaults:?} are all marked default: mark one"));
        }
        let default = file.warehouse.iter().position(|e| e.default).unwrap_or(0);
        let mut entries = file.warehouse;
        if default < entries.len() {
            let first = entries.remove(default);
            entries.insert(0, first);
        }
        for e in entries {
            let s3 = match (is_s3(&e.root), e.s3) {
                (true, s3) => Some(s3.unwrap_or_default()),
                (false, None) => None,
                (false, Some(_)) => return Err(format!("warehouse {:?}: an [s3] section needs an s3:// root", e.name)),
            };
            let w = Warehouse { name: e.name, root: e.root, s3 };
            w.validate()?;
            if out.iter().any(|o| o.name == w.name) {
                return Err(format!("warehouse {:?} is listed twice", w.name));
            }
            out.push(w);
        }
        if out.is_empty() {
            return Err(format!("warehouses file {} lists no [[warehouse]]", origin.display()));
        }
        Ok(out)
    }

    /// The warehouses a command works on: the file's when it names one,
    /// else the `--warehouse` shortcut's.
    pub fn from_args(file: Option<&Path>, shortcut: &str) -> Result<Vec<Warehouse>, String> {
        match file {
            Some(path) => Warehouse::load_file(path),
            None => Warehouse::shortcut(shortcut).map(|w| vec![w]),
        }
    }

    /// Reads and parses a warehouses file.
    pub fn load_file(path: &Path) -> Result<Vec<Warehouse>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read warehouses file {}: {e}", path.display()))?;
        Warehouse::parse_file(&text, path)
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !RESERVED.contains(&self.name.as_str());
        if !name_ok {
            return Err(format!(
                "warehouse name {:?}: 1 to 64 of letters, digits, '-', '_', '.', and not a route word",
                self.name
            ));
        }
        if let Some(s3) = &self.s3 {
            bucket_of(&self.root)
                .ok_or_else(|| format!("warehouse {:?}: root must be s3://bucket[/prefix]", self.name))?;
            for url in [&s3.endpoint, &s3.sts_endpoint].into_iter().flatten() {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("warehouse {:?}: endpoint {url:?} is not an http(s) URL", self.name));
                }
            }
            if !(100..=600_000).contains(&s3.request_timeout_ms) {
                return Err(format!("warehouse {:?}: request-timeout-ms must be 100 to 600000", self.name));
            }
            if s3.delegation == Delegation::Vended && s3.sts_role_arn.is_none() {
                return Err(format!("warehouse {:?}: delegation = \"vended\" needs sts-role-arn", self.name));
            }
        } else if self.root.contains("://") && !self.root.starts_with("file://") {
            return Err(format!("warehouse {:?}: root must be a path, file:// or s3:// URI", self.name));
        }
        Ok(())
    }

    /// The client properties `GET /v1/config` gives for this warehouse.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let Some(s3) = &self.s3 else { return Vec::new() };
        let mut out = Vec::with_capacity(3);
        if let Some(endpoint) = &s3.endpoint {
            out.push(("s3.endpoint", endpoint.clone()));
        }
        out.push(("s3.region", s3.region.clone()));
        out.push(("s3.path-style-access", s3.path_style.to_string()));
        out
    }
}

/// Whether a root or location is an S3 URI (`s3://`, or Hadoop's `s3a://`
/// and `s3n://` spellings).
pub fn is_s3(location: &str) -> bool {
    ["s3://", "s3a://", "s3n://"].iter().any(|s| location.starts_with(s))
}

/// The bucket of an `s3://bucket[/key]` URI, if it names a valid one.
pub fn bucket_of(location: &str) -> Option<&str> {
    let rest = ["s3://", "s3a://", "s3n://"].iter().find_map(|s| location.strip_prefix(s))?;
    let bucket = rest.split('/').next()?;
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
    ok.then_some(bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[warehouse]]
name = "local"
root = "file:///var/lib/bingsan/wh"

[[warehouse]]
name = "lake"
root = "s3://my-bucket/warehouse"
[warehouse.s3]
endpoint = "http://127.0.0.1:9000"
region = "eu-west-1"
path-style = true
request-timeout-ms = 800
delegation = "vended"
sts-role-arn = "arn:aws:iam::123456789012:role/bingsan-vend"
credentials = { source = "env", access-key-id-var = "LAKE_KEY", secret-access-key-var = "LAKE_SECRET" }

[[warehouse]]
name = "prod"
root = "s3://other-bucket"
"#;

    #[test]
    fn a_warehouses_file_parses_with_defaults() {
        let ws = Warehouse::parse_file(FILE, Path::new("w.toml")).unwrap();
        assert_eq!(ws.len(), 3);
        assert_eq!(ws[0].s3, None);
        let lake = ws[1].s3.as_ref().unwrap();
        assert_eq!(lake.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((lake.region.as_str(), lake.path_style, lake.delegation), ("eu-west-1", true, Delegation::Vended));
        assert_eq!((lake.request_timeout_ms, ws[2].s3.as_ref().unwrap().request_timeout_ms), (800, 5_000));
        assert!(matches!(&lake.credentials, ServerCredentials::Env { access_key_id_var, session_token_var, .. }
            if access_key_id_var == "LAKE_KEY" && session_token_var == "AWS_SESSION_TOKEN"));
        let aws = ws[2].s3.as_ref().unwrap();
        assert_eq!((aws.region.as_str(), aws.path_style), ("us-east-1", false));
        assert_eq!((aws.credentials.clone(), aws.delegation), (ServerCredentials::Chain, Delegation::None));
        assert_eq!(
            ws[1].client_properties(),
            [
                ("s3.endpoint", "http://127.0.0.1:9000".to_string()),
                ("s3.region", "eu-west-1".to_string()),
                ("s3.path-style-access", "true".to_string())
            ]
        );
        assert!(ws[0].client_properties().is_empty());
    }

    #[test]
    fn the_default_warehouse_is_the_marked_one_or_the_first() {
        let ws = Warehouse::parse_file(FILE, Path::new("w.toml")).unwrap();
        assert_eq!(ws.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["local", "lake", "prod"]);
        let marked = FILE.replace("name = \"prod\"", "name = \"prod\"\ndefault = true");
        let ws = Warehouse::parse_file(&marked, Path::new("w.toml")).unwrap();
        assert_eq!(ws.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["prod", "local", "lake"]);
        let two = marked.replace("name = \"local\"", "name = \"local\"\ndefault = true");
        assert!(Warehouse::parse_file(&two, Path::new("w.toml")).unwrap_err().contains("mark one"));
    }

    #[test]
    fn bad_warehouses_files_are_refused_with_a_reason() {
        let one = |body: &str| Warehouse::parse_file(body, Path::new("w.toml")).unwrap_err();
        let s3 = |extra: &str| format!("[[warehouse]]\nname = \"w\"\nroot = \"s3://bkt/p\"\n[warehouse.s3]\n{extra}\n");
        assert!(one("").contains("warehouse"));
        assert!(one("[[warehouse]]\nname = \"config\"\nroot = \"/w\"").contains("route word"));
        assert!(one("[[warehouse]]\nname = \"a/b\"\nroot = \"/w\"").contains("name"));
        assert!(one("[[warehouse]]\nname = \"a\"\nroot = \"/w\"\n[[warehouse]]\nname = \"a\"\nroot = \"/v\"")
            .contains("twice"));
        assert!(
            one("[[warehouse]]\nname = \"a\"\nroot = \"/w\"\n[warehouse.s3]\nregion = \"x\"").contains("s3:// root")
        );
        assert!(one("[[warehouse]]\nname = \"a\"\nroot = \"s3://B/x\"").contains("s3://bucket"));
        assert!(one("[[warehouse]]\nname = \"a\"\nroot = \"gs://b/x\"").contains("root"));
        assert!(one(&s3("delegation = \"vended\"")).contains("sts-role-arn"));
        assert!(one(&s3("endpoint = \"localhost:9000\"")).contains("http"));
        assert!(one(&s3("delegation = \"everything\"")).contains("unknown variant"));
        assert!(one(&s3("typo = 1")).contains("typo"));
        assert!(one(&s3("request-timeout-ms = 0")).contains("request-timeout-ms"));
    }

    #[test]
    fn static_keys_come_from_a_file_without_quoting_it() {
        let dir = std::env::temp_dir().join(format!("bingsan-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(&path, "access-key-id = \"AK\"\nsecret-access-key = \"SK\"\n").unwrap();
        let keys = ServerCredentials::File { path: path.clone() }.static_keys().unwrap().unwrap();
        assert_eq!((keys.access_key_id.as_str(), keys.secret_access_key.as_str()), ("AK", "SK"));
        assert!(!format!("{keys:?}").contains("SK"), "no secret in Debug");
        std::fs::write(&path, "secret-access-key = \"TOPSECRET\"\n").unwrap();
        let e = ServerCredentials::File { path }.static_keys().unwrap_err();
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert_eq!(ServerCredentials::Chain.static_keys().unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_shortcut_names_one_default_warehouse() {
        let w = Warehouse::shortcut("/var/wh").unwrap();
        assert_eq!((w.name.as_str(), w.s3.is_none()), ("default", true));
        let w = Warehouse::shortcut("s3://bkt/wh").unwrap();
        assert_eq!(w.s3.unwrap().credentials, ServerCredentials::Chain);
        assert_eq!(bucket_of("s3://bkt/wh"), Some("bkt"));
        assert_eq!(bucket_of("s3a://bkt"), Some("bkt"));
        assert_eq!(bucket_of("s3://Bk/x"), None);
    }
}
