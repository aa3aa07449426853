//! The route table: which operation a method and path name, with its
//! decoded parameters.

use bumpalo::Bump;

use crate::error::{ApiError, ErrorKind};
use crate::http::percent::decode;
use crate::http::Method;

/// Every operation the server can name, for dispatch and for metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    GetConfig,
    GetToken,
    ListNamespaces,
    CreateNamespace,
    LoadNamespace,
    NamespaceExists,
    DropNamespace,
    UpdateProperties,
    ListTables,
    CreateTable,
    LoadTable,
    TableExists,
    UpdateTable,
    DropTable,
    RegisterTable,
    RenameTable,
    ReportMetrics,
    LoadCredentials,
    CommitTransaction,
    ListViews,
    CreateView,
    LoadView,
    ViewExists,
    ReplaceView,
    DropView,
    RenameView,
    RegisterView,
    HealthLive,
    HealthReady,
    Metrics,
    HealthWritable,
    /// `POST /v1/aws/s3/sign`: remote signing of a client's S3 request.
    SignS3Request,
    /// Requests that matched no route (404, 405, malformed parameters).
    Unmatched,
}

impl Operation {
    /// Every operation, in metrics order. A stored `Idempotency-Key` answer
    /// records its operation's position here: add new operations just before
    /// `Unmatched`, never in between.
    pub const ALL: [Operation; 33] = [
        Operation::GetConfig,
        Operation::GetToken,
        Operation::ListNamespaces,
        Operation::CreateNamespace,
        Operation::LoadNamespace,
        Operation::NamespaceExists,
        Operation::DropNamespace,
        Operation::UpdateProperties,
        Operation::ListTables,
        Operation::CreateTable,
        Operation::LoadTable,
        Operation::TableExists,
        Operation::UpdateTable,
        Operation::DropTable,
        Operation::RegisterTable,
        Operation::RenameTable,
        Operation::ReportMetrics,
        Operation::LoadCredentials,
        Operation::CommitTransaction,
        Operation::ListViews,
        Operation::CreateView,
        Operation::LoadView,
        Operation::ViewExists,
        Operation::ReplaceView,
        Operation::DropView,
        Operation::RenameView,
        Operation::RegisterView,
        Operation::HealthLive,
        Operation::HealthReady,
        Operation::Metrics,
        Operation::HealthWritable,
        Operation::SignS3Request,
        Operation::Unmatched,
    ];

    /// Position in [`Operation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// What the operation is: the one place that says so.
    pub const fn spec(self) -> Spec {
        use Operation::*;
        const NS: &str = "/v1/{prefix}/namespaces/{namespace}";
        const TABLES: &str = "/v1/{prefix}/namespaces/{namespace}/tables";
        const TABLE: &str = "/v1/{prefix}/namespaces/{namespace}/tables/{table}";
        const VIEWS: &str = "/v1/{prefix}/namespaces/{namespace}/views";
        const VIEW: &str = "/v1/{prefix}/namespaces/{namespace}/views/{view}";
        match self {
            GetConfig => Spec::new("get_config", "GET", "/v1/config"),
            GetToken => Spec::new("get_token", "POST", "/v1/oauth/tokens").open().form(),
            ListNamespaces => Spec::new("list_namespaces", "GET", "/v1/{prefix}/namespaces"),
            CreateNamespace => Spec::new("create_namespace", "POST", "/v1/{prefix}/namespaces").mutation(),
            LoadNamespace => Spec::new("load_namespace_metadata", "GET", NS),
            NamespaceExists => Spec::new("namespace_exists", "HEAD", NS),
            DropNamespace => Spec::new("drop_namespace", "DELETE", NS).mutation(),
            UpdateProperties => {
                Spec::new("update_properties", "POST", "/v1/{prefix}/namespaces/{namespace}/properties").mutation()
            }
            ListTables => Spec::new("list_tables", "GET", TABLES),
            CreateTable => Spec::new("create_table", "POST", TABLES).mutation().warehouse(),
            LoadTable => Spec::new("load_table", "GET", TABLE),
            TableExists => Spec::new("table_exists", "HEAD", TABLE),
            UpdateTable => Spec::new("update_table", "POST", TABLE).mutation().warehouse().commit(),
            // A purge deletes the table's files.
            DropTable => Spec::new("drop_table", "DELETE", TABLE).mutation().warehouse(),
            // Reads the metadata file it is given.
            RegisterTable => Spec::new("register_table", "POST", "/v1/{prefix}/namespaces/{namespace}/register")
                .mutation()
                .warehouse(),
            RenameTable => Spec::new("rename_table", "POST", "/v1/{prefix}/tables/rename").mutation(),
            ReportMetrics => {
                Spec::new("report_metrics", "POST", "/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics")
            }
            LoadCredentials => {
                Spec::new("load_credentials", "GET", "/v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials")
            }
            CommitTransaction => Spec::new("commit_transaction", "POST", "/v1/{prefix}/transactions/commit")
                .mutation()
                .warehouse()
                .commit(),
            ListViews => Spec::new("list_views", "GET", VIEWS),
            CreateView => Spec::new("create_view", "POST", VIEWS).mutation().warehouse(),
            LoadView => Spec::new("load_view", "GET", VIEW),
            ViewExists => Spec::new("view_exists", "HEAD", VIEW),
            ReplaceView => Spec::new("replace_view", "POST", VIEW).mutation().warehouse().commit(),
            DropView => Spec::new("drop_view", "DELETE", VIEW).mutation(),
            RenameView => Spec::new("rename_view", "POST", "/v1/{prefix}/views/rename").mutation(),
            RegisterView => Spec::new("register_view", "POST", "/v1/{prefix}/namespaces/{namespace}/register-view")
                .mutation()
                .warehouse(),
            HealthLive => Spec::new("health_live", "GET", "/health/live").open(),
            HealthReady => Spec::new("health_ready", "GET", "/health/ready").open(),
            Metrics => Spec::new("metrics", "GET", "/metrics").open(),
            HealthWritable => Spec::new("health_writable", "GET", "/health/writable").open(),
            // The Iceberg AWS S3 signer API (outside the REST catalog spec).
            SignS3Request => Spec::new("sign_s3_request", "POST", "/v1/aws/s3/sign"),
            Unmatched => Spec::new("unmatched", "ANY", ""),
        }
    }
}

/// What an operation is. Everything that depends on the kind of operation
/// (idempotency, the write cap, authentication, metrics labels, the
/// advertised endpoints) reads it from [`Operation::spec`], so a new
/// operation is described once and cannot miss a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The metrics `route` label: the spec's operationId in snake case.
    pub label: &'static str,
    /// The method that reaches it (the metrics `method` label).
    pub method: &'static str,
    /// Its path template as the OpenAPI spec writes it.
    pub path: &'static str,
    /// Changes catalog state, so it honours `Idempotency-Key`.
    pub mutation: bool,
    /// Opens warehouse files (writes, reads for a register, deletes for a
    /// purge): runs under the shard's write cap.
    pub warehouse: bool,
    /// Commits a new table or view version: counted in `bingsan_commits_total`.
    pub commit: bool,
    /// Answered without authentication (probes, metrics, the token endpoint).
    pub open: bool,
    /// Its body is a form, not JSON: the JSON limits do not apply.
    pub form: bool,
}

impl Spec {
    const fn new(label: &'static str, method: &'static str, path: &'static str) -> Spec {
        Spec { label, method, path, mutation: false, warehouse: false, commit: false, open: false, form: false }
    }

    const fn mutation(mut self) -> Spec {
        self.mutation = true;
        self
    }

    const fn warehouse(mut self) -> Spec {
        self.warehouse = true;
        self
    }

    const fn commit(mut self) -> Spec {
        self.commit = true;
        self
    }

    const fn open(mut self) -> Spec {
        self.open = true;
        self
    }

    const fn form(mut self) -> Spec {
        self.form = true;
        self
    }

    /// Whether `/v1/config` lists it in `endpoints`: the spec's list names
    /// the catalog operations under `{prefix}`.
    pub fn advertised(&self) -> bool {
        self.path.starts_with("/v1/{prefix}/")
    }
}

/// A matched route: the operation and its decoded path parameters.
#[derive(Debug)]
pub struct Matched<'a> {
    pub op: Operation,
    /// Namespace parts, when the path names a namespace.
    pub namespace: &'a [&'a str],
    /// Table or view name, when the path names one.
    pub name: &'a str,
    /// The warehouse the path's prefix names: its position in
    /// [`RouteConfig::prefixes`]; 0 (the default warehouse) without one.
    pub warehouse: usize,
}

/// Path settings the router needs.
pub struct RouteConfig {
    /// The catalog prefix of each warehouse served, the default first
    /// (empty: none). A path without a prefix is the default warehouse's.
    pub prefixes: Vec<String>,
    /// Extra namespace separator besides 0x1F (empty: none).
    pub separator: String,
}

/// Resolves `method path` to an operation. 404 when no path matches, 405
/// (with the allowed methods) when the path matches but the method does not.
pub fn route<'a>(method: Method, path: &'a str, cfg: &RouteConfig, arena: &'a Bump) -> Result<Matched<'a>, RouteError> {
    let mut segs = [""; 8];
    let mut n = 0;
    for s in path.strip_prefix('/').unwrap_or(path).split('/') {
        if n == segs.len() {
            return Err(RouteError::NotFound);
        }
        segs[n] = s;
        n += 1;
    }
    let segs = &segs[..n];
    let none: &[&str] = &[];
    let m = |op| Ok(Matched { op, namespace: none, name: "", warehouse: 0 });

    let (warehouse, rest) = match segs {
        ["health", "live"] => return allow(method, &[Method::Get], m(Operation::HealthLive)),
        ["health", "ready"] => return allow(method, &[Method::Get], m(Operation::HealthReady)),
        ["health", "writable"] => return allow(method, &[Method::Get], m(Operation::HealthWritable)),
        ["metrics"] => return allow(method, &[Method::Get], m(Operation::Metrics)),
        ["v1", "config"] => return allow(method, &[Method::Get], m(Operation::GetConfig)),
        ["v1", "oauth", "tokens"] => return allow(method, &[Method::Post], m(Operation::GetToken)),
        ["v1", "aws", "s3", "sign"] => return allow(method, &[Method::Post], m(Operation::SignS3Request)),
        ["v1", first, ..] if is_collection(first) => (0, &segs[1..]),
        // A linear search of a few names: no allocation on the hot path.
        ["v1", prefix, rest @ ..] if !rest.is_empty() => {
            match cfg.prefixes.iter().position(|p| !p.is_empty() && p == prefix) {
                Some(w) => (w, rest),
                None => return Err(RouteError::NotFound),
            }
        }
        _ => return Err(RouteError::NotFound),
    };
    route_in(method, rest, cfg, arena).map(|m| Matched { warehouse, ..m })
}

/// Resolves the path after `/v1/` and the prefix.
fn route_in<'a>(
    method: Method,
    rest: &[&'a str],
    cfg: &RouteConfig,
    arena: &'a Bump,
) -> Result<Matched<'a>, RouteError> {
    let none: &[&str] = &[];

    use Method::*;
    use Operation::*;
    let ns = |raw: &'a str| parse_namespace(raw, Source::Path, &cfg.separator, arena);
    let name =
        |raw: &'a str| decode(raw, false, arena).map_err(|_| RouteError::BadParam("invalid percent-encoding in name"));
    let with = |op, namespace, name| Ok(Matched { op, namespace, name, warehouse: 0 });
    match rest {
        ["namespaces"] => pick(method, &[(Get, ListNamespaces), (Post, CreateNamespace)], none, ""),
        ["namespaces", n] => {
            pick(method, &[(Get, LoadNamespace), (Head, NamespaceExists), (Delete, DropNamespace)], ns(n)?, "")
        }
        ["namespaces", n, "properties"] => pick(method, &[(Post, UpdateProperties)], ns(n)?, ""),
        ["namespaces", n, "tables"] => pick(method, &[(Get, ListTables), (Post, CreateTable)], ns(n)?, ""),
        ["namespaces", n, "tables", t] => pick(
            method,
            &[(Get, LoadTable), (Head, TableExists), (Post, UpdateTable), (Delete, DropTable)],
            ns(n)?,
            name(t)?,
        ),
        ["namespaces", n, "tables", t, "metrics"] => pick(method, &[(Post, ReportMetrics)], ns(n)?, name(t)?),
        ["namespaces", n, "tables", t, "credentials"] => pick(method, &[(Get, LoadCredentials)], ns(n)?, name(t)?),
        ["namespaces", n, "register"] => pick(method, &[(Post, RegisterTable)], ns(n)?, ""),
        ["namespaces", n, "register-view"] => pick(method, &[(Post, RegisterView)], ns(n)?, ""),
        ["namespaces", n, "views"] => pick(method, &[(Get, ListViews), (Post, CreateView)], ns(n)?, ""),
        ["namespaces", n, "views", v] => pick(
            method,
            &[(Get, LoadView), (Head, ViewExists), (Post, ReplaceView), (Delete, DropView)],
            ns(n)?,
            name(v)?,
        ),
        ["tables", "rename"] => allow(method, &[Post], with(RenameTable, none, "")),
        ["views", "rename"] => allow(method, &[Post], with(RenameView, none, "")),
        ["transactions", "commit"] => allow(method, &[Post], with(CommitTransaction, none, "")),
        _ => Err(RouteError::NotFound),
    }
}

fn is_collection(seg: &str) -> bool {
    matches!(seg, "namespaces" | "tables" | "views" | "transactions")
}

fn allow<'a>(
    method: Method,
    methods: &[Method],
    m: Result<Matched<'a>, RouteError>,
) -> Result<Matched<'a>, RouteError> {
    let m = m?;
    if methods.contains(&method) || (method == Method::Head && methods.contains(&Method::Get)) {
        Ok(m)
    } else {
        Err(RouteError::MethodNotAllowed(allow_header(methods)))
    }
}

fn pick<'a>(
    method: Method,
    table: &[(Method, Operation)],
    namespace: &'a [&'a str],
    name: &'a str,
) -> Result<Matched<'a>, RouteError> {
    match table.iter().find(|(m, _)| *m == method) {
        Some(&(_, op)) => Ok(Matched { op, namespace, name, warehouse: 0 }),
        None => {
            let methods: [Method; 4] = std::array::from_fn(|i| table.get(i).map_or(Method::Other, |(m, _)| *m));
            Err(RouteError::MethodNotAllowed(allow_header(&methods[..table.len()])))
        }
    }
}

/// The `Allow` header value for a set of methods.
fn allow_header(methods: &[Method]) -> &'static str {
    use Method::*;
    match methods {
        [Get] => "GET, HEAD",
        [Post] => "POST",
        [Get, Post] => "GET, HEAD, POST",
        [Get, Head, Delete] => "GET, HEAD, DELETE",
        [Get, Head, Post, Delete] => "GET, HEAD, POST, DELETE",
        _ => "GET, HEAD, POST, DELETE",
    }
}

/// Where a namespace parameter came from: in a query string `+` is a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Path,
    Query,
}

/// Decodes a namespace parameter into its parts: split on 0x1F (`%1F`)
/// and on the configured separator.
///
/// A query parameter (`parent`) is decoded twice, as the reference server
/// does: Java and PyIceberg clients percent-encode each part, join the parts
/// with `%1F`, and their HTTP library encodes that whole value again. A part
/// whose second decoding is not valid keeps its first decoding, so clients
/// that encode once are understood too.
pub fn parse_namespace<'a>(
    raw: &'a str,
    source: Source,
    separator: &str,
    arena: &'a Bump,
) -> Result<&'a [&'a str], RouteError> {
    let decoded = decode(raw, source == Source::Query, arena)
        .map_err(|_| RouteError::BadParam("invalid percent-encoding in namespace"))?;
    let mut parts = bumpalo::collections::Vec::new_in(arena);
    let mut push = |part: &'a str| {
        let part = match source {
            Source::Query if part.contains('%') => decode(part, false, arena).unwrap_or(part),
            _ => part,
        };
        parts.push(part);
    };
    let mut rest = decoded;
    loop {
        let unit = rest.find('\u{1f}').map(|i| (i, 1));
        // After one decoding, a twice-encoded separator still reads `%1F`.
        let escaped = if source == Source::Query { find_ci(rest, "%1f").map(|i| (i, 3)) } else { None };
        let custom = if separator.is_empty() { None } else { rest.find(separator).map(|i| (i, separator.len())) };
        match [unit, escaped, custom].into_iter().flatten().min() {
            Some((i, len)) => {
                push(&rest[..i]);
                rest = &rest[i + len..];
            }
            None => {
                push(rest);
                break;
            }
        }
    }
    Ok(parts.into_bump_slice())
}

/// The first position of an ASCII `needle`, ignoring case.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes().windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Why a request matched no route.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The value is the `Allow` header.
    MethodNotAllowed(&'static str),
    BadParam(&'static str),
}

impl RouteError {
    pub fn to_api(&self, path: &str) -> ApiError {
        match self {
            RouteError::NotFound => ApiError::new(ErrorKind::NotFound, format!("no route for {path}")),
            RouteError::MethodNotAllowed(allowed) => {
                ApiError::new(ErrorKind::MethodNotAllowed, format!("method not allowed on {path}; allowed: {allowed}"))
            }
            RouteError::BadParam(why) => ApiError::bad_request(*why),
        }
    }
}

#[cfg(test)]
mod openapi_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RouteConfig {
        RouteConfig { prefixes: vec!["cat".into(), "lake".into()], separator: ".".into() }
    }

    fn op(method: Method, path: &str) -> Result<Operation, RouteError> {
        let a = Bump::new();
        route(method, path, &cfg(), &a).map(|m| m.op)
    }

    #[test]
    fn with_and_without_prefix() {
        assert_eq!(op(Method::Get, "/v1/namespaces"), Ok(Operation::ListNamespaces));
        assert_eq!(op(Method::Get, "/v1/cat/namespaces"), Ok(Operation::ListNamespaces));
        assert_eq!(op(Method::Get, "/v1/other/namespaces"), Err(RouteError::NotFound));
        assert_eq!(op(Method::Post, "/v1/cat/tables/rename"), Ok(Operation::RenameTable));
        assert_eq!(op(Method::Post, "/v1/transactions/commit"), Ok(Operation::CommitTransaction));
        let warehouse = |path| route(Method::Get, path, &cfg(), &Bump::new()).map(|m| m.warehouse);
        assert_eq!(warehouse("/v1/namespaces"), Ok(0));
        assert_eq!(warehouse("/v1/cat/namespaces/a"), Ok(0));
        assert_eq!(warehouse("/v1/lake/namespaces/a/tables/t"), Ok(1));
        assert_eq!(warehouse("/v1/lake2/namespaces"), Err(RouteError::NotFound));
        let unprefixed = RouteConfig { prefixes: vec![String::new()], separator: String::new() };
        assert_eq!(
            route(Method::Get, "/v1/x/namespaces", &unprefixed, &Bump::new()).map(|m| m.op).unwrap_err(),
            RouteError::NotFound
        );
    }

    #[test]
    fn methods() {
        assert_eq!(op(Method::Head, "/v1/namespaces/a"), Ok(Operation::NamespaceExists));
        assert_eq!(op(Method::Delete, "/v1/namespaces/a/tables/t"), Ok(Operation::DropTable));
        assert_eq!(op(Method::Put, "/v1/namespaces/a"), Err(RouteError::MethodNotAllowed("GET, HEAD, DELETE")));
        assert_eq!(op(Method::Head, "/v1/config"), Ok(Operation::GetConfig));
        assert_eq!(op(Method::Delete, "/v1/config"), Err(RouteError::MethodNotAllowed("GET, HEAD")));
    }

    #[test]
    fn namespace_and_name_are_decoded() {
        let a = Bump::new();
        let m = route(Method::Get, "/v1/namespaces/a%1Fb.c/tables/t%20x", &cfg(), &a).unwrap();
        assert_eq!(m.namespace, &["a", "b", "c"]);
        assert_eq!(m.name, "t x");
        let m = route(Method::Get, "/v1/namespaces/a%2Eb", &cfg(), &a).unwrap();
        assert_eq!(m.namespace, &["a", "b"]);
        let m = route(Method::Get, "/v1/namespaces/a+b", &cfg(), &a).unwrap();
        assert_eq!(m.namespace, &["a+b"]);
        assert_eq!(parse_namespace("a+b%1Fc", Source::Query, "", &a).unwrap(), &["a b", "c"]);
        // As PyIceberg and Java send it: parts encoded, joined by %1F, encoded again.
        assert_eq!(parse_namespace("%25C3%25BC%251Fx%2520y", Source::Query, "", &a).unwrap(), &["ü", "x y"]);
        // Encoded once, with a literal percent sign that is no valid escape.
        assert_eq!(parse_namespace("100%25", Source::Query, "", &a).unwrap(), &["100%"]);
        assert!(matches!(route(Method::Get, "/v1/namespaces/a%zz", &cfg(), &a), Err(RouteError::BadParam(_))));
    }

    #[test]
    fn unknown_paths() {
        for p in ["/", "/v2/config", "/v1/namespaces/a/b/c/d/e/f/g", "/v1/cat", "/v1/namespaces/a/nope"] {
            assert_eq!(op(Method::Get, p), Err(RouteError::NotFound), "{p}");
        }
    }
}
